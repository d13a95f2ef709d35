"""krabby-hal-demo: the HAL round trip on the loopback test double, with a live rate/latency line.

No simulator and no policy: a client thread answers every state with the default pose. Useful to
check an install, or a tcp link between two machines (``--observation_bind/--command_bind``).
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading
import time

import numpy as np

from ..backends.loopback_double import LoopbackTestDouble
from ..client import HalClient, HalClientConfig
from ..protocol import Kind
from ..robot_profile import load_robot_profile
from ..safety import SafetyConfig
from ..server import HalError, HalServer, HalServerConfig


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--duration", type=float, default=5.0, help="seconds to run")
    ap.add_argument("--robot", default="go2", help="robot profile name or path")
    ap.add_argument("--observation_bind", default="inproc://hal_observation")
    ap.add_argument("--command_bind", default="inproc://hal_commands")
    ap.add_argument("--insecure-tcp", action="store_true", help="allow an unauthenticated tcp command channel")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    profile = load_robot_profile(args.robot)
    cfg = HalServerConfig(args.observation_bind, args.command_bind, safety=SafetyConfig(arm_on_start=True),
                          allow_insecure_tcp=args.insecure_tcp)
    try:
        server = HalServer(LoopbackTestDouble(profile), cfg).start()
    except HalError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    client = HalClient(HalClientConfig(args.observation_bind.replace("*", "127.0.0.1"), args.command_bind.replace("*", "127.0.0.1")))
    client.connect()
    running = threading.Event()
    running.set()
    rtts: list[float] = []

    def answer() -> None:
        while running.is_set():
            s = client.wait_new(Kind.STATE, 0.2)
            if s is not None:
                ack = client.send_command(profile.default_pos_rad, s)
                if ack.accepted:
                    rtts.append(ack.rtt_s)

    t = threading.Thread(target=answer, daemon=True)
    t.start()
    srv = threading.Thread(target=server.run, args=(running, args.duration), daemon=True)
    srv.start()
    t0 = time.monotonic()
    while srv.is_alive():
        time.sleep(0.5)
        el = time.monotonic() - t0
        recent = np.array(rtts[-100:]) * 1e3 if rtts else np.array([np.nan])
        print(f"\rt={el:5.1f} s  commands={len(rtts):5d}  rate={len(rtts) / el:5.1f} Hz  "
              f"ack rtt p50={np.median(recent):.2f} ms  safety={server.supervisor.state.name:8s}", end="", flush=True)
    running.clear()
    t.join()
    print()
    client.close()
    server.close()
    return 0 if rtts else 1


if __name__ == "__main__":
    sys.exit(main())
