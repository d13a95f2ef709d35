"""FAKES of Isaac Sim 5.1's physics surface, over a REAL usd-core stage. Not Isaac Sim.

What stands in (each as the upstream source behaves; IS = isaac-sim/IsaacSim @ v5.1.0):

- ``SimulationManager`` (source/extensions/isaacsim.core.simulation_manager/python/impl/simulation_manager.py):
  subscribes to timeline PLAY at default order 0 before any user extension (:78-82); on PLAY it
  warm-starts physics INSIDE the Play dispatch: one physics step with no simulation view
  (``initialize_physics`` :235-242), then creates the view, switching the backend from numpy to
  torch when physics runs on the GPU (``_create_simulation_view`` :178-193), one more physics step,
  then PHYSICS_READY. STOP drops the view (:168-176).
- ``isaacsim.core.prims.Articulation`` / ``RigidPrim`` with their exact constructor signatures
  (python/impl/articulation.py:117-130, rigid_prim.py:131-152) and their side effects on the stage:
  ``reset_xform_properties=True`` rewrites the prim's xformOps (xform_prim.py:153-154, 1194-1239;
  skipped for non-root articulation links), ``RigidPrim`` applies ``UsdPhysics.RigidBodyAPI`` to
  every listed prim that lacks it and ``PhysxRigidBodyAPI.sleepThreshold = 0`` (rigid_prim.py:2281-2293),
  and its contact view applies ``PhysxContactReportAPI`` threshold 0
  (isaacsim.core.api/python/impl/sensors/rigid_contact_view.py:135-145, 176-183).
- The views' backend utilities (isaacsim.core.utils/python/impl/{numpy,torch}/tensor.py): with the
  torch backend ``move_data(x, device)`` is ``x.to(device=device)``, so numpy input fails exactly
  as in Isaac Sim (``AttributeError: 'numpy.ndarray' object has no attribute 'to'``).
- ``pxr.PhysxSchema`` (NVIDIA's schema, not in usd-core): the three APIs Krabby and the views touch,
  authoring the real attribute names on the real stage (PhysX schema.usda).

The "GPU" here is a label: tensors live on the CPU (torch is the CPU build), the device string is
``cuda:0`` as Isaac Sim reports it.
"""

from __future__ import annotations

import math
import types
from typing import Any, Callable, Optional

import numpy as np
from pxr import Gf, Sdf, Usd, UsdGeom, UsdPhysics

GPU_DEVICE = "cuda:0"


# ------------------------------------------------------------------------------ pxr.PhysxSchema
def applied_api_names(prim) -> list[str]:
    """Every applied API schema token on the prim, registered or not (usd-core does not know PhysX's)."""
    op = prim.GetMetadata("apiSchemas")
    if op is None:
        return []
    return list(op.ApplyOperations([]) or [])


class _FallbackAttr:
    """A schema attribute that is not authored: valid, reads the schema's fallback; Set() authors it."""

    def __init__(self, prim, name: str, type_name, fallback):
        self._prim, self._name, self._type, self._fallback = prim, name, type_name, fallback

    def IsValid(self) -> bool:
        return True

    def __bool__(self) -> bool:
        return True

    def Get(self, *time):
        return self._fallback

    def Set(self, value, *time) -> bool:
        return self._prim.CreateAttribute(self._name, self._type).Set(value)


class _PhysxApi:
    api_name = ""
    attrs: dict[str, tuple] = {}  # python name -> (usd name, type, schema fallback)

    def __init__(self, prim):
        self._prim = prim

    @classmethod
    def Apply(cls, prim) -> "_PhysxApi":
        prim.AddAppliedSchema(cls.api_name)
        return cls(prim)

    def GetPrim(self):
        return self._prim

    def _get(self, key: str):
        name, type_name, fallback = self.attrs[key]
        attr = self._prim.GetAttribute(name)
        if attr.IsValid() or self.api_name not in applied_api_names(self._prim):
            return attr  # authored, or the API is not applied: an invalid attribute
        return _FallbackAttr(self._prim, name, type_name, fallback)

    def _create(self, key: str):
        name, type_name, _ = self.attrs[key]
        return self._prim.CreateAttribute(name, type_name)


