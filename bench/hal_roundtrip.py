"""HAL round-trip benchmark: state published -> client has it -> command sent -> ack received.

Prints p50 / p99 / p99.9 / max in microseconds for the HAL (HalServer + HalClient on the loopback
test double) and, in the same run, for bare pyzmq sockets with the same pattern and message sizes
(PUB/SUB for state, DEALER/ROUTER with a replying thread for command and ack): the floor.

    python bench/hal_roundtrip.py [--n 3000] [--transports inproc tcp]
"""

from __future__ import annotations

import argparse
import logging
import platform
import threading
import time

import numpy as np
import zmq

from krabby.hal import clock
from krabby.hal.backends.loopback_double import LoopbackTestDouble
from krabby.hal.client import HalClient, HalClientConfig
from krabby.hal.protocol import Ack, Kind, StateLayout, decode, encode
from krabby.hal.robot_profile import load_robot_profile
from krabby.hal.safety import SafetyConfig
from krabby.hal.server import HalServer, HalServerConfig
from krabby.hal.types import SensorFrame
from loopback_ports import tcp_endpoints

CONTROL_PERIOD_S = 0.002  # faster than 50 Hz to keep the run short; one round trip in flight at a time


def endpoints(transport: str, tag: str) -> tuple[str, str]:
    if transport == "inproc":
        return f"inproc://bench-obs-{tag}", f"inproc://bench-cmd-{tag}"
    return tcp_endpoints()


def bench_hal(transport: str, n: int) -> np.ndarray:
    profile = load_robot_profile("go2")
    ctx = zmq.Context()
    obs, cmd = endpoints(transport, "hal")
    safety = SafetyConfig(arm_on_start=True, watchdog_s=10.0)
    backend = LoopbackTestDouble(profile)
    server = HalServer(backend, HalServerConfig(obs, cmd, safety=safety, allow_insecure_tcp=True), context=ctx).start()
    client = HalClient(HalClientConfig(obs, cmd, ack_timeout_s=1.0), context=ctx)
    client.connect()
    published: dict[int, int] = {}
    out = np.zeros(n)
    done = threading.Event()
    targets = profile.default_pos_rad.astype(np.float32)

    def consumer() -> None:
        i = -200  # warm-up
        while i < n:
            s = client.wait_new(Kind.STATE, 1.0)
            if s is None:
                continue
            ack = client.send_command(targets, s)
            t = time.perf_counter_ns()
            if ack.accepted and i >= 0:
                out[i] = (t - published[s.seq]) / 1e3
            i += 1
        done.set()

    t = threading.Thread(target=consumer, daemon=True)
    t.start()
    time.sleep(0.3)  # tcp subscription joins
    while not done.is_set():
        frame = SensorFrame(backend.read().state)  # state only, the same messages as the floor
        published[server._seq[Kind.STATE]] = time.perf_counter_ns()
        server.publish(frame)
        server.backend.apply(server.supervisor.tick(clock.now_ns()))
        time.sleep(CONTROL_PERIOD_S)
    t.join()
    client.close()
    server.close()
    ctx.destroy(0)
    return out


def bench_bare(transport: str, n: int) -> np.ndarray:
    """The floor: same frames and sockets, no HAL logic (no validation, no supervisor, no buffers)."""
    profile = load_robot_profile("go2")
    layout = StateLayout(profile.num_joints, profile.num_feet)
    ctx = zmq.Context()
    obs, cmd = endpoints(transport, "bare")
    pub = ctx.socket(zmq.PUB)
    pub.bind(obs)
    stop = threading.Event()

    def router_thread() -> None:
        r = ctx.socket(zmq.ROUTER)
        r.bind(cmd)
        ack = Ack(0, 0, 0).pack()
        while not stop.is_set():
            if r.poll(20):
                ident, topic, header, payload = r.recv_multipart()
                r.send_multipart([ident] + encode(Kind.ACK, session_id=1, seq=0, stamp_ns=0, payload=ack))
        r.close(0)

    rt = threading.Thread(target=router_thread, daemon=True)
    rt.start()
    time.sleep(0.1)
    out = np.zeros(n)
    published: dict[int, int] = {}
    done = threading.Event()
    state = np.zeros(layout.size, np.float32)
    cmd_payload = np.zeros(profile.num_joints, np.float32)

    def consumer() -> None:
        sub = ctx.socket(zmq.SUB)
        sub.subscribe(b"state")
        sub.connect(obs)
        dealer = ctx.socket(zmq.DEALER)
        dealer.connect(cmd)
        i = -200
        while i < n:
            if not sub.poll(1000):
                continue
            msg = decode(sub.recv_multipart())
            dealer.send_multipart(encode(Kind.COMMAND, session_id=1, seq=1, stamp_ns=0, payload=cmd_payload))
            dealer.recv_multipart()
            t = time.perf_counter_ns()
            if i >= 0:
                out[i] = (t - published[msg.header.seq]) / 1e3
            i += 1
        sub.close(0)
        dealer.close(0)
        done.set()

    t = threading.Thread(target=consumer, daemon=True)
    t.start()
    time.sleep(0.3)
    seq = 0
    while not done.is_set():
        published[seq] = time.perf_counter_ns()
        pub.send_multipart(encode(Kind.STATE, session_id=1, seq=seq, stamp_ns=0, payload=state))
        seq += 1
        time.sleep(CONTROL_PERIOD_S)
    t.join()
    stop.set()
    rt.join()
    pub.close(0)
    ctx.destroy(0)
    return out


def row(name: str, us: np.ndarray) -> str:
    p50, p99, p999 = np.percentile(us, [50, 99, 99.9])
    return f"| {name} | {p50:.0f} | {p99:.0f} | {p999:.0f} | {us.max():.0f} |"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3, help="independent runs per row; the table shows each")
    ap.add_argument("--n", type=int, default=3000, help="round trips per row (after 200 warm-up)")
    ap.add_argument("--transports", nargs="+", default=["inproc", "tcp"])
    args = ap.parse_args()
    logging.basicConfig(level=logging.ERROR)
    print(f"machine: {platform.node()} {platform.machine()} {platform.processor() or ''} python {platform.python_version()} "
          f"pyzmq {zmq.__version__} libzmq {zmq.zmq_version()}")
    print("| round trip (µs) | p50 | p99 | p99.9 | max |")
    print("|---|---:|---:|---:|---:|")
    ratios: dict[str, list[float]] = {t: [] for t in args.transports}
    for r in range(1, args.rounds + 1):  # rounds interleave, so host noise hits floor and HAL alike
        for transport in args.transports:
            bare = bench_bare(transport, args.n)
            hal = bench_hal(transport, args.n)
            ratios[transport].append(np.percentile(hal, 99) / np.percentile(bare, 99))
            print(row(f"round {r}: bare pyzmq, {transport}", bare))
            print(row(f"round {r}: Krabby HAL, {transport}", hal))
    for transport, rs in ratios.items():
        print(f"| HAL p99 / bare p99, {transport}: " + ", ".join(f"{x:.2f}x" for x in rs)
              + f" (median {np.median(rs):.2f}x) | | | | |")


if __name__ == "__main__":
    main()
