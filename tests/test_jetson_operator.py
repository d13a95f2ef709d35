"""Dashboard and operator: log lines in a panel, battery/contacts/command/errors shown, lie-down, remote lost,
and the operator's keys reaching the simulated navigation in --sim."""

from __future__ import annotations

import logging
import random
import sys
import time

import pytest

from krabby.hal.robot.dashboard import LogPanel, render
from krabby.hal.robot.supervisor import Mode
from krabby.hal.robot.supervisor_types import lie_down_pose
from test_jetson_e2e import wait_for
from test_jetson_supervisor import FakeClock, feed, make, stand


def test_log_lines_go_to_the_panel_not_the_terminal(capsys):
    root = logging.getLogger()
    term = logging.StreamHandler(sys.stderr)  # what logging.basicConfig installs
    root.addHandler(term)
    try:
        panel = LogPanel().attach()
        logging.getLogger("krabby.test").warning("dropped a LowState_: CRC mismatch")
        panel.detach()
        logging.getLogger("krabby.test").warning("after the dashboard")
    finally:
        root.removeHandler(term)
    err = capsys.readouterr().err
    assert "CRC mismatch" not in err and "after the dashboard" in err
    assert any("CRC mismatch" in line for line in panel.lines)


def test_render_shows_battery_contacts_command_and_errors(profile):
    from rich.console import Console

    s = {"hal_state": "ACTIVE", "policy": {"errors": 7},
         "robot": {"supervisor": {"mode": "POLICY", "counters": {"policy_step_errors": 7}, "last_policy_error": "boom"},
                   "lowlevel": {"late_ms_p50": 0.04, "late_ms_p99": 0.11, "late_ms_max": 0.5, "late_over_1ms_pct": 0.0,
                                "rt_status": "SCHED_FIFO 80"},
                   "battery": {"voltage_v": 28.8, "soc_pct": 76}, "contacts": {"FR": True, "FL": False, "RR": True, "RL": True},
                   "navigation": {"forward_m_s": 0.6, "yaw_rad": -0.1}, "operator": {"remote_lost_s": 4.0}}}
    con = Console(record=True, width=160)
    con.print(render(s, profile.joint_names, log_lines=["12:00:00 W x: ZED Mini: no frame"]))
    text = con.export_text()
    for want in ("0.04/0.11/0.5 ms", "SCHED_FIFO 80", "28.8 V 76 %", "FR* FL. RR* RL*", "policy told fwd +0.60", "policy errors 7", "boom", "REMOTE SILENT 4 s",
                 "ZED Mini: no frame"):
        assert want in text, want


def test_lie_down_ramps_to_the_sitting_pose_then_damps(profile):
    clk = FakeClock()
    sup = make(profile, clk, lie_down_s=2.0)
    stand(sup, profile, clk)
    assert sup.lie_down()[0] and sup.mode == Mode.LYING_DOWN
    clk.advance(1.0)
    feed(sup, profile, clk)
    out = sup.output()
    mid = (out.would_send or out).target_pos_rad
    sit = lie_down_pose(list(profile.joint_names))
    t = profile.joint_names.index("FR_thigh_joint")
    assert min(sit[t], profile.default_pos_rad[t]) < mid[t] < max(sit[t], profile.default_pos_rad[t])  # on the way down
    clk.advance(1.1)
    feed(sup, profile, clk)
    assert sup.output().mode == Mode.DAMPING and "lying down" in sup.snapshot()["last_event"]
    assert not sup.lie_down()[0]  # only from standing or walking
    j = profile.joint_names.index("FL_calf_joint")
    assert sit[j] == pytest.approx(-2.65)


def test_remote_lost_stands_then_lies_down(profile):
    pytest.importorskip("cyclonedds")
    from jetson_stack import loopback_deploy, stack_on_sim_node

    deploy = loopback_deploy(operator={"remote_timeout_s": 0.3, "remote_lost_lie_down_s": 0.4},
                             supervisor={"stand_up_s": 0.2, "lie_down_s": 0.3, "state_timeout_s": 0.5})
    with stack_on_sim_node(profile, deploy, live=True) as (stack, node):
        sup = stack.supervisor
        assert sup.enable_torque()[0] and sup.stand_up()[0]
        wait_for(lambda: sup.mode == Mode.STANDING, 5.0, "standing")
        time.sleep(0.5)
        assert sup.mode == Mode.STANDING  # the remote is there: nothing happens
        node.remote_connected = False  # out of range: 40 zero bytes
        wait_for(lambda: sup.mode == Mode.LYING_DOWN, 5.0, "lying down after the remote went silent")
        wait_for(lambda: sup.mode == Mode.DAMPING, 5.0, "damping after lying down")
        assert any("remote lost -> lying down" in m for m in stack.messages)
        assert "remote silent" in " ".join(e.detail for e in sup.events)


@pytest.mark.slow
def test_keys_reach_the_simulated_navigation():
    pytest.importorskip("cyclonedds")
    pytest.importorskip("mujoco")
    from krabby.hal.deploy.profile import load_deployment
    from krabby.hal.robot.deploy_config import DeployConfig
    from krabby.hal.robot.runner import RobotStack, StackOptions

    deploy = DeployConfig.from_deployment(load_deployment("go2_jetson"))
    stack = RobotStack(deploy, StackOptions(sim=True, keyboard=False, domain_id=random.randint(20, 99))).start()
    try:
        wait_for(lambda: stack.backend.read().navigation is not None, 5.0, "a navigation command")
        assert stack.backend.read().navigation.forward_speed_m_s == pytest.approx(0.5)  # the rehearsal walks by default
        for ch in "ww":
            stack.operator.on_key(ch)
        stack.operator.on_key("j")
        nav = stack.backend.read().navigation
        assert nav.forward_speed_m_s == pytest.approx(0.7) and nav.delta_yaw_rad == pytest.approx(0.1)
    finally:
        stack.stop()
