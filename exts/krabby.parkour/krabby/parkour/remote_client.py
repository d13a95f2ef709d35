"""krabby-parkour-client: the policy on this machine, the robot's HAL server on another.

    # on the robot (or a simulator):  krabby-hal-server-mujoco --server-only --deploy robot_tcp
    krabby-parkour-client --deploy robot_tcp --arm                        # endpoints and keys from the profile's [client]
    krabby-parkour-client --observation-endpoint tcp://10.0.0.5:5555 --command-endpoint tcp://10.0.0.5:5556 \\
        --key-dir ~/.config/krabby/keys --client-key policy --server-key robot --arm --duration 60

This is the inference client every runner embeds (observation builder, policy, action mapper,
ZeroMQ HAL client), run alone: it connects, optionally arms the server's safety supervisor (a
deployment profile starts it disarmed), sends a command for every state until ``--duration`` or
Ctrl-C, then stops sending; the server's watchdog then holds and damps the robot (that is its job
whenever a client goes away). CURVE keys: ``krabby-keys`` and exts/krabby.hal/docs/security.md.
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading
import time
from pathlib import Path
from typing import Any

PROG = "krabby-parkour-client"
log = logging.getLogger("krabby.parkour.remote_client")


def build_parser() -> argparse.ArgumentParser:
    from .cli import OneLineParser, add_config_flag, positive
    from .run_outputs import add_live_view_flags

    ap = OneLineParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_flag(ap)
    ap.add_argument("--checkpoint", help="policy: model_*.pt, an export directory or an ONNX directory (default: the bundled demo policy)")
    ap.add_argument("--device", default="cpu", help="torch device for the policy (default cpu)")
    ap.add_argument("--backend", choices=["torch", "onnx"], default=None,
                    help="inference runtime (default: onnx for an ONNX export, else torch)")
    ap.add_argument("--control-rate", "--control_rate", dest="control_rate", type=positive("Hz"), default=None,
                    help="Hz (default: the policy's trained rate, else 50)")
    ap.add_argument("--speed", type=float, default=0.5,
                    help="forward speed command (m/s) used while the server publishes no navigation command (default 0.5)")
    ap.add_argument("--duration", type=positive("seconds", allow_zero=True), default=0.0,
                    help="stop after this many seconds (default 0: until Ctrl-C)")
    ap.add_argument("--arm", action="store_true", help="arm the server's safety supervisor after connecting (a deployment starts disarmed)")
    ap.add_argument("--record", metavar="LOG", help="write the MCAP run log here (krabby-replay re-runs it)")
    ap.add_argument("--quiet", action="store_true", help="no status line")
    g = ap.add_argument_group("connecting (endpoints, deployment profile, CURVE keys; exts/krabby.hal/docs/security.md)")
    g.add_argument("--deploy", default=None, help="deployment profile (config/deploy/<name>.toml or a path): its [client] endpoints and keys")
    g.add_argument("--observation-endpoint", default=None, help="the server's telemetry endpoint, e.g. tcp://HOST:5555 (overrides --deploy)")
    g.add_argument("--command-endpoint", default=None, help="the server's command endpoint, e.g. tcp://HOST:5556 (overrides --deploy)")
    g.add_argument("--key-dir", default=None, help="folder with <client-key>.key_secret and the server's <server-key>.key")
    g.add_argument("--client-key", default=None, help="this client's key name in --key-dir (allowed on the server)")
    g.add_argument("--server-key", default="robot", help="the server's public key name in --key-dir (default robot)")
    g.add_argument("--plain-telemetry", action="store_true", help="the server sends telemetry unencrypted (its --plain-telemetry)")
    add_live_view_flags(ap)
    return ap


def client_config(args: argparse.Namespace) -> Any:
    """The HalClientConfig from the flags: explicit endpoints and keys over the profile's [client]."""
    from krabby.hal.client import HalClientConfig
    from krabby.hal.deploy.curve import CurveClientKeys
    from krabby.hal.deploy.profile import load_deployment

    from .cli import UsageError

    dep = load_deployment(args.deploy) if args.deploy else None
    obs = args.observation_endpoint or (dep.observation_endpoint if dep else None)
    cmd = args.command_endpoint or (dep.command_endpoint if dep else None)
    if not obs or not cmd:
        raise UsageError("say where the server is: --deploy PROFILE, or --observation-endpoint and --command-endpoint")
    if (args.key_dir is None) != (args.client_key is None):
        raise UsageError("--key-dir and --client-key go together (this client's key pair, allowed on the server)")
    if args.key_dir is not None:
        security = CurveClientKeys.from_dir(args.key_dir, args.client_key, args.server_key, telemetry_encrypted=not args.plain_telemetry)
    else:
        security = dep.client_security() if dep is not None and dep.uses_curve else None
    if security is None and cmd.startswith("tcp://"):
        log.warning("no CURVE keys: the server must run with --insecure-tcp to accept this client")
    return HalClientConfig(obs, cmd, client_name=dep.client_name if dep else PROG, security=security)


