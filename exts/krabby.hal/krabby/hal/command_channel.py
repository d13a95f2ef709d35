"""The server's command channel: one ROUTER on its own thread answers every HELLO, COMMAND and CONTROL.

Kept apart from ``server.py`` (telemetry and the control tick) because this is where peers act on
the server; every limit on what a peer can cost lives here:

- **Handshaken connections** are remembered up to ``MAX_CLIENTS``. When full, a new HELLO evicts a
  connection that never sent an accepted COMMAND or CONTROL (least recently heard from first); an
  established connection is evicted only when all are established. A burst of new connections
  therefore cannot evict a live policy client (audit D4).
- **New connections' handshakes per address** are rate-limited (``HELLO_RATE_PER_S``, burst
  ``HELLO_BURST``; tcp peers only): beyond that a HELLO on a new connection gets ``RATE_LIMITED``.
- **Replies** are sent with ``ZMQ_ROUTER_MANDATORY``, so a full pipe to a peer is an error, not a silent
  drop: the reply waits in that peer's backlog (at most ``MAX_BACKLOG_PER_PEER``) and goes out in order
  as soon as the peer reads. Only beyond the backlog is a reply dropped, and counted
  (``stats["replies_dropped"]``, in STATUS). A client that keeps fewer requests in flight than that
  gets exactly one reply per request (audit D5).
- **Log lines** a peer can trigger go through a rate limiter (audit D6).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import zmq

from . import clock
from .protocol import HEADER, PROTOCOL_VERSION, Ack, DType, Kind, ProtocolError, Reason, decode, encode
from .ratelimit import RateLimitedLog, TokenBucket
from .safety import CONTROL_ACTIONS, ClientSession
from .zmq_io import IDLE_POLL_MS, Doorbell, drain, send_frames

log = logging.getLogger("krabby.hal.server")

MAX_CLIENTS = 64  # handshaken connections remembered (bounded memory under abuse)
HELLO_RATE_PER_S = 20.0  # handshakes per peer address and second, after a burst of HELLO_BURST
HELLO_BURST = 40.0
MAX_BACKLOG_PER_PEER = 256  # replies waiting for a peer that does not read fast enough
MAX_BACKLOG_TOTAL = 4096


@dataclass(eq=False)
class Peer:
    """A handshaken connection: the supervisor's view of it plus what eviction needs."""

    session: ClientSession
    last_heard_s: float
    established: bool = False  # sent a COMMAND or CONTROL the supervisor accepted


