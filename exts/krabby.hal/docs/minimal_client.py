#!/usr/bin/env python3
"""A complete Krabby HAL client written from docs/protocol.md alone: pyzmq, numpy and the standard library.

It imports nothing from Krabby: this is what protocol.md §6 describes, as a program you can run.

    python minimal_client.py --telemetry tcp://ROBOT:5555 --commands tcp://ROBOT:5556 --steps 100
    python minimal_client.py ... --server-key robot.key --client-key policy.key_secret   # CURVE (security.md)

It handshakes, arms the server, then for each new STATE sends the default pose back as the joint
targets (it holds the robot still), re-arming after a watchdog trip and re-handshaking after a server
restart. It prints one JSON line with the ACK reasons it got and exits 0 if at least 90 % of its
commands were accepted. CI runs it against a real server (tests/test_protocol_doc.py). Section numbers (§) refer to protocol.md.
"""

from __future__ import annotations

import argparse
import json
import struct
import sys
import time
from collections import Counter

import numpy as np
import zmq

# §2.2: the 56-byte header, little-endian, no padding
HEADER = struct.Struct("<4sHHIHBBQQ4III")
MAGIC, VERSION = b"KRBY", 2
STATE, STATUS, HELLO, WELCOME, COMMAND, ACK, CONTROL = 1, 5, 16, 17, 18, 19, 20
TOPIC = {STATE: b"state", STATUS: b"status", HELLO: b"hello", WELCOME: b"welcome", COMMAND: b"cmd", ACK: b"ack", CONTROL: b"ctl"}
NONE, F32, JSON_, ACK_DTYPE = 0, 1, 2, 3
REASONS = {0: "OK", 1: "OK_CLAMPED", 10: "MALFORMED", 11: "TRUNCATED_HEADER", 12: "BAD_MAGIC", 13: "BAD_VERSION",
           14: "BAD_KIND", 15: "PAYLOAD_SIZE_MISMATCH", 16: "BAD_SHAPE", 17: "NON_FINITE", 18: "BAD_PAYLOAD",
           20: "STALE", 21: "REPLAYED", 22: "OUT_OF_ORDER", 23: "FUTURE_STAMP", 24: "WRONG_SESSION",
           30: "NOT_HANDSHAKEN", 31: "NOT_ARMED", 32: "ESTOP", 33: "RATE_LIMITED", 34: "NOT_COMMANDER"}


def frames(kind: int, session: int, seq: int, stamp_ns: int, payload: object) -> list[bytes]:
    """§2: [topic, header, payload]; payload is a float32 array, a dict (JSON) or None."""
    if isinstance(payload, np.ndarray):
        body, dtype, shape = payload.astype("<f4").tobytes(), F32, payload.shape
    elif isinstance(payload, dict):
        body, dtype, shape = json.dumps(payload).encode(), JSON_, ()
    else:
        body, dtype, shape = b"", NONE, ()
    dims = tuple(shape) + (0,) * (4 - len(shape))
    header = HEADER.pack(MAGIC, VERSION, kind, session, 0, dtype, len(shape), seq, stamp_ns, *dims, len(body), 0)
    return [TOPIC[kind], header, body]


def parse(msg: list[bytes]) -> tuple[dict, object]:
    """Header fields and payload of one received message (the server's messages are well formed)."""
    topic, raw, body = msg
    magic, version, kind, session, flags, dtype, ndim, seq, stamp, d0, d1, d2, d3, nbytes, episode = HEADER.unpack(raw)
    if magic != MAGIC or version != VERSION or len(body) != nbytes:
        raise ValueError(f"not a protocol v{VERSION} message: {raw[:8]!r}")
    h = {"kind": kind, "session": session, "seq": seq, "stamp_ns": stamp, "episode": episode, "flags": flags}
    if dtype == F32:
        return h, np.frombuffer(body, "<f4").reshape((d0, d1, d2, d3)[:ndim])
    if dtype == JSON_:
        return h, json.loads(body)
    if dtype == ACK_DTYPE:  # §2.3: uint16 reason, uint16 safety_state, uint32 flags (bit 0: CLAMPED)
        return h, struct.unpack("<HHI", body)
    return h, None


def curve_keys(path: str) -> tuple[bytes | None, bytes | None]:
    """security.md §3: a krabby-keys file is ZeroMQ certificate text with Z85 `public-key` / `secret-key` lines."""
    public = secret = None
    for line in open(path, encoding="ascii"):
        key, _, value = line.strip().partition("=")
        if key.strip() == "public-key":
            public = value.strip().strip('"').encode()
        elif key.strip() == "secret-key":
            secret = value.strip().strip('"').encode()
    return public, secret


