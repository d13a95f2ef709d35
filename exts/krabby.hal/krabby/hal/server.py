"""HalServer: publishes a backend's telemetry and turns validated client commands into joint targets.

Threads and sockets (one socket per thread, as the pyzmq guide asks):

- the *driver* thread (whoever calls ``tick()``: a simulator's step loop, a Kit physics callback,
  ``run()``) owns the PUB socket: read backend -> publish -> supervisor tick -> backend.apply;
- the *command* thread owns the ROUTER socket and answers every HELLO, COMMAND and CONTROL at
  once with a WELCOME or an ACK, so acks never wait for a control tick.

The two meet only in the SafetySupervisor, which is thread-safe.
"""

from __future__ import annotations

import logging
import random
import socket
import threading
import time
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable

import zmq

from . import clock
from .backend import HalBackend
from .protocol import (
    PROTOCOL_VERSION, Ack, DType, Kind, ProtocolError, Reason, StateLayout, decode, encode, pack_navigation,
    pack_state, HEADER,
)
from .safety import SafetyConfig, SafetySupervisor, new_client_seq
from .types import SensorFrame

log = logging.getLogger("krabby.hal.server")

MAX_CLIENTS = 64  # handshaken peers remembered; the oldest is forgotten first (bounded memory under abuse)


class HalError(RuntimeError):
    """A HAL setup problem a user can fix (port in use, insecure tcp, ...); the message says how."""


@dataclass
class HalServerConfig:
    observation_bind: str = "inproc://hal_observation"
    command_bind: str = "inproc://hal_commands"
    safety: SafetyConfig = field(default_factory=SafetyConfig)
    status_rate_hz: float = 10.0
    telemetry_sndhwm: int = 32  # messages queued per subscriber before PUB drops (bounded memory)
    command_rcvhwm: int = 64
    allow_insecure_tcp: bool = False  # explicit opt-out of CURVE on a tcp command channel
    security: Any = None  # krabby.hal.deploy.curve.CurveServerKeys when tcp is authenticated


def bind_socket(sock: zmq.Socket, endpoint: str, what: str) -> None:
    """Bind with an error a user can act on."""
    try:
        sock.bind(endpoint)
    except zmq.ZMQError as e:
        if e.errno == zmq.EADDRINUSE:
            raise HalError(
                f"{what} endpoint {endpoint} is already in use: another HAL server is running, or pick "
                f"another address (e.g. --{what}_bind tcp://*:PORT)"
            ) from None
        raise HalError(f"cannot bind {what} endpoint {endpoint}: {e}") from None


def wait_tcp_port_released(endpoint: str, timeout_s: float = 2.0) -> bool:
    """Block until a tcp endpoint's port can be bound again (no-op for other transports)."""
    if not endpoint.startswith("tcp://"):
        return True
    host, _, port = endpoint[len("tcp://"):].rpartition(":")
    if not port.isdigit():  # tcp://host:* (a wildcard port) names no fixed port to wait for
        return True
    host = "0.0.0.0" if host in ("*", "") else host.strip("[]")
    deadline = time.monotonic() + timeout_s
    while True:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((host, int(port)))
                return True
            except OSError:
                if time.monotonic() > deadline:
                    return False
        time.sleep(0.005)


class _RateLimitedLog:
    """At most ``per_s`` log lines per key per second, so a flood of bad frames cannot flood the log."""

    def __init__(self, per_s: int = 5):
        self.per_s = per_s
        self._window: dict[str, tuple[int, int]] = {}

    def __call__(self, key: str, msg: str, *args: Any) -> None:
        sec = int(time.monotonic())
        start, n = self._window.get(key, (sec, 0))
        if start != sec:
            start, n = sec, 0
        if n < self.per_s:
            log.warning(msg, *args)
        elif n == self.per_s:
            log.warning("(further %s messages suppressed this second)", key)
        self._window[key] = (start, n + 1)


