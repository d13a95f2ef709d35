"""A HAL backend over any simulator articulation: the part of the Isaac Sim backend that needs no Kit.

The simulator-specific calls sit behind two small interfaces:

- ``ArticulationIO``: joint state in the simulator's DOF order, root pose and velocity in the world
  frame, foot contact forces, and joint efforts out. ``krabby.hal.kit.sim_backend`` implements it
  with ``isaacsim.core.prims``; tests implement it with a few numpy arrays.
- ``RayCaster``: distances along rays (PhysX scene queries in Kit).

Everything else is here and pure: name mapping (``JointNameMap``), the training PD at every
physics step (``apply_pd``), world -> body frame conversions, an accelerometer from the velocity,
the training height scan and depth camera as ray casts, and a heading-hold navigation command.
"""

from __future__ import annotations

import abc
import logging
import math
from typing import Callable, Optional, Protocol, Sequence

import numpy as np

from .. import clock
from ..backend import HalBackend
from ..robot_profile import CameraSpec, HeightScanSpec, RobotProfile
from ..rotations import yaw_from_quat_wxyz
from ..types import ActuatorCommand, DepthFrame, HeightScan, NavigationCommand, RobotState, SensorFrame
from .stepper import JointNameMap, pd_efforts

log = logging.getLogger("krabby.hal.isaac.articulation")

GRAVITY_W_M_S2 = np.array([0.0, 0.0, -9.81])
SCAN_START_HEIGHT_M = 20.0  # the training ray caster starts 20 m above the base (spec §1.2)
SCAN_MAX_DISTANCE_M = 100.0


# ------------------------------------------------------------------------------------ geometry
def quat_wxyz_to_matrix(q: np.ndarray) -> np.ndarray:
    """World-from-body rotation matrix of a unit quaternion (w, x, y, z)."""
    w, x, y, z = (float(v) for v in np.asarray(q, dtype=np.float64) / np.linalg.norm(q))
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ])


def world_to_body(q_wxyz: np.ndarray, v_world: np.ndarray) -> np.ndarray:
    return quat_wxyz_to_matrix(q_wxyz).T @ np.asarray(v_world, dtype=np.float64)


