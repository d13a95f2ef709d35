"""The observation builder against the spec's numbers (../shared/spec/parkour_policy.md §0-§2, §9, §10).

Indices are written as literal numbers here on purpose: these tests check obs_layout itself.
"""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest

from krabby.hal.robot_profile import load_robot_profile
from krabby.hal.types import DepthFrame, HeightScan, NavigationCommand, RobotState
from krabby.parkour import obs_layout as L
from krabby.parkour.observation import (
    ObservationBuilder,
    apply_predicted_yaw,
    euler_xyz_from_quat_wxyz,
    heading_errors_rad,
    proprio_for_depth_encoder,
)

PROFILE = load_robot_profile("go2")

# Spec §3, literal.
ISAAC_NAMES = [
    "FL_hip_joint", "FR_hip_joint", "RL_hip_joint", "RR_hip_joint",
    "FL_thigh_joint", "FR_thigh_joint", "RL_thigh_joint", "RR_thigh_joint",
    "FL_calf_joint", "FR_calf_joint", "RL_calf_joint", "RR_calf_joint",
]
MUJOCO_TO_ISAAC = [3, 0, 9, 6, 4, 1, 10, 7, 5, 2, 11, 8]
ISAAC_TO_MUJOCO = [1, 5, 9, 0, 4, 8, 3, 7, 11, 2, 6, 10]
DEFAULT_ISAAC = [0.1, -0.1, 0.1, -0.1, 0.8, 0.8, 1.0, 1.0, -1.5, -1.5, -1.5, -1.5]


def quat_from_rpy(roll: float, pitch: float, yaw: float) -> np.ndarray:
    """w,x,y,z of R = Rz(yaw) Ry(pitch) Rx(roll), the rotation whose XYZ Euler angles are (roll, pitch, yaw)."""
    cr, sr = math.cos(roll / 2), math.sin(roll / 2)
    cp, sp = math.cos(pitch / 2), math.sin(pitch / 2)
    cy, sy = math.cos(yaw / 2), math.sin(yaw / 2)
    return np.array([
        cr * cp * cy + sr * sp * sy,
        sr * cp * cy - cr * sp * sy,
        cr * sp * cy + sr * cp * sy,
        cr * cp * sy - sr * sp * cy,
    ])


def make_state(**kw) -> RobotState:
    fields = dict(
        stamp_ns=0,
        joint_pos_rad=PROFILE.default_pos_rad.copy(),
        joint_vel_rad_s=np.zeros(12),
        joint_torque_nm=np.zeros(12),
        base_quat_wxyz=np.array([1.0, 0.0, 0.0, 0.0]),
        base_ang_vel_body_rad_s=np.zeros(3),
        base_lin_acc_body_m_s2=np.array([0.0, 0.0, 9.81]),
        base_lin_vel_body_m_s=np.full(3, np.nan),
        foot_force_n=np.zeros(4),
    )
    fields.update(kw)
    return RobotState(**fields)


def nav(speed: float = 0.5, dy: float = 0.0, dny: float = 0.0, flat: bool = False) -> NavigationCommand:
    return NavigationCommand(stamp_ns=0, forward_speed_m_s=speed, delta_yaw_rad=dy, delta_next_yaw_rad=dny,
                             terrain_is_flat=flat)


def scan(values_m: np.ndarray | float = 0.3) -> HeightScan:
    return HeightScan(stamp_ns=0, base_height_above_hit_m=np.broadcast_to(np.asarray(values_m, float), (132,)).copy())


def depth_frame(value_m: float, stamp_ns: int = 0) -> DepthFrame:
    return DepthFrame(stamp_ns=stamp_ns, distance_m=np.full((60, 106), value_m, dtype=np.float32))


ZERO_ACTION = np.zeros(12)


def teacher_obs(state: RobotState | None = None, **kw) -> np.ndarray:
    b = ObservationBuilder(PROFILE, kind="teacher")
    return b.build(state or make_state(), kw.pop("navigation", nav()), last_action_policy=kw.pop("last", ZERO_ACTION),
                   height_scan=kw.pop("height_scan", scan()), **kw)


