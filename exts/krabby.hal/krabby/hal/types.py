"""Telemetry and command records exchanged between backends, the HAL and its clients.

Units and frames are in the field names. Joint and foot vectors are in *robot* order (the
profile's ``joint_names`` / ``foot_names``); only the observation builder converts to policy order.
Timestamps are capture times in nanoseconds on the wire clock (``krabby.hal.clock.now_ns``).
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field
from typing import Optional

import numpy as np


def vector_norm(v: np.ndarray) -> float:
    """Euclidean norm of a 1-D vector, the very arithmetic of np.linalg.norm (sqrt of x.x) without its
    Python wrapper, which costs more than the maths for the 2- to 4-vectors the loops use every step."""
    return math.sqrt(v.dot(v))


def all_finite(values: np.ndarray) -> bool:
    """Every entry finite. x.x decides it in one call (finite only if every entry is); np.isfinite
    decides when huge finite values overflow it. Unlike a sum, x.x makes no NaN of +inf and -inf, so
    hostile input raises no RuntimeWarning. Give float64 for float32 data: its squares cannot overflow."""
    return math.isfinite(values.dot(values)) or bool(np.isfinite(values).all())


@dataclass
class RobotState:
    """Proprioception of one instant, robot order."""

    stamp_ns: int
    joint_pos_rad: np.ndarray  # (J,)
    joint_vel_rad_s: np.ndarray  # (J,)
    joint_torque_nm: np.ndarray  # (J,) measured or commanded torque
    base_quat_wxyz: np.ndarray  # (4,) world-from-base orientation
    base_ang_vel_body_rad_s: np.ndarray  # (3,) gyro, body frame
    base_lin_acc_body_m_s2: np.ndarray  # (3,) accelerometer, body frame
    base_lin_vel_body_m_s: np.ndarray  # (3,) NaN when the backend does not know it
    foot_force_n: np.ndarray  # (F,) contact force magnitude per foot, robot foot order


@dataclass
class DepthFrame:
    """Depth in the training camera model: Euclidean distance along each ray, metres, +inf invalid."""

    stamp_ns: int
    distance_m: np.ndarray  # (H, W) float32, row 0 at the top


@dataclass
class HeightScan:
    """Height of the base above the terrain under each scan point: base_z - hit_z, metres.

    Points follow the profile's ``height_scan`` grid (x varies fastest); a miss is -inf, which
    the training formula clip(h - 0.3, -1, 1) turns into -1 exactly as a miss did in training.
    """

    stamp_ns: int
    base_height_above_hit_m: np.ndarray  # (K,)


@dataclass
class NavigationCommand:
    """What the teacher needs to know about where to go (spec §1.1)."""

    stamp_ns: int
    forward_speed_m_s: float
    delta_yaw_rad: float  # target_yaw - yaw, not re-wrapped (range (-2pi, 2pi))
    delta_next_yaw_rad: float
    terrain_is_flat: bool = False


@dataclass
class SensorFrame:
    """Everything a backend read in one control step; optional parts are None when absent."""

    state: RobotState
    depth: Optional[DepthFrame] = None
    height_scan: Optional[HeightScan] = None
    navigation: Optional[NavigationCommand] = None


class ActuatorMode(enum.IntEnum):
    POSITION = 0  # PD to target_pos_rad with kp/kd
    DAMP = 1  # kp = 0, velocity damping only
    ZERO_TORQUE = 2  # nothing applied (dry run)


@dataclass
class ActuatorCommand:
    """What the safety supervisor lets through to the backend each control step (robot order)."""

    mode: ActuatorMode
    target_pos_rad: np.ndarray
    kp_nm_per_rad: np.ndarray
    kd_nm_s_per_rad: np.ndarray
    source_seq: int = -1  # sequence number of the client command it came from; -1 if none
    extra: dict = field(default_factory=dict)

    def torque_nm(self, profile, pos_rad: np.ndarray, vel_rad_s: np.ndarray) -> np.ndarray:
        """Torque of this command under the profile's DC-motor clip (the training actuator model)."""
        if self.mode == ActuatorMode.ZERO_TORQUE:
            return np.zeros_like(pos_rad)
        if self.mode == ActuatorMode.DAMP:  # damping only, whatever kp the command carries
            tau = -self.kd_nm_s_per_rad * vel_rad_s
        else:
            tau = self.kp_nm_per_rad * (self.target_pos_rad - pos_rad) - self.kd_nm_s_per_rad * vel_rad_s
        return profile.dc_motor_clip_nm(tau, vel_rad_s)
