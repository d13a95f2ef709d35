"""Fault-injection tools for the HAL: a client process to kill, a lossy ZMTP proxy, kill-to-safe timing.

Used by ``tests/test_fault_injection.py`` and ``bench/fault_timing.py``; also handy to check a real
setup (``python -m krabby.hal.testing.faults client ...`` is a minimal policy stand-in that holds the default
pose). Everything binds to 127.0.0.1 only, and every loop is bounded in time.

- ``client`` (``python -m krabby.hal.testing.faults client OBS CMD [--key-dir D --name N --server-name S]``):
  connects, then sends the default pose for every new state; prints ``ready`` after the first
  accepted command. Kill it with SIGKILL to simulate a policy process dying mid-run.
- ``LossyZmtpProxy``: a TCP proxy that parses ZMTP 3 framing (NULL mechanism, i.e. ``--insecure-tcp``)
  and drops, delays and reorders whole messages per direction. With CURVE a reordered or replayed
  message fails decryption and libzmq drops the connection, so loss there shows up as reconnects.
- ``kill_to_safe``: SIGKILL a client process while the server runs at its control rate; returns the
  times from the kill to HOLD and to DAMP as the supervisor recorded them.
"""

from __future__ import annotations

import argparse
import heapq
import itertools
import os
import random
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

ZMTP_GREETING_BYTES = 64


# -------------------------------------------------------------------------------- lossy proxy


@dataclass
class LinkPolicy:
    """What the proxy does to each whole message in one direction (probabilities in [0, 1])."""

    drop: float = 0.0
    delay_p: float = 0.0  # share of messages delayed by a uniform draw in [delay_min_s, delay_max_s]
    delay_min_s: float = 0.0
    delay_max_s: float = 0.0
    reorder: float = 0.0  # share of messages held back and sent after the next one

    @classmethod
    def clean(cls) -> "LinkPolicy":
        return cls()


class _Pump(threading.Thread):
    """One direction of one proxied connection: parse ZMTP frames, apply the policy, forward."""

    def __init__(self, proxy: "LossyZmtpProxy", src: socket.socket, dst: socket.socket, direction: str):
        super().__init__(name=f"lossy-proxy-{direction}", daemon=True)
        self.proxy, self.src, self.dst, self.direction = proxy, src, dst, direction
        self.rng = random.Random(proxy.seed + (1 if direction == "up" else 2))
        self._seq = itertools.count()

    def run(self) -> None:
        buf = bytearray()
        greeting_left = ZMTP_GREETING_BYTES
        frames: list[bytes] = []  # data frames of the message being assembled
        pending: list[tuple[float, int, bytes]] = []  # (release time, order, bytes)
        held: bytes | None = None
        try:
            while not self.proxy._stop.is_set():
                now = time.monotonic()
                while pending and pending[0][0] <= now:
                    self.dst.sendall(heapq.heappop(pending)[2])
                timeout = 0.02 if not pending else max(0.0, min(0.02, pending[0][0] - now))
                readable, _, _ = select.select([self.src], [], [], timeout)
                if not readable:
                    continue
                data = self.src.recv(65536)
                if not data:
                    break
                if greeting_left > 0:  # forward the greeting byte for byte: libzmq negotiates in steps
                    n = min(greeting_left, len(data))
                    self.dst.sendall(data[:n])
                    greeting_left -= n
                    data = data[n:]
                buf += data
                while True:
                    frame = self._next_frame(buf)
                    if frame is None:
                        break
                    flags, raw = frame
                    if flags & 0x04:  # a command (READY, PING, SUBSCRIBE...): never touched
                        self.dst.sendall(raw)
                        continue
                    frames.append(raw)
                    if flags & 0x01:  # MORE: the message continues
                        continue
                    message, frames = b"".join(frames), []
                    held = self._route(message, pending, held)
        except OSError:
            pass
        finally:
            self.proxy._close_pair(self.src, self.dst)

    @staticmethod
    def _next_frame(buf: bytearray) -> tuple[int, bytes] | None:
        if len(buf) < 2:
            return None
        flags = buf[0]
        if flags & 0x02:  # LONG: 8-byte size
            if len(buf) < 9:
                return None
            size, head = int.from_bytes(buf[1:9], "big"), 9
        else:
            size, head = buf[1], 2
        if len(buf) < head + size:
            return None
        raw = bytes(buf[: head + size])
        del buf[: head + size]
        return flags, raw

    def _route(self, message: bytes, pending: list, held: bytes | None) -> bytes | None:
        policy = self.proxy.policy[self.direction]
        stats = self.proxy.stats
        rng = self.rng
        if rng.random() < policy.drop:
            stats[f"{self.direction}_dropped"] += 1
            return held
        release = time.monotonic()
        if rng.random() < policy.delay_p:
            release += rng.uniform(policy.delay_min_s, policy.delay_max_s)
            stats[f"{self.direction}_delayed"] += 1
        if held is None and rng.random() < policy.reorder:
            stats[f"{self.direction}_reordered"] += 1
            return message  # sent right after the next message
        heapq.heappush(pending, (release, next(self._seq), message))
        if held is not None:
            heapq.heappush(pending, (release, next(self._seq), held))
        stats[f"{self.direction}_forwarded"] += 1
        return None


