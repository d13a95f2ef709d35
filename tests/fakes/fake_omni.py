"""FAKES of the omni / carb / pxr / isaacsim surface that krabby's Kit layer uses. Not Kit.

Only the calls ``krabby.hal.kit`` and ``krabby.parkour.kit`` make exist here, with the shapes of the
Isaac Sim 5.1 APIs they stand for (kit_conventions.md); behaviour is the minimum to test the
extension lifecycle: subscriptions are counted, events are dispatched by hand, and a toy physics
world integrates a 12-joint robot from the efforts the HAL applies.

Installed into ``sys.modules`` only by tests that ask for it (``install_fake_kit``); every test
that does gets a fresh world and fresh imports of the ``kit`` packages.
"""

from __future__ import annotations

import asyncio
import enum
import math
import sys
import types
from typing import Any, Callable, Optional

import numpy as np

KIT_PACKAGES = ("krabby.hal.kit", "krabby.parkour.kit")
FAKE_ROOTS = ("omni", "carb", "pxr", "isaacsim")


# ---------------------------------------------------------------------------------- events
class FakeSubscription:
    """A Kit subscription: active until unsubscribe() (or reset() for Events-2.0 observers)."""

    def __init__(self, registry: list, fn: Callable, **info: Any):
        self.registry, self.fn, self.info = registry, fn, info
        registry.append(self)

    def unsubscribe(self) -> None:
        if self in self.registry:
            self.registry.remove(self)

    reset = unsubscribe


class FakeEventStream:
    def __init__(self):
        self.subs: list[FakeSubscription] = []

    def create_subscription_to_pop(self, fn: Callable, name: str = "", order: int = 0) -> FakeSubscription:
        return FakeSubscription(self.subs, fn, name=name)

    def push(self, event_type: int, payload: Optional[dict] = None) -> None:
        event = types.SimpleNamespace(type=int(event_type), payload=payload or {})
        for sub in list(self.subs):
            sub.fn(event)


class TimelineEventType(enum.IntEnum):
    PLAY = 0
    PAUSE = 1
    STOP = 2


class StageEventType(enum.IntEnum):
    SAVED = 0
    OPENED = 2
    CLOSING = 5
    CLOSED = 6


# ---------------------------------------------------------------------------------- USD
class FakeAttr:
    def __init__(self, store: dict, name: str):
        self.store, self.name = store, name

    def IsValid(self) -> bool:
        return True

    def __bool__(self) -> bool:
        return True

    def Get(self):
        return self.store.get(self.name)

    def Set(self, value) -> bool:
        self.store[self.name] = value
        return True


class _NoAttr(FakeAttr):
    def IsValid(self) -> bool:
        return False

    def __bool__(self) -> bool:
        return False


class FakePrim:
    def __init__(self, path: str, type_name: str = "Xform", valid: bool = True):
        self.path, self.type_name, self.valid = path, type_name, valid
        self.attrs: dict[str, Any] = {}
        self.applied: set[str] = set()

    def IsValid(self) -> bool:
        return self.valid

    def GetPath(self) -> str:
        return self.path

    def IsA(self, schema) -> bool:
        return self.type_name == getattr(schema, "type_name", None)


class FakeStage:
    def __init__(self, url: str = "anon:default.usd"):
        self.url = url
        self.prims: dict[str, FakePrim] = {}

    def define(self, path: str, type_name: str = "Xform") -> FakePrim:
        self.prims[path] = FakePrim(path, type_name)
        return self.prims[path]

    def GetPrimAtPath(self, path: str) -> FakePrim:
        return self.prims.get(path, FakePrim(path, valid=False))

    def Traverse(self):
        return iter(list(self.prims.values()))


class _Scene:
    type_name = "PhysicsScene"

    @staticmethod
    def Define(stage: FakeStage, path: str):
        prim = stage.define(path, "PhysicsScene")
        return types.SimpleNamespace(GetPrim=lambda: prim)


class _PhysxSceneAPI:
    def __init__(self, prim: FakePrim):
        self.prim = prim

    @classmethod
    def Apply(cls, prim: FakePrim) -> "_PhysxSceneAPI":
        prim.applied.add("PhysxSceneAPI")
        return cls(prim)

    def GetTimeStepsPerSecondAttr(self):
        if "physxScene:timeStepsPerSecond" in self.prim.attrs:
            return FakeAttr(self.prim.attrs, "physxScene:timeStepsPerSecond")
        return _NoAttr({}, "")

    def CreateTimeStepsPerSecondAttr(self):
        self.prim.attrs.setdefault("physxScene:timeStepsPerSecond", None)
        return FakeAttr(self.prim.attrs, "physxScene:timeStepsPerSecond")


