"""HalServer: publishes a backend's telemetry and turns validated client commands into joint targets.

Threads and sockets (one socket per thread, as the pyzmq guide asks):

- the *driver* thread (whoever calls ``tick()``: a simulator's step loop, a Kit physics callback,
  ``run()``): read backend -> encode telemetry -> supervisor tick -> backend.apply. It touches no
  socket a peer can reach: telemetry goes to the publisher thread over an inproc queue that never blocks;
- the *publisher* thread (``telemetry_pub.py``) owns the XPUB and everything subscribers can send;
- the *command* thread (``command_channel.py``) owns the ROUTER and answers every HELLO, COMMAND and
  CONTROL at once with a WELCOME or an ACK, so acks never wait for a control tick.

The command thread and the tick meet only in the SafetySupervisor, which is thread-safe.

Telemetry ``seq`` is the control tick: every message published in one ``publish()`` carries the same
seq, so a DEPTH frame pairs with the STATE of its tick by seq (docs/protocol.md §3).
"""

from __future__ import annotations

import logging
import random
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import zmq

from . import clock
from .backend import HalBackend
from .command_channel import MAX_CLIENTS, CommandChannel
from .protocol import PROTOCOL_VERSION, TELEMETRY_KINDS, Ack, Kind, StateLayout, encode, pack_navigation, pack_state
from .ratelimit import RateLimitedLog
from .safety import SafetyConfig, SafetySupervisor
from .telemetry_pub import TelemetryPublisher
from .types import SensorFrame

