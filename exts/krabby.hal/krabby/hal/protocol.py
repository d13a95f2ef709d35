"""Krabby HAL wire protocol v2: the one module that defines the bytes (docs/protocol.md is its prose).

Every message, on either socket, is three ZeroMQ frames::

    [topic] [56-byte header] [payload]

(a ROUTER socket adds the peer's routing id in front). The header is little-endian::

    offset size field
    0      4    magic          b"KRBY"
    4      2    version        u16, PROTOCOL_VERSION
    6      2    kind           u16, Kind
    8      4    session_id     u32, the server's random id for this run (0 in HELLO)
    12     2    flags          u16, Flags
    14     1    dtype          u8, DType of the payload
    15     1    ndim           u8, 0..4
    16     8    seq            u64, per-sender sequence number
    24     8    stamp_ns       u64, capture time of the data (UNIX epoch ns)
    32     16   shape          4 x u32, unused dims are 0
    48     4    payload_nbytes u32, must equal len(payload)
    52     4    episode        u32, telemetry: the backend's episode counter (0 on a robot); 0 otherwise

Payloads: DType.F32 little-endian float32 row-major of ``shape``; DType.JSON utf-8 JSON object;
DType.ACK the 8-byte Ack struct; DType.NONE empty.

v2 (from v1): the header's reserved u32 carries the episode, so a client resets its observation history
on exactly the first state of a new episode (v1 had the episode only in the 10 Hz STATUS message).
"""

from __future__ import annotations

import enum
import json
import math
import struct
from dataclasses import dataclass
from functools import cached_property
from typing import Any, NamedTuple, Sequence

import numpy as np

from .types import DepthFrame, HeightScan, NavigationCommand, RobotState

MAGIC = b"KRBY"
PROTOCOL_VERSION = 2
HEADER = struct.Struct("<4sHHIHBBQQ4III")
HEADER_SIZE = HEADER.size  # 56
ACK = struct.Struct("<HHI")  # reason, safety_state, flags
MAX_DIMS = 4
MAX_PAYLOAD_BYTES = 16 * 1024 * 1024  # larger frames are refused before any allocation
F32 = np.dtype("<f4")

assert HEADER_SIZE == 56


class Kind(enum.IntEnum):
    # telemetry (server PUB -> client SUB)
    STATE = 1
    DEPTH = 2
    HEIGHT_SCAN = 3
    NAVIGATION = 4
    STATUS = 5
    # command channel (client DEALER <-> server ROUTER)
    HELLO = 16
    WELCOME = 17
    COMMAND = 18
    ACK = 19
    CONTROL = 20


class DType(enum.IntEnum):
    NONE = 0
    F32 = 1
    JSON = 2
    ACK = 3


class Flags(enum.IntFlag):
    NONE = 0
    CLAMPED = 1  # ACK: targets were clamped to joint limits before use


class Topic:
    """Frame-0 topic of each kind. SUB sockets filter on these prefixes."""

    STATE = b"state"
    DEPTH = b"depth"
    HEIGHT_SCAN = b"scan"
    NAVIGATION = b"nav"
    STATUS = b"status"
    HELLO = b"hello"
    WELCOME = b"welcome"
    COMMAND = b"cmd"
    ACK = b"ack"
    CONTROL = b"ctl"


TOPIC_OF_KIND = {
    Kind.STATE: Topic.STATE,
    Kind.DEPTH: Topic.DEPTH,
    Kind.HEIGHT_SCAN: Topic.HEIGHT_SCAN,
    Kind.NAVIGATION: Topic.NAVIGATION,
    Kind.STATUS: Topic.STATUS,
    Kind.HELLO: Topic.HELLO,
    Kind.WELCOME: Topic.WELCOME,
    Kind.COMMAND: Topic.COMMAND,
    Kind.ACK: Topic.ACK,
    Kind.CONTROL: Topic.CONTROL,
}
TELEMETRY_KINDS = (Kind.STATE, Kind.DEPTH, Kind.HEIGHT_SCAN, Kind.NAVIGATION, Kind.STATUS)
_KIND_OF_VALUE = {int(k): k for k in Kind}
_DTYPE_OF_VALUE = {int(d): d for d in DType}


