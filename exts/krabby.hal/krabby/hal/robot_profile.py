"""Robot profile: the single typed source of a robot's facts (joint orders, pose, limits, gains, rates).

A profile is a TOML file under ``config/robots/``. It is validated on load and every mistake is
reported with the name of the offending field, so a typo never turns into a wrong joint order.
Two joint orders exist: *robot* order (motor bus / SDK / wire protocol) and *policy* order (the
order the policy was trained in, Isaac Lab's). The index maps between them live here only.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np

try:  # Python 3.11+
    import tomllib as _toml
except ModuleNotFoundError:  # Python 3.10 (JetPack 6)
    import tomli as _toml  # type: ignore[no-redef]


class ProfileError(ValueError):
    """A robot profile is malformed; the message names the field."""


@dataclass(frozen=True)
class ActuatorSpec:
    """Training PD gains and DC-motor clip of one joint kind (spec §3)."""

    kp_nm_per_rad: float
    kd_nm_s_per_rad: float
    effort_limit_nm: float
    saturation_effort_nm: float
    velocity_limit_rad_s: float
    hardware_torque_limit_nm: float


@dataclass(frozen=True)
class CameraSpec:
    """Pinhole depth camera in the training model (spec §2); Euclidean distance in metres."""

    mount_pos_base_m: tuple[float, float, float]
    pitch_down_deg: float
    width_px: int
    height_px: int
    focal_length_mm: float
    horizontal_aperture_mm: float
    vertical_aperture_mm: float
    max_distance_m: float
    update_rate_hz: float

    @property
    def fx_px(self) -> float:
        return self.width_px * self.focal_length_mm / self.horizontal_aperture_mm

    @property
    def fy_px(self) -> float:
        return self.height_px * self.focal_length_mm / self.vertical_aperture_mm

    @property
    def cx_px(self) -> float:
        return self.width_px / 2.0

    @property
    def cy_px(self) -> float:
        return self.height_px / 2.0

    @property
    def hfov_deg(self) -> float:
        return math.degrees(2.0 * math.atan(self.horizontal_aperture_mm / (2.0 * self.focal_length_mm)))

    @property
    def vfov_deg(self) -> float:
        return math.degrees(2.0 * math.atan(self.vertical_aperture_mm / (2.0 * self.focal_length_mm)))

    def ray_directions_camera(self) -> np.ndarray:
        """Unit ray directions through pixel centres, shape (H, W, 3), camera frame x right, y down, z forward."""
        u = (np.arange(self.width_px) + 0.5 - self.cx_px) / self.fx_px
        v = (np.arange(self.height_px) + 0.5 - self.cy_px) / self.fy_px
        uu, vv = np.meshgrid(u, v)  # (H, W), row-major, row 0 at the top
        d = np.stack([uu, vv, np.ones_like(uu)], axis=-1)
        return d / np.linalg.norm(d, axis=-1, keepdims=True)

    def rotation_base_from_camera(self) -> np.ndarray:
        """3x3 rotation taking camera-frame (x right, y down, z forward) vectors to the base frame."""
        p = math.radians(self.pitch_down_deg)
        forward = np.array([math.cos(p), 0.0, -math.sin(p)])  # optical axis, tilted down
        right = np.array([0.0, -1.0, 0.0])  # image right = robot's right (-y)
        down = np.cross(forward, right)  # completes the right-handed (x, y, z) = (right, down, forward)
        return np.stack([right, down, forward], axis=1)


@dataclass(frozen=True)
class HeightScanSpec:
    """Yaw-aligned grid of downward rays around the base (spec §1.2); x varies fastest."""

    offset_base_m: tuple[float, float]
    resolution_m: float
    size_m: tuple[float, float]
    update_rate_hz: Optional[float] = None  # a simulator scans this often; None = every control step

    def points_base_xy_m(self) -> np.ndarray:
        """Grid points (K, 2) in the yaw-aligned base frame, ray k at x = x0 + res*(k mod nx)."""
        nx = int(round(self.size_m[0] / self.resolution_m)) + 1
        ny = int(round(self.size_m[1] / self.resolution_m)) + 1
        xs = np.arange(nx) * self.resolution_m - self.size_m[0] / 2.0 + self.offset_base_m[0]
        ys = np.arange(ny) * self.resolution_m - self.size_m[1] / 2.0 + self.offset_base_m[1]
        gx, gy = np.meshgrid(xs, ys, indexing="xy")  # x fastest after ravel
        return np.stack([gx.ravel(), gy.ravel()], axis=1)

    @property
    def num_points(self) -> int:
        return self.points_base_xy_m().shape[0]


@dataclass(frozen=True)
class Rates:
    """A physics rate and the control rate it is decimated to (physics steps per control step)."""

    physics_rate_hz: float
    control_rate_hz: float

    @property
    def decimation(self) -> int:
        return int(round(self.physics_rate_hz / self.control_rate_hz))

    @property
    def physics_dt_s(self) -> float:
        return 1.0 / self.physics_rate_hz


@dataclass(frozen=True)
class RobotProfile:
    """Every fact about one robot. Joint arrays are in robot order unless the name says policy."""

    name: str
    description: str
    joint_names: tuple[str, ...]  # robot order
    policy_joint_names: tuple[str, ...]  # policy (Isaac Lab) order
    joint_actuator_kind: tuple[str, ...]
    default_pos_rad: np.ndarray
    pos_min_rad: np.ndarray
    pos_max_rad: np.ndarray
    kp_nm_per_rad: np.ndarray
    kd_nm_s_per_rad: np.ndarray
    effort_limit_nm: np.ndarray
    saturation_effort_nm: np.ndarray
    velocity_limit_rad_s: np.ndarray
    hardware_torque_limit_nm: np.ndarray
    foot_names: tuple[str, ...]  # robot order (wire)
    policy_foot_names: tuple[str, ...]
    contact_threshold_n: float
    action_scale: float
    action_clip: float
    physics_rate_hz: float
    control_rate_hz: float
    spawn_base_height_m: float
    camera: CameraSpec
    height_scan: HeightScanSpec
    source: Mapping[str, Any]  # the parsed TOML, sent verbatim in the HAL handshake
    # [policy] command_speed_range_m_s: the forward-speed commands training drew (obs[10]); None = unchecked.
    command_speed_range_m_s: Optional[tuple[float, float]] = None
    clamp_command_speed: bool = False  # [policy] clamp_command_speed: clamp into that range (else only warn)

    # -- derived index maps: policy[i] = robot[policy_from_robot[i]], robot[j] = policy[robot_from_policy[j]]
    @property
    def num_joints(self) -> int:
        return len(self.joint_names)

    @property
    def num_feet(self) -> int:
        return len(self.foot_names)

    @property
    def policy_from_robot(self) -> np.ndarray:
        return np.array([self.joint_names.index(n) for n in self.policy_joint_names], dtype=np.int64)

    @property
    def robot_from_policy(self) -> np.ndarray:
        return np.array([self.policy_joint_names.index(n) for n in self.joint_names], dtype=np.int64)

    @property
    def policy_feet_from_robot(self) -> np.ndarray:
        return np.array([self.foot_names.index(n) for n in self.policy_foot_names], dtype=np.int64)

    @property
    def rates(self) -> "Rates":
        """The trained physics and control rates (a simulator may run others: ``isaac.stepper.effective_rates``)."""
        return Rates(self.physics_rate_hz, self.control_rate_hz)

    @property
    def decimation(self) -> int:
        return self.rates.decimation

    @property
    def physics_dt_s(self) -> float:
        return self.rates.physics_dt_s

    @property
    def control_dt_s(self) -> float:
        return 1.0 / self.control_rate_hz

    def to_policy_order(self, robot_vec: np.ndarray) -> np.ndarray:
        return np.asarray(robot_vec)[..., self.policy_from_robot]

    def to_robot_order(self, policy_vec: np.ndarray) -> np.ndarray:
        return np.asarray(policy_vec)[..., self.robot_from_policy]

    def joint_index(self, name: str) -> int:
        """Robot-order index of a joint, by name."""
        try:
            return self.joint_names.index(name)
        except ValueError:
            raise ProfileError(f"{self.name}: unknown joint {name!r}; known: {', '.join(self.joint_names)}") from None

    def clamp_to_limits(self, targets_rad: np.ndarray) -> np.ndarray:
        return np.minimum(np.maximum(targets_rad, self.pos_min_rad), self.pos_max_rad)  # = np.clip, per command

    def dc_motor_clip_nm(self, torque_nm: np.ndarray, vel_rad_s: np.ndarray) -> np.ndarray:
        """The training DC-motor torque-speed clip (spec §3), robot order."""
        tau_min, tau_max = self.dc_motor_limits_nm(vel_rad_s)
        return np.minimum(np.maximum(torque_nm, tau_min), tau_max)  # = np.clip, without its wrapper (4 calls per control step)

    def dc_motor_limits_nm(self, vel_rad_s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(tau_min, tau_max) the DC motor can give at these joint velocities, robot order."""
        v = vel_rad_s / self.velocity_limit_rad_s
        tau_max = np.minimum(np.maximum(self.saturation_effort_nm * (1.0 - v), 0.0), self.effort_limit_nm)
        tau_min = np.minimum(np.maximum(self.saturation_effort_nm * (-1.0 - v), -self.effort_limit_nm), 0.0)
        return tau_min, tau_max