# ---------------------------------------------------------------------------------- layout
def test_layout_blocks_match_spec_table():
    assert L.OBS_DIM == 753
    assert (L.PROPRIO, L.SCAN, L.PRIV_EXPLICIT, L.PRIV_LATENT, L.HISTORY) == (
        slice(0, 53), slice(53, 185), slice(185, 194), slice(194, 223), slice(223, 753))
    assert L.HISTORY_LENGTH == 10 and L.REFRESH_PERIOD_STEPS == 5 and L.OBS_CLIP == 100.0
    assert L.history_entry(0) == slice(223, 276) and L.history_entry(9) == slice(700, 753)
    assert (L.BASE_ANG_VEL, L.ROLL, L.PITCH, L.DELTA_YAWS, L.ZERO_8_10, L.COMMAND_VX) == (
        slice(0, 3), slice(3, 4), slice(4, 5), slice(6, 8), slice(8, 10), slice(10, 11))
    assert (L.ENV_NOT_FLAT, L.ENV_FLAT, L.JOINT_POS, L.JOINT_VEL, L.LAST_ACTION, L.FOOT_CONTACT) == (
        slice(11, 12), slice(12, 13), slice(13, 25), slice(25, 37), slice(37, 49), slice(49, 53))
    assert len(L.term_names()) == 753 and L.term_names()[10] == "command_vx"


def test_joint_order_maps_match_spec_literals():
    assert list(PROFILE.policy_joint_names) == ISAAC_NAMES
    assert PROFILE.policy_from_robot.tolist() == MUJOCO_TO_ISAAC
    assert PROFILE.robot_from_policy.tolist() == ISAAC_TO_MUJOCO
    np.testing.assert_array_equal(PROFILE.to_policy_order(PROFILE.default_pos_rad), DEFAULT_ISAAC)
    assert list(PROFILE.policy_foot_names) == ["FL_foot", "FR_foot", "RL_foot", "RR_foot"]


# ----------------------------------------------------------------------------- per term
def test_output_shape_dtype_and_constant_terms():
    obs = teacher_obs(navigation=nav(speed=0.55, dy=0.2, dny=-0.3))
    assert obs.shape == (753,) and obs.dtype == np.float32
    assert obs[10] == np.float32(0.55)
    assert obs[5] == 0 and obs[8] == 0 and obs[9] == 0
    assert obs[11] == 1.0 and obs[12] == 0.0
    assert obs[6] == np.float32(0.2) and obs[7] == np.float32(-0.3)
    obs = teacher_obs(navigation=nav(flat=True))
    assert obs[11] == 0.0 and obs[12] == 1.0
    np.testing.assert_array_equal(obs[194:223], 0.0)  # priv_latent


def test_ang_vel_body_scaled():
    obs = teacher_obs(make_state(base_ang_vel_body_rad_s=np.array([1.0, 2.0, -4.0])))
    np.testing.assert_array_equal(obs[0:3], [0.25, 0.5, -1.0])


@pytest.mark.parametrize("roll,pitch,yaw", [(0.3, 0.0, 0.0), (0.0, 0.2, 0.0), (-0.4, 0.25, 2.5), (1.0, -0.7, -3.0)])
def test_roll_pitch_from_quaternion(roll, pitch, yaw):
    obs = teacher_obs(make_state(base_quat_wxyz=quat_from_rpy(roll, pitch, yaw)))
    assert obs[3] == pytest.approx(roll, abs=1e-6)
    assert obs[4] == pytest.approx(pitch, abs=1e-6)
    r, p, y = euler_xyz_from_quat_wxyz(-quat_from_rpy(roll, pitch, yaw))  # sign of q is irrelevant
    assert (r, p, y) == pytest.approx((roll, pitch, yaw), abs=1e-9)


def test_heading_errors_not_rewrapped():
    q = quat_from_rpy(0.0, 0.0, -3.0)
    dy, dny = heading_errors_rad(q, 3.0, 1.0)
    assert dy == pytest.approx(6.0) and dny == pytest.approx(4.0)  # (-2pi, 2pi) range, no wrap


