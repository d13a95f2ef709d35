"""FakeZedSource: a synthetic ZED Mini frame source for tests (a fake, not a camera model).

It stands in for ``krabby.hal.devices.zed_mini.PyZedSource``: the VGA intrinsics of a real ZED Mini's left
lens (a factory calibration file, matching Stereolabs' published 350 px at VGA: ~87.7 x 56.5 deg, narrower
than the training camera's 87 x 58 deg vertically), planar depth of an infinite flat floor computed analytically for the given mount, camera
timestamps on the wire clock, and IMU samples built the way PyZedSource builds them from the SDK's
raw values (orientation x-first, gyro in deg/s), so the conversions are exercised too.
"""

from __future__ import annotations

import math
import time
from typing import Optional, Sequence, Tuple

import numpy as np

from krabby.hal import clock
from krabby.hal.devices.depth_reprojection import PinholeIntrinsics, flat_floor_planar_depth
from krabby.hal.devices.zed_mini import ImuSample, deg_s_to_rad_s, zed_quat_xyzw_to_wxyz

#: a ZED Mini left lens at VGA (672x376): [LEFT_CAM_VGA] of a Stereolabs factory calibration file
ZED_MINI_VGA = PinholeIntrinsics(672, 376, 350.494, 350.494, 331.039, 189.714)


class FakeZedSource:
    def __init__(self, rot_base_from_cam: np.ndarray, cam_height_m: float, fps: float = 100.0,
                 intrinsics: PinholeIntrinsics = ZED_MINI_VGA,
                 imu_raw_xyzw: Sequence[float] = (0.0, 0.0, 0.0, 1.0), gyro_deg_s: Sequence[float] = (0.0, 0.0, 0.0),
                 accel_m_s2: Sequence[float] = (0.0, -9.81, 0.0)):
        self.intrinsics = intrinsics
        self.fps = fps
        self.depth = flat_floor_planar_depth(intrinsics, rot_base_from_cam, cam_height_m)
        self.imu_raw_xyzw = tuple(imu_raw_xyzw)
        self.gyro_deg_s = tuple(gyro_deg_s)
        self.accel = tuple(accel_m_s2)
        self.opened = self.closed = False
        self.grabs = 0
        self.stalled = False  # True: grab() times out like a stalled camera (no frame)
        self.stamps: list = []
        self._next = time.monotonic()

    def open(self) -> None:
        self.opened = True

    def grab(self) -> Optional[Tuple[int, np.ndarray]]:
        self._next += 1.0 / self.fps
        time.sleep(max(0.0, self._next - time.monotonic()))
        if self.stalled:
            return None
        self.grabs += 1
        stamp = clock.now_ns()
        self.stamps.append(stamp)
        return stamp, self.depth.copy()

    def imu(self) -> Optional[ImuSample]:
        return ImuSample(clock.now_ns(), zed_quat_xyzw_to_wxyz(self.imu_raw_xyzw), deg_s_to_rad_s(self.gyro_deg_s),
                         np.asarray(self.accel, dtype=np.float64))

    def close(self) -> None:
        self.closed = True


def pitched_accel(pitch_down_deg: float, g: float = 9.81) -> Tuple[float, float, float]:
    """What a ZED accelerometer at rest reads when pitched down by this angle (IMAGE frame)."""
    p = math.radians(pitch_down_deg)
    return (0.0, -g * math.cos(p), -g * math.sin(p))
