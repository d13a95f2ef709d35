"""Byte-exact codec for the Go2 low-level messages ``unitree_go::msg::dds_::LowCmd_`` and ``LowState_``.

Standard library only (no numpy, no cyclonedds), so the same file runs inside the robot runner, the
simulated Go2 node and the version-interop test's bare Cyclone DDS environments.

Two byte layouts of the same message exist, and both are produced here from one schema:

- **Wire (XCDR1, little-endian)**: a 4-byte encapsulation header ``00 01 00 00`` followed by the
  fields packed with each primitive aligned to its own size *relative to the start of the body*
  and no padding after nested structs. This is exactly what cyclonedds' ``IdlStruct.serialize`` and
  Unitree's C++ SDK put on the wire (812 bytes for LowCmd_, 1180 for LowState_ with the header;
  checked byte for byte against cyclonedds in ``tests/test_jetson_go2_codec.py``).
- **C layout**: the message as a C struct on a little-endian machine (nested structs aligned and
  padded to 4 bytes), which is what Unitree's CRC is computed over: 812 bytes for LowCmd_
  (``<4B4IH2x`` + ``B3x5f3I``x20 + ``4B`` + ``55Bx2I``) and 1180 for LowState_.

CRC (see ../shared/research/dds_can_feasibility.md §1): CRC-32/MPEG-2 (poly 0x04C11DB7, init
0xFFFFFFFF, no reflection, no final XOR) over the C layout read as little-endian uint32 words,
without the last word (the crc field itself), each word fed most significant bit first. It is
computed here with ``zlib.crc32`` on a bit-mirrored copy (a few microseconds instead of the SDK's
1.4 ms pure-Python loop); ``crc32_mpeg2_words_bitwise`` is the SDK's algorithm, kept as the oracle.

Field names follow the IDL exactly (``motor_cmd[i].kp``, ``imu_state.quaternion`` ...). Motor slots
are in the SDK's motor order; mapping them to joints is the job of ``go2_lowlevel`` via the
robot profile, never of this file.
"""

from __future__ import annotations

import struct
import zlib
from array import array
from dataclasses import dataclass, field, fields
from typing import Any, List, Sequence, Tuple

NUM_MOTORS = 20  # slots in LowCmd_/LowState_; the Go2 uses the first 12
WIRELESS_REMOTE_BYTES = 40

ENCAPSULATION_CDR_LE = b"\x00\x01\x00\x00"  # XCDR1 little-endian, options 0
_ACCEPTED_ENCAPSULATIONS = (b"\x00\x01", b"\x00\x07")  # CDR_LE, PLAIN_CDR2_LE (same layout here: no 8-byte fields)

# Unitree conventions for LowCmd_ (unitree_sdk2 go2 low-level examples)
LOWCMD_HEAD = (0xFE, 0xEF)
LOWCMD_LEVEL_FLAG_LOWLEVEL = 0xFF
MOTOR_MODE_SERVO = 0x01  # "PMSM" servo mode: tau = tau_ff + kp (q - q_m) + kd (dq - dq_m)
POS_STOP_F = 2.146e9  # "no position target" sentinel (unitree_legged_const PosStopF)
VEL_STOP_F = 16000.0  # "no velocity target" sentinel (VelStopF)


class CodecError(ValueError):
    """A buffer is not a valid LowCmd_/LowState_ (wrong size, encapsulation or CRC)."""


# ------------------------------------------------------------------------------------------ schema
# (name, struct code or nested schema, count). The order is the IDL's.
_Schema = Tuple[Tuple[str, Any, int], ...]