class Reason(enum.IntEnum):
    """Why a command or request was accepted or refused; sent in every ACK."""

    OK = 0
    OK_CLAMPED = 1
    # framing
    MALFORMED = 10  # wrong frame count or topic
    TRUNCATED_HEADER = 11
    BAD_MAGIC = 12
    BAD_VERSION = 13
    BAD_KIND = 14
    PAYLOAD_SIZE_MISMATCH = 15
    BAD_SHAPE = 16
    NON_FINITE = 17
    BAD_PAYLOAD = 18  # undecodable JSON, unknown control action
    # timing and ordering
    STALE = 20
    REPLAYED = 21
    OUT_OF_ORDER = 22
    FUTURE_STAMP = 23
    WRONG_SESSION = 24
    # session and safety
    NOT_HANDSHAKEN = 30
    NOT_ARMED = 31
    ESTOP = 32
    RATE_LIMITED = 33  # too many handshakes from this address: retry later
    NOT_COMMANDER = 34  # another connection is commanding; this one is read-only until that one stops
    UNAUTHORIZED = 40
    # client-side only, never on the wire
    TIMEOUT = 100

    @property
    def accepted(self) -> bool:
        return self in (Reason.OK, Reason.OK_CLAMPED)


class ProtocolError(ValueError):
    """A frame that does not follow the protocol; ``reason`` says which rule it broke."""

    def __init__(self, reason: Reason, detail: str):
        super().__init__(f"{reason.name}: {detail}")
        self.reason = reason
        self.detail = detail


class Header(NamedTuple):
    """A parsed header frame. A NamedTuple, not a dataclass: one is made for every message (several per
    control step on each side), and a frozen dataclass costs five times as much to construct."""

    kind: Kind
    session_id: int
    seq: int
    stamp_ns: int
    dtype: DType
    shape: tuple[int, ...]
    flags: int = 0
    payload_nbytes: int = 0
    version: int = PROTOCOL_VERSION
    episode: int = 0  # telemetry: the backend's episode counter; 0 on the command channel

    def pack(self) -> bytes:
        dims = tuple(self.shape) + (0,) * (MAX_DIMS - len(self.shape))
        return HEADER.pack(
            MAGIC, self.version, int(self.kind), self.session_id, self.flags, int(self.dtype),
            len(self.shape), self.seq, self.stamp_ns, *dims, self.payload_nbytes, self.episode,
        )


def unpack_header(buf: bytes | memoryview, expect: Sequence[Kind] | None = None) -> Header:
    """Parse and check a header frame; raises ProtocolError with the precise reason.

    ``expect``: the kinds allowed on this socket, checked right after "kind known" (before any size rule).
    """
    if len(buf) < HEADER_SIZE:
        raise ProtocolError(Reason.TRUNCATED_HEADER, f"header is {len(buf)} bytes, expected {HEADER_SIZE}")
    if len(buf) > HEADER_SIZE:
        raise ProtocolError(Reason.MALFORMED, f"header is {len(buf)} bytes, expected {HEADER_SIZE}")
    magic, version, kind, session, flags, dtype, ndim, seq, stamp, d0, d1, d2, d3, nbytes, episode = HEADER.unpack(buf)
    if magic != MAGIC:
        raise ProtocolError(Reason.BAD_MAGIC, f"magic {magic!r}, expected {MAGIC!r}")
    if version != PROTOCOL_VERSION:
        raise ProtocolError(Reason.BAD_VERSION, f"protocol version {version}, this side speaks {PROTOCOL_VERSION}")
    kind_e = _KIND_OF_VALUE.get(kind)  # = Kind(kind), without the enum call's cost on every message
    if kind_e is None:
        raise ProtocolError(Reason.BAD_KIND, f"unknown message kind {kind}")
    if expect is not None and kind_e not in expect:
        raise ProtocolError(Reason.BAD_KIND, f"message kind {kind_e.name} not accepted here")
    dtype_e = _DTYPE_OF_VALUE.get(dtype)
    if dtype_e is None:
        raise ProtocolError(Reason.BAD_PAYLOAD, f"unknown payload dtype {dtype}")
    dims = (d0, d1, d2, d3)
    if ndim > MAX_DIMS:
        raise ProtocolError(Reason.BAD_SHAPE, f"ndim {ndim} > {MAX_DIMS}")
    if any(dims[ndim:]):
        raise ProtocolError(Reason.BAD_SHAPE, f"shape {dims} has non-zero dims beyond ndim {ndim}")
    if dtype_e != DType.F32 and ndim:
        raise ProtocolError(Reason.BAD_SHAPE, f"a {dtype_e.name} payload has no shape (ndim 0), got ndim {ndim}")
    shape = dims[:ndim]
    size = math.prod(shape)
    if (size if size else math.prod(d for d in shape if d)) > MAX_PAYLOAD_BYTES // 4:  # even beside a 0 dim: numpy refuses to reshape to it
        raise ProtocolError(Reason.BAD_SHAPE, f"shape {shape} is larger than any payload can fill")
    if nbytes > MAX_PAYLOAD_BYTES:
        raise ProtocolError(Reason.PAYLOAD_SIZE_MISMATCH, f"payload of {nbytes} bytes exceeds {MAX_PAYLOAD_BYTES}")
    if dtype_e == DType.F32 and size * 4 != nbytes:
        raise ProtocolError(Reason.PAYLOAD_SIZE_MISMATCH, f"shape {shape} needs {size * 4} bytes, header says {nbytes}")
    if dtype_e == DType.ACK and nbytes != ACK.size:
        raise ProtocolError(Reason.PAYLOAD_SIZE_MISMATCH, f"an ACK payload is {ACK.size} bytes, header says {nbytes}")
    if dtype_e == DType.NONE and nbytes:
        raise ProtocolError(Reason.PAYLOAD_SIZE_MISMATCH, f"a NONE payload is empty, header says {nbytes} bytes")
    return Header(kind_e, session, seq, stamp, dtype_e, shape, flags, nbytes, version, episode)


