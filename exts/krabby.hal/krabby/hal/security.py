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

Key files use the czmq/pyzmq certificate format (``zmq.auth.load_certificate`` reads them):
``NAME.key`` holds the public key, ``NAME.key_secret`` both keys and is created with mode 0600.
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import stat
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import zmq
from zmq.utils import z85

from .server import HalError

log = logging.getLogger("krabby.hal.security")

ZAP_ENDPOINT = "inproc://zeromq.zap.01"
PUBLIC_SUFFIX = ".key"
SECRET_SUFFIX = ".key_secret"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class SecurityError(HalError):
    """A key or allow-list problem a user can fix; the message names the file and what to do."""


# ------------------------------------------------------------------------------------ key files


def check_key_name(name: str) -> str:
    if not _NAME_RE.match(name) or name.endswith((PUBLIC_SUFFIX, SECRET_SUFFIX)):
        raise SecurityError(
            f"key name {name!r} is not valid: use 1-64 letters, digits, '_', '-' or '.', starting with a "
            "letter or digit, without the .key suffix"
        )
    return name


def _check_z85_key(key: bytes, where: str) -> bytes:
    try:
        ok = len(key) == 40 and len(z85.decode(key)) == 32
    except Exception:
        ok = False
    if not ok:
        raise SecurityError(f"{where}: not a CURVE key (expected 40 Z85 characters)")
    return key


def _key_file_text(public_key: bytes, secret_key: bytes | None, name: str) -> str:
    kind = "Secret" if secret_key else "Public"
    lines = [
        f"#   ****  Generated on {datetime.now(timezone.utc).isoformat(timespec='seconds')} by krabby-keys  ****",
        f"#   ZeroMQ CURVE {kind} Certificate ({name})",
        "#   DO NOT PROVIDE THIS FILE TO OTHER USERS nor change its permissions." if secret_key
        else "#   Copy this file to the peer that must accept this key (krabby-keys allow FILE --dir DIR).",
        "",
        "metadata",
        f'    name = "{name}"',
        "curve",
        f'    public-key = "{public_key.decode()}"',
    ]
    if secret_key:
        lines.append(f'    secret-key = "{secret_key.decode()}"')
    return "\n".join(lines) + "\n"


def _write_new(path: Path, text: str, mode: int) -> None:
    """Create ``path`` with ``mode`` atomically; never overwrite (O_EXCL)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.fchmod(fd, mode)  # the umask may have removed bits we want; it can never add any
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def generate_keypair(directory: str | os.PathLike, name: str) -> tuple[Path, Path]:
    """Write ``NAME.key`` (public, 0644) and ``NAME.key_secret`` (0600) in ``directory``.

    Refuses to overwrite either file: replacing a key locks out every peer that trusts the old one.
    """
    check_key_name(name)
    d = Path(directory).expanduser()
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    public_path, secret_path = d / f"{name}{PUBLIC_SUFFIX}", d / f"{name}{SECRET_SUFFIX}"
    for p in (public_path, secret_path):
        if p.exists():
            raise SecurityError(f"{p} already exists; refusing to overwrite a key (delete it first if you mean to replace it)")
    public_key, secret_key = zmq.curve_keypair()
    try:
        _write_new(secret_path, _key_file_text(public_key, secret_key, name), 0o600)
        _write_new(public_path, _key_file_text(public_key, None, name), 0o644)
    except FileExistsError as e:  # lost a race with another writer
        raise SecurityError(f"{e.filename} already exists; refusing to overwrite a key") from None
    return public_path, secret_path


def _read_keys(path: Path) -> tuple[bytes | None, bytes | None]:
    public = secret = None
    try:
        with open(path, "rb") as f:
            for raw in f:
                line = raw.strip()
                if line.startswith(b"public-key"):
                    public = line.split(b"=", 1)[1].strip(b" \t'\"")
                elif line.startswith(b"secret-key"):
                    secret = line.split(b"=", 1)[1].strip(b" \t'\"")
    except OSError as e:
        raise SecurityError(f"cannot read key file {path}: {e.strerror}") from None
    except IndexError:
        raise SecurityError(f"{path}: malformed key line") from None
    return public, secret


def load_public_key(path: str | os.PathLike) -> bytes:
    """The Z85 public key in a ``.key`` (or ``.key_secret``) file."""
    p = Path(path).expanduser()
    public, _ = _read_keys(p)
    if public is None:
        raise SecurityError(f"{p}: no public-key line; is this a key file written by krabby-keys?")
    return _check_z85_key(public, str(p))


def load_secret_key(path: str | os.PathLike) -> tuple[bytes, bytes]:
    """(public, secret) Z85 keys from a ``.key_secret`` file; refuses a file others can read."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise SecurityError(f"secret key file {p} not found; create it with `krabby-keys generate NAME --dir DIR`")
    mode = stat.S_IMODE(p.stat().st_mode)
    if os.name == "posix" and mode & 0o077:
        raise SecurityError(f"secret key file {p} is readable by other users (mode {mode:04o}); run `chmod 600 {p}`")
    public, secret = _read_keys(p)
    if secret is None or public is None:
        raise SecurityError(f"{p}: not a secret key file (no secret-key line); pass the NAME{SECRET_SUFFIX} file")
    _check_z85_key(public, str(p))
    _check_z85_key(secret, str(p))
    if zmq.curve_public(secret) != public:
        raise SecurityError(f"{p}: public and secret keys do not belong together")
    return public, secret


