"""FAKES of the omni / carb / isaacsim surface that krabby's Kit layer uses. Not Kit.

Only the calls ``krabby.hal.kit`` and ``krabby.parkour.kit`` make exist here, with the signatures
of Kit 107.3 / Isaac Sim 5.1 and, where it matters, their behaviour (the physics side, with its
upstream sources, is in ``fake_isaacsim.py``):

- event streams notify subscribers by order tier, lower first (carb::events
  ``createSubscriptionToPop``: "Lower order tiers will be notified first"); within a tier the
  earliest subscriber first, which puts Isaac Sim's SimulationManager (loaded before any user
  extension) ahead of an extension that subscribes at the same order;
- pressing Play runs the SimulationManager's warm-up physics steps inside the PLAY dispatch;
- ``subscribe_physics_on_step_events(fn, pre_step, order)`` takes all three arguments, as the
  omni.physx binding does (PhysX BindingsPhysXPython.cpp:884);
- the stage is a REAL usd-core stage (``pxr``), with a stand-in for NVIDIA's ``pxr.PhysxSchema``.

Installed into ``sys.modules`` only by tests that ask for it (``install_fake_kit``); every test
that does gets a fresh world and fresh imports of the ``kit`` packages.
"""

from __future__ import annotations

import asyncio
import enum
import sys
import types
from typing import Any, Callable, Optional

from fakes.fake_isaacsim import FakeArticulation, FakeRigidPrim, FakeSimulationManager, FakeWorld, PhysxSchema

