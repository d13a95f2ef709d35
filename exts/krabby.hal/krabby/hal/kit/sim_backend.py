"""IsaacSimBackend: the HAL backend of a robot articulation on the open Isaac Sim stage.

Written against Isaac Sim 5.1's ``isaacsim.core.prims`` (``Articulation``, ``RigidPrim``) and
omni.physx scene queries (see ../shared/research/kit_conventions.md §5.2, §5.4). Only the calls to
those APIs live here; the PD, name mapping, frames, height scan and depth geometry are in the pure
``krabby.hal.isaac.articulation`` module.

- Joint state is mapped to robot order BY NAME (``JointNameMap`` over ``Articulation.dof_names``).
- The joints are switched to effort control (``switch_control_mode("effort")``: zero drive gains, in
  the view's own backend) and the training PD torque is written with ``set_joint_efforts`` before
  every physics step, converted with the view's backend utilities: with GPU physics Isaac Sim
  switches the views to the torch backend, whose ``move_data`` calls ``.to()`` on its input
  (IS v5.1.0 isaacsim.core.simulation_manager/python/impl/simulation_manager.py:178-181;
  isaacsim.core.utils/python/impl/torch/tensor.py:64-65), so numpy would fail every step.
- The user's stage is not rewritten: views are built with ``reset_xform_properties=False``
  (the default rewrites the prim's xformOps, isaacsim.core.prims/python/impl/xform_prim.py:153-154),
  and the feet must already be rigid bodies (``RigidPrim`` would otherwise apply ``RigidBodyAPI`` to
  them, rigid_prim.py:2281-2293, creating new bodies inside the robot).
- Handles are (re)acquired on the first physics step once the simulation view exists after Play.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import omni.usd
from pxr import UsdPhysics

from ..isaac.articulation import ArticulationHalBackend, ArticulationIO, RayCaster
from ..robot_profile import RobotProfile


class RobotNotFoundError(RuntimeError):
    """The stage has no robot where the settings say; the message says which setting to change."""


class _NotReady(Exception):
    """The physics simulation view does not exist yet (just after Play); try again next step."""


def _np(x) -> np.ndarray:
    """numpy from what isaacsim.core returns: numpy, torch (torch backend, any device) or warp (warp backend)."""
    if x is None:
        raise RuntimeError("the view returned nothing (physics handle not valid)")
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    elif not isinstance(x, np.ndarray) and callable(getattr(x, "numpy", None)):
        x = x.numpy()  # wp.array: copied to the host
    return np.asarray(x, dtype=np.float64)


class PrimsArticulationIO(ArticulationIO):
    """ArticulationIO over ``isaacsim.core.prims.Articulation`` (one robot) and a ``RigidPrim`` of its feet."""

    def __init__(self, prim_path: str, foot_paths: Sequence[str], physics_dt_s: float):
        from isaacsim.core.prims import Articulation, RigidPrim

        art = Articulation(prim_paths_expr=prim_path, name="krabby_hal_robot", reset_xform_properties=False)
        try:
            art.initialize()
        except Exception as e:  # no physics simulation view yet
            raise _NotReady(str(e)) from None
        if not art.is_physics_handle_valid():
            raise _NotReady("physics handle not valid yet")
        self._art = art
        self.dof_names = list(art.dof_names)
        # effort mode: no PhysX drive; the training PD is applied by us as joint efforts
        art.switch_control_mode("effort")
        self._dt = physics_dt_s
        self._feet = None
        if foot_paths:
            feet = RigidPrim(
                prim_paths_expr=list(foot_paths), name="krabby_hal_feet", reset_xform_properties=False,
                track_contact_forces=True, prepare_contact_sensors=True,
            )
            feet.initialize()
            self._feet = feet

    def joint_state(self) -> tuple[np.ndarray, np.ndarray]:
        return _np(self._art.get_joint_positions())[0], _np(self._art.get_joint_velocities())[0]

    def root_pose(self) -> tuple[np.ndarray, np.ndarray]:
        pos, quat = self._art.get_world_poses()
        return _np(pos)[0], _np(quat)[0]  # quaternion w, x, y, z (isaacsim.core convention)

    def root_velocity_world(self) -> tuple[np.ndarray, np.ndarray]:
        v = _np(self._art.get_velocities())[0]  # (6,) linear then angular, world frame
        return v[:3], v[3:]

    def foot_forces_n(self) -> Optional[np.ndarray]:
        if self._feet is None:
            return None
        return _np(self._feet.get_net_contact_forces(dt=self._dt))  # (F, 3), in foot_paths order

    def set_joint_efforts(self, efforts_dof_nm: np.ndarray) -> None:
        art = self._art
        efforts = np.asarray(efforts_dof_nm, dtype=np.float32)[None, :]
        # the view's own array type (numpy, torch or warp) on the physics device
        art.set_joint_efforts(art._backend_utils.convert(efforts, device=art._device, dtype="float32"))

    def is_valid(self) -> bool:
        return bool(self._art.is_physics_handle_valid())


class PhysxRayCaster(RayCaster):
    """Ray casts with omni.physx scene queries, ignoring every hit on the robot itself (as in training)."""

    def __init__(self, exclude_prefix: str):
        from omni.physx import get_physx_scene_query_interface

        self._sq = get_physx_scene_query_interface()
        self._exclude = exclude_prefix.rstrip("/") + "/"

    def cast(self, origins_w: np.ndarray, dirs_w: np.ndarray, max_distance_m: float) -> np.ndarray:
        out = np.full(len(origins_w), np.inf)
        exclude, exact = self._exclude, self._exclude[:-1]
        for i in range(len(origins_w)):
            best = [np.inf]

            def report(hit, best=best) -> bool:
                body = str(getattr(hit, "rigid_body", "") or getattr(hit, "collision", ""))
                if body != exact and not body.startswith(exclude) and hit.distance < best[0]:
                    best[0] = float(hit.distance)
                return True  # keep going: the nearest non-robot hit wins

            o, d = origins_w[i], dirs_w[i]
            self._sq.raycast_all((float(o[0]), float(o[1]), float(o[2])), (float(d[0]), float(d[1]), float(d[2])), float(max_distance_m), report)
            out[i] = best[0]
        return out


class IsaacSimBackend(ArticulationHalBackend):
    """The robot at ``prim_path`` on the open stage, driven with the training PD at every physics step."""

    def __init__(self, profile: RobotProfile, prim_path: str, *, physics_dt_s: float, foot_path_template: str = "{robot}/{foot}", **kwargs):
        super().__init__(profile, **kwargs)
        self.prim_path = prim_path
        self.physics_dt_s = physics_dt_s
        self.foot_paths = [foot_path_template.format(robot=prim_path.rstrip("/"), foot=f) for f in profile.foot_names]

    def _acquire(self):
        from isaacsim.core.simulation_manager import SimulationManager

        stage = omni.usd.get_context().get_stage()
        if stage is None or SimulationManager.get_physics_sim_view() is None:
            return None  # nothing to read before the simulation view exists (warm-up steps after Play)
        if not stage.GetPrimAtPath(self.prim_path).IsValid():
            raise RobotNotFoundError(
                f"no prim at {self.prim_path!r} on the open stage: set --/exts/krabby.hal/robot_prim_path to the "
                "robot's articulation root"
            )
        missing = [p for p in self.foot_paths if not stage.GetPrimAtPath(p).IsValid()]
        if missing:
            raise RobotNotFoundError(
                f"no foot bodies at {', '.join(missing)}: set --/exts/krabby.hal/foot_path_template "
                "(e.g. '{robot}/{foot}')"
            )
        not_rigid = [p for p in self.foot_paths if not stage.GetPrimAtPath(p).HasAPI(UsdPhysics.RigidBodyAPI)]
        if not_rigid:
            raise RobotNotFoundError(
                f"foot prims {', '.join(not_rigid)} are not rigid bodies (no UsdPhysics.RigidBodyAPI), so their contact "
                "forces cannot be read and krabby.hal will not make them bodies of your robot: point "
                "--/exts/krabby.hal/foot_path_template at the robot's foot links"
            )
        try:
            io = PrimsArticulationIO(self.prim_path, self.foot_paths, self.physics_dt_s)
        except _NotReady:
            return None
        caster = PhysxRayCaster(self.prim_path) if (self.provides_height_scan or self.provides_depth) else None
        return io, caster


__all__ = ["IsaacSimBackend", "PrimsArticulationIO", "PhysxRayCaster", "RobotNotFoundError"]
