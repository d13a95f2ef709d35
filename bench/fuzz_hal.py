"""Long fuzzing run of the HAL: the server's command socket and the client's telemetry socket.

    python bench/fuzz_hal.py --minutes 10 [--seed 1] [--transport inproc|tcp] [--out fuzz_failures.json]

Uses the same structure-aware mutators and invariants as tests/test_fuzz_hal.py (krabby/hal/testing/),
driven by a seeded random.Random so a run can be repeated. Time is split between the two targets
(two thirds commands, one third telemetry). Prints progress every ~10 s and a summary: messages and
frames tried, crashes (invariant violations, missing replies, dead threads), accepted commands,
replies by reason, and memory growth. Exit status 1 if anything crashed; the failing frames (hex) go to --out.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import random
import sys
import time

import zmq

from krabby.hal.testing.fuzz_mutations import rss_bytes
from krabby.hal.testing.fuzz_targets import CommandFuzzTarget, TelemetryFuzzTarget, run_for
from krabby.hal.robot_profile import load_robot_profile
from loopback_ports import tcp_endpoints


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=1.0, help="total fuzzing time (default 1)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--transport", choices=("inproc", "tcp"), default="inproc", help="command socket transport")
    ap.add_argument("--out", default="fuzz_failures.json", help="where failing frames are written if any")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.CRITICAL)  # refusals are the point; keep the console for results

    profile = load_robot_profile("go2")
    ctx = zmq.Context()
    total_s = args.minutes * 60.0
    rss0 = rss_bytes()
    t_start = time.monotonic()
    results = {}
    for name, share in (("command", 2 / 3), ("telemetry", 1 / 3)):
        rng = random.Random(f"{args.seed}-{name}")
        target = CommandFuzzTarget(profile, ctx, endpoints=None if args.transport == "inproc" else tcp_endpoints()) if name == "command" \
            else TelemetryFuzzTarget(profile, ctx)
        last = [time.monotonic()]

        def progress(stats, name=name, last=last, t0=time.monotonic()):
            if time.monotonic() - last[0] >= 10.0:
                last[0] = time.monotonic()
                print(f"  {name:9s} {time.monotonic() - t0:6.0f} s  {stats.sent:9d} messages  {stats.crashes} crashes  "
                      f"rss {rss_bytes() / 2**20:.0f} MiB", flush=True)

        t0 = time.monotonic()
        stats = run_for(target, total_s * share, rng, progress=progress)
        if name == "command" and not target.still_serves_a_fresh_client():
            stats.fail("a fresh client's valid command was not accepted after the run")
        target.close()
        results[name] = (stats, time.monotonic() - t0)

    elapsed = time.monotonic() - t_start
    crashes = sum(s.crashes for s, _ in results.values())
    print(f"\nHAL fuzz: {elapsed / 60:.1f} min, seed {args.seed}, command transport {args.transport}, "
          f"Python {platform.python_version()}, pyzmq {zmq.__version__} / libzmq {zmq.zmq_version()}")
    print("| target | messages tried | frames tried | messages/s | crashes | accepted | distinct replies |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, (s, secs) in results.items():
        accepted = s.accepted if name == "command" else "-"
        reasons = len(s.reasons) if name == "command" else "-"
        print(f"| {name} socket | {s.sent} | {s.frames} | {s.sent / secs:.0f} | {s.crashes} | {accepted} | {reasons} |")
    cmd_stats = results["command"][0]
    print("command replies by reason:", ", ".join(f"{k} {v}" for k, v in cmd_stats.reasons.most_common()))
    print(f"memory: RSS {rss0 / 2**20:.0f} -> {rss_bytes() / 2**20:.0f} MiB")
    print(f"frames tried {sum(s.frames for s, _ in results.values())} "
          f"(in {sum(s.sent for s, _ in results.values())} messages), crashes {crashes}")
    if crashes:
        with open(args.out, "w") as f:
            json.dump({n: s.failures for n, (s, _) in results.items()}, f, indent=1)
        print(f"failing frames written to {args.out}")
    ctx.destroy(0)
    return 1 if crashes else 0


if __name__ == "__main__":
    sys.exit(main())