MOTOR_CMD_SCHEMA: _Schema = (
    ("mode", "B", 1), ("q", "f", 1), ("dq", "f", 1), ("tau", "f", 1), ("kp", "f", 1), ("kd", "f", 1),
    ("reserve", "I", 3),
)
BMS_CMD_SCHEMA: _Schema = (("off", "B", 1), ("reserve", "B", 3))
LOWCMD_SCHEMA: _Schema = (
    ("head", "B", 2), ("level_flag", "B", 1), ("frame_reserve", "B", 1), ("sn", "I", 2), ("version", "I", 2),
    ("bandwidth", "H", 1), ("motor_cmd", MOTOR_CMD_SCHEMA, NUM_MOTORS), ("bms_cmd", BMS_CMD_SCHEMA, 1),
    ("wireless_remote", "B", WIRELESS_REMOTE_BYTES), ("led", "B", 12), ("fan", "B", 2), ("gpio", "B", 1),
    ("reserve", "I", 1), ("crc", "I", 1),
)
IMU_STATE_SCHEMA: _Schema = (
    ("quaternion", "f", 4), ("gyroscope", "f", 3), ("accelerometer", "f", 3), ("rpy", "f", 3), ("temperature", "B", 1),
)
MOTOR_STATE_SCHEMA: _Schema = (
    ("mode", "B", 1), ("q", "f", 1), ("dq", "f", 1), ("ddq", "f", 1), ("tau_est", "f", 1), ("q_raw", "f", 1),
    ("dq_raw", "f", 1), ("ddq_raw", "f", 1), ("temperature", "B", 1), ("lost", "I", 1), ("reserve", "I", 2),
)
BMS_STATE_SCHEMA: _Schema = (
    ("version_high", "B", 1), ("version_low", "B", 1), ("status", "B", 1), ("soc", "B", 1), ("current", "i", 1),
    ("cycle", "H", 1), ("bq_ntc", "B", 2), ("mcu_ntc", "B", 2), ("cell_vol", "H", 15),
)
LOWSTATE_SCHEMA: _Schema = (
    ("head", "B", 2), ("level_flag", "B", 1), ("frame_reserve", "B", 1), ("sn", "I", 2), ("version", "I", 2),
    ("bandwidth", "H", 1), ("imu_state", IMU_STATE_SCHEMA, 1), ("motor_state", MOTOR_STATE_SCHEMA, NUM_MOTORS),
    ("bms_state", BMS_STATE_SCHEMA, 1), ("foot_force", "h", 4), ("foot_force_est", "h", 4), ("tick", "I", 1),
    ("wireless_remote", "B", WIRELESS_REMOTE_BYTES), ("bit_flag", "B", 1), ("adc_reel", "f", 1),
    ("temperature_ntc1", "B", 1), ("temperature_ntc2", "B", 1), ("power_v", "f", 1), ("power_a", "f", 1),
    ("fan_frequency", "H", 4), ("reserve", "I", 1), ("crc", "I", 1),
)


def _struct_align(schema: _Schema) -> int:
    return max(struct.calcsize(code) if isinstance(code, str) else _struct_align(code) for _, code, _ in schema)


def _layout(schema: _Schema, c_layout: bool) -> str:
    """struct format (without byte-order prefix) of a schema, XCDR1 or C, aligned from offset 0."""
    out: List[str] = []
    pos = 0

    def pad_to(align: int) -> None:
        nonlocal pos
        gap = (-pos) % align
        if gap:
            out.append(f"{gap}x")
            pos += gap

    def walk(sch: _Schema) -> None:
        nonlocal pos
        for _, code, count in sch:
            for _ in range(count):
                if isinstance(code, str):
                    size = struct.calcsize(code)
                    pad_to(size)
                    out.append(code)
                    pos += size
                else:
                    if c_layout:
                        pad_to(_struct_align(code))
                    walk(code)
                    if c_layout:
                        pad_to(_struct_align(code))

    walk(schema)
    if c_layout:
        pad_to(_struct_align(schema))
    return "".join(out)


# ------------------------------------------------------------------------------------ messages
@dataclass
class MotorCmd:
    mode: int = 0
    q: float = 0.0
    dq: float = 0.0
    tau: float = 0.0
    kp: float = 0.0
    kd: float = 0.0
    reserve: List[int] = field(default_factory=lambda: [0, 0, 0])


@dataclass
class BmsCmd:
    off: int = 0
    reserve: List[int] = field(default_factory=lambda: [0, 0, 0])


