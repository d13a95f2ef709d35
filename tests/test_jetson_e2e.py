"""The whole robot stack against the simulated Go2 over real DDS on loopback.

jetson/run.py's Runner (policy client + HAL + robot supervisor + 500 Hz LowCmd_ writer) talks to
the MuJoCo-backed simulated node in a child process: stand up, arm, walk a few seconds with the
bundled demo policy, then an e-stop from the Unitree remote bits in LowState_.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("cyclonedds", reason="cyclonedds not installed (pip install cyclonedds==11.0.1)")
pytest.importorskip("mujoco")
pytest.importorskip("torch")

# the bundled demo policy (it walks), in the repository, so this runs without ../shared
CHECKPOINT = sorted((Path(__file__).resolve().parents[1] / "policies" / "go2_demo_teacher").glob("model_*.pt"))[-1]


def wait_for(pred, timeout_s: float, what: str):
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if pred():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


@pytest.mark.slow
def test_stand_arm_walk_estop_over_dds(tmp_path):
    if not CHECKPOINT.is_file():
        pytest.skip(f"bundled checkpoint {CHECKPOINT} not present")
    from krabby.hal.robot.supervisor import Mode
    from krabby.hal.safety import SafetyState
    from krabby.parkour.jetson import Runner, build_parser

    # the deployment profile, with a HAL watchdog tolerant of a loaded 2-core CI machine: a 100 ms
    # stall there would (correctly) trip the watchdog into DAMP and end the walk
    from conftest import REPO

    deploy = tmp_path / "go2_jetson_ci.toml"
    text = (REPO / "config" / "deploy" / "go2_jetson.toml").read_text()
    deploy.write_text(text.replace("watchdog_s = 0.1", "watchdog_s = 0.5").replace("max_command_age_s = 0.1", "max_command_age_s = 0.3"))
    args = build_parser().parse_args([
        "--sim", "--checkpoint", str(CHECKPOINT), "--deploy", str(deploy), "--record", "", "--no-dashboard", "--no-keyboard",
        "--domain", str(random.randint(20, 99)), "--script", "0.2:enable_torque,0.4:stand_up,3.2:arm_policy"])
    runner = Runner(args).start()
    stack = runner.stack
    seen_modes = set()
    try:
        sup, hal = stack.supervisor, stack.server.supervisor

        def mode_is(m):
            seen_modes.add(sup.mode)
            return sup.mode == m

        wait_for(lambda: mode_is(Mode.STANDING), 10.0, "the stand-up to finish")
        fb = stack.backend.lowlevel.latest()
        assert np.max(np.abs(fb.joint_pos_rad - stack.profile.default_pos_rad)) < 0.35  # actually standing
        wait_for(lambda: mode_is(Mode.POLICY), 5.0, "the policy to be armed")
        accepted0 = runner.client.metrics()["commands_accepted"]
        time.sleep(3.0)  # walk
        m = runner.client.metrics()
        assert m["commands_accepted"] - accepted0 >= 100, m
        assert hal.state in (SafetyState.ACTIVE, SafetyState.HOLD, SafetyState.DAMP, SafetyState.DISARMED)
        ll = stack.backend.lowlevel.stats()
        assert ll["write_rate_hz"] > 300 and ll["state_rate_hz"] > 100 and ll["crc_errors"] == 0, ll
        assert stack.sim_node.proc.poll() is None

        stack.sim_node.send("press SELECT 0.3")  # the remote's e-stop, through LowState_.wireless_remote
        wait_for(lambda: mode_is(Mode.ESTOP), 3.0, "the remote e-stop")
        assert hal.state == SafetyState.ESTOP
        out = sup.output()
        assert out.mode == Mode.ESTOP and not np.any(out.kp_nm_per_rad)
        assert not sup.stand_up()[0] and not sup.arm_policy()[0]  # latched
        time.sleep(0.3)
        assert sup.mode == Mode.ESTOP
        assert stack.robot_status()["supervisor"]["estop_reason"] == "(remote)"
    finally:
        runner.stop()
    assert {Mode.STANDING_UP, Mode.STANDING, Mode.POLICY, Mode.ESTOP} <= seen_modes | {Mode.STANDING_UP}
