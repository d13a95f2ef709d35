"""What a user watches: the status line (terminal and log), the video overlay, and --help for every flag."""

from __future__ import annotations

import argparse
import io

import pytest


def test_status_line_in_a_log_is_plain_lines_every_few_seconds(monkeypatch):
    from krabby.parkour import status_line
    from krabby.parkour.status_line import StatusLine

    clock = [0.0]
    monkeypatch.setattr(status_line.time, "monotonic", lambda: clock[0])
    out = io.StringIO()
    s = StatusLine(20.0, "s", file=out, log_every_s=5.0)
    assert not s.live
    for i in range(1, 201):  # 20 s of updates every 0.1 s
        clock[0] = i * 0.1
        s.update(i * 0.1, f"rate=50.0 Hz step {i}")
    s.close()
    text = out.getvalue()
    lines = text.splitlines()
    assert "\r" not in text and "\x1b" not in text
    assert 4 <= len(lines) <= 6 and lines[0].startswith("t=  5.0/20 s") and lines[-1].startswith("t= 20.0/20 s")


def test_status_line_on_a_terminal_is_one_live_progress_line():
    from krabby.parkour.status_line import StatusLine

    out = io.StringIO()
    s = StatusLine(20.0, "s", file=out, force_terminal=True)
    assert s.live
    s.update(5.0, "rate=50.0 Hz")
    s.close()
    assert "5.0/20 s" in out.getvalue() and "rate=50.0 Hz" in out.getvalue()


def test_sim2sim_status_without_a_terminal_has_no_carriage_returns(capsys):
    from krabby.parkour.sim2sim import main

    assert main(["--duration", "0.5", "--fast"]) == 0
    out = capsys.readouterr().out
    assert "\r" not in out and "t=  0.5/0.5 s" in out and "safety=" in out


VIDEO_SCRIPT = """
import sys
import numpy as np
from krabby.hal.backends.mujoco_backend import MujocoBackend, MujocoBackendConfig, RenderingUnavailableError
from krabby.parkour.video import FrameFacts, VideoWriter, depth_to_u8

backend = MujocoBackend(MujocoBackendConfig(terrain="flat"))
backend.connect()
try:
    backend.render_rgb(64, 48)
except RenderingUnavailableError as e:
    print("UNAVAILABLE", e)
    sys.exit(0)
v = VideoWriter(sys.argv[1], fps=25, control_rate_hz=50)
depth = depth_to_u8(np.full((58, 87), 1.0, dtype=np.float32), 2.0)
for step in range(10):
    v.maybe_capture(backend, step, FrameFacts(step * 0.02, 0.5, 0.4, "ACTIVE", 0, depth))
assert len(v.poses) == 5 and all(len(p) == 3 for p in v.poses)  # (qpos, qvel, facts): no pixels kept
print("OK", v.write(backend, show_progress=False), v.frames_written)
"""


def test_video_frames_stream_to_the_encoder_with_the_overlay(tmp_path):
    """Poses are kept, frames are not: each is rendered, overlaid and handed to the encoder (EGL, in a subprocess)."""
    import os
    import subprocess
    import sys

    pytest.importorskip("imageio_ffmpeg")
    import imageio.v2 as imageio

    out = subprocess.run([sys.executable, "-c", VIDEO_SCRIPT, str(tmp_path / "v.mp4")], env={**os.environ, "MUJOCO_GL": "egl"},
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    if out.stdout.startswith("UNAVAILABLE"):
        pytest.skip(out.stdout.strip())
    assert out.stdout.split()[-1] == "5"
    reader = imageio.get_reader(tmp_path / "v.mp4")
    frame = reader.get_data(0)
    assert reader.count_frames() == 5 and frame.shape == (320, 480, 3)
    top = frame[:20].astype(float)
    assert top.mean() < 110 and top.max() > 200  # the dark bar with white text
    pip = frame[-40:, -100:].astype(float)
    assert abs(pip.mean() - 127) < 50  # the grey depth view (1 m of 2 m)


@pytest.mark.parametrize("module", ["sim2sim", "replay", "plot", "onnx_export"])
def test_every_flag_has_help(module):
    import importlib

    mod = importlib.import_module(f"krabby.parkour.{module}")
    if module == "sim2sim":
        parser = mod.build_parser()
    else:  # these build their parser in main(); capture it
        captured = {}
        orig = argparse.ArgumentParser.parse_args

        def grab(self, *a, **k):
            captured["p"] = self
            raise SystemExit(0)

        argparse.ArgumentParser.parse_args = grab
        try:
            with pytest.raises(SystemExit):
                mod.main(["x"])
        finally:
            argparse.ArgumentParser.parse_args = orig
        parser = captured["p"]
    missing = [a.option_strings or a.dest for a in parser._actions if not a.help]
    assert not missing, missing
