"""The runner refuses, at startup and in one line, a policy whose inputs the stack cannot provide; failed
policy steps in a row leave POLICY (the supervisor stands the robot back up instead of holding it "armed")."""

from __future__ import annotations

import numpy as np
import pytest

from krabby.hal.robot.supervisor import Mode
from krabby.parkour.jetson import Runner, build_parser, policy_input_problem
from test_jetson_e2e import CHECKPOINT
from test_jetson_supervisor import FakeClock, armed, feed, make, policy_cmd


def test_policy_inputs_must_have_a_source():
    robot = {"depth": True, "height_scan": False}
    assert policy_input_problem("student", 12, 12, robot) == ""
    assert "teacher" in policy_input_problem("teacher", 12, 12, robot)
    assert "depth camera" in policy_input_problem("student", 12, 12, {"depth": False, "height_scan": False})
    assert "the robot has 12" in policy_input_problem("student", 16, 12, robot)
    assert policy_input_problem("teacher", 12, 12, {"depth": False, "height_scan": True}) == ""


def test_the_bundled_teacher_is_refused_on_the_robot_path_before_any_dds(tmp_path):
    pytest.importorskip("torch")
    if not CHECKPOINT.is_file():
        pytest.skip("bundled checkpoint missing")
    args = build_parser().parse_args(["--checkpoint", str(CHECKPOINT), "--camera", "zed", "--record", "",
                                      "--no-dashboard", "--no-keyboard"])
    runner = Runner(args)
    with pytest.raises(ValueError, match="teacher policy: it needs a height scan"):
        runner.start()
    assert runner.stack.backend is None and runner.stack.server is None  # nothing was started


def test_consecutive_policy_step_errors_leave_policy(profile):
    clk = FakeClock()
    sup = make(profile, clk, max_policy_step_errors=5)
    armed(sup, profile, clk)
    sup.set_policy_command(policy_cmd(profile))
    err = RuntimeError("the teacher observation needs a HeightScan")
    for _ in range(4):
        sup.policy_step_result(err)
    sup.policy_step_result(None)  # one good step resets the run
    for _ in range(4):
        sup.policy_step_result(err)
    assert sup.mode == Mode.POLICY
    sup.policy_step_result(err)
    assert sup.mode == Mode.STANDING_UP
    snap = sup.snapshot()
    assert snap["counters"]["policy_step_errors"] == 9 and snap["counters"]["policy_error_stops"] == 1
    assert "HeightScan" in snap["last_policy_error"] and "5 policy steps failed" in snap["last_event"]
    feed(sup, profile, clk)
    out = sup.output()
    assert out.mode == Mode.STANDING_UP and np.all((out.would_send or out).kp_nm_per_rad > 0)  # stands, not damps


def test_versions_are_logged_and_an_unlisted_robot_is_refused(profile, caplog):
    pytest.importorskip("cyclonedds")
    import logging

    from jetson_stack import loopback_deploy, stack_on_sim_node
    from krabby.hal.robot.runner import RunnerError

    with caplog.at_level(logging.WARNING, logger="krabby.hal.robot.runner"):
        with stack_on_sim_node(profile, node_config={"version": (3, 7)}) as (stack, _):
            assert stack.versions["robot"] == "lowstate 3.7 bms 0.0"
    assert "versions: krabby" in caplog.text and "cyclonedds 11." in caplog.text and "lowstate 3.7" in caplog.text
    deploy = loopback_deploy(dds={"allowed_robot_versions": ["lowstate 1.0 bms 1.3"]})
    with pytest.raises(RunnerError, match="not in \\[dds\\] allowed_robot_versions"):
        with stack_on_sim_node(profile, deploy, node_config={"version": (3, 7)}):
            pass


def test_a_cold_motor_reads_below_zero_not_over_temperature(profile):
    from krabby.hal.devices.go2_lowlevel import Go2LowLevel, Go2LowLevelConfig
    from krabby.hal.devices.unitree_go_msgs import LowState

    ll = Go2LowLevel(profile, Go2LowLevelConfig(network_interface=None))
    st = LowState()
    for i, m in enumerate(st.motor_state):
        m.temperature = 251 if i == 0 else 35  # what a motor at -5 C sends
    fb = ll.feedback_from_lowstate(LowState.decode(st.encode()), 0)
    j = profile.joint_names.index("FR_hip_joint")  # slot 0
    assert fb.motor_temp_c[j] == -5.0 and fb.motor_temp_c.max() == 35.0