def _api(api_name: str, **attrs: tuple) -> type:
    """A PhysX API schema class: Apply, and Get<Name>Attr / Create<Name>Attr for each (usd name, type, fallback)."""
    methods: dict[str, Any] = {"api_name": api_name, "attrs": attrs}
    for key in attrs:
        methods[f"Get{key}Attr"] = lambda self, key=key: self._get(key)
        methods[f"Create{key}Attr"] = lambda self, key=key: self._create(key)
    return type(api_name, (_PhysxApi,), methods)


PhysxSceneAPI = _api("PhysxSceneAPI", TimeStepsPerSecond=("physxScene:timeStepsPerSecond", Sdf.ValueTypeNames.UInt, 60))
PhysxContactReportAPI = _api("PhysxContactReportAPI", Threshold=("physxContactReport:threshold", Sdf.ValueTypeNames.Float, 1.0))
PhysxRigidBodyAPI = _api("PhysxRigidBodyAPI", SleepThreshold=("physxRigidBody:sleepThreshold", Sdf.ValueTypeNames.Float, 5e-5))


PhysxSchema = types.ModuleType("pxr.PhysxSchema")
PhysxSchema.PhysxSceneAPI = PhysxSceneAPI
PhysxSchema.PhysxContactReportAPI = PhysxContactReportAPI
PhysxSchema.PhysxRigidBodyAPI = PhysxRigidBodyAPI


# --------------------------------------------------------------------------------- backends
def _numpy_utils() -> types.SimpleNamespace:
    """isaacsim.core.utils.numpy.tensor: numpy in, numpy out."""
    return types.SimpleNamespace(
        convert=lambda data, device=None, dtype="float32", indexed=None: np.asarray(data).astype(np.float32),
        move_data=lambda data, device=None: data,
        create_zeros_tensor=lambda shape, dtype, device=None: np.zeros(shape, dtype=np.float32),
        to_numpy=lambda data: data,
        name="numpy",
    )


def _torch_utils() -> types.SimpleNamespace:
    """isaacsim.core.utils.torch.tensor: ``move_data`` is ``data.to(device=...)`` and nothing else."""
    import torch

    def host(device):  # the CPU build stands in for the GPU
        return "cpu" if device is None or str(device).startswith("cuda") else device

    def convert(data, device, dtype="float32", indexed=None):
        if not isinstance(data, torch.Tensor):
            return torch.tensor(data, device=host(device)).to(torch.float32)
        return data.to(device=host(device)).to(torch.float32)

    return types.SimpleNamespace(
        convert=convert,
        move_data=lambda data, device: data.to(device=host(device)),
        create_zeros_tensor=lambda shape, dtype, device=None: torch.zeros(shape, device=host(device)),
        to_numpy=lambda data: data.cpu().numpy(),
        name="torch",
    )


