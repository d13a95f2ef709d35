"""The server's telemetry publisher: an XPUB on its own thread, so no subscriber can slow the control tick.

libzmq stores every distinct subscription a peer sends and processes subscriptions in whichever
thread uses the publishing socket. With a plain PUB driven by the control tick, one subscriber that
sent 200 000 subscriptions held 528 MiB and stalled the tick for 0.9 s (audit D2). Here:

- the control tick hands its messages to this thread through a bounded queue and rings an inproc
  doorbell once (``send`` then ``ring``; neither blocks; when the thread is behind, the *oldest* queued message is dropped,
  so the newest state always goes out, and counted in ``stats["telemetry_dropped"]``);
- the thread owns an XPUB in manual mode and applies only subscriptions that are a prefix of a
  telemetry topic (``""``, everything, included); others are refused, counted and logged (rate-limited);
- every tcp subscriber has an upstream byte budget: ``UPSTREAM_BUDGET_BYTES`` plus
  ``UPSTREAM_BYTES_PER_S`` for each second connected (a handshake and all five topics take < 1 KiB,
  CURVE included). A connection that sends more is shut down, which makes libzmq drop everything it
  stored for it. The count is the kernel's (Linux ``TCP_INFO``); elsewhere the budget is not enforced;
- the receive buffer of each subscriber connection is small (``ZMQ_RCVBUF``) and one upstream message
  is at most ``MAX_UPSTREAM_MSG_BYTES`` (``ZMQ_MAXMSGSIZE``), so little can arrive between two checks.
"""

from __future__ import annotations

import logging
import os
import socket
import struct
import threading
import time
from collections import Counter, deque
from typing import Any

import zmq
from zmq.utils.monitor import parse_monitor_message

from .protocol import TOPIC_OF_KIND, TELEMETRY_KINDS, Kind
from .ratelimit import RateLimitedLog
from .zmq_io import Doorbell, drain, send_frames

log = logging.getLogger("krabby.hal.server")

UPSTREAM_BUDGET_BYTES = 4096
UPSTREAM_BYTES_PER_S = 64.0  # room for ZMTP heartbeats (a PING is ~10 bytes)
MAX_UPSTREAM_MSG_BYTES = 1024  # CURVE's INITIATE with metadata is ~300 bytes; a subscription ~16
SUBSCRIBER_RCVBUF_BYTES = 8192
QUEUE_LEN = 64  # messages between the tick and this thread (a tick publishes at most 5)
DOORBELL_HWM = 1000  # empty rings; large so that a ring is never refused while the queue holds a message
CHECK_EVERY_S = 0.25

_TCP_INFO_BYTES_RECEIVED = 128  # offset of tcpi_bytes_received (u64) in Linux's struct tcp_info (>= 4.1)
ALLOWED_SUBSCRIPTIONS = frozenset(
    TOPIC_OF_KIND[k][:n] for k in TELEMETRY_KINDS for n in range(len(TOPIC_OF_KIND[k]) + 1)
)


def _dup(fd: int) -> socket.socket | None:
    try:
        return socket.socket(fileno=os.dup(fd))
    except OSError:
        return None


def _tcp_bytes_received(s: socket.socket) -> int | None:
    if not hasattr(socket, "TCP_INFO"):
        return None
    try:
        info = s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
    except OSError:
        return None
    return struct.unpack_from("<Q", info, _TCP_INFO_BYTES_RECEIVED)[0] if len(info) >= _TCP_INFO_BYTES_RECEIVED + 8 else None