class _PhysxContactReportAPI:
    def __init__(self, prim: FakePrim):
        self.prim = prim

    @classmethod
    def Apply(cls, prim: FakePrim) -> "_PhysxContactReportAPI":
        prim.applied.add("PhysxContactReportAPI")
        return cls(prim)

    def CreateThresholdAttr(self):
        return FakeAttr(self.prim.attrs, "physxContactReport:threshold")


# ---------------------------------------------------------------------------------- world
class FakeWorld:
    """A toy simulation of one 12-joint robot on a flat floor (z = 0), stepped by the test."""

    GROUND = "/World/ground"

    def __init__(self, profile, robot_path: str = "/World/Go2", dof_names=None, view_ready_after_steps: int = 1):
        self.profile = profile
        self.robot_path = robot_path
        # the simulator's DOF order differs from the profile's robot order: Isaac (policy) order
        self.dof_names = list(dof_names or profile.policy_joint_names)
        self.view_ready_after_steps = view_ready_after_steps
        self.stage = self.default_stage()
        self.playing = False
        self.generation = 0
        self.steps_since_play = 0
        self.total_steps = 0
        self.view_ready = False
        self.efforts = np.zeros(len(self.dof_names))
        self.efforts_log: list[np.ndarray] = []
        self.gains: Optional[tuple] = None
        self.yaw = 0.3
        self.base_pos = np.array([1.0, 2.0, 0.35])
        self.lin_vel_w = np.array([0.4, 0.1, 0.0])
        self.ang_vel_w = np.array([0.0, 0.0, 0.2])
        self.reset_state()

    def default_stage(self, url: str = "anon:default.usd") -> FakeStage:
        st = FakeStage(url)
        st.define("/World")
        st.define(self.GROUND, "Mesh")
        st.define(self.robot_path, "Xform")
        for foot in self.profile.foot_names:
            st.define(f"{self.robot_path}/{foot}", "Xform")
        st.define("/physicsScene", "PhysicsScene")  # rate not authored: PhysX's 60 Hz
        return st

    def reset_state(self) -> None:
        by_name = dict(zip(self.profile.joint_names, self.profile.default_pos_rad))
        self.q = np.array([by_name.get(n, 0.0) for n in self.dof_names], dtype=np.float64) + 0.05
        self.qd = np.zeros(len(self.dof_names))

    @property
    def quat_wxyz(self) -> np.ndarray:
        return np.array([math.cos(self.yaw / 2), 0.0, 0.0, math.sin(self.yaw / 2)])

    def physics_dt(self) -> float:
        for prim in self.stage.Traverse():
            if prim.type_name == "PhysicsScene":
                hz = prim.attrs.get("physxScene:timeStepsPerSecond")
                return 1.0 / float(hz or 60)
        return 1.0 / 60

    def integrate(self, dt: float) -> None:
        self.qd = self.qd + dt * (self.efforts / 0.2)
        self.q = self.q + dt * self.qd
        self.steps_since_play += 1
        self.total_steps += 1
        if self.steps_since_play >= self.view_ready_after_steps:
            self.view_ready = True

    def foot_forces(self, paths: list[str]) -> np.ndarray:
        out = []
        for p in paths:
            name = p.rsplit("/", 1)[-1]
            k = self.profile.foot_names.index(name)
            out.append([0.0, 0.0, 30.0 + 5.0 * k])
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


class FakeArticulation:
    """isaacsim.core.prims.Articulation over FakeWorld (batched API, one robot)."""

    def __init__(self, world: FakeWorld, prim_paths_expr: str, name: str = "articulation"):
        if not world.stage.GetPrimAtPath(prim_paths_expr).IsValid():
            raise ValueError(f"no prim at {prim_paths_expr}")
        self.world, self.path, self.name = world, prim_paths_expr, name
        self._gen = -1

    def initialize(self, physics_sim_view=None) -> None:
        if not (self.world.playing and self.world.view_ready):
            raise RuntimeError("physics simulation view is not created yet")
        self._gen = self.world.generation

    def is_physics_handle_valid(self) -> bool:
        return self.world.playing and self._gen == self.world.generation

    def _check(self) -> None:
        if not self.is_physics_handle_valid():
            raise RuntimeError("invalid physics handle (Stop was pressed?)")

    @property
    def dof_names(self) -> list[str]:
        return list(self.world.dof_names)

    def get_joint_positions(self):
        self._check()
        return self.world.q[None].copy()

    def get_joint_velocities(self):
        self._check()
        return self.world.qd[None].copy()

    def get_world_poses(self):
        self._check()
        return self.world.base_pos[None].copy(), self.world.quat_wxyz[None]

    def get_velocities(self):
        self._check()
        return np.concatenate([self.world.lin_vel_w, self.world.ang_vel_w])[None]

    def set_gains(self, kps=None, kds=None) -> None:
        self._check()
        self.world.gains = (np.asarray(kps), np.asarray(kds))

    def set_joint_efforts(self, efforts) -> None:
        self._check()
        e = np.asarray(efforts, dtype=np.float64)
        assert e.shape == (1, len(self.world.dof_names)), e.shape
        self.world.efforts = e[0].copy()
        self.world.efforts_log.append(self.world.efforts.copy())