def run(args: argparse.Namespace) -> dict[str, Any]:
    from .episode import _ms, policy_backend_kind
    from .inference import InferenceOptions, ModelWeights, ParkourInferenceClient
    from .run_outputs import live_view_config
    from .sim2sim import resolve_checkpoint
    from .status_line import StatusLine

    checkpoint = resolve_checkpoint(args.checkpoint)
    hal_cfg = client_config(args)
    backend = policy_backend_kind(args, checkpoint)
    client = ParkourInferenceClient(
        hal_cfg, ModelWeights(str(checkpoint), backend=backend), control_rate=args.control_rate, device=args.device,
        options=InferenceOptions(default_forward_speed_m_s=args.speed, record_path=args.record, live_view=live_view_config(args)))
    stopped_by = "duration"
    try:
        client.initialize()  # loads the policy, handshakes (HandshakeError: nobody answered, or refused)
        print(f"{PROG}: connected to {hal_cfg.command_endpoint} (robot {client.hal.welcome.profile.name}), "
              f"{client.policy.kind} policy {checkpoint} on {backend}", file=sys.stderr)
        if args.arm:
            ack = client.hal.control("arm", timeout_s=1.0)
            if not ack.accepted:
                raise ConnectionError(f"the server refused to arm: {ack.reason.name}")
        running = threading.Event()
        running.set()
        client.start_thread(running)
        status = None if args.quiet else StatusLine(args.duration or None, "s")
        t0 = time.monotonic()
        try:
            while args.duration <= 0 or time.monotonic() - t0 < args.duration:
                time.sleep(0.5)
                m = client.metrics()
                if status is not None:
                    status.update(time.monotonic() - t0, f"steps={m['steps']}  compute={_ms(m['compute_ms_p50'])} ms  "
                                                         f"obs age={_ms(m['obs_age_ms_p50'])} ms  accepted={m['commands_accepted']}  "
                                                         f"refused={sum(m['commands_refused'].values())}")
        except KeyboardInterrupt:
            stopped_by = "Ctrl-C"
        if status is not None:
            status.close(time.monotonic() - t0)
        running.clear()
        client.stop()
        m = client.metrics()
        return {"checkpoint": str(checkpoint), "stopped_by": stopped_by, "seconds": time.monotonic() - t0, **m}
    finally:
        client.stop()


def main(argv: list[str] | None = None) -> int:
    from krabby.hal.client import HandshakeError
    from krabby.hal.deploy.profile import DeploymentError
    from krabby.parkour.policy import PolicyLoadError

    from .cli import USAGE_ERROR, UsageError, parse_with_config
    from .foxglove_log import LiveViewError

    args = parse_with_config(build_parser(), sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        s = run(args)
    except (UsageError, HandshakeError, ConnectionError, DeploymentError, PolicyLoadError, LiveViewError,
            ValueError, FileNotFoundError) as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return USAGE_ERROR
    refused = sum(s["commands_refused"].values())
    print(f"{PROG}: stopped ({s['stopped_by']}) after {s['seconds']:.1f} s: {s['steps']} steps, "
          f"{s['commands_accepted']} commands accepted, {refused} refused {dict(s['commands_refused']) if refused else ''}".rstrip())
    if args.record:
        print(f"log:     {args.record}  (check it with: krabby-replay {Path(args.record)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
