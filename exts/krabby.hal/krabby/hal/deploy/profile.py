"""Deployment profiles: where a HAL listens, how it authenticates, and its safety timing, in one TOML file.

A deployment profile lives under ``config/deploy/`` (example: ``robot_tcp.toml``). Both sides read the
same file: the server takes its bind endpoints, key pair and allow-list; the client takes its connect
endpoints, its key pair and the server's public key. ::

    dep = load_deployment("robot_tcp")            # or a path to a .toml file
    server = HalServer(backend, dep.server_config())
    client = HalClient(dep.client_config())

Relative key paths are resolved against the profile's own folder; ``~`` and ``$VARS`` are expanded.
Keys are loaded only when a side asks for its security (``server_security()`` / ``client_security()``),
so a laptop holding only the client keys can load the same file as the robot.

Every deployment shares the sections [deployment], [server], [client], [security] and [safety]. A runner
may add its own sections to the same file: the Jetson robot runner's [dds], [zed], [supervisor] and
[operator] (``krabby.hal.deploy.robot_sections.RUNNER_SECTIONS``, example ``go2_jetson.toml``) are checked
here like the shared ones and come back typed in ``DeploymentProfile.sections``. Unknown sections and
fields are errors that name them.
"""

from __future__ import annotations

import dataclasses
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from ..robot_profile import ProfileError, _floats, _get, _names, read_config_toml
from ..safety import SafetyConfig
from .robot_sections import RUNNER_SECTIONS

_SECTIONS = {
    "deployment": {"name", "description", "robot"},
    "server": {"observation_bind", "command_bind"},
    "client": {"observation_endpoint", "command_endpoint", "client_name"},
    "security": {"allow_insecure_tcp", "key_dir", "server_key", "client_key", "allow_dir", "telemetry_encrypted"},
    "safety": {f.name for f in dataclasses.fields(SafetyConfig)},
}
_KEY_FIELDS = ("key_dir", "server_key", "client_key", "allow_dir")
_RENAMED = {"deploy": "deployment", "hal_safety": "safety", "endpoints": "server"}  # the robot runner's former names


class DeploymentError(ProfileError):
    """A deployment profile is malformed; the message names the file and the field."""


@dataclass(frozen=True)
class DeploymentProfile:
    name: str
    description: str
    observation_bind: str
    command_bind: str
    observation_endpoint: str
    command_endpoint: str
    client_name: str
    allow_insecure_tcp: bool  # explicit opt-out: tcp without authentication or encryption
    key_dir: Path | None  # None: no keys (insecure opt-out, or no tcp endpoint)
    server_key: str
    client_key: str
    allow_dir: Path | None
    telemetry_encrypted: bool
    safety: SafetyConfig = field(default_factory=SafetyConfig)
    robot: str = "go2"  # robot profile name (config/robots/<robot>.toml) or path
    sections: Mapping[str, Any] = field(default_factory=dict)  # a runner's own sections, typed (see robot_sections.RUNNER_SECTIONS)
    source_path: Path | None = None

    @property
    def uses_curve(self) -> bool:
        return self.key_dir is not None

    def server_security(self) -> Any:
        """CurveServerKeys from ``key_dir/<server_key>.key_secret`` and ``allow_dir``; None without keys."""
        if not self.uses_curve:
            return None
        from .curve import CurveServerKeys

        assert self.key_dir is not None and self.allow_dir is not None
        return CurveServerKeys.from_dir(self.key_dir, self.server_key, self.allow_dir, telemetry_encrypted=self.telemetry_encrypted)

    def client_security(self) -> Any:
        """CurveClientKeys from ``key_dir/<client_key>.key_secret`` and ``key_dir/<server_key>.key``; None without keys."""
        if not self.uses_curve:
            return None
        from .curve import CurveClientKeys

        assert self.key_dir is not None
        return CurveClientKeys.from_dir(self.key_dir, self.client_key, self.server_key, telemetry_encrypted=self.telemetry_encrypted)

    def server_config(self, **overrides: Any) -> Any:
        """A HalServerConfig for this deployment (keyword arguments override fields)."""
        from ..server import HalServerConfig

        kw: dict[str, Any] = dict(
            observation_bind=self.observation_bind, command_bind=self.command_bind, safety=dataclasses.replace(self.safety),
            allow_insecure_tcp=self.allow_insecure_tcp,
        )
        kw.update(overrides)
        if "security" not in kw:
            kw["security"] = self.server_security()
        return HalServerConfig(**kw)

    def client_config(self, **overrides: Any) -> Any:
        """A HalClientConfig for this deployment (keyword arguments override fields)."""
        from ..client import HalClientConfig

        kw: dict[str, Any] = dict(observation_endpoint=self.observation_endpoint, command_endpoint=self.command_endpoint,
                                  client_name=self.client_name)
        kw.update(overrides)
        if "security" not in kw:
            kw["security"] = self.client_security()
        return HalClientConfig(**kw)