class FakeRigidPrim:
    def __init__(self, world: FakeWorld, prim_paths_expr, name: str = "rigid", track_contact_forces: bool = False, prepare_contact_sensors: bool = True):
        self.world, self.paths, self.track = world, list(prim_paths_expr), track_contact_forces

    def initialize(self, physics_sim_view=None) -> None:
        if not self.world.view_ready:
            raise RuntimeError("no view")

    def get_net_contact_forces(self, indices=None, clone=True, dt=1.0):
        assert self.track, "contact forces need track_contact_forces=True"
        return self.world.foot_forces(self.paths)


# ---------------------------------------------------------------------------------- omni.ui
class FakeWidget:
    def __init__(self, *args: Any, **kwargs: Any):
        self.args, self.kwargs = args, kwargs
        self.children: list[FakeWidget] = []
        self.style = kwargs.get("style", {})
        parent = FakeUi.stack[-1] if FakeUi.stack else None
        if parent is not None:
            parent.children.append(self)

    def __enter__(self):
        FakeUi.stack.append(self)
        return self

    def __exit__(self, *exc):
        FakeUi.stack.pop()

    def walk(self):
        yield self
        for c in self.children:
            yield from c.walk()


class FakeLabel(FakeWidget):
    def __init__(self, text: str = "", **kw):
        super().__init__(text, **kw)
        self.text = text


class FakeButton(FakeWidget):
    def __init__(self, text: str = "", clicked_fn: Optional[Callable] = None, **kw):
        super().__init__(text, **kw)
        self.text, self.clicked_fn = text, clicked_fn

    def click(self) -> None:
        self.clicked_fn()


class FakeSimpleStringModel:
    def __init__(self, value: str = ""):
        self.value = value

    def get_value_as_string(self) -> str:
        return self.value

    def set_value(self, v) -> None:
        self.value = str(v)

    @property
    def as_string(self) -> str:
        return self.value

    @property
    def as_int(self) -> int:
        return int(self.value)


class FakeStringField(FakeWidget):
    def __init__(self, model: Optional[FakeSimpleStringModel] = None, **kw):
        super().__init__(**kw)
        self.model = model or FakeSimpleStringModel()


class FakeComboBox(FakeWidget):
    def __init__(self, index: int = 0, *items: str, **kw):
        super().__init__(**kw)
        self.items = items
        value = FakeSimpleStringModel(str(index))
        self._fns: list[Callable] = []
        self.model = types.SimpleNamespace(
            get_item_value_model=lambda *a: value, add_item_changed_fn=self._fns.append, value=value,
        )

    def select(self, index: int) -> None:
        self.model.value.set_value(index)
        for fn in self._fns:
            fn(self.model, None)


class FakePlot(FakeWidget):
    def __init__(self, kind=None, scale_min: float = 0.0, scale_max: float = 1.0, *values: float, **kw):
        super().__init__(**kw)
        self.scale_min, self.scale_max, self.data = scale_min, scale_max, list(values)

    def set_data(self, *values: float) -> None:
        self.data = list(values)


class FakeWindow(FakeWidget):
    def __init__(self, title: str, width: int = 300, height: int = 300, visible: bool = True, **kw):
        # a window is a root: it never becomes the child of whatever container is open
        self.args, self.kwargs, self.children, self.style = (title,), kw, [], {}
        self.title, self.visible = title, visible
        self.frame = FakeWidget()
        self.children.append(self.frame)
        self.destroyed = False
        FakeUi.windows.append(self)

    def destroy(self) -> None:
        self.destroyed = True
        if self in FakeUi.windows:
            FakeUi.windows.remove(self)

    def find(self, cls: type, text: Optional[str] = None) -> list:
        return [w for w in self.walk() if isinstance(w, cls) and (text is None or getattr(w, "text", None) == text)]


class FakeUi:
    stack: list = []
    windows: list = []


