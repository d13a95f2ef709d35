"""CURVE key files and the server's allow-list directory (the format ``krabby-keys`` writes).

Key files use the czmq/pyzmq certificate format (``zmq.auth.load_certificate`` reads them):
``NAME.key`` holds the public key, ``NAME.key_secret`` both keys and is created with mode 0600.
The allow-list is a directory of client ``NAME.key`` files, re-read when it changes.
``curve.py`` applies these keys to sockets; docs/security.md has the threat model.
"""

from __future__ import annotations

import logging
import os
import re
import stat
import threading
from datetime import datetime, timezone
from pathlib import Path

import zmq
from zmq.utils import z85

from ..server import HalError

log = logging.getLogger("krabby.hal.security")


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


def check_z85_key(key: bytes, where: str) -> bytes:
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
    return check_z85_key(public, str(p))


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
    check_z85_key(public, str(p))
    check_z85_key(secret, str(p))
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
    check_z85_key(public, str(src))
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
            if sig == ("unreadable",):  # logged once per change: the scan repeats at every handshake
                log.warning("allow-list %s is missing or unreadable: every client is refused", self.directory)
            else:
                log.info("allow-list %s: %d client key(s)", self.directory, len(keys))

    def lookup(self, public_key_z85: bytes) -> str | None:
        """The name of an allowed key, or None."""
        self.refresh()
        return self._keys.get(public_key_z85)

    def __len__(self) -> int:
        return len(self._keys)


__all__ = [
    "SecurityError", "AllowList", "generate_keypair", "load_public_key", "load_secret_key", "add_to_allow_list",
    "check_key_name", "check_z85_key",
]
