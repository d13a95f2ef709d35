"""Robot-side supervisor: dry run, stand-up, arming, watchdog, e-stop latch, fall, limits, temperature; operator inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest

from krabby.hal.devices.go2_lowlevel import Go2LowLevel, Go2LowLevelConfig
from krabby.hal.devices.unitree_go_msgs import LowCmd
from krabby.hal.robot.operator import Operator, decode_wireless_remote, encode_wireless_remote, parse_script
from krabby.hal.robot.supervisor import Feedback, Mode, RobotSupervisor, SupervisorConfig
from krabby.hal.types import ActuatorCommand, ActuatorMode


class FakeClock:
    def __init__(self):
        self.t = 1_000_000_000_000

    def __call__(self) -> int:
        return self.t

    def advance(self, s: float) -> None:
        self.t += int(s * 1e9)


@pytest.fixture
def clk():
    return FakeClock()


def make(profile, clk, **cfg):
    cfg.setdefault("allow_live", True)
    return RobotSupervisor(profile, SupervisorConfig(**cfg), clock_ns=clk)


def feed(sup, profile, clk, q=None, quat=(1.0, 0.0, 0.0, 0.0), temp=35.0, dq=None):
    n = profile.num_joints
    sup.on_feedback(Feedback(clk(), profile.default_pos_rad.copy() if q is None else np.asarray(q, float),
                             np.zeros(n) if dq is None else np.asarray(dq, float), np.asarray(quat, float),
                             np.full(n, float(temp)) if np.isscalar(temp) else np.asarray(temp, float)))


def policy_cmd(profile, targets=None, mode=ActuatorMode.POSITION):
    t = profile.default_pos_rad.copy() if targets is None else np.asarray(targets, float)
    return ActuatorCommand(mode, t, profile.kp_nm_per_rad.copy(), profile.kd_nm_s_per_rad.copy())


def stand(sup, profile, clk):
    feed(sup, profile, clk)
    assert sup.stand_up()[0]
    for _ in range(40):
        clk.advance(0.1)
        feed(sup, profile, clk)
        sup.output()
    assert sup.mode == Mode.STANDING


def armed(sup, profile, clk):
    stand(sup, profile, clk)
    assert sup.arm_policy()[0]
    sup.set_policy_command(policy_cmd(profile))
    assert sup.output().mode == Mode.POLICY


def test_dry_run_never_sends_torque(profile, clk):
    sup = make(profile, clk, allow_live=False)
    stand(sup, profile, clk)  # the whole state machine runs...
    assert sup.arm_policy()[0]
    sup.set_policy_command(policy_cmd(profile, profile.default_pos_rad + 0.3))
    out = sup.output()
    assert out.zero_torque and not np.any(out.kp_nm_per_rad) and not np.any(out.kd_nm_s_per_rad)
    assert out.would_send is not None and np.all(out.would_send.kp_nm_per_rad > 0)  # ...and is computed
    ok, msg = sup.enable_torque()
    assert not ok and "--live" in msg
    # on the wire: a zero-torque LowCmd_ (kp = kd = tau = 0 on all 20 motors)
    ll = Go2LowLevel(profile, Go2LowLevelConfig(network_interface=None))
    cmd = LowCmd.decode(ll.encode_command(out))
    assert all(c.kp == 0 and c.kd == 0 and c.tau == 0 for c in cmd.motor_cmd)


def test_enable_torque_only_from_damping(profile, clk):
    sup = make(profile, clk)
    assert sup.dry_run
    stand(sup, profile, clk)
    assert not sup.enable_torque()[0]
    sup.damp()
    assert sup.enable_torque()[0] and not sup.dry_run
    ll = Go2LowLevel(profile, Go2LowLevelConfig(network_interface=None))
    feed(sup, profile, clk)
    out = sup.output()
    assert not out.zero_torque and out.mode == Mode.DAMPING
    cmd = LowCmd.decode(ll.encode_command(out))
    assert all(c.kp == 0 for c in cmd.motor_cmd[:12]) and all(c.kd > 0 for c in cmd.motor_cmd[:12])


def test_stand_up_ramps_smoothly_to_the_default_pose(profile, clk):
    sup = make(profile, clk, dry_run=False, stand_up_s=2.0)
    lying = profile.default_pos_rad + np.tile([0.0, 0.5, -1.0], 4)
    feed(sup, profile, clk, q=np.clip(lying, profile.pos_min_rad, profile.pos_max_rad))
    assert sup.stand_up()[0]
    start = sup.output().target_pos_rad.copy()
    clk.advance(1.0)
    feed(sup, profile, clk, q=start)
    mid = sup.output().target_pos_rad
    assert np.all(np.abs(mid - (start + profile.default_pos_rad) / 2) < 1e-6)  # smoothstep(0.5) = 0.5
    clk.advance(1.1)
    feed(sup, profile, clk, q=profile.default_pos_rad)
    assert sup.output().mode == Mode.STANDING


def test_arm_requires_standing_and_hooks_fire(profile, clk):
    sup = make(profile, clk, dry_run=False)
    calls = []
    sup.on_policy_armed = lambda: calls.append("arm")
    sup.on_policy_disarmed = lambda: calls.append("disarm")
    feed(sup, profile, clk)
    assert not sup.arm_policy()[0]
    armed(sup, profile, clk)
    target = profile.default_pos_rad + 0.05
    sup.set_policy_command(policy_cmd(profile, target))
    out = sup.output()
    assert np.allclose(out.target_pos_rad, target) and np.allclose(out.kp_nm_per_rad, profile.kp_nm_per_rad)
    assert sup.disarm_policy()[0] and sup.mode == Mode.STANDING_UP
    assert calls == ["arm", "disarm"] and sup.policy_episode == 1


def test_command_watchdog_damps(profile, clk):
    sup = make(profile, clk, dry_run=False, policy_watchdog_s=0.1)
    armed(sup, profile, clk)
    clk.advance(0.05)
    feed(sup, profile, clk)
    assert sup.output().mode == Mode.POLICY
    clk.advance(0.06)
    feed(sup, profile, clk)
    out = sup.output()
    assert out.mode == Mode.DAMPING and not np.any(out.kp_nm_per_rad)
    assert sup.counters["policy_watchdog"] == 1
    sup.set_policy_command(policy_cmd(profile))  # a late command does not re-arm
    assert sup.output().mode == Mode.DAMPING


def test_hal_damp_output_damps_after_grace(profile, clk):
    sup = make(profile, clk, dry_run=False)
    armed(sup, profile, clk)
    clk.advance(0.2)
    feed(sup, profile, clk)
    sup.set_policy_command(policy_cmd(profile, mode=ActuatorMode.DAMP))
    assert sup.output().mode == Mode.DAMPING and sup.counters["hal_damped"] == 1


def test_estop_is_latched(profile, clk):
    sup = make(profile, clk, dry_run=False)
    armed(sup, profile, clk)
    assert sup.estop("(test)")[0]
    out = sup.output()
    assert out.mode == Mode.ESTOP and not np.any(out.kp_nm_per_rad)
    for action in (sup.stand_up, sup.arm_policy, sup.damp):
        assert not action()[0]
        assert sup.mode == Mode.ESTOP
    sup.set_policy_command(policy_cmd(profile))
    assert sup.output().mode == Mode.ESTOP
    assert sup.clear_estop()[0] and sup.mode == Mode.DAMPING


@pytest.mark.parametrize("roll", [1.2, -1.2])
def test_fall_detection_damps(profile, clk, roll):
    sup = make(profile, clk, dry_run=False, max_tilt_rad=1.0)
    armed(sup, profile, clk)
    feed(sup, profile, clk, quat=(math.cos(roll / 2), math.sin(roll / 2), 0.0, 0.0))
    assert sup.output().mode == Mode.DAMPING and sup.counters["falls"] == 1
    assert not sup.stand_up()[0]  # and it refuses to stand up while tilted


def test_temperature_limit_damps(profile, clk):
    sup = make(profile, clk, dry_run=False, motor_temp_limit_c=75.0)
    armed(sup, profile, clk)
    temps = np.full(profile.num_joints, 40.0)
    temps[profile.joint_index("RL_calf_joint")] = 76.0
    feed(sup, profile, clk, temp=temps)
    assert sup.output().mode == Mode.DAMPING and sup.counters["over_temperature"] == 1
    ok, msg = sup.stand_up()
    assert not ok and "RL_calf_joint" in msg


def test_lost_robot_state_damps(profile, clk):
    sup = make(profile, clk, dry_run=False, state_timeout_s=0.1)
    armed(sup, profile, clk)
    sup.set_policy_command(policy_cmd(profile))
    clk.advance(0.05)
    sup.set_policy_command(policy_cmd(profile))
    assert sup.output().mode == Mode.POLICY
    clk.advance(0.06)
    sup.set_policy_command(policy_cmd(profile))
    assert sup.output().mode == Mode.DAMPING and sup.counters["state_timeouts"] == 1


def test_joint_limit_and_torque_clamps(profile, clk):
    sup = make(profile, clk, dry_run=False, joint_limit_margin_rad=0.0)
    armed(sup, profile, clk)
    far = profile.pos_max_rad + 1.0
    sup.set_policy_command(policy_cmd(profile, far))
    out = sup.output()
    assert np.all(out.target_pos_rad <= profile.pos_max_rad + 1e-12)
    q = profile.default_pos_rad
    tau = out.kp_nm_per_rad * (out.target_pos_rad - q)  # dq = 0
    assert np.all(np.abs(tau) <= profile.hardware_torque_limit_nm + 1e-9)
    assert sup.counters["limit_clamped"] >= 1 and sup.counters["torque_clamped"] >= 1
    # with velocity the damping term counts against the limit too
    dq = np.full(profile.num_joints, 5.0)
    feed(sup, profile, clk, dq=dq)
    sup.set_policy_command(policy_cmd(profile, q + 0.4))
    out = sup.output()
    tau = out.kp_nm_per_rad * (out.target_pos_rad - q) - out.kd_nm_s_per_rad * dq
    assert np.all(np.abs(tau) <= profile.hardware_torque_limit_nm + 1e-9)


def test_wireless_remote_bits_drive_actions():
    op = Operator()
    got = []
    op.handler = lambda action, source: got.append((action, source))
    data = encode_wireless_remote(["L2", "A"], ly=0.5, rx=-0.5)
    r = decode_wireless_remote(data)
    assert r.pressed("L2") and r.pressed("A") and not r.pressed("B") and r.ly == pytest.approx(0.5)
    op.on_remote(data)
    op.on_remote(data)  # held: fires once
    op.on_remote(encode_wireless_remote([]))
    op.on_remote(encode_wireless_remote(["SELECT"]))
    op.on_remote(encode_wireless_remote(["START"]))
    op.on_remote(encode_wireless_remote(["L2", "START"]))
    assert [a for a, _ in got] == ["stand_up", "estop", "arm_policy", "clear_estop"]
    assert all(s == "remote" for _, s in got)
    op.on_remote(encode_wireless_remote([], ly=1.0, rx=-1.0))
    v = op.velocity()
    assert v.forward_m_s == pytest.approx(op.max_forward_m_s) and v.yaw_rad == pytest.approx(op.max_yaw_rad)


def test_keyboard_and_script_parsing():
    op = Operator()
    got = []
    op.handler = lambda a, s: got.append(a)
    for ch in " csadxw":
        op.on_key(ch)
    assert got == ["estop", "clear_estop", "stand_up", "arm_policy", "disarm_policy", "damp"]
    assert op.velocity().forward_m_s == pytest.approx(0.1)
    assert parse_script("4:arm_policy, 1:stand_up") == [(1.0, "stand_up"), (4.0, "arm_policy")]
    with pytest.raises(ValueError):
        parse_script("1:fly")
