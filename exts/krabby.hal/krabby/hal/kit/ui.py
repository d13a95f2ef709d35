"""The Krabby HAL window (omni.ui): endpoints, connection, rates, latency, safety, operator buttons, joint plots.

It only draws ``krabby.hal.isaac.panel_model.HalPanelModel`` snapshots; it is refreshed from the app's
update event (main thread), never from physics callbacks.
"""

from __future__ import annotations

from typing import Callable

import omni.ui as ui

from ..isaac.panel_model import HalPanelModel, HalPanelSnapshot

GREEN = 0xFF40E040  # omni.ui colours are 0xAABBGGRR
RED = 0xFF4040FF
AMBER = 0xFF20C0FF
SAFETY_COLOURS = {"ACTIVE": GREEN, "ARMED": GREEN, "HOLD": AMBER, "DAMP": AMBER, "DISARMED": 0xFFC0C0C0, "ESTOP": RED}


class PanelWindow:
    """What both extensions' panels share: an ``omni.ui.Window`` (``self.window``) whose visibility
    ``PanelWindowHost`` toggles from the Window menu."""

    window: "ui.Window | None" = None

    @property
    def visible(self) -> bool:
        return self.window is not None and self.window.visible

    @visible.setter
    def visible(self, value: bool) -> None:
        if self.window is not None:
            self.window.visible = value


class HalWindow(PanelWindow):
    TITLE = "Krabby HAL"

    def __init__(self, model: HalPanelModel):
        self.model = model
        self._joint = 0
        self.window = ui.Window(self.TITLE, width=480, height=620, visible=True, dockPreference=ui.DockPreference.RIGHT_BOTTOM)
        with self.window.frame:
            with ui.ScrollingFrame():
                with ui.VStack(spacing=4, height=0):
                    self._endpoints = ui.Label("", word_wrap=True)
                    self._connection = ui.Label("")
                    with ui.HStack(height=0):
                        ui.Label("Safety", width=70)
                        self._safety = ui.Label("-")
                    self._safety_detail = ui.Label("")
                    self._rates = ui.Label("", word_wrap=True)
                    self._latency = ui.Label("")
                    self._warning = ui.Label("", word_wrap=True, style={"color": RED})
                    with ui.HStack(height=28, spacing=4):
                        ui.Button("Arm", clicked_fn=self._action(model.arm))
                        ui.Button("Disarm", clicked_fn=self._action(model.disarm))
                        ui.Button("E-STOP", clicked_fn=self._action(model.estop), style={"background_color": 0xFF2020B0})
                        ui.Button("Clear e-stop", clicked_fn=self._action(model.clear_estop))
                    self._action_result = ui.Label("")
                    with ui.HStack(height=0):
                        ui.Label("Joint", width=70)
                        self._combo = ui.ComboBox(0, *model.joint_names)
                        self._combo.model.add_item_changed_fn(self._on_joint_changed)
                    with ui.ZStack(height=100):
                        self._plot_pos = ui.Plot(ui.Type.LINE, -1.0, 1.0, 0.0, 0.0, style={"color": GREEN})
                        self._plot_tgt = ui.Plot(ui.Type.LINE, -1.0, 1.0, 0.0, 0.0, style={"color": RED, "background_color": 0x0})
                    ui.Label("green: position, red: target (rad), one point per control step")
                    self._table = ui.Label("", word_wrap=False)

    # ------------------------------------------------------------------------------- events
    def _action(self, fn: Callable[[], str]) -> Callable[[], None]:
        def clicked() -> None:
            self._action_result.text = fn()

        return clicked

    def _on_joint_changed(self, combo_model, _item) -> None:
        self._joint = combo_model.get_item_value_model().as_int

    # ------------------------------------------------------------------------------- drawing
    def refresh(self, s: HalPanelSnapshot) -> None:
        self._endpoints.text = s.endpoints
        self._connection.text = s.connection
        self._safety.text = s.safety_state
        self._safety.style = {"color": SAFETY_COLOURS.get(s.safety_state, 0xFFFFFFFF)}
        self._safety_detail.text = s.safety_detail
        self._rates.text = s.rates
        self._latency.text = s.latency
        self._warning.text = s.warning
        self._table.text = "\n".join(f"{n:<16} target {t:+.3f}  pos {p:+.3f}  err {t - p:+.3f}" for n, t, p in s.joint_rows)
        if self.model.joint_names:
            targets, positions = self.model.trace.series(self._joint)
            if targets:
                lo = min(min(targets), min(positions)) - 0.05
                hi = max(max(targets), max(positions)) + 0.05
                for plot, data in ((self._plot_pos, positions), (self._plot_tgt, targets)):
                    plot.scale_min, plot.scale_max = lo, hi
                    plot.set_data(*data)

    def destroy(self) -> None:
        if self.window is not None:
            self.window.destroy()
            self.window = None


__all__ = ["HalWindow"]
