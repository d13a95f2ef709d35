"""One side of the DDS interop test, run inside a bare cyclonedds environment (see jetson/dds_envs.py).

    python tests/jetson_dds_peer.py --role robot|runner --domain N --seconds S [--native-typeinfo] [--public-api]

robot:  publishes LowState_ (tick = counter) at --rate Hz, counts CRC-valid LowCmd_ replies.
runner: answers every LowState_ with a LowCmd_ whose ``reserve`` echoes the tick (the runner's codec path).
motion-switcher: the robot's motion_switcher service (sport mode "normal" until released), prints the api ids seen.
Prints one JSON line with the counts. Needs only cyclonedds and the standard library.
"""

import argparse
import json
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "exts" / "krabby.hal"))

from krabby.hal.devices import unitree_go_dds as dds  # noqa: E402
from krabby.hal.devices.unitree_go_msgs import CodecError, LowCmd, LowState  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--role", choices=("robot", "runner", "motion-switcher"), required=True)
    ap.add_argument("--domain", type=int, required=True)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--rate", type=float, default=500.0)
    ap.add_argument("--want", type=int, default=300, help="robot: stop after this many echoed replies")
    ap.add_argument("--native-typeinfo", action="store_true", help="do NOT announce the 0.10.x type info (the trap)")
    ap.add_argument("--public-api", action="store_true", help="use IdlStruct (de)serialisation, as Unitree's SDK does")
    a = ap.parse_args()

    bus = dds.DdsBus(a.domain, dds.loopback_config_xml(), robot_typeinfo=not a.native_typeinfo, raw_api=not a.public_api)
    out = {"role": a.role, "cyclonedds": bus.version, "received": 0, "crc_errors": 0, "echoed": 0, "sent": 0}
    lock = threading.Lock()
    t0 = time.monotonic()

    if a.role == "motion-switcher":
        from krabby.hal.devices.go2_motion_switcher import SimMotionSwitcher

        svc = SimMotionSwitcher(bus, mode_name="normal")
        print("READY", flush=True)
        while time.monotonic() - t0 < a.seconds and svc.mode.active:
            time.sleep(0.05)
        time.sleep(1.0)  # answer the CheckMode that follows the release
        out["requests"] = svc.requests
    elif a.role == "robot":
        sent_ticks = set()

        def on_cmd(buf: bytes) -> None:
            try:
                cmd = LowCmd.decode(buf)
            except CodecError:
                out["crc_errors"] += 1
                return
            with lock:
                out["received"] += 1
                if cmd.reserve in sent_ticks:
                    out["echoed"] += 1

        bus.reader(dds.LOWCMD_TOPIC, "LowCmd_", on_cmd)
        w = bus.writer(dds.LOWSTATE_TOPIC, "LowState_")
        st = LowState()
        period = 1.0 / a.rate
        nxt = time.monotonic()
        while time.monotonic() - t0 < a.seconds and out["echoed"] < a.want:
            st.tick += 1
            sent_ticks.add(st.tick)
            w.write(st.encode())
            out["sent"] += 1
            nxt += period
            time.sleep(max(0.0, nxt - time.monotonic()))
        out["matched"] = w.matched
    else:
        w = bus.writer(dds.LOWCMD_TOPIC, "LowCmd_")
        cmd = LowCmd.zero_torque()

        def on_state(buf: bytes) -> None:
            try:
                st = LowState.decode(buf)
            except CodecError:
                out["crc_errors"] += 1
                return
            with lock:
                out["received"] += 1
                cmd.reserve = st.tick
                w.write(cmd.encode())
                out["sent"] += 1

        r = bus.reader(dds.LOWSTATE_TOPIC, "LowState_", on_state)
        while time.monotonic() - t0 < a.seconds:
            time.sleep(0.05)
        out["matched"] = r.matched
    out["elapsed_s"] = round(time.monotonic() - t0, 3)
    print(json.dumps(out), flush=True)
    bus.close()


if __name__ == "__main__":
    main()
