"""Does logging or the live view slow the control loop? Loop period jitter with and without them.

    python bench/live_view_jitter.py [--seconds 10] [--rounds 2]

Runs the MuJoCo sim-to-sim loop in real time (50 Hz) three ways, interleaved over ``--rounds``:
no log; ``--record`` (the MCAP with every Foxglove channel); ``--record --live-view`` with a
Foxglove-protocol client on 127.0.0.1 subscribed to every channel. Reports the policy client's
period between control steps (p50, p99 and the spread p99 - p50) and the simulator loop's own
work per step (p50, p99; it includes waiting for the policy's command). Then the cost of the
publishing itself: one control step's telemetry channels (``TelemetryChannels.control_step``,
called after the command is sent) and one step of simulator truth (``WorldChannels.update``),
with no sink, a file, and a file plus a subscribed live client. Prints markdown tables.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import threading
from pathlib import Path

from krabby.parkour.sim2sim import main as sim2sim
from loopback_ports import free_port


def subscriber(port: int, stop: threading.Event, counts: dict) -> None:
    """A Foxglove WebSocket client that subscribes to every advertised channel and drains messages."""
    from websockets.sync.client import connect

    for _ in range(200):
        try:
            ws = connect(f"ws://127.0.0.1:{port}", subprotocols=["foxglove.sdk.v1"], open_timeout=1)
            break
        except OSError:
            stop.wait(0.05)
    else:
        return
    with ws:
        sub = 0
        while not stop.is_set():
            try:
                msg = ws.recv(timeout=0.5)
            except TimeoutError:
                continue
            except Exception:  # noqa: BLE001 - the server closed at the end of the run
                return
            if isinstance(msg, str):
                m = json.loads(msg)
                if m.get("op") == "advertise":
                    subs = [{"id": (sub := sub + 1), "channelId": c["id"]} for c in m["channels"]]
                    ws.send(json.dumps({"op": "subscribe", "subscriptions": subs}))
            else:
                counts["messages"] = counts.get("messages", 0) + 1
                counts["bytes"] = counts.get("bytes", 0) + len(msg)


def one(mode: str, seconds: float, tmp: Path) -> dict:
    args = ["--duration", str(seconds), "--quiet", "--summary", str(tmp / f"{mode}.json")]
    stop, counts, t = threading.Event(), {}, None
    if mode != "none":
        args += ["--record", str(tmp / f"{mode}.mcap")]
    if mode == "live":
        port = free_port()
        args += ["--live-view", "--live-view-port", str(port)]
        t = threading.Thread(target=subscriber, args=(port, stop, counts), daemon=True)
        t.start()
    assert sim2sim(args) == 0
    stop.set()
    if t is not None:
        t.join(5)
    s = json.loads((tmp / f"{mode}.json").read_text())
    s["live_messages"] = counts.get("messages", 0)
    return s


def publish_cost(tmp: Path, n: int = 2000) -> list[tuple[str, float, float]]:
    """Microseconds per step of telemetry + world publishing (p50, p99), per sink set."""
    import time
    from types import SimpleNamespace

    import numpy as np

    from krabby.hal.backends.mujoco_backend import MujocoBackend, MujocoBackendConfig
    from krabby.parkour.foxglove_log import FoxgloveSession, LiveViewConfig, TelemetryChannels
    from krabby.parkour.foxglove_world import WorldChannels

    backend = MujocoBackend(MujocoBackendConfig(terrain="hurdles", enable_height_scan=True))
    backend.connect()
    frame = backend.read()
    sample = lambda v, seq: SimpleNamespace(value=v, seq=seq, stamp_ns=v.stamp_ns)  # noqa: E731
    status = SimpleNamespace(value={"safety": {"state": "ACTIVE"}, "episode": 0}, seq=0, stamp_ns=0)
    out = []
    for name in ("no sink", "file", "file + live client"):
        session = FoxgloveSession(tmp / f"{name[:4]}.mcap" if name != "no sink" else None,
                                  LiveViewConfig(port=free_port()) if "live" in name else None)
        stop, counts = threading.Event(), {}
        if "live" in name:
            threading.Thread(target=subscriber, args=(session.server.port, stop, counts), daemon=True).start()
        tele, world = TelemetryChannels(session, backend.profile), WorldChannels(session, backend.model)
        time.sleep(0.5)  # the client subscribes
        costs = []
        for i in range(n):
            t0 = time.perf_counter()
            tele.control_step(time.time_ns(), sample(frame.state, i), backend.profile.default_pos_rad, None,
                              sample(frame.height_scan, i // 5), None, status, 1.0, 1.0, 20.0)
            world.update(backend.data, {"sim_time_s": i * 0.02, "episode": 0, "falls": 0, "goals_reached": 0, "distance_m": 0.0,
                                        "speed_cmd_m_s": 0.5, "speed_m_s": 0.5, "base_pos_w_m": [0.0, 0.0, 0.3]})
            costs.append((time.perf_counter() - t0) * 1e6)
        stop.set()
        session.close()
        out.append((name, float(np.percentile(costs, 50)), float(np.percentile(costs, 99))))
    backend.disconnect()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    rows: dict[str, list[dict]] = {"none": [], "record": [], "live": []}
    with tempfile.TemporaryDirectory() as d:
        for _ in range(args.rounds):
            for mode in rows:
                rows[mode].append(one(mode, args.seconds, Path(d)))
        print(f"{platform.processor() or platform.machine()}, {args.rounds} x {args.seconds:g} s real time per mode\n")
        print("| mode | policy period p50 (ms) | p99 (ms) | p99 - p50 (ms) | sim loop work p50 / p99 (ms) | live messages received |")
        print("|---|---|---|---|---|---|")
        for mode, runs in rows.items():
            for r in runs:
                p50, p99 = r["policy_period_ms_p50"], r["policy_period_ms_p99"]
                print(f"| {mode} | {p50:.2f} | {p99:.2f} | {p99 - p50:.2f} | {r['loop_ms_p50']:.2f} / {r['loop_ms_p99']:.2f} | "
                      f"{r['live_messages'] or '-'} |")
        costs = publish_cost(Path(d))
    print("\n| publishing one control step (telemetry + simulator truth) | p50 (us) | p99 (us) |\n|---|---|---|")
    for name, p50, p99 in costs:
        print(f"| {name} | {p50:.0f} | {p99:.0f} |")


if __name__ == "__main__":
    main()
