"""Settings of the ``krabby.hal`` Kit extension, as one typed object (pure Python, no carb).

Kit declares the same keys and defaults in ``exts/krabby.hal/config/extension.toml`` under
``[settings] exts."krabby.hal".<key>`` (a test keeps the two equal). The extension reads them with
``carb.settings`` at ``/exts/krabby.hal/<key>``; any of them can be overridden on the command line,
e.g. ``--/exts/krabby.hal/usd_path=/scenes/parkour.usd --/exts/krabby.hal/autoplay=true``.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Callable, TypeVar

HAL_SETTINGS_PREFIX = "/exts/krabby.hal/"

T = TypeVar("T")


@dataclass
class HalExtSettings:
    observation_bind: str = "inproc://hal_observation"  # telemetry PUB endpoint
    command_bind: str = "inproc://hal_commands"  # command ROUTER endpoint
    allow_insecure_tcp: bool = False  # explicit opt-out of CURVE on a tcp command channel
    robot_profile: str = "go2"  # config/robots/<name>.toml, or a path to a .toml
    robot_prim_path: str = "/World/Go2"  # the articulation root of the robot on the stage
    foot_path_template: str = "{robot}/{foot}"  # where the feet bodies are ({robot} = robot_prim_path)
    physics_rate_hz: float = 0.0  # 0 = the robot profile's (Go2: 200)
    control_rate_hz: float = 0.0  # 0 = the robot profile's (Go2: 50)
    set_physics_rate: bool = True  # set the PhysicsScene to the physics rate before Play (else only warn)
    lockstep_timeout_ms: float = 100.0  # > 0: lock-step, wait this long for each observation's command (sim-clock watchdog); 0: asynchronous
    arm_on_play: bool = True  # simulators arm themselves on Play; a robot never should
    watchdog_s: float = 0.0  # 0 = SafetyConfig's default (no valid command this long => HOLD; sim time in lock-step)
    hold_s: float = 0.0  # 0 = SafetyConfig's default (HOLD this long => DAMP)
    height_scan: bool = True  # ray-cast the training height scan (teacher policies need it)
    depth: bool = False  # ray-cast the training depth camera (student policies need it; slow in Python)
    forward_speed_m_s: float = 0.5  # navigation command: forward speed
    terrain_is_flat: bool = False  # navigation command: the policy's flat-terrain flag
    usd_path: str = ""  # headless: open this stage at startup
    autoplay: bool = False  # headless: press Play once the stage is loaded
    show_window: bool = False  # open the panel at startup (else: Window > Krabby HAL)
    ui_refresh_hz: float = 15.0  # panel refresh rate

    @classmethod
    def from_getter(cls, get: Callable[[str], Any], prefix: str = HAL_SETTINGS_PREFIX) -> "HalExtSettings":
        """Read every field through ``get(path)`` (e.g. carb's ``settings.get``); None keeps the default."""
        return read_settings(cls, get, prefix)


def read_settings(cls: type[T], get: Callable[[str], Any], prefix: str) -> T:
    """Fill a settings dataclass from a path getter, coercing Kit's command-line strings to the field's type."""
    values = {}
    for f in fields(cls):  # type: ignore[arg-type]
        raw = get(prefix + f.name)
        if raw is None:
            continue
        values[f.name] = coerce(raw, type(f.default), prefix + f.name)
    return cls(**values)


def coerce(value: Any, kind: type, path: str) -> Any:
    """bool/int/float/str from what carb returns (which may be a string when typed on the command line)."""
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, (int, float)):
            return bool(value)
        text = str(value).strip().lower()
        if text in ("true", "1", "yes", "on"):
            return True
        if text in ("false", "0", "no", "off", ""):
            return False
        raise ValueError(f"setting {path} must be true or false, got {value!r}")
    if kind in (int, float):
        try:
            return kind(value)
        except (TypeError, ValueError):
            raise ValueError(f"setting {path} must be a number, got {value!r}") from None
    return "" if value is None else str(value)


def connect_endpoint(bind: str) -> str:
    """The endpoint a client on this machine connects to for a server bind address.

    ``tcp://*:5555`` and ``tcp://0.0.0.0:5555`` -> ``tcp://127.0.0.1:5555``; inproc/ipc are unchanged.
    """
    for wildcard in ("tcp://*:", "tcp://0.0.0.0:"):
        if bind.startswith(wildcard):
            return "tcp://127.0.0.1:" + bind[len(wildcard):]
    return bind


__all__ = ["HAL_SETTINGS_PREFIX", "HalExtSettings", "read_settings", "coerce", "connect_endpoint"]