def _refuse_duplicate_keys(pairs: list) -> dict:
    """JSON objects with a repeated key are refused: parsers disagree on which value wins."""
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set = set()
        dup = next(k for k, _ in pairs if k in seen or seen.add(k))
        raise ValueError(f"duplicate key {dup[:64]!r}")
    return out


def hello_payload(client_name: str) -> dict:
    """The HELLO payload (§4.1); the server refuses a HELLO without this protocol_version (BAD_VERSION)."""
    return {"client_name": client_name, "protocol_version": PROTOCOL_VERSION}


# ------------------------------------------------------------------------------ message framing


def encode(kind: Kind, *, session_id: int, seq: int, stamp_ns: int, payload: Any = None, flags: int = 0,
           episode: int = 0) -> list:
    """Build the three frames of one message. ``payload``: float32 ndarray, dict (JSON), bytes (ACK) or None."""
    if payload is None:
        dtype, shape, body = DType.NONE, (), b""
    elif isinstance(payload, np.ndarray):
        arr = np.ascontiguousarray(payload, dtype=F32)
        if arr.ndim > MAX_DIMS:
            raise ValueError(f"arrays of more than {MAX_DIMS} dims cannot be sent")
        dtype, shape, body = DType.F32, arr.shape, arr  # sent zero-copy by pyzmq when large
    elif isinstance(payload, dict):
        dtype, shape, body = DType.JSON, (), json.dumps(payload, separators=(",", ":")).encode()
    elif isinstance(payload, (bytes, bytearray)):
        dtype, shape, body = DType.ACK, (), bytes(payload)
    else:
        raise TypeError(f"unsupported payload type {type(payload).__name__}")
    nbytes = body.nbytes if isinstance(body, np.ndarray) else len(body)
    header = Header(kind, session_id, seq, stamp_ns, dtype, tuple(shape), flags, nbytes, episode=episode)
    return [TOPIC_OF_KIND[kind], header.pack(), body]


@dataclass
class Message:
    topic: bytes
    header: Header
    payload: Any  # np.ndarray (read-only view), dict, bytes or None


def _buffer(frame: Any) -> memoryview:
    """The bytes of a frame without copying (accepts bytes or a zmq.Frame from copy=False)."""
    return frame.buffer if hasattr(frame, "buffer") else memoryview(frame)


def decode(frames: Sequence, *, expect: Sequence[Kind] | None = None) -> Message:
    """Parse three frames into a Message, checking every rule in docs/protocol.md."""
    if len(frames) != 3:
        raise ProtocolError(Reason.MALFORMED, f"{len(frames)} frames, expected 3 (topic, header, payload)")
    topic, header = bytes(_buffer(frames[0])), unpack_header(_buffer(frames[1]), expect)
    if TOPIC_OF_KIND[header.kind] != topic:
        raise ProtocolError(Reason.MALFORMED, f"topic {topic[:32]!r} does not match kind {header.kind.name}")
    buf = _buffer(frames[2])
    if len(buf) != header.payload_nbytes:
        raise ProtocolError(Reason.PAYLOAD_SIZE_MISMATCH, f"payload is {len(buf)} bytes, header says {header.payload_nbytes}")
    payload: Any
    if header.dtype == DType.F32:
        payload = np.frombuffer(buf, dtype=F32).reshape(header.shape)
    elif header.dtype == DType.JSON:
        try:
            payload = json.loads(bytes(buf).decode("utf-8"), object_pairs_hook=_refuse_duplicate_keys)
        except (UnicodeDecodeError, ValueError, RecursionError) as e:  # RecursionError: deep nesting (found by fuzzing)
            raise ProtocolError(Reason.BAD_PAYLOAD, f"payload is not UTF-8 JSON: {str(e)[:200]}") from None
        if not isinstance(payload, dict):
            raise ProtocolError(Reason.BAD_PAYLOAD, "JSON payload must be an object")
    elif header.dtype == DType.ACK:
        payload = bytes(buf)
    else:
        payload = None
    return Message(topic, header, payload)


