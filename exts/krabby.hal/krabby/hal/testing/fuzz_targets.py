"""Structure-aware fuzzing of the HAL wire protocol: two harnesses with invariants.

Used by ``tests/test_fuzz_hal.py`` (hypothesis drives the ``random.Random`` passed in, so failures
shrink) and by ``bench/fuzz_hal.py --minutes N`` (long runs). The message mutators are in
``fuzz_mutations.py``. Nothing here is needed at run time.

Harnesses:
- ``CommandFuzzTarget``: a HalServer on the loopback test double; a raw DEALER sends each message
  and must get exactly one reply. Invariants (``check``): the command thread is alive; every ACK that
  says "accepted" was for a message a reference oracle also accepts; every target the backend ever
  received is finite, within joint limits and equal to the clamped targets of an accepted command
  (or the default pose); a fresh client's valid command is still accepted; memory stays bounded.
- ``TelemetryFuzzTarget``: a HalClient whose telemetry comes from a raw PUB; garbage is published,
  then a valid STATE that must arrive. Invariants: the receive thread is alive; every sample the
  client hands out is of the current session and shaped as the handshake announced.
"""

from __future__ import annotations

import random
import struct
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import zmq

from .. import clock
from ..protocol import (
    HEADER_SIZE,
    TELEMETRY_KINDS,
    Ack,
    DType,
    Kind,
    ProtocolError,
    StateLayout,
    decode,
    encode,
    hello_payload,
    pack_navigation,
    pack_state,
)
from ..robot_profile import RobotProfile
from ..types import ActuatorMode, DepthFrame, HeightScan, NavigationCommand, RobotState
from .fuzz_mutations import CONTROL_ACTIONS, MutationContext, mutate, rss_bytes

# ----------------------------------------------------------------------------- command harness


@dataclass
class FuzzStats:
    sent: int = 0  # messages
    frames: int = 0  # ZeroMQ frames in those messages
    replies: int = 0
    crashes: int = 0  # invariant violations, missing replies, dead threads
    accepted: int = 0
    reasons: Counter = field(default_factory=Counter)
    failures: list = field(default_factory=list)  # (description, frames) of the first few crashes

    def fail(self, what: str, frames: Any = None) -> None:
        self.crashes += 1
        if len(self.failures) < 20:
            self.failures.append((what, [bytes(f).hex() for f in frames] if frames is not None else None))


