"""View-model of the HAL panel (Kit's omni.ui window draws it; nothing here imports Kit).

It turns a running HalServer (+ the physics stepper) into what a person watches: endpoints,
connection state, message rates, command latency, the safety state, and joint targets vs positions.
Operator buttons (arm, disarm, e-stop, clear e-stop) go straight to the server's safety supervisor.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import numpy as np

from .. import clock
from ..types import ActuatorCommand, SensorFrame


class PanelWindowHost:
    """A panel window created on first show and refreshed at most ``refresh_hz`` times a second.

    Both Kit extensions host their omni.ui window through this, so the show/toggle/throttle logic
    is written once and runs without Kit. ``make_window()`` returns an object with ``visible``,
    ``refresh(snapshot)`` and ``destroy()``; ``snapshot()`` returns what it draws.
    """

    def __init__(self, make_window: Callable[[], Any], snapshot: Callable[[], Any], refresh_hz: float,
                 now_s: Callable[[], float] = time.monotonic):
        self._make_window, self._snapshot, self._now_s = make_window, snapshot, now_s
        self._period_s = 1.0 / max(refresh_hz, 1.0)
        self._next_s = 0.0
        self.window: Any = None

    @property
    def visible(self) -> bool:
        return self.window is not None and self.window.visible

    def show(self, visible: bool = True) -> None:
        if self.window is None:
            if not visible:
                return
            self.window = self._make_window()
        self.window.visible = visible
        if visible:
            self.window.refresh(self._snapshot())

    def toggle(self, *_args: Any) -> None:
        self.show(not self.visible)

    def update(self, force: bool = False) -> None:
        """Per app update: redraw when visible and the refresh period has passed (or ``force``)."""
        if not self.visible:
            return
        now = self._now_s()
        if now < self._next_s and not force:
            return
        self._next_s = now + self._period_s
        self.window.refresh(self._snapshot())

    def destroy(self) -> None:
        if self.window is not None:
            self.window.destroy()
            self.window = None


class CounterRates:
    """Per-second rates of increasing counters over a sliding window of samples."""

    def __init__(self, window_s: float = 2.0):
        self.window_s = window_s
        self._samples: deque[tuple[float, dict[str, float]]] = deque()

    def update(self, t_s: float, counters: dict[str, float]) -> dict[str, float]:
        self._samples.append((t_s, dict(counters)))
        while len(self._samples) > 2 and t_s - self._samples[1][0] >= self.window_s:
            self._samples.popleft()
        t0, c0 = self._samples[0]
        dt = t_s - t0
        if dt <= 0:
            return {k: 0.0 for k in counters}
        return {k: (v - c0.get(k, 0.0)) / dt for k, v in counters.items()}


def percentile_ms(samples: Any, q: float) -> float:
    data = list(samples)
    return float(np.percentile(data, q)) if data else float("nan")


class JointTrace:
    """Ring buffers of joint positions and targets (robot order), one entry per control step."""

    def __init__(self, num_joints: int, length: int = 250):
        self.positions = deque(maxlen=length)
        self.targets = deque(maxlen=length)
        self.num_joints = num_joints
        self._lock = threading.Lock()

    def append(self, frame: SensorFrame, command: Optional[ActuatorCommand]) -> None:
        q = np.asarray(frame.state.joint_pos_rad, dtype=np.float64)
        t = q if command is None else np.asarray(command.target_pos_rad, dtype=np.float64)
        with self._lock:
            self.positions.append(q.copy())
            self.targets.append(t.copy())

    def series(self, joint: int) -> tuple[list[float], list[float]]:
        """(targets, positions) of one joint, oldest first."""
        with self._lock:
            return [float(t[joint]) for t in self.targets], [float(p[joint]) for p in self.positions]

    def latest(self) -> Optional[tuple[np.ndarray, np.ndarray]]:
        with self._lock:
            if not self.positions:
                return None
            return self.targets[-1].copy(), self.positions[-1].copy()


@dataclass
class HalPanelSnapshot:
    """Plain strings and numbers for the panel; recomputed a few times per second."""

    endpoints: str = ""
    connection: str = ""
    safety_state: str = "-"
    safety_detail: str = ""
    rates: str = ""
    latency: str = ""
    warning: str = ""
    joint_rows: list[tuple[str, float, float]] = field(default_factory=list)  # name, target, position


class HalPanelModel:
    """Owns the panel's measurements; ``snapshot()`` is cheap enough to call at the UI rate."""

    def __init__(self, server: Any, stepper: Any = None, *, error: str = "", now_s: Callable[[], float] = time.monotonic, trace_len: int = 250):
        self.server = server
        self.stepper = stepper
        self.error = error
        self.now_s = now_s
        self.rates = CounterRates()
        self.latency_ms: deque[float] = deque(maxlen=500)
        self._last_cmd_s: Optional[float] = None
        self._prev_hook: Optional[Callable] = None
        self._lock = threading.Lock()
        n = server.profile.num_joints if server is not None else 0
        self.joint_names = tuple(server.profile.joint_names) if server is not None else ()
        self.trace = JointTrace(n, trace_len)

    # --------------------------------------------------------------------------- wiring
    def attach(self) -> None:
        """Hook the server's command callback and the stepper's control-step observers."""
        if self.server is not None:
            self._prev_hook = self.server.on_command
            self.server.on_command = self.on_command
        if self.stepper is not None:
            self.stepper.observers.append(self.trace.append)

    def detach(self) -> None:
        if self.server is not None and self.server.on_command == self.on_command:
            self.server.on_command = self._prev_hook
        if self.stepper is not None and self.trace.append in self.stepper.observers:
            self.stepper.observers.remove(self.trace.append)

    def on_command(self, ack: Any, msg: Any) -> None:
        """Called by the server's command thread for every COMMAND: latency = accept time - observation capture."""
        if self._prev_hook is not None:
            self._prev_hook(ack, msg)
        if getattr(ack, "reason", None) is not None and ack.reason.accepted:
            with self._lock:
                self.latency_ms.append((clock.now_ns() - msg.header.stamp_ns) * 1e-6)
                self._last_cmd_s = self.now_s()

    # --------------------------------------------------------------------------- actions
    def _control(self, name: str) -> str:
        if self.server is None:
            return "HAL server is not running"
        reason = getattr(self.server.supervisor, name)(clock.now_ns())
        return f"{name}: {reason.name}"

    def arm(self) -> str:
        return self._control("arm")

    def disarm(self) -> str:
        return self._control("disarm")

    def estop(self) -> str:
        return self._control("estop")

    def clear_estop(self) -> str:
        return self._control("clear_estop")

    # --------------------------------------------------------------------------- reading
    def snapshot(self) -> HalPanelSnapshot:
        s = HalPanelSnapshot()
        if self.server is None:
            s.warning = self.error or "HAL server is not running"
            return s
        cfg = self.server.config
        s.endpoints = f"telemetry {cfg.observation_bind}   commands {cfg.command_bind}"
        status = self.server.status()
        safety = status["safety"]
        s.safety_state = safety["state"]
        s.safety_detail = f"watchdog trips {safety['watchdog_trips']}, clamped {safety['clamped_commands']}, refusals {sum(safety['refusals'].values())}"
        now = self.now_s()
        with self._lock:
            last = self._last_cmd_s
            lat = list(self.latency_ms)
        clients = status["clients"]
        if last is None:
            s.connection = f"{clients} client(s) handshaken, no command yet" if clients else "no client connected"
        else:
            s.connection = f"{clients} client(s); last command {1e3 * (now - last):.0f} ms ago"
        stats = status["stats"]
        counters = {
            "telemetry": float(stats.get("published_state", 0)),
            "commands": float(stats.get("commands_accepted", 0)),
        }
        st = self.stepper.stats if self.stepper is not None else None
        if st is not None:
            counters["physics"] = float(st.physics_steps)
            counters["control"] = float(st.control_steps)
        r = self.rates.update(now, counters)
        parts = [f"{k} {v:.1f}/s" for k, v in r.items()]
        s.rates = "   ".join(parts)
        s.latency = f"obs->command p50 {percentile_ms(lat, 50):.1f} ms, p99 {percentile_ms(lat, 99):.1f} ms" if lat else "no commands yet"
        warnings = [self.error] if self.error else []
        if st is not None:
            if st.rate_warning:
                warnings.append(st.rate_warning)
            if st.last_error:
                warnings.append(f"last physics-step error: {st.last_error}")
            if not self.stepper.ready:
                warnings.append("waiting for Play (no articulation handle)")
        s.warning = "\n".join(warnings)
        latest = self.trace.latest()
        if latest is not None:
            tgt, pos = latest
            s.joint_rows = [(n, float(tgt[i]), float(pos[i])) for i, n in enumerate(self.joint_names)]
        return s


__all__ = ["CounterRates", "JointTrace", "HalPanelSnapshot", "HalPanelModel", "percentile_ms"]