KIT_PACKAGES = ("krabby.hal.kit", "krabby.parkour.kit")
FAKE_ROOTS = ("omni", "carb", "isaacsim")
ISAAC_SIM_5_1 = ("5.1.0", "rc.19", "5", "1", "0", "rc", "19", "")  # isaacsim.core.version.get_version() of 5.1.0
KIT_107_3 = "107.3.3+isaac.229672.69cbf6ad.gl.manylinux_2_35_x86_64.release"  # get_build_version() of Isaac Sim 5.1


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
    """carb.events.IEventStream: subscribers notified by order tier (lower first), then by subscription time."""

    def __init__(self):
        self.subs: list[FakeSubscription] = []

    def create_subscription_to_pop(self, fn: Callable, order: int = 0, name: str = "") -> FakeSubscription:
        return FakeSubscription(self.subs, fn, name=name, order=order, event_type=None)

    def create_subscription_to_pop_by_type(self, event_type: int, fn: Callable, order: int = 0, name: str = "") -> FakeSubscription:
        return FakeSubscription(self.subs, fn, name=name, order=order, event_type=int(event_type))

    def push(self, event_type: int, payload: Optional[dict] = None) -> None:
        event = types.SimpleNamespace(type=int(event_type), payload=payload or {})
        for sub in sorted(list(self.subs), key=lambda s: s.info["order"]):  # stable: ties keep subscription order
            if sub in self.subs and sub.info["event_type"] in (None, event.type):
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
    """Everything the fakes share: settings, logs, streams, menus, tasks, windows, the world, the SimulationManager."""

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
        self.isaac_version = ISAAC_SIM_5_1
        self.kit_version = KIT_107_3
        FakeUi.windows = []
        FakeUi.stack = []
        # Isaac Sim's own extensions load (and subscribe) before any user extension
        self.simulation_manager = FakeSimulationManager(self)
        self._own_subs = len(self.timeline_stream.subs)
        self.modules = self._build_modules()

    # ---- what tests do
    def play(self) -> None:
        """Press Play: PLAY is dispatched; the SimulationManager warm-starts physics inside that dispatch."""
        if not self.world.playing:
            self.world.playing = True
            self.world.generation += 1
            self.timeline_stream.push(TimelineEventType.PLAY)

    def stop(self) -> None:
        if self.world.playing:
            self.world.playing = False
            self.world.reset_state()
            self.timeline_stream.push(TimelineEventType.STOP)

    def physics_step(self) -> None:
        """One PhysX step at the stage's rate: pre-step subscribers, integrate, post-step subscribers (by order)."""
        dt = self.world.physics_dt()
        for sub in sorted([s for s in self.physics_subs if s.info["pre_step"]], key=lambda s: s.info["order"]):
            sub.fn(dt)
        self.world.integrate(dt)
        for sub in sorted([s for s in self.physics_subs if not s.info["pre_step"]], key=lambda s: s.info["order"]):
            sub.fn(dt)

    def step(self, n: int = 1) -> None:
        """n physics steps of a playing timeline."""
        assert self.world.playing, "press play first"
        for _ in range(n):
            self.physics_step()

    def recreate_view(self) -> None:
        """The physics simulation view was recreated under the extension (e.g. the stage was edited while playing)."""
        self.simulation_manager._physics_sim_view = types.SimpleNamespace(generation=-1)

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
        """Subscriptions the extensions hold (Isaac Sim's own are not counted)."""
        streams = (self.timeline_stream, self.stage_stream, self.update_stream)
        return len(self.physics_subs) + len(self.update_observers) + sum(len(s.subs) for s in streams) - self._own_subs

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

        def observe_event(*, event_name: str, on_event: Callable, observer_name: str = "", order: int = 0, filter=None):  # noqa: A002
            return FakeSubscription(kit.update_observers, on_event, name=observer_name)

        mod("carb.eventdispatcher", get_eventdispatcher=lambda: types.SimpleNamespace(observe_event=observe_event))

        # omni
        mod("omni")

        class IExt:
            def on_startup(self, ext_id: str) -> None: ...

            def on_shutdown(self) -> None: ...

        mod("omni.ext", IExt=IExt, get_extension_name=lambda ext_id: ext_id.split("-")[0])
        mod("omni.kit")

        async def next_update_async():
            return None

        app = types.SimpleNamespace(
            next_update_async=next_update_async, get_update_event_stream=lambda: kit.update_stream,
            get_build_version=lambda: kit.kit_version,
        )
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

        def subscribe_physics_on_step_events(fn: Callable, pre_step: bool, order: int) -> FakeSubscription:
            return FakeSubscription(kit.physics_subs, fn, pre_step=pre_step, order=order)

        physx = types.SimpleNamespace(subscribe_physics_on_step_events=subscribe_physics_on_step_events)
        scene_query = types.SimpleNamespace(raycast_all=lambda o, d, dist, reportFn, bothSides=False: world.raycast_all(o, d, dist, reportFn))
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

        # isaacsim: the views are bound to this kit's world and SimulationManager
        mod("isaacsim")
        mod("isaacsim.core")
        mod("isaacsim.core.prims",
            Articulation=type("Articulation", (FakeArticulation,), {"_kit": kit}),
            RigidPrim=type("RigidPrim", (FakeRigidPrim,), {"_kit": kit}))
        mod("isaacsim.core.simulation_manager", SimulationManager=kit.simulation_manager)
        mod("isaacsim.core.version", get_version=lambda: kit.isaac_version)
        return m


def purge_kit_modules() -> None:
    """Forget imported krabby kit packages so the next import binds to the current fakes."""
    for name in list(sys.modules):
        if any(name == p or name.startswith(p + ".") for p in KIT_PACKAGES):
            del sys.modules[name]


def install_fake_kit(monkeypatch, profile, settings: Optional[dict] = None, **world_kwargs: Any) -> FakeKit:
    """Put the fakes into sys.modules for one test (monkeypatch undoes it) and return the FakeKit.

    pxr is the real usd-core; only NVIDIA's ``pxr.PhysxSchema`` is added as a stand-in.
    """
    import pxr

    purge_kit_modules()
    kit = FakeKit(FakeWorld(profile, **world_kwargs), settings)
    for name in list(sys.modules):
        if any(name == r or name.startswith(r + ".") for r in FAKE_ROOTS):
            monkeypatch.delitem(sys.modules, name)
    for name, module in kit.modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.setattr(pxr, "PhysxSchema", PhysxSchema, raising=False)
    monkeypatch.setitem(sys.modules, "pxr.PhysxSchema", PhysxSchema)
    return kit


__all__ = ["FakeKit", "FakeWorld", "FakeWindow", "FakeButton", "FakeLabel", "FakePlot", "FakeStringField",
           "install_fake_kit", "purge_kit_modules", "TimelineEventType", "StageEventType", "ISAAC_SIM_5_1", "KIT_107_3"]
