"""HalClient: latest-only telemetry, commands with acks, handshake, and recovery from a server restart.

A background thread owns the SUB socket and drains it continuously, keeping only the newest sample
per topic, so a slow reader always gets the newest data and its true age. Every sample passes the
``TelemetryGate`` first (sequence, stamp and value checks; refusals counted in ``stats``). Commands
go out on a DEALER socket used by the thread that calls ``send_command`` (use one thread for commands);
a lock lets the client's own session thread re-handshake on that socket.

Server restart: the telemetry thread sees a session id it has not handshaken with and asks the session
thread to re-handshake at once (at most every ``rehandshake_interval_s``). Until the new WELCOME, commands
are refused locally (WRONG_SESSION, nothing sent); after it, the old session's samples are gone and only
the new session's telemetry is handed out. A loop that only waits for new states and sends commands
(``wait_new`` -> ``send_command``) therefore resumes by itself, from post-restart telemetry only.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass
from typing import Any, Callable, NamedTuple

import numpy as np

import zmq

from . import clock
from .protocol import (
    MAX_PAYLOAD_BYTES, PROTOCOL_VERSION, TELEMETRY_KINDS, Ack, Kind, ProtocolError, Reason, StateLayout, Topic, decode, encode,
    hello_payload, unpack_depth, unpack_height_scan, unpack_navigation, unpack_state,
)
from .ratelimit import RateLimitedLog
from .robot_profile import RobotProfile, profile_from_dict
from .telemetry_gate import TelemetryGate
from .zmq_io import IDLE_POLL_MS, Doorbell, drain, recv_frames, send_frames
from .types import DepthFrame, HeightScan, NavigationCommand, RobotState

log = logging.getLogger("krabby.hal.client")


class HandshakeError(ConnectionError):
    """The server did not answer the handshake, or refused it (e.g. another protocol version)."""


@dataclass
class HalClientConfig:
    observation_endpoint: str = "inproc://hal_observation"
    command_endpoint: str = "inproc://hal_commands"
    handshake_timeout_s: float = 2.0
    ack_timeout_s: float = 0.1
    client_name: str = "krabby-client"
    rcvhwm: int = 32
    security: Any = None  # krabby.hal.deploy.curve.CurveClientKeys for an authenticated tcp server
    rehandshake_interval_s: float = 0.2  # at most one automatic re-handshake attempt this often


class Sample(NamedTuple):
    """One telemetry message as received: decoded value, capture stamp and receive time.

    A NamedTuple (immutable, cheap to make: one per telemetry message); compare samples with ``is``."""

    kind: Kind
    seq: int  # the server's control tick this message belongs to (protocol v2: shared by all kinds)
    session_id: int
    stamp_ns: int
    received_ns: int
    value: Any  # RobotState, DepthFrame, HeightScan, NavigationCommand or dict (status)
    episode: int = 0  # the backend's episode counter when this was published (header, protocol v2)
    clock_offset_ns: int = 0  # server clock - local clock, measured at the handshake (0 for inproc/ipc)

    @property
    def age_s(self) -> float:
        """Seconds since capture, on the server's clock as this client knows it."""
        return clock.age_s(self.stamp_ns - self.clock_offset_ns)


@dataclass(frozen=True)
class Welcome:
    session_id: int
    profile: RobotProfile
    state_layout: StateLayout
    info: dict
    clock_offset_ns: int = 0  # server clock - local clock (tcp: from the WELCOME's stamp and the round trip)