# ------------------------------------------------------------------------------- payload layouts


@dataclass(frozen=True)
class StateLayout:
    """Float32 layout of a STATE payload for a robot with J joints and F feet (robot order)."""

    num_joints: int
    num_feet: int

    FIELDS = (
        ("joint_pos_rad", "J"), ("joint_vel_rad_s", "J"), ("joint_torque_nm", "J"),
        ("base_quat_wxyz", 4), ("base_ang_vel_body_rad_s", 3), ("base_lin_acc_body_m_s2", 3),
        ("base_lin_vel_body_m_s", 3), ("foot_force_n", "F"),
    )

    def slices(self) -> dict[str, slice]:
        """Field name -> slice of the payload, in wire order (computed once per layout; do not modify)."""
        return self._slices

    @cached_property
    def _slices(self) -> dict[str, slice]:
        out, i = {}, 0
        for name, n in self.FIELDS:
            size = self.num_joints if n == "J" else self.num_feet if n == "F" else n
            out[name] = slice(i, i + size)
            i += size
        return out

    @property
    def size(self) -> int:
        return 3 * self.num_joints + 13 + self.num_feet


def pack_state(state: RobotState, layout: StateLayout) -> np.ndarray:
    vec = np.empty(layout.size, dtype=F32)
    for name, sl in layout.slices().items():
        vec[sl] = getattr(state, name)
    return vec


def unpack_state(vec: np.ndarray, stamp_ns: int, layout: StateLayout) -> RobotState:
    if vec.shape != (layout.size,):
        raise ProtocolError(Reason.BAD_SHAPE, f"state payload shape {vec.shape}, expected ({layout.size},)")
    return RobotState(stamp_ns=stamp_ns, **{name: vec[sl] for name, sl in layout.slices().items()})


NAV_FIELDS = ("forward_speed_m_s", "delta_yaw_rad", "delta_next_yaw_rad", "terrain_is_flat")


def pack_navigation(nav: NavigationCommand) -> np.ndarray:
    return np.array([nav.forward_speed_m_s, nav.delta_yaw_rad, nav.delta_next_yaw_rad, float(nav.terrain_is_flat)], dtype=F32)


def unpack_navigation(vec: np.ndarray, stamp_ns: int) -> NavigationCommand:
    if vec.shape != (len(NAV_FIELDS),):
        raise ProtocolError(Reason.BAD_SHAPE, f"navigation payload shape {vec.shape}, expected ({len(NAV_FIELDS)},)")
    return NavigationCommand(stamp_ns, float(vec[0]), float(vec[1]), float(vec[2]), bool(vec[3] > 0.5))


def unpack_depth(arr: np.ndarray, stamp_ns: int) -> DepthFrame:
    if arr.ndim != 2:
        raise ProtocolError(Reason.BAD_SHAPE, f"depth payload must be 2-D (H, W), got shape {arr.shape}")
    return DepthFrame(stamp_ns, arr)


def unpack_height_scan(arr: np.ndarray, stamp_ns: int) -> HeightScan:
    if arr.ndim != 1:
        raise ProtocolError(Reason.BAD_SHAPE, f"height-scan payload must be 1-D, got shape {arr.shape}")
    return HeightScan(stamp_ns, arr)


class Ack(NamedTuple):
    """The server's answer to a COMMAND, HELLO (when refused) or CONTROL request (a NamedTuple: one per
    request on both sides)."""

    seq: int
    reason: Reason
    safety_state: int
    clamped: bool = False
    rtt_s: float = math.nan  # filled in by the client

    @property
    def accepted(self) -> bool:
        return self.reason.accepted

    def pack(self) -> bytes:
        return ACK.pack(int(self.reason), int(self.safety_state), int(self.flags))

    @property
    def flags(self) -> Flags:
        """Bit 0 CLAMPED; the server sets it in the ACK payload and mirrors it in the ACK's header flags."""
        return Flags.CLAMPED if self.clamped else Flags.NONE

    @classmethod
    def unpack(cls, seq: int, payload: bytes) -> "Ack":
        reason, state, flags = ACK.unpack(payload)
        r = _REASON_OF_VALUE.get(reason, Reason.BAD_PAYLOAD)  # an unknown reason is a bad payload
        return cls(seq, r, state, bool(flags & _CLAMPED_BIT))


_REASON_OF_VALUE = {int(r): r for r in Reason}
_CLAMPED_BIT = int(Flags.CLAMPED)