# ------------------------------------------------------------------------------ the world
class FakeWorld:
    """One 12-joint robot on a flat floor (z = 0) on a REAL USD stage; a toy integrator moves its joints."""

    GROUND = "/World/ground"

    def __init__(self, profile, robot_path: str = "/World/Go2", dof_names=None, gpu: bool = False, feet_rigid: bool = True):
        self.profile = profile
        self.robot_path = robot_path
        # the simulator's DOF order differs from the profile's robot order: Isaac (policy) order
        self.dof_names = list(dof_names or profile.policy_joint_names)
        self.gpu = gpu
        self.feet_rigid = feet_rigid
        self.stage = self.default_stage()
        self.playing = False
        self.generation = 0
        self.total_steps = 0
        self.dts: list[float] = []
        self.efforts = np.zeros(len(self.dof_names))
        self.efforts_log: list[np.ndarray] = []
        self.gains: Optional[tuple] = None
        self.yaw = 0.3
        self.base_pos = np.array([1.0, 2.0, 0.35])
        self.lin_vel_w = np.array([0.4, 0.1, 0.0])
        self.ang_vel_w = np.array([0.0, 0.0, 0.2])
        self.reset_state()

    def default_stage(self, url: str = "") -> Usd.Stage:
        st = Usd.Stage.CreateInMemory(url or "default.usda")
        UsdGeom.Xform.Define(st, "/World")
        UsdPhysics.CollisionAPI.Apply(UsdGeom.Mesh.Define(st, self.GROUND).GetPrim())
        robot = UsdGeom.Xform.Define(st, self.robot_path)
        robot.AddTranslateOp().Set(Gf.Vec3d(1.0, 2.0, 0.35))  # the user's own transform ops
        robot.AddRotateXYZOp().Set(Gf.Vec3f(0.0, 0.0, 17.0))
        UsdPhysics.ArticulationRootAPI.Apply(robot.GetPrim())
        for foot in self.profile.foot_names:
            prim = UsdGeom.Xform.Define(st, f"{self.robot_path}/{foot}").GetPrim()
            if self.feet_rigid:
                UsdPhysics.RigidBodyAPI.Apply(prim)
        UsdPhysics.Scene.Define(st, "/physicsScene")  # rate not authored: PhysX's 60 Hz
        return st

    def xform_op_order(self, path: Optional[str] = None) -> list[str]:
        return [str(n) for n in UsdGeom.Xformable(self.stage.GetPrimAtPath(path or self.robot_path)).GetXformOpOrderAttr().Get() or []]

    def reset_state(self) -> None:
        by_name = dict(zip(self.profile.joint_names, self.profile.default_pos_rad))
        self.q = np.array([by_name.get(n, 0.0) for n in self.dof_names], dtype=np.float64) + 0.05
        self.qd = np.zeros(len(self.dof_names))

    @property
    def quat_wxyz(self) -> np.ndarray:
        return np.array([math.cos(self.yaw / 2), 0.0, 0.0, math.sin(self.yaw / 2)])

    def physics_dt(self) -> float:
        """The step PhysX takes: 1 / the scene's timeStepsPerSecond (60 when not authored), in float32 as PhysX passes it."""
        for prim in self.stage.Traverse():
            if prim.IsA(UsdPhysics.Scene):
                hz = PhysxSceneAPI(prim).GetTimeStepsPerSecondAttr()
                value = hz.Get() if hz.IsValid() else None
                return float(np.float32(1.0 / float(value or 60)))
        return float(np.float32(1.0 / 60))

    def integrate(self, dt: float) -> None:
        self.qd = self.qd + dt * (self.efforts / 0.2)
        self.q = self.q + dt * self.qd
        self.total_steps += 1
        self.dts.append(dt)

    def foot_impulses(self, paths: list[str], dt: float) -> np.ndarray:
        """What PhysX reports: contact impulses over the last step (N s), one row per body."""
        out = []
        for p in paths:
            k = self.profile.foot_names.index(p.rsplit("/", 1)[-1])
            out.append([0.0, 0.0, (30.0 + 5.0 * k) * dt])
        return np.array(out)

    def raycast_all(self, origin, direction, distance, report) -> bool:
        o, d = np.asarray(origin, float), np.asarray(direction, float)
        hits = []
        if abs(o[0] - self.base_pos[0]) < 0.2 and abs(o[1] - self.base_pos[1]) < 0.2 and d[2] < 0:
            hits.append((o[2] - self.base_pos[2] - 0.05, f"{self.robot_path}/base"))  # the robot's own body
        if d[2] < 0:
            t = -o[2] / d[2]
            if t <= distance:
                hits.append((t, self.GROUND))
        for t, body in hits:
            if not report(types.SimpleNamespace(distance=t, rigid_body=body, collision=body, position=o + t * d)):
                break
        return bool(hits)


