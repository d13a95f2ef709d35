"""The inference client end to end over the loopback HAL, and record -> replay reproducing the actions."""

from __future__ import annotations

import logging
import threading
import time

import numpy as np
import pytest
import zmq

from conftest import FIXTURES, endpoints
from krabby.hal.backends.loopback_double import LoopbackTestDouble
from krabby.hal.client import HalClientConfig
from krabby.hal.protocol import Kind
from krabby.hal.safety import SafetyConfig, SafetyState
from krabby.hal.server import HalServer, HalServerConfig
from krabby.parkour.inference import InferenceOptions, ModelWeights, ParkourInferenceClient, trained_control_rate_hz
from krabby.parkour.replay import main as replay_main
from krabby.parkour.replay import replay
from krabby.parkour.upstream_format import random_teacher_checkpoint


@pytest.fixture(scope="module")
def teacher_ckpt(tmp_path_factory):
    return random_teacher_checkpoint(tmp_path_factory.mktemp("ckpt") / "model_0.pt")


def run_loop(profile, ckpt, steps, tmp_path, **opts):
    ctx = zmq.Context()
    obs, cmd = endpoints("inproc")
    safety = SafetyConfig(arm_on_start=True, watchdog_s=1.0, max_command_age_s=1.0)  # lock-step: a loaded CI box may stall
    server = HalServer(LoopbackTestDouble(profile), HalServerConfig(obs, cmd, safety=safety), context=ctx).start()
    client = ParkourInferenceClient(HalClientConfig(obs, cmd), ModelWeights(str(ckpt)), 50.0, transport_context=ctx,
                                    options=InferenceOptions(lockstep=True, **{"max_obs_age_s": 1.0, **opts}))
    client.initialize()
    assert server.wait_for_subscriber(5.0)  # else the first tick can go out before the subscription is applied
    running = threading.Event()
    running.set()
    client.start_thread(running)
    for _ in range(steps):
        frame = server.tick()
        assert server.wait_for_command(frame.state.stamp_ns, 5.0), "the client did not answer a state"
    running.clear()
    client.stop()
    server.close()
    ctx.destroy(0)
    return server, client


def test_teacher_loop_record_and_replay(profile, teacher_ckpt, tmp_path):
    log_path = tmp_path / "run.mcap"
    server, client = run_loop(profile, teacher_ckpt, 30, tmp_path, record_path=str(log_path))
    m = client.metrics()
    assert m["steps"] == 30 and m["commands_accepted"] == 30 and m["errors"] == 0 and not m["commands_refused"]
    assert server.supervisor.state == SafetyState.ACTIVE and server.supervisor.watchdog_trips == 0
    for cmd in server.backend.applied:
        assert np.all(cmd.target_pos_rad >= profile.pos_min_rad) and np.all(cmd.target_pos_rad <= profile.pos_max_rad)
    # replay through the same builder and policy: identical actions
    result = replay(log_path)
    assert result.steps == 30 and result.max_abs_diff == 0.0
    np.testing.assert_allclose(result.targets_rad[-1], client.last_targets_rad, atol=0)
    assert replay_main([str(log_path), "--out", str(tmp_path / "a.npz")]) == 0
    assert np.load(tmp_path / "a.npz")["replayed"].shape == (30, 12)


def test_replay_detects_a_different_policy(profile, teacher_ckpt, tmp_path):
    log_path = tmp_path / "run.mcap"
    run_loop(profile, teacher_ckpt, 10, tmp_path, record_path=str(log_path))
    other = random_teacher_checkpoint(tmp_path / "other" / "model_0.pt", seed=1)
    assert replay(log_path, checkpoint=str(other)).max_abs_diff > 1e-3
    assert replay_main([str(log_path), "--checkpoint", str(other)]) == 1


def test_never_acts_on_stale_telemetry(profile, teacher_ckpt):
    ctx = zmq.Context()
    obs, cmd = endpoints("inproc")
    server = HalServer(LoopbackTestDouble(profile), HalServerConfig(obs, cmd, safety=SafetyConfig(arm_on_start=True)), context=ctx).start()
    client = ParkourInferenceClient(HalClientConfig(obs, cmd), ModelWeights(str(teacher_ckpt)), 50.0, transport_context=ctx,
                                    options=InferenceOptions(max_obs_age_s=0.02))
    client.initialize()
    assert server.wait_for_subscriber(5.0)  # else the first tick can go out before the subscription is applied
    try:
        server.tick()
        sample = client.hal.wait_new(Kind.STATE, 1.0)
        time.sleep(0.05)
        assert client.step(sample) is None
        assert client.counters.stale_skipped == 1 and server.stats["commands_accepted"] == 0
    finally:
        client.stop()
        server.close()
        ctx.destroy(0)


