"""The krabby.hal Kit extension: serves the HAL from the robot articulation on the open stage.

Lifecycle (hot reload and disable/enable run on_shutdown then on_startup):

- on_startup: read settings (carb), load the robot profile, start the HalServer (sockets bound
  now, so clients can handshake before Play), subscribe PhysX pre-/post-step, timeline and stage
  events and the app update (panel refresh), add Window > Krabby HAL, and in headless runs open
  ``usd_path`` and press Play when ``autoplay`` is set.
- on_shutdown: drop every subscription, remove the menu item, destroy the window, cancel the
  autoplay task, close the server (sockets linger 0, command thread joined).

Physics callbacks only forward to ``krabby.hal.isaac.stepper.PhysicsStepper`` (pure, tested).
"""

from __future__ import annotations

import gc
import os
import time
from typing import Any, Optional

import carb
import carb.settings
import omni.ext
import omni.kit.app
import omni.physx
import omni.timeline
import omni.usd

from ..isaac.articulation import HeadingHoldNavigation
from ..isaac.ext_settings import HalExtSettings, connect_endpoint
from ..isaac.panel_model import HalPanelModel, PanelWindowHost
from ..isaac.stepper import PhysicsStepper, effective_rates, physics_rate_message
from ..isaac.versions import isaac_sim_version_problem
from ..robot_profile import load_robot_profile
from ..safety import SafetyConfig
from . import physics_scene
from .sim_backend import IsaacSimBackend

MENU_NAME = "Krabby HAL"
#: Our timeline subscription's order tier. Lower tiers are notified first (carb::events
#: createSubscriptionToPop); Isaac Sim's SimulationManager warm-starts physics inside the PLAY event
#: at the default tier 0 (IS v5.1.0 isaacsim.core.simulation_manager/python/impl/simulation_manager.py:78-82,
#: 164-193), so at -100 the physics rate is set and the supervisor armed before those first steps.
TIMELINE_ORDER = -100
_current: Optional["KrabbyHalExtension"] = None


def current() -> Optional["KrabbyHalExtension"]:
    """The running extension instance (for krabby.parkour's in-process client), or None."""
    return _current


class HalSetupError(RuntimeError):
    """Something the user must install or configure; the message says what, in one line."""


def _release(sub: Any) -> None:
    """Unsubscribe a Kit subscription / observer, whatever its kind; dropping the reference finishes it."""
    for name in ("unsubscribe", "reset"):
        fn = getattr(sub, name, None)
        if callable(fn):
            try:
                fn()
            except Exception:  # pragma: no cover - already released
                pass
            return


