#!/usr/bin/env python3
"""Provision two bare Cyclone DDS environments for the 0.10.x <-> 11 interop test (stdlib only).

    python jetson/dds_envs.py            # create what is missing, print a JSON summary
    python jetson/dds_envs.py --apt      # also apt-get install Debian's libddsc 0.10.2 (root, Debian 12)
    python jetson/dds_envs.py --check    # only report; exit 1 when an environment is missing

Creates, under ``.dds-envs/`` in the checkout (self-ignored: it holds its own ``.gitignore``):

- ``cdds-0.10.2``: Python 3.10 + cyclonedds-python 0.10.2, the robot's DDS version. When Debian's
  ``cyclonedds-dev`` 0.10.2 is installed, the binding is *built against that C library*: a faithful
  stand-in for the robot (this is how the feasibility study reproduced the 0.10.2 crash). Otherwise
  the PyPI cp310 wheel is used, whose bundled C library is a 0.11 development build (``faithful``
  is then false in the summary and the test says so).
- ``cdds-11.0.1``: Python >= 3.10 + cyclonedds==11.0.1 (the version Krabby pins on x86_64).

Python 3.10 is looked up as $KRABBY_PYTHON310, ``python3.10`` on PATH, or a pyenv install.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_ROOT = REPO / ".dds-envs"
OLD = "0.10.2"
NEW = "11.0.1"
DEBIAN_LIB = Path("/usr/lib/x86_64-linux-gnu/libddsc.so")
DEBIAN_MULTIARCH_INCLUDE = Path("/usr/include/x86_64-linux-gnu")


def log(msg: str) -> None:
    print(f"[dds_envs] {msg}", file=sys.stderr, flush=True)


def _runs(python: str) -> bool:
    try:
        return subprocess.run([python, "-c", "import venv"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def find_python310() -> str | None:
    candidates = [os.environ.get("KRABBY_PYTHON310", "")]
    candidates += [shutil.which("python3.10") or ""]
    candidates += sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.10*/bin/python3.10")), reverse=True)
    candidates += ["/usr/bin/python3.10", "/usr/local/bin/python3.10"]
    for c in candidates:
        if c and _runs(c):
            return c
    return None


def find_python_new() -> str:
    """An interpreter >= 3.10 for cyclonedds 11 (wheels exist for cp310..cp313): this one if it qualifies."""
    base = getattr(sys, "_base_executable", sys.executable)
    if sys.version_info >= (3, 10) and _runs(base):
        return base
    found = find_python310()
    if not found:
        raise SystemExit("no Python >= 3.10 found for cyclonedds 11")
    return found


def env_python(env: Path) -> Path:
    return env / "bin" / "python"


def probe(env: Path) -> dict | None:
    py = env_python(env)
    if not py.exists():
        return None
    code = (
        "import json, importlib.metadata as m, cyclonedds._clayer as c, sys, subprocess;"
        "out = subprocess.run(['ldd', c.__file__], capture_output=True, text=True).stdout;"
        "lib = [l.split()[2] if '=>' in l else l.split()[0] for l in out.splitlines() if 'libddsc' in l];"
        "print(json.dumps({'python': sys.executable, 'python_version': sys.version.split()[0],"
        " 'cyclonedds': m.version('cyclonedds'), 'libddsc': lib[0] if lib else 'bundled'}))"
    )
    try:
        r = subprocess.run([str(py), "-c", code], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if r.returncode != 0:
        return None
    info = json.loads(r.stdout.strip().splitlines()[-1])
    lib = info["libddsc"]
    info["faithful_robot_stand_in"] = info["cyclonedds"].startswith("0.10.") and "debian" in lib
    return info


def pip(env: Path, *args: str, extra_env: dict | None = None) -> None:
    cmd = [str(env_python(env)), "-m", "pip", "install", "--disable-pip-version-check", "-q", *args]
    log(" ".join(cmd))
    subprocess.run(cmd, check=True, env={**os.environ, **(extra_env or {})}, timeout=900)


def debian_cyclonedds_home(root: Path) -> Path | None:
    """A CYCLONEDDS_HOME-shaped folder of symlinks into Debian's multiarch layout (feasibility doc §1)."""
    if not DEBIAN_LIB.exists() or not shutil.which("idlc"):
        return None
    home = root / "cyclonedds-home-0.10.2"
    (home / "lib").mkdir(parents=True, exist_ok=True)
    (home / "bin").mkdir(parents=True, exist_ok=True)
    links = {
        home / "include": Path("/usr/include"),
        home / "lib" / "libddsc.so": DEBIAN_LIB,
        home / "lib" / "libcycloneddsidl.so": DEBIAN_LIB.with_name("libcycloneddsidl.so"),
        home / "bin" / "idlc": Path(shutil.which("idlc") or "/usr/bin/idlc"),
    }
    for link, target in links.items():
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(target)
    return home