def add_to_allow_list(public_key_file: str | os.PathLike, allow_dir: str | os.PathLike) -> Path:
    """Copy a client's public key file into the allow-list directory (as NAME.key); returns the new path."""
    src = Path(public_key_file).expanduser()
    if src.name.endswith(SECRET_SUFFIX):
        raise SecurityError(f"{src} is a SECRET key file; allow the public {src.name[: -len(SECRET_SUFFIX)]}{PUBLIC_SUFFIX} instead")
    public, secret = _read_keys(src)
    if secret is not None:
        raise SecurityError(f"{src} contains a secret key; allow-lists hold public keys only")
    if public is None:
        raise SecurityError(f"{src}: no public-key line; is this a key file written by krabby-keys?")
    _check_z85_key(public, str(src))
    name = src.name[: -len(PUBLIC_SUFFIX)] if src.name.endswith(PUBLIC_SUFFIX) else src.stem
    check_key_name(name)
    d = Path(allow_dir).expanduser()
    d.mkdir(parents=True, exist_ok=True, mode=0o755)
    dst = d / f"{name}{PUBLIC_SUFFIX}"
    if dst.exists():
        if load_public_key(dst) == public:
            return dst  # already allowed: idempotent
        raise SecurityError(f"{dst} already holds a different key named {name!r}; remove it first or rename the new key")
    try:
        _write_new(dst, _key_file_text(public, None, name), 0o644)
    except FileExistsError:
        raise SecurityError(f"{dst} appeared while writing; try again") from None
    return dst


class AllowList:
    """The public keys in a directory of ``*.key`` files, re-read whenever the directory changes.

    ``krabby-keys allow`` (or deleting a file) takes effect at the next handshake without restarting
    the server; connections already authenticated are not cut (restart the server to revoke at once).
    """

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory).expanduser()
        if not self.directory.is_dir():
            raise SecurityError(
                f"allow-list directory {self.directory} does not exist; add client keys with "
                f"`krabby-keys allow CLIENT.key --dir {self.directory}`"
            )
        self._signature: tuple = ()
        self._keys: dict[bytes, str] = {}
        self._lock = threading.Lock()
        self.refresh()
        if not self._keys:
            log.warning("allow-list %s holds no client keys: no client can connect", self.directory)

    def _scan(self) -> tuple:
        try:
            entries = [e for e in os.scandir(self.directory) if e.name.endswith(PUBLIC_SUFFIX) and e.is_file()]
        except OSError:
            return ("unreadable",)
        return tuple(sorted((e.name, e.stat().st_mtime_ns, e.stat().st_size) for e in entries))

    def refresh(self) -> None:
        sig = self._scan()
        with self._lock:
            if sig == self._signature:
                return
            keys: dict[bytes, str] = {}
            for name, _, _ in sig[:1000] if sig != ("unreadable",) else ():
                path = self.directory / name
                try:
                    keys[load_public_key(path)] = name[: -len(PUBLIC_SUFFIX)]
                except SecurityError as e:
                    log.warning("allow-list: skipping %s", e)
            self._keys, self._signature = keys, sig
            log.info("allow-list %s: %d client key(s)", self.directory, len(keys))

    def lookup(self, public_key_z85: bytes) -> str | None:
        """The name of an allowed key, or None."""
        self.refresh()
        return self._keys.get(public_key_z85)

    def __len__(self) -> int:
        return len(self._keys)


# ------------------------------------------------------------------------------------ ZAP handler

_Policy = Callable[[str, bytes], "str | None"]  # (peer address, client public key z85) -> user id or None
_registry_lock = threading.Lock()
_handlers: dict[int, "_ZapHandler"] = {}


class _ZapHandler:
    """The ZAP (RFC 27) endpoint of one zmq.Context; answers CURVE handshakes by domain policy."""

    PRUNE_S = 0.25  # how often the thread checks whether the sockets it serves were closed

    def __init__(self, context: zmq.Context):
        self.context = context
        self.stopping = False
        self.domains: dict[bytes, _Policy] = {}
        self.sockets: list[tuple[zmq.Socket, bytes]] = []
        self._stop = threading.Event()
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
        try:
            sock = self._bind()
        except BaseException as e:
            self._error = e
            self._ready.set()
            return
        self._ready.set()
        next_prune = time.monotonic() + self.PRUNE_S
        try:
            while not self._stop.is_set():
                if sock.poll(50):
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
        _check_z85_key(self.public_key, "server public key")
        _check_z85_key(self.secret_key, "server secret key")
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
        _check_z85_key(self.public_key, "client public key")
        _check_z85_key(self.secret_key, "client secret key")
        _check_z85_key(self.server_public_key, "server public key")

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


__all__ = [
    "SecurityError", "CurveServerKeys", "CurveClientKeys", "AllowList", "generate_keypair", "load_public_key",
    "load_secret_key", "add_to_allow_list", "check_key_name", "running_authenticators",
]
