"""krabby-hal-demo: the HAL round trip on the loopback test double, with a live rate/latency line.

No simulator and no policy: a client thread answers every state with the default pose. Useful to
check an install, or a tcp link between two machines (``--observation-bind/--command-bind``, CURVE
keys with ``--deploy`` or ``--key-dir``). ``--server-only`` runs no client of its own: the loopback
robot then waits for an outside client (``docs/minimal_client.py``, a policy on another machine).
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading
import time

import numpy as np

from ..backends.loopback_double import LoopbackTestDouble
from ..client import HalClient, HandshakeError
from ..deploy.server_flags import add_server_flags, server_and_client_configs
from ..protocol import Kind
from ..robot_profile import load_robot_profile
from ..safety import SafetyConfig
from ..server import HalError, HalServer


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--duration", type=float, default=5.0, help="seconds to run")
    ap.add_argument("--robot", default="go2", help="robot profile name or path")
    ap.add_argument("--server-only", action="store_true", help="no built-in client: serve outside clients only")
    add_server_flags(ap)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    profile = load_robot_profile(args.robot)
    try:
        cfg, client_cfg = server_and_client_configs(args, SafetyConfig(arm_on_start=True), own_client=not args.server_only)
        server = HalServer(LoopbackTestDouble(profile), cfg).start()
    except (HalError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    running = threading.Event()
    running.set()
    rtts: list[float] = []
    client = None
    if client_cfg is not None:
        client = HalClient(client_cfg)
        try:
            client.connect()
        except HandshakeError as e:
            print(f"error: {e}", file=sys.stderr)
            server.close()
            return 2

        def answer() -> None:
            while running.is_set():
                s = client.wait_new(Kind.STATE, 0.2)
                if s is not None:
                    ack = client.send_command(profile.default_pos_rad, s)
                    if ack.accepted:
                        rtts.append(ack.rtt_s)

        t = threading.Thread(target=answer, daemon=True)
        t.start()
    else:
        print(f"serving: telemetry {cfg.observation_bind}, commands {cfg.command_bind}, session {server.session_id:08x}", flush=True)
    srv = threading.Thread(target=server.run, args=(running, args.duration), daemon=True)
    srv.start()
    t0 = time.monotonic()
    live = sys.stdout.isatty()  # a terminal gets one live line; a log or CI one line every 5 s
    next_line = t0 + 5.0
    while srv.is_alive():
        time.sleep(0.5)
        el = time.monotonic() - t0
        accepted = server.stats["commands_accepted"]
        recent = np.array(rtts[-100:]) * 1e3 if rtts else np.array([np.nan])
        line = (f"t={el:5.1f} s  commands={accepted:5d}  rate={accepted / el:5.1f} Hz  "
                f"ack rtt p50={np.median(recent):.2f} ms  safety={server.supervisor.state.name:8s}")
        if live:
            print(f"\r{line}", end="", flush=True)
        elif time.monotonic() >= next_line:
            next_line += 5.0
            print(line, flush=True)
    running.clear()
    if client is not None:
        t.join()
    if live:
        print()
    if client is not None:
        client.close()
    server.close()
    accepted = server.stats["commands_accepted"]
    if args.server_only:
        print(f"served {accepted} commands from outside clients")
        return 0
    if accepted:
        print(f"HAL round trip OK: {accepted} commands accepted, ack rtt p50 {np.median(np.array(rtts) * 1e3):.2f} ms")
        return 0
    print(f"HAL round trip FAILED: no command accepted (safety {server.supervisor.state.name}, "
          f"refusals {server.supervisor.snapshot()['refusals']})")
    return 1


if __name__ == "__main__":
    sys.exit(main())
