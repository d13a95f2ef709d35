"""Where a runner's outputs go, checked before the run: a run folder or explicit paths, the live view.

Shared by the entry points that run a policy (``krabby-hal-server-mujoco``, the robot runner, the
Isaac Lab server) so the same concept has the same flag everywhere:

- ``--runs DIR``: a fresh run folder ``DIR/<date>-<time>-<name>/`` (``krabby.parkour.run_folder``)
  with ``summary.json``, ``log.mcap``, ``video.mp4`` and the exact command and config;
- ``--summary/--record/--video PATH``: explicit files (they override the run folder's);
- ``--live-view`` (``--live-view-host``, ``--live-view-port``): a Foxglove WebSocket server that
  streams the same channels as the log, on 127.0.0.1 unless told otherwise.

Every output is checked for writability here, so a read-only folder fails in one line before
the run, never after it.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .cli import check_writable, port
from .foxglove_log import DEFAULT_LIVE_PORT, LiveViewConfig
from .run_folder import RunFolder, make_run_folder, write_invocation

#: flags that name where this run's files go; a run's config.toml leaves them out so a rerun gets its own folder
OUTPUT_DESTS = ("runs", "summary", "record", "video", "config", "plots")


def add_live_view_flags(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--live-view", action="store_true",
                    help="stream the run to Foxglove (WebSocket; open ws://HOST:PORT in Foxglove, then config/foxglove_layout.json)")
    ap.add_argument("--live-view-host", default="127.0.0.1",
                    help="address the live view listens on (default 127.0.0.1: this machine only; 0.0.0.0 for a laptop on the LAN)")
    ap.add_argument("--live-view-port", type=port, default=DEFAULT_LIVE_PORT, help=f"live view port (default {DEFAULT_LIVE_PORT})")


def live_view_config(args: argparse.Namespace) -> LiveViewConfig | None:
    return LiveViewConfig(args.live_view_host, args.live_view_port) if getattr(args, "live_view", False) else None


def add_output_flags(ap: argparse.ArgumentParser, *, video: bool = True) -> None:
    ap.add_argument("--runs", metavar="DIR", help="write everything into a new run folder DIR/<date>-<time>-<terrain>/ "
                    "(summary, log, video, command, config); DIR/latest points at it")
    ap.add_argument("--record", metavar="LOG", help="write the MCAP run log here (Foxglove opens it; krabby-replay re-runs it)")
    ap.add_argument("--summary", metavar="JSON", help="write the run summary here")
    if video:
        ap.add_argument("--video", metavar="OUT", help="write an .mp4 or .gif of the run here (offscreen rendering after the run)")
        ap.add_argument("--no-video", action="store_true", help="no video in the run folder")
    ap.add_argument("--plots", action="store_true", help="write the krabby-plot report after the run (needs --runs or --record)")
    add_live_view_flags(ap)


@dataclass
class RunOutputs:
    folder: RunFolder | None
    summary: Path | None
    record: Path | None
    video: Path | None
    plots: Path | None


def prepare_outputs(args: argparse.Namespace, name: str, argv: list[str]) -> RunOutputs:
    """Make the run folder (if asked), check every output can be written; raises ``UsageError``."""
    folder = None
    if args.runs:
        folder = make_run_folder(args.runs, name)
    pick = lambda explicit, default: Path(explicit) if explicit else default  # noqa: E731
    want_video = getattr(args, "video", None) or (folder is not None and not getattr(args, "no_video", False))
    out = RunOutputs(
        folder=folder,
        summary=pick(args.summary, folder.summary if folder else None),
        record=pick(args.record, folder.log if folder else None),
        video=pick(getattr(args, "video", None), folder.video if folder else None) if want_video else None,
        plots=None,
    )
    if args.plots:
        out.plots = folder.plots if folder else (out.record.with_name(out.record.stem + "_plots") if out.record else None)
    for what, p in (("summary", out.summary), ("run log", out.record), ("video", out.video), ("plots folder", out.plots)):
        if p is not None:
            check_writable(p, what)
    if folder is not None:
        settings = {k: v for k, v in vars(args).items() if k not in OUTPUT_DESTS}
        write_invocation(folder, argv, settings)
    return out


def write_plots(log: Path, out: Path) -> str:
    """The krabby-plot report for a finished log; returns a line for the user."""
    try:
        from .plot import RunData, make_report, write_html
    except ImportError as e:
        return f"plots:   not written ({e}; pip install 'krabby[plot]')"
    try:
        run = RunData(log)
        pages = make_report(run, out)
        return f"plots:   {write_html(out, pages, f'Krabby run {log}', [run.truncated] if run.truncated else [])}"
    except ImportError as e:
        return f"plots:   not written ({e}; pip install 'krabby[plot]')"


def describe(outputs: RunOutputs, summary: dict[str, Any]) -> list[str]:
    """The lines that tell the user where everything went."""
    lines = []
    if outputs.folder is not None:
        lines.append(f"run:     {outputs.folder.path}/  (also {outputs.folder.path.parent / 'latest'})")
    if outputs.summary is not None:
        lines.append(f"summary: {outputs.summary}")
    if summary.get("video"):
        lines.append(f"video:   {summary['video']}")
    elif outputs.video is not None:
        lines.append(f"video:   not written ({summary.get('video_error')})")
    if outputs.record is not None:
        lines.append(f"log:     {outputs.record}  (Foxglove: open it with config/foxglove_layout.json; "
                     f"check it with: krabby-replay {outputs.record})")
    return lines
