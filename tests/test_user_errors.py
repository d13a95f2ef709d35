"""Every ordinary user mistake ends in one line that says what happened and what to do, and a non-zero exit.

Checked before any long work starts: these run in well under a second each, except Ctrl-C, which
needs a run to interrupt. The console scripts are run as a user runs them (subprocess) where the
exit status is the point; argparse-level mistakes call ``main`` in-process.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from krabby.parkour.replay import main as replay_main
from krabby.parkour.sim2sim import main

PROG = "krabby-hal-server-mujoco"


def one_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1, text
    return lines[0]


def usage_error(capsys, argv: list[str]) -> str:
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    return one_line(capsys.readouterr().err)


@pytest.mark.parametrize("value", ["0", "-3", "nan"])
def test_duration_must_be_positive(capsys, value):
    line = usage_error(capsys, ["--duration", value])
    assert line.startswith(f"{PROG}: error: argument --duration") and "positive number of simulated seconds" in line
    assert "--help" in line


def test_control_rate_zero(capsys):
    line = usage_error(capsys, ["--control_rate", "0"])
    assert "--control-rate" in line and "positive number of Hz, got 0" in line


def test_unknown_terrain(capsys):
    line = usage_error(capsys, ["--terrain", "moon"])
    assert "invalid choice: 'moon'" in line and "flat" in line and "hurdles" in line


def test_config_file_with_unknown_key(capsys, tmp_path):
    cfg = tmp_path / "run.toml"
    cfg.write_text('terrain = "steps"\nspeeed = 0.5\n')
    line = usage_error(capsys, ["--config", str(cfg)])
    assert "unknown key 'speeed'" in line and "speed" in line


def test_config_file_values_are_checked(capsys, tmp_path):
    cfg = tmp_path / "run.toml"
    cfg.write_text("duration = 0\n")
    assert "duration" in usage_error(capsys, ["--config", str(cfg)])


def test_unwritable_output_fails_before_the_run(capsys, tmp_path):
    """Root ignores permission bits, so the unwritable folder is one under a regular file (ENOTDIR)."""
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    for flag in ("--summary", "--record", "--video", "--runs"):
        t0 = time.perf_counter()
        assert main([flag, str(blocker / "out" / "x.json"), "--quiet"]) == 2
        line = one_line(capsys.readouterr().err)
        assert time.perf_counter() - t0 < 1.0  # nothing ran
        assert line.startswith(f"{PROG}: cannot write the ") and "choose a folder you can write to" in line, line


def test_speed_outside_the_trained_range_warns(capsys, tmp_path):
    out = tmp_path / "s.json"
    assert main(["--speed", "1.5", "--duration", "0.1", "--fast", "--quiet", "--summary", str(out)]) == 0
    err = capsys.readouterr().err
    assert "--speed 1.5 m/s is outside the range the policy was trained on (0.3..0.8 m/s)" in err
    assert json.loads(out.read_text())["speed_cmd_m_s"] == 1.5


def test_onnx_folder_is_recognised_without_backend(tmp_path, capsys):
    """An ONNX export runs without --backend onnx (the audit's 'load it with backend=onnx' trap)."""
    pytest.importorskip("onnxruntime")
    from krabby.parkour.onnx_export import main as export_main
    from krabby.parkour.upstream_format import random_teacher_checkpoint

    ckpt = random_teacher_checkpoint(tmp_path / "model_0.pt")
    assert export_main([str(ckpt), str(tmp_path / "onnx")]) == 0
    out = tmp_path / "s.json"
    assert main(["--checkpoint", str(tmp_path / "onnx"), "--duration", "0.2", "--fast", "--quiet", "--summary", str(out)]) == 0
    assert json.loads(out.read_text())["backend"] == "onnx"


def test_export_onnx_to_an_unwritable_folder(tmp_path, capsys):
    from krabby.parkour.onnx_export import main as export_main
    from krabby.parkour.upstream_format import random_teacher_checkpoint

    ckpt = random_teacher_checkpoint(tmp_path / "model_0.pt")
    (tmp_path / "a_file").write_text("")
    assert export_main([str(ckpt), str(tmp_path / "a_file" / "onnx"), "--no-verify"]) == 2
    line = one_line(capsys.readouterr().err)
    assert line.startswith("krabby-export-onnx: error: cannot write ") and "choose a folder you can write to" in line


# ------------------------------------------------------------------------------------ replay
@pytest.fixture(scope="module")
def log(tmp_path_factory):
    path = tmp_path_factory.mktemp("replay") / "run.mcap"
    assert main(["--duration", "3", "--fast", "--quiet", "--record", str(path)]) == 0
    return path


def test_replay_of_a_file_that_is_not_mcap(tmp_path, capsys):
    for name, data in (("random.mcap", os.urandom(100)), ("empty.mcap", b"")):
        (tmp_path / name).write_bytes(data)
        assert replay_main([str(tmp_path / name)]) == 2
        line = one_line(capsys.readouterr().err)
        assert line.startswith(f"krabby-replay: {tmp_path / name}: not an MCAP run log (") and "give the log.mcap" in line


def test_replay_of_a_missing_file(tmp_path, capsys):
    assert replay_main([str(tmp_path / "nope.mcap")]) == 2
    assert one_line(capsys.readouterr().err) == f"krabby-replay: {tmp_path / 'nope.mcap'}: No such file or directory"


def test_replay_of_a_truncated_log_recovers_the_complete_steps(log, tmp_path, capsys):
    """A crash mid-write leaves no summary and a cut record; the steps before the cut still replay exactly."""
    data = log.read_bytes()
    cut = tmp_path / "cut.mcap"
    cut.write_bytes(data[: int(len(data) * 0.7)])
    code = replay_main([str(cut)])
    out, err = capsys.readouterr()
    assert "krabby-replay: warning:" in err and ("truncated" in err or "cut short" in err)
    assert code == 0 and "max |action difference| = 0 (OK" in out
    steps = int(out.split("replayed ")[1].split(" steps")[0])
    assert 0 < steps < 150


def test_replay_picks_the_recorded_backend(log):
    from krabby.parkour.replay import replay

    assert replay(log).max_abs_diff == 0.0  # backend None = the log's (torch here)


# ------------------------------------------------------------------------------------ Ctrl-C
def test_ctrl_c_writes_what_ran_and_exits_130(tmp_path):
    """SIGINT mid-run: the summary, the log (replayable) and the video of what ran are written; exit 130."""
    runs = tmp_path / "runs"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "krabby.parkour.sim2sim", "--duration", "60", "--runs", str(runs)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 60
        while not (runs / "latest" / "log.mcap").exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(1.5)  # some real-time steps
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "interrupted at t=" in err and "Traceback" not in err
    folder = runs / "latest"
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["interrupted"] is True and 0.5 < summary["sim_time_s"] < 30
    assert summary["video"] and (folder / "video.mp4").stat().st_size > 1000
    assert replay_main([str(folder)]) == 0  # a run folder works as well as its log.mcap


def test_unknown_robot_names_the_known_profiles(capsys):
    assert main(["--robot", "go3", "--duration", "1", "--quiet"]) == 2
    line = one_line(capsys.readouterr().err)
    assert "robot profile" in line and "go3.toml' not found" in line and "known: go2 (" in line, line


def test_no_checkpoint_and_no_bundled_policy_is_one_line_in_every_command(monkeypatch, tmp_path, capsys):
    """A checkout without policies/ (config/ copied alone, nothing beside it): the three commands that
    default to the bundled policy say so in the same words, each with its own program name and exit."""
    import shutil
    from pathlib import Path

    from krabby.parkour.evaluate.cli import main as eval_main
    from krabby.parkour.remote_client import main as client_main
    from krabby.parkour.sim2sim import resolve_checkpoint

    config = tmp_path / "checkout" / "config"
    shutil.copytree(Path(__file__).resolve().parents[1] / "config", config)
    monkeypatch.setenv("KRABBY_CONFIG_DIR", str(config))
    said = "no bundled policy found (policies/go2_demo_teacher)"

    assert resolve_checkpoint("mine.pt") == "mine.pt"  # a given one is used as it is
    assert eval_main(["--out", str(tmp_path / "eval")]) == 2
    assert one_line(capsys.readouterr().err) == f"krabby-eval: no checkpoint given and {said}"
    assert client_main(["--observation-endpoint", "ipc:///nowhere/o", "--command-endpoint", "ipc:///nowhere/c"]) == 2
    assert one_line(capsys.readouterr().err) == f"krabby-parkour-client: no --checkpoint given and {said}"
    assert main(["--duration", "1", "--quiet"]) == 2  # a usage error, like the command's other ones
    assert one_line(capsys.readouterr().err) == f"{PROG}: no --checkpoint given and {said}"