def test_joint_moved_by_name_lands_at_isaac_index():
    pos = PROFILE.default_pos_rad.copy()
    pos[PROFILE.joint_index("FR_thigh_joint")] += 0.3
    vel = np.zeros(12)
    vel[PROFILE.joint_index("RL_calf_joint")] = 2.0
    obs = teacher_obs(make_state(joint_pos_rad=pos, joint_vel_rad_s=vel))
    expected_pos = np.zeros(12, np.float32)
    expected_pos[5] = np.float32(0.8 + 0.3) - np.float32(0.8)  # Isaac 5 = FR_thigh
    np.testing.assert_array_equal(obs[13:25], expected_pos)
    expected_vel = np.zeros(12, np.float32)
    expected_vel[10] = np.float32(2.0) * np.float32(0.05)  # Isaac 10 = RL_calf
    np.testing.assert_array_equal(obs[25:37], expected_vel)


def test_every_joint_through_sdk_order():
    # sdk value j -> isaac index i with isaac[i] = sdk[mujoco_to_isaac[i]]
    sdk_vel = np.arange(12, dtype=float) + 1.0
    obs = teacher_obs(make_state(joint_vel_rad_s=sdk_vel))
    np.testing.assert_allclose(obs[25:37], 0.05 * sdk_vel[MUJOCO_TO_ISAAC], rtol=1e-6)


def test_last_action_is_written_raw_in_policy_order():
    a = np.linspace(-6.0, 6.0, 12)  # beyond the +-4.8 action clip: the observation keeps it unclipped
    obs = teacher_obs(last=a)
    np.testing.assert_array_equal(obs[37:49], a.astype(np.float32))


def test_contacts_threshold_order_and_or_with_previous_step():
    b = ObservationBuilder(PROFILE, kind="teacher")
    f = np.zeros(4)
    f[PROFILE.foot_names.index("FL_foot")] = 5.0  # wire order is FR, FL, RR, RL
    f[PROFILE.foot_names.index("RR_foot")] = 2.0  # exactly the threshold: not a contact (> 2 N)
    o0 = b.build(make_state(foot_force_n=f), nav(), last_action_policy=ZERO_ACTION, height_scan=scan())
    np.testing.assert_array_equal(o0[49:53], [0.5, -0.5, -0.5, -0.5])  # FL, FR, RL, RR
    o1 = b.build(make_state(foot_force_n=np.zeros(4)), nav(), last_action_policy=ZERO_ACTION)
    np.testing.assert_array_equal(o1[49:53], [0.5, -0.5, -0.5, -0.5])  # OR with the previous step
    o2 = b.build(make_state(foot_force_n=np.zeros(4)), nav(), last_action_policy=ZERO_ACTION)
    np.testing.assert_array_equal(o2[49:53], [-0.5, -0.5, -0.5, -0.5])
    f = np.zeros(4)
    f[PROFILE.foot_names.index("RL_foot")] = 2.01
    o3 = b.build(make_state(foot_force_n=f), nav(), last_action_policy=ZERO_ACTION)
    np.testing.assert_array_equal(o3[49:53], [-0.5, -0.5, 0.5, -0.5])
    b.reset()  # reset forgets the previous step
    o4 = b.build(make_state(foot_force_n=np.zeros(4)), nav(), last_action_policy=ZERO_ACTION)
    np.testing.assert_array_equal(o4[49:53], [-0.5] * 4)


def test_scan_formula_miss_and_order():
    h = np.full(132, 0.3)
    h[0], h[1], h[2], h[3], h[131] = 1.5, 0.8, -np.inf, 0.0, 0.55
    obs = teacher_obs(height_scan=scan(h))
    assert obs[53] == 1.0  # clip(1.5 - 0.3)
    assert obs[54] == np.float32(np.float32(0.8) - np.float32(0.3))
    assert obs[55] == -1.0  # miss
    assert obs[56] == np.float32(-0.3)
    assert obs[184] == np.float32(np.float32(0.55) - np.float32(0.3))
    np.testing.assert_array_equal(obs[57:184], 0.0)


def test_nan_scan_ray_is_a_miss_like_training():
    """A NaN ray reads -1 (a miss after training's clip), it does not drop the step; +inf stays refused."""
    h = np.full(132, 0.3)
    h[[4, 70]] = np.nan
    obs = teacher_obs(height_scan=scan(h))
    assert obs[53 + 4] == -1.0 and obs[53 + 70] == -1.0
    np.testing.assert_array_equal(np.delete(obs[53:185], [4, 70]), 0.0)
    h = np.full(132, 0.3)
    h[5] = np.inf
    with pytest.raises(ValueError, match="HeightScan"):
        teacher_obs(height_scan=scan(h))