# ------------------------------------------------------------------------- simulation manager
class FakeSimulationManager:
    """isaacsim.core.simulation_manager.SimulationManager (class-level state in Isaac Sim; one per FakeKit here)."""

    def __init__(self, kit):
        self._kit = kit
        self._backend = "numpy"
        self._physics_sim_view = None
        self._warmup_needed = True
        self.ready_callbacks: list[Callable] = []
        kit.timeline_stream.create_subscription_to_pop_by_type(0, self._warm_start)  # PLAY, default order 0
        kit.timeline_stream.create_subscription_to_pop_by_type(2, self._on_stop)  # STOP

    # ---- the upstream API Krabby may call
    def get_backend(self) -> str:
        return self._backend

    def set_backend(self, val: str) -> None:
        self._backend = val

    def get_physics_sim_device(self) -> str:
        return GPU_DEVICE if self._kit.world.gpu else "cpu"

    def get_physics_sim_view(self):
        return self._physics_sim_view

    def _get_backend_utils(self):
        return _torch_utils() if self._backend == "torch" else _numpy_utils()

    # ---- Play / Stop, as simulation_manager.py:164-193
    def _warm_start(self, event) -> None:
        if self._warmup_needed:
            self._kit.physics_step()  # initialize_physics: update_simulation with no view yet
            self._warmup_needed = False
            self._create_simulation_view()

    def _create_simulation_view(self) -> None:
        if "cuda" in self.get_physics_sim_device() and self._backend == "numpy":
            self._backend = "torch"
            self._kit.logs.append(("warn", "changing backend from numpy to torch since numpy backend cannot be used with GPU piplines"))
        self._physics_sim_view = types.SimpleNamespace(generation=self._kit.world.generation)
        self._kit.physics_step()
        for fn in list(self.ready_callbacks):
            fn(None)

    def _on_stop(self, event) -> None:
        self._warmup_needed = True
        self._physics_sim_view = None


# ------------------------------------------------------------------------------------ views
def _non_root_link(prim) -> bool:
    """isaacsim.core.utils.prims.is_prim_non_root_articulation_link: a body below an articulation root."""
    parent = prim.GetParent()
    while parent and parent.IsValid() and str(parent.GetPath()) != "/":
        if parent.HasAPI(UsdPhysics.ArticulationRootAPI):
            return True
        parent = parent.GetParent()
    return False


def _reset_xform_ops(prim) -> None:
    """XFormPrim._set_xform_properties: clear the op order, drop rotate*/transform ops, author translate/orient/scale."""
    xf = UsdGeom.Xformable(prim)
    translate = Gf.Vec3d(xf.ComputeLocalToWorldTransform(Usd.TimeCode.Default()).ExtractTranslation())
    names = prim.GetPropertyNames()
    xf.ClearXformOpOrder()
    for name in names:
        if name.startswith("xformOp:rotate") or name == "xformOp:transform":
            prim.RemoveProperty(name)
    scale = xf.AddScaleOp(UsdGeom.XformOp.PrecisionDouble) if "xformOp:scale" not in names else UsdGeom.XformOp(prim.GetAttribute("xformOp:scale"))
    if "xformOp:scale" not in names:
        scale.Set(Gf.Vec3d(1.0, 1.0, 1.0))
    t = xf.AddTranslateOp(UsdGeom.XformOp.PrecisionDouble) if "xformOp:translate" not in names else UsdGeom.XformOp(prim.GetAttribute("xformOp:translate"))
    t.Set(translate)
    o = xf.AddOrientOp(UsdGeom.XformOp.PrecisionDouble) if "xformOp:orient" not in names else UsdGeom.XformOp(prim.GetAttribute("xformOp:orient"))
    xf.SetXformOpOrder([t, o, scale])