class Client:
    def __init__(self, args: argparse.Namespace):
        self.args, self.ctx, self.seq = args, zmq.Context.instance(), 0
        self.sub = self._socket(zmq.SUB)
        for topic in (b"state", b"status"):  # §1: subscribe the topic prefixes you need
            self.sub.setsockopt(zmq.SUBSCRIBE, topic)
        self.sub.connect(args.telemetry)
        self.dealer: zmq.Socket | None = None
        self.session = 0
        self.old_sessions: set[int] = set()
        self.last_state: tuple[dict, np.ndarray] | None = None
        self.newest_seq = -1
        self.reasons: Counter = Counter()

    def _socket(self, kind: int) -> zmq.Socket:
        s = self.ctx.socket(kind)
        s.linger = 0
        if self.args.server_key:  # CURVE: pin the server's public key, present ours
            s.curve_serverkey = curve_keys(self.args.server_key)[0]
            s.curve_publickey, s.curve_secretkey = curve_keys(self.args.client_key)
        return s

    def handshake(self) -> dict:
        """§4.1 with a fresh DEALER (§6 step 2-3)."""
        if self.dealer is not None:
            self.dealer.close(0)
        d = self._socket(zmq.DEALER)
        d.immediate = True
        d.sndtimeo = 1000  # §1: with IMMEDIATE a blocking send waits for a connection: never block forever
        d.connect(self.args.commands)
        self.dealer = d
        self.seq += 1
        hello = frames(HELLO, 0, self.seq, time.time_ns(), {"client_name": "minimal-client", "protocol_version": VERSION})
        deadline = time.monotonic() + 2.0
        sent = False
        while time.monotonic() < deadline:
            if not sent:
                try:
                    d.send_multipart(hello)
                    sent = True
                except zmq.Again:  # no connection yet
                    continue
            if not d.poll(100):
                continue
            h, payload = parse(d.recv_multipart())
            if h["kind"] == ACK:
                raise SystemExit(f"handshake refused: {REASONS.get(payload[0], payload[0])}")
            if h["kind"] == WELCOME and h["seq"] == self.seq:
                if payload["protocol_version"] != VERSION:
                    raise SystemExit(f"server speaks protocol {payload['protocol_version']}, this client {VERSION}")
                if self.session and self.session != payload["session_id"]:
                    self.old_sessions.add(self.session)
                self.session = payload["session_id"]
                self.newest_seq = -1
                return payload
        raise SystemExit(f"no WELCOME from {self.args.commands} within 2 s")

    def request(self, kind: int, stamp_ns: int, payload: object) -> str:
        """One COMMAND or CONTROL; waits ≤ 100 ms for the ACK with its seq (§6 step 4)."""
        assert self.dealer is not None
        self.seq += 1
        try:
            self.dealer.send_multipart(frames(kind, self.session, self.seq, stamp_ns, payload))
        except zmq.Again:
            return "TIMEOUT"
        deadline = time.monotonic() + 0.1
        while (left := deadline - time.monotonic()) > 0 and self.dealer.poll(int(left * 1000) + 1):
            h, ack = parse(self.dealer.recv_multipart())
            if h["kind"] == ACK and h["seq"] == self.seq:
                return REASONS.get(ack[0], str(ack[0]))
        return "TIMEOUT"

    def newest_state(self, timeout_s: float) -> tuple[dict, np.ndarray] | None:
        """Drain the SUB; the newest STATE of our session, if a new one came (§3, §6 step 4)."""
        new = None
        deadline = time.monotonic() + timeout_s
        while self.sub.poll(max(0, int((deadline - time.monotonic()) * 1000)) if new is None else 0):
            h, payload = parse(self.sub.recv_multipart())
            if h["session"] != self.session:  # §3: a restarted server (or stragglers of the one we left)
                if h["session"] not in self.old_sessions:
                    self.handshake()
                continue
            if h["kind"] == STATE and h["seq"] > self.newest_seq:
                self.newest_seq, new = h["seq"], (h, payload)
        return new


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--telemetry", default="tcp://127.0.0.1:5555")
    ap.add_argument("--commands", default="tcp://127.0.0.1:5556")
    ap.add_argument("--steps", type=int, default=100, help="commands to send")
    ap.add_argument("--server-key", help="the server's public key file (CURVE)")
    ap.add_argument("--client-key", help="this client's secret key file (CURVE)")
    args = ap.parse_args(argv)
    c = Client(args)
    welcome = c.handshake()
    names = welcome["joint_names"]
    default = {j["name"]: j["default_pos_rad"] for j in welcome["robot_profile"]["joints"]}
    targets = np.array([default[n] for n in names], dtype=np.float32)  # robot order (§3)
    armed = False
    deadline = time.monotonic() + 10.0 + args.steps / welcome["control_rate_hz"] * 3
    sent = 0
    while sent < args.steps and time.monotonic() < deadline:
        got = c.newest_state(0.5)
        if got is None:
            continue
        h, _ = got
        if not armed:  # §4.3: a server may start DISARMED; arm it, stamped with the server's own clock
            armed = c.request(CONTROL, h["stamp_ns"], {"action": "arm"}) == "OK"
            continue
        reason = c.request(COMMAND, h["stamp_ns"], targets)  # the stamp of the STATE it was computed from
        c.reasons[reason] += 1
        sent += 1
        if reason == "NOT_ARMED":  # a watchdog trip (HOLD/DAMP): only an explicit arm re-arms
            armed = False
        elif reason in ("NOT_HANDSHAKEN", "WRONG_SESSION"):
            c.handshake()
    accepted = c.reasons["OK"] + c.reasons["OK_CLAMPED"]
    print(json.dumps({"sent": sent, "accepted": accepted, "reasons": dict(c.reasons), "session_id": c.session}))
    return 0 if sent and accepted >= 0.9 * args.steps else 1


if __name__ == "__main__":
    sys.exit(main())