def test_speed_command_outside_the_trained_range_warns_and_clamps_when_configured(caplog):
    import dataclasses
    import logging

    assert PROFILE.command_speed_range_m_s == (0.3, 0.8) and not PROFILE.clamp_command_speed
    b = ObservationBuilder(PROFILE, kind="teacher")
    with caplog.at_level(logging.WARNING, logger="krabby.parkour.observation"):
        obs = [b.build(make_state(), nav(speed=v), last_action_policy=ZERO_ACTION, height_scan=scan())[L.COMMAND_VX]
               for v in (0.5, 0.1, 0.1, 1.2)]
    assert obs == [np.float32(0.5), np.float32(0.1), np.float32(0.1), np.float32(1.2)]  # warned, passed as given
    warnings = [r.getMessage() for r in caplog.records if "outside the trained range" in r.getMessage()]
    assert len(warnings) == 2 and "0.1 m/s" in warnings[0] and "1.2 m/s" in warnings[1]  # once per value
    clamping = ObservationBuilder(dataclasses.replace(PROFILE, clamp_command_speed=True), kind="teacher")
    out = [clamping.build(make_state(), nav(speed=v), last_action_policy=ZERO_ACTION, height_scan=scan())[L.COMMAND_VX]
           for v in (0.1, 0.6, 1.2)]
    assert out == [np.float32(0.3), np.float32(0.6), np.float32(0.8)]


def test_student_without_scan_has_zero_scan_and_teacher_requires_one():
    b = ObservationBuilder(PROFILE, kind="student")
    obs = b.build(make_state(), nav(), last_action_policy=ZERO_ACTION, depth=depth_frame(1.0))
    np.testing.assert_array_equal(obs[53:185], 0.0)
    t = ObservationBuilder(PROFILE, kind="teacher")
    with pytest.raises(ValueError, match="HeightScan"):
        t.build(make_state(), nav(), last_action_policy=ZERO_ACTION)


def test_priv_explicit_velocity_or_zeros():
    obs = teacher_obs(make_state(base_lin_vel_body_m_s=np.array([0.5, -0.2, 0.1])))
    np.testing.assert_array_equal(obs[185:188], (2 * np.array([0.5, -0.2, 0.1], np.float32)))
    np.testing.assert_array_equal(obs[188:194], 0.0)
    np.testing.assert_array_equal(teacher_obs(make_state())[185:194], 0.0)  # NaN velocity -> zeros


def test_fast_and_slow_telemetry_paths_agree():
    """build() checks the state, last action and velocity with one reduction and falls back to per-field
    checks; both paths must give the same observation, and the fallback must still name the bad field."""
    v = np.array([0.5, -0.2, 0.1])
    fast = teacher_obs(make_state(base_lin_vel_body_m_s=v))
    as_lists = make_state(base_lin_vel_body_m_s=list(v))  # no ndarray shapes: the per-field path
    as_lists.joint_pos_rad = list(as_lists.joint_pos_rad)
    np.testing.assert_array_equal(teacher_obs(as_lists), fast)
    # one unknown component is "unknown": zeros, the rest of the observation as with a finite velocity
    partial = teacher_obs(make_state(base_lin_vel_body_m_s=np.array([0.5, np.nan, 0.1])))
    np.testing.assert_array_equal(partial[185:194], 0.0)
    np.testing.assert_array_equal(partial[:185], fast[:185])
    b = ObservationBuilder(PROFILE, kind="teacher")
    with pytest.raises(ValueError, match="last_action_policy has non-finite entries at \\[3\\]"):
        bad = ZERO_ACTION.copy()
        bad[3] = np.nan
        b.build(make_state(), nav(), last_action_policy=bad, height_scan=scan())  # velocity NaN too (make_state)
    assert b.global_step == -1


def test_obs_clip_100_covers_history():
    b = ObservationBuilder(PROFILE, kind="teacher")
    big = np.full(12, 150.0)
    for _ in range(3):
        obs = b.build(make_state(), nav(), last_action_policy=big, height_scan=scan())
    assert obs[37] == 100.0 and obs.max() == 100.0
    assert obs[L.history_entry(9)][37] == 100.0


