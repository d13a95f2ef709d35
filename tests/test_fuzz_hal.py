"""Structure-aware fuzzing of the HAL (quick run; the long run is `python bench/fuzz_hal.py --minutes N`).

Hypothesis drives the random source of krabby.hal.testing.fuzz_mutations, so a failure shrinks to a
small list of mutations. Invariants are the harnesses' (see krabby/hal/testing/fuzz_targets.py): the server and
client threads survive, every message gets one reply, nothing the oracle refuses is accepted,
nothing unvalidated is ever applied, memory stays bounded, valid traffic still works afterwards.
The last tests pin the bugs the fuzzer found.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import endpoints
from krabby.hal import clock
from krabby.hal.testing.fuzz_mutations import NUM_OPS
from krabby.hal.testing.fuzz_targets import CommandFuzzTarget, TelemetryFuzzTarget
from krabby.hal.protocol import TELEMETRY_KINDS, Ack, DType, Header, Kind, ProtocolError, Reason, decode, encode
from krabby.hal.safety import SafetyState
from krabby.hal.types import ActuatorMode

def fuzz_settings(examples: int) -> settings:
    return settings(max_examples=examples, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


@pytest.fixture(autouse=True)
def quiet_logs(caplog):
    # the server logs every refusal (rate-limited); keep the test output readable
    caplog.set_level(logging.CRITICAL, logger="krabby.hal")
    yield


def message_plan(base_kinds):
    """One message: the valid kind it starts from and the mutation operators applied to it, in order."""
    return st.tuples(st.sampled_from(base_kinds), st.lists(st.integers(0, NUM_OPS - 1), max_size=3))


def _assert_clean(stats):
    assert stats.crashes == 0, stats.failures[:3]


@pytest.mark.parametrize("transport,examples", [("inproc", 1500), ("tcp", 400)])
def test_command_socket_survives_fuzzing(profile, zmq_context, transport, examples):
    target = CommandFuzzTarget(profile, zmq_context, endpoints=endpoints(transport))
    try:
        @fuzz_settings(examples)
        @given(rng=st.randoms(use_true_random=True), plan=st.lists(message_plan(CommandFuzzTarget.BASE_KINDS), min_size=1, max_size=8))
        def run(rng, plan):
            for base_kind, ops in plan:
                target.feed(target.mutated(rng, base_kind=base_kind, ops=ops))
            target.tick(2)
            target.check()
            _assert_clean(target.stats)
            target.reset()

        run()
        assert target.stats.sent >= examples and target.stats.replies == target.stats.sent  # one reply each
        assert target.stats.accepted > 0 and len(target.stats.reasons) > 8  # valid and invalid paths both ran
        assert target.still_serves_a_fresh_client()
    finally:
        target.close()


def test_client_telemetry_survives_fuzzing(profile, zmq_context):
    target = TelemetryFuzzTarget(profile, zmq_context)
    try:
        @fuzz_settings(800)
        @given(rng=st.randoms(use_true_random=True), plan=st.lists(message_plan(TELEMETRY_KINDS), min_size=1, max_size=12))
        def run(rng, plan):
            for base_kind, ops in plan:
                target.publish(target.mutated(rng, base_kind=base_kind, ops=ops))
            target.check()  # includes: a valid STATE published after the garbage is handed out
            _assert_clean(target.stats)

        run()
        assert target.client.stats["malformed"] > 0 and target.client.stats["received"] > 0
    finally:
        target.close()


# ---------------------------------------------------------------------- bugs the fuzzer found


def test_control_with_unhashable_action_is_refused_not_dropped(profile, zmq_context):
    """{"action": [1, 2]} raised TypeError in the command thread: no ACK, the client timed out."""
    target = CommandFuzzTarget(profile, zmq_context)
    try:
        for action in ([1, 2], {"x": 1}, None, 7):
            target.seq += 1
            reply = target.request(encode(Kind.CONTROL, session_id=target.server.session_id, seq=target.seq,
                                          stamp_ns=clock.now_ns(), payload={"action": action}))
            assert reply is not None and Ack.unpack(reply.header.seq, reply.payload).reason == Reason.BAD_PAYLOAD
    finally:
        target.close()


@pytest.mark.parametrize("kind", [Kind.HELLO, Kind.CONTROL])
def test_deeply_nested_json_is_refused_not_dropped(profile, zmq_context, kind):
    """100 000 nested brackets made json.loads raise RecursionError (not ValueError): no ACK."""
    target = CommandFuzzTarget(profile, zmq_context)
    try:
        body = b"[" * 100000 + b"]" * 100000
        frames = encode(kind, session_id=target.server.session_id, seq=7, stamp_ns=clock.now_ns(), payload={})
        frames[1] = Header(kind, target.server.session_id, 7, clock.now_ns(), DType.JSON, (), 0, len(body)).pack()
        reply = target.request([frames[0], frames[1], body])
        assert reply is not None and Ack.unpack(reply.header.seq, reply.payload).reason == Reason.BAD_PAYLOAD
    finally:
        target.close()


def test_huge_shape_beside_a_zero_dimension_is_a_protocol_error():
    """shape (0, 2**32-1, 2**32-1) with 0 bytes passed the size check and made numpy raise ValueError,
    which killed the client's telemetry thread (and dropped the message without an ACK on the server)."""
    for shape in [(0, 0xFFFFFFFF, 0xFFFFFFFF), (0, 4194304, 4194304, 4194304), (0xFFFFFFFF, 0)]:
        header = Header(Kind.STATE, 1, 1, 1, DType.F32, shape, 0, 0).pack()
        with pytest.raises(ProtocolError) as e:
            decode([b"state", header, b""])
        assert e.value.reason == Reason.BAD_SHAPE
    assert decode([b"state", Header(Kind.STATE, 1, 1, 1, DType.F32, (0, 5), 0, 0).pack(), b""]).payload.shape == (0, 5)


def test_client_telemetry_thread_survives_an_unexpected_decoder_error(profile, zmq_context, monkeypatch):
    target = TelemetryFuzzTarget(profile, zmq_context)
    try:
        calls = {"n": 0}
        real = target.client._decode_value

        def flaky(msg, welcome):
            calls["n"] += 1
            if calls["n"] == 1:
                raise RuntimeError("a decoder bug")
            return real(msg, welcome)

        monkeypatch.setattr(target.client, "_decode_value", flaky)
        assert not target.probe(timeout_s=0.3)  # the first message hits the bug and is dropped...
        assert target.probe()  # ...and telemetry keeps flowing
        assert target.client._rx_thread.is_alive()
    finally:
        target.close()


def test_arm_does_not_label_the_default_pose_with_an_old_command_seq(profile, zmq_context):
    """After HOLD -> arm, the ARMED output (default pose) carried the seq of the last command before."""
    target = CommandFuzzTarget(profile, zmq_context)
    try:
        reply = target.request(target.valid_command(profile.default_pos_rad + 0.1))
        assert Ack.unpack(reply.header.seq, reply.payload).accepted
        sup = target.server.supervisor
        sup.disarm(clock.now_ns())
        sup.arm(clock.now_ns())
        assert sup.state == SafetyState.ARMED
        out = sup.tick(clock.now_ns())
        assert out.mode == ActuatorMode.POSITION and out.source_seq == -1
        np.testing.assert_allclose(out.target_pos_rad, profile.default_pos_rad)
    finally:
        target.close()
