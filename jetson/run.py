#!/usr/bin/env python3
"""The Krabby robot runner: policy + HAL + Go2 (DDS) + ZED Mini + safety supervisor in one process.

    python jetson/run.py --checkpoint logs/.../model_9000.pt            # on the robot (dry run until --live + enable)
    python jetson/run.py --sim --checkpoint model.pt --arm-policy       # rehearsal against a simulated Go2
    python jetson/run.py --help

Works from a checkout without installing: if ``krabby`` is not importable, the two extension
folders are put on sys.path. Everything else is in krabby.parkour.jetson (see jetson/README.md).
"""

import sys
from pathlib import Path

try:
    import krabby.parkour.jetson  # noqa: F401
except ImportError:
    _repo = Path(__file__).resolve().parents[1]
    for _ext in ("krabby.hal", "krabby.parkour"):
        sys.path.insert(0, str(_repo / "exts" / _ext))

from krabby.parkour.jetson import main  # noqa: E402

if __name__ == "__main__":
    main()
