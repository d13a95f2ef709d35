"""The robot runner's sections of a deployment profile: how *this* robot is wired (DDS, ZED mount, limits, operator).

Besides the sections every deployment has ([deployment] with the robot profile's name, [server], [client],
[security], [safety]), a robot deployment has [dds] (network interface, DDS domain, foot-force calibration),
[zed] (the ZED Mini's mount), [supervisor] (robot-side limits) and [operator] (operator scaling), typed by the
dataclasses here. ``profile.load_deployment`` checks them (unknown fields are errors); the robot runner reads
them through ``krabby.hal.robot.deploy_config.DeployConfig``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional

from ..robot.supervisor import SupervisorConfig


@dataclass
class DdsSection:
    domain_id: int = 0
    network_interface: Optional[str] = "eth0"
    write_rate_hz: float = 500.0
    motor_joint_names: Optional[List[str]] = None
    foot_force_names: Optional[List[str]] = None
    foot_force_n_per_count: float = 1.0
    foot_force_offset_counts: float = 0.0
    # Unitree's own locomotion service ("sport mode") must be off before rt/lowcmd is written:
    # "check" refuses to start while it is on, "release" releases it (motion_switcher ReleaseMode; the CLI's
    # --release-sport-mode), "skip" does not ask (simulators without the service, e.g. unitree_mujoco)
    sport_mode: str = "check"
    motion_switcher_timeout_s: float = 5.0  # Unitree's examples wait 5 s (Python) and 10 s (C++)
    lowcmd_probe_s: float = 0.5  # listen this long on rt/lowcmd first; refuse if anyone else publishes (0 = off)
    # "enforce": drop LowState_ with a wrong CRC (the robot fills it); "ignore": accept it unchecked, for Unitree's
    # Python simulator (unitree_mujoco simulate_python), which publishes LowState_ with crc = 0. Never on the robot.
    lowstate_crc: str = "enforce"
    writer_rt_priority: int = 80  # SCHED_FIFO priority of the 500 Hz rt/lowcmd writer (0 = off; refused => warning)
    writer_lock_memory: bool = True  # mlockall before the writer starts (refused => warning)
    # Versions seen at start ("lowstate <version[0]>.<version[1]> bms <high>.<low>", from the first LowState_) are
    # always logged; a non-empty list refuses any other robot (e.g. only the firmware you rehearsed with)
    allowed_robot_versions: List[str] = field(default_factory=list)
    writer_cpu_affinity: str = ""  # pin the writer to these cores, e.g. "3" or "2,3" ("" = any)


@dataclass
class ZedSection:
    """ZED Mini: capture settings and mount (left lens optical centre, in the base frame)."""

    enabled: bool = True
    serial_number: int = 0  # 0 = the first camera found
    resolution: str = "VGA"  # VGA 672x376 runs up to 100 FPS
    fps: int = 100
    depth_mode: str = "PERFORMANCE"
    min_depth_m: float = 0.15
    max_depth_m: float = 3.0
    mount_pos_base_m: List[float] = field(default_factory=lambda: [0.33, 0.0315, 0.08])
    mount_roll_deg: float = 0.0
    mount_pitch_down_deg: float = 20.0
    mount_yaw_deg: float = 0.0
    output_rate_hz: float = 50.0  # reprojections to the training camera per second (latest frame)
    source_stride: int = 2  # use every n-th ZED pixel (VGA/2 still gives ~10 points per training pixel)
    max_frame_age_s: float = 0.2  # older depth is stale: not used by the policy; in POLICY the robot stands back up


@dataclass
class OperatorSection:
    max_forward_m_s: float = 1.0
    max_yaw_rad: float = 0.8
    default_forward_m_s: float = 0.0
    stick_deadband: float = 0.1
    gamepad_device: str = "/dev/input/js0"
    terrain_is_flat: bool = False
    remote_timeout_s: float = 3.0  # a remote seen, then silent this long (Unitree's go2_sub.h: 3 s) => stand
    remote_lost_lie_down_s: float = 5.0  # still silent this much longer while standing => lie down, then damp


# The robot runner's own sections of a deployment profile; krabby.hal.deploy.profile checks and parses them
# (unknown fields are errors) into DeploymentProfile.sections. The shared sections ([deployment] robot,
# [server], [client], [security], [safety]) stay on the DeploymentProfile itself.
RUNNER_SECTIONS = {"dds": DdsSection, "zed": ZedSection, "supervisor": SupervisorConfig, "operator": OperatorSection}


__all__ = ["DdsSection", "ZedSection", "OperatorSection", "RUNNER_SECTIONS"]