class CommandChannel:
    """The ROUTER thread of one HalServer: ``start()`` binds ``server.config.command_bind``; ``close()``."""

    def __init__(self, server: Any):
        self.server = server  # the HalServer this channel serves (its config, context, supervisor, stats, welcome)
        self.peers: dict[bytes, Peer] = {}
        self.thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._bell: Doorbell | None = None  # close() rings it: the thread wakes at once, not at a poll timeout
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._hello_bucket = TokenBucket(HELLO_RATE_PER_S, HELLO_BURST)
        self._backlog: dict[bytes, deque] = {}
        self._backlog_total = 0
        self._warn = RateLimitedLog(log)

    # ------------------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        self._stop.clear()
        self._ready.clear()
        self._bell = Doorbell(self.server.context, "hal-commands")
        self.thread = threading.Thread(target=self._serve, name="krabby-hal-commands", daemon=True)
        self.thread.start()
        self._ready.wait(5.0)
        if self._error is not None:
            raise self._error

    def close(self) -> None:
        self._stop.set()
        if self._bell is not None:
            self._bell.ring()
        if self.thread is not None:
            self.thread.join(timeout=2.0)
            self.thread = None
        if self._bell is not None:
            self._bell.close()
            self._bell = None

    def _serve(self) -> None:
        cfg = self.server.config
        router = self.server.context.socket(zmq.ROUTER)
        router.linger = 0
        router.rcvhwm = cfg.command_rcvhwm
        router.sndhwm = cfg.command_rcvhwm
        router.setsockopt(zmq.ROUTER_MANDATORY, 1)  # a full pipe raises instead of dropping the reply silently
        bell = None
        try:
            if cfg.security is not None and cfg.command_bind.startswith("tcp://"):
                cfg.security.apply_to_server_socket(router, telemetry=False)
            self.server._bind(router, cfg.command_bind, "command")
            assert self._bell is not None
            bell = self._bell.receiver()
        except BaseException as e:  # reported to start() in the caller's thread
            self._error = e
            router.close(0)
            if bell is not None:
                bell.close(0)
            self._ready.set()
            return
        self._ready.set()
        poller = zmq.Poller()
        poller.register(router, zmq.POLLIN)
        poller.register(bell, zmq.POLLIN)
        try:
            while not self._stop.is_set():
                if self._backlog:
                    self._flush_backlog(router)  # retried every 1 ms while replies wait for a slow reader
                if not poller.poll(1 if self._backlog else IDLE_POLL_MS):
                    continue
                if self._stop.is_set():
                    break  # only close() rings the doorbell
                for frames in drain(router):
                    try:
                        reply = self.handle(frames)
                    except Exception:  # a bug must not kill the command thread: log and keep serving
                        self.server.stats["handler_failed"] += 1
                        self._warn("handler_failed", "command handler failed; message dropped", level=logging.ERROR, exc_info=True)
                        continue
                    if reply is not None:
                        self._send(router, reply)
        finally:
            bell.close(linger=0)
            router.close(linger=0)

    # ------------------------------------------------------------------------------- replies
    def _send(self, router: zmq.Socket, reply: list) -> None:
        identity = reply[0]
        waiting = self._backlog.get(identity)
        if waiting is not None:  # keep this peer's replies in order
            self._queue(identity, waiting, reply)
            return
        try:
            send_frames(router, reply, zmq.NOBLOCK)
        except zmq.Again:  # the peer's pipe is full: it has not read its earlier replies yet
            self._queue(identity, self._backlog.setdefault(identity, deque()), reply)
        except zmq.ZMQError:  # EHOSTUNREACH: the peer has gone
            self.server.stats["replies_to_departed_peer"] += 1

    def _queue(self, identity: bytes, waiting: deque, reply: list) -> None:
        if len(waiting) >= MAX_BACKLOG_PER_PEER or self._backlog_total >= MAX_BACKLOG_TOTAL:
            self.server.stats["replies_dropped"] += 1
            self._warn("replies_dropped", "dropped a reply: the peer has %d unread replies", len(waiting))
            return
        waiting.append(reply)
        self._backlog_total += 1

    def _flush_backlog(self, router: zmq.Socket) -> None:
        for identity, waiting in list(self._backlog.items()):
            while waiting:
                try:
                    send_frames(router, waiting[0], zmq.NOBLOCK)
                except zmq.Again:
                    break
                except zmq.ZMQError:
                    self.server.stats["replies_to_departed_peer"] += len(waiting)
                    self._backlog_total -= len(waiting)
                    waiting.clear()
                    break
                waiting.popleft()
                self._backlog_total -= 1
            if not waiting:
                del self._backlog[identity]

    def _ack(self, identity: bytes, seq: int, reason: Reason, clamped: bool = False) -> list:
        ack = Ack(seq=seq, reason=reason, safety_state=int(self.server.supervisor.state), clamped=clamped)
        return [identity] + encode(Kind.ACK, session_id=self.server.session_id, seq=seq, stamp_ns=clock.now_ns(),
                                   payload=ack.pack(), flags=int(ack.flags))

    def _refuse(self, identity: bytes, seq: int, reason: Reason, peer: str, detail: str) -> list:
        self.server.stats[f"refused_{reason.name}"] += 1
        self.server.supervisor.refusals[reason.name] += 1
        self._warn(reason.name, "refused message seq %d from %s: %s (%s)", seq, peer, reason.name, detail)
        return self._ack(identity, seq, reason)

    # ------------------------------------------------------------------------------- requests
    def handle(self, frames: list) -> list | None:
        """One request (routing id + 3 frames) -> its reply. Semantic order after framing: HELLO checks;
        NOT_HANDSHAKEN; WRONG_SESSION; then CONTROL (action, seq, stamp) or COMMAND (dtype, then the
        supervisor's order: shape, finite, seq, stamp, e-stop, armed, commander)."""
        identity = frames[0].bytes
        known = self.peers.get(identity)
        # a connection's address never changes: looked up once (libzmq raises for inproc, which costs)
        address = known.session.peer if known is not None else _peer_address(frames[0])
        try:
            msg = decode(frames[1:], expect=(Kind.HELLO, Kind.COMMAND, Kind.CONTROL))
        except ProtocolError as e:
            return self._refuse(identity, _best_effort_seq(frames), e.reason, address, str(e))
        h = msg.header
        if h.kind == Kind.HELLO:
            return self._hello(identity, h, msg.payload, address)
        peer = self.peers.get(identity)
        if peer is None:
            return self._refuse(identity, h.seq, Reason.NOT_HANDSHAKEN, address, "no handshake on this connection")
        peer.last_heard_s = time.monotonic()
        if h.session_id != self.server.session_id:
            return self._refuse(identity, h.seq, Reason.WRONG_SESSION, address, f"session {h.session_id:08x} is not this server's")
        if h.kind == Kind.CONTROL:
            return self._control(identity, h, msg.payload, peer, address)
        if h.dtype != DType.F32:
            return self._refuse(identity, h.seq, Reason.BAD_PAYLOAD, address, "command payload must be float32")
        reason = self.server.supervisor.check_command(msg.payload, h.stamp_ns, h.seq, peer.session, clock.now_ns())
        if not reason.accepted:
            self.server.stats[f"refused_{reason.name}"] += 1
            self._warn(reason.name, "refused command seq %d from %s: %s", h.seq, address, reason.name)
        else:
            peer.established = True
            self.server._command_accepted(h.stamp_ns)
        ack = Ack(seq=h.seq, reason=reason, safety_state=int(self.server.supervisor.state), clamped=reason == Reason.OK_CLAMPED)
        if self.server.on_command is not None:
            self.server.on_command(ack, msg)
        return self._ack(identity, h.seq, reason, clamped=ack.clamped)

    def _hello(self, identity: bytes, h: Any, payload: Any, address: str) -> list:
        version = payload.get("protocol_version") if isinstance(payload, dict) else None
        if h.dtype != DType.JSON or type(version) is not int or version != PROTOCOL_VERSION:
            return self._refuse(identity, h.seq, Reason.BAD_VERSION, address,
                                f"HELLO must be a JSON object with \"protocol_version\": {PROTOCOL_VERSION}, got {str(version)[:32]}")
        peer = self.peers.get(identity)
        if peer is None:  # a re-HELLO on the same connection keeps its seq guard: an accepted seq stays used
            if address != "inproc" and not self._hello_bucket.allow(address):  # new connections only: churn
                return self._refuse(identity, h.seq, Reason.RATE_LIMITED, address, "too many new connections from this address")
            self._make_room()
            peer = self.peers[identity] = Peer(ClientSession(peer=address), time.monotonic())
        peer.last_heard_s = time.monotonic()
        self.server.stats["handshakes"] += 1
        name = payload.get("client_name", "?")
        self._warn("handshake", "client %s handshook (%s)", address, str(name)[:64], level=logging.INFO)
        return [identity] + encode(Kind.WELCOME, session_id=self.server.session_id, seq=h.seq, stamp_ns=clock.now_ns(),
                                   payload=self.server.welcome())

    def _make_room(self) -> None:
        """Forget a connection when the table is full: one that never got anything accepted, else the quietest."""
        while len(self.peers) >= MAX_CLIENTS:
            idle = [(p.last_heard_s, k) for k, p in self.peers.items() if not p.established]
            pool = idle or [(p.last_heard_s, k) for k, p in self.peers.items()]
            _, victim = min(pool)
            del self.peers[victim]
            self.server.stats["clients_evicted"] += 1

    def _control(self, identity: bytes, h: Any, payload: Any, peer: Peer, address: str) -> list:
        action = payload.get("action") if isinstance(payload, dict) else None
        if h.dtype != DType.JSON or not isinstance(action, str) or action not in CONTROL_ACTIONS:
            return self._refuse(identity, h.seq, Reason.BAD_PAYLOAD, address, f"unknown control action {str(action)[:32]}")
        reason = self.server.supervisor.control(action, h.stamp_ns, h.seq, peer.session, clock.now_ns())
        if reason.accepted:
            peer.established = True
            self._warn(f"control_{action}", "control %r from %s", action, address)
        else:
            self.server.stats[f"refused_{reason.name}"] += 1
            self._warn(reason.name, "refused control %r seq %d from %s: %s", action, h.seq, address, reason.name)
        return self._ack(identity, h.seq, reason)


def _peer_address(frame: Any) -> str:
    try:
        return frame.get("Peer-Address") or "inproc"
    except (zmq.ZMQError, AttributeError):
        return "inproc"


def _best_effort_seq(frames: list) -> int:
    """The sequence number of a frame we refused, if the header got that far; else 0."""
    try:
        buf = frames[2].bytes if hasattr(frames[2], "bytes") else frames[2]
        return HEADER.unpack_from(buf)[7] if len(buf) >= HEADER.size else 0
    except Exception:
        return 0


__all__ = ["CommandChannel", "MAX_CLIENTS", "Peer"]
