"""How long close() takes: the HAL server's command channel and a connected HalClient, idle.

    python bench/hal_close.py [--n 20] [--transports inproc tcp curve]

Each trial starts a HalServer on the loopback test double, connects a HalClient, lets one state through,
then times ``HalClient.close()`` and the server's ``CommandChannel.close()`` (its ROUTER thread), then
the rest of ``HalServer.close()`` (the publisher; for tcp the wait until the ports are free; for curve,
tcp with CURVE keys, also the ZAP authenticator thread). A thread that notices close() only at its next
poll timeout adds up to that timeout. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import logging
import platform
import random
import statistics
import tempfile
import time
from pathlib import Path

import zmq

from krabby.hal.backends.loopback_double import LoopbackTestDouble
from krabby.hal.client import HalClient, HalClientConfig
from krabby.hal.deploy.curve import CurveClientKeys, CurveServerKeys
from krabby.hal.deploy.keys import add_to_allow_list, generate_keypair
from krabby.hal.protocol import Kind
from krabby.hal.robot_profile import load_robot_profile
from krabby.hal.safety import SafetyConfig
from krabby.hal.server import HalServer, HalServerConfig

from hal_roundtrip import endpoints  # bench/ is the script's folder


def curve_keys(folder: Path) -> Path:
    """robot (the server) and policy (the allowed client) under ``folder``, as krabby-keys writes them."""
    for name in ("robot", "policy"):
        generate_keypair(folder / "keys", name)
    add_to_allow_list(folder / "keys" / "policy.key", folder / "allowed")
    return folder


def trial(ctx: zmq.Context, profile, transport: str, i: int, keys: Path) -> tuple[float, float, float]:
    """(client close, command channel close, rest of server close) in seconds."""
    obs, cmd = endpoints("tcp" if transport == "curve" else transport, f"close-{i}")
    server_keys = client_keys = None
    if transport == "curve":
        server_keys = CurveServerKeys.from_dir(keys / "keys", "robot", keys / "allowed")
        client_keys = CurveClientKeys.from_dir(keys / "keys", "policy", "robot")
    cfg = HalServerConfig(obs, cmd, allow_insecure_tcp=True, security=server_keys, safety=SafetyConfig(arm_on_start=True))
    server = HalServer(LoopbackTestDouble(profile), cfg, context=ctx).start()
    client = HalClient(HalClientConfig(obs, cmd, security=client_keys), context=ctx)
    client.connect()
    deadline = time.monotonic() + 5.0
    while client.wait_new(Kind.STATE, 0.05) is None and time.monotonic() < deadline:
        server.tick()
    time.sleep(random.uniform(0.03, 0.06))  # idle, at a random phase of any poll timeout
    t0 = time.perf_counter()
    client.close()
    t1 = time.perf_counter()
    time.sleep(random.uniform(0.03, 0.06))
    t1b = time.perf_counter()
    server._commands.close()
    t2 = time.perf_counter()
    server.close()
    t3 = time.perf_counter()
    return t1 - t0, t2 - t1b, t3 - t2


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--transports", nargs="+", default=["inproc", "tcp", "curve"], choices=["inproc", "tcp", "curve"])
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)  # not the INSECURE warning of each tcp server
    profile = load_robot_profile("go2")
    ctx = zmq.Context()
    tmp = tempfile.TemporaryDirectory(prefix="krabby-bench-close-")
    keys = curve_keys(Path(tmp.name))
    print(f"close() latency, {args.n} trials per row, idle; Python {platform.python_version()}, "
          f"pyzmq {zmq.__version__} / libzmq {zmq.zmq_version()}")
    print("| transport | what | median (ms) | max (ms) |")
    print("|---|---|---:|---:|")
    for transport in args.transports:
        rows = [trial(ctx, profile, transport, i, keys) for i in range(args.n)]
        for k, what in enumerate(("HalClient.close()", "command channel close()", "rest of HalServer.close()")):
            ms = [r[k] * 1e3 for r in rows]
            print(f"| {transport} | {what} | {statistics.median(ms):.2f} | {max(ms):.2f} |")
    ctx.destroy(linger=0)
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
