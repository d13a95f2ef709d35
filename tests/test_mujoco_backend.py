"""MuJoCo backend: standing under the training PD, sensors against hand-computed values, joint-order map,
seeded terrain and training's goal headings."""

from __future__ import annotations

import dataclasses
import math
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

mujoco = pytest.importorskip("mujoco")

from krabby.hal.backends.mujoco_backend import MujocoBackend, MujocoBackendConfig  # noqa: E402
from krabby.hal.robot_profile import load_robot_profile  # noqa: E402
from krabby.hal.sim.go2_model import ROBOT_GEOM_GROUP  # noqa: E402
from krabby.hal.sim.sensors import GoalTracker  # noqa: E402
from krabby.hal.sim.terrain import PRESETS, TERRAIN_GEOM_GROUP, Course, CourseConfig, TerrainBox, make_course  # noqa: E402
from krabby.hal.types import ActuatorCommand, ActuatorMode  # noqa: E402

G = 9.81


@pytest.fixture(scope="module")
def profile():
    return load_robot_profile("go2")


def make_backend(profile, **kw) -> MujocoBackend:
    b = MujocoBackend(MujocoBackendConfig(**kw), profile=profile)
    b.connect()
    return b


def quat_from_rpy(roll: float, pitch: float, yaw: float) -> np.ndarray:
    """wxyz of R = Rz(yaw) Ry(pitch) Rx(roll), written out by hand."""
    cr, sr = math.cos(roll / 2), math.sin(roll / 2)
    cp, sp = math.cos(pitch / 2), math.sin(pitch / 2)
    cy, sy = math.cos(yaw / 2), math.sin(yaw / 2)
    return np.array(
        [
            cr * cp * cy + sr * sp * sy,
            sr * cp * cy - cr * sp * sy,
            cr * sp * cy + sr * cp * sy,
            cr * cp * sy - sr * sp * cy,
        ]
    )


def rot_from_rpy(roll: float, pitch: float, yaw: float) -> np.ndarray:
    cr, sr, cp, sp, cy, sy = math.cos(roll), math.sin(roll), math.cos(pitch), math.sin(pitch), math.cos(yaw), math.sin(yaw)
    rx = np.array([[1, 0, 0], [0, cr, -sr], [0, sr, cr]])
    ry = np.array([[cp, 0, sp], [0, 1, 0], [-sp, 0, cp]])
    rz = np.array([[cy, -sy, 0], [sy, cy, 0], [0, 0, 1]])
    return rz @ ry @ rx


# ------------------------------------------------------------------------------------ standing


def test_stands_under_training_pd_for_5_s(profile):
    b = make_backend(profile, terrain="flat", enable_depth=False, enable_height_scan=False)
    assert b.sim_time_s == 0.0 and b.base_pos_w_m[2] == pytest.approx(profile.spawn_base_height_m)
    heights, xy = [], []
    for k in range(250):  # 5 s at 50 Hz
        b.apply(b.default_pose_command())
        b.step_control()
        if (k + 1) % 50 == 0:
            heights.append(b.base_pos_w_m[2])
            xy.append(b.base_pos_w_m[:2])
    assert b.sim_time_s == pytest.approx(5.0)
    heights = np.array(heights)
    assert np.all((heights > 0.27) & (heights < 0.33)), heights  # feasibility study: ~0.29-0.30 m
    assert np.ptp(heights) < 0.005, heights  # steady from t = 1 s on
    assert np.linalg.norm(xy[-1] - xy[0]) < 0.02  # no walking off
    roll, pitch, yaw = b.roll_pitch_yaw_rad
    assert abs(roll) < 0.02 and abs(pitch) < 0.03 and abs(yaw) < 0.01
    assert not b.has_fallen
    s = b.read().state
    err = s.joint_pos_rad - profile.default_pos_rad
    assert np.all(np.abs(err) < 0.2)  # PD sag only (calf ~0.13 rad)
    # the applied torque is the training PD of this state (static: q̇ ≈ 0, no clipping at these loads)
    assert np.allclose(s.joint_torque_nm, profile.kp_nm_per_rad * -err, atol=0.05)