def apt_install_debian_cyclonedds() -> None:
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        log("--apt needs root and apt-get; skipping")
        return
    subprocess.run(["apt-get", "update", "-qq"], check=False, timeout=600)
    subprocess.run(["apt-get", "install", "-y", "-qq", "cyclonedds-dev", "cyclonedds-tools"], check=False, timeout=900)


def make_old(root: Path) -> None:
    env = root / f"cdds-{OLD}"
    py310 = find_python310()
    if py310 is None:
        log("no Python 3.10 found: cyclonedds 0.10.x has wheels only for cp38..cp310; set KRABBY_PYTHON310")
        return
    if env.exists():
        shutil.rmtree(env)
    subprocess.run([py310, "-m", "venv", str(env)], check=True, timeout=300)
    home = debian_cyclonedds_home(root)
    if home is not None:
        pip(env, "--no-binary", "cyclonedds", f"cyclonedds=={OLD}",
            extra_env={"CYCLONEDDS_HOME": str(home), "CFLAGS": f"-I{DEBIAN_MULTIARCH_INCLUDE}"})
    else:
        log("Debian's cyclonedds-dev 0.10.2 is not installed (use --apt): using the PyPI wheel, "
            "whose bundled C library is NOT the robot's 0.10.2")
        pip(env, f"cyclonedds=={OLD}")


def make_new(root: Path) -> None:
    env = root / f"cdds-{NEW}"
    if env.exists():
        shutil.rmtree(env)
    subprocess.run([find_python_new(), "-m", "venv", str(env)], check=True, timeout=300)
    pip(env, f"cyclonedds=={NEW}")


def ensure(root: Path = DEFAULT_ROOT, *, create: bool = True, apt: bool = False) -> dict:
    """Return {"old": info|None, "new": info|None}, creating missing environments when ``create``."""
    root.mkdir(parents=True, exist_ok=True)
    gi = root / ".gitignore"
    if not gi.exists():
        gi.write_text("*\n")
    if apt:
        apt_install_debian_cyclonedds()
    old = probe(root / f"cdds-{OLD}")
    if create and (old is None or (apt and not old["faithful_robot_stand_in"] and DEBIAN_LIB.exists())):
        make_old(root)
        old = probe(root / f"cdds-{OLD}")
    new = probe(root / f"cdds-{NEW}")
    if create and new is None:
        make_new(root)
        new = probe(root / f"cdds-{NEW}")
    summary = {"root": str(root), "old": old, "new": new}
    (root / "envs.json").write_text(json.dumps(summary, indent=2))
    return summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, default=DEFAULT_ROOT)
    ap.add_argument("--apt", action="store_true", help="apt-get install Debian's cyclonedds-dev 0.10.2 first")
    ap.add_argument("--check", action="store_true", help="report only; exit 1 if an environment is missing")
    a = ap.parse_args()
    summary = ensure(a.root, create=not a.check, apt=a.apt)
    print(json.dumps(summary, indent=2))
    if summary["old"] is None or summary["new"] is None:
        sys.exit(1)


if __name__ == "__main__":
    main()