# ---------------------------------------------------------------------------------- the kit
class FakeKit:
    """Everything the fakes share: settings, logs, streams, menus, tasks, windows, the world."""

    def __init__(self, world: FakeWorld, settings: Optional[dict] = None):
        self.world = world
        self.settings: dict[str, Any] = dict(settings or {})
        self.logs: list[tuple[str, str]] = []
        self.timeline_stream = FakeEventStream()
        self.stage_stream = FakeEventStream()
        self.update_stream = FakeEventStream()
        self.update_observers: list[FakeSubscription] = []
        self.physics_subs: list[FakeSubscription] = []
        self.menus: dict[str, list] = {}
        self.tasks: list = []
        self.opened_stages: list[str] = []
        FakeUi.windows = []
        FakeUi.stack = []
        self.modules = self._build_modules()

    # ---- what tests do
    def play(self) -> None:
        if not self.world.playing:
            self.world.playing = True
            self.world.generation += 1
            self.world.steps_since_play = 0
            self.world.view_ready = False
            self.timeline_stream.push(TimelineEventType.PLAY)

    def stop(self) -> None:
        if self.world.playing:
            self.world.playing = False
            self.world.view_ready = False
            self.world.reset_state()
            self.timeline_stream.push(TimelineEventType.STOP)

    def step(self, n: int = 1) -> None:
        """n physics steps at the stage's rate: pre-step callbacks, integrate, post-step callbacks."""
        assert self.world.playing, "press play first"
        for _ in range(n):
            dt = self.world.physics_dt()
            for sub in [s for s in self.physics_subs if s.info["pre_step"]]:
                sub.fn(dt)
            self.world.integrate(dt)
            for sub in [s for s in self.physics_subs if not s.info["pre_step"]]:
                sub.fn(dt)

    def update(self) -> None:
        """One app update: Events-2.0 observers and legacy update subscriptions."""
        for sub in list(self.update_observers):
            sub.fn(types.SimpleNamespace(event_name="update"))
        self.update_stream.push(0)

    def run_tasks(self) -> None:
        for task in list(self.tasks):
            if not task.cancelled:
                asyncio.run(task.coro)
                task.finished = True
            self.tasks.remove(task)

    def log_lines(self, level: str) -> list[str]:
        return [m for lv, m in self.logs if lv == level]

    @property
    def active_subscriptions(self) -> int:
        streams = (self.timeline_stream, self.stage_stream, self.update_stream)
        return len(self.physics_subs) + len(self.update_observers) + sum(len(s.subs) for s in streams)

    # ---- module construction
    def _build_modules(self) -> dict[str, types.ModuleType]:
        kit, world = self, self.world
        m: dict[str, types.ModuleType] = {}

        def mod(name: str, **attrs: Any) -> types.ModuleType:
            module = types.ModuleType(name)
            module.__dict__.update(attrs)
            module.__path__ = []  # every fake is a package, so submodules import
            m[name] = module
            if "." in name:
                parent, child = name.rsplit(".", 1)
                setattr(m[parent], child, module)
            return module

        # carb
        settings = types.SimpleNamespace(get=lambda path: kit.settings.get(path), set=lambda path, v: kit.settings.__setitem__(path, v))
        mod("carb", log_info=lambda s: kit.logs.append(("info", s)), log_warn=lambda s: kit.logs.append(("warn", s)),
            log_error=lambda s: kit.logs.append(("error", s)))
        mod("carb.settings", get_settings=lambda: settings)
        dispatcher = types.SimpleNamespace(
            observe_event=lambda event_name=None, on_event=None, observer_name="", **kw: FakeSubscription(kit.update_observers, on_event, name=observer_name)
        )
        mod("carb.eventdispatcher", get_eventdispatcher=lambda: dispatcher)

        # omni
        mod("omni")

        class IExt:
            def on_startup(self, ext_id: str) -> None: ...

            def on_shutdown(self) -> None: ...

        mod("omni.ext", IExt=IExt, get_extension_name=lambda ext_id: ext_id.split("-")[0])
        mod("omni.kit")

        async def next_update_async():
            return None

        app = types.SimpleNamespace(next_update_async=next_update_async, get_update_event_stream=lambda: kit.update_stream)
        mod("omni.kit.app", get_app=lambda: app, GLOBAL_EVENT_UPDATE="omni.kit.app:update")

        class FakeTask:
            def __init__(self, coro):
                self.coro, self.cancelled, self.finished = coro, False, False

            def cancel(self) -> None:
                if not self.finished:
                    self.cancelled = True
                    self.coro.close()

            def done(self) -> bool:
                return self.finished or self.cancelled

        def run_coroutine(coro):
            task = FakeTask(coro)
            kit.tasks.append(task)
            return task

        mod("omni.kit.async_engine", run_coroutine=run_coroutine)
        mod("omni.kit.menu")

        class MenuItemDescription:
            def __init__(self, name: str = "", onclick_fn: Optional[Callable] = None, **kw: Any):
                self.name, self.onclick_fn = name, onclick_fn

        def add_menu_items(items, menu_name):
            kit.menus.setdefault(menu_name, []).extend(items)

        def remove_menu_items(items, menu_name):
            for it in items:
                kit.menus.get(menu_name, []).remove(it)

        mod("omni.kit.menu.utils", MenuItemDescription=MenuItemDescription, add_menu_items=add_menu_items, remove_menu_items=remove_menu_items)

        timeline = types.SimpleNamespace(
            play=kit.play, stop=kit.stop, pause=lambda: None, is_playing=lambda: world.playing,
            get_timeline_event_stream=lambda: kit.timeline_stream,
        )
        mod("omni.timeline", get_timeline_interface=lambda: timeline, TimelineEventType=TimelineEventType)

        physx = types.SimpleNamespace(
            subscribe_physics_on_step_events=lambda fn, pre_step, order=0: FakeSubscription(kit.physics_subs, fn, pre_step=pre_step, order=order)
        )
        scene_query = types.SimpleNamespace(raycast_all=lambda o, d, dist, report, bothSides=False: world.raycast_all(o, d, dist, report))
        mod("omni.physx", get_physx_interface=lambda: physx, get_physx_scene_query_interface=lambda: scene_query)

        async def open_stage_async(url: str):
            kit.stage_stream.push(StageEventType.CLOSING)
            world.stage = world.default_stage(url)
            kit.opened_stages.append(url)
            kit.stage_stream.push(StageEventType.OPENED)
            return True, ""

        usd_ctx = types.SimpleNamespace(
            get_stage=lambda: world.stage, get_stage_event_stream=lambda: kit.stage_stream, open_stage_async=open_stage_async,
        )
        mod("omni.usd", get_context=lambda: usd_ctx, StageEventType=StageEventType)

        mod(
            "omni.ui", Window=FakeWindow, VStack=FakeWidget, HStack=FakeWidget, ZStack=FakeWidget, ScrollingFrame=FakeWidget,
            CollapsableFrame=FakeWidget, Spacer=FakeWidget, Label=FakeLabel, Button=FakeButton, StringField=FakeStringField,
            SimpleStringModel=FakeSimpleStringModel, ComboBox=FakeComboBox, Plot=FakePlot,
            Type=types.SimpleNamespace(LINE=0, HISTOGRAM=1), DockPreference=types.SimpleNamespace(RIGHT_BOTTOM=0, LEFT_BOTTOM=1),
            Fraction=lambda x: x, Pixel=lambda x: x,
        )

        # pxr
        mod("pxr", UsdPhysics=types.SimpleNamespace(Scene=_Scene),
            PhysxSchema=types.SimpleNamespace(PhysxSceneAPI=_PhysxSceneAPI, PhysxContactReportAPI=_PhysxContactReportAPI))

        # isaacsim
        mod("isaacsim")
        mod("isaacsim.core")
        mod("isaacsim.core.prims",
            Articulation=lambda prim_paths_expr, name="articulation", **kw: FakeArticulation(world, prim_paths_expr, name),
            RigidPrim=lambda prim_paths_expr, name="rigid", **kw: FakeRigidPrim(world, prim_paths_expr, name, **kw))
        return m


def purge_kit_modules() -> None:
    """Forget imported krabby kit packages so the next import binds to the current fakes."""
    for name in list(sys.modules):
        if any(name == p or name.startswith(p + ".") for p in KIT_PACKAGES):
            del sys.modules[name]


def install_fake_kit(monkeypatch, profile, settings: Optional[dict] = None, **world_kwargs: Any) -> FakeKit:
    """Put the fakes into sys.modules for one test (monkeypatch undoes it) and return the FakeKit."""
    purge_kit_modules()
    kit = FakeKit(FakeWorld(profile, **world_kwargs), settings)
    for name in list(sys.modules):
        if any(name == r or name.startswith(r + ".") for r in FAKE_ROOTS):
            monkeypatch.delitem(sys.modules, name)
    for name, module in kit.modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    return kit


__all__ = ["FakeKit", "FakeWorld", "FakeWindow", "FakeButton", "FakeLabel", "FakePlot", "FakeStringField",
           "install_fake_kit", "purge_kit_modules", "TimelineEventType", "StageEventType"]