def test_zero_torque_collapses_and_damp_uses_no_stiffness(profile):
    b = make_backend(profile, terrain="flat", enable_depth=False, enable_height_scan=False)
    n = profile.num_joints
    b.apply(ActuatorCommand(ActuatorMode.DAMP, profile.default_pos_rad + 0.5, np.full(n, 40.0), np.full(n, 1.0)))
    b.step_control()
    s = b.read().state
    # DAMP: kp forced to 0 whatever the command says, so the torque is -kd * q̇ (inside the clip)
    assert np.allclose(s.joint_torque_nm, -1.0 * b.data.qvel[b._dadr], atol=2.0)
    assert np.max(np.abs(s.joint_torque_nm)) < 5.0
    b.apply(b.zero_torque_command())
    for _ in range(50):
        b.step_control()
    assert np.all(b.read().state.joint_torque_nm == 0.0)
    assert b.base_pos_w_m[2] < 0.2  # nothing holds the robot up


@pytest.mark.parametrize("field", ["target_pos_rad", "kp_nm_per_rad", "kd_nm_s_per_rad"])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_apply_refuses_non_finite_or_misshapen_commands(profile, field, bad):
    b = make_backend(profile, terrain="flat", enable_depth=False, enable_height_scan=False)
    held = b.held_command
    cmd = b.default_pose_command()
    getattr(cmd, field)[5] = bad
    with pytest.raises(ValueError, match=field):
        b.apply(cmd)
    with pytest.raises(ValueError, match=field):
        b.apply(dataclasses.replace(b.default_pose_command(), **{field: np.zeros(profile.num_joints - 1)}))
    assert b.held_command is held  # the robot keeps its last good command


def test_foot_forces_sum_to_weight_and_follow_foot_order(profile):
    b = make_backend(profile, terrain="flat", enable_depth=False, enable_height_scan=False)
    for _ in range(100):
        b.step_control()
    f = b.read().state.foot_force_n
    weight = b.total_mass_kg * G
    assert b.total_mass_kg == pytest.approx(15.21, abs=0.01)  # spec §8 MJCF total
    # norms of the per-foot sums: the vertical parts carry the weight, splay adds a little sideways force
    assert weight * 0.99 < f.sum() < weight * 1.05, (f, weight)
    assert np.all(f > 0.15 * weight)
    # fold one calf by name: that foot, and only that one, leaves the ground
    foot = profile.foot_names[2]
    leg = foot.split("_")[0]
    cmd = b.default_pose_command()
    cmd.target_pos_rad[profile.joint_index(f"{leg}_calf_joint")] = profile.pos_min_rad[profile.joint_index(f"{leg}_calf_joint")]
    cmd.target_pos_rad[profile.joint_index(f"{leg}_thigh_joint")] += 0.6
    b.apply(cmd)
    for _ in range(10):
        b.step_control()
    f = b.read().state.foot_force_n
    assert f[2] < 1.0, f
    assert np.delete(f, 2).sum() > 0.9 * weight, f  # the other three carry the robot


# ------------------------------------------------------------------------------------ joint order


def test_joint_order_map_by_name(profile):
    b = make_backend(profile, terrain="flat", enable_depth=False, enable_height_scan=False)
    b.model.opt.gravity[:] = 0.0  # float in the air: only the commanded joint moves
    m, d = b.model, b.data
    for name in ("RL_thigh_joint", "FR_hip_joint", "FL_calf_joint"):
        b.reset()
        i = profile.joint_index(name)
        cmd = b.default_pose_command()
        cmd.target_pos_rad[i] += 0.3
        b.apply(cmd)
        for _ in range(25):
            b.step_control()
        mj_q = {m.joint(j).name: d.qpos[m.jnt_qposadr[j]] for j in range(m.njnt) if m.joint(j).name in profile.joint_names}
        moved = {n for n, q in mj_q.items() if abs(q - profile.default_pos_rad[profile.joint_index(n)]) > 0.05}
        assert moved == {name}, moved
        assert mj_q[name] - profile.default_pos_rad[i] == pytest.approx(0.3, abs=0.03)
        s = b.read().state
        assert s.joint_pos_rad[i] == mj_q[name]  # read() maps back by name as well
        # the MuJoCo actuator named like the joint carries the torque
        assert d.actuator_force[mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_ACTUATOR, name)] == pytest.approx(s.joint_torque_nm[i])