class LossyZmtpProxy:
    """Listens on 127.0.0.1:<port>, forwards to ``upstream`` (host, port), mangling whole messages.

    ``policy["up"]`` applies to client -> server bytes, ``policy["down"]`` to server -> client.
    Change them at any time with ``set_policy``. ``close()`` stops every thread within ~0.1 s.
    """

    def __init__(self, upstream: tuple[str, int], *, seed: int = 0, up: LinkPolicy | None = None, down: LinkPolicy | None = None):
        self.upstream = upstream
        self.seed = seed
        self.policy = {"up": up or LinkPolicy(), "down": down or LinkPolicy()}
        self.stats: Counter = Counter()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._socks: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(16)
        self.port = self._listener.getsockname()[1]
        self.endpoint = f"tcp://127.0.0.1:{self.port}"
        self._accept_thread = threading.Thread(target=self._accept, name="lossy-proxy-accept", daemon=True)
        self._accept_thread.start()

    def set_policy(self, up: LinkPolicy | None = None, down: LinkPolicy | None = None) -> None:
        if up is not None:
            self.policy["up"] = up
        if down is not None:
            self.policy["down"] = down

    def _accept(self) -> None:
        while not self._stop.is_set():
            readable, _, _ = select.select([self._listener], [], [], 0.05)
            if not readable:
                continue
            try:
                client, _ = self._listener.accept()
            except OSError:
                continue
            try:
                server = socket.create_connection(self.upstream, timeout=2.0)
            except OSError:  # upstream down: refuse this connection, the peer retries
                client.close()
                continue
            server.settimeout(None)
            for s in (client, server):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.stats["connections"] += 1
            pumps = [_Pump(self, client, server, "up"), _Pump(self, server, client, "down")]
            with self._lock:
                self._socks += [client, server]
                self._threads += pumps
            for p in pumps:
                p.start()

    def _close_pair(self, a: socket.socket, b: socket.socket) -> None:
        for s in (a, b):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def drop_connections(self) -> None:
        """Cut every proxied connection (as a cable pull would); peers reconnect through the proxy."""
        with self._lock:
            socks = list(self._socks)
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self) -> None:
        self._stop.set()
        self._accept_thread.join(1.0)
        self.drop_connections()
        with self._lock:
            threads, socks = list(self._threads), list(self._socks)
        for t in threads:
            t.join(1.0)
        for s in socks + [self._listener]:
            s.close()

    def __enter__(self) -> "LossyZmtpProxy":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


# ------------------------------------------------------------------------------ client process


