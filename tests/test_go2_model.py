"""The MuJoCo Go2 against the published Go2 and the training asset: inertials (Menagerie unitree_go2),
whole-robot mass, CoM and inertia at the default pose, joint parameters, self-collision, friction, the
calf's velocity clamp, and the exported model being the one the run compiles."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

mujoco = pytest.importorskip("mujoco")

from krabby.hal.backends.mujoco_backend import MujocoBackend, MujocoBackendConfig  # noqa: E402
from krabby.hal.robot_profile import load_robot_profile  # noqa: E402
from krabby.hal.sim.go2_model import ROBOT_GEOM_GROUP, load_model_params  # noqa: E402
from krabby.hal.sim.model_report import REFERENCES, mass_report  # noqa: E402

# Menagerie unitree_go2/go2.xml @2ffe3e3, every leg body's <inertial> verbatim (pos, quat, mass,
# diaginertia), so the mirroring of the front-left numbers in go2_mujoco.toml is checked too.
HIP_DIAG, THIGH_DIAG, CALF_DIAG = (0.00088403, 0.000596003, 0.000479967), (0.00594973, 0.00584149, 0.000878787), (0.0014901, 0.00146356, 5.31397e-05)
MENAGERIE = {
    "FL_hip": ((-0.0054, 0.00194, -0.000105), (0.497014, 0.499245, 0.505462, 0.498237), 0.678, HIP_DIAG),
    "FR_hip": ((-0.0054, -0.00194, -0.000105), (0.498237, 0.505462, 0.499245, 0.497014), 0.678, HIP_DIAG),
    "RL_hip": ((0.0054, 0.00194, -0.000105), (0.505462, 0.498237, 0.497014, 0.499245), 0.678, HIP_DIAG),
    "RR_hip": ((0.0054, -0.00194, -0.000105), (0.499245, 0.497014, 0.498237, 0.505462), 0.678, HIP_DIAG),
    "FL_thigh": ((-0.00374, -0.0223, -0.0327), (0.829533, 0.0847635, -0.0200632, 0.551623), 1.152, THIGH_DIAG),
    "FR_thigh": ((-0.00374, 0.0223, -0.0327), (0.551623, -0.0200632, 0.0847635, 0.829533), 1.152, THIGH_DIAG),
    "RL_thigh": ((-0.00374, -0.0223, -0.0327), (0.829533, 0.0847635, -0.0200632, 0.551623), 1.152, THIGH_DIAG),
    "RR_thigh": ((-0.00374, 0.0223, -0.0327), (0.551623, -0.0200632, 0.0847635, 0.829533), 1.152, THIGH_DIAG),
    "FL_calf": ((0.00629595, -0.000622121, -0.141417), (0.710672, 0.00154099, -0.00450087, 0.703508), 0.241352, CALF_DIAG),
    "FR_calf": ((0.00629595, 0.000622121, -0.141417), (0.703508, -0.00450087, 0.00154099, 0.710672), 0.241352, CALF_DIAG),
    "RL_calf": ((0.00629595, -0.000622121, -0.141417), (0.710672, 0.00154099, -0.00450087, 0.703508), 0.241352, CALF_DIAG),
    "RR_calf": ((0.00629595, 0.000622121, -0.141417), (0.703508, -0.00450087, 0.00154099, 0.710672), 0.241352, CALF_DIAG),
    "base": ((0.021112, 0, -0.005366), (-0.000543471, 0.713435, -0.00173769, 0.700719), 6.921, (0.107027, 0.0980771, 0.0244531)),
}


@pytest.fixture(scope="module")
def profile():
    return load_robot_profile("go2")


@pytest.fixture(scope="module")
def backend(profile):
    b = MujocoBackend(MujocoBackendConfig(terrain="flat", enable_depth=False, enable_height_scan=False), profile=profile)
    b.connect()
    yield b
    b.disconnect()


def _tensor(quat, diag) -> np.ndarray:
    r = np.zeros(9)
    q = np.asarray(quat, dtype=float)
    mujoco.mju_quat2Mat(r, q / np.linalg.norm(q))
    r = r.reshape(3, 3)
    return r @ np.diag(diag) @ r.T


def test_every_body_has_the_published_inertial(backend):
    m = backend.model
    for body, (pos, quat, mass, diag) in MENAGERIE.items():
        b = m.body(body)
        assert b.mass[0] == pytest.approx(mass, rel=1e-6), body
        assert np.allclose(b.ipos, pos, atol=1e-6), (body, b.ipos)
        ours = _tensor(b.iquat, b.inertia)  # the compiled principal axes, back to the full tensor
        # orientation included; the base tensor is written as the URDF's numbers (Menagerie's to 2e-7)
        assert np.allclose(ours, _tensor(quat, diag), atol=5e-7 if body == "base" else 2e-8), body
    # the collision primitives carry no mass: the inertials alone place every centre of mass
    robot = [g for g in range(m.ngeom) if m.geom_group[g] == ROBOT_GEOM_GROUP]
    assert robot and all(m.geom_bodyid[g] != 0 for g in robot)


def test_whole_robot_mass_com_and_inertia_at_default_pose_match_menagerie():
    r = mass_report()
    ref = REFERENCES["menagerie"]
    assert r.total_mass_kg == pytest.approx(ref["total_mass_kg"], abs=1e-3)
    # the audit: 1.8 cm too far back and 1.0 cm too low with CoMs at the primitives' centres
    assert np.allclose(r.com_base_m, ref["com_base_m"], atol=5e-4), r.com_base_m
    assert np.allclose(r.inertia_roll_pitch_yaw_kg_m2, ref["inertia_roll_pitch_yaw_kg_m2"], rtol=0.01)  # was +28 % / +4 % / +18 %
    assert np.allclose(r.joint_inertia_hip_thigh_calf_kg_m2, ref["joint_inertia_hip_thigh_calf_kg_m2"], rtol=0.02)  # was +31 / +25 / -51 %


def test_joint_parameters_are_the_training_assets(backend, profile):
    """Training: joint friction 0, no passive damping (Kd of the explicit PD is the only damping),
    armature as chosen in go2_mujoco.toml, PhysX velocity clamp 30.1 / 30.1 / 15.7 rad/s."""
    m, prm = backend.model, load_model_params()
    dofs = [m.joint(n).dofadr[0] for n in profile.joint_names]
    assert np.all(m.dof_damping[dofs] == 0.0)
    assert np.all(m.dof_frictionloss[dofs] == 0.0)
    assert np.allclose(m.dof_armature[dofs], prm.joint_armature_kg_m2)
    assert prm.max_joint_velocity_rad_s == {"hip": 30.1, "thigh": 30.1, "calf": 15.7}


def test_calf_velocity_is_clamped_like_the_training_asset(profile):
    b = MujocoBackend(MujocoBackendConfig(terrain="flat", enable_depth=False, enable_height_scan=False), profile=profile)
    b.connect()
    b.set_base_pose([0.0, 0.0, 1.0])  # legs in the air
    j = profile.joint_names.index("FL_calf_joint")
    jt = profile.joint_names.index("FL_thigh_joint")
    b.data.qvel[b._dadr[j]] = 25.0  # faster than the calf's 15.7 rad/s
    b.data.qvel[b._dadr[jt]] = 25.0  # within the thigh's 30.1 rad/s
    q0 = b.read().state.joint_pos_rad
    b.apply(b.zero_torque_command())
    b.step_control()
    s = b.read().state
    assert abs(s.joint_vel_rad_s[j]) <= 15.7 + 1e-9
    assert abs(s.joint_vel_rad_s[jt]) > 15.7
    # the position moved at the clamped speed too: at most 4 physics steps x 5 ms x 15.7 rad/s
    assert 0.0 < s.joint_pos_rad[j] - q0[j] <= 4 * profile.physics_dt_s * 15.7 + 1e-9


def test_self_collision_is_on_and_standing_touches_nothing_of_its_own(backend, profile):
    m, d = backend.model, backend.data
    backend.reset()
    for _ in range(100):  # 2 s standing
        backend.step_control()
    robot = {g for g in range(m.ngeom) if m.geom_group[g] == ROBOT_GEOM_GROUP}
    own = [c for c in d.contact[: d.ncon] if c.geom1 in robot and c.geom2 in robot]
    assert own == []
    # fold the two front hips inwards: the front legs must meet (training: enabled_self_collisions)
    q = np.array(profile.default_pos_rad)
    q[profile.joint_names.index("FL_hip_joint")] = -1.0
    q[profile.joint_names.index("FR_hip_joint")] = 1.0
    backend.set_base_pose([0.0, 0.0, 0.8], joint_pos_rad=q)
    pairs = {(m.geom_bodyid[c.geom1], m.geom_bodyid[c.geom2]) for c in d.contact[: d.ncon] if c.geom1 in robot and c.geom2 in robot}
    names = {tuple(sorted((m.body(a).name, m.body(b).name))) for a, b in pairs}
    assert any(a.startswith("FL_") and b.startswith("FR_") for a, b in names), names
    # bodies joined by a joint never collide (as PhysX filters jointed links)
    parent = m.body_parentid
    assert all(parent[a] != b and parent[b] != a for a, b in pairs)
    backend.reset()


def test_non_foot_robot_friction_is_in_the_training_range(profile):
    """Knees and shins on a box edge: training had 0.8-1.5 on every robot body (terrain 1.0 averaged
    with the robot's U(0.6, 2.0)); the MuJoCo MJCFs' 0.4 let them slide."""
    b = MujocoBackend(MujocoBackendConfig(terrain="flat", enable_depth=False, enable_height_scan=False), profile=profile)
    b.connect()
    m, d = b.model, b.data
    b.set_base_pose([0.0, 0.0, 0.12], quat_wxyz=[1.0, 0.0, 0.0, 0.0])  # lying on its belly: base and legs touch the floor
    feet = {m.geom(f).id for f in profile.foot_names}
    others = [c for c in d.contact[: d.ncon] if (c.geom1 not in feet and c.geom2 not in feet)]
    assert others, "expected non-foot contacts"
    body_geoms = [g for g in range(m.ngeom) if m.geom_group[g] == ROBOT_GEOM_GROUP and g not in feet]
    assert np.all((m.geom_friction[body_geoms, 0] >= 0.8) & (m.geom_friction[body_geoms, 0] <= 1.5))  # not the terrain's default
    assert all(0.8 <= c.friction[0] <= 1.5 for c in others), [c.friction[0] for c in others]


def test_export_model_is_the_model_the_run_compiled(tmp_path, profile):
    b = MujocoBackend(MujocoBackendConfig(terrain="parkour", seed=3, enable_depth=False, enable_height_scan=False), profile=profile)
    b.connect()
    path = b.export_model(tmp_path / "sub" / "go2.xml")
    text = Path(path).read_text()
    assert "training actuator" in text and "calf 15.7" in text  # says what runs outside the MJCF
    m2 = mujoco.MjModel.from_xml_path(path)
    m = b.model
    for field in ("body_mass", "body_ipos", "body_inertia", "body_iquat", "dof_armature", "dof_damping", "dof_frictionloss",
                  "geom_size", "geom_pos", "geom_friction", "geom_contype", "geom_conaffinity", "jnt_range", "actuator_ctrlrange"):
        assert np.array_equal(getattr(m, field), getattr(m2, field)), field
    assert m2.opt.timestep == m.opt.timestep and m2.ngeom == m.ngeom


def test_cli_export_model_writes_the_runs_model(tmp_path, profile):
    from krabby.parkour.sim2sim import main

    path = tmp_path / "gaps.xml"
    assert main(["--export-model", str(path), "--duration", "0", "--terrain", "gaps", "--seed", "2"]) == 0
    b = MujocoBackend(MujocoBackendConfig(terrain="gaps", seed=2, enable_depth=False), profile=profile)
    b.connect()
    m2 = mujoco.MjModel.from_xml_path(str(path))
    assert m2.ngeom == b.model.ngeom and np.array_equal(m2.geom_pos, b.model.geom_pos)
    assert np.array_equal(m2.body_inertia, b.model.body_inertia)