def _path(value: str, base: Path) -> Path:
    p = Path(os.path.expandvars(os.path.expanduser(value)))
    return p if p.is_absolute() else (base / p).resolve()


def _endpoint(d: Mapping[str, Any], key: str, path: str, default: str | None = None) -> str:
    if default is not None and key not in d:
        return default
    value = _get(d, key, path, str)
    if not value.startswith(("tcp://", "inproc://", "ipc://")):
        raise DeploymentError(f"field '{path}' must be a ZeroMQ endpoint (tcp://HOST:PORT, ipc://PATH or inproc://NAME), got {value!r}")
    return value


def _section_fields(section: str) -> set[str]:
    if section in _SECTIONS:
        return _SECTIONS[section]
    extra = RUNNER_SECTIONS
    if section not in extra:
        hint = f" ([{section}] is now [{_RENAMED[section]}])" if section in _RENAMED else ""
        raise DeploymentError(f"unknown section [{section}]{hint}; known: {', '.join([*_SECTIONS, *extra])}")
    return {f.name for f in dataclasses.fields(extra[section])}


def _typed_section(cls: type, table: Mapping[str, Any], section: str, positive: bool = False) -> Any:
    """``cls(**table)``, each field checked against its annotation (bool, int, float, str, list of str or float).

    ``positive``: numbers must be > 0 (timings). Unknown fields were rejected by the caller.
    """
    hints = typing.get_type_hints(cls)
    kw: dict[str, Any] = {}
    for key in table:
        path = f"{section}.{key}"
        kind = hints[key]
        if typing.get_origin(kind) is typing.Union:  # Optional[X]: TOML has no null, so X
            kind = next(a for a in typing.get_args(kind) if a is not type(None))
        if typing.get_origin(kind) is list:
            if typing.get_args(kind) == (str,):
                kw[key] = list(_names(table, key, path))
            else:  # as many numbers as the default has
                kw[key] = list(_floats(table, key, path, len(getattr(cls(), key))))
            continue
        value = _get(table, key, path, kind)
        if positive and kind is not bool and value <= 0:
            raise DeploymentError(f"field '{path}' must be > 0, got {value}")
        kw[key] = value
    return cls(**kw)


def deployment_from_dict(data: Mapping[str, Any], base_dir: Path, origin: str = "<dict>") -> DeploymentProfile:
    try:
        return _from_dict(data, base_dir, origin)
    except ProfileError as e:
        raise DeploymentError(f"{origin}: {e}") from None


