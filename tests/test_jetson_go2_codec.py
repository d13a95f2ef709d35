"""Go2 LowCmd_/LowState_ codec: sizes, C layout, Unitree's CRC against known vectors, byte-exact wire bytes."""

from __future__ import annotations

import random
import struct

import pytest

from krabby.hal.devices import unitree_go_msgs as m

# The SDK's own pack formats (unitree_sdk2py/utils/crc.py, dds_can_feasibility.md §1)
SDK_LOWCMD_FMT = "<4B4IH2x" + "B3x5f3I" * 20 + "4B" + "55Bx2I"
SDK_LOWSTATE_FMT = "<4B4IH2x" + "13fb3x" + "B3x7fb3x3I" * 20 + "4BiH4b15H" + "8hI41B3xf2b2x2f4h2I"


def test_sizes_match_the_feasibility_study():
    assert m.LOWCMD_WIRE_SIZE == 812 and m.LOWSTATE_WIRE_SIZE == 1180  # with the 4-byte header
    assert m.LOWCMD_C_SIZE == struct.calcsize(SDK_LOWCMD_FMT) == 812
    assert m.LOWSTATE_C_SIZE == struct.calcsize(SDK_LOWSTATE_FMT) == 1180


def test_crc_algorithm_is_crc32_mpeg2():
    assert m.crc32_mpeg2(b"123456789") == 0x0376E6E7  # the catalogue check value of CRC-32/MPEG-2
    assert m.crc32_mpeg2_words_bitwise([0x31323334]) == m.crc32_mpeg2(b"1234")


def test_fast_crc_equals_the_sdk_algorithm_on_random_words():
    rnd = random.Random(7)
    for _ in range(50):
        words = [rnd.getrandbits(32) for _ in range(rnd.randint(1, 300))]
        c_bytes = struct.pack(f"<{len(words)}I", *words) + b"\0\0\0\0"  # last word = the crc field, excluded
        assert m.crc32_words_from_c_layout(c_bytes) == m.crc32_mpeg2_words_bitwise(words)


def test_known_crc_vectors():
    # pinned values (computed with the SDK's pure-Python algorithm, crc32_mpeg2_words_bitwise)
    assert m.crc32_mpeg2_words_bitwise([0x12345678, 0x9ABCDEF0]) == 0x7D24A31B
    assert m.LowCmd.zero_torque().compute_crc() == 0x06E577CD
    st = m.LowState()
    st.tick = 1000
    assert st.compute_crc() == 0x806E64B1


def test_c_layout_matches_the_sdk_pack_format():
    cmd = m.LowCmd.zero_torque()
    cmd.motor_cmd[3].q, cmd.motor_cmd[3].kp, cmd.gpio, cmd.reserve = 0.5, 40.0, 1, 77
    values = struct.unpack(SDK_LOWCMD_FMT, cmd.c_layout())
    assert values[:2] == (0xFE, 0xEF) and values[2] == 0xFF
    motor3 = values[9 + 3 * 9: 9 + 4 * 9]  # 4B 4I H = 9 values, then 9 per motor
    assert motor3[0] == 1 and motor3[1] == pytest.approx(0.5) and motor3[4] == pytest.approx(40.0)
    assert values[-2] == 77


def test_roundtrip_and_crc_check():
    cmd = m.LowCmd.zero_torque()
    for i, c in enumerate(cmd.motor_cmd[:12]):
        c.q, c.kp, c.kd = 0.1 * i, 40.0, 1.0
    wire = cmd.encode()
    assert wire[:4] == b"\x00\x01\x00\x00" and len(wire) == 812
    back = m.LowCmd.decode(wire)
    assert back.motor_cmd[5].q == pytest.approx(0.5) and back.crc == cmd.crc
    bad = bytearray(wire)
    bad[100] ^= 0x01
    with pytest.raises(m.CodecError, match="CRC"):
        m.LowCmd.decode(bytes(bad))
    with pytest.raises(m.CodecError):
        m.LowState.decode(wire[:500])
    st = m.LowState()
    st.foot_force = [10, -20, 30, 40]
    st.motor_state[11].temperature = 80
    back = m.LowState.decode(st.encode())
    assert back.foot_force == [10, -20, 30, 40] and back.motor_state[11].temperature == 80


def test_wire_bytes_equal_cyclonedds_idlstruct():
    pytest.importorskip("cyclonedds", reason="cyclonedds not installed (pip install cyclonedds==11.0.1)")
    from krabby.hal.devices.unitree_go_dds import idl_types

    types = idl_types()
    rnd = random.Random(3)
    cmd = m.LowCmd.zero_torque()
    for c in cmd.motor_cmd:
        c.q, c.kp, c.kd = rnd.uniform(-3, 3), rnd.uniform(0, 60), rnd.uniform(0, 5)
    cmd.wireless_remote = [rnd.randrange(256) for _ in range(40)]
    wire = cmd.encode()
    assert types["LowCmd_"].deserialize(wire).serialize() == wire
    st = m.LowState()
    st.tick, st.foot_force, st.power_v = 123, [1, -2, 300, -400], 28.5
    for i, ms in enumerate(st.motor_state):
        ms.q, ms.temperature, ms.lost = rnd.uniform(-3, 3), 30 + i, i
    wire = st.encode()
    sample = types["LowState_"].deserialize(wire)
    assert sample.serialize() == wire and sample.tick == 123 and sample.motor_state[7].temperature == 37


def test_vendored_typeinfo_is_the_robots():
    """The vendored blobs carry the MINIMAL type ids that DDS 0.10.2 / Unitree's C++ SDK use (feasibility §5)."""
    from krabby.hal.devices.unitree_go_typeinfo import TYPEINFO_0_10

    assert bytes.fromhex("853a99e2") in TYPEINFO_0_10["LowState_"][0]
    assert bytes.fromhex("832876ce") in TYPEINFO_0_10["LowCmd_"][0]
    assert [len(b) for b in TYPEINFO_0_10["LowState_"]] == [244, 3184]