@dataclass
class LowCmd:
    head: List[int] = field(default_factory=lambda: list(LOWCMD_HEAD))
    level_flag: int = LOWCMD_LEVEL_FLAG_LOWLEVEL
    frame_reserve: int = 0
    sn: List[int] = field(default_factory=lambda: [0, 0])
    version: List[int] = field(default_factory=lambda: [0, 0])
    bandwidth: int = 0
    motor_cmd: List[MotorCmd] = field(default_factory=lambda: [MotorCmd() for _ in range(NUM_MOTORS)])
    bms_cmd: BmsCmd = field(default_factory=BmsCmd)
    wireless_remote: List[int] = field(default_factory=lambda: [0] * WIRELESS_REMOTE_BYTES)
    led: List[int] = field(default_factory=lambda: [0] * 12)
    fan: List[int] = field(default_factory=lambda: [0, 0])
    gpio: int = 0
    reserve: int = 0
    crc: int = 0

    @classmethod
    def zero_torque(cls) -> "LowCmd":
        """Every motor in servo mode with no target and zero gains: the SDK examples' initial command."""
        m = cls()
        for c in m.motor_cmd:
            c.mode, c.q, c.dq, c.kp, c.kd, c.tau = MOTOR_MODE_SERVO, POS_STOP_F, VEL_STOP_F, 0.0, 0.0, 0.0
        return m

    def encode(self, *, fill_crc: bool = True) -> bytes:
        """Wire bytes (header + XCDR1 body, 812 bytes); with ``fill_crc`` the crc field is computed first."""
        values = _flatten(self, LOWCMD_SCHEMA)
        if fill_crc:
            values[-1] = self.crc = _crc_of_values(_LOWCMD_C, values)
        return ENCAPSULATION_CDR_LE + _LOWCMD_CDR.pack(*values) + _LOWCMD_TAIL

    @classmethod
    def decode(cls, buf: bytes, *, check_crc: bool = True) -> "LowCmd":
        values = _unpack(buf, _LOWCMD_CDR, "LowCmd_")
        if check_crc:
            _check_crc(_LOWCMD_C, values, "LowCmd_")
        msg, _ = _build(cls, LOWCMD_SCHEMA, values, 0)
        return msg

    def compute_crc(self) -> int:
        return _crc_of_values(_LOWCMD_C, _flatten(self, LOWCMD_SCHEMA))

    def c_layout(self) -> bytes:
        return _LOWCMD_C.pack(*_flatten(self, LOWCMD_SCHEMA))


@dataclass
class IMUState:
    quaternion: List[float] = field(default_factory=lambda: [1.0, 0.0, 0.0, 0.0])  # w, x, y, z
    gyroscope: List[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])  # rad/s, body frame
    accelerometer: List[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])  # m/s^2, body frame
    rpy: List[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])  # rad
    temperature: int = 0


@dataclass
class MotorState:
    mode: int = 0
    q: float = 0.0
    dq: float = 0.0
    ddq: float = 0.0
    tau_est: float = 0.0
    q_raw: float = 0.0
    dq_raw: float = 0.0
    ddq_raw: float = 0.0
    temperature: int = 0  # deg C
    lost: int = 0
    reserve: List[int] = field(default_factory=lambda: [0, 0])


@dataclass
class BmsState:
    version_high: int = 0
    version_low: int = 0
    status: int = 0
    soc: int = 0
    current: int = 0
    cycle: int = 0
    bq_ntc: List[int] = field(default_factory=lambda: [0, 0])
    mcu_ntc: List[int] = field(default_factory=lambda: [0, 0])
    cell_vol: List[int] = field(default_factory=lambda: [0] * 15)


