"""LoopbackTestDouble: a deterministic stand-in robot for tests and the HAL demo. Not a simulator.

Each ``read()`` advances a tiny first-order model: every joint moves a fixed fraction of the way to
its held target (position mode) or stops (damp / zero torque). The base stays level, the feet carry
the robot's weight, depth is a flat floor seen by the profile's camera. Everything is a pure function
of the commands received, so tests can predict every value.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import clock
from ..backend import HalBackend
from ..robot_profile import RobotProfile
from ..types import ActuatorCommand, ActuatorMode, DepthFrame, HeightScan, NavigationCommand, RobotState, SensorFrame


@dataclass
class LoopbackConfig:
    tracking_fraction: float = 0.5  # share of the remaining error a joint closes per read()
    base_height_m: float = 0.30
    mass_kg: float = 15.0
    forward_speed_m_s: float = 0.5


class LoopbackTestDouble(HalBackend):
    """A test double of a robot (named so on purpose): deterministic, no physics, no hardware."""

    provides_depth = True
    provides_height_scan = True
    provides_navigation = True

    def __init__(self, profile: RobotProfile, config: LoopbackConfig | None = None):
        self.profile = profile
        self.config = config or LoopbackConfig()
        self.joint_pos_rad = profile.default_pos_rad.astype(np.float64).copy()
        self.joint_vel_rad_s = np.zeros(profile.num_joints)
        self.applied: list[ActuatorCommand] = []  # every command the HAL let through, in order
        self._command: ActuatorCommand | None = None
        self._depth_m = self._flat_floor_depth()
        self.reads = 0

    def _flat_floor_depth(self) -> np.ndarray:
        """Euclidean distance to the floor z = 0 for every pixel of the profile's camera; +inf above horizon."""
        cam = self.profile.camera
        dirs_base = cam.ray_directions_camera() @ cam.rotation_base_from_camera().T
        cam_z = self.config.base_height_m + cam.mount_pos_base_m[2]
        with np.errstate(divide="ignore"):
            t = np.where(dirs_base[..., 2] < 0, cam_z / -dirs_base[..., 2], np.inf)
        return t.astype(np.float32)

    def read(self) -> SensorFrame:
        now = clock.now_ns()
        cmd = self._command
        if cmd is not None and cmd.mode == ActuatorMode.POSITION:
            step = self.config.tracking_fraction * (cmd.target_pos_rad - self.joint_pos_rad)
            self.joint_vel_rad_s = step * self.profile.control_rate_hz
            self.joint_pos_rad = self.joint_pos_rad + step
        else:
            self.joint_vel_rad_s = np.zeros(self.profile.num_joints)
        torque = cmd.torque_nm(self.profile, self.joint_pos_rad, self.joint_vel_rad_s) if cmd else np.zeros(self.profile.num_joints)
        weight_n = self.config.mass_kg * 9.81 / self.profile.num_feet
        state = RobotState(
            stamp_ns=now,
            joint_pos_rad=self.joint_pos_rad.copy(),
            joint_vel_rad_s=self.joint_vel_rad_s.copy(),
            joint_torque_nm=torque,
            base_quat_wxyz=np.array([1.0, 0.0, 0.0, 0.0]),
            base_ang_vel_body_rad_s=np.zeros(3),
            base_lin_acc_body_m_s2=np.array([0.0, 0.0, 9.81]),
            base_lin_vel_body_m_s=np.array([self.config.forward_speed_m_s, 0.0, 0.0]),
            foot_force_n=np.full(self.profile.num_feet, weight_n),
        )
        scan = HeightScan(now, np.full(self.profile.height_scan.num_points, self.config.base_height_m))
        nav = NavigationCommand(now, self.config.forward_speed_m_s, 0.0, 0.0, terrain_is_flat=True)
        depth = DepthFrame(now, self._depth_m) if self.reads % 5 == 0 else None
        self.reads += 1
        return SensorFrame(state, depth=depth, height_scan=scan, navigation=nav)

    def apply(self, command: ActuatorCommand) -> None:
        self._command = command
        self.applied.append(command)
        if len(self.applied) > 10000:
            del self.applied[:5000]
