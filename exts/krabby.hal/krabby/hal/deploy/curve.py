"""CURVE authentication and encryption for the HAL's tcp endpoints, with a ZAP allow-list.

What this gives a tcp deployment (docs/security.md has the threat model):

- The command channel (ROUTER) is a CURVE *server*: traffic is encrypted and every client must prove
  it holds the secret key of a public key in the **allow-list directory** (one ``NAME.key`` file per
  client, written by ``krabby-keys allow``). The check runs in a ZAP handler during the CURVE
  handshake, so a refused peer never completes the handshake: it never gets a WELCOME and none of its
  bytes reach the safety supervisor. Each refusal is logged with the peer's address.
- Telemetry (PUB) can be CURVE too (``telemetry_encrypted``): subscribers must then present an
  allowed key as well, and nobody else can read the robot's state or camera.
- Clients authenticate the server by its public key: a client configured with the wrong server key
  never connects (no man in the middle can pose as the robot).
- inproc endpoints stay keyless: the server only calls the hooks below for ``tcp://`` endpoints.

ZeroMQ pitfall handled here: a CURVE server socket with **no** ZAP handler running in its context
accepts *every* client key. ``apply_to_server_socket`` therefore starts this module's ZAP handler for
the socket's context before the socket is bound, and the handler stays up until every socket it
serves is closed (``CurveServerKeys.close()``, which ``HalServer.close()`` calls, stops it at once).
One handler serves all Krabby servers of a context and dispatches on the ZAP domain, because the
ZAP endpoint (``inproc://zeromq.zap.01``) can be bound only once per context.

Key files and the allow-list directory are read by ``keys.py``.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import zmq
from zmq.utils import z85

from ..zmq_io import Doorbell
from .keys import (
    PUBLIC_SUFFIX,
    SECRET_SUFFIX,
    AllowList,
    SecurityError,
    check_key_name,
    check_z85_key,
    load_public_key,
    load_secret_key,
)

log = logging.getLogger("krabby.hal.security")

ZAP_ENDPOINT = "inproc://zeromq.zap.01"


# ------------------------------------------------------------------------------------ ZAP handler

_Policy = Callable[[str, bytes], "str | None"]  # (peer address, client public key z85) -> user id or None
_registry_lock = threading.Lock()
_handlers: dict[int, "_ZapHandler"] = {}


class _ZapHandler:
    """The ZAP (RFC 27) endpoint of one zmq.Context; answers CURVE handshakes by domain policy."""

    PRUNE_S = 0.25  # how often the thread checks whether the sockets it serves were closed
    POLL_MS = 50  # the thread's poll timeout: it wakes for the prune (close() rings a doorbell instead)

    def __init__(self, context: zmq.Context):
        self.context = context
        self.stopping = False
        self.domains: dict[bytes, _Policy] = {}
        self.sockets: list[tuple[zmq.Socket, bytes]] = []
        self._stop = threading.Event()
        self._bell = Doorbell(context, "hal-zap")  # _release() rings it: the thread stops at once
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="krabby-hal-zap", daemon=True)

    # called with _registry_lock held
    def prune(self) -> None:
        self.sockets = [(s, d) for s, d in self.sockets if not s.closed]
        live = {d for _, d in self.sockets}
        for d in [d for d in self.domains if d not in live]:
            del self.domains[d]

    def _retire_locked(self) -> None:
        self.stopping = True
        if _handlers.get(id(self.context)) is self:
            del _handlers[id(self.context)]

    def _bind(self) -> zmq.Socket:
        sock = self.context.socket(zmq.REP)
        sock.linger = 0
        deadline = time.monotonic() + 1.0
        while True:  # a handler that is shutting down may still hold the endpoint for a moment
            try:
                sock.bind(ZAP_ENDPOINT)
                return sock
            except zmq.ZMQError as e:
                if e.errno != zmq.EADDRINUSE or time.monotonic() > deadline:
                    sock.close(0)
                    raise SecurityError(
                        "cannot start the ZAP authenticator: another ZAP handler (e.g. zmq.auth's "
                        "ThreadAuthenticator) is bound in this zmq.Context; give the HAL its own context"
                    ) from None
                time.sleep(0.01)

    def _run(self) -> None:
        bell = self._bell.receiver()
        try:
            sock = self._bind()
        except BaseException as e:
            self._error = e
            bell.close(0)
            self._bell.close()
            self._ready.set()
            return
        self._ready.set()
        next_prune = time.monotonic() + self.PRUNE_S
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        poller.register(bell, zmq.POLLIN)
        try:
            while not self._stop.is_set():
                if poller.poll(self.POLL_MS):
                    if self._stop.is_set():
                        break  # only _release() rings the doorbell
                    try:
                        request = sock.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        continue
                    try:
                        reply = self._answer(request)
                    except Exception:  # never leave the REP socket waiting for a reply; deny instead
                        log.exception("ZAP handler failed on a request; denying it")
                        reply = [b"1.0", request[1] if len(request) > 1 else b"", b"500", b"internal error", b"", b""]
                    sock.send_multipart(reply)
                if time.monotonic() >= next_prune:
                    next_prune = time.monotonic() + self.PRUNE_S
                    with _registry_lock:
                        self.prune()
                        if not self.sockets:
                            self._retire_locked()
                            break
        finally:
            with _registry_lock:
                self._retire_locked()
            try:
                sock.unbind(ZAP_ENDPOINT)  # synchronous, so a new handler can bind at once
            except zmq.ZMQError:
                pass
            sock.close(0)
            bell.close(0)
            self._bell.close()  # here too: a handler that retired itself is never released

    def _answer(self, request: list[bytes]) -> list[bytes]:
        # request: version, request id, domain, address, identity, mechanism, credentials...
        if len(request) < 6:
            return [b"1.0", request[1] if len(request) > 1 else b"", b"400", b"malformed ZAP request", b"", b""]
        version, request_id, domain, address, _identity, mechanism = request[:6]
        if version != b"1.0":
            return [b"1.0", request_id, b"400", b"unsupported ZAP version", b"", b""]
        peer = address.decode(errors="replace") or "?"
        if mechanism != b"CURVE" or len(request) < 7 or len(request[6]) != 32:
            return [b"1.0", request_id, b"400", b"CURVE required", b"", b""]
        with _registry_lock:
            policy = self.domains.get(domain)
        if policy is None:
            log.warning("ZAP: refused a handshake from %s for unknown domain %r", peer, domain)
            return [b"1.0", request_id, b"400", b"unknown domain", b"", b""]
        try:
            user = policy(peer, z85.encode(request[6]))
        except Exception:  # a policy bug must deny, never allow, and never kill the handler
            log.exception("ZAP policy failed; denying %s", peer)
            user = None
        if user is None:
            return [b"1.0", request_id, b"400", b"client key not allowed", b"", b""]
        return [b"1.0", request_id, b"200", b"OK", user.encode(), b""]


def _register(sock: zmq.Socket, domain: bytes, policy: _Policy) -> "_ZapHandler":
    """Make sure a ZAP handler serves ``sock``'s context and knows ``domain`` before ``sock`` binds."""
    ctx = sock.context
    with _registry_lock:
        h = _handlers.get(id(ctx))
        new = h is None or h.context is not ctx
        if new:  # (a retiring handler is already out of the registry; the new one waits for its endpoint)
            h = _ZapHandler(ctx)
            _handlers[id(ctx)] = h
        h.domains[domain] = policy
        h.sockets.append((sock, domain))
    if new:
        h.thread.start()
    h._ready.wait(5.0)  # never let a CURVE socket bind before its authenticator answers
    if h._error is not None or not h._ready.is_set():
        with _registry_lock:
            h._retire_locked()
        raise h._error or SecurityError("the ZAP authenticator did not start within 5 s")
    return h