class _View:
    """What Prim / XFormPrim share: prims resolved on the stage, backend taken from the SimulationManager."""

    _kit: Any = None  # set on the per-FakeKit subclass

    def _resolve(self, prim_paths_expr) -> list:
        paths = prim_paths_expr if isinstance(prim_paths_expr, list) else [prim_paths_expr]
        prims = [self._kit.world.stage.GetPrimAtPath(p) for p in paths]
        if not all(p.IsValid() for p in prims):
            raise Exception(
                f"Prim path expression {paths} is invalid, a prim matching the expression needs to created before wrapping it as view"
            )
        return prims

    def _take_backend(self) -> None:
        sm = self._kit.simulation_manager
        self._backend = sm.get_backend()
        self._device = sm.get_physics_sim_device()
        self._backend_utils = sm._get_backend_utils()

    def _warn(self, msg: str) -> None:
        self._kit.logs.append(("warn", msg))

    def _reset_xforms(self, reset_xform_properties: bool) -> None:
        for prim in self._prims:
            if reset_xform_properties and not _non_root_link(prim):
                _reset_xform_ops(prim)

    def _follow_physics_ready(self) -> None:
        """Prim.__init__ registers for PHYSICS_READY; the constructor attaches at once when the view exists."""
        self._kit.simulation_manager.ready_callbacks.append(self._on_physics_ready)
        if self._kit.simulation_manager.get_physics_sim_view() is not None:
            self._on_physics_ready(None)

    def initialize(self, physics_sim_view=None) -> None:
        if not self.is_physics_handle_valid():
            self._on_physics_ready(None)

    def _on_physics_ready(self, event) -> None:
        raise NotImplementedError

    def _attach(self, create: str) -> None:
        self._take_backend()
        view = self._kit.simulation_manager.get_physics_sim_view()
        if view is None:  # simulation_view.create_*_view(...) on None, as upstream before the view exists
            raise AttributeError(f"'NoneType' object has no attribute '{create}'")
        self._physics_view = view

    def is_physics_handle_valid(self) -> bool:
        view = self._kit.simulation_manager.get_physics_sim_view()
        return view is not None and self._physics_view is not None and self._physics_view is view

    def _out(self, array: np.ndarray):
        return self._backend_utils.convert(np.asarray(array, dtype=np.float32), device=self._device)


class FakeArticulation(_View):
    """isaacsim.core.prims.Articulation over FakeWorld (batched API, one robot)."""

    def __init__(
        self, prim_paths_expr, name: str = "articulation_prim_view", positions=None, translations=None, orientations=None,
        scales=None, visibilities=None, reset_xform_properties: bool = True, enable_residual_reports: bool = False,
    ) -> None:
        self._physics_view = None
        self._is_initialized = False
        self._prims = self._resolve(prim_paths_expr)
        self.name = name
        self._take_backend()
        self._reset_xforms(reset_xform_properties)
        self._follow_physics_ready()

    def _on_physics_ready(self, event) -> None:
        self._attach("create_articulation_view")
        self._is_initialized = True

    @property
    def dof_names(self):
        if not self._is_initialized:
            self._warn("Articulation needs to be initialized.")
            return None
        return list(self._kit.world.dof_names)

    def _read(self, value: np.ndarray):
        if not self._is_initialized:
            self._warn("Articulation needs to be initialized.")
            return None
        if not self.is_physics_handle_valid():
            self._warn("Physics Simulation View is not created yet in order to use this getter")
            return None
        return self._out(value)

    def get_joint_positions(self, indices=None, joint_indices=None, clone=True):
        return self._read(self._kit.world.q[None])

    def get_joint_velocities(self, indices=None, joint_indices=None, clone=True):
        return self._read(self._kit.world.qd[None])

    def get_world_poses(self, indices=None, clone=True, usd=True):
        w = self._kit.world
        return self._read(w.base_pos[None]), self._read(w.quat_wxyz[None])

    def get_velocities(self, indices=None, clone=True):
        w = self._kit.world
        return self._read(np.concatenate([w.lin_vel_w, w.ang_vel_w])[None])

    def set_gains(self, kps=None, kds=None, indices=None, joint_indices=None, joint_names=None, save_to_usd=False) -> None:
        if not self._is_initialized:
            self._warn("Articulation needs to be initialized.")
            return
        if self._kit.world.playing and self._kit.simulation_manager.get_physics_sim_view() is not None and not save_to_usd:
            kps = self._backend_utils.move_data(kps, device="cpu")
            kds = self._backend_utils.move_data(kds, device="cpu")
            self._kit.world.gains = (np.asarray(self._backend_utils.to_numpy(kps)), np.asarray(self._backend_utils.to_numpy(kds)))

    def switch_control_mode(self, mode: str, indices=None, joint_indices=None, joint_names=None) -> None:
        if not self._is_initialized:
            self._warn("Articulation needs to be initialized.")
            return
        n = len(self._kit.world.dof_names)
        if mode == "effort":
            zeros = lambda: self._backend_utils.create_zeros_tensor(shape=[1, n], dtype="float32", device=self._device)  # noqa: E731
            self.set_gains(kps=zeros(), kds=zeros())
        else:
            raise NotImplementedError(f"the fake models only the effort mode, not {mode!r}")

    def set_joint_efforts(self, efforts, indices=None, joint_indices=None, joint_names=None) -> None:
        if not self._is_initialized:
            self._warn("Articulation needs to be initialized.")
            return
        if not self.is_physics_handle_valid():
            self._warn("Physics Simulation View is not created yet in order to use set_joint_efforts")
            return
        e = self._backend_utils.move_data(efforts, device=self._device)
        e = np.asarray(self._backend_utils.to_numpy(e), dtype=np.float64)
        w = self._kit.world
        assert e.shape == (1, len(w.dof_names)), e.shape
        w.efforts = e[0].copy()
        w.efforts_log.append(w.efforts.copy())


