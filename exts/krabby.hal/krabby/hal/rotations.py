"""Isaac Lab's quaternion -> roll, pitch, yaw convention, written once (spec §1.1).

Training takes Isaac Lab's ``euler_xyz_from_quat`` of the root quaternion (w, x, y, z; world from
base), each angle mod 2π, then ``wrap_to_pi``: every angle ends in (−π, π], +π stays +π, and pitch
saturates to ±π/2 where asin's argument leaves [−1, 1]. The observation's roll and pitch, the heading
errors every backend writes into NavigationCommand and the simulators' fall checks all use these
functions, so each backend computes what the policy was trained on. Pure Python floats: they run
every control step on one quaternion, where numpy's per-call cost exceeds the arithmetic.
"""

from __future__ import annotations

import math

import numpy as np

from .types import vector_norm

_TWO_PI = 2.0 * math.pi


def wrap_to_pi(angle_rad: float) -> float:
    """Isaac Lab ``wrap_to_pi``: map to (−π, π]; +π stays +π (only positive odd multiples of π do)."""
    wrapped = (angle_rad + math.pi) % _TWO_PI
    if wrapped == 0.0 and angle_rad > 0.0:
        return math.pi
    return wrapped - math.pi


def unit_quat_wxyz(quat_wxyz: np.ndarray, what: str = "base_quat_wxyz") -> tuple[float, float, float, float]:
    """The quaternion normalised, as four floats; ValueError (naming ``what``) unless it is a finite,
    non-zero (4,) vector."""
    q = np.asarray(quat_wxyz, dtype=np.float64)
    n = vector_norm(q) if q.shape == (4,) else math.nan
    if not math.isfinite(n) or n < 1e-6:
        raise ValueError(f"{what} must be a finite non-zero (4,) quaternion, got {quat_wxyz!r}")
    w, x, y, z = q.tolist()
    return w / n, x / n, y / n, z / n


def roll_pitch_of_unit_quat(w: float, x: float, y: float, z: float) -> tuple[float, float]:
    """Roll and pitch (rad) of a unit quaternion: Isaac Lab's formulas, mod 2π, then wrapped."""
    roll = math.atan2(2.0 * (w * x + y * z), 1.0 - 2.0 * (x * x + y * y))
    sin_pitch = 2.0 * (w * y - z * x)
    pitch = math.copysign(math.pi / 2.0, sin_pitch) if abs(sin_pitch) >= 1.0 else math.asin(sin_pitch)
    return wrap_to_pi(roll % _TWO_PI), wrap_to_pi(pitch % _TWO_PI)


def yaw_of_unit_quat(w: float, x: float, y: float, z: float) -> float:
    """Yaw (rad) of a unit quaternion: Isaac Lab's formula, mod 2π, then wrapped."""
    return wrap_to_pi(math.atan2(2.0 * (w * z + x * y), 1.0 - 2.0 * (y * y + z * z)) % _TWO_PI)


def euler_xyz_from_quat_wxyz(quat_wxyz: np.ndarray) -> tuple[float, float, float]:
    """(roll, pitch, yaw) rad as training computes them; the quaternion is normalised first."""
    w, x, y, z = unit_quat_wxyz(quat_wxyz)
    return (*roll_pitch_of_unit_quat(w, x, y, z), yaw_of_unit_quat(w, x, y, z))


def yaw_from_quat_wxyz(quat_wxyz: np.ndarray) -> float:
    """Yaw rad as training computes it (the heading that NavigationCommand's delta yaws subtract)."""
    return yaw_of_unit_quat(*unit_quat_wxyz(quat_wxyz))