# ---------------------------------------------------------------------------------------- loading

_REPO_CONFIG_ENV = "KRABBY_CONFIG_DIR"


def config_dir() -> Path:
    """The top-level ``config/`` folder: $KRABBY_CONFIG_DIR, else the one beside the checkout."""
    env = os.environ.get(_REPO_CONFIG_ENV)
    if env:
        return Path(env)
    here = Path(__file__).resolve()
    for parent in here.parents:
        candidate = parent / "config" / "robots"
        if candidate.is_dir():
            return candidate.parent
    raise ProfileError(
        f"cannot find Krabby's config/ folder; set {_REPO_CONFIG_ENV} or pass a profile path explicitly"
    )


def _has_table(path: Path, table: str | None) -> bool:
    try:
        with open(path, "rb") as f:
            return table is None or table in _toml.load(f)
    except (OSError, _toml.TOMLDecodeError):
        return False


def read_config_toml(folder: str, name_or_path: str | os.PathLike, what: str,
                     error: type[ValueError] = ProfileError, marker: str | None = None) -> tuple[Path, dict[str, Any]]:
    """Find ``config/<folder>/<name>.toml`` (by name) or a TOML file (by path) and parse it.

    Raises ``error`` with a one-line message when the file is missing (naming the files of that folder
    that have the ``[marker]`` table, the ones this name could have meant) or is not valid TOML.
    """
    p = Path(name_or_path).expanduser()
    by_name = p.suffix != ".toml"
    if by_name:
        p = config_dir() / folder / f"{name_or_path}.toml"
    if not p.is_file():
        known = sorted(f.stem for f in (config_dir() / folder).glob("*.toml") if _has_table(f, marker)) if by_name else []
        raise error(f"{what} {str(p)!r} not found" + (f"; known: {', '.join(known)} (or a path to a .toml file)" if known else ""))
    try:
        with open(p, "rb") as f:
            return p, _toml.load(f)
    except _toml.TOMLDecodeError as e:
        raise error(f"{p}: not valid TOML: {e}") from None