class FakeRigidPrim(_View):
    """isaacsim.core.prims.RigidPrim: the listed bodies, with net contact forces when tracked."""

    def __init__(
        self, prim_paths_expr, name: str = "rigid_prim_view", positions=None, translations=None, orientations=None,
        scales=None, visibilities=None, reset_xform_properties: bool = True, masses=None, densities=None,
        linear_velocities=None, angular_velocities=None, track_contact_forces: bool = False,
        prepare_contact_sensors: bool = True, disable_stablization: bool = True,
        contact_filter_prim_paths_expr: Optional[list] = [], max_contact_count: int = 0,  # noqa: B006 - upstream's default
    ) -> None:
        self._physics_view = None
        self._track = track_contact_forces or len(contact_filter_prim_paths_expr) != 0
        self._prims = self._resolve(prim_paths_expr)
        self.paths = [str(p.GetPath()) for p in self._prims]
        self.name = name
        if self._track and prepare_contact_sensors:  # RigidContactView._prepare_contact_reporter
            for prim in self._prims:
                PhysxContactReportAPI.Apply(prim).CreateThresholdAttr().Set(0.0)
        self._take_backend()
        self._reset_xforms(reset_xform_properties)
        for prim in self._prims:  # _apply_rigid_body_apis
            if not prim.HasAPI(UsdPhysics.RigidBodyAPI):
                UsdPhysics.RigidBodyAPI.Apply(prim)
            if prepare_contact_sensors or self._track:
                PhysxRigidBodyAPI.Apply(prim).CreateSleepThresholdAttr().Set(0.0)
        self._follow_physics_ready()

    def _on_physics_ready(self, event) -> None:
        self._attach("create_rigid_body_view")

    def get_net_contact_forces(self, indices=None, clone=True, dt=1.0):
        """Impulses over the last step divided by ``dt`` (rigid_contact_view.py:249-291): Newtons only with the step's dt."""
        if not self._track:
            self._warn("contact forces cannot be retrieved with this API unless track_contact_forces is True")
            return None
        if not self.is_physics_handle_valid():
            return None
        w = self._kit.world
        return self._out(w.foot_impulses(self.paths, w.physics_dt()) / dt)


__all__ = [
    "PhysxSchema", "applied_api_names", "FakeWorld", "FakeSimulationManager", "FakeArticulation", "FakeRigidPrim", "GPU_DEVICE",
]