def height_scan_rays(spec: HeightScanSpec, base_pos_w: np.ndarray, base_quat_wxyz: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ray origins and directions of the training height scanner: yaw-aligned grid, 20 m up, pointing down."""
    yaw = yaw_from_quat_wxyz(base_quat_wxyz)
    c, s = math.cos(yaw), math.sin(yaw)
    pts = spec.points_base_xy_m()
    origins = np.empty((pts.shape[0], 3))
    origins[:, 0] = base_pos_w[0] + c * pts[:, 0] - s * pts[:, 1]
    origins[:, 1] = base_pos_w[1] + s * pts[:, 0] + c * pts[:, 1]
    origins[:, 2] = base_pos_w[2] + SCAN_START_HEIGHT_M
    dirs = np.tile(np.array([0.0, 0.0, -1.0]), (pts.shape[0], 1))
    return origins, dirs


def height_scan_values(distances_m: np.ndarray) -> np.ndarray:
    """base_z - hit_z from the scanner's hit distances; a miss (inf) is -inf (types.HeightScan)."""
    d = np.asarray(distances_m, dtype=np.float64)
    return np.where(np.isfinite(d), d - SCAN_START_HEIGHT_M, -np.inf)


def depth_rays(cam: CameraSpec, base_pos_w: np.ndarray, base_quat_wxyz: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Origins (H*W, 3) and unit directions (H*W, 3) of the training pinhole camera, row-major."""
    r_wb = quat_wxyz_to_matrix(base_quat_wxyz)
    dirs_b = cam.ray_directions_camera().reshape(-1, 3) @ cam.rotation_base_from_camera().T
    origin = np.asarray(base_pos_w, dtype=np.float64) + r_wb @ np.asarray(cam.mount_pos_base_m)
    return np.tile(origin, (dirs_b.shape[0], 1)), dirs_b @ r_wb.T


def depth_image(cam: CameraSpec, distances_m: np.ndarray) -> np.ndarray:
    """Euclidean distance image (H, W) float32 with the training clipping: misses and > max become max."""
    d = np.asarray(distances_m, dtype=np.float64).reshape(cam.height_px, cam.width_px)
    return np.where(np.isfinite(d) & (d <= cam.max_distance_m), d, cam.max_distance_m).astype(np.float32)


class ImuEstimator:
    """Accelerometer reading (specific force, body frame) from successive world velocities."""

    def __init__(self, dt_s: float):
        self.dt_s = dt_s
        self._prev: Optional[np.ndarray] = None

    def reset(self) -> None:
        self._prev = None

    def __call__(self, quat_wxyz: np.ndarray, lin_vel_w: np.ndarray) -> np.ndarray:
        v = np.asarray(lin_vel_w, dtype=np.float64)
        acc_w = np.zeros(3) if self._prev is None else (v - self._prev) / self.dt_s
        self._prev = v.copy()
        return world_to_body(quat_wxyz, acc_w - GRAVITY_W_M_S2)


class HeadingHoldNavigation:
    """Walk forward along a fixed heading: the robot's yaw at the first read after Play, unless given.

    Fills NavigationCommand as training does: delta_yaw = target_yaw - wrap_to_pi(yaw), not re-wrapped.
    Both goals are the same heading (there are no parkour waypoints in an arbitrary stage).
    """

    def __init__(self, forward_speed_m_s: float = 0.5, terrain_is_flat: bool = False, target_yaw_rad: Optional[float] = None):
        self.forward_speed_m_s = float(forward_speed_m_s)
        self.terrain_is_flat = bool(terrain_is_flat)
        self.fixed_target_yaw_rad = target_yaw_rad
        self.target_yaw_rad = target_yaw_rad

    def reset(self) -> None:
        self.target_yaw_rad = self.fixed_target_yaw_rad

    def __call__(self, stamp_ns: int, quat_wxyz: np.ndarray) -> NavigationCommand:
        yaw = yaw_from_quat_wxyz(quat_wxyz)
        if self.target_yaw_rad is None:
            self.target_yaw_rad = yaw
        delta = self.target_yaw_rad - yaw
        return NavigationCommand(stamp_ns, self.forward_speed_m_s, delta, delta, self.terrain_is_flat)


# ---------------------------------------------------------------------------------- interfaces
class ArticulationIO(abc.ABC):
    """The simulator calls the HAL needs from one articulated robot (one environment)."""

    dof_names: Sequence[str]

    @abc.abstractmethod
    def joint_state(self) -> tuple[np.ndarray, np.ndarray]:
        """(positions rad, velocities rad/s), simulator DOF order."""

    @abc.abstractmethod
    def root_pose(self) -> tuple[np.ndarray, np.ndarray]:
        """(position m (3,), orientation quaternion w, x, y, z (4,)), world frame."""

    @abc.abstractmethod
    def root_velocity_world(self) -> tuple[np.ndarray, np.ndarray]:
        """(linear m/s (3,), angular rad/s (3,)), world frame."""

    @abc.abstractmethod
    def foot_forces_n(self) -> Optional[np.ndarray]:
        """Net contact force per foot, (F, 3) or (F,), in the profile's robot foot order; None if unknown."""

    @abc.abstractmethod
    def set_joint_efforts(self, efforts_dof_nm: np.ndarray) -> None:
        """Joint efforts for the coming physics step, simulator DOF order."""

    def is_valid(self) -> bool:
        return True


class RayCaster(Protocol):
    def cast(self, origins_w: np.ndarray, dirs_w: np.ndarray, max_distance_m: float) -> np.ndarray:
        """Hit distance per ray in metres, +inf for a miss; the robot itself is never hit."""


Acquire = Callable[[], Optional[tuple[ArticulationIO, Optional[RayCaster]]]]


class ArticulationHalBackend(HalBackend):
    """HAL backend over an ``ArticulationIO``; subclasses say how to acquire it (``_acquire``)."""

    provides_navigation = True

    def __init__(
        self, profile: RobotProfile, *, height_scan: bool = True, depth: bool = False,
        navigation: Optional[HeadingHoldNavigation] = None, control_dt_s: Optional[float] = None,
        now_ns: Callable[[], int] = clock.now_ns,
    ):
        self.profile = profile
        self.provides_height_scan = bool(height_scan)
        self.provides_depth = bool(depth)
        self.navigation = navigation or HeadingHoldNavigation()
        self.imu = ImuEstimator(control_dt_s or profile.control_dt_s)
        self.now_ns = now_ns
        self.io: Optional[ArticulationIO] = None
        self.caster: Optional[RayCaster] = None
        self.joint_map: Optional[JointNameMap] = None
        self.command: Optional[ActuatorCommand] = None
        self.last_torque_nm = np.zeros(profile.num_joints)
        self.last_state: Optional[RobotState] = None
        self.reads = 0
        self._warned_no_contacts = False
        self._depth_every = max(1, int(round(profile.control_rate_hz / profile.camera.update_rate_hz)))

    # ------------------------------------------------------------------ acquisition (stepper API)
    def _acquire(self) -> Optional[tuple[ArticulationIO, Optional[RayCaster]]]:
        """Return (io, caster) once the simulation can be read, else None. Subclasses implement."""
        raise NotImplementedError

    def ensure_ready(self) -> bool:
        if self.io is not None and self.io.is_valid():
            return True
        self.invalidate()
        got = self._acquire()
        if got is None:
            return False
        io, caster = got
        self.joint_map = JointNameMap(self.profile, io.dof_names)
        if self.provides_height_scan or self.provides_depth:
            if caster is None:
                raise RuntimeError("height scan or depth requested but no ray caster is available")
        self.io, self.caster = io, caster
        self.navigation.reset()
        self.imu.reset()
        self.reads = 0
        return True

    def invalidate(self) -> None:
        self.io = None
        self.caster = None

    @property
    def ready(self) -> bool:
        return self.io is not None

    # ---------------------------------------------------------------------------- HAL backend
    def apply(self, command: ActuatorCommand) -> None:
        self.command = command

    def apply_pd(self) -> None:
        io, jm = self._need()
        q, qd = io.joint_state()
        efforts, tau = pd_efforts(self.command, self.profile, jm, q, qd)
        io.set_joint_efforts(efforts)
        self.last_torque_nm = tau

    def read(self) -> SensorFrame:
        io, jm = self._need()
        now = self.now_ns()
        q, qd = io.joint_state()
        pos_w, quat = io.root_pose()
        quat = np.asarray(quat, dtype=np.float64)
        lin_w, ang_w = io.root_velocity_world()
        forces = io.foot_forces_n()
        if forces is None:  # no contact reporting: zeros (never in contact), said once in the log
            if not self._warned_no_contacts:
                self._warned_no_contacts = True
                log.warning("no foot contact forces from the simulator: the contact observation reads 'no contact'")
            foot_force = np.zeros(self.profile.num_feet)
        else:
            f = np.asarray(forces, dtype=np.float64)
            foot_force = np.linalg.norm(f, axis=-1) if f.ndim == 2 else np.abs(f)
        state = RobotState(
            stamp_ns=now,
            joint_pos_rad=jm.to_robot(q),
            joint_vel_rad_s=jm.to_robot(qd),
            joint_torque_nm=self.last_torque_nm.copy(),
            base_quat_wxyz=quat,
            base_ang_vel_body_rad_s=world_to_body(quat, ang_w),
            base_lin_acc_body_m_s2=self.imu(quat, lin_w),
            base_lin_vel_body_m_s=world_to_body(quat, lin_w),
            foot_force_n=foot_force,
        )
        frame = SensorFrame(state, navigation=self.navigation(now, quat))
        pos_w = np.asarray(pos_w, dtype=np.float64)
        if self.provides_height_scan:
            o, d = height_scan_rays(self.profile.height_scan, pos_w, quat)
            frame.height_scan = HeightScan(now, height_scan_values(self.caster.cast(o, d, SCAN_MAX_DISTANCE_M)))
        if self.provides_depth and self.reads % self._depth_every == 0:
            cam = self.profile.camera
            o, d = depth_rays(cam, pos_w, quat)
            frame.depth = DepthFrame(now, depth_image(cam, self.caster.cast(o, d, cam.max_distance_m)))
        self.reads += 1
        self.last_state = state
        return frame

    def _need(self) -> tuple[ArticulationIO, JointNameMap]:
        if self.io is None or self.joint_map is None:
            raise RuntimeError("the simulation is not ready (no articulation handle): press Play")
        return self.io, self.joint_map


__all__ = [
    "ArticulationIO", "RayCaster", "ArticulationHalBackend", "HeadingHoldNavigation", "ImuEstimator",
    "quat_wxyz_to_matrix", "yaw_from_quat_wxyz", "world_to_body", "height_scan_rays", "height_scan_values",
    "depth_rays", "depth_image",
]
