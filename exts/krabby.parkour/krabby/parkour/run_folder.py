"""One folder per run: ``runs/<date>-<time>-<name>/`` with everything the run wrote, ``runs/latest`` -> the newest.

| file | what |
|---|---|
| ``summary.json`` | the run summary |
| ``log.mcap`` | the run log (replay it with ``krabby-replay``, open it in Foxglove) |
| ``video.mp4`` | the video, when one was asked for |
| ``command.txt`` | the exact command line |
| ``config.toml`` | every setting the run used; ``--config config.toml`` runs it again |
| ``plots/`` | ``krabby-plot`` writes its report here |

Nothing is ever overwritten: a second run in the same second gets a ``-2`` suffix.
"""

from __future__ import annotations

import os
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from .cli import UsageError, check_writable


@dataclass
class RunFolder:
    path: Path

    @property
    def summary(self) -> Path:
        return self.path / "summary.json"

    @property
    def log(self) -> Path:
        return self.path / "log.mcap"

    @property
    def video(self) -> Path:
        return self.path / "video.mp4"

    @property
    def plots(self) -> Path:
        return self.path / "plots"


def make_run_folder(root: str | Path, name: str, *, now: float | None = None) -> RunFolder:
    """Create a fresh ``root/<YYYYmmdd>-<HHMMSS>-<name>`` and point ``root/latest`` at it."""
    root = Path(root)
    check_writable(root, "runs folder")
    stem = time.strftime("%Y%m%d-%H%M%S", time.localtime(now)) + f"-{name}"
    for i in range(1, 1000):
        path = root / (stem if i == 1 else f"{stem}-{i}")
        try:
            path.mkdir()
            break
        except FileExistsError:
            continue
    else:
        raise UsageError(f"{root}: could not make a new run folder for {stem}")
    _point_latest(root, path.name)
    return RunFolder(path)


def _point_latest(root: Path, target: str) -> None:
    """``root/latest`` -> ``target`` (relative, so the runs folder can move); replaced atomically."""
    link = root / "latest"
    tmp = root / f".latest-{os.getpid()}"
    try:
        if tmp.is_symlink() or tmp.exists():
            tmp.unlink()
        os.symlink(target, tmp)
        os.replace(tmp, link)
    except OSError:  # a file system without symlinks: a text file naming the folder
        link.with_suffix(".txt").write_text(target + "\n")


def write_invocation(folder: RunFolder, argv: list[str], settings: Mapping[str, Any]) -> None:
    """The exact command and every setting, as a TOML that ``--config`` reads back."""
    (folder.path / "command.txt").write_text(shlex.join([Path(sys.argv[0]).name, *argv]) + "\n")
    lines = ["# every setting of this run; run it again with: --config config.toml"]
    for key, value in settings.items():
        if value is None:
            continue
        lines.append(f"{key} = {_toml_value(value)}")
    (folder.path / "config.toml").write_text("\n".join(lines) + "\n")


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    s = str(v).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{s}"'
