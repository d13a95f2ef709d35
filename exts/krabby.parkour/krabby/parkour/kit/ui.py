"""The Krabby Parkour window (omni.ui): checkpoint, start/stop, policy rate, compute time, observation age, actions."""

from __future__ import annotations

from typing import Callable

import omni.ui as ui

from krabby.hal.kit.ui import PanelWindow

from ..panel_model import PolicyPanelSnapshot

RED = 0xFF4040FF  # omni.ui colours are 0xAABBGGRR
ACTION_CLIP = 4.8  # the training action clip (robot profile policy.action_clip), for the plot scale


class ParkourWindow(PanelWindow):
    TITLE = "Krabby Parkour"

    def __init__(self, checkpoint: str, on_start: Callable[[str], str], on_stop: Callable[[], str]):
        self._on_start, self._on_stop = on_start, on_stop
        self.window = ui.Window(self.TITLE, width=420, height=360, visible=True, dockPreference=ui.DockPreference.RIGHT_BOTTOM)
        with self.window.frame:
            with ui.VStack(spacing=4, height=0):
                ui.Label("Checkpoint (.pt TorchScript / rsl_rl, or .onnx)")
                self._checkpoint = ui.StringField(model=ui.SimpleStringModel(checkpoint))
                with ui.HStack(height=28, spacing=4):
                    ui.Button("Start policy", clicked_fn=self._start)
                    ui.Button("Stop policy", clicked_fn=self._stop)
                self._result = ui.Label("", word_wrap=True)
                self._status = ui.Label("stopped")
                self._rate = ui.Label("")
                self._compute = ui.Label("")
                self._obs_age = ui.Label("")
                self._commands = ui.Label("", word_wrap=True)
                self._error = ui.Label("", word_wrap=True, style={"color": RED})
                ui.Label("last action (policy order, raw)")
                self._actions = ui.Plot(ui.Type.HISTOGRAM, -ACTION_CLIP, ACTION_CLIP, *([0.0] * 12), height=80)
                self._actions_text = ui.Label("", word_wrap=True)

    @property
    def checkpoint(self) -> str:
        return self._checkpoint.model.get_value_as_string()

    def _start(self) -> None:
        self._result.text = self._on_start(self.checkpoint)

    def _stop(self) -> None:
        self._result.text = self._on_stop()

    def refresh(self, s: PolicyPanelSnapshot) -> None:
        self._status.text = s.status
        self._rate.text = f"policy rate {s.rate}"
        self._compute.text = f"compute {s.compute}"
        self._obs_age.text = f"observation age {s.obs_age}"
        self._commands.text = s.commands
        self._error.text = s.error
        if s.last_action:
            self._actions.set_data(*s.last_action)
            self._actions_text.text = " ".join(f"{a:+.2f}" for a in s.last_action)

    def destroy(self) -> None:
        if self.window is not None:
            self.window.destroy()
            self.window = None


__all__ = ["ParkourWindow"]