class HalClient:
    """``connect()`` (handshake + subscribe), read with ``latest()``/``wait_new()``, ``send_command()``, ``close()``."""

    def __init__(self, config: HalClientConfig | None = None, *, context: zmq.Context | None = None):
        self.config = config or HalClientConfig()
        self.context = context or zmq.Context.instance()
        self.welcome: Welcome | None = None
        self.stats: Counter[str] = Counter(received=0, malformed=0, foreign_session=0, timeouts=0, rehandshakes=0)
        self._dealer: zmq.Socket | None = None
        self._dealer_poller: zmq.Poller | None = None
        self._seq = 0
        self._cmd_lock = threading.RLock()  # the DEALER and the request seq: command thread vs session thread
        self._lock = threading.Condition()
        self._latest: dict[Kind, Sample] = {}
        self._taken: dict[Kind, Sample] = {}
        self._gate = TelemetryGate(self.stats)
        self._retired: deque[int] = deque(maxlen=8)  # sessions we left: their stragglers trigger nothing
        self._rx_thread: threading.Thread | None = None
        self._rx_bell: Doorbell | None = None  # close() rings it: the telemetry thread wakes at once
        self._session_thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._interrupted = False  # interrupt(): wait_new returns None at once until the next connect()
        self._rehandshake_wanted = threading.Event()
        self._session_changed = False
        self._warn = RateLimitedLog(log)
        # recorder hook: ("rx" | "tx", the wire frames exactly as received or sent, receive/send time ns)
        self.on_frames: Callable[[str, list, int], None] | None = None

    # ------------------------------------------------------------------------------ lifecycle
    def connect(self) -> Welcome:
        """Handshake, then start receiving telemetry. Raises HandshakeError on timeout or refusal."""
        self._stop.clear()
        self._interrupted = False
        welcome = self._handshake()
        if self._rx_thread is None:
            self._rx_bell = Doorbell(self.context, "hal-client-telemetry")
            ready = threading.Event()
            self._rx_thread = threading.Thread(target=self._receive, args=(ready,), name="krabby-hal-telemetry", daemon=True)
            self._rx_thread.start()
            ready.wait(2.0)
        if self._session_thread is None:
            self._session_thread = threading.Thread(target=self._keep_session, name="krabby-hal-session", daemon=True)
            self._session_thread.start()
        return welcome

    def interrupt(self) -> None:
        """Wake every thread blocked in ``wait_new`` (it returns None) and keep it from blocking again:
        a shutdown's first step, so a loop waiting for telemetry ends without waiting out its timeout."""
        with self._lock:
            self._interrupted = True
            self._lock.notify_all()

    def close(self) -> None:
        self.interrupt()
        self._stop.set()
        self._rehandshake_wanted.set()  # wakes the session thread
        if self._rx_bell is not None:
            self._rx_bell.ring()  # wakes the telemetry thread
        for t in (self._rx_thread, self._session_thread):
            if t is not None:
                t.join(timeout=2.0 + self.config.handshake_timeout_s)
        self._rx_thread = self._session_thread = None
        if self._rx_bell is not None:
            self._rx_bell.close()
            self._rx_bell = None
        with self._cmd_lock:
            if self._dealer is not None:
                self._dealer.close(linger=0)
                self._dealer = None

    def __enter__(self) -> "HalClient":
        self.connect()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _new_dealer(self) -> zmq.Socket:
        if self._dealer is not None:
            self._dealer.close(linger=0)
        s = self.context.socket(zmq.DEALER)
        s.linger = 0
        s.immediate = True  # never queue commands for a peer that is not connected
        s.sndhwm = 16
        if self.config.security is not None and self.config.command_endpoint.startswith("tcp://"):
            self.config.security.apply_to_client_socket(s)
        s.connect(self.config.command_endpoint)
        self._dealer = s
        self._dealer_poller = zmq.Poller()  # made once per socket: Socket.poll builds a Poller on every call
        self._dealer_poller.register(s, zmq.POLLIN)
        return s

    def _handshake(self) -> Welcome:
        with self._cmd_lock:
            return self._handshake_locked()

    def _handshake_locked(self) -> Welcome:
        dealer = self._new_dealer()
        self._seq += 1
        hello = encode(Kind.HELLO, session_id=0, seq=self._seq, stamp_ns=clock.now_ns(),
                       payload=hello_payload(self.config.client_name))
        deadline = time.monotonic() + self.config.handshake_timeout_s
        sent_ns = None
        while time.monotonic() < deadline and not (self._stop.is_set() and self.welcome is not None):
            if sent_ns is None:  # with immediate=True a send before the connection exists would block: retry
                try:
                    dealer.send_multipart(hello, zmq.NOBLOCK)
                    sent_ns = clock.now_ns()
                except zmq.Again:
                    time.sleep(0.01)
                    continue
            if not dealer.poll(50):
                continue
            try:
                msg = decode(dealer.recv_multipart(), expect=(Kind.WELCOME, Kind.ACK))
            except ProtocolError as e:
                raise HandshakeError(f"server at {self.config.command_endpoint} answered with an invalid handshake: {e}") from None
            if msg.header.kind == Kind.ACK:
                ack = Ack.unpack(msg.header.seq, msg.payload)
                raise HandshakeError(f"server at {self.config.command_endpoint} refused the handshake: {ack.reason.name}")
            if msg.header.seq != self._seq:
                continue  # a late answer to an earlier attempt
            return self._accept_welcome(msg, sent_ns, clock.now_ns())
        raise HandshakeError(
            f"no HAL server answered at {self.config.command_endpoint} within {self.config.handshake_timeout_s:.1f} s "
            "(is it running? same endpoint and keys?)"
        )

    def _accept_welcome(self, msg: Any, sent_ns: int, received_ns: int) -> Welcome:
        info = msg.payload
        if info.get("protocol_version") != PROTOCOL_VERSION:
            raise HandshakeError(f"server speaks protocol {info.get('protocol_version')}, this client {PROTOCOL_VERSION}")
        try:
            profile = profile_from_dict(info["robot_profile"], origin="handshake")
            layout = StateLayout(profile.num_joints, profile.num_feet)
            announced = {k: list(v) for k, v in info["state_layout"].items()}
            joints_ok = list(info["joint_names"]) == list(profile.joint_names)
            session = int(info["session_id"])
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise HandshakeError(f"invalid WELCOME from {self.config.command_endpoint}: {e}") from None
        if announced != {name: [sl.start, sl.stop] for name, sl in layout.slices().items()} or not joints_ok:
            raise HandshakeError("WELCOME's state_layout / joint_names do not match its robot_profile: refusing to decode")
        # tcp may cross machines: estimate the server's clock from the WELCOME's stamp (+- half the round trip)
        offset = 0 if not self.config.command_endpoint.startswith("tcp://") else msg.header.stamp_ns - (sent_ns + received_ns) // 2
        with self._lock:
            old = self.welcome
            if old is not None and old.session_id != session:
                self._retired.append(old.session_id)
                self._drop_buffers()
            self.welcome = Welcome(session, profile, layout, info, offset)
            self._session_changed = False
            self._rehandshake_wanted.clear()
        if old is None or old.session_id != session:
            log.info("handshake with %s: session %08x, robot %s", self.config.command_endpoint, session, profile.name)
        return self.welcome

    def _drop_buffers(self) -> None:
        self._latest.clear()
        self._taken.clear()
        self._gate.reset()

    def _keep_session(self) -> None:
        """Re-handshake when telemetry shows a session we do not know (a restarted server), rate-limited."""
        next_try = 0.0
        while not self._stop.is_set():
            self._rehandshake_wanted.wait()
            if self._stop.is_set():
                return
            delay = next_try - time.monotonic()
            if delay > 0:
                self._stop.wait(delay)
                continue
            next_try = time.monotonic() + self.config.rehandshake_interval_s
            self._rehandshake()

    # ------------------------------------------------------------------------------ telemetry
    def _receive(self, ready: threading.Event) -> None:
        sub = self.context.socket(zmq.SUB)
        sub.linger = 0
        sub.rcvhwm = self.config.rcvhwm
        sub.setsockopt(zmq.MAXMSGSIZE, MAX_PAYLOAD_BYTES + 4096)  # no frame of the protocol is larger (+ CURVE overhead)
        if self.config.security is not None and self.config.observation_endpoint.startswith("tcp://"):
            self.config.security.apply_to_client_socket(sub)
        for t in (Topic.STATE, Topic.DEPTH, Topic.HEIGHT_SCAN, Topic.NAVIGATION, Topic.STATUS):
            sub.setsockopt(zmq.SUBSCRIBE, t)
        sub.connect(self.config.observation_endpoint)
        assert self._rx_bell is not None
        bell = self._rx_bell.receiver()
        poller = zmq.Poller()  # made once: Socket.poll builds a new Poller on every call
        poller.register(sub, zmq.POLLIN)
        poller.register(bell, zmq.POLLIN)
        ready.set()
        try:
            while not self._stop.is_set():
                if not poller.poll(IDLE_POLL_MS):
                    continue
                if self._stop.is_set():
                    break  # only close() rings the doorbell
                for frames in drain(sub):
                    try:
                        self._on_telemetry(frames)
                    except Exception:  # one bad message must never stop telemetry (found by fuzzing)
                        self.stats["malformed"] += 1
                        self._warn("decode_failed", "dropped a telemetry message that failed to decode", exc_info=True)
        finally:
            bell.close(linger=0)
            sub.close(linger=0)

    def _on_telemetry(self, frames: list) -> None:
        now = clock.now_ns()
        if self.on_frames is not None:
            self.on_frames("rx", frames, now)
        try:
            msg = decode(frames, expect=TELEMETRY_KINDS)
            welcome = self.welcome
            h = msg.header
            if welcome is None or h.session_id != welcome.session_id:
                self._on_foreign_session(h.session_id)
                return
            value = self._decode_value(msg, welcome)
        except ProtocolError as e:
            self.stats["malformed"] += 1
            self._warn("malformed", "dropped malformed telemetry: %s", e)
            return
        info = welcome.info
        expected = info.get("depth_shape") if h.kind == Kind.DEPTH else info.get("height_scan_points") if h.kind == Kind.HEIGHT_SCAN else None
        sample = Sample(h.kind, h.seq, h.session_id, h.stamp_ns, now, value, h.episode, welcome.clock_offset_ns)
        with self._lock:
            if self.welcome is not welcome:
                return  # re-handshook meanwhile
            why = self._gate.judge(h.kind, h.seq, h.stamp_ns, now + welcome.clock_offset_ns, value, expected)
            if why is not None:
                self._warn(why, "refused %s telemetry seq %d: %s", h.kind.name, h.seq, why)
                return
            self._latest[h.kind] = sample
            self.stats["received"] += 1
            self._lock.notify_all()

    def _on_foreign_session(self, session_id: int) -> None:
        if session_id in self._retired:
            self.stats["old_session"] += 1  # stragglers of a server we already left
            return
        self.stats["foreign_session"] += 1
        with self._lock:
            if self.welcome is not None and not self._session_changed:
                log.warning("telemetry from server session %08x (ours: %08x): re-handshaking", session_id, self.welcome.session_id)
                self._session_changed = True
            self._rehandshake_wanted.set()

    @staticmethod
    def _decode_value(msg: Any, welcome: Welcome) -> Any:
        h, p = msg.header, msg.payload
        if h.kind == Kind.STATUS:
            if not isinstance(p, dict):
                raise ProtocolError(Reason.BAD_PAYLOAD, "status payload must be JSON")
            return p
        if not isinstance(p, np.ndarray):
            raise ProtocolError(Reason.BAD_PAYLOAD, f"{h.kind.name} payload must be float32")
        if h.kind == Kind.STATE:
            return unpack_state(p, h.stamp_ns, welcome.state_layout)
        if h.kind == Kind.DEPTH:
            return unpack_depth(p, h.stamp_ns)
        if h.kind == Kind.HEIGHT_SCAN:
            return unpack_height_scan(p, h.stamp_ns)
        return unpack_navigation(p, h.stamp_ns)

    def latest(self, kind: Kind, max_age_s: float | None = None) -> Sample | None:
        """The newest sample of a kind, or None if there is none (or it is older than max_age_s)."""
        with self._lock:
            s = self._latest.get(kind)
        if s is not None and max_age_s is not None and s.age_s > max_age_s:
            return None
        return s

    def take_new(self, kind: Kind) -> Sample | None:
        """The newest sample if it was not taken before, else None (never hands out the same sample twice)."""
        with self._lock:
            s = self._latest.get(kind)
            if s is None or self._taken.get(kind) is s:
                return None
            self._taken[kind] = s
            return s

    def wait_new(self, kind: Kind, timeout_s: float) -> Sample | None:
        """Block until a sample newer than the last one taken arrives; returns it (taken), or None on
        timeout or after ``interrupt()``."""
        deadline = time.monotonic() + timeout_s
        with self._lock:
            while not self._interrupted:
                s = self._latest.get(kind)
                if s is not None and self._taken.get(kind) is not s:
                    self._taken[kind] = s
                    return s
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self._lock.wait(remaining):
                    return None
            return None

    def state(self) -> RobotState | None:
        s = self.latest(Kind.STATE)
        return s.value if s else None

    def depth(self) -> DepthFrame | None:
        s = self.latest(Kind.DEPTH)
        return s.value if s else None

    def height_scan(self) -> HeightScan | None:
        s = self.latest(Kind.HEIGHT_SCAN)
        return s.value if s else None

    def navigation(self) -> NavigationCommand | None:
        s = self.latest(Kind.NAVIGATION)
        return s.value if s else None

    @property
    def session_changed(self) -> bool:
        """True after telemetry from an unknown server session arrived and before the re-handshake."""
        return self._session_changed

    def server_now_ns(self) -> int:
        """The server's clock now, as this client knows it (local clock + the handshake's offset)."""
        return clock.now_ns() + (self.welcome.clock_offset_ns if self.welcome is not None else 0)

    # ------------------------------------------------------------------------------- commands
    def send_command(self, targets_rad: np.ndarray, based_on: Sample, timeout_s: float | None = None) -> Ack:
        """Send joint targets (robot order) computed from telemetry ``based_on``; wait for the ACK.

        Refused locally (WRONG_SESSION, nothing sent) when ``based_on`` came from a server session that is
        not the current one, or while a re-handshake is pending: a command is never built from
        pre-restart telemetry.
        """
        if self.welcome is None:
            raise HandshakeError("send_command before connect()")
        if self._session_changed or based_on.session_id != self.welcome.session_id:
            self._rehandshake_wanted.set()
            return Ack(seq=-1, reason=Reason.WRONG_SESSION, safety_state=-1)
        payload = np.ascontiguousarray(targets_rad, dtype=np.float32)
        return self._request(Kind.COMMAND, based_on.stamp_ns, payload, timeout_s, based_on.session_id)

    def control(self, action: str, timeout_s: float | None = None) -> Ack:
        """Operator request: "arm", "disarm", "estop" or "clear_estop" (stamped with the server's clock as we know it)."""
        if self.welcome is None:
            raise HandshakeError("control before connect()")
        return self._request(Kind.CONTROL, self.server_now_ns(), {"action": action},
                             timeout_s or max(self.config.ack_timeout_s, 0.5))

    def _request(self, kind: Kind, stamp_ns: int, payload: Any, timeout_s: float | None, session_id: int | None = None) -> Ack:
        with self._cmd_lock:
            assert self.welcome is not None
            if session_id is not None and session_id != self.welcome.session_id:
                return Ack(seq=-1, reason=Reason.WRONG_SESSION, safety_state=-1)  # re-handshook while we waited
            self._seq += 1
            seq = self._seq
            frames = encode(kind, session_id=self.welcome.session_id, seq=seq, stamp_ns=stamp_ns, payload=payload)
            t0 = time.perf_counter()
            dealer = self._dealer
            assert dealer is not None
            try:
                send_frames(dealer, frames, zmq.NOBLOCK)  # copied: for ~100 bytes cheaper than zero-copy Frames
            except zmq.Again:
                return self._timeout(seq)
            if self.on_frames is not None:
                self.on_frames("tx", frames, clock.now_ns())
            deadline = t0 + (self.config.ack_timeout_s if timeout_s is None else timeout_s)
            while True:
                remaining_ms = int(max(0.0, deadline - time.perf_counter()) * 1000)
                if not self._dealer_poller.poll(remaining_ms):  # type: ignore[union-attr]
                    return self._timeout(seq)
                reply = recv_frames(dealer)  # zmq.Frame parts, as telemetry hands on_frames
                if self.on_frames is not None:
                    self.on_frames("rx", reply, clock.now_ns())
                try:
                    msg = decode(reply, expect=(Kind.ACK,))
                except ProtocolError as e:
                    self.stats["malformed"] += 1
                    self._warn("malformed_ack", "dropped malformed ack: %s", e)
                    continue
                if msg.header.seq != seq:
                    continue  # a late ack of an earlier request: correlated by seq, ignored
                ack = Ack.unpack(seq, msg.payload)
                ack = ack._replace(rtt_s=time.perf_counter() - t0)
                if ack.reason in (Reason.NOT_HANDSHAKEN, Reason.WRONG_SESSION):
                    self._rehandshake()
                return ack

    def _timeout(self, seq: int) -> Ack:
        self.stats["timeouts"] += 1
        # a fresh socket drops anything queued for a dead peer; the next request reconnects
        if self.stats["timeouts"] % 3 == 0:
            self._new_dealer()
        return Ack(seq=seq, reason=Reason.TIMEOUT, safety_state=-1)

    def _rehandshake(self) -> None:
        self.stats["rehandshakes"] += 1
        try:
            self._handshake()
        except HandshakeError as e:
            self._warn("rehandshake", "re-handshake failed: %s", e)