# ------------------------------------------------------------------------------------ IMU and velocity


def test_gyro_and_velocity_are_body_frame(profile):
    b = make_backend(profile, terrain="flat", enable_depth=False, enable_height_scan=False)
    rpy = (0.2, -0.1, 1.2)
    b.set_base_pose([0.0, 0.0, 1.0], quat_from_rpy(*rpy))
    w_body = np.array([0.3, -0.5, 0.7])
    v_world = np.array([0.4, 0.2, -0.1])
    b.data.qvel[b._base_v : b._base_v + 3] = v_world
    b.data.qvel[b._base_v + 3 : b._base_v + 6] = w_body  # MuJoCo free joint: angular part is local
    mujoco.mj_forward(b.model, b.data)
    s = b.read().state
    r = rot_from_rpy(*rpy)
    assert np.allclose(s.base_ang_vel_body_rad_s, w_body, atol=1e-9)
    assert not np.allclose(s.base_ang_vel_body_rad_s, r @ w_body, atol=1e-2)  # GD's world-frame bug
    assert np.allclose(s.base_lin_vel_body_m_s, r.T @ v_world, atol=1e-9)
    assert np.allclose(s.base_quat_wxyz, quat_from_rpy(*rpy), atol=1e-12)
    assert np.allclose(b.roll_pitch_yaw_rad, rpy, atol=1e-9)
    # free fall: an accelerometer reads ~0; standing it reads +g along body z
    assert np.linalg.norm(s.base_lin_acc_body_m_s2) < 0.5


# ------------------------------------------------------------------------------------ height scan