def _release(handlers: list["_ZapHandler"]) -> None:
    """Forget closed sockets; stop (and join) each handler that no longer serves any socket."""
    with _registry_lock:
        for h in handlers:
            h.prune()
            if not h.sockets:
                h._retire_locked()
    for h in handlers:
        if h.stopping:
            h._stop.set()
            h._bell.ring()
            if h.thread.is_alive() and h.thread is not threading.current_thread():
                h.thread.join(2.0)


def running_authenticators() -> int:
    """How many ZAP handler threads are alive (tests check that close() stopped them)."""
    with _registry_lock:
        return sum(1 for h in _handlers.values() if h.thread.is_alive())


# ------------------------------------------------------------------------------- the two configs

_domain_ids = itertools.count(1)


@dataclass(eq=False)  # holds runtime state (stats, its ZAP registrations): compared by identity
class CurveServerKeys:
    """Server side: its key pair and the allow-list directory of client public keys.

    Pass as ``HalServerConfig.security``. ``telemetry_encrypted=False`` leaves the PUB socket plain
    (anyone who reaches the port can read telemetry; nobody can command without an allowed key).
    """

    public_key: bytes
    secret_key: bytes = field(repr=False)
    allow_dir: Path
    telemetry_encrypted: bool = True
    stats: Counter = field(default_factory=Counter, init=False, repr=False)
    refused_peers: deque = field(default_factory=lambda: deque(maxlen=100), init=False, repr=False)

    def __post_init__(self) -> None:
        check_z85_key(self.public_key, "server public key")
        check_z85_key(self.secret_key, "server secret key")
        self.allow_list = AllowList(self.allow_dir)
        self.domain = f"krabby-{os.getpid()}-{next(_domain_ids)}".encode()
        self._log_times: deque = deque(maxlen=5)
        self._warned_plain_telemetry = False
        self._handlers: list[_ZapHandler] = []

    @classmethod
    def from_files(cls, secret_key_file: str | os.PathLike, allow_dir: str | os.PathLike, *,
                   telemetry_encrypted: bool = True) -> "CurveServerKeys":
        public, secret = load_secret_key(secret_key_file)
        return cls(public, secret, Path(allow_dir).expanduser(), telemetry_encrypted)

    @classmethod
    def from_dir(cls, key_dir: str | os.PathLike, name: str, allow_dir: str | os.PathLike, *,
                 telemetry_encrypted: bool = True) -> "CurveServerKeys":
        return cls.from_files(Path(key_dir).expanduser() / f"{check_key_name(name)}{SECRET_SUFFIX}", allow_dir,
                              telemetry_encrypted=telemetry_encrypted)

    # -- the HalServer hook
    def apply_to_server_socket(self, sock: zmq.Socket, telemetry: bool) -> None:
        """Make ``sock`` (not yet bound) a CURVE server whose clients the allow-list checks."""
        if telemetry and not self.telemetry_encrypted:
            if not self._warned_plain_telemetry:
                log.warning("telemetry is NOT encrypted (telemetry_encrypted = false): anyone who reaches the "
                            "observation port can read the robot's state and camera")
                self._warned_plain_telemetry = True
            return
        h = _register(sock, self.domain, self._authorize)
        if h not in self._handlers:
            self._handlers.append(h)
        sock.curve_server = True
        sock.curve_secretkey = self.secret_key
        sock.curve_publickey = self.public_key
        sock.zap_domain = self.domain

    def close(self) -> None:
        """Release the ZAP handler for this server's sockets that are closed (HalServer.close calls it)."""
        handlers, self._handlers = self._handlers, []
        _release(handlers)
        self._handlers = [h for h in handlers if not h.stopping]  # still serving a socket that is open

    def _authorize(self, peer: str, client_key: bytes) -> str | None:
        name = self.allow_list.lookup(client_key)
        if name is not None:
            self.stats["accepted"] += 1
            log.info("CURVE client %r authenticated from %s", name, peer)
            return name
        self.stats["refused"] += 1
        self.refused_peers.append((peer, client_key.decode(), time.time()))
        now = time.monotonic()
        if len(self._log_times) < self._log_times.maxlen or now - self._log_times[0] > 1.0:
            self._log_times.append(now)
            log.warning("refused CURVE handshake from %s: client key %s is not in the allow-list %s",
                        peer, client_key.decode(), self.allow_list.directory)
        return None


