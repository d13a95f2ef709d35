"""The robot profile: spec numbers, derived maps, and refusal of malformed profiles with the field named."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from krabby.hal.robot_profile import ProfileError, load_robot_profile, profile_from_dict
from krabby.hal.types import ActuatorCommand, ActuatorMode

# Literal lists from spec §3, checked name by name there.
MUJOCO_TO_ISAAC = [3, 0, 9, 6, 4, 1, 10, 7, 5, 2, 11, 8]
ISAAC_TO_MUJOCO = [1, 5, 9, 0, 4, 8, 3, 7, 11, 2, 6, 10]
DEFAULT_ISAAC = [0.1, -0.1, 0.1, -0.1, 0.8, 0.8, 1.0, 1.0, -1.5, -1.5, -1.5, -1.5]


def test_go2_matches_spec(profile):
    assert profile.policy_from_robot.tolist() == MUJOCO_TO_ISAAC
    assert profile.robot_from_policy.tolist() == ISAAC_TO_MUJOCO
    np.testing.assert_allclose(profile.to_policy_order(profile.default_pos_rad), DEFAULT_ISAAC)
    assert profile.decimation == 4 and profile.control_rate_hz == 50.0
    assert profile.policy_foot_names == ("FL_foot", "FR_foot", "RL_foot", "RR_foot")
    assert profile.height_scan.num_points == 132
    pts = profile.height_scan.points_base_xy_m()
    np.testing.assert_allclose(pts[0], [-0.45, -0.75], atol=1e-9)
    np.testing.assert_allclose(pts[11], [1.20, -0.75], atol=1e-9)  # x varies fastest
    np.testing.assert_allclose(pts[12], [-0.45, -0.60], atol=1e-9)
    cam = profile.camera
    assert cam.fx_px == pytest.approx(55.85, abs=0.01) and cam.fy_px == pytest.approx(54.12, abs=0.01)
    assert cam.hfov_deg == pytest.approx(87.0, abs=0.05) and cam.vfov_deg == pytest.approx(58.0, abs=0.05)
    axis = cam.rotation_base_from_camera() @ np.array([0.0, 0.0, 1.0])
    np.testing.assert_allclose(axis, [0.940, 0.0, -0.342], atol=1e-3)  # spec §2: 20 deg below +x


def test_dc_motor_clip_matches_spec(profile):
    calf = profile.joint_index("FR_calf_joint")
    vel = np.zeros(12)
    vel[calf] = 15.05  # half the calf velocity limit: tau_max = 45 * (1 - 0.5) = 22.5
    tau = profile.dc_motor_clip_nm(np.full(12, 100.0), vel)
    assert tau[calf] == pytest.approx(22.5)
    hip = profile.joint_index("FR_hip_joint")
    assert tau[hip] == pytest.approx(35.0)  # effort limit at zero speed


def _pd_dc_motor_torque_nm(toml: dict, mode: str, target, kp, kd, q, qd) -> list[float]:
    """Spec §3 written out joint by joint on Python floats, straight from the robot TOML (not the profile's arrays)."""
    out = []
    for j, joint in enumerate(toml["joints"]):
        act = toml["actuators"][joint["actuator"]]
        if mode == "zero":
            out.append(0.0)
            continue
        tau = -kd[j] * qd[j] if mode == "damp" else kp[j] * (target[j] - q[j]) - kd[j] * qd[j]
        v = qd[j] / act["velocity_limit_rad_s"]
        tau_max = min(max(act["saturation_effort_nm"] * (1.0 - v), 0.0), act["effort_limit_nm"])
        tau_min = min(max(act["saturation_effort_nm"] * (-1.0 - v), -act["effort_limit_nm"]), 0.0)
        out.append(min(max(tau, tau_min), tau_max))
    return out


@pytest.mark.parametrize("mode", [ActuatorMode.POSITION, ActuatorMode.DAMP, ActuatorMode.ZERO_TORQUE])
def test_actuator_torque_is_spec_pd_with_dc_motor_clip_bit_for_bit(profile, mode):
    """Pins the training actuator model exactly (no tolerance), so a faster rewrite of it cannot drift."""
    rng = np.random.default_rng(0)
    name = {ActuatorMode.POSITION: "position", ActuatorMode.DAMP: "damp", ActuatorMode.ZERO_TORQUE: "zero"}[mode]
    for _ in range(200):  # speeds up to past the velocity limits, targets far enough to saturate
        q = profile.default_pos_rad + rng.uniform(-1.0, 1.0, 12)
        qd = rng.uniform(-60.0, 60.0, 12)
        target = profile.default_pos_rad + rng.uniform(-1.5, 1.5, 12)
        kp, kd = profile.kp_nm_per_rad * rng.uniform(0.5, 2.0), profile.kd_nm_s_per_rad * rng.uniform(0.5, 2.0)
        tau = ActuatorCommand(mode, target, kp, kd).torque_nm(profile, q, qd)
        expected = _pd_dc_motor_torque_nm(profile.source, name, target, kp, kd, q, qd)
        np.testing.assert_array_equal(tau, expected)
        lo, hi = profile.dc_motor_limits_nm(qd)
        assert np.all(lo <= 0.0) and np.all(hi >= 0.0)
        np.testing.assert_array_equal(profile.dc_motor_clip_nm(np.full(12, 1e9), qd), hi)
        np.testing.assert_array_equal(profile.dc_motor_clip_nm(np.full(12, -1e9), qd), lo)


def _bad(mutate):
    data = copy.deepcopy(dict(load_robot_profile("go2").source))
    mutate(data)
    with pytest.raises(ProfileError) as e:
        profile_from_dict(data)
    return str(e.value)


def test_unknown_joint_in_policy_order_is_named():
    msg = _bad(lambda d: d["policy"]["joint_order"].__setitem__(0, "FL_hipp_joint"))
    assert "policy.joint_order" in msg and "FL_hipp_joint" in msg


def test_wrong_joint_count_is_refused():
    msg = _bad(lambda d: d["policy"]["joint_order"].pop())
    assert "policy.joint_order" in msg and "11" in msg


def test_missing_field_is_named():
    msg = _bad(lambda d: d["actuators"]["calf"].pop("kp_nm_per_rad"))
    assert "actuators.calf.kp_nm_per_rad" in msg
    msg = _bad(lambda d: d.pop("camera"))
    assert "'camera'" in msg


def test_default_outside_limits_and_unknown_actuator():
    msg = _bad(lambda d: d["joints"][2].__setitem__("default_pos_rad", 0.5))
    assert "FR_calf_joint" in msg and "default_pos_rad" in msg
    msg = _bad(lambda d: d["joints"][0].__setitem__("actuator", "knee"))
    assert "knee" in msg


def test_duplicate_foot_and_bad_rates():
    msg = _bad(lambda d: d["feet"]["robot_order"].__setitem__(1, "FR_foot"))
    assert "feet.robot_order" in msg and "FR_foot" in msg
    msg = _bad(lambda d: d["rates"].__setitem__("control_rate_hz", 60.0))
    assert "decimation" in msg


def test_profile_file_errors(tmp_path):
    with pytest.raises(ProfileError, match="not found"):
        load_robot_profile(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[robot\nname=")
    with pytest.raises(ProfileError, match="not valid TOML"):
        load_robot_profile(bad)


def test_command_speed_range_is_optional_and_validated():
    data = copy.deepcopy(dict(load_robot_profile("go2").source))
    del data["policy"]["command_speed_range_m_s"], data["policy"]["clamp_command_speed"]
    p = profile_from_dict(data)
    assert p.command_speed_range_m_s is None and not p.clamp_command_speed  # unchecked
    data["policy"]["clamp_command_speed"] = True
    with pytest.raises(ProfileError, match="clamp_command_speed"):
        profile_from_dict(data)
    data["policy"]["command_speed_range_m_s"] = [0.8, 0.3]
    with pytest.raises(ProfileError, match="low <= high"):
        profile_from_dict(data)
