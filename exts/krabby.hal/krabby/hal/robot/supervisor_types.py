"""The robot supervisor's vocabulary: its modes, its configuration (the deployment's [supervisor]), what it reads
(``Feedback``) and what it sends (``MotorCommand``). Split from supervisor.py so the rules stay readable there."""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from typing import List, Optional

import numpy as np


class Mode(enum.IntEnum):
    DAMPING = 0
    STANDING_UP = 1
    STANDING = 2
    POLICY = 3
    ESTOP = 4
    LYING_DOWN = 5  # ramp to the sitting pose, then DAMPING


TORQUE_MODES = (Mode.STANDING_UP, Mode.STANDING, Mode.POLICY, Mode.LYING_DOWN)

#: the lying pose by joint kind: Unitree's go2_stand_example.cpp sits down to thigh 1.36, calf -2.65 (hips 0)
LIE_DOWN_POSE_RAD = {"hip": 0.0, "thigh": 1.36, "calf": -2.65}


def lie_down_pose(joint_names: List[str]) -> np.ndarray:
    """The lying pose in robot order, by each joint's kind (``FR_thigh_joint`` -> thigh)."""
    return np.array([next(v for k, v in LIE_DOWN_POSE_RAD.items() if f"_{k}" in n) for n in joint_names])


@dataclass
class SupervisorConfig:
    """Robot-side safety limits (times in seconds; the deployment TOML's [supervisor] section)."""

    dry_run: bool = True  # send zero torque until the operator enables torque
    allow_live: bool = False  # False: enable_torque is refused (the runner's --live flag sets this)
    stand_up_s: float = 2.5
    stand_kp_nm_per_rad: float = 40.0
    stand_kd_nm_s_per_rad: float = 2.0
    damping_kd_nm_s_per_rad: float = 2.0
    policy_watchdog_s: float = 0.1  # POLICY: no HAL command for this long => DAMPING
    arm_grace_s: float = 0.1  # POLICY: a non-POSITION HAL output this soon after arming is not yet a stop
    state_timeout_s: float = 0.1  # any torque mode: no LowState for this long => DAMPING
    max_tilt_rad: float = 1.0  # |roll| or |pitch| beyond this => DAMPING (training terminated at 1.5)
    motor_temp_warn_c: float = 65.0
    motor_temp_limit_c: float = 75.0  # any motor at or above => DAMPING
    joint_limit_margin_rad: float = 0.0
    torque_limit_scale: float = 1.0  # fraction of profile.hardware_torque_limit_nm allowed
    max_policy_step_errors: int = 5  # POLICY: this many failed policy steps in a row => back to standing
    depth_max_age_s: float = 0.0  # > 0 (a depth camera runs): POLICY with older depth => back to standing
    lie_down_s: float = 2.0  # lie_down: ramp to the sitting pose this long, then DAMPING
    shutdown_damp_s: float = 0.5  # on any stop (q, signals, uncaught exceptions): damping frames this long before exit


@dataclass
class Feedback:
    """The measured robot state the supervisor needs, robot joint order."""

    stamp_ns: int
    joint_pos_rad: np.ndarray
    joint_vel_rad_s: np.ndarray
    base_quat_wxyz: np.ndarray
    motor_temp_c: np.ndarray


@dataclass
class MotorCommand:
    """What the writer sends this cycle (robot order). ``zero_torque``: kp = kd = tau = 0 on every motor."""

    target_pos_rad: np.ndarray
    kp_nm_per_rad: np.ndarray
    kd_nm_s_per_rad: np.ndarray
    zero_torque: bool
    mode: Mode
    would_send: Optional["MotorCommand"] = None  # in dry run: what would have been sent


@dataclass
class SupervisorEvent:
    stamp_ns: int
    kind: str
    detail: str = ""


def roll_pitch_from_quat_wxyz(q: np.ndarray) -> tuple:
    """Isaac Lab XYZ Euler roll and pitch of a world-from-base quaternion (w, x, y, z)."""
    w, x, y, z = (float(v) for v in q)
    roll = math.atan2(2.0 * (w * x + y * z), 1.0 - 2.0 * (x * x + y * y))
    s = max(-1.0, min(1.0, 2.0 * (w * y - z * x)))
    return roll, math.asin(s)


def smoothstep(a: float) -> float:
    a = min(max(a, 0.0), 1.0)
    return a * a * (3.0 - 2.0 * a)


__all__ = ["Mode", "TORQUE_MODES", "LIE_DOWN_POSE_RAD", "lie_down_pose", "SupervisorConfig", "Feedback", "MotorCommand", "SupervisorEvent",
           "roll_pitch_from_quat_wxyz", "smoothstep"]