log = logging.getLogger("krabby.hal.server")
_PUBLISHED_STAT = {k: f"published_{k.name.lower()}" for k in TELEMETRY_KINDS}  # stats keys, built once (per message before)


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
        self._publisher: TelemetryPublisher | None = None
        self._commands = CommandChannel(self)
        self._tick = 0  # telemetry seq of the next publish() (the number of publish() calls so far)
        self._seq = Counter()  # per kind: the last published seq + 1
        self._last_published_stamp: dict[Kind, int] = {}
        self._next_status_ns = 0
        self._cmd_cond = threading.Condition()
        self._last_cmd_obs_stamp_ns = 0
        self._warn = RateLimitedLog(log)
        self._bound: list[str] = []  # endpoints this server bound; close() waits until they are free
        self.on_command: Callable[[Ack, Any], None] | None = None  # hook for recorders and UIs

    # ------------------------------------------------------------------------------ lifecycle
    def start(self) -> "HalServer":
        self._check_security()
        self._publisher = TelemetryPublisher(
            self.context, self.config.observation_bind, sndhwm=self.config.telemetry_sndhwm,
            security=self.config.security, stats=self.stats, warn=self._warn, bind=self._bind)
        self._publisher.start()
        try:
            self._commands.start()
        except BaseException:
            self.close()
            raise
        if self.config.safety.arm_on_start:
            self.supervisor.arm(clock.now_ns())
        log.info(
            "HAL server up: telemetry %s, commands %s, session %08x, robot %s",
            self.config.observation_bind, self.config.command_bind, self.session_id, self.profile.name,
        )
        return self

    def _bind(self, sock: zmq.Socket, endpoint: str, what: str) -> None:
        bind_socket(sock, endpoint, what)
        self._bound.append(endpoint)

    @property
    def _thread(self) -> threading.Thread | None:
        """The command thread (fuzzing checks that it is alive)."""
        return self._commands.thread

    @property
    def _clients(self) -> dict:
        """Handshaken connections (routing id -> command_channel.Peer)."""
        return self._commands.peers

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
        """Stop both threads and close their sockets with linger 0 (the ports are free at once)."""
        self._commands.close()
        if self._publisher is not None:
            self._publisher.close()
            self._publisher = None
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

    def wait_for_subscriber(self, timeout_s: float) -> bool:
        """Block until a client's subscription to STATE has been applied (True), or the timeout (False).
        It stays true afterwards, even if that client leaves: meant for the first client of a server.

        A lock-step simulator that owns its client calls this before its first ``observe()``: the
        client's SUB connects and subscribes asynchronously, and telemetry published before the
        publisher applied the subscription is dropped (PUB/SUB semantics), which would cost the
        first step its observation (and a teacher its first height scan)."""
        assert self._publisher is not None, "HalServer.start() was not called"
        return self._publisher.state_subscribed.wait(timeout_s)

    def wait_for_command(self, obs_stamp_ns: int, timeout_s: float) -> bool:
        """Block until a command computed from an observation at least this new was accepted (lock-step sims)."""
        with self._cmd_cond:
            return self._cmd_cond.wait_for(lambda: self._last_cmd_obs_stamp_ns >= obs_stamp_ns, timeout_s)

    # ------------------------------------------------------------------------------ telemetry
    def _send(self, kind: Kind, stamp_ns: int, payload: Any) -> None:
        assert self._publisher is not None, "HalServer.start() was not called"
        episode = int(self.backend.episode) & 0xFFFFFFFF
        frames = encode(kind, session_id=self.session_id, seq=self._tick, stamp_ns=stamp_ns, payload=payload, episode=episode)
        self._seq[kind] = self._tick + 1
        self._publisher.send(frames)  # never blocks; when behind, it drops its oldest (stats telemetry_dropped)
        self.stats[_PUBLISHED_STAT[kind]] += 1

    def _changed(self, kind: Kind, stamp_ns: int) -> bool:
        if self._last_published_stamp.get(kind) == stamp_ns:
            return False
        self._last_published_stamp[kind] = stamp_ns
        return True

    def publish(self, frame: SensorFrame) -> None:
        """Publish everything in a SensorFrame; unchanged depth/scan frames are not sent again.

        STATE goes last: a client that wakes on a new state finds this step's other topics already there.
        Every message of one call carries the same seq (the tick); DEPTH values beyond the camera's
        ``max_distance_m`` are clipped to it (+inf, "no return", stays).
        """
        if frame.navigation is not None:
            self._send(Kind.NAVIGATION, frame.navigation.stamp_ns, pack_navigation(frame.navigation))
        if frame.height_scan is not None and self._changed(Kind.HEIGHT_SCAN, frame.height_scan.stamp_ns):
            self._send(Kind.HEIGHT_SCAN, frame.height_scan.stamp_ns, frame.height_scan.base_height_above_hit_m)
        if frame.depth is not None and self._changed(Kind.DEPTH, frame.depth.stamp_ns):
            self._send(Kind.DEPTH, frame.depth.stamp_ns, self._clip_depth(frame.depth.distance_m))
        self._send(Kind.STATE, frame.state.stamp_ns, pack_state(frame.state, self.state_layout))
        now = clock.now_ns()
        if now >= self._next_status_ns:
            self._next_status_ns = now + int(1e9 / self.config.status_rate_hz)
            self._send(Kind.STATUS, now, self.status())
        self._publisher.ring()  # one wake-up of the publisher thread per tick, for all of its messages
        self._tick += 1

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

    def _command_accepted(self, obs_stamp_ns: int) -> None:
        """Called by the command thread: wakes ``wait_for_command``."""
        self.stats["commands_accepted"] += 1
        with self._cmd_cond:
            self._last_cmd_obs_stamp_ns = max(self._last_cmd_obs_stamp_ns, obs_stamp_ns)
            self._cmd_cond.notify_all()

    def _clip_depth(self, distance_m: Any) -> Any:
        """Finite ranges beyond the camera's range become the range, as in training; +inf (no return) stays."""
        far = float(self.profile.camera.max_distance_m)
        arr = np.asarray(distance_m, dtype=np.float32)
        if np.any(np.isfinite(arr) & (arr > far)):
            arr = np.where(np.isfinite(arr) & (arr > far), np.float32(far), arr)
        return arr


__all__ = ["HalServer", "HalServerConfig", "HalError", "MAX_CLIENTS", "bind_socket", "wait_tcp_port_released"]