@dataclass
class LowState:
    head: List[int] = field(default_factory=lambda: [0xFE, 0xEF])
    level_flag: int = 0
    frame_reserve: int = 0
    sn: List[int] = field(default_factory=lambda: [0, 0])
    version: List[int] = field(default_factory=lambda: [0, 0])
    bandwidth: int = 0
    imu_state: IMUState = field(default_factory=IMUState)
    motor_state: List[MotorState] = field(default_factory=lambda: [MotorState() for _ in range(NUM_MOTORS)])
    bms_state: BmsState = field(default_factory=BmsState)
    foot_force: List[int] = field(default_factory=lambda: [0, 0, 0, 0])  # raw sensor counts, FR FL RR RL
    foot_force_est: List[int] = field(default_factory=lambda: [0, 0, 0, 0])
    tick: int = 0  # ms counter of the robot's board
    wireless_remote: List[int] = field(default_factory=lambda: [0] * WIRELESS_REMOTE_BYTES)
    bit_flag: int = 0
    adc_reel: float = 0.0
    temperature_ntc1: int = 0
    temperature_ntc2: int = 0
    power_v: float = 0.0
    power_a: float = 0.0
    fan_frequency: List[int] = field(default_factory=lambda: [0, 0, 0, 0])
    reserve: int = 0
    crc: int = 0

    def encode(self, *, fill_crc: bool = True) -> bytes:
        values = _flatten(self, LOWSTATE_SCHEMA)
        if fill_crc:
            values[-1] = self.crc = _crc_of_values(_LOWSTATE_C, values)
        return ENCAPSULATION_CDR_LE + _LOWSTATE_CDR.pack(*values) + _LOWSTATE_TAIL

    @classmethod
    def decode(cls, buf: bytes, *, check_crc: bool = True) -> "LowState":
        values = _unpack(buf, _LOWSTATE_CDR, "LowState_")
        if check_crc:
            _check_crc(_LOWSTATE_C, values, "LowState_")
        msg, _ = _build(cls, LOWSTATE_SCHEMA, values, 0)
        return msg

    def compute_crc(self) -> int:
        return _crc_of_values(_LOWSTATE_C, _flatten(self, LOWSTATE_SCHEMA))

    def c_layout(self) -> bytes:
        return _LOWSTATE_C.pack(*_flatten(self, LOWSTATE_SCHEMA))


_CLASSES = {
    MOTOR_CMD_SCHEMA: MotorCmd, BMS_CMD_SCHEMA: BmsCmd, IMU_STATE_SCHEMA: IMUState,
    MOTOR_STATE_SCHEMA: MotorState, BMS_STATE_SCHEMA: BmsState,
}


def _flatten(obj: Any, schema: _Schema, out: List[Any] | None = None) -> List[Any]:
    out = [] if out is None else out
    for name, code, count in schema:
        v = getattr(obj, name)
        if isinstance(code, str):
            if count == 1:
                out.append(v)
            else:
                if len(v) != count:
                    raise CodecError(f"{type(obj).__name__}.{name} must have {count} entries, has {len(v)}")
                out.extend(v)
        elif count == 1:
            _flatten(v, code, out)
        else:
            if len(v) != count:
                raise CodecError(f"{type(obj).__name__}.{name} must have {count} entries, has {len(v)}")
            for item in v:
                _flatten(item, code, out)
    return out


def _build(cls: type, schema: _Schema, values: Sequence[Any], pos: int) -> Tuple[Any, int]:
    kwargs = {}
    for name, code, count in schema:
        if isinstance(code, str):
            if count == 1:
                kwargs[name] = values[pos]
            else:
                kwargs[name] = list(values[pos:pos + count])
            pos += count
        else:
            sub = _CLASSES[code]
            items = []
            for _ in range(count):
                item, pos = _build(sub, code, values, pos)
                items.append(item)
            kwargs[name] = items[0] if count == 1 else items
    return cls(**kwargs), pos


def _unpack(buf: bytes, cdr: struct.Struct, what: str) -> tuple:
    mv = memoryview(buf)
    if len(mv) < 4 + cdr.size:
        raise CodecError(f"{what}: {len(mv)} bytes, expected {4 + cdr.size} (header + XCDR1 body)")
    if bytes(mv[:2]) not in _ACCEPTED_ENCAPSULATIONS:
        raise CodecError(f"{what}: encapsulation {bytes(mv[:4]).hex()} is not little-endian CDR")
    return cdr.unpack_from(mv, 4)


# --------------------------------------------------------------------------------------------- CRC
_BITREV8 = bytes(int(f"{i:08b}"[::-1], 2) for i in range(256))


def _reverse32(x: int) -> int:
    return int(f"{x:032b}"[::-1], 2)


