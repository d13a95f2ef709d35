"""IsaacLabEnvBackend: HAL telemetry read from an Isaac Lab ManagerBasedRLEnv (env 0), commands held for env.step.

Reads only documented Isaac Lab 2.3 data buffers (kit_conventions.md §5.1, §5.3-5.5); no isaaclab
import, so it is tested here with a numpy stand-in of those buffers:

- ``scene["robot"].data``: joint_pos, joint_vel, applied_torque, root_quat_w (w, x, y, z),
  root_ang_vel_b, root_lin_vel_b, root_lin_vel_w; joint names from ``robot.joint_names``;
- ``scene.sensors["contact_forces"].data.net_forces_w`` (bodies by ``body_names``);
- ``scene.sensors["height_scanner"].data``: pos_w, ray_hits_w (the training scanner: base_z - hit_z);
- ``scene.sensors["depth_camera"].data.output["distance_to_camera"]`` (RayCasterCamera, training model).

The env applies its own actuator model (the training DC-motor PD) inside ``env.step``; this backend
only holds the supervisor's command, which ``krabby.hal.isaac.main`` converts to env actions.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import numpy as np

from .. import clock
from ..backend import HalBackend
from ..robot_profile import RobotProfile
from ..types import ActuatorCommand, DepthFrame, HeightScan, RobotState, SensorFrame
from .articulation import HeadingHoldNavigation, ImuEstimator
from .stepper import JointNameMap


def to_numpy(x: Any) -> np.ndarray:
    """numpy float64 from a torch tensor (any device) or an array."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


class IsaacLabEnvBackend(HalBackend):
    provides_navigation = True

    def __init__(
        self, env: Any, profile: RobotProfile, *, robot_key: str = "robot", contact_key: str = "contact_forces",
        scanner_key: str = "height_scanner", camera_key: str = "depth_camera",
        navigation: Optional[HeadingHoldNavigation] = None, now_ns: Callable[[], int] = clock.now_ns,
    ):
        self.profile = profile
        self.env = env.unwrapped if hasattr(env, "unwrapped") else env
        scene = self.env.scene
        self.robot = scene[robot_key]
        self.joint_map = JointNameMap(profile, list(self.robot.joint_names))
        sensors = getattr(scene, "sensors", {}) or {}
        self.contact = sensors.get(contact_key)
        self.scanner = sensors.get(scanner_key)
        self.camera = sensors.get(camera_key)
        self.provides_height_scan = self.scanner is not None
        self.provides_depth = self.camera is not None
        self._foot_ids = None
        if self.contact is not None:
            names = list(self.contact.body_names)
            missing = [f for f in profile.foot_names if f not in names]
            if missing:
                raise ValueError(f"contact sensor {contact_key!r} has no bodies {', '.join(missing)}; it has {', '.join(names)}")
            self._foot_ids = [names.index(f) for f in profile.foot_names]
        step_dt = float(getattr(self.env, "step_dt", profile.control_dt_s))
        self.imu = ImuEstimator(step_dt)
        self.navigation = navigation or HeadingHoldNavigation()
        self.now_ns = now_ns
        self.command: Optional[ActuatorCommand] = None
        self.episode = 0
        self.reads = 0
        self._depth_every = max(1, int(round(1.0 / (step_dt * profile.camera.update_rate_hz))))

    def on_reset(self) -> None:
        """The env reset (an episode ended): new heading, new IMU history."""
        self.episode += 1
        self.navigation.reset()
        self.imu.reset()

    def read(self) -> SensorFrame:
        d = self.robot.data
        now = self.now_ns()
        jm = self.joint_map
        quat = to_numpy(d.root_quat_w)[0]
        state = RobotState(
            stamp_ns=now,
            joint_pos_rad=jm.to_robot(to_numpy(d.joint_pos)[0]),
            joint_vel_rad_s=jm.to_robot(to_numpy(d.joint_vel)[0]),
            joint_torque_nm=jm.to_robot(to_numpy(d.applied_torque)[0]),
            base_quat_wxyz=quat,
            base_ang_vel_body_rad_s=to_numpy(d.root_ang_vel_b)[0],
            base_lin_acc_body_m_s2=self.imu(quat, to_numpy(d.root_lin_vel_w)[0]),
            base_lin_vel_body_m_s=to_numpy(d.root_lin_vel_b)[0],
            foot_force_n=self._foot_forces(),
        )
        frame = SensorFrame(state, navigation=self.navigation(now, quat))
        if self.scanner is not None:
            sd = self.scanner.data
            base_z = to_numpy(sd.pos_w)[0][2]
            hit_z = to_numpy(sd.ray_hits_w)[0][:, 2]
            frame.height_scan = HeightScan(now, np.where(np.isfinite(hit_z), base_z - hit_z, -np.inf))
        if self.camera is not None and self.reads % self._depth_every == 0:
            img = to_numpy(self.camera.data.output["distance_to_camera"])[0]
            frame.depth = DepthFrame(now, img.reshape(img.shape[0], img.shape[1]).astype(np.float32))
        self.reads += 1
        return frame

    def _foot_forces(self) -> np.ndarray:
        if self.contact is None:
            return np.zeros(self.profile.num_feet)
        f = to_numpy(self.contact.data.net_forces_w)[0][self._foot_ids]
        return np.linalg.norm(f, axis=-1)

    def apply(self, command: ActuatorCommand) -> None:
        self.command = command


__all__ = ["IsaacLabEnvBackend", "to_numpy"]
