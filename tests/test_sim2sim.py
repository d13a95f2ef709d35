"""The MuJoCo sim-to-sim loop end to end: HAL server, inference client and policy in one process."""

from __future__ import annotations

import json

import pytest

from krabby.parkour.replay import replay
from krabby.parkour.sim2sim import main
from krabby.parkour.upstream_format import random_teacher_checkpoint

DETERMINISTIC = ("sim_time_s", "distance_m", "falls", "goals_reached", "commands_accepted", "terrain", "seed")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return str(random_teacher_checkpoint(tmp_path_factory.mktemp("sim2sim") / "model_0.pt"))


def run(tmp_path, name, *extra):
    out = tmp_path / f"{name}.json"
    assert main([*extra, "--summary", str(out), "--quiet"]) == 0
    return json.loads(out.read_text())


def test_full_loop_fast_is_deterministic_and_replays(ckpt, tmp_path):
    log = tmp_path / "run.mcap"
    args = ["--checkpoint", ckpt, "--terrain", "hurdles", "--seed", "3", "--duration", "4", "--fast"]
    a = run(tmp_path, "a", *args, "--record", str(log))
    assert a["sim_time_s"] == pytest.approx(4.0)
    assert a["commands_accepted"] == 200 and a["commands_missed"] == 0 and not a["commands_refused"]
    assert a["safety"]["watchdog_trips"] == 0 and a["safety"]["final_state"] == "ACTIVE"
    for key in ("compute_ms_p50", "compute_ms_p99", "obs_age_ms_p50", "obs_age_ms_p99", "control_rate_hz_achieved", "goals_reached"):
        assert a[key] is not None
    assert a["realtime_factor"] > 1.5  # --fast is not paced by the wall clock
    b = run(tmp_path, "b", *args)
    assert {k: a[k] for k in DETERMINISTIC} == {k: b[k] for k in DETERMINISTIC}
    assert replay(log).max_abs_diff == 0.0


def test_realtime_keeps_wall_clock(ckpt, tmp_path):
    s = run(tmp_path, "rt", "--checkpoint", ckpt, "--duration", "1")
    assert s["mode"] == "realtime" and 0.7 < s["realtime_factor"] < 1.1
    assert s["safety"]["watchdog_trips"] == 0


def test_clear_errors(ckpt, tmp_path, capsys):
    assert main(["--checkpoint", str(tmp_path / "missing.pt"), "--duration", "0.1", "--quiet"]) == 2
    assert "missing.pt" in capsys.readouterr().err
    assert main(["--checkpoint", str(tmp_path), "--duration", "0.1", "--quiet"]) == 2
    assert "no policy here" in capsys.readouterr().err
    assert main(["--checkpoint", ckpt, "--duration", "0.1", "--command_bind", "tcp://127.0.0.1:5999", "--quiet"]) == 2
    assert "without authentication" in capsys.readouterr().err


def test_bundled_policy_walks(tmp_path):
    """The default policy (policies/go2_demo_teacher) walks forward at the commanded speed without falling."""
    from krabby.parkour.sim2sim import default_checkpoint

    ckpt = default_checkpoint()
    assert ckpt is not None and ckpt.parent.name == "go2_demo_teacher", ckpt
    s = run(tmp_path, "bundled", "--terrain", "hurdles", "--duration", "6", "--fast")
    assert s["falls"] == 0 and s["safety"]["watchdog_trips"] == 0
    assert s["distance_m"] > 0.7 * 0.5 * 6  # 0.5 m/s commanded


def test_student_runs_on_the_depth_camera_through_onnx(tmp_path):
    """A student export runs in the loop on MuJoCo's ray-cast depth, through onnxruntime, and replays exactly."""
    from conftest import FIXTURES

    if not (FIXTURES / "exported_deploy").is_dir():
        pytest.skip(f"parkour fixtures not found at {FIXTURES}")
    log = tmp_path / "student.mcap"
    s = run(tmp_path, "student", "--checkpoint", str(FIXTURES / "exported_deploy"), "--backend", "onnx",
            "--duration", "2", "--fast", "--record", str(log))
    assert s["policy_kind"] == "student" and s["commands_accepted"] == 100 and not s["commands_refused"]
    assert replay(log, backend="onnx").max_abs_diff == 0.0
