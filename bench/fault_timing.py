"""Client death to safe robot: how long after a SIGKILL of the policy process the HAL holds, then damps.

    python bench/fault_timing.py [--trials 10] [--configs 0.1:0.5 0.2:0.5] [--transports curve insecure]

For each (watchdog_s, hold_s) and transport, the HAL server runs the loopback test double at the Go2's
50 Hz control rate; a client *process* (python -m krabby.hal.testing.faults client) commands it over tcp on
127.0.0.1 until it is killed with SIGKILL. Times are the supervisor's own transition stamps minus the
kill time (same machine, same clock). Prints a markdown table; docs/security.md holds the last one.
"""

from __future__ import annotations

import argparse
import logging
import platform
import statistics
import tempfile
import time
from pathlib import Path

import zmq

from krabby.hal import clock
from krabby.hal.backends.loopback_double import LoopbackTestDouble
from krabby.hal.testing.faults import kill_to_safe, spawn_client, wait_ready
from krabby.hal.robot_profile import load_robot_profile
from krabby.hal.safety import SafetyConfig, SafetyState
from krabby.hal.deploy.curve import CurveServerKeys
from krabby.hal.deploy.keys import add_to_allow_list, generate_keypair
from krabby.hal.server import HalServer, HalServerConfig
from loopback_ports import tcp_endpoints

REPO = Path(__file__).resolve().parents[1]


def run_config(profile, ctx, key_dir: Path | None, allow_dir: Path | None, watchdog_s: float, hold_s: float, trials: int):
    import threading

    obs, cmd = tcp_endpoints()
    sec = CurveServerKeys.from_dir(key_dir, "robot", allow_dir) if key_dir else None
    cfg = HalServerConfig(obs, cmd, security=sec, allow_insecure_tcp=sec is None,
                          safety=SafetyConfig(watchdog_s=watchdog_s, hold_s=hold_s, arm_on_start=True))
    server = HalServer(LoopbackTestDouble(profile), cfg, context=ctx).start()
    running = threading.Event()
    running.set()
    ticker = threading.Thread(target=server.run, args=(running,), daemon=True)
    ticker.start()
    out = []
    try:
        for _ in range(trials):
            server.supervisor.arm(clock.now_ns())
            proc = spawn_client(obs, cmd, key_dir=str(key_dir) if key_dir else None, cwd=str(REPO))
            try:
                if not wait_ready(proc):
                    raise RuntimeError(f"client did not start: {proc.stderr.read().decode()[-500:]}")
                time.sleep(0.3)
                assert server.supervisor.state == SafetyState.ACTIVE
                out.append(kill_to_safe(server, proc, timeout_s=hold_s + watchdog_s + 5))
            finally:
                proc.kill()
                proc.wait(5)
    finally:
        running.clear()
        ticker.join(2)
        server.close()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=10)
    ap.add_argument("--configs", nargs="+", default=["0.1:0.5", "0.2:0.5"], help="watchdog_s:hold_s pairs")
    ap.add_argument("--transports", nargs="+", default=["curve", "insecure"], choices=["curve", "insecure"])
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    profile = load_robot_profile("go2")
    ctx = zmq.Context()
    tmp = Path(tempfile.mkdtemp(prefix="krabby-fault-timing-"))
    generate_keypair(tmp / "keys", "robot")
    generate_keypair(tmp / "keys", "policy")
    add_to_allow_list(tmp / "keys" / "policy.key", tmp / "allowed")

    print(f"client death -> HOLD -> DAMP, {args.trials} SIGKILLs per row; loopback test double at "
          f"{profile.control_rate_hz:.0f} Hz (tick period {1e3 / profile.control_rate_hz:.0f} ms); tcp 127.0.0.1; "
          f"{platform.node()} Python {platform.python_version()} libzmq {zmq.zmq_version()}")
    print("| transport | watchdog_s | hold_s | kill→HOLD median / max (ms) | last command→HOLD median / max (ms) "
          "| kill→DAMP median / max (ms) | bound kill→HOLD ≤ watchdog + period (ms) |")
    print("|---|---:|---:|---|---|---|---:|")
    for transport in args.transports:
        for pair in args.configs:
            watchdog_s, hold_s = (float(x) for x in pair.split(":"))
            keys = (tmp / "keys", tmp / "allowed") if transport == "curve" else (None, None)
            res = run_config(profile, ctx, *keys, watchdog_s, hold_s, args.trials)
            ms = lambda xs: f"{statistics.median(xs) * 1e3:.0f} / {max(xs) * 1e3:.0f}"  # noqa: E731
            bound = (watchdog_s + 1.0 / profile.control_rate_hz) * 1e3
            print(f"| {transport} | {watchdog_s:g} | {hold_s:g} | {ms([r.kill_to_hold_s for r in res])} | "
                  f"{ms([r.last_command_to_hold_s for r in res])} | {ms([r.kill_to_damp_s for r in res])} | {bound:.0f} |",
                  flush=True)
    ctx.destroy(0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
