"""Structure-aware mutators of HAL wire-protocol messages (used by the fuzz harnesses in ``fuzz_targets.py``).

Mutators start from a *valid* message and apply 0..k structure-aware changes: header fields set to
boundary values (magic, version, kind, session, dtype, ndim, seq, stamp, shape, payload size),
NaN/Inf/huge payload values, huge or inconsistent shapes, empty and extra frames, frame-count
changes, byte flips, random bytes, control/JSON payload garbage. With k = 0 the message is valid,
so the accepting paths are exercised too. Nothing here is needed at run time.
"""

from __future__ import annotations

import json
import math
import random
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import clock
from ..protocol import HEADER, HEADER_SIZE, MAX_PAYLOAD_BYTES, TOPIC_OF_KIND, DType, Kind, Topic

# (name, struct format, offset) of every header field, from protocol.HEADER "<4sHHIHBBQQ4III"
HEADER_FIELDS = (
    ("magic", "4s", 0), ("version", "H", 4), ("kind", "H", 6), ("session", "I", 8), ("flags", "H", 12),
    ("dtype", "B", 14), ("ndim", "B", 15), ("seq", "Q", 16), ("stamp", "Q", 24), ("dim0", "I", 32),
    ("dim1", "I", 36), ("dim2", "I", 40), ("dim3", "I", 44), ("nbytes", "I", 48), ("episode", "I", 52),
)
assert HEADER_FIELDS[-1][2] + 4 == HEADER_SIZE == HEADER.size

_BITS = {"B": 8, "H": 16, "I": 32, "Q": 64}
SPECIAL_FLOATS = (math.nan, math.inf, -math.inf, 3.4e38, -3.4e38, 1e-45, -0.0, 1e30, 100.0, -100.0)
CONTROL_ACTIONS = ("arm", "disarm", "estop", "clear_estop")