def spawn_client(observation: str, command: str, *, key_dir: str | None = None, name: str = "policy",
                 server_name: str = "robot", telemetry_encrypted: bool = True, cwd: str | None = None) -> subprocess.Popen:
    """Start ``python -m krabby.hal.testing.faults client ...``; read its stdout for ``ready``."""
    cmd = [sys.executable, "-m", "krabby.hal.testing.faults", "client", observation, command]
    if key_dir is not None:
        cmd += ["--key-dir", key_dir, "--name", name, "--server-name", server_name]
        if not telemetry_encrypted:
            cmd.append("--plain-telemetry")
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=cwd)


def wait_ready(proc: subprocess.Popen, timeout_s: float = 20.0) -> bool:
    """True once the client process printed ``ready`` (its first command was accepted)."""
    deadline = time.monotonic() + timeout_s
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        readable, _, _ = select.select([proc.stdout], [], [], 0.1)
        if readable:
            line = proc.stdout.readline()
            if line.strip() == b"ready":
                return True
    return False


def _client_main(args: argparse.Namespace) -> int:
    import numpy as np

    from ..client import HalClient, HalClientConfig
    from ..protocol import Kind

    security = None
    if args.key_dir:
        from ..deploy.curve import CurveClientKeys

        security = CurveClientKeys.from_dir(args.key_dir, args.name, args.server_name, telemetry_encrypted=not args.plain_telemetry)
    client = HalClient(HalClientConfig(args.observation, args.command, handshake_timeout_s=10.0, ack_timeout_s=0.2,
                                       client_name="fault-client", security=security))
    welcome = client.connect()
    targets = np.asarray(welcome.profile.default_pos_rad, dtype=np.float32)
    ready = False
    deadline = time.monotonic() + args.max_s
    while time.monotonic() < deadline:
        s = client.wait_new(Kind.STATE, 0.5)
        if s is None:
            continue
        ack = client.send_command(targets, s)
        if ack.accepted and not ready:
            print("ready", flush=True)
            ready = True
    client.close()
    return 0


# --------------------------------------------------------------------------- kill-to-safe timing


@dataclass
class KillTiming:
    kill_to_hold_s: float
    kill_to_damp_s: float
    last_command_to_hold_s: float


def kill_to_safe(server: Any, proc: subprocess.Popen, timeout_s: float = 5.0) -> KillTiming:
    """SIGKILL ``proc`` (a client commanding ``server``, which must be ticking in another thread),
    then wait for HOLD and DAMP; times come from the supervisor's own event stamps (wire clock)."""
    from .. import clock

    sup = server.supervisor
    t_kill = clock.now_ns()
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout_s)
    deadline = time.monotonic() + timeout_s
    hold = damp = None
    while time.monotonic() < deadline and damp is None:
        for e in list(sup.events):
            if e.stamp_ns >= t_kill and e.kind == "ACTIVE->HOLD" and hold is None:
                hold = e.stamp_ns
            if e.stamp_ns >= t_kill and e.kind == "HOLD->DAMP" and damp is None:
                damp = e.stamp_ns
        time.sleep(0.005)
    if hold is None or damp is None:
        events = [(e.kind, (e.stamp_ns - t_kill) * 1e-9) for e in list(sup.events)[-6:]]
        raise TimeoutError(f"no HOLD/DAMP within {timeout_s} s of the kill (state {sup.state.name}; "
                           f"last events, s after the kill: {events})")
    return KillTiming((hold - t_kill) * 1e-9, (damp - t_kill) * 1e-9, (hold - sup._last_valid_ns) * 1e-9)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m krabby.hal.testing.faults")
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("client", help="a minimal client that holds the default pose (kill it to test the watchdog)")
    c.add_argument("observation")
    c.add_argument("command")
    c.add_argument("--key-dir")
    c.add_argument("--name", default="policy")
    c.add_argument("--server-name", default="robot")
    c.add_argument("--plain-telemetry", action="store_true")
    c.add_argument("--max-s", type=float, default=120.0, help="exit after this long in any case")
    args = ap.parse_args(argv)
    return _client_main(args)


if __name__ == "__main__":
    sys.exit(main())
