"""What a hostile or careless peer costs the HAL server: subscription flood, handshake churn, pipelining.

    python bench/hal_abuse.py [--subscriptions 200000] [--churn 5000] [--pipelined 3000]

The server (loopback test double, insecure tcp opt-out, plain telemetry: the cheapest case for an
attacker) runs at the Go2's 50 Hz on 127.0.0.1 while a live client commands it the way the inference
loop does (wait for a new state, send). Then, one at a time: a flooder *process* sends distinct
subscriptions (none a telemetry topic); one process opens connections that HELLO and close; a raw
DEALER sends commands back to back and reads replies only when it must wait. Prints a markdown table
(docs/security.md, audit protocol_security.md R2, R5, D5 for the numbers before the hardening).
"""

from __future__ import annotations

import argparse
import logging
import platform
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter

import numpy as np
import zmq

from krabby.hal import clock
from krabby.hal.backends.loopback_double import LoopbackTestDouble
from krabby.hal.client import HalClient, HalClientConfig
from krabby.hal.protocol import Kind, decode, encode, hello_payload
from krabby.hal.robot_profile import load_robot_profile
from krabby.hal.safety import SafetyConfig
from krabby.hal.server import HalServer, HalServerConfig
from krabby.hal.testing.fuzz_mutations import rss_bytes
from loopback_ports import tcp_endpoints

FLOODER = textwrap.dedent(
    """
    import random, sys, zmq
    s = zmq.Context().socket(zmq.XSUB)
    s.linger, s.sndhwm = 0, 0
    s.connect(sys.argv[1])
    rng = random.Random(1)
    for _ in range(int(sys.argv[2])):
        s.send(b"\\x01" + rng.randbytes(6))
    import time; time.sleep(1.0)
    """
)


class Rig:
    """Server at 50 Hz (tick durations and periods recorded) plus a live policy-style client."""

    def __init__(self, ctx: zmq.Context):
        self.profile = load_robot_profile("go2")
        self.obs, self.cmd = tcp_endpoints()
        cfg = HalServerConfig(self.obs, self.cmd, allow_insecure_tcp=True, safety=SafetyConfig(arm_on_start=True))
        self.server = HalServer(LoopbackTestDouble(self.profile), cfg, context=ctx).start()
        self.starts: list[float] = []
        self.durations: list[float] = []
        self.reasons: Counter = Counter()
        self.client = HalClient(HalClientConfig(self.obs, self.cmd, ack_timeout_s=0.2), context=ctx)
        self.client.connect()
        self.running = threading.Event()
        self.running.set()
        self.threads = [threading.Thread(target=f, daemon=True) for f in (self._tick, self._policy)]
        for t in self.threads:
            t.start()

    def _tick(self) -> None:
        nxt = time.monotonic()
        while self.running.is_set():
            t0 = time.perf_counter()
            self.server.tick()
            self.starts.append(t0)
            self.durations.append(time.perf_counter() - t0)
            nxt += self.profile.control_dt_s
            time.sleep(max(0.0, nxt - time.monotonic()))

    def _policy(self) -> None:
        while self.running.is_set():
            s = self.client.wait_new(Kind.STATE, 0.1)
            if s is not None:
                self.reasons[self.client.send_command(self.profile.default_pos_rad, s).reason.name] += 1

    def window(self):
        """Reset the per-attack records; returns the state to diff against."""
        self.starts.clear()
        self.durations.clear()
        return rss_bytes(), Counter(self.reasons), self.server.supervisor.watchdog_trips

    def row(self, name: str, attempts: str, before) -> str:
        rss0, reasons0, trips0 = before
        time.sleep(0.5)
        gaps = np.diff(self.starts) * 1e3 if len(self.starts) > 1 else np.array([np.nan])
        dur = np.array(self.durations) * 1e3 if self.durations else np.array([np.nan])
        got = Counter(self.reasons)
        got.subtract(reasons0)
        ok = got["OK"]
        total = sum(v for v in got.values() if v > 0)
        return (f"| {name} | {attempts} | {rss0 / 2**20:.1f} → {rss_bytes() / 2**20:.1f} | {dur.max():.1f} | {gaps.max():.1f} | "
                f"{self.server.supervisor.watchdog_trips - trips0} | {ok}/{total} ({', '.join(f'{k} {v}' for k, v in got.items() if v > 0 and k != 'OK') or '-'}) |")

    def close(self) -> None:
        self.running.clear()
        for t in self.threads:
            t.join(2.0)
        self.client.close()
        self.server.close()


def flood(rig: Rig, n: int) -> str:
    before = rig.window()
    subprocess.run([sys.executable, "-c", FLOODER, rig.obs, str(n)], timeout=120, check=True)
    s = rig.server.stats
    return rig.row("subscription flood", f"{n} subscriptions; {s['subscribers_cut']} cuts", before)


def churn(rig: Rig, ctx: zmq.Context, n: int) -> str:
    before = rig.window()
    for i in range(n):
        d = ctx.socket(zmq.DEALER)
        d.linger = 0
        d.connect(rig.cmd)
        d.send_multipart(encode(Kind.HELLO, session_id=0, seq=1, stamp_ns=clock.now_ns(), payload=hello_payload(f"churn{i}")))
        d.poll(50)
        d.close(0)
    limited = rig.server.stats["refused_RATE_LIMITED"]
    return rig.row("handshake churn", f"{n} HELLO-and-close; {limited} rate-limited", before)


def pipelined(rig: Rig, ctx: zmq.Context, n: int) -> str:
    before = rig.window()
    d = ctx.socket(zmq.DEALER)
    d.linger = 0
    d.rcvhwm = 10
    d.connect(rig.cmd)
    d.send_multipart(encode(Kind.HELLO, session_id=0, seq=1, stamp_ns=clock.now_ns(), payload=hello_payload("pipeline")))
    d.poll(2000)
    d.recv_multipart()
    replies, seq = Counter(), 1
    targets = np.asarray(rig.profile.default_pos_rad, dtype=np.float32)
    while seq <= n:
        try:  # refused NOT_COMMANDER while the live client commands: a reply all the same
            d.send_multipart(encode(Kind.COMMAND, session_id=rig.server.session_id, seq=seq + 1, stamp_ns=clock.now_ns(),
                                    payload=targets), zmq.NOBLOCK)
            seq += 1
            continue
        except zmq.Again:
            pass
        while d.poll(5):
            replies[decode(d.recv_multipart()).header.seq] += 1
    while len(replies) < n and d.poll(1000):
        replies[decode(d.recv_multipart()).header.seq] += 1
    d.close(0)
    return rig.row("pipelining", f"{n} requests; {len(replies)} replies, {rig.server.stats['replies_dropped']} dropped", before)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--subscriptions", type=int, default=200_000)
    ap.add_argument("--churn", type=int, default=5000)
    ap.add_argument("--pipelined", type=int, default=3000)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    ctx = zmq.Context()
    rig = Rig(ctx)
    time.sleep(1.0)
    try:
        rows = [flood(rig, args.subscriptions), churn(rig, ctx, args.churn), pipelined(rig, ctx, args.pipelined)]
    finally:
        rig.close()
        ctx.destroy(0)
    print(f"HAL server under abuse, {platform.python_version()}, libzmq {zmq.zmq_version()}, {time.strftime('%Y-%m-%d')}:\n")
    print("| attack | attempts | server RSS before → after (MiB) | longest tick (ms) | longest tick period (ms) | watchdog trips | live client OK / commands |")
    print("|---|---|---|---:|---:|---:|---|")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