def grid_world_xy(base_xy, yaw):
    """The 132 scan points written out from spec §1.2: x = -0.45 + 0.15 (k mod 12), y = -0.75 + 0.15 floor(k / 12)."""
    k = np.arange(132)
    px, py = -0.45 + 0.15 * (k % 12), -0.75 + 0.15 * (k // 12)
    c, s = math.cos(yaw), math.sin(yaw)
    return np.column_stack([base_xy[0] + c * px - s * py, base_xy[1] + s * px + c * py])


def test_height_scan_flat_is_base_height_and_never_sees_robot(profile):
    b = make_backend(profile, terrain="flat", enable_depth=False)
    # a rolled and yawed base over flat ground, legs in the default pose under it
    b.set_base_pose([1.0, -0.5, 0.35], quat_from_rpy(0.3, 0.2, 0.7))
    h = b.read().height_scan.base_height_above_hit_m
    assert h.shape == (132,)
    assert np.allclose(h, 0.35, atol=1e-6), h  # yaw-only grid: roll and pitch change nothing


def test_height_scan_matches_course_geometry(profile):
    b = make_backend(profile, terrain="parkour", seed=4, enable_depth=False)
    course = b.course
    rng = np.random.default_rng(0)
    checked = 0
    for seg in course.segments:
        x = 0.5 * (seg.x_start_m + seg.x_end_m) - 0.3
        yaw = float(rng.uniform(-0.6, 0.6))
        base = np.array([x, float(rng.uniform(-0.3, 0.3)), 0.8])
        b.set_base_pose(base, quat_from_rpy(0.0, 0.1, yaw))
        h = b.read().height_scan.base_height_above_hit_m
        expected = base[2] - course.surface_height_m(grid_world_xy(base, yaw))
        assert np.allclose(h, expected, atol=1e-4), (seg, np.max(np.abs(h - expected)))
        checked += int(np.sum(np.abs(expected - (base[2] - course.floor_z_m)) > 1e-3))
    assert checked > 100  # most points really were on obstacles, not on the floor
    for _ in range(100):  # anywhere along the course, any heading
        base = np.array([rng.uniform(0.0, course.x_end_m), rng.uniform(-1.0, 1.0), 0.9])
        yaw = float(rng.uniform(-math.pi, math.pi))
        b.set_base_pose(base, quat_from_rpy(0.0, 0.0, yaw))
        h = b.read().height_scan.base_height_above_hit_m
        assert np.allclose(h, base[2] - course.surface_height_m(grid_world_xy(base, yaw)), atol=1e-5)


def test_height_scan_miss_is_minus_inf(profile):
    course = make_course("flat")
    b = MujocoBackend(MujocoBackendConfig(enable_depth=False), profile=profile, course=course)
    b.connect()
    b.model.geom_group[mujoco.mj_name2id(b.model, mujoco.mjtObj.mjOBJ_GEOM, "floor")] = 3  # nothing left to hit
    b.set_base_pose([0.0, 0.0, 0.4])
    assert np.all(b.read().height_scan.base_height_above_hit_m == -np.inf)


# ------------------------------------------------------------------------------------ depth camera


def test_depth_of_flat_floor_matches_analytic_euclidean_distance(profile):
    b = make_backend(profile, terrain="flat", enable_height_scan=False, depth_range_m=50.0)
    rpy = (0.15, -0.1, 0.6)
    base = np.array([0.3, 0.2, 0.45])
    b.set_base_pose(base, quat_from_rpy(*rpy))
    depth = b.read().depth
    assert depth.distance_m.shape == (60, 106) and depth.distance_m.dtype == np.float32
    # pinhole from spec §2 numbers: fx = 106 * 11.041 / 20.955, fy = 60 * 11.041 / 12.24, centre (53, 30)
    fx, fy = 106 * 11.041 / 20.955, 60 * 11.041 / 12.24
    u, v = np.meshgrid((np.arange(106) + 0.5 - 53) / fx, (np.arange(60) + 0.5 - 30) / fy)
    t = math.radians(20.0)
    forward = np.array([math.cos(t), 0.0, -math.sin(t)])
    right = np.array([0.0, -1.0, 0.0])  # image right is the robot's right
    down = np.array([-math.sin(t), 0.0, -math.cos(t)])
    d_base = forward + u[..., None] * right + v[..., None] * down
    d_base /= np.linalg.norm(d_base, axis=-1, keepdims=True)
    r = rot_from_rpy(*rpy)
    d_world = d_base @ r.T
    cam = base + r @ np.array([0.33, 0.0, 0.08])
    with np.errstate(divide="ignore"):
        expected = np.where(d_world[..., 2] < 0, -cam[2] / d_world[..., 2], np.inf)
    expected = np.where(expected <= 50.0, expected, np.inf)
    got = depth.distance_m.astype(np.float64)
    assert np.array_equal(np.isinf(got), np.isinf(expected))
    finite = np.isfinite(expected)
    assert finite.mean() > 0.5
    assert np.allclose(got[finite], expected[finite], rtol=1e-5)
    # the roll makes left and right differ: a mirrored image would fail here
    assert not np.allclose(got[finite], np.fliplr(expected)[finite], rtol=1e-2)


def test_depth_sees_terrain_only_and_refreshes_at_camera_rate(profile):
    b = make_backend(profile, terrain="flat", enable_height_scan=False)
    b.set_base_pose([0.0, 0.0, 0.3])
    img = b.read().depth.distance_m
    # camera 0.38 m up, 20° down: the lowest rows see the floor ~0.6-0.8 m away, not the legs (< 0.3 m)
    finite = img[np.isfinite(img)]
    assert finite.min() > 0.45
    assert np.all(np.isinf(img[:10]))  # above the horizon: misses are +inf
    assert np.all(np.isinf(img[img > 2.0]))  # default range = max_distance: farther reads +inf
    frames = []
    for _ in range(11):
        frames.append(b.read().depth)
        b.step_control()
    ids = [id(f) for f in frames]
    every = int(round(profile.control_rate_hz / profile.camera.update_rate_hz))
    assert every == 5
    assert len(set(ids[0:5])) == 1 and len(set(ids[5:10])) == 1 and ids[0] != ids[5] != ids[10]


def test_height_scan_refreshes_on_the_policys_refresh_steps(profile):
    """Training reads the scan term only when the step counter is a multiple of 5 (spec §1.2); the backend
    scans at the profile's 10 Hz, at the first read of each period, i.e. exactly on those steps."""
    b = make_backend(profile, terrain="hurdles")
    scans = []
    for _ in range(11):
        scans.append(b.read().height_scan)
        b.step_control()
    assert profile.height_scan.update_rate_hz == 10.0
    ids = [id(s) for s in scans]
    assert len(set(ids[0:5])) == 1 and len(set(ids[5:10])) == 1 and ids[0] != ids[5] != ids[10]
    b.reset()  # a new episode scans at its first read, wherever the period stands
    assert b.read().height_scan is not scans[-1]
    every_step = make_backend(dataclasses.replace(profile, height_scan=dataclasses.replace(profile.height_scan, update_rate_hz=None)))
    held = []
    for _ in range(3):
        held.append(every_step.read().height_scan)  # kept, so no id is reused
        every_step.step_control()
    assert len({id(s) for s in held}) == 3  # a profile without a scan rate: every control step, as before


def test_dc_motor_clip_is_the_training_formula(profile):
    """dc_motor_clip_nm / dc_motor_limits_nm against the spec's formula written out with np.clip."""
    rng = np.random.default_rng(0)
    for _ in range(200):
        vel = rng.uniform(-40, 40, profile.num_joints)
        tau = rng.uniform(-60, 60, profile.num_joints)
        v = vel / profile.velocity_limit_rad_s
        tau_max = np.clip(profile.saturation_effort_nm * (1.0 - v), 0.0, profile.effort_limit_nm)
        tau_min = np.clip(profile.saturation_effort_nm * (-1.0 - v), -profile.effort_limit_nm, 0.0)
        np.testing.assert_array_equal(profile.dc_motor_clip_nm(tau, vel), np.clip(tau, tau_min, tau_max))
        lo, hi = profile.dc_motor_limits_nm(vel)
        np.testing.assert_array_equal(lo, tau_min)
        np.testing.assert_array_equal(hi, tau_max)


# ------------------------------------------------------------------------------------ navigation


def test_goal_tracker_headings_and_advance():
    g = GoalTracker(np.array([[1.0, 1.0], [2.0, 0.0], [2.0, -3.0]]))
    g.reset([0.0, 0.0])
    dy, dny = g.heading_errors(0.3)
    assert dy == pytest.approx(math.pi / 4 - 0.3, abs=1e-5)
    assert dny == pytest.approx(0.0 - 0.3, abs=1e-9)
    # not re-wrapped: yaw 3.5 wraps to 3.5 - 2pi, a goal behind and a little left is at +3.04 rad
    behind = GoalTracker(np.array([[-1.0, 0.1]]))
    behind.reset([0.0, 0.0])
    dy, _ = behind.heading_errors(3.5)
    assert dy == pytest.approx(math.atan2(0.1, -1.0) - (3.5 - 2 * math.pi), abs=1e-5)
    assert dy > math.pi
    # advance on the update after more than 5 cumulative updates within 0.2 m (spec §10)
    for k in range(3):
        g.update([1.05, 1.0])
    g.update([0.0, 0.0])  # leaving the radius does not clear the count
    for k in range(3):
        g.update([1.0, 0.95])
    assert g.goal_index == 0 and g.reach_timer == 6
    g.update([0.0, 0.0])
    assert g.goal_index == 1 and g.goals_reached == 1
    for _ in range(20):
        g.update([2.0, 0.0])
    for _ in range(20):
        g.update([2.0, -3.0])
    assert g.complete and g.goals_reached == 3
    assert g.goal_xy_m().tolist() == [2.0, -3.0]  # the target stays on the last goal


def test_backend_navigation_and_progress(profile):
    b = make_backend(profile, terrain="hurdles", seed=1, enable_depth=False, enable_height_scan=False, forward_speed_m_s=0.7)
    goal0 = b.course.goals_xy_m[0]
    nav = b.read().navigation
    assert nav.forward_speed_m_s == 0.7 and nav.terrain_is_flat is False
    assert nav.delta_yaw_rad == pytest.approx(math.atan2(goal0[1], goal0[0]), abs=1e-4)
    # stand on goal 0: after 6 counted control steps the next update moves on to goal 1
    b.set_base_pose([goal0[0], goal0[1], 0.35])
    for _ in range(6):
        b.step_control()
    assert b.goals_reached == 0
    b.step_control()
    assert b.goals_reached == 1 and b.current_goal_index == 1
    goal1 = b.course.goals_xy_m[1]
    pos, yaw = b.base_pos_w_m, b.roll_pitch_yaw_rad[2]
    nav = b.read().navigation
    assert nav.delta_yaw_rad == pytest.approx(math.atan2(goal1[1] - pos[1], goal1[0] - pos[0]) - yaw, abs=1e-4)
    assert b.progress_m == pytest.approx(float(np.hypot(*goal0)), abs=0.05)
    assert make_backend(profile, terrain="flat", enable_depth=False).read().navigation.terrain_is_flat is True


def test_fall_detection(profile):
    b = make_backend(profile, terrain="gaps", enable_depth=False, enable_height_scan=False)
    assert not b.has_fallen
    b.set_base_pose([0.0, 0.0, 0.4], quat_from_rpy(math.pi, 0.0, 0.0))
    assert b.has_fallen
    b.set_base_pose([0.0, 0.0, 0.4], quat_from_rpy(0.0, 1.6, 0.0))
    assert b.has_fallen
    b.set_base_pose([0.0, 0.0, -0.5], quat_from_rpy(0.0, 0.0, 0.0))  # in the pit
    assert b.has_fallen


# ------------------------------------------------------------------------------------ terrain


def test_course_is_reproducible_per_seed():
    for preset in PRESETS:
        a, b, c = make_course(preset, seed=7), make_course(preset, seed=7), make_course(preset, seed=8)
        assert a.boxes == b.boxes and np.array_equal(a.goals_xy_m, b.goals_xy_m)
        assert a.num_goals >= 8
        assert np.all(np.diff(a.goals_xy_m[:, 0]) > 0.5)  # goals lie along the course
        if preset != "flat":
            assert a.boxes != c.boxes
        assert not np.array_equal(a.goals_xy_m, c.goals_xy_m)


def test_preset_sizes_and_difficulty():
    hurdles = make_course("hurdles", seed=3)
    assert {s.kind for s in hurdles.segments} == {"hurdle"}
    assert max(b.center_m[2] + b.half_extents_m[2] for b in hurdles.boxes) == pytest.approx(0.05)
    steps = make_course("steps", seed=3)
    assert max(b.center_m[2] + b.half_extents_m[2] for b in steps.boxes) == pytest.approx(0.05)
    hard = make_course(CourseConfig("hurdles", seed=3, difficulty=1.0))
    assert min(s.size for s in hard.segments) > 0.3
    gaps = make_course("gaps", seed=3)
    assert gaps.floor_z_m < -0.5  # gaps open onto a pit
    assert make_course("parkour", seed=3).difficulty == PRESETS["parkour"].default_difficulty
    kinds = set()
    for seed in range(5):
        kinds |= {s.kind for s in make_course("parkour", seed=seed).segments}
    assert kinds == {"hurdle", "step", "gap", "slope", "stones"}
    with pytest.raises(ValueError, match="unknown course preset"):
        make_course("moon")


def test_model_geom_groups_and_actuators(profile):
    b = make_backend(profile, terrain="parkour", seed=2, enable_depth=False, enable_height_scan=False)
    m = b.model
    robot = [g for g in range(m.ngeom) if m.geom_bodyid[g] != 0]
    world = [g for g in range(m.ngeom) if m.geom_bodyid[g] == 0]
    assert len(world) == 1 + len(b.course.boxes)
    assert all(m.geom_group[g] == TERRAIN_GEOM_GROUP for g in world)
    assert all(m.geom_group[g] == ROBOT_GEOM_GROUP for g in robot)
    assert [m.actuator(i).name for i in range(m.nu)] == list(profile.joint_names)
    assert np.allclose(m.actuator_gear[:, 0], 1.0)
    assert np.allclose(m.actuator_ctrlrange[:, 1], profile.effort_limit_nm)
    assert m.opt.timestep == pytest.approx(profile.physics_dt_s)
    for j, name in enumerate(profile.joint_names):
        jnt = m.joint(name)
        assert jnt.range.tolist() == pytest.approx([profile.pos_min_rad[j], profile.pos_max_rad[j]])


def test_custom_course_box_shows_up_in_both_sensors(profile):
    box = TerrainBox("block", "hurdle", (1.0, 0.0, 0.1), (0.12, 1.0, 0.1))
    course = Course(CourseConfig(), difficulty=0.0, floor_z_m=0.0, boxes=(box,), goals_xy_m=[[3.0, 0.0]])
    assert not course.is_flat and course.length_m() == pytest.approx(3.0)
    b = MujocoBackend(MujocoBackendConfig(), profile=profile, course=course)
    b.connect()
    b.set_base_pose([0.0, 0.0, 0.4])
    f = b.read()
    h = f.height_scan.base_height_above_hit_m
    xs = -0.45 + 0.15 * (np.arange(132) % 12)
    on_box = np.abs(xs - 1.0) < 0.12  # grid x 0.9 and 1.05
    assert np.allclose(h[on_box], 0.2) and np.allclose(h[~on_box], 0.4)
    assert np.nanmin(f.depth.distance_m) < 1.0  # the block's face is closer than the floor behind it


# ------------------------------------------------------------------------------------ rendering


def test_render_rgb_with_egl_or_clear_error():
    code = textwrap.dedent(
        """
        from krabby.hal.backends.mujoco_backend import MujocoBackend, MujocoBackendConfig, RenderingUnavailableError
        b = MujocoBackend(MujocoBackendConfig(enable_depth=False, enable_height_scan=False))
        b.connect()
        try:
            img = b.render_rgb(96, 64)
        except RenderingUnavailableError as e:
            print("UNAVAILABLE", e)
        else:
            print("OK", img.shape, img.dtype, float(img.std()))
        """
    )
    env = {**os.environ, "MUJOCO_GL": "egl"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    if out.stdout.startswith("UNAVAILABLE"):
        assert "MUJOCO_GL=egl" in out.stdout
        pytest.skip(f"no EGL here: {out.stdout.strip()}")
    assert "OK (64, 96, 3) uint8" in out.stdout
    assert float(out.stdout.split()[-1]) > 5.0  # a picture, not a blank frame


def test_settle_and_reset(profile):
    b = make_backend(profile, terrain="flat", enable_depth=False, enable_height_scan=False, settle_s=1.0)
    assert b.sim_time_s == pytest.approx(1.0) and b.control_step_count == 0
    assert 0.27 < b.base_pos_w_m[2] < 0.33  # already standing when the first frame is read
    b.apply(b.zero_torque_command())
    for _ in range(10):
        b.step_control()
    b.reset()
    assert b.control_step_count == 0 and b.goals_reached == 0
    assert 0.27 < b.base_pos_w_m[2] < 0.33
    assert b.held_command.mode == ActuatorMode.POSITION
    b2 = make_backend(profile, terrain="flat", enable_depth=False, enable_height_scan=False, hold_default_pose=False)
    assert b2.held_command.mode == ActuatorMode.ZERO_TORQUE
    with pytest.raises(ValueError, match="12 finite numbers"):
        b2.apply(ActuatorCommand(ActuatorMode.POSITION, np.zeros(11), np.zeros(11), np.zeros(11)))
    b2.disconnect()
    b2.disconnect()  # safe twice
    with pytest.raises(RuntimeError, match="not connected"):
        b2.read()