class CommandFuzzTarget:
    """A HalServer (loopback test double) whose command socket a raw DEALER fuzzes; see module doc."""

    def __init__(self, profile: RobotProfile, context: zmq.Context, *, transport: str = "inproc",
                 endpoints: tuple[str, str] | None = None, reply_timeout_s: float = 2.0):
        from ..backends.loopback_double import LoopbackTestDouble
        from ..safety import SafetyConfig
        from ..server import HalServer, HalServerConfig

        self.profile = profile
        self.context = context
        tag = uuid.uuid4().hex[:8]
        obs, cmd = endpoints or (f"inproc://fuzz-obs-{tag}", f"inproc://fuzz-cmd-{tag}")
        # a long watchdog: the fuzzer pauses between messages, and the watchdog is not under test here
        safety = SafetyConfig(arm_on_start=True, watchdog_s=3600.0, hold_s=3600.0)
        self.backend = LoopbackTestDouble(profile)
        self.server = HalServer(self.backend, HalServerConfig(obs, cmd, safety=safety, allow_insecure_tcp=True), context=context)
        self.server.start()
        self.accepted: dict[int, list[np.ndarray]] = {}
        self._accepted_lock = threading.Lock()
        self.server.on_command = self._record
        self.reply_timeout_s = reply_timeout_s
        self.stats = FuzzStats()
        self.dealer = self._dealer()
        self.last_seq = -1  # oracle: last seq the server accepted from this dealer since its HELLO
        self.seq = 0
        self.handshake()
        self.rss0 = rss_bytes()

    def _record(self, ack: Ack, msg: Any) -> None:
        if ack.accepted:
            with self._accepted_lock:
                clamped = self.profile.clamp_to_limits(np.asarray(msg.payload, dtype=np.float64))
                self.accepted.setdefault(ack.seq, []).append(clamped)
                if len(self.accepted) > 20000:  # bounded: forget the oldest half
                    for k in list(self.accepted)[:10000]:
                        del self.accepted[k]

    def _dealer(self) -> zmq.Socket:
        d = self.context.socket(zmq.DEALER)
        d.linger = 0
        d.connect(self.server.config.command_bind)
        return d

    def request(self, frames: list) -> Any:
        """Send one message, return the decoded reply (Message) or None if none came."""
        self.dealer.send_multipart(frames)
        if not self.dealer.poll(int(self.reply_timeout_s * 1000)):
            return None
        reply = self.dealer.recv_multipart()
        try:
            return decode(reply, expect=(Kind.ACK, Kind.WELCOME))
        except ProtocolError:
            return reply  # a malformed reply is itself a failure

    def handshake(self) -> None:
        self.seq += 1
        reply = self.request(encode(Kind.HELLO, session_id=0, seq=self.seq, stamp_ns=clock.now_ns(), payload=hello_payload("fuzz")))
        assert reply is not None and getattr(reply, "header", None) is not None and reply.header.kind == Kind.WELCOME, reply
        self.last_seq = -1

    def valid_command(self, targets: np.ndarray | None = None) -> list[bytes]:
        self.seq += 1
        t = self.profile.default_pos_rad if targets is None else targets
        return encode(Kind.COMMAND, session_id=self.server.session_id, seq=self.seq, stamp_ns=clock.now_ns(),
                      payload=np.asarray(t, dtype=np.float32))

    def random_targets(self, rng: random.Random) -> np.ndarray:
        lo, hi = self.profile.pos_min_rad, self.profile.pos_max_rad
        return lo - 0.5 + (hi - lo + 1.0) * np.array([rng.random() for _ in range(self.profile.num_joints)])

    BASE_KINDS = (Kind.COMMAND, Kind.CONTROL, Kind.HELLO)

    def mutated(self, rng: random.Random, max_mutations: int = 3, base_kind: Kind | None = None,
                ops: list[int] | None = None) -> list[bytes]:
        """A valid COMMAND (80 % unless ``base_kind`` says), CONTROL or HELLO, then mutations (see ``mutate``)."""
        if base_kind is None:
            r = rng.random()
            base_kind = Kind.COMMAND if r < 0.8 else Kind.CONTROL if r < 0.9 else Kind.HELLO
        if base_kind == Kind.COMMAND:
            base = self.valid_command(self.random_targets(rng))
        else:
            self.seq += 1
            if base_kind == Kind.CONTROL:
                action = rng.choices(CONTROL_ACTIONS, weights=(4, 2, 3, 1))[0]
                base = encode(Kind.CONTROL, session_id=self.server.session_id, seq=self.seq, stamp_ns=clock.now_ns(),
                              payload={"action": action})
            else:
                base = encode(Kind.HELLO, session_id=0, seq=self.seq, stamp_ns=clock.now_ns(), payload=hello_payload("fuzz"))
        return mutate([bytes(f) if not isinstance(f, np.ndarray) else f.tobytes() for f in base], rng,
                      MutationContext(self.server.session_id, self.seq), max_mutations, ops)

    def reset(self) -> None:
        """Between batches: re-handshake and re-arm, so a fuzzed e-stop or huge seq does not end coverage."""
        now = clock.now_ns()
        self.server.supervisor.clear_estop(now)
        self.server.supervisor.disarm(now)  # also ends the commander lease of a dealer that was replaced
        self.server.supervisor.arm(now)
        self.handshake()

    # -- the oracle: what the server must refuse, from the rules in docs/protocol.md and safety.py
    def _must_refuse(self, frames: list, sent_ns: int, reply_ns: int) -> str | None:
        try:
            msg = decode(frames, expect=(Kind.COMMAND, Kind.CONTROL))
        except ProtocolError as e:
            return f"undecodable ({e.reason.name})"
        h = msg.header
        if h.session_id != self.server.session_id:
            return "wrong session"
        if h.kind == Kind.CONTROL:
            action = msg.payload.get("action") if isinstance(msg.payload, dict) else None
            return None if isinstance(action, str) and action in CONTROL_ACTIONS else f"control action {action!r}"
        if h.dtype != DType.F32 or not isinstance(msg.payload, np.ndarray) or msg.payload.shape != (self.profile.num_joints,):
            return "not a float32 vector of num_joints"
        if not np.all(np.isfinite(msg.payload)):
            return "non-finite targets"
        if h.seq <= self.last_seq:
            return f"seq {h.seq} not above last accepted {self.last_seq}"
        cfg = self.server.config.safety
        if h.stamp_ns < sent_ns - int(cfg.max_command_age_s * 1e9) - int(0.005e9):
            return "stale stamp"
        if h.stamp_ns > reply_ns + int(cfg.max_future_s * 1e9) + int(0.005e9):
            return "future stamp"
        return None

    def feed(self, frames: list) -> None:
        """Send one (fuzzed) message and check the reply against the oracle."""
        self.stats.sent += 1
        self.stats.frames += len(frames)
        sent_ns = clock.now_ns()
        reply = self.request(frames)
        reply_ns = clock.now_ns()
        if reply is None:
            self.stats.fail(f"no reply within {self.reply_timeout_s} s", frames)
            self.dealer.close(0)  # a fresh socket, so one lost reply does not shift all later ones
            self.dealer = self._dealer()
            self.handshake()
            return
        if not hasattr(reply, "header"):
            self.stats.fail("malformed reply", frames)
            return
        self.stats.replies += 1
        if reply.header.kind == Kind.WELCOME:
            self.stats.reasons["WELCOME"] += 1
            try:
                decode(frames, expect=(Kind.HELLO,))
            except ProtocolError as e:
                self.stats.fail(f"server welcomed a message that is not a valid HELLO ({e.reason.name})", frames)
            self.last_seq = -1  # a HELLO (possibly mutated into one) restarts this dealer's seq guard
            return
        ack = Ack.unpack(reply.header.seq, reply.payload)
        self.stats.reasons[ack.reason.name] += 1
        if ack.accepted:
            self.stats.accepted += 1
            why = self._must_refuse(frames, sent_ns, reply_ns)
            if why is not None:
                self.stats.fail(f"server accepted a command it must refuse: {why}", frames)
            elif decode(frames).header.kind == Kind.COMMAND:
                self.last_seq = decode(frames).header.seq

    def tick(self, n: int = 1) -> None:
        for _ in range(n):
            self.server.tick()

    def check(self, rss_growth_limit_bytes: int = 64 << 20) -> None:
        """Invariants after a batch; failures are counted in ``stats`` (not raised)."""
        thread = self.server._thread
        if thread is None or not thread.is_alive():
            self.stats.fail("server command thread died")
            return
        lo, hi = self.profile.pos_min_rad, self.profile.pos_max_rad
        with self._accepted_lock:
            accepted = {k: list(v) for k, v in self.accepted.items()}
        for cmd in list(self.backend.applied):
            t = cmd.target_pos_rad
            if cmd.mode != ActuatorMode.POSITION:
                continue
            if not np.all(np.isfinite(t)) or np.any(t < lo - 1e-9) or np.any(t > hi + 1e-9):
                self.stats.fail(f"applied target outside limits or non-finite: {t}")
            elif cmd.source_seq == -1:
                if not np.allclose(t, self.profile.default_pos_rad):
                    self.stats.fail("applied a target with no source command that is not the default pose")
            elif not any(np.allclose(t, a, atol=1e-6) for a in accepted.get(cmd.source_seq, [])):
                self.stats.fail(f"applied target of seq {cmd.source_seq} matches no accepted command")
        self.backend.applied.clear()
        if len(self.server._clients) > 64:
            self.stats.fail("server remembers more than MAX_CLIENTS peers")
        growth = rss_bytes() - self.rss0
        if growth > rss_growth_limit_bytes:
            self.stats.fail(f"memory grew by {growth / 2**20:.0f} MiB")

    def still_serves_a_fresh_client(self) -> bool:
        """A new peer handshakes and gets a valid command accepted (re-arming after a fuzzed e-stop)."""
        d = self._dealer()
        try:
            def req(frames: list) -> Any:
                d.send_multipart(frames)
                if not d.poll(int(self.reply_timeout_s * 1000)):
                    return None
                return decode(d.recv_multipart())

            now = clock.now_ns()
            if req(encode(Kind.HELLO, session_id=0, seq=1, stamp_ns=now, payload=hello_payload("after-fuzz"))) is None:
                return False
            for i, action in enumerate(("clear_estop", "disarm", "arm"), start=2):  # disarm: take over from the fuzzer
                req(encode(Kind.CONTROL, session_id=self.server.session_id, seq=i, stamp_ns=clock.now_ns(), payload={"action": action}))
            reply = req(encode(Kind.COMMAND, session_id=self.server.session_id, seq=10, stamp_ns=clock.now_ns(),
                               payload=np.asarray(self.profile.default_pos_rad, dtype=np.float32)))
            return reply is not None and Ack.unpack(reply.header.seq, reply.payload).accepted
        finally:
            d.close(0)

    def close(self) -> None:
        self.dealer.close(0)
        self.server.close()


