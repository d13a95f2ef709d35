"""Deployment profile: how *this* robot is wired (DDS, calibration, camera mount, limits, endpoints).

The robot profile (config/robots/go2.toml) holds what every Go2 shares; a deployment profile
(config/deploy/*.toml) holds what belongs to one installation: network interface and DDS domain,
foot-force calibration, the ZED Mini's mount, supervisor limits, operator scaling, HAL endpoints.
Unknown keys are errors (a typo must not silently fall back to a default).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional

from ..robot_profile import ProfileError, config_dir
from ..safety import SafetyConfig
from .supervisor import SupervisorConfig

try:
    import tomllib as _toml
except ModuleNotFoundError:  # Python 3.10 (JetPack 6)
    import tomli as _toml  # type: ignore[no-redef]


@dataclass
class DdsSection:
    domain_id: int = 0
    network_interface: Optional[str] = "eth0"
    write_rate_hz: float = 500.0
    motor_joint_names: Optional[List[str]] = None
    foot_force_names: Optional[List[str]] = None
    foot_force_n_per_count: float = 1.0
    foot_force_offset_counts: float = 0.0


@dataclass
class ZedSection:
    """ZED Mini: capture settings and mount (left lens optical centre, in the base frame)."""

    enabled: bool = True
    serial_number: int = 0  # 0 = the first camera found
    resolution: str = "VGA"  # VGA 672x376 runs up to 100 FPS
    fps: int = 100
    depth_mode: str = "PERFORMANCE"
    min_depth_m: float = 0.15
    max_depth_m: float = 3.0
    mount_pos_base_m: List[float] = field(default_factory=lambda: [0.33, 0.0315, 0.08])
    mount_roll_deg: float = 0.0
    mount_pitch_down_deg: float = 20.0
    mount_yaw_deg: float = 0.0
    output_rate_hz: float = 50.0  # reprojections to the training camera per second (latest frame)
    source_stride: int = 2  # use every n-th ZED pixel (VGA/2 still gives ~10 points per training pixel)


@dataclass
class OperatorSection:
    max_forward_m_s: float = 1.0
    max_yaw_rad: float = 0.8
    default_forward_m_s: float = 0.0
    stick_deadband: float = 0.1
    gamepad_device: str = "/dev/input/js0"
    terrain_is_flat: bool = False


@dataclass
class EndpointSection:
    observation_bind: str = "inproc://hal_observation"
    command_bind: str = "inproc://hal_commands"


@dataclass
class DeployConfig:
    robot: str = "go2"
    description: str = ""
    dds: DdsSection = field(default_factory=DdsSection)
    zed: ZedSection = field(default_factory=ZedSection)
    supervisor: SupervisorConfig = field(default_factory=SupervisorConfig)
    hal_safety: SafetyConfig = field(default_factory=SafetyConfig)
    operator: OperatorSection = field(default_factory=OperatorSection)
    endpoints: EndpointSection = field(default_factory=EndpointSection)
    source: str = "<defaults>"


_SECTIONS = {"dds": DdsSection, "zed": ZedSection, "supervisor": SupervisorConfig, "hal_safety": SafetyConfig,
             "operator": OperatorSection, "endpoints": EndpointSection}


def _fill(cls: type, data: Mapping[str, Any], where: str) -> Any:
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ProfileError(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(known)}")
    kwargs = {}
    for k, v in data.items():
        default = getattr(cls(), k)
        if isinstance(default, bool) and not isinstance(v, bool):
            raise ProfileError(f"{where}.{k} must be true or false, got {v!r}")
        if isinstance(default, float) and isinstance(v, int) and not isinstance(v, bool):
            v = float(v)
        kwargs[k] = v
    return cls(**kwargs)


def deploy_config_from_dict(data: Mapping[str, Any], origin: str = "<dict>") -> DeployConfig:
    top = dict(data)
    head = top.pop("deploy", {})
    unknown = sorted(set(top) - set(_SECTIONS))
    if unknown:
        raise ProfileError(f"{origin}: unknown section(s) {', '.join(unknown)}; known: deploy, {', '.join(_SECTIONS)}")
    cfg = DeployConfig(robot=head.get("robot", "go2"), description=head.get("description", ""), source=origin)
    extra = sorted(set(head) - {"robot", "description"})
    if extra:
        raise ProfileError(f"{origin}: unknown key(s) in [deploy]: {', '.join(extra)}")
    for name, cls in _SECTIONS.items():
        if name in top:
            setattr(cfg, name, _fill(cls, top[name], f"{origin} [{name}]"))
    return cfg


def load_deploy_config(name_or_path: Optional[str] = None) -> DeployConfig:
    """By name (config/deploy/<name>.toml) or path; None = built-in defaults (the Go2 on eth0)."""
    if name_or_path is None:
        return DeployConfig()
    p = Path(name_or_path)
    if p.suffix != ".toml":
        p = config_dir() / "deploy" / f"{name_or_path}.toml"
    if not p.is_file():
        raise ProfileError(f"deployment profile {str(p)!r} not found")
    with open(p, "rb") as f:
        try:
            data = _toml.load(f)
        except _toml.TOMLDecodeError as e:
            raise ProfileError(f"{p}: not valid TOML: {e}") from None
    return deploy_config_from_dict(data, origin=str(p))


def as_dict(cfg: DeployConfig) -> Dict[str, Any]:
    return dataclasses.asdict(cfg)


__all__ = ["DeployConfig", "DdsSection", "ZedSection", "OperatorSection", "EndpointSection", "load_deploy_config",
           "deploy_config_from_dict", "as_dict"]