@dataclass
class CurveClientKeys:
    """Client side: its key pair and the server's public key (which authenticates the server).

    Pass as ``HalClientConfig.security``. ``telemetry_encrypted`` must match the server's setting.
    """

    public_key: bytes
    secret_key: bytes = field(repr=False)
    server_public_key: bytes
    telemetry_encrypted: bool = True

    def __post_init__(self) -> None:
        check_z85_key(self.public_key, "client public key")
        check_z85_key(self.secret_key, "client secret key")
        check_z85_key(self.server_public_key, "server public key")

    @classmethod
    def from_files(cls, secret_key_file: str | os.PathLike, server_public_key_file: str | os.PathLike, *,
                   telemetry_encrypted: bool = True) -> "CurveClientKeys":
        public, secret = load_secret_key(secret_key_file)
        return cls(public, secret, load_public_key(server_public_key_file), telemetry_encrypted)

    @classmethod
    def from_dir(cls, key_dir: str | os.PathLike, name: str, server_name: str, *,
                 telemetry_encrypted: bool = True) -> "CurveClientKeys":
        d = Path(key_dir).expanduser()
        return cls.from_files(d / f"{check_key_name(name)}{SECRET_SUFFIX}", d / f"{check_key_name(server_name)}{PUBLIC_SUFFIX}",
                              telemetry_encrypted=telemetry_encrypted)

    # -- the HalClient hook
    def apply_to_client_socket(self, sock: zmq.Socket) -> None:
        if sock.type == zmq.SUB and not self.telemetry_encrypted:
            return
        sock.curve_serverkey = self.server_public_key
        sock.curve_publickey = self.public_key
        sock.curve_secretkey = self.secret_key


__all__ = ["CurveServerKeys", "CurveClientKeys", "running_authenticators"]