def _from_dict(data: Mapping[str, Any], base: Path, origin: str) -> DeploymentProfile:
    for section, value in data.items():
        known = _section_fields(section)
        if not isinstance(value, Mapping):
            raise DeploymentError(f"'{section}' must be a table")
        unknown = sorted(set(value) - known)
        if unknown:
            raise DeploymentError(f"unknown field(s) {', '.join(f'{section}.{k}' for k in unknown)}; "
                                  f"known: {', '.join(sorted(known))}")
    dep = data.get("deployment", {})
    srv, cli, sec, saf = (data.get(s, {}) for s in ("server", "client", "security", "safety"))
    name = _get(dep, "name", "deployment.name", str) if "name" in dep else Path(origin).stem
    description = _get(dep, "description", "deployment.description", str) if "description" in dep else ""
    robot = _get(dep, "robot", "deployment.robot", str) if "robot" in dep else "go2"
    observation_bind = _endpoint(srv, "observation_bind", "server.observation_bind")
    command_bind = _endpoint(srv, "command_bind", "server.command_bind")
    observation_endpoint = _endpoint(cli, "observation_endpoint", "client.observation_endpoint", observation_bind)
    command_endpoint = _endpoint(cli, "command_endpoint", "client.command_endpoint", command_bind)
    client_name = _get(cli, "client_name", "client.client_name", str) if "client_name" in cli else "krabby-client"

    insecure = _get(sec, "allow_insecure_tcp", "security.allow_insecure_tcp", bool) if "allow_insecure_tcp" in sec else False
    telemetry_encrypted = _get(sec, "telemetry_encrypted", "security.telemetry_encrypted", bool) if "telemetry_encrypted" in sec else True
    uses_tcp = any(e.startswith("tcp://") for e in (observation_bind, command_bind, observation_endpoint, command_endpoint))
    key_dir = allow_dir = None
    server_key, client_key = "server", "client"
    if insecure:
        if any(k in sec for k in _KEY_FIELDS):
            raise DeploymentError("security.allow_insecure_tcp = true but key fields are set: remove them, or the opt-out")
    elif uses_tcp or any(k in sec for k in _KEY_FIELDS):
        missing = [k for k in _KEY_FIELDS if k not in sec]
        if missing:
            raise DeploymentError(
                f"tcp endpoints need CURVE keys: missing field(s) {', '.join('security.' + k for k in missing)} "
                "(create keys with `krabby-keys generate`, or set security.allow_insecure_tcp = true to opt out)"
            )
        key_dir = _path(_get(sec, "key_dir", "security.key_dir", str), base)
        allow_dir = _path(_get(sec, "allow_dir", "security.allow_dir", str), base)
        server_key = _get(sec, "server_key", "security.server_key", str)
        client_key = _get(sec, "client_key", "security.client_key", str)
        from .keys import SecurityError, check_key_name

        for field_name, key_name in (("server_key", server_key), ("client_key", client_key)):
            try:
                check_key_name(key_name)
            except SecurityError as e:
                raise DeploymentError(f"field 'security.{field_name}': {e}") from None

    runner = [s for s in data if s not in _SECTIONS]  # a runner's own sections (names checked above)
    sections = {s: _typed_section(RUNNER_SECTIONS[s], data[s], s) for s in runner}
    return DeploymentProfile(
        name=name, description=description, observation_bind=observation_bind, command_bind=command_bind,
        observation_endpoint=observation_endpoint, command_endpoint=command_endpoint, client_name=client_name,
        allow_insecure_tcp=insecure, key_dir=key_dir, server_key=server_key, client_key=client_key, allow_dir=allow_dir,
        telemetry_encrypted=telemetry_encrypted, safety=_typed_section(SafetyConfig, saf, "safety", positive=True),
        robot=robot, sections=sections, source_path=Path(origin) if origin != "<dict>" else None,
    )


def load_deployment(path: str | os.PathLike) -> DeploymentProfile:
    """Load ``config/deploy/<name>.toml`` (by name) or a TOML file (by path); validates every field."""
    p, data = read_config_toml("deploy", path, "deployment profile", DeploymentError, marker="deployment")
    return deployment_from_dict(data, p.resolve().parent, origin=str(p))


__all__ = ["DeploymentProfile", "DeploymentError", "load_deployment", "deployment_from_dict"]