class KrabbyHalExtension(omni.ext.IExt):
    # ----------------------------------------------------------------------------- lifecycle
    def on_startup(self, ext_id: str) -> None:
        global _current
        self._ext_id = ext_id
        self._subs: list[Any] = []
        self._menu_items: Optional[list] = None
        self._autoplay_task = None
        self.server = None
        self.stepper: Optional[PhysicsStepper] = None
        self.backend: Optional[IsaacSimBackend] = None
        self.context = None
        self.error = ""
        self.settings = HalExtSettings.from_getter(carb.settings.get_settings().get)
        try:
            self._start_hal()
        except Exception as e:  # one line a user can act on; the extension stays enabled (panel shows it)
            self.error = str(e) if isinstance(e, HalSetupError) else f"{type(e).__name__}: {e}"
            carb.log_error(f"[krabby.hal] HAL not started: {self.error}")
        self.panel = HalPanelModel(self.server, self.stepper, error=self.error)
        self.panel.attach()
        self.window_host = PanelWindowHost(self._make_window, self.panel.snapshot, self.settings.ui_refresh_hz)
        if self.stepper is not None:
            self._subscribe_simulation()
        self._subscribe_update()
        self._add_menu()
        if self.settings.show_window:
            self.show_window(True)
        if self.stepper is not None and (self.settings.usd_path or self.settings.autoplay):
            from omni.kit.async_engine import run_coroutine

            self._autoplay_task = run_coroutine(self._autoplay())
        _current = self

    def on_shutdown(self) -> None:
        global _current
        if _current is self:
            _current = None
        if self._autoplay_task is not None:
            self._autoplay_task.cancel()
            self._autoplay_task = None
        for sub in self._subs:
            _release(sub)
        self._subs.clear()
        self._remove_menu()
        self.window_host.destroy()
        self.panel.detach()
        if self.server is not None:
            self.server.close()  # linger 0 on both sockets, command thread joined
            self.server = None
        if self.backend is not None:
            self.backend.invalidate()
        self.stepper = None
        gc.collect()

    # ----------------------------------------------------------------------------------- HAL
    def _start_hal(self) -> None:
        problem = isaac_sim_version_problem(_isaac_sim_version(), omni.kit.app.get_app().get_build_version())
        if problem:
            raise HalSetupError(problem)
        try:
            import zmq
        except ImportError:
            raise HalSetupError(
                "pyzmq is missing from Isaac Sim's Python (Kit installs it on enable only when online): run "
                "`<isaac-sim>/python.sh -m pip install pyzmq` (pip install pyzmq in a pip-installed Isaac Sim's venv)"
            ) from None
        from ..server import HalServer, HalServerConfig

        s = self.settings
        profile = load_robot_profile(s.robot_profile)
        rates, warnings = effective_rates(profile, s.physics_rate_hz, s.control_rate_hz)
        for w in warnings:
            carb.log_warn(f"[krabby.hal] {w}")
        self.backend = IsaacSimBackend(
            profile, s.robot_prim_path, physics_dt_s=rates.physics_dt_s, foot_path_template=s.foot_path_template,
            height_scan=s.height_scan, depth=s.depth, control_dt_s=1.0 / rates.control_rate_hz,
            navigation=HeadingHoldNavigation(s.forward_speed_m_s, s.terrain_is_flat),
        )
        safety = SafetyConfig(arm_on_start=False)
        if s.watchdog_s > 0:
            safety.watchdog_s = s.watchdog_s
        if s.hold_s > 0:
            safety.hold_s = s.hold_s
        config = HalServerConfig(
            observation_bind=s.observation_bind, command_bind=s.command_bind, safety=safety,
            allow_insecure_tcp=s.allow_insecure_tcp,
        )
        self.context = zmq.Context.instance()  # shared with krabby.parkour: inproc needs one context
        self.server = HalServer(self.backend, config, context=self.context).start()
        self.stepper = PhysicsStepper(
            self.server, self.backend, rates=rates, lockstep_timeout_s=s.lockstep_timeout_ms / 1000.0, awaiting_play=True,
        )
        carb.log_info(f"[krabby.hal] serving {profile.name} at {s.robot_prim_path}: {s.observation_bind}, {s.command_bind}")

    def client_endpoints(self) -> tuple[str, str]:
        """(observation, command) endpoints a client in this process connects to."""
        return connect_endpoint(self.settings.observation_bind), connect_endpoint(self.settings.command_bind)

    # ----------------------------------------------------------------------- subscriptions
    def _subscribe_simulation(self) -> None:
        physx = omni.physx.get_physx_interface()
        self._subs.append(physx.subscribe_physics_on_step_events(self._on_pre_step, pre_step=True, order=0))
        self._subs.append(physx.subscribe_physics_on_step_events(self._on_post_step, pre_step=False, order=0))
        timeline = omni.timeline.get_timeline_interface()
        self._subs.append(timeline.get_timeline_event_stream().create_subscription_to_pop(
            self._on_timeline_event, order=TIMELINE_ORDER, name="krabby.hal"))
        ctx = omni.usd.get_context()
        self._subs.append(ctx.get_stage_event_stream().create_subscription_to_pop(self._on_stage_event, name="krabby.hal"))
        if ctx.get_stage() is not None:
            self.prepare_stage()
        if timeline.is_playing():  # enabled while playing: this Play is prepared now
            self._on_play()

    def _subscribe_update(self) -> None:
        try:
            import carb.eventdispatcher

            self._subs.append(carb.eventdispatcher.get_eventdispatcher().observe_event(
                event_name=omni.kit.app.GLOBAL_EVENT_UPDATE, on_event=self._on_update, observer_name="krabby.hal panel",
            ))
        except (ImportError, AttributeError):  # Kit before Events 2.0
            stream = omni.kit.app.get_app().get_update_event_stream()
            self._subs.append(stream.create_subscription_to_pop(self._on_update, name="krabby.hal panel"))

    def _on_pre_step(self, dt: float) -> None:
        self.stepper.on_pre_step(dt)

    def _on_post_step(self, dt: float) -> None:
        self.stepper.on_post_step(dt)

    def _on_timeline_event(self, event) -> None:
        t = omni.timeline.TimelineEventType
        if event.type == int(t.PLAY):
            self._on_play()
        elif event.type == int(t.STOP):
            self.stepper.on_stop()
            if self.server is not None:
                self.server.supervisor.disarm(time.time_ns())

    def _on_play(self) -> None:
        """Prepare the stage, arm, then let the stepper act on physics steps (steps before this are skipped)."""
        self.prepare_stage()
        if self.settings.arm_on_play and self.server is not None:
            self.server.supervisor.arm(time.time_ns())
        self.stepper.on_play()

    def _on_stage_event(self, event) -> None:
        t = omni.usd.StageEventType
        if event.type in (int(t.CLOSING), int(t.OPENED)):
            self.stepper.on_stop()
        if event.type == int(t.OPENED):
            if omni.timeline.get_timeline_interface().is_playing():
                self._on_play()  # a stage opened while playing: this Play is prepared now
            else:
                self.prepare_stage()

    def prepare_stage(self) -> None:
        """Physics rate to the policy's (or warn), contact reporting on the feet. Safe to call repeatedly."""
        stage = omni.usd.get_context().get_stage()
        if stage is None or self.stepper is None:
            return
        hz = self.stepper.rates.physics_rate_hz
        try:
            if self.settings.set_physics_rate:
                changed = physics_scene.set_physics_rate(stage, hz)
                if changed:
                    carb.log_warn(f"[krabby.hal] set physics rate of {', '.join(changed)} to {hz:g} Hz (the policy's)")
            else:
                for path, rate in physics_scene.physics_scene_rates(stage) or [("(no PhysicsScene)", None)]:
                    msg = physics_rate_message(rate, hz)
                    if msg:
                        carb.log_warn(f"[krabby.hal] {path}: {msg}")
            if stage.GetPrimAtPath(self.settings.robot_prim_path).IsValid():
                skipped = physics_scene.enable_contact_reports(stage, self.backend.foot_paths)
                if skipped:
                    carb.log_warn(f"[krabby.hal] no contact reporting on {', '.join(skipped)}: not rigid bodies (or missing)")
        except Exception as e:
            carb.log_warn(f"[krabby.hal] could not prepare the stage: {type(e).__name__}: {e}")

    # --------------------------------------------------------------------------- headless
    async def _autoplay(self) -> None:
        app = omni.kit.app.get_app()
        for _ in range(3):  # let the app finish starting up
            await app.next_update_async()
        path = self.settings.usd_path
        if path:
            if "://" not in path and not os.path.isfile(path):
                carb.log_error(f"[krabby.hal] usd_path {path!r} does not exist")
                return
            ok, err = await omni.usd.get_context().open_stage_async(path)
            if not ok:
                carb.log_error(f"[krabby.hal] cannot open stage {path!r}: {err}")
                return
            await app.next_update_async()
            self.prepare_stage()
        if self.settings.autoplay:
            omni.timeline.get_timeline_interface().play()
            carb.log_info("[krabby.hal] autoplay: timeline playing")

    # --------------------------------------------------------------------------------- UI
    def _add_menu(self) -> None:
        try:
            from omni.kit.menu.utils import MenuItemDescription, add_menu_items
        except ImportError:  # an app without menus (headless)
            return
        self._menu_items = [MenuItemDescription(name=MENU_NAME, onclick_fn=self.toggle_window)]
        add_menu_items(self._menu_items, "Window")

    def _remove_menu(self) -> None:
        if self._menu_items is None:
            return
        from omni.kit.menu.utils import remove_menu_items

        remove_menu_items(self._menu_items, "Window")
        self._menu_items = None

    def _make_window(self) -> Any:
        from .ui import HalWindow

        return HalWindow(self.panel)

    def show_window(self, visible: bool = True) -> None:
        self.window_host.show(visible)

    def toggle_window(self, *_args) -> None:
        self.window_host.toggle()

    def _on_update(self, _event=None) -> None:
        self.window_host.update()


def _isaac_sim_version() -> str:
    """Isaac Sim's version from its VERSION file ('' when it cannot be read, e.g. from an app file outside Isaac Sim)."""
    try:
        from isaacsim.core.version import get_version

        return get_version()[0]
    except Exception:  # noqa: BLE001 - the Kit version decides then
        return ""


__all__ = ["KrabbyHalExtension", "current", "HalSetupError", "MENU_NAME"]
