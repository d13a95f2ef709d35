"""SimPerturbation in the MuJoCo backend: each training randomisation does what it says, is seeded, and is off by default."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

mujoco = pytest.importorskip("mujoco")

from krabby.hal.backends.mujoco_backend import MujocoBackend, MujocoBackendConfig  # noqa: E402
from krabby.hal.robot_profile import load_robot_profile  # noqa: E402
from krabby.hal.sim.perturbation import SimPerturbation  # noqa: E402
from krabby.hal.types import ActuatorCommand, ActuatorMode  # noqa: E402

PROFILE = load_robot_profile("go2")


def backend(p: SimPerturbation | None = None, **kw) -> MujocoBackend:
    b = MujocoBackend(MujocoBackendConfig(perturbation=p, **kw), profile=PROFILE)
    b.connect()
    return b


def base_id(b: MujocoBackend) -> int:
    return mujoco.mj_name2id(b.model, mujoco.mjtObj.mjOBJ_BODY, "base")


def crouch(b: MujocoBackend) -> ActuatorCommand:
    """A position command away from the current pose, small enough that the DC-motor clip stays out of it."""
    return ActuatorCommand(ActuatorMode.POSITION, PROFILE.default_pos_rad + 0.05, PROFILE.kp_nm_per_rad.copy(),
                           PROFILE.kd_nm_s_per_rad.copy())


def run(b: MujocoBackend, steps: int, command: ActuatorCommand | None = None) -> np.ndarray:
    for _ in range(steps):
        if command is not None:
            b.apply(command)
        b.step_control()
    return b.data.qpos.copy()


def test_default_is_off_bit_for_bit():
    a, b = backend(), backend(SimPerturbation())
    assert np.array_equal(run(a, 60, crouch(a)), run(b, 60, crouch(b)))
    assert b.pushes_applied == 0 and b.total_mass_kg == a.total_mass_kg


def test_mass_com_and_friction_change_the_model():
    nominal = backend()
    p = SimPerturbation(base_mass_offset_kg=2.0, base_com_offset_m=(0.02, -0.01, 0.005), foot_friction=0.7)
    b = backend(p)
    i = base_id(b)
    assert b.model.body_mass[i] == pytest.approx(nominal.model.body_mass[i] + 2.0)
    assert b.total_mass_kg == pytest.approx(nominal.total_mass_kg + 2.0)
    np.testing.assert_allclose(b.model.body_ipos[i], nominal.model.body_ipos[i] + [0.02, -0.01, 0.005])
    np.testing.assert_allclose(b.model.body_inertia[i], nominal.model.body_inertia[i] * b.model.body_mass[i] / nominal.model.body_mass[i])
    assert b.model.body_subtreemass[0] == pytest.approx(nominal.model.body_subtreemass[0] + 2.0)  # mj_setConst ran
    for foot in PROFILE.foot_names:
        g = mujoco.mj_name2id(b.model, mujoco.mjtObj.mjOBJ_GEOM, foot)
        assert b.model.geom_friction[g][0] == pytest.approx(0.7)
    with pytest.raises(ValueError, match="not positive"):
        backend(SimPerturbation(base_mass_offset_kg=-50.0))


def test_motor_strength_scales_the_pd_torque():
    """step_control turns the held command into torque; with strength 0.5 that is half the PD law, then the clip."""
    b = backend(SimPerturbation(motor_strength=0.5))
    run(b, 3, crouch(b))  # moving: q and qd away from the target
    q, qd = b.joint_pos_rad, b.joint_vel_rad_s
    command = dataclasses.replace(crouch(b), target_pos_rad=q + 0.1)
    b.apply(command)
    pd = PROFILE.kp_nm_per_rad * (command.target_pos_rad - q) - PROFILE.kd_nm_s_per_rad * qd
    expected = PROFILE.dc_motor_clip_nm(0.5 * pd, qd)
    np.testing.assert_allclose(b.held_command.torque_nm(PROFILE, q, qd), expected, rtol=1e-12, atol=1e-12)
    assert np.abs(expected).min() > 1.0  # real torques, none clipped to zero
    b.reset()  # the reset's default-pose hold is scaled too
    np.testing.assert_allclose(b.held_command.kp_nm_per_rad, 0.5 * PROFILE.kp_nm_per_rad)


def test_action_latency_holds_commands_back():
    b = backend(SimPerturbation(action_latency_steps=2))
    first = b.held_command
    cmds = [dataclasses.replace(crouch(b), target_pos_rad=PROFILE.default_pos_rad + 0.01 * k) for k in range(1, 5)]
    b.apply(cmds[0])
    b.step_control()
    assert b.held_command is first  # still the reset's default pose
    b.apply(cmds[1])
    b.step_control()
    assert b.held_command is first
    b.apply(cmds[2])
    np.testing.assert_array_equal(b.held_command.target_pos_rad, cmds[0].target_pos_rad)  # two steps late
    b.reset()
    assert b.held_command.target_pos_rad.tolist() == PROFILE.default_pos_rad.tolist()  # a reset drops pending commands


def test_pushes_follow_the_interval_and_the_seed():
    p = SimPerturbation(push_interval_s=0.1, push_vel_m_s=0.5, seed=7)
    a, b, c = backend(p), backend(p), backend(dataclasses.replace(p, seed=8))
    run(a, 4), run(b, 4), run(c, 4)  # 0.08 s: no push yet
    assert a.pushes_applied == 0
    v0 = a.data.qvel[:2].copy()
    a.step_control()  # crosses 0.1 s
    assert a.pushes_applied == 1 and np.abs(a.data.qvel[:2] - v0).max() > 1e-3
    assert np.array_equal(run(a, 20), run(b, 21)) and a.pushes_applied == b.pushes_applied == 5
    assert not np.array_equal(a.data.qpos, run(c, 21))


def test_depth_latency_and_noise():
    kw = dict(enable_depth=True, enable_height_scan=False)
    nominal, late = backend(**kw), backend(SimPerturbation(depth_latency_frames=1), **kw)
    noisy = backend(SimPerturbation(depth_noise_m=0.05, seed=3), **kw)
    frames = {}
    for step in range(11):
        for name, b in (("nominal", nominal), ("late", late), ("noisy", noisy)):
            frames.setdefault(name, []).append(b.read().depth)
            b.step_control()
    # the same physics (latency changes no dynamics), so "late" at camera period k shows nominal's period k - 1
    n, lt = frames["nominal"], frames["late"]
    assert not np.array_equal(n[0].distance_m, n[5].distance_m, equal_nan=True)  # the robot moves a little
    np.testing.assert_array_equal(lt[0].distance_m, n[0].distance_m)  # nothing older yet: the newest
    np.testing.assert_array_equal(lt[5].distance_m, n[0].distance_m)
    np.testing.assert_array_equal(lt[10].distance_m, n[5].distance_m)
    assert lt[5].stamp_ns == lt[0].stamp_ns  # the capture's own stamp, so observation age stays honest
    clean, dirty = frames["nominal"][0].distance_m, frames["noisy"][0].distance_m
    hit = np.isfinite(clean)
    assert hit.any() and np.array_equal(np.isinf(clean), np.isinf(dirty))
    assert 0.03 < float(np.std(dirty[hit] - clean[hit])) < 0.07 and dirty.min() >= 0.0


def test_bad_values_are_refused():
    for bad in (dict(motor_strength=0.0), dict(push_vel_m_s=-1.0), dict(action_latency_steps=-1),
                dict(depth_latency_frames=1.5), dict(base_mass_offset_kg=float("nan")), dict(foot_friction=0.0)):
        with pytest.raises(ValueError):
            SimPerturbation(**bad)