def test_bad_telemetry_raises():
    b = ObservationBuilder(PROFILE, kind="teacher")
    with pytest.raises(ValueError, match="joint_pos_rad"):
        b.build(make_state(joint_pos_rad=np.zeros(11)), nav(), last_action_policy=ZERO_ACTION, height_scan=scan())
    with pytest.raises(ValueError, match="base_ang_vel"):
        b.build(make_state(base_ang_vel_body_rad_s=np.array([0, np.nan, 0])), nav(),
                last_action_policy=ZERO_ACTION, height_scan=scan())
    with pytest.raises(ValueError, match="delta yaws"):
        b.build(make_state(), nav(dy=np.nan), last_action_policy=ZERO_ACTION, height_scan=scan())
    assert b.global_step == -1  # failed builds do not advance the counter


# --------------------------------------------------------------------- history and schedule
def _distinct_state(k: int) -> RobotState:
    """A state whose proprio is unique per step k (ang vel x and a joint)."""
    pos = PROFILE.default_pos_rad.copy()
    pos[0] += 0.01 * k
    return make_state(base_ang_vel_body_rad_s=np.array([0.1 * k, 0.0, 0.0]), joint_pos_rad=pos)


def test_history_timing_over_13_steps():
    b = ObservationBuilder(PROFILE, kind="teacher")
    obs, prop = [], []
    for k in range(13):
        o = b.build(_distinct_state(k), nav(dy=0.1 * k + 0.05, dny=-0.2), last_action_policy=np.full(12, 0.01 * k),
                    height_scan=scan())
        assert b.episode_step == k and b.global_step == k
        obs.append(o)
        p = o[0:53].copy()
        p[6:8] = 0.0  # stored entries have 6:8 masked
        prop.append(p)
    np.testing.assert_array_equal(obs[0][223:753], 0.0)  # step 0: all zeros
    for k in range(1, 13):
        hist = obs[k][223:753].reshape(10, 53)
        for j in range(10):
            src = 0 if k == 1 else max(1, k - 10 + j)  # spec §1.4
            np.testing.assert_array_equal(hist[j], prop[src], err_msg=f"step {k} entry {j}")
        assert not np.any(hist[:, 6:8])
    # the current step is never in the history
    assert not any(np.array_equal(obs[12][223:753].reshape(10, 53)[j], prop[12]) for j in range(10))


def test_reset_zeroes_history_but_not_the_global_counter():
    b = ObservationBuilder(PROFILE, kind="teacher")
    for k in range(7):
        b.build(_distinct_state(k), nav(), last_action_policy=ZERO_ACTION, height_scan=scan())
    b.reset()
    assert b.episode_step == -1 and b.global_step == 6
    o0 = b.build(_distinct_state(20), nav(), last_action_policy=ZERO_ACTION)
    assert b.episode_step == 0 and b.global_step == 7
    np.testing.assert_array_equal(o0[223:753], 0.0)
    o1 = b.build(_distinct_state(21), nav(), last_action_policy=ZERO_ACTION)
    p0 = o0[0:53].copy()
    p0[6:8] = 0
    np.testing.assert_array_equal(o1[223:753].reshape(10, 53), np.tile(p0, (10, 1)))


def test_five_step_refresh_schedule_with_reset_holds_values():
    """delta yaws and scan refresh only at global counter % 5 == 0, held across a reset (spec §10)."""
    b = ObservationBuilder(PROFILE, kind="teacher")
    seen_yaw, seen_scan, refresh = [], [], []
    for c in range(17):
        if c == 8:
            b.reset()
        o = b.build(make_state(), nav(dy=0.1 * c, dny=-0.1 * c, speed=0.3 + 0.01 * c), last_action_policy=ZERO_ACTION,
                    height_scan=scan(0.3 + 0.01 * c))
        assert o[10] == np.float32(0.3 + 0.01 * c)  # the command is NOT held
        seen_yaw.append(float(o[6]))
        seen_scan.append(float(o[53]))
        refresh.append(b.is_refresh_step)
        assert b.global_step == c
    src = [0, 0, 0, 0, 0, 5, 5, 5, 5, 5, 10, 10, 10, 10, 10, 15, 15]
    assert refresh == [c % 5 == 0 for c in range(17)]
    np.testing.assert_allclose(seen_yaw, [0.1 * s for s in src], rtol=1e-6)
    np.testing.assert_allclose(seen_scan, [0.01 * s for s in src], atol=1e-6)


