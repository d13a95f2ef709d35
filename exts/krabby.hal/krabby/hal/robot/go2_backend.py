"""Go2RobotBackend: the HAL backend of the real robot (and of its simulated twin over DDS).

Composes swappable parts, LeRobot-style: the motor bus (``Go2LowLevel``), an optional depth camera
(ZED Mini, or anything with ``latest_depth()``), the operator (navigation command from the sticks)
and the robot-side ``RobotSupervisor``, which owns the motors: the HAL's ``apply()`` only hands it
the policy's targets; the 500 Hz writer sends what the supervisor decides.

``read()`` builds the SensorFrame from the newest LowState_ (robot order, SI units; foot forces
calibrated from raw counts) and the newest depth frame. Privileged extras (height scan, goal
headings) exist only in simulation: pass ``extras`` (e.g. ``sim_node.SimExtrasClient``) to publish
them for teacher policies during rehearsals; on the robot there is none.
"""

from __future__ import annotations

import logging
from typing import Any, Optional

import numpy as np

from .. import clock
from ..backend import HalBackend
from ..devices.go2_lowlevel import Go2Feedback, Go2LowLevel
from ..robot_profile import RobotProfile
from ..types import ActuatorCommand, NavigationCommand, RobotState, SensorFrame
from .operator import Operator
from .supervisor import Feedback, RobotSupervisor

log = logging.getLogger("krabby.hal.robot.go2_backend")


class NoRobotStateError(RuntimeError):
    """No LowState_ has arrived from the robot (yet)."""


class Go2RobotBackend(HalBackend):
    def __init__(self, profile: RobotProfile, lowlevel: Go2LowLevel, supervisor: RobotSupervisor,
                 operator: Operator, camera: Any = None, extras: Any = None, terrain_is_flat: bool = False):
        self.profile = profile
        self.lowlevel = lowlevel
        self.supervisor = supervisor
        self.operator = operator
        self.camera = camera
        self.extras = extras
        self.terrain_is_flat = terrain_is_flat
        self.provides_depth = camera is not None
        self.max_depth_age_s = float(getattr(getattr(camera, "config", None), "max_frame_age_s", 0.2))
        self.provides_height_scan = extras is not None and getattr(extras, "provides_height_scan", False)
        self.provides_navigation = True
        self.last_feedback: Optional[Go2Feedback] = None
        self.last_navigation: Optional[NavigationCommand] = None  # what the policy was last told (dashboard)

    def connect(self) -> None:
        self.lowlevel.listeners.append(self._on_feedback)
        self.lowlevel.set_command_source(self.supervisor.output)
        if self.camera is not None:
            self.camera.connect()
        if self.extras is not None:
            self.extras.connect()
        self.lowlevel.connect()

    def disconnect(self) -> None:
        self.lowlevel.disconnect()
        if self.camera is not None:
            self.camera.disconnect()
        if self.extras is not None:
            self.extras.disconnect()

    def _on_feedback(self, fb: Go2Feedback) -> None:
        self.supervisor.on_feedback(Feedback(fb.stamp_ns, fb.joint_pos_rad, fb.joint_vel_rad_s, fb.base_quat_wxyz, fb.motor_temp_c))
        self.operator.on_remote(fb.wireless_remote)

    def read(self) -> SensorFrame:
        fb = self.lowlevel.latest()
        if fb is None:
            raise NoRobotStateError("no LowState_ received from the robot yet (is it on and on the same DDS domain/interface?)")
        self.last_feedback = fb
        state = RobotState(
            stamp_ns=fb.stamp_ns,
            joint_pos_rad=fb.joint_pos_rad,
            joint_vel_rad_s=fb.joint_vel_rad_s,
            joint_torque_nm=fb.joint_tau_est_nm,
            base_quat_wxyz=fb.base_quat_wxyz,
            base_ang_vel_body_rad_s=fb.base_ang_vel_body_rad_s,
            base_lin_acc_body_m_s2=fb.base_lin_acc_body_m_s2,
            base_lin_vel_body_m_s=np.full(3, np.nan),  # unknown on the robot: the estimator provides it
            foot_force_n=fb.foot_force_n,
        )
        frame = SensorFrame(state=state)
        if self.camera is not None:
            depth = self.camera.latest_depth()
            age_s = (clock.now_ns() - depth.stamp_ns) * 1e-9 if depth is not None else None
            self.supervisor.on_depth_age(age_s)
            # a stalled camera must not feed the policy its last frame forever: stale depth is not published
            if depth is not None and age_s <= self.max_depth_age_s:
                frame.depth = depth
        vel = self.operator.velocity()
        nav = NavigationCommand(clock.now_ns(), vel.forward_m_s, vel.yaw_rad, vel.yaw_rad, terrain_is_flat=self.terrain_is_flat)
        if self.extras is not None:
            scan = self.extras.latest_height_scan()
            if scan is not None:
                frame.height_scan = scan
            sim_nav = self.extras.latest_navigation()
            if sim_nav is not None and getattr(self.extras, "use_navigation", False):
                # the operator's speed and yaw keys drive the rehearsal too; the simulator knows the terrain
                nav.terrain_is_flat = sim_nav.terrain_is_flat
        frame.navigation = nav
        self.last_navigation = nav
        return frame

    def apply(self, command: ActuatorCommand) -> None:
        self.supervisor.set_policy_command(command)


__all__ = ["Go2RobotBackend", "NoRobotStateError"]