def rss_bytes() -> int:
    """Resident set size of this process (Linux /proc; 0 where unavailable)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * 4096
    except (OSError, IndexError, ValueError):
        return 0


def _interesting_int(rng: random.Random, bits: int) -> int:
    top = (1 << bits) - 1
    return rng.choice((0, 1, 2, top, top - 1, 1 << (bits - 1), rng.randrange(0, top + 1), rng.randrange(0, 256)))


def _set_field(header: bytearray, rng: random.Random, name: str, fmt: str, off: int, ctx: "MutationContext") -> None:
    if fmt == "4s":
        value = rng.choice((b"KRBY", b"XXXX", b"krby", b"\x00\x00\x00\x00", bytes(rng.randrange(256) for _ in range(4))))
    elif name == "kind":
        value = rng.choice([int(k) for k in Kind] + [0, 999, 0xFFFF])
    elif name == "dtype":
        value = rng.choice([int(d) for d in DType] + [4, 255])
    elif name == "ndim":
        value = rng.choice((0, 1, 2, 3, 4, 5, 255))
    elif name == "session":
        value = rng.choice((ctx.session_id, ctx.session_id ^ 1, 0, 0xFFFFFFFF, _interesting_int(rng, 32)))
    elif name == "stamp":
        now = clock.now_ns()
        value = rng.choice((now, now - int(0.05e9), now - int(0.2e9), now - int(10e9), now + int(0.005e9), now + int(0.05e9),
                            now + int(10e9), 0, (1 << 64) - 1))
    elif name == "seq":
        value = rng.choice((ctx.seq, ctx.seq + 1, ctx.seq - 1 if ctx.seq else 0, 0, ctx.max_seq, _interesting_int(rng, 64) % (ctx.max_seq + 1)))
    else:
        value = _interesting_int(rng, _BITS[fmt])
    struct.pack_into("<" + fmt, header, off, value)


def _payload_with_special(rng: random.Random, payload: bytes) -> bytes:
    n = len(payload) // 4
    if n == 0:
        return payload
    arr = np.frombuffer(payload[: 4 * n], dtype="<f4").copy()
    for _ in range(rng.randint(1, 3)):
        arr[rng.randrange(n)] = rng.choice(SPECIAL_FLOATS)
    return arr.tobytes() + payload[4 * n:]


def _random_bytes(rng: random.Random, max_len: int) -> bytes:
    n = rng.choice((0, 1, 4, 8, 55, 56, 57, rng.randrange(0, max_len + 1)))
    return rng.randbytes(n)


def _json_value(rng: random.Random, depth: int = 0) -> Any:
    """A JSON value of any type (type confusion is the point): valid control actions included."""
    kind = rng.randrange(9 if depth < 2 else 6)
    if kind == 0:
        return rng.choice(CONTROL_ACTIONS)
    if kind == 1:
        return rng.choice(("", "ARM", "arm ", "estop\x00", "\u2603", "x" * rng.randrange(0, 2000)))
    if kind == 2:
        return rng.choice((0, -1, 1, 2**31, 2**63, 2**64 + 1, -(2**63)))
    if kind == 3:
        return rng.choice((0.5, -0.0, 1e308, float("nan"), float("inf")))  # json.dumps writes NaN / Infinity
    if kind == 4:
        return rng.choice((True, False))
    if kind == 5:
        return None
    if kind == 6:
        return [_json_value(rng, depth + 1) for _ in range(rng.randrange(0, 4))]
    if kind == 7:
        return {rng.choice(("action", "a", "")): _json_value(rng, depth + 1) for _ in range(rng.randrange(0, 3))}
    return [[[[]]]] * rng.randrange(1, 50)


@dataclass
class MutationContext:
    session_id: int
    seq: int
    max_seq: int = (1 << 64) - 1
    big_payload_bytes: int = 256 * 1024  # the largest payload a mutation may build (memory of the run)


def _set_layout(header: bytearray, dtype: DType | None, dims: list[int], nbytes: int | None) -> None:
    """Rewrite the dtype (offset 14), ndim (15), shape (32..47) and payload size (48) fields."""
    if dtype is not None:
        struct.pack_into("<B", header, 14, int(dtype))
    struct.pack_into("<B", header, 15, len(dims))
    struct.pack_into("<4I", header, 32, *(list(dims) + [0] * (4 - len(dims))))
    if nbytes is not None:
        struct.pack_into("<I", header, 48, nbytes)


def _reshape(header: bytearray, rng: random.Random, payload: bytes) -> bytes:
    """Change the announced shape: consistent with the payload (BAD_SHAPE paths) or huge (size checks)."""
    choice = rng.randrange(4)
    if choice == 0:  # consistent re-shape of the same bytes
        n = len(payload) // 4
        dims = rng.choice(([n], [1, n], [n, 1], [2, n // 2] if n % 2 == 0 else [n], [0]))
        if dims == [0]:
            payload = b""
    elif choice == 1:  # huge, inconsistent with nbytes
        dims = [rng.choice((0xFFFFFFFF, 1 << 20, 65535)) for _ in range(rng.randint(1, 4))]
    elif choice == 2:  # a zero dimension next to a huge one
        dims = [0, 0xFFFFFFFF]
        payload = b""
    else:  # announce exactly MAX_PAYLOAD_BYTES + 4 bytes
        dims = [MAX_PAYLOAD_BYTES // 4 + 1]
    _set_layout(header, None, dims, len(payload) if choice in (0, 2) else None)
    return payload


NUM_OPS = 15  # mutation operators of ``mutate``, numbered 0..14 (see the branches below)


def mutate(frames: list[bytes], rng: random.Random, ctx: MutationContext, max_mutations: int = 3,
           ops: list[int] | None = None) -> list[bytes]:
    """Structure-aware mutations of a valid three-frame message: ``ops`` (operator numbers), or
    0..max_mutations operators drawn from ``rng``; the details of each come from ``rng``."""
    topic, header, payload = bytes(frames[0]), bytearray(frames[1]), bytes(frames[2])
    extra: list[bytes] = []
    mode = "normal"
    if ops is None:
        ops = [rng.randrange(NUM_OPS) for _ in range(rng.randint(0, max_mutations))]
    for op in ops:
        if len(header) < HEADER_SIZE and op not in (4, 5, 9, 10, 11, 12, 13):
            continue  # the header was truncated by an earlier mutation: field edits no longer apply
        if op <= 3:  # one header field to a boundary / interesting value (most common)
            name, fmt, off = rng.choice(HEADER_FIELDS)
            _set_field(header, rng, name, fmt, off, ctx)
        elif op == 4:
            payload = _payload_with_special(rng, payload)
        elif op == 5:  # payload size changes (header left as is, or fixed up to match)
            cut = rng.randrange(0, len(payload) + 1) if payload else 0
            payload = rng.choice((payload[:cut], payload + _random_bytes(rng, 64), b""))
            if rng.random() < 0.5 and len(header) >= HEADER_SIZE:
                struct.pack_into("<I", header, 48, len(payload))
        elif op == 6:
            payload = _reshape(header, rng, payload)
        elif op == 7:  # a big but legal-sized payload, announced consistently
            n = rng.choice((1, 1024, ctx.big_payload_bytes // 4))
            payload = np.full(n, rng.choice(SPECIAL_FLOATS), dtype="<f4").tobytes()
            _set_layout(header, DType.F32, [n], len(payload))
        elif op == 8:  # JSON payloads: control actions, wrong types, garbage
            key = rng.choice(("action", "action", "client_name", "protocol_version", "x"))
            obj: Any = {key: _json_value(rng)} if rng.random() < 0.8 else _json_value(rng)
            r = rng.random()
            if r < 0.85:
                payload = json.dumps(obj).encode()
            elif r < 0.95:
                payload = b"{not json" + _random_bytes(rng, 16)
            else:  # deep nesting: json.loads raises RecursionError, not ValueError
                depth = rng.choice((100, 5000, 100000))
                payload = rng.choice((b"[" * depth + b"]" * depth, b'{"action":' * depth + b"1" + b"}" * depth))
            _set_layout(header, DType.JSON, [], len(payload))
            if rng.random() < 0.5:
                kind = rng.choice((Kind.CONTROL, Kind.HELLO, Kind.COMMAND))
                struct.pack_into("<H", header, 6, int(kind))
                topic = TOPIC_OF_KIND[kind]
        elif op == 9:  # topic
            topic = rng.choice([t for t in vars(Topic).values() if isinstance(t, bytes)] + [b"", _random_bytes(rng, 40)])
        elif op == 10:  # header length
            header = bytearray(rng.choice((bytes(header[: rng.randrange(HEADER_SIZE)]), bytes(header) + _random_bytes(rng, 16), b"")))
        elif op == 11:  # byte flips anywhere in the header
            for _ in range(rng.randint(1, 4)):
                if header:
                    i = rng.randrange(len(header))
                    header[i] ^= 1 << rng.randrange(8)
        elif op == 12:  # frame-count changes
            mode = rng.choice(("drop_topic", "drop_payload", "only_header", "extra", "empty_frames", "swap"))
            if mode == "extra":
                extra = [_random_bytes(rng, 64) for _ in range(rng.randint(1, 3))]
        elif op == 13:  # entirely random message
            return [_random_bytes(rng, 128) for _ in range(rng.randint(1, 5))]
        else:  # kind changed with the topic kept consistent (the server must check kind before trusting it)
            kind = rng.choice(list(Kind))
            struct.pack_into("<H", header, 6, int(kind))
            if rng.random() < 0.7:
                topic = TOPIC_OF_KIND[kind]
    out = [topic, bytes(header), payload]
    if mode == "drop_topic":
        out = out[1:]
    elif mode == "drop_payload":
        out = out[:2]
    elif mode == "only_header":
        out = [out[1]]
    elif mode == "extra":
        out = out + extra
    elif mode == "empty_frames":
        out = [b"", b"", b""]
    elif mode == "swap":
        out = [out[1], out[0], out[2]]
    return out