class TelemetryPublisher:
    """``start()`` binds ``endpoint``; ``send(frames)`` from the control tick; ``close()``."""

    def __init__(self, context: zmq.Context, endpoint: str, *, sndhwm: int, security: Any, stats: Counter,
                 warn: RateLimitedLog, bind: Any):
        self.context, self.endpoint, self.sndhwm, self.security = context, endpoint, sndhwm, security
        self.stats, self._warn, self._bind = stats, warn, bind
        self._queue: deque = deque(maxlen=QUEUE_LEN)
        self._bell: Doorbell | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._ready = threading.Event()
        self.state_subscribed = threading.Event()  # set once a subscription that receives STATE is applied
        self._error: BaseException | None = None
        self._peers: dict[int, tuple[Any, float]] = {}  # fd -> (peer address, accepted at, monotonic s)
        self._port: int | None = None

    def start(self) -> None:
        self._bell = Doorbell(self.context, "hal-telemetry", hwm=DOORBELL_HWM)
        self._thread = threading.Thread(target=self._serve, name="krabby-hal-telemetry-pub", daemon=True)
        self._thread.start()
        self._ready.wait(5.0)
        if self._error is not None:
            self.close()
            raise self._error

    def send(self, frames: list) -> bool:
        """Queue one message for publication (never blocks); False when it pushed out an older one (counted).

        It is forwarded at the next ``ring()``: a tick queues all its messages, then rings once."""
        assert self._bell is not None, "TelemetryPublisher.start() was not called"
        full = len(self._queue) == QUEUE_LEN
        self._queue.append(frames)  # deque(maxlen): drops the oldest when full
        if full:
            self.stats["telemetry_dropped"] += 1
        return not full

    def ring(self) -> None:
        """Wake the thread to forward everything queued."""
        assert self._bell is not None, "TelemetryPublisher.start() was not called"
        self._bell.ring()  # when refused, a ring is already pending: the thread drains the whole queue on each one

    def close(self) -> None:
        self._stop.set()
        if self._bell is not None:
            self._bell.ring()  # wake the thread now instead of at its next poll timeout
        if self._thread is not None:
            self._thread.join(timeout=2.0)
            self._thread = None
        if self._bell is not None:
            self._bell.close()
            self._bell = None

    # ------------------------------------------------------------------------------ the thread
    def _serve(self) -> None:
        xpub = self.context.socket(zmq.XPUB)
        pull = monitor = None
        tcp = self.endpoint.startswith("tcp://")
        try:
            xpub.linger = 0
            xpub.sndhwm = self.sndhwm
            xpub.rcvhwm = 64
            xpub.setsockopt(zmq.XPUB_MANUAL, 1)
            xpub.setsockopt(zmq.MAXMSGSIZE, MAX_UPSTREAM_MSG_BYTES)
            xpub.setsockopt(zmq.RCVBUF, SUBSCRIBER_RCVBUF_BYTES)
            if self.security is not None and tcp:
                self.security.apply_to_server_socket(xpub, telemetry=True)
            if tcp:
                monitor = xpub.get_monitor_socket(zmq.EVENT_ACCEPTED | zmq.EVENT_DISCONNECTED | zmq.EVENT_CLOSED)
            self._bind(xpub, self.endpoint, "observation")
            if tcp:
                self._port = int(xpub.getsockopt_string(zmq.LAST_ENDPOINT).rpartition(":")[2])
            assert self._bell is not None
            pull = self._bell.receiver()
        except BaseException as e:  # reported to start() in the caller's thread
            self._error = e
            for s in (monitor, pull, xpub):
                if s is not None:
                    s.close(0)
            self._ready.set()
            return
        self._ready.set()
        poller = zmq.Poller()
        for s in (pull, xpub, monitor):
            if s is not None:
                poller.register(s, zmq.POLLIN)
        next_check = time.monotonic() + CHECK_EVERY_S
        try:
            while not self._stop.is_set():
                events = dict(poller.poll(50))
                if pull in events or self._queue:
                    self._forward(pull, xpub)
                refused = self._subscriptions(xpub) if xpub in events else 0
                if monitor is not None and monitor in events:
                    self._on_monitor(monitor)
                now = time.monotonic()
                if monitor is not None and (refused or now >= next_check):
                    next_check = now + CHECK_EVERY_S
                    self._enforce_budgets(now)
        finally:
            if monitor is not None:
                xpub.disable_monitor()
                monitor.close(0)
            pull.close(0)
            xpub.close(0)

    def _forward(self, pull: zmq.Socket, xpub: zmq.Socket) -> None:
        for _ in drain(pull):  # the rings themselves carry nothing
            pass
        while True:
            try:
                frames = self._queue.popleft()
            except IndexError:
                return
            send_frames(xpub, frames, copy=False)  # XPUB drops per subscriber at its HWM: never blocks

    def _subscriptions(self, xpub: zmq.Socket) -> int:
        """Apply allowed (un)subscriptions, refuse the rest; returns how many were refused."""
        refused = 0
        for _ in range(4096):  # bounded per call, so forwarding telemetry is never starved
            try:
                frame = xpub.recv(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                break
            data = frame.bytes
            if not data or data[0] not in (0, 1):
                continue
            topic = data[1:]
            if topic in ALLOWED_SUBSCRIPTIONS:
                xpub.setsockopt(zmq.SUBSCRIBE if data[0] == 1 else zmq.UNSUBSCRIBE, topic)
                if data[0] == 1 and TOPIC_OF_KIND[Kind.STATE].startswith(topic):
                    self.state_subscribed.set()
            elif data[0] == 1:
                if not refused:  # one line per batch at most (and rate-limited): a flood is thousands
                    self._warn("subscription", "refused subscription %r from %s: not a telemetry topic prefix",
                               topic[:32], _peer(frame))
                refused += 1
        if refused:
            self.stats["subscriptions_refused"] += refused
        return refused

    def _on_monitor(self, monitor: zmq.Socket) -> None:
        while True:
            try:
                ev = parse_monitor_message(monitor.recv_multipart(zmq.NOBLOCK))
            except zmq.Again:
                return
            fd = ev["value"]
            if ev["event"] == zmq.EVENT_ACCEPTED:
                s = _dup(fd)
                if s is not None:
                    try:
                        self._peers[fd] = (s.getpeername(), time.monotonic())
                    except OSError:
                        pass
                    finally:
                        s.close()
            else:
                self._peers.pop(fd, None)

    def _enforce_budgets(self, now: float) -> None:
        for fd, (peer, since) in list(self._peers.items()):
            s = _dup(fd)
            if s is None:
                self._peers.pop(fd, None)
                continue
            try:
                # the fd may have been closed and its number reused: act only on the connection we accepted
                if s.getpeername() != peer or s.getsockname()[1] != self._port:
                    self._peers.pop(fd, None)
                    continue
                got = _tcp_bytes_received(s)
                if got is None or got <= UPSTREAM_BUDGET_BYTES + UPSTREAM_BYTES_PER_S * (now - since):
                    continue
                s.shutdown(socket.SHUT_RDWR)  # libzmq sees the connection end and frees what it stored for it
                self._peers.pop(fd, None)
                self.stats["subscribers_cut"] += 1
                self._warn("subscriber_cut", "telemetry subscriber %s sent %d bytes upstream (budget %d): disconnected",
                           peer, got, UPSTREAM_BUDGET_BYTES)
            except OSError:
                self._peers.pop(fd, None)
            finally:
                s.close()


def _peer(frame: Any) -> str:
    try:
        return frame.get("Peer-Address") or "inproc"
    except (zmq.ZMQError, AttributeError):
        return "inproc"