class HalServer:
    """One robot, one server. ``start()``, then ``tick()`` every control step (or ``run()``), then ``close()``."""

    def __init__(self, backend: HalBackend, config: HalServerConfig | None = None, *, context: zmq.Context | None = None):
        self.backend = backend
        self.profile = backend.profile
        self.config = config or HalServerConfig()
        self.context = context or zmq.Context.instance()
        self.session_id = random.SystemRandom().randrange(1, 2**32)
        self.supervisor = SafetySupervisor(self.profile, self.config.safety)
        self.state_layout = StateLayout(self.profile.num_joints, self.profile.num_feet)
        self.stats: Counter[str] = Counter()
        self.last_command = None
        self._pub: zmq.Socket | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread_error: BaseException | None = None
        self._clients: OrderedDict[bytes, Any] = OrderedDict()
        self._seq = Counter()
        self._last_published_stamp: dict[Kind, int] = {}
        self._next_status_ns = 0
        self._cmd_cond = threading.Condition()
        self._last_cmd_obs_stamp_ns = 0
        self._warn = _RateLimitedLog()
        self._bound: list[str] = []  # endpoints this server bound; close() waits until they are free
        self.on_command: Callable[[Ack, Any], None] | None = None  # hook for recorders and UIs

    # ------------------------------------------------------------------------------ lifecycle
    def start(self) -> "HalServer":
        self._check_security()
        pub = self.context.socket(zmq.PUB)
        pub.linger = 0
        pub.sndhwm = self.config.telemetry_sndhwm
        if self.config.security is not None and self.config.observation_bind.startswith("tcp://"):
            self.config.security.apply_to_server_socket(pub, telemetry=True)
        try:
            bind_socket(pub, self.config.observation_bind, "observation")
            self._bound.append(self.config.observation_bind)
        except BaseException:
            pub.close(0)
            raise
        self._pub = pub
        self._stop.clear()
        self._thread = threading.Thread(target=self._serve_commands, name="krabby-hal-commands", daemon=True)
        self._thread.start()
        self._ready.wait(5.0)
        if self._thread_error is not None:
            self.close()
            raise self._thread_error
        if self.config.safety.arm_on_start:
            self.supervisor.arm(clock.now_ns())
        log.info(
            "HAL server up: telemetry %s, commands %s, session %08x, robot %s",
            self.config.observation_bind, self.config.command_bind, self.session_id, self.profile.name,
        )
        return self

    def _check_security(self) -> None:
        if not self.config.command_bind.startswith("tcp://") or self.config.security is not None:
            return
        if not self.config.allow_insecure_tcp:
            raise HalError(
                f"refusing to bind the command channel on {self.config.command_bind} without authentication: "
                "anyone on the network could move the robot. Generate keys with `krabby-keys` and configure them, "
                "or pass --insecure-tcp to opt out explicitly."
            )
        log.warning(
            "INSECURE: command channel %s accepts unauthenticated clients (explicit opt-out); "
            "anyone who can reach this port can move the robot", self.config.command_bind,
        )

    def close(self) -> None:
        """Stop the command thread and close both sockets with linger 0 (the ports are free at once)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
            self._thread = None
        if self._pub is not None:
            self._pub.close(linger=0)
            self._pub = None
        release = getattr(self.config.security, "close", None)
        if release is not None:
            release()  # CurveServerKeys: stops its ZAP authenticator once none of its sockets is open
        # libzmq releases a tcp listener asynchronously (its reaper thread); wait for it so a
        # restarted server can bind the same port at once
        for endpoint in self._bound:
            wait_tcp_port_released(endpoint)
        self._bound = []

    def __enter__(self) -> "HalServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ------------------------------------------------------------------------------- driving
    def tick(self, now_ns: int | None = None) -> SensorFrame:
        """One control step: read the backend, publish, run the supervisor, apply its output."""
        frame = self.observe()
        self.actuate(now_ns)
        return frame

    def observe(self) -> SensorFrame:
        """First half of a control step: read the backend and publish its telemetry."""
        frame = self.backend.read()
        self.publish(frame)
        return frame

    def actuate(self, now_ns: int | None = None) -> Any:
        """Second half: run the supervisor and hand its output to the backend.

        Simulators call ``observe()``, wait for the command computed from that observation
        (``wait_for_command``), then ``actuate()`` and step physics: the action computed from
        observation k then drives physics step k -> k+1, exactly as in training.
        """
        cmd = self.supervisor.tick(clock.now_ns() if now_ns is None else now_ns)
        self.backend.apply(cmd)
        self.last_command = cmd
        return cmd

    def run(self, running: threading.Event | None = None, duration_s: float | None = None) -> None:
        """Tick at the profile's control rate until ``running`` is cleared or ``duration_s`` passes."""
        period_ns = int(1e9 / self.profile.control_rate_hz)
        next_ns = time.monotonic_ns()
        end_ns = None if duration_s is None else next_ns + int(duration_s * 1e9)
        while (running is None or running.is_set()) and (end_ns is None or next_ns < end_ns):
            self.tick()
            next_ns += period_ns
            delay = next_ns - time.monotonic_ns()
            if delay > 0:
                time.sleep(delay * 1e-9)
            else:
                next_ns = time.monotonic_ns()  # overran: do not try to catch up with a burst

    def wait_for_command(self, obs_stamp_ns: int, timeout_s: float) -> bool:
        """Block until a command computed from an observation at least this new was accepted (lock-step sims)."""
        with self._cmd_cond:
            return self._cmd_cond.wait_for(lambda: self._last_cmd_obs_stamp_ns >= obs_stamp_ns, timeout_s)

    # ------------------------------------------------------------------------------ telemetry
    def _send(self, kind: Kind, stamp_ns: int, payload: Any) -> None:
        assert self._pub is not None, "HalServer.start() was not called"
        seq = self._seq[kind]
        self._seq[kind] = seq + 1
        episode = int(self.backend.episode) & 0xFFFFFFFF
        self._pub.send_multipart(
            encode(kind, session_id=self.session_id, seq=seq, stamp_ns=stamp_ns, payload=payload, episode=episode), copy=False)
        self.stats[f"published_{kind.name.lower()}"] += 1

    def _changed(self, kind: Kind, stamp_ns: int) -> bool:
        if self._last_published_stamp.get(kind) == stamp_ns:
            return False
        self._last_published_stamp[kind] = stamp_ns
        return True

    def publish(self, frame: SensorFrame) -> None:
        """Publish everything in a SensorFrame; unchanged depth/scan frames are not sent again.

        STATE goes last: a client that wakes on a new state finds this step's other topics already there.
        """
        if frame.navigation is not None:
            self._send(Kind.NAVIGATION, frame.navigation.stamp_ns, pack_navigation(frame.navigation))
        if frame.height_scan is not None and self._changed(Kind.HEIGHT_SCAN, frame.height_scan.stamp_ns):
            self._send(Kind.HEIGHT_SCAN, frame.height_scan.stamp_ns, frame.height_scan.base_height_above_hit_m)
        if frame.depth is not None and self._changed(Kind.DEPTH, frame.depth.stamp_ns):
            self._send(Kind.DEPTH, frame.depth.stamp_ns, frame.depth.distance_m)
        self._send(Kind.STATE, frame.state.stamp_ns, pack_state(frame.state, self.state_layout))
        now = clock.now_ns()
        if now >= self._next_status_ns:
            self._next_status_ns = now + int(1e9 / self.config.status_rate_hz)
            self._send(Kind.STATUS, now, self.status())

    def status(self) -> dict:
        return {
            "session_id": self.session_id,
            "robot": self.profile.name,
            "episode": int(self.backend.episode),  # also in every telemetry header (protocol v2)
            "safety": self.supervisor.snapshot(),
            "clients": len(self._clients),
            "stats": dict(self.stats),
        }

    # ------------------------------------------------------------------------------- commands
    def welcome(self) -> dict:
        """The handshake reply: everything a client needs to interpret telemetry and build commands."""
        p = self.profile
        return {
            "protocol_version": PROTOCOL_VERSION,
            "session_id": self.session_id,
            "robot_profile": dict(p.source),
            "state_layout": {name: [sl.start, sl.stop] for name, sl in self.state_layout.slices().items()},
            "joint_names": list(p.joint_names),
            "foot_names": list(p.foot_names),
            "depth_shape": [p.camera.height_px, p.camera.width_px] if self.backend.provides_depth else None,
            "height_scan_points": p.height_scan.num_points if self.backend.provides_height_scan else None,
            "navigation": self.backend.provides_navigation,
            "control_rate_hz": p.control_rate_hz,
            "physics_rate_hz": p.physics_rate_hz,
            "max_command_age_s": self.config.safety.max_command_age_s,
            "watchdog_s": self.config.safety.watchdog_s,
        }

    def _serve_commands(self) -> None:
        router = self.context.socket(zmq.ROUTER)
        router.linger = 0
        router.rcvhwm = self.config.command_rcvhwm
        router.sndhwm = self.config.command_rcvhwm
        try:
            if self.config.security is not None and self.config.command_bind.startswith("tcp://"):
                self.config.security.apply_to_server_socket(router, telemetry=False)
            bind_socket(router, self.config.command_bind, "command")
            self._bound.append(self.config.command_bind)
        except BaseException as e:  # reported to start() in the caller's thread
            self._thread_error = e
            router.close(0)
            self._ready.set()
            return
        self._ready.set()
        poller = zmq.Poller()
        poller.register(router, zmq.POLLIN)
        try:
            while not self._stop.is_set():
                if not poller.poll(20):
                    continue
                while True:
                    try:
                        frames = router.recv_multipart(zmq.NOBLOCK, copy=False)
                    except zmq.Again:
                        break
                    try:
                        reply = self._handle(frames)
                    except Exception:  # a bug must not kill the command thread: log and keep serving
                        log.exception("command handler failed; message dropped")
                        continue
                    if reply is not None:
                        try:
                            router.send_multipart(reply, zmq.NOBLOCK)
                        except zmq.ZMQError:
                            self.stats["ack_send_failed"] += 1
        finally:
            router.close(linger=0)

    def _ack(self, identity: bytes, seq: int, reason: Reason, clamped: bool = False) -> list:
        ack = Ack(seq=seq, reason=reason, safety_state=int(self.supervisor.state), clamped=clamped)
        return [identity] + encode(Kind.ACK, session_id=self.session_id, seq=seq, stamp_ns=clock.now_ns(), payload=ack.pack())

    def _handle(self, frames: list) -> list | None:
        identity = frames[0].bytes
        peer = self._peer_address(frames[0])
        try:
            msg = decode(frames[1:], expect=(Kind.HELLO, Kind.COMMAND, Kind.CONTROL))
        except ProtocolError as e:
            self.stats[f"refused_{e.reason.name}"] += 1
            self.supervisor.refusals[e.reason.name] += 1
            self._warn(e.reason.name, "refused message from %s: %s", peer, e)
            return self._ack(identity, _best_effort_seq(frames), e.reason)
        h = msg.header
        if h.kind == Kind.HELLO:
            self._clients[identity] = new_client_seq()
            self._clients.move_to_end(identity)
            while len(self._clients) > MAX_CLIENTS:
                self._clients.popitem(last=False)
            self.stats["handshakes"] += 1
            log.info("client %s handshook (%s)", peer, (msg.payload or {}).get("client_name", "?") if isinstance(msg.payload, dict) else "?")
            return [identity] + encode(Kind.WELCOME, session_id=self.session_id, seq=h.seq, stamp_ns=clock.now_ns(), payload=self.welcome())
        client = self._clients.get(identity)
        if client is None:
            return self._refuse(identity, h.seq, Reason.NOT_HANDSHAKEN, peer, "no handshake on this connection")
        if h.session_id != self.session_id:
            return self._refuse(identity, h.seq, Reason.WRONG_SESSION, peer, f"session {h.session_id:08x} is not this server's")
        if h.kind == Kind.CONTROL:
            return self._control(identity, h.seq, msg.payload, peer)
        if h.dtype != DType.F32:
            return self._refuse(identity, h.seq, Reason.BAD_PAYLOAD, peer, "command payload must be float32")
        now = clock.now_ns()
        reason = self.supervisor.check_command(msg.payload, h.stamp_ns, h.seq, client, now)
        if not reason.accepted:
            self.stats[f"refused_{reason.name}"] += 1
            self._warn(reason.name, "refused command seq %d from %s: %s", h.seq, peer, reason.name)
        else:
            self.stats["commands_accepted"] += 1
            with self._cmd_cond:
                self._last_cmd_obs_stamp_ns = max(self._last_cmd_obs_stamp_ns, h.stamp_ns)
                self._cmd_cond.notify_all()
        ack = Ack(seq=h.seq, reason=reason, safety_state=int(self.supervisor.state), clamped=reason == Reason.OK_CLAMPED)
        if self.on_command is not None:
            self.on_command(ack, msg)
        return self._ack(identity, h.seq, reason, clamped=ack.clamped)

    def _refuse(self, identity: bytes, seq: int, reason: Reason, peer: str, detail: str) -> list:
        self.stats[f"refused_{reason.name}"] += 1
        self.supervisor.refusals[reason.name] += 1
        self._warn(reason.name, "refused message seq %d from %s: %s (%s)", seq, peer, reason.name, detail)
        return self._ack(identity, seq, reason)

    def _control(self, identity: bytes, seq: int, payload: Any, peer: str) -> list:
        actions = {
            "arm": self.supervisor.arm,
            "disarm": self.supervisor.disarm,
            "estop": self.supervisor.estop,
            "clear_estop": self.supervisor.clear_estop,
        }
        action = payload.get("action") if isinstance(payload, dict) else None
        if not isinstance(action, str) or action not in actions:  # e.g. {"action": [1]}: unhashable, found by fuzzing
            return self._refuse(identity, seq, Reason.BAD_PAYLOAD, peer, f"unknown control action {action!r}")
        log.warning("control %r from %s", action, peer)
        return self._ack(identity, seq, actions[action](clock.now_ns()))

    @staticmethod
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