def load_robot_profile(name_or_path: str | os.PathLike = "go2") -> RobotProfile:
    """Load a profile by name (``config/robots/<name>.toml``) or by file path; validates every field."""
    p, data = read_config_toml("robots", name_or_path, "robot profile", marker="robot")
    return profile_from_dict(data, origin=str(p))


def _get(d: Mapping[str, Any], key: str, path: str, kind: type | tuple[type, ...]) -> Any:
    if not isinstance(d, Mapping) or key not in d:
        raise ProfileError(f"missing field '{path}'")
    value = d[key]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise ProfileError(f"field '{path}' must be {getattr(kind, '__name__', kind)}, got {type(value).__name__}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ProfileError(f"field '{path}' must be finite, got {value}")
    return value


def _floats(d: Mapping[str, Any], key: str, path: str, n: int) -> tuple[float, ...]:
    seq = _get(d, key, path, list)
    if len(seq) != n or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in seq):
        raise ProfileError(f"field '{path}' must be a list of {n} numbers, got {seq!r}")
    return tuple(float(v) for v in seq)


def _names(d: Mapping[str, Any], key: str, path: str) -> tuple[str, ...]:
    seq = _get(d, key, path, list)
    if not all(isinstance(v, str) for v in seq):
        raise ProfileError(f"field '{path}' must be a list of names")
    if len(set(seq)) != len(seq):
        dup = sorted({v for v in seq if seq.count(v) > 1})
        raise ProfileError(f"field '{path}' lists {', '.join(dup)} more than once")
    return tuple(seq)