# ------------------------------------------------------------------------------ student depth
def test_depth_buffer_latency_refill_and_encoder_schedule():
    b = ObservationBuilder(PROFILE, kind="student")
    used = {}
    for c in range(18):
        if c == 13:
            b.reset()
        value = 0.1 * (c + 1)  # a distinct constant frame per step: normalised 0.05 * (c + 1) - 0.5
        b.build(make_state(), nav(dy=np.nan, dny=np.nan), last_action_policy=ZERO_ACTION,
                depth=depth_frame(value, stamp_ns=c))
        img = b.depth_for_encoder
        assert img.shape == (58, 87) and img.dtype == np.float32
        src = int(round((float(img.mean()) + 0.5) / 0.05)) - 1
        assert np.allclose(img, 0.05 * (src + 1) - 0.5, atol=1e-5)
        assert b.depth_for_encoder_stamp_ns == src
        used[c] = src
    # buffer[-2]: counter 0 sees f0 (reset fill), 5 sees f0, 10 sees f5; reset at counter 13
    # refills with f13, so 13 and 14 see f13 and the refresh at 15 still sees f13 (buffer[-2]).
    expected = {0: 0, 1: 0, 4: 0, 5: 0, 9: 0, 10: 5, 12: 5, 13: 13, 14: 13, 15: 13, 17: 13}
    for c, s in expected.items():
        assert used[c] == s, f"counter {c}: encoder sees frame {used[c]}, expected {s}"


def test_student_depth_frames_between_refreshes_are_latest_only():
    b = ObservationBuilder(PROFILE, kind="student")
    b.build(make_state(), nav(), last_action_policy=ZERO_ACTION, depth=depth_frame(1.0, 100))
    for c in range(1, 11):
        frame = depth_frame(1.5, 200) if c == 3 else None  # one frame at counter 3, none at 5 or 10
        b.build(make_state(), nav(), last_action_policy=ZERO_ACTION, depth=frame)
        if c == 10:
            assert b.depth_for_encoder_stamp_ns == 200  # pushed at 5 from the latest received frame
            np.testing.assert_allclose(b.depth_for_encoder, 0.25, atol=1e-6)


def test_student_needs_a_depth_frame():
    b = ObservationBuilder(PROFILE, kind="student")
    with pytest.raises(ValueError, match="DepthFrame"):
        b.build(make_state(), nav(), last_action_policy=ZERO_ACTION)
    with pytest.raises(ValueError, match="profile camera"):
        b.build(make_state(), nav(), last_action_policy=ZERO_ACTION,
                depth=DepthFrame(stamp_ns=0, distance_m=np.ones((58, 87), np.float32)))
    assert ObservationBuilder(PROFILE, kind="teacher").depth_for_encoder is None


def test_student_nonfinite_navigation_yaw_is_zero_and_replaced_by_prediction():
    b = ObservationBuilder(PROFILE, kind="student")
    obs = b.build(make_state(), nav(dy=np.nan, dny=np.inf), last_action_policy=ZERO_ACTION, depth=depth_frame(1.0))
    assert obs[6] == 0 and obs[7] == 0
    before = obs.copy()
    enc_prop = proprio_for_depth_encoder(obs)
    out = apply_predicted_yaw(obs, np.array([0.4, -0.2], np.float32))
    assert out is obs
    assert obs[6] == np.float32(0.6) and obs[7] == np.float32(1.5 * np.float32(-0.2))
    mask = np.ones(753, bool)
    mask[6:8] = False
    np.testing.assert_array_equal(obs[mask], before[mask])
    assert enc_prop.shape == (53,) and enc_prop[6] == 0 and enc_prop[7] == 0