def test_episode_change_resets_history_on_the_first_state_of_the_episode(profile, teacher_ckpt, tmp_path):
    """The episode travels in every state header (protocol v2), not only in the 10 Hz STATUS: no late reset."""
    ctx = zmq.Context()
    obs, cmd = endpoints("inproc")
    backend = LoopbackTestDouble(profile)
    cfg = HalServerConfig(obs, cmd, safety=SafetyConfig(arm_on_start=True), status_rate_hz=0.01)  # one STATUS, at start
    server = HalServer(backend, cfg, context=ctx).start()
    client = ParkourInferenceClient(HalClientConfig(obs, cmd), ModelWeights(str(teacher_ckpt)), 50.0, transport_context=ctx)
    client.initialize()
    assert server.wait_for_subscriber(5.0)  # else the first tick can go out before the subscription is applied
    try:
        steps = []
        for episode in (0, 0, 0, 1, 1):
            backend.episode = episode
            server.tick()
            s = client.hal.wait_new(Kind.STATE, 1.0)
            assert s is not None and s.episode == episode
            client.step(s)
            steps.append(client.builder.episode_step)
        assert steps == [0, 1, 2, 0, 1]  # the very first state of episode 1 is episode step 0
        assert client.counters.episodes == 1
    finally:
        client.stop()
        server.close()
        ctx.destroy(0)


def test_trained_rate_from_env_yaml_and_warning(profile, teacher_ckpt, tmp_path, caplog):
    run = tmp_path / "run"
    (run / "params").mkdir(parents=True)
    (run / "params" / "env.yaml").write_text("viewer:\n  eye: !!python/tuple\n  - 7.5\ndecimation: 4\nsim:\n  physics_prim_path: /x\n  dt: 0.005\n")
    ckpt = run / "model_0.pt"
    ckpt.write_bytes(teacher_ckpt.read_bytes())
    assert trained_control_rate_hz(ckpt) == pytest.approx(50.0)
    (run / "params" / "env.yaml").write_text("decimation: 2\nsim:\n  dt: 0.005\n")
    assert trained_control_rate_hz(ckpt) == pytest.approx(100.0)
    with caplog.at_level(logging.WARNING):
        server, client = run_loop(profile, ckpt, 3, tmp_path)
    assert "trained at 100.0 Hz" in caplog.text


@pytest.mark.skipif(not (FIXTURES / "exported_deploy").is_dir(), reason=f"parkour fixtures not found at {FIXTURES}")
def test_student_loop_runs_depth_encoder_and_replays(profile, tmp_path):
    log_path = tmp_path / "student.mcap"
    server, client = run_loop(profile, FIXTURES / "exported_deploy", 12, tmp_path, record_path=str(log_path))
    assert client.metrics()["commands_accepted"] == 12 and client.counters.errors == 0
    assert replay(log_path).max_abs_diff == 0.0


def test_no_commands_while_the_hal_refuses_them(profile, teacher_ckpt):
    """While the supervisor is DISARMED the client keeps its history in step but sends nothing."""
    ctx = zmq.Context()
    obs, cmd = endpoints("inproc")
    server = HalServer(LoopbackTestDouble(profile), HalServerConfig(obs, cmd, status_rate_hz=1e6), context=ctx).start()
    client = ParkourInferenceClient(HalClientConfig(obs, cmd), ModelWeights(str(teacher_ckpt)), 50.0, transport_context=ctx)
    client.initialize()
    assert server.wait_for_subscriber(5.0)  # else the first tick can go out before the subscription is applied
    try:
        for _ in range(3):
            server.tick()
            s = client.hal.wait_new(Kind.STATE, 1.0)
            while client.hal.latest(Kind.STATUS) is None or client.hal.latest(Kind.STATUS).seq < server._seq[Kind.STATUS] - 1:
                time.sleep(0.001)
            assert client.step(s) is None
        assert client.counters.not_armed_skipped == 3 and client.builder.episode_step == 2
        assert server.stats["commands_accepted"] == 0 and not server.supervisor.refusals
    finally:
        client.stop()
        server.close()
        ctx.destroy(0)