def crc32_mpeg2(data: bytes) -> int:
    """CRC-32/MPEG-2 of a byte string (poly 0x04C11DB7, init 0xFFFFFFFF, MSB first, no final XOR).

    Computed as the mirror image of zlib's reflected CRC-32: reflected(bit-reversed bytes) with
    zlib's pre- and post-inversion undone. Check value: crc32_mpeg2(b"123456789") == 0x0376E6E7.
    """
    return _reverse32(~zlib.crc32(bytes(data).translate(_BITREV8)) & 0xFFFFFFFF)


def crc32_words_from_c_layout(c_bytes: bytes) -> int:
    """Unitree's CRC of a C-layout message: LE uint32 words except the last, each fed MSB first."""
    words = array("I")
    words.frombytes(bytes(c_bytes[: len(c_bytes) - 4]))
    if words.itemsize != 4:  # pragma: no cover - every supported platform has 4-byte unsigned int
        raise RuntimeError("array('I') is not 32-bit on this platform")
    if struct.pack("=I", 1) == b"\x01\x00\x00\x00":  # little-endian host: make each word big-endian
        words.byteswap()
    return crc32_mpeg2(words.tobytes())


def crc32_mpeg2_words_bitwise(words: Sequence[int]) -> int:
    """The SDK's own pure-Python CRC (unitree_sdk2py.utils.crc.CRC._crc_py), kept as the test oracle."""
    crc = 0xFFFFFFFF
    poly = 0x04C11DB7
    for current in words:
        bit = 1 << 31
        for _ in range(32):
            if crc & 0x80000000:
                crc = ((crc << 1) & 0xFFFFFFFF) ^ poly
            else:
                crc = (crc << 1) & 0xFFFFFFFF
            if current & bit:
                crc ^= poly
            bit >>= 1
    return crc


def _crc_of_values(c_struct: struct.Struct, values: Sequence[Any]) -> int:
    return crc32_words_from_c_layout(c_struct.pack(*values))


def _check_crc(c_struct: struct.Struct, values: Sequence[Any], what: str) -> None:
    expected = _crc_of_values(c_struct, values)
    if values[-1] != expected:
        raise CodecError(f"{what}: CRC mismatch (message says {values[-1]:#010x}, content gives {expected:#010x})")


# ---------------------------------------------------------------------------------- precomputed
_LOWCMD_CDR = struct.Struct("<" + _layout(LOWCMD_SCHEMA, c_layout=False))
_LOWCMD_C = struct.Struct("<" + _layout(LOWCMD_SCHEMA, c_layout=True))
_LOWSTATE_CDR = struct.Struct("<" + _layout(LOWSTATE_SCHEMA, c_layout=False))
_LOWSTATE_C = struct.Struct("<" + _layout(LOWSTATE_SCHEMA, c_layout=True))
# cyclonedds pads a serialised sample (header included) to a multiple of 4 bytes
_LOWCMD_TAIL = b"\x00" * ((-(4 + _LOWCMD_CDR.size)) % 4)
_LOWSTATE_TAIL = b"\x00" * ((-(4 + _LOWSTATE_CDR.size)) % 4)

LOWCMD_WIRE_SIZE = 4 + _LOWCMD_CDR.size + len(_LOWCMD_TAIL)
LOWSTATE_WIRE_SIZE = 4 + _LOWSTATE_CDR.size + len(_LOWSTATE_TAIL)
LOWCMD_C_SIZE = _LOWCMD_C.size
LOWSTATE_C_SIZE = _LOWSTATE_C.size


def message_field_names(cls: type) -> List[str]:
    return [f.name for f in fields(cls)]


__all__ = [
    "LowCmd", "LowState", "MotorCmd", "MotorState", "IMUState", "BmsCmd", "BmsState", "CodecError",
    "crc32_mpeg2", "crc32_words_from_c_layout", "crc32_mpeg2_words_bitwise", "NUM_MOTORS",
    "LOWCMD_WIRE_SIZE", "LOWSTATE_WIRE_SIZE", "LOWCMD_C_SIZE", "LOWSTATE_C_SIZE", "MOTOR_MODE_SERVO",
    "POS_STOP_F", "VEL_STOP_F",
]