def _same_set(a: Sequence[str], b: Sequence[str], path: str, what: str) -> None:
    if len(a) != len(b):
        raise ProfileError(f"field '{path}' has {len(b)} {what}, expected {len(a)}")
    unknown = [n for n in b if n not in a]
    if unknown:
        raise ProfileError(f"field '{path}' names unknown {what} {', '.join(unknown)}")


def profile_from_dict(data: Mapping[str, Any], origin: str = "<dict>") -> RobotProfile:
    """Build a RobotProfile from parsed TOML (also used on the client side of the handshake)."""
    try:
        return _profile_from_dict(data)
    except ProfileError as e:
        raise ProfileError(f"{origin}: {e}") from None


def _profile_from_dict(data: Mapping[str, Any]) -> RobotProfile:
    robot = _get(data, "robot", "robot", Mapping)
    rates = _get(data, "rates", "rates", Mapping)
    policy = _get(data, "policy", "policy", Mapping)
    actuators = _get(data, "actuators", "actuators", Mapping)
    joints = _get(data, "joints", "joints", list)
    feet = _get(data, "feet", "feet", Mapping)
    cam = _get(data, "camera", "camera", Mapping)
    scan = _get(data, "height_scan", "height_scan", Mapping)

    act_specs: dict[str, ActuatorSpec] = {}
    for kind, spec in actuators.items():
        fields = {f: _get(spec, f, f"actuators.{kind}.{f}", float) for f in ActuatorSpec.__dataclass_fields__}
        for f, v in fields.items():
            if v < 0:
                raise ProfileError(f"field 'actuators.{kind}.{f}' must be >= 0, got {v}")
        act_specs[kind] = ActuatorSpec(**fields)

    if not joints:
        raise ProfileError("field 'joints' is empty")
    names, kinds, default, lo, hi = [], [], [], [], []
    for i, j in enumerate(joints):
        path = f"joints[{i}]"
        name = _get(j, "name", f"{path}.name", str)
        path = f"joints[{i}] ({name})"
        kind = _get(j, "actuator", f"{path}.actuator", str)
        if kind not in act_specs:
            raise ProfileError(f"field '{path}.actuator' names unknown actuator kind {kind!r}; known: {', '.join(act_specs)}")
        d = _get(j, "default_pos_rad", f"{path}.default_pos_rad", float)
        mn = _get(j, "pos_min_rad", f"{path}.pos_min_rad", float)
        mx = _get(j, "pos_max_rad", f"{path}.pos_max_rad", float)
        if not mn < mx:
            raise ProfileError(f"field '{path}.pos_min_rad' ({mn}) must be below pos_max_rad ({mx})")
        if not mn <= d <= mx:
            raise ProfileError(f"field '{path}.default_pos_rad' ({d}) is outside [{mn}, {mx}]")
        names.append(name)
        kinds.append(kind)
        default.append(d)
        lo.append(mn)
        hi.append(mx)
    if len(set(names)) != len(names):
        raise ProfileError(f"field 'joints' names {sorted({n for n in names if names.count(n) > 1})} more than once")

    policy_joints = _names(policy, "joint_order", "policy.joint_order")
    _same_set(names, policy_joints, "policy.joint_order", "joints")
    foot_names = _names(feet, "robot_order", "feet.robot_order")
    policy_feet = _names(policy, "foot_order", "policy.foot_order")
    _same_set(foot_names, policy_feet, "policy.foot_order", "feet")

    physics_hz = _get(rates, "physics_rate_hz", "rates.physics_rate_hz", float)
    control_hz = _get(rates, "control_rate_hz", "rates.control_rate_hz", float)
    if physics_hz <= 0 or control_hz <= 0 or control_hz > physics_hz:
        raise ProfileError("field 'rates' needs 0 < control_rate_hz <= physics_rate_hz")
    if abs(physics_hz / control_hz - round(physics_hz / control_hz)) > 1e-9:
        raise ProfileError("field 'rates.control_rate_hz' must divide rates.physics_rate_hz (integer decimation)")

    camera = CameraSpec(
        mount_pos_base_m=_floats(cam, "mount_pos_base_m", "camera.mount_pos_base_m", 3),  # type: ignore[arg-type]
        pitch_down_deg=_get(cam, "pitch_down_deg", "camera.pitch_down_deg", float),
        width_px=_get(cam, "width_px", "camera.width_px", int),
        height_px=_get(cam, "height_px", "camera.height_px", int),
        focal_length_mm=_get(cam, "focal_length_mm", "camera.focal_length_mm", float),
        horizontal_aperture_mm=_get(cam, "horizontal_aperture_mm", "camera.horizontal_aperture_mm", float),
        vertical_aperture_mm=_get(cam, "vertical_aperture_mm", "camera.vertical_aperture_mm", float),
        max_distance_m=_get(cam, "max_distance_m", "camera.max_distance_m", float),
        update_rate_hz=_get(cam, "update_rate_hz", "camera.update_rate_hz", float),
    )
    if camera.width_px <= 0 or camera.height_px <= 0:
        raise ProfileError("field 'camera.width_px'/'camera.height_px' must be positive")
    height_scan = HeightScanSpec(
        offset_base_m=_floats(scan, "offset_base_m", "height_scan.offset_base_m", 2),  # type: ignore[arg-type]
        resolution_m=_get(scan, "resolution_m", "height_scan.resolution_m", float),
        size_m=_floats(scan, "size_m", "height_scan.size_m", 2),  # type: ignore[arg-type]
        update_rate_hz=_get(scan, "update_rate_hz", "height_scan.update_rate_hz", float) if "update_rate_hz" in scan else None,
    )
    if height_scan.resolution_m <= 0:
        raise ProfileError("field 'height_scan.resolution_m' must be positive")
    if height_scan.update_rate_hz is not None and not 0 < height_scan.update_rate_hz <= control_hz:
        raise ProfileError("field 'height_scan.update_rate_hz' must be in (0, rates.control_rate_hz]")
    speed_range = None
    if "command_speed_range_m_s" in policy:
        speed_range = _floats(policy, "command_speed_range_m_s", "policy.command_speed_range_m_s", 2)
        if not speed_range[0] <= speed_range[1]:
            raise ProfileError("field 'policy.command_speed_range_m_s' must be [low, high] with low <= high")
    clamp_speed = _get(policy, "clamp_command_speed", "policy.clamp_command_speed", bool) if "clamp_command_speed" in policy else False
    if clamp_speed and speed_range is None:
        raise ProfileError("field 'policy.clamp_command_speed' needs policy.command_speed_range_m_s")

    def per_joint(field: str) -> np.ndarray:
        return np.array([getattr(act_specs[k], field) for k in kinds], dtype=np.float64)

    def arr(v: list[float]) -> np.ndarray:
        a = np.array(v, dtype=np.float64)
        a.setflags(write=False)
        return a

    return RobotProfile(
        name=_get(robot, "name", "robot.name", str),
        description=str(robot.get("description", "")),
        joint_names=tuple(names),
        policy_joint_names=policy_joints,
        joint_actuator_kind=tuple(kinds),
        default_pos_rad=arr(default),
        pos_min_rad=arr(lo),
        pos_max_rad=arr(hi),
        kp_nm_per_rad=per_joint("kp_nm_per_rad"),
        kd_nm_s_per_rad=per_joint("kd_nm_s_per_rad"),
        effort_limit_nm=per_joint("effort_limit_nm"),
        saturation_effort_nm=per_joint("saturation_effort_nm"),
        velocity_limit_rad_s=per_joint("velocity_limit_rad_s"),
        hardware_torque_limit_nm=per_joint("hardware_torque_limit_nm"),
        foot_names=foot_names,
        policy_foot_names=policy_feet,
        contact_threshold_n=_get(feet, "contact_threshold_n", "feet.contact_threshold_n", float),
        action_scale=_get(policy, "action_scale", "policy.action_scale", float),
        action_clip=_get(policy, "action_clip", "policy.action_clip", float),
        physics_rate_hz=physics_hz,
        control_rate_hz=control_hz,
        spawn_base_height_m=_get(robot, "spawn_base_height_m", "robot.spawn_base_height_m", float),
        camera=camera,
        height_scan=height_scan,
        source=data,
        command_speed_range_m_s=speed_range,  # type: ignore[arg-type]
        clamp_command_speed=clamp_speed,
    )