# --------------------------------------------------------------------------- telemetry harness


class TelemetryFuzzTarget:
    """A HalClient subscribed to a raw PUB (its commands go to a real server on inproc); see module doc."""

    SEQ_WINDOW = 1000  # mutated seqs stay within this distance of the current one

    def __init__(self, profile: RobotProfile, context: zmq.Context):
        from ..backends.loopback_double import LoopbackTestDouble
        from ..client import HalClient, HalClientConfig
        from ..server import HalServer, HalServerConfig

        self.profile = profile
        self.context = context
        tag = uuid.uuid4().hex[:8]
        self.server = HalServer(LoopbackTestDouble(profile), HalServerConfig(f"inproc://tfuzz-unused-{tag}", f"inproc://tfuzz-cmd-{tag}"),
                                context=context).start()
        self.session_id = self.server.session_id
        self.pub = context.socket(zmq.PUB)
        self.pub.linger = 0
        self.pub.sndhwm = 100000
        self.endpoint = f"inproc://tfuzz-obs-{tag}"
        self.pub.bind(self.endpoint)
        self.client = HalClient(HalClientConfig(self.endpoint, self.server.config.command_bind, handshake_timeout_s=5.0), context=context)
        self.welcome = self.client.connect()
        self.layout = StateLayout(profile.num_joints, profile.num_feet)
        self.seq = 0
        self.stats = FuzzStats()
        self.rss0 = rss_bytes()
        deadline = time.monotonic() + 5.0
        while not self.probe(timeout_s=0.05):  # wait for the subscription to reach the PUB
            if time.monotonic() > deadline:
                raise RuntimeError("telemetry fuzz: client never received a valid state")

    def _valid(self, kind: Kind, rng: random.Random | None = None) -> list[bytes]:
        self.seq += 1
        now = clock.now_ns()
        p = self.profile
        if kind == Kind.STATE:
            state = RobotState(now, p.default_pos_rad, np.zeros(p.num_joints), np.zeros(p.num_joints), np.array([1.0, 0, 0, 0]),
                               np.zeros(3), np.array([0, 0, 9.81]), np.zeros(3), np.full(p.num_feet, 30.0))
            payload: Any = pack_state(state, self.layout)
        elif kind == Kind.DEPTH:
            payload = np.full(self.welcome.info["depth_shape"], 1.5, dtype=np.float32)
        elif kind == Kind.HEIGHT_SCAN:
            payload = np.full(self.welcome.info["height_scan_points"], 0.3, dtype=np.float32)
        elif kind == Kind.NAVIGATION:
            payload = pack_navigation(NavigationCommand(now, 0.5, 0.1, 0.2, True))
        else:
            payload = {"session_id": self.session_id, "safety": {"state": "ARMED"}}
        return [bytes(f) if not isinstance(f, np.ndarray) else f.tobytes() for f in
                encode(kind, session_id=self.session_id, seq=self.seq, stamp_ns=now, payload=payload)]

    def mutated(self, rng: random.Random, max_mutations: int = 3, base_kind: Kind | None = None,
                ops: list[int] | None = None) -> list[bytes]:
        base = self._valid(rng.choice(TELEMETRY_KINDS) if base_kind is None else base_kind)
        out = mutate(base, rng, MutationContext(self.session_id, self.seq, max_seq=self.seq + self.SEQ_WINDOW), max_mutations, ops)
        # Seqs stay below the next probe's (byte flips included), so that each probe checks delivery at once.
        # What a larger seq does (refused beyond 2**20, resync after 3 refusals) is pinned by
        # tests/test_hal_liveness.py::test_one_injected_huge_seq_cannot_freeze_the_client.
        if len(out) == 3 and len(out[1]) == HEADER_SIZE:
            seq = struct.unpack_from("<Q", out[1], 16)[0]
            if seq > self.seq + self.SEQ_WINDOW:
                header = bytearray(out[1])
                struct.pack_into("<Q", header, 16, self.seq + seq % self.SEQ_WINDOW)
                out[1] = bytes(header)
        return out

    def publish(self, frames: list) -> None:
        self.stats.sent += 1
        self.stats.frames += len(frames)
        self.pub.send_multipart(frames)

    def probe(self, timeout_s: float = 2.0) -> bool:
        """Publish a valid STATE above every seq used so far; True once the client hands it out."""
        self.seq += self.SEQ_WINDOW
        frames = self._valid(Kind.STATE)
        want = self.seq
        deadline = time.monotonic() + timeout_s
        self.pub.send_multipart(frames)
        while time.monotonic() < deadline:
            s = self.client.latest(Kind.STATE)
            if s is not None and s.seq == want:
                return True
            time.sleep(0.001)
        return False

    def check(self, rss_growth_limit_bytes: int = 64 << 20) -> None:
        rx = self.client._rx_thread
        if rx is None or not rx.is_alive():
            self.stats.fail("client telemetry thread died")
            return
        if not self.probe():
            self.stats.fail("client stopped delivering valid telemetry after garbage")
        info = self.welcome.info
        for kind in TELEMETRY_KINDS:
            s = self.client.latest(kind)
            if s is None:
                continue
            problem = self._sample_problem(s, info)
            if problem:
                self.stats.fail(f"client handed out an invalid {kind.name} sample: {problem}")
        growth = rss_bytes() - self.rss0
        if growth > rss_growth_limit_bytes:
            self.stats.fail(f"memory grew by {growth / 2**20:.0f} MiB")

    def _sample_problem(self, s: Any, info: dict) -> str | None:
        if s.session_id != self.session_id:
            return "foreign session"
        v, p = s.value, self.profile
        if s.kind == Kind.STATE:
            if not isinstance(v, RobotState):
                return f"type {type(v).__name__}"
            sizes = {"joint_pos_rad": p.num_joints, "foot_force_n": p.num_feet, "base_quat_wxyz": 4}
            for name, n in sizes.items():
                if getattr(v, name).shape != (n,):
                    return f"{name} shape {getattr(v, name).shape}"
        # Depth and scan: the shapes the handshake announced (the client's TelemetryGate refuses others)
        elif s.kind == Kind.DEPTH:
            if not isinstance(v, DepthFrame) or list(v.distance_m.shape) != list(info["depth_shape"]) or v.distance_m.dtype != np.float32:
                return f"depth {type(v).__name__} {getattr(getattr(v, 'distance_m', None), 'shape', None)}"
        elif s.kind == Kind.HEIGHT_SCAN:
            if not isinstance(v, HeightScan) or v.base_height_above_hit_m.shape != (info["height_scan_points"],):
                return f"scan {type(v).__name__} {getattr(getattr(v, 'base_height_above_hit_m', None), 'shape', None)}"
        elif s.kind == Kind.NAVIGATION:
            if not isinstance(v, NavigationCommand):
                return f"type {type(v).__name__}"
        elif not isinstance(v, dict):
            return f"status type {type(v).__name__}"
        return None

    def close(self) -> None:
        self.client.close()
        self.pub.close(0)
        self.server.close()


def run_for(target: Any, seconds: float, rng: random.Random, *, batch: int = 200,
            progress: Callable[[Any], None] | None = None, max_messages: int | None = None) -> FuzzStats:
    """Feed ``target`` mutated messages for ``seconds`` (bounded), checking invariants every ``batch``."""
    end = time.monotonic() + seconds
    feed = target.feed if isinstance(target, CommandFuzzTarget) else target.publish
    while time.monotonic() < end and (max_messages is None or target.stats.sent < max_messages):
        for _ in range(batch):
            feed(target.mutated(rng))
        if isinstance(target, CommandFuzzTarget):
            target.tick(3)
        target.check()
        if isinstance(target, CommandFuzzTarget):
            target.reset()
        if progress is not None:
            progress(target.stats)
    return target.stats