def test_apply_predicted_yaw_batched_torch():
    torch = pytest.importorskip("torch")
    obs = torch.zeros(2, 753)
    apply_predicted_yaw(obs, torch.tensor([[1.0, -1.0], [0.5, 0.0]]))
    assert obs[:, 6:8].tolist() == [[1.5, -1.5], [0.75, 0.0]]
    assert float(obs.abs().sum()) == pytest.approx(3.75)


def test_observation_module_does_not_import_zmq():
    code = ("import sys; import krabby.parkour.observation, krabby.parkour.actions, krabby.parkour.depth;"
            " assert 'zmq' not in sys.modules, 'zmq imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_refused_build_changes_nothing():
    b = ObservationBuilder(PROFILE, kind="student")
    with pytest.raises(ValueError):
        b.build(make_state(), nav(), last_action_policy=ZERO_ACTION)  # no depth yet
    with pytest.raises(ValueError, match="forward_speed"):
        b.build(make_state(), nav(speed=np.nan), last_action_policy=ZERO_ACTION, depth=depth_frame(1.0))
    with pytest.raises(ValueError, match="quaternion"):
        b.build(make_state(base_quat_wxyz=np.zeros(4)), nav(), last_action_policy=ZERO_ACTION, depth=depth_frame(1.0))
    assert b.global_step == -1 and b.depth_for_encoder is None
    o = b.build(make_state(), nav(dy=0.3), last_action_policy=ZERO_ACTION, depth=depth_frame(1.0))
    assert b.global_step == 0 and b.episode_step == 0 and o[6] == np.float32(0.3)


def test_observations_are_independent_arrays_and_a_refused_build_leaves_no_trace():
    """build() assembles in a persistent buffer and returns copies: a caller may keep or modify each
    observation (apply_predicted_yaw does), and a refused build between two good ones changes nothing."""
    s1 = make_state(joint_vel_rad_s=np.linspace(-1, 1, 12), foot_force_n=np.array([30.0, 0, 30, 0]))
    s2 = make_state(base_ang_vel_body_rad_s=np.array([0.1, -0.2, 0.3]), foot_force_n=np.array([0.0, 30, 0, 30]))
    bad = make_state(joint_pos_rad=np.full(12, np.nan), foot_force_n=np.full(4, 99.0))
    kept, clean = ObservationBuilder(PROFILE, kind="teacher"), ObservationBuilder(PROFILE, kind="teacher")
    o1 = kept.build(s1, nav(), last_action_policy=ZERO_ACTION, height_scan=scan())
    snapshot = o1.copy()
    with pytest.raises(ValueError, match="joint_pos_rad"):
        kept.build(bad, nav(), last_action_policy=ZERO_ACTION, height_scan=scan())
    o1[:] = 7.0  # the caller's array, not the builder's
    o2 = kept.build(s2, nav(), last_action_policy=ZERO_ACTION, height_scan=scan())
    np.testing.assert_array_equal(clean.build(s1, nav(), last_action_policy=ZERO_ACTION, height_scan=scan()), snapshot)
    np.testing.assert_array_equal(clean.build(s2, nav(), last_action_policy=ZERO_ACTION, height_scan=scan()), o2)
    assert (o1 == 7.0).all() and not np.shares_memory(o1, o2)


def test_student_reads_a_repeated_depth_frame_object_once_and_a_new_one_at_the_next_refresh():
    """The client passes the latest-only DepthFrame every step; only a new object is new data."""
    b = ObservationBuilder(PROFILE, kind="student")
    near, far = depth_frame(0.5, stamp_ns=1), depth_frame(2.0, stamp_ns=2)
    b.build(make_state(), nav(), last_action_policy=ZERO_ACTION, depth=near)  # step 0: refill with `near`
    for _ in range(4):
        b.build(make_state(), nav(), last_action_policy=ZERO_ACTION, depth=near)
    b.build(make_state(), nav(), last_action_policy=ZERO_ACTION, depth=far)  # step 5: refresh shifts `far` in
    assert b.is_refresh_step and b.depth_for_encoder_stamp_ns == 1
    b.build(make_state(), nav(), last_action_policy=ZERO_ACTION, depth=far)
    for _ in range(4):
        b.build(make_state(), nav(), last_action_policy=ZERO_ACTION, depth=far)
    assert b.is_refresh_step and b.depth_for_encoder_stamp_ns == 2  # step 10: the encoder sees `far`
