"""The krabby.parkour Kit extension: runs the parkour inference client inside Isaac Sim, next to krabby.hal.

The client talks to the HAL over ZeroMQ exactly as it would out of process; in-process it shares the
HAL extension's ZeroMQ context, so the default inproc endpoints work with zero copies. Window >
Krabby Parkour picks a checkpoint and starts/stops the policy; headless runs set
``--/exts/krabby.parkour/checkpoint=... --/exts/krabby.parkour/autostart=true``.
"""

from __future__ import annotations

import gc
from typing import Any, Optional

import carb
import carb.settings
import omni.ext
import omni.kit.app

from krabby.hal.isaac.panel_model import PanelWindowHost

from ..panel_model import ParkourExtSettings, PolicyRunner, PolicyStartError

MENU_NAME = "Krabby Parkour"
_current: Optional["KrabbyParkourExtension"] = None


def current() -> Optional["KrabbyParkourExtension"]:
    return _current


class KrabbyParkourExtension(omni.ext.IExt):
    def on_startup(self, ext_id: str) -> None:
        global _current
        self._ext_id = ext_id
        self._subs: list[Any] = []
        self._menu_items: Optional[list] = None
        self.settings = ParkourExtSettings.from_getter(carb.settings.get_settings().get)
        self.runner = PolicyRunner()
        self.window_host = PanelWindowHost(self._make_window, self.runner.snapshot, self.settings.ui_refresh_hz)
        self._subscribe_update()
        self._add_menu()
        if self.settings.show_window:
            self.show_window(True)
        if self.settings.autostart:
            result = self.start_policy(self.settings.checkpoint)
            (carb.log_info if self.runner.running else carb.log_error)(f"[krabby.parkour] {result}")
        _current = self

    def on_shutdown(self) -> None:
        global _current
        if _current is self:
            _current = None
        self.runner.stop()  # control thread joined, client sockets closed (linger 0)
        for sub in self._subs:
            fn = getattr(sub, "unsubscribe", None) or getattr(sub, "reset", None)
            if callable(fn):
                fn()
        self._subs.clear()
        if self._menu_items is not None:
            from omni.kit.menu.utils import remove_menu_items

            remove_menu_items(self._menu_items, "Window")
            self._menu_items = None
        self.window_host.destroy()
        gc.collect()

    # ---------------------------------------------------------------------------- policy
    def start_policy(self, checkpoint: str) -> str:
        """Start the in-process client against the running krabby.hal; returns a one-line result."""
        from krabby.hal.client import HalClientConfig

        try:
            from krabby.hal.kit import current as hal_current
        except ImportError:
            hal_current = lambda: None  # noqa: E731 - krabby.hal's Kit layer is not loaded
        hal = hal_current()
        if hal is None or hal.server is None:
            msg = "the krabby.hal extension is not serving (enable it, and check its panel for errors)"
            self.runner.error = msg
            return msg
        obs_ep, cmd_ep = hal.client_endpoints()
        rate = self.settings.control_rate_hz if self.settings.control_rate_hz > 0 else hal.stepper.rates.control_rate_hz
        try:
            from krabby.parkour.inference import InferenceOptions

            options = InferenceOptions(lockstep=True)  # a simulator: act on every published state
        except ImportError:
            options = None
        try:
            self.runner.start(
                checkpoint, hal_client_config=HalClientConfig(observation_endpoint=obs_ep, command_endpoint=cmd_ep, client_name="krabby.parkour (Kit)"),
                context=hal.context, control_rate=rate, device=self.settings.device,
                action_dim=self.settings.action_dim, obs_dim=self.settings.obs_dim, options=options,
            )
        except PolicyStartError as e:
            return str(e)
        return f"policy running: {checkpoint}"

    def stop_policy(self) -> str:
        was = self.runner.running
        self.runner.stop()
        return "policy stopped" if was else "policy was not running"

    # -------------------------------------------------------------------------------- UI
    def _subscribe_update(self) -> None:
        try:
            import carb.eventdispatcher

            self._subs.append(carb.eventdispatcher.get_eventdispatcher().observe_event(
                event_name=omni.kit.app.GLOBAL_EVENT_UPDATE, on_event=self._on_update, observer_name="krabby.parkour panel",
            ))
        except (ImportError, AttributeError):
            stream = omni.kit.app.get_app().get_update_event_stream()
            self._subs.append(stream.create_subscription_to_pop(self._on_update, name="krabby.parkour panel"))

    def _add_menu(self) -> None:
        try:
            from omni.kit.menu.utils import MenuItemDescription, add_menu_items
        except ImportError:
            return
        self._menu_items = [MenuItemDescription(name=MENU_NAME, onclick_fn=self.toggle_window)]
        add_menu_items(self._menu_items, "Window")

    def _make_window(self) -> Any:
        from .ui import ParkourWindow

        return ParkourWindow(self.settings.checkpoint, self.start_policy, self.stop_policy)

    def show_window(self, visible: bool = True) -> None:
        self.window_host.show(visible)

    def toggle_window(self, *_args) -> None:
        self.window_host.toggle()

    def _on_update(self, _event=None) -> None:
        self.window_host.update()


__all__ = ["KrabbyParkourExtension", "current", "MENU_NAME"]
