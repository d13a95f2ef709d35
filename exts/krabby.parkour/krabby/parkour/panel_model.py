"""Run the inference client in-process and describe it for the Krabby Parkour panel (no Kit imports).

``PolicyRunner`` starts and stops one ``ParkourInferenceClient`` against a HAL server in the same
process (shared ZeroMQ context, inproc endpoints), and turns its ``metrics()`` into panel text:
policy rate, compute time, observation age and the last action. The Kit extension
(``krabby.parkour.kit``) only draws this; the Isaac Lab server uses the runner as well.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from krabby.hal.isaac.ext_settings import read_settings

PARKOUR_SETTINGS_PREFIX = "/exts/krabby.parkour/"


@dataclass
class ParkourExtSettings:
    checkpoint: str = ""  # policy checkpoint (.pt / .onnx) to run
    autostart: bool = False  # start the policy when the extension starts (headless runs)
    device: str = "cpu"  # torch device of the policy
    action_dim: int = 12
    obs_dim: int = 753
    control_rate_hz: float = 0.0  # 0 = the HAL robot profile's control rate
    show_window: bool = False  # open the panel at startup (else: Window > Krabby Parkour)
    ui_refresh_hz: float = 5.0

    @classmethod
    def from_getter(cls, get: Callable[[str], Any], prefix: str = PARKOUR_SETTINGS_PREFIX) -> "ParkourExtSettings":
        return read_settings(cls, get, prefix)


class PolicyStartError(RuntimeError):
    """The policy could not be started; the message says why in one line."""


ClientFactory = Callable[..., Any]


def default_client_factory(hal_client_config: Any, checkpoint: str, *, action_dim: int, obs_dim: int,
                           control_rate: Optional[float], device: str, context: Any, options: Any = None) -> Any:
    """The real client (imported lazily: torch loads only when a policy starts)."""
    from krabby.parkour.inference import ModelWeights, ParkourInferenceClient

    kwargs = {} if options is None else {"options": options}
    return ParkourInferenceClient(
        hal_client_config, ModelWeights(checkpoint, action_dim=action_dim, obs_dim=obs_dim),
        control_rate=control_rate, device=device, transport_context=context, **kwargs,
    )


def _fmt(value: Any, unit: str, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f} {unit}"


@dataclass
class PolicyPanelSnapshot:
    status: str = "stopped"
    rate: str = "-"
    compute: str = "-"
    obs_age: str = "-"
    commands: str = ""
    error: str = ""
    last_action: list[float] = field(default_factory=list)


class PolicyRunner:
    """One inference client at a time: ``start()``, ``stop()``, ``snapshot()``. Thread-safe."""

    def __init__(self, client_factory: Optional[ClientFactory] = None):
        self.client_factory = client_factory or default_client_factory
        self.client: Any = None
        self.checkpoint: Optional[Path] = None
        self.error = ""
        self._running: Optional[threading.Event] = None
        self._lock = threading.Lock()

    @property
    def running(self) -> bool:
        return self.client is not None

    def start(self, checkpoint: str, *, hal_client_config: Any, context: Any, control_rate: Optional[float] = None,
              device: str = "cpu", action_dim: int = 12, obs_dim: int = 753, options: Any = None) -> None:
        """Load the checkpoint, handshake with the HAL, start the control thread. Raises PolicyStartError."""
        with self._lock:
            if self.client is not None:
                raise PolicyStartError("the policy is already running: stop it first")
            if not checkpoint or not str(checkpoint).strip():
                raise PolicyStartError("no checkpoint: pick a policy checkpoint (.pt or .onnx) first")
            path = Path(str(checkpoint).strip()).expanduser()
            if not path.is_file():
                raise PolicyStartError(f"checkpoint {str(path)!r} not found")
            client = None
            try:
                client = self.client_factory(hal_client_config, str(path), action_dim=action_dim, obs_dim=obs_dim,
                                             control_rate=control_rate, device=device, context=context, options=options)
                client.initialize()
                running = threading.Event()
                running.set()
                client.start_thread(running)
            except Exception as e:
                if client is not None:
                    try:
                        client.stop()
                    except Exception:
                        pass
                self.error = f"cannot start the policy: {type(e).__name__}: {e}"
                raise PolicyStartError(self.error) from None
            self.client, self.checkpoint, self._running, self.error = client, path, running, ""

    def stop(self) -> None:
        """Stop the control thread and close its sockets (linger 0); safe to call twice."""
        with self._lock:
            client, running = self.client, self._running
            self.client, self._running = None, None
        if running is not None:
            running.clear()
        if client is not None:
            client.stop()

    def snapshot(self) -> PolicyPanelSnapshot:
        s = PolicyPanelSnapshot(error=self.error)
        client = self.client
        if client is None:
            return s
        try:
            m = client.metrics()
        except Exception as e:  # a dying client must not take the panel with it
            s.status, s.error = "running (metrics unavailable)", f"{type(e).__name__}: {e}"
            return s
        s.status = f"running {self.checkpoint.name if self.checkpoint else ''}".strip()
        s.rate = _fmt(m.get("loop_rate_hz"), "Hz")
        s.compute = f"p50 {_fmt(m.get('compute_ms_p50'), 'ms', 2)}, p99 {_fmt(m.get('compute_ms_p99'), 'ms', 2)}"
        s.obs_age = f"p50 {_fmt(m.get('obs_age_ms_p50'), 'ms')}, p99 {_fmt(m.get('obs_age_ms_p99'), 'ms')}"
        refused = m.get("commands_refused") or {}
        s.commands = f"accepted {m.get('commands_accepted', 0)}, refused {sum(refused.values()) if refused else 0}"
        if refused:
            s.commands += " (" + ", ".join(f"{k} {v}" for k, v in sorted(refused.items())) + ")"
        s.last_action = [float(a) for a in (m.get("last_action") or [])]
        return s


__all__ = [
    "PARKOUR_SETTINGS_PREFIX", "ParkourExtSettings", "PolicyStartError", "PolicyRunner", "PolicyPanelSnapshot",
    "default_client_factory",
]
