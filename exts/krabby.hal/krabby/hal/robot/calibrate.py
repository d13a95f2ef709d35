"""``krabby-calibrate feet``: measure the Go2's foot-force offset and scale and write them into the deployment.

LowState_.foot_force arrives in raw sensor counts (tens to hundreds on a real Go2), while the policy's
contact test is ||F|| > 2 N. The shipped placeholders (1.0 N/count, offset 0) therefore make every foot
read "in contact"; the runner warns loudly while they are in use (``UNCALIBRATED_FEET``). Two poses:

1. feet unloaded (robot hoisted, or lying on its back): the mean count is the offset;
2. standing still on flat ground (Unitree's own stand is fine): the four feet carry m g, so
   n_per_count = m g / sum(counts - offset).

Only rt/lowstate is read: nothing is written to rt/lowcmd, so the robot's sport mode may stay on.

    krabby-calibrate feet --deploy go2_jetson            # prints the values
    krabby-calibrate feet --deploy path/to/mine.toml --write
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from ..devices import unitree_go_dds as dds
from ..devices.unitree_go_msgs import CodecError, LowState

log = logging.getLogger("krabby.hal.robot.calibrate")

UNCALIBRATED_FEET = (1.0, 0.0)  # (foot_force_n_per_count, foot_force_offset_counts) as shipped
GO2_MASS_KG = 15.0  # Unitree's spec for the Go2 with its battery; pass --mass-kg with payload (Jetson, ZED, mount)


class CalibrationError(RuntimeError):
    """The measurement cannot be trusted; the message says why."""


def feet_uncalibrated(n_per_count: float, offset_counts: float) -> bool:
    return (float(n_per_count), float(offset_counts)) == UNCALIBRATED_FEET


def foot_force_calibration(unloaded_counts: Sequence[float], standing_counts: Sequence[float], mass_kg: float) -> tuple:
    """(n_per_count, offset_counts) from the mean counts per foot in the two poses."""
    off = np.asarray(unloaded_counts, dtype=np.float64)
    load = np.asarray(standing_counts, dtype=np.float64) - float(np.mean(off))
    if np.any(load <= 0):
        raise CalibrationError(f"standing counts {list(standing_counts)} are not above the unloaded ones {list(unloaded_counts)}: "
                               "was the robot really hoisted first, then standing?")
    if load.max() > 4 * load.min():
        log.warning("feet carry very different loads (%s counts above offset): is the robot standing level?", np.round(load))
    return mass_kg * 9.81 / float(np.sum(load)), float(np.mean(off))


def sample_foot_counts(bus: "dds.DdsBus", seconds: float, check_crc: bool = True) -> np.ndarray:
    """Mean LowState_.foot_force (slot order) over ``seconds``."""
    got: list = []
    lock = threading.Lock()

    def on_state(buf: bytes) -> None:
        try:
            st = LowState.decode(buf, check_crc=check_crc)
        except CodecError:
            return
        with lock:
            got.append(list(st.foot_force))

    bus.reader(dds.LOWSTATE_TOPIC, "LowState_", on_state)
    time.sleep(seconds)
    with lock:
        if not got:
            raise CalibrationError(f"no LowState_ in {seconds:.1f} s: check the cable, [dds] network_interface and domain_id")
        return np.mean(np.asarray(got, dtype=np.float64), axis=0)


def write_foot_calibration(path: Path, n_per_count: float, offset_counts: float) -> None:
    """Replace the two [dds] values in a deployment TOML, keeping its comments."""
    text = path.read_text()
    for key, value in (("foot_force_n_per_count", n_per_count), ("foot_force_offset_counts", offset_counts)):
        text, n = re.subn(rf"(?m)^{key}\s*=\s*[-+0-9.eE]+", f"{key} = {value:.6g}", text)
        if n != 1:
            raise CalibrationError(f"{path}: expected one '{key} = ...' line in [dds], found {n}")
    path.write_text(text)


def calibrate_feet(bus: "dds.DdsBus", mass_kg: float, seconds: float, prompt: Callable[[str], None],
                   check_crc: bool = True) -> tuple:
    prompt("Hoist the robot (feet in the air) or lay it on its back, motors off; press Enter")
    unloaded = sample_foot_counts(bus, seconds, check_crc)
    prompt("Stand the robot still on flat ground (Unitree's stand is fine); press Enter")
    standing = sample_foot_counts(bus, seconds, check_crc)
    log.info("unloaded counts %s, standing counts %s", np.round(unloaded, 1), np.round(standing, 1))
    return foot_force_calibration(unloaded, standing, mass_kg)


def main(argv: Optional[list] = None) -> None:
    from ..deploy.profile import load_deployment
    from .deploy_config import DeployConfig

    ap = argparse.ArgumentParser(prog="krabby-calibrate", description="Calibrate a Go2 deployment profile")
    ap.add_argument("what", choices=("feet",), help="feet: foot-force offset and scale ([dds] foot_force_*)")
    ap.add_argument("--deploy", default="go2_jetson", help="deployment profile name or path")
    ap.add_argument("--mass-kg", type=float, default=GO2_MASS_KG, help="robot mass with everything mounted")
    ap.add_argument("--seconds", type=float, default=2.0, help="averaging time per pose")
    ap.add_argument("--write", action="store_true", help="write the values into the deployment TOML")
    ap.add_argument("--domain", type=int, default=None, help="DDS domain id override")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname).1s %(name)s: %(message)s")
    dep = load_deployment(a.deploy)
    d = DeployConfig.from_deployment(dep).dds
    iface = d.network_interface or None
    try:
        bus = dds.DdsBus(a.domain if a.domain is not None else d.domain_id,
                         dds.interface_config_xml(iface) if iface else dds.loopback_config_xml())
        try:
            k, off = calibrate_feet(bus, a.mass_kg, a.seconds, lambda text: input(text + " "), check_crc=d.lowstate_crc != "ignore")
        finally:
            bus.close()
    except (CalibrationError, dds.DdsError) as e:
        sys.exit(f"krabby-calibrate: {e}")
    print(f"foot_force_n_per_count = {k:.6g}\nfoot_force_offset_counts = {off:.6g}")
    if a.write:
        if dep.source_path is None:
            sys.exit("krabby-calibrate: the deployment has no file to write to")
        write_foot_calibration(dep.source_path, k, off)
        print(f"written to {dep.source_path}")


__all__ = ["foot_force_calibration", "sample_foot_counts", "write_foot_calibration", "calibrate_feet", "feet_uncalibrated",
           "CalibrationError", "UNCALIBRATED_FEET", "GO2_MASS_KG"]
