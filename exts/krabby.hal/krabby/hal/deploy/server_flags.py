"""The flags every HAL server entry point shares: endpoints, a deployment profile, CURVE keys.

``krabby-hal-demo`` and ``krabby-hal-server-mujoco`` use these so that a policy on another machine can
drive them over tcp with CURVE, as the server's refusal of an unauthenticated tcp command channel asks:

    krabby-hal-server-mujoco --server-only --deploy robot_tcp                  # the profile's binds, keys, safety
    krabby-hal-server-mujoco --server-only --command-bind tcp://*:5556 --observation-bind tcp://*:5555 \\
        --key-dir ~/.config/krabby/keys --server-key robot --allow-dir ~/.config/krabby/allowed_clients

Precedence: an explicit ``--observation-bind`` / ``--command-bind`` / key flag over ``--deploy`` over the
entry point's inproc defaults. With ``--deploy`` the profile's ``[safety]`` (``arm_on_start`` too) replaces
the entry point's own; a built-in client then uses the profile's ``[client]`` keys.
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

DEFAULT_OBSERVATION_BIND = "inproc://hal_observation"
DEFAULT_COMMAND_BIND = "inproc://hal_commands"


def add_server_flags(ap: argparse.ArgumentParser) -> None:
    g = ap.add_argument_group("serving (endpoints, deployment profile, CURVE keys; docs/security.md)")
    g.add_argument("--observation-bind", "--observation_bind", dest="observation_bind", default=None,
                   help=f"telemetry endpoint (default: the profile's, else {DEFAULT_OBSERVATION_BIND})")
    g.add_argument("--command-bind", "--command_bind", dest="command_bind", default=None,
                   help=f"command endpoint (default: the profile's, else {DEFAULT_COMMAND_BIND})")
    g.add_argument("--deploy", default=None, help="deployment profile: config/deploy/<name>.toml or a path (binds, keys, safety)")
    g.add_argument("--key-dir", default=None, help="folder with <server-key>.key_secret (CURVE on tcp)")
    g.add_argument("--server-key", default="robot", help="the server's key name in --key-dir (default: robot)")
    g.add_argument("--allow-dir", default=None, help="allow-list folder: one <client>.key per allowed client")
    g.add_argument("--client-key", default=None, help="key name of this process's own client in --key-dir (not with --server-only)")
    g.add_argument("--plain-telemetry", action="store_true", help="with keys: telemetry unencrypted (anyone can read, never command)")
    g.add_argument("--insecure-tcp", "--insecure_tcp", dest="insecure_tcp", action="store_true", help="allow a tcp command channel without CURVE keys (explicit opt-out)")


def _connectable(endpoint: str) -> str:
    return endpoint.replace("tcp://*", "tcp://127.0.0.1").replace("tcp://0.0.0.0", "tcp://127.0.0.1")


def server_and_client_configs(args: argparse.Namespace, safety: Any, *, own_client: bool) -> tuple[Any, Any]:
    """(HalServerConfig, HalClientConfig for a built-in client or None) from the flags above.

    ``safety``: the entry point's SafetyConfig, used unless ``--deploy`` brings its own.
    Raises ValueError with a message a user can act on.
    """
    from ..client import HalClientConfig
    from ..server import HalServerConfig
    from .curve import CurveClientKeys, CurveServerKeys
    from .profile import load_deployment

    dep = load_deployment(args.deploy) if args.deploy else None
    obs = args.observation_bind or (dep.observation_bind if dep else DEFAULT_OBSERVATION_BIND)
    cmd = args.command_bind or (dep.command_bind if dep else DEFAULT_COMMAND_BIND)
    if dep is not None:
        safety = dataclasses.replace(dep.safety)
    if (args.key_dir is None) != (args.allow_dir is None):
        raise ValueError("--key-dir and --allow-dir go together (the server's key pair and its allow-list)")
    server_keys = client_keys = None
    insecure = args.insecure_tcp or (dep.allow_insecure_tcp if dep else False)
    if args.key_dir is not None:
        encrypted = not args.plain_telemetry
        server_keys = CurveServerKeys.from_dir(args.key_dir, args.server_key, args.allow_dir, telemetry_encrypted=encrypted)
        if own_client and cmd.startswith("tcp://"):
            if args.client_key is None:
                raise ValueError("the built-in client needs a key on a CURVE server: pass --client-key NAME "
                                 "(an allowed key in --key-dir), or --server-only to serve outside clients only")
            client_keys = CurveClientKeys.from_dir(args.key_dir, args.client_key, args.server_key, telemetry_encrypted=encrypted)
    elif dep is not None and dep.uses_curve and any(e.startswith("tcp://") for e in (obs, cmd)):
        server_keys = dep.server_security()
        client_keys = dep.client_security() if own_client and cmd.startswith("tcp://") else None
    server_cfg = HalServerConfig(obs, cmd, safety=safety, security=server_keys, allow_insecure_tcp=insecure)
    client_cfg = HalClientConfig(_connectable(obs), _connectable(cmd), security=client_keys) if own_client else None
    return server_cfg, client_cfg


__all__ = ["add_server_flags", "server_and_client_configs"]
