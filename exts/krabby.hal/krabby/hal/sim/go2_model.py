"""The Go2 as a MuJoCo model built from primitive geoms, generated as MJCF text from the robot profile.

Why generate instead of shipping an XML: joint names, joint order, limits and the sensor poses must
come from the robot profile (config/robots/go2.toml), and the link geometry from
config/robots/go2_mujoco.toml (spec §8 numbers), so no robot fact is written twice. The actuators
are plain torque motors (gear 1, ctrlrange = the profile's effort limits): the training actuator
model (PD plus DC-motor torque-speed clip, spec §3) is evaluated by the backend every physics
step, exactly as Isaac Lab's explicit actuator did.

Mass distribution: every body carries the published inertial of the real Go2 (mass, centre of mass
and full inertia tensor, go2_mujoco.toml [inertials], from Menagerie ``unitree_go2/go2.xml``); the
collision primitives are massless, so their shape never moves a centre of mass. Inertials are written
for the front-left leg and mirrored (x and/or y) for the others, tensor included.

Contacts: robot geoms sit in geom group 1 (sensors that filter on group 0 never see the robot) and,
as in training (``enabled_self_collisions=True``), collide with the world and with each other;
MuJoCo's parent filter leaves out the pairs joined by a joint, as PhysX does.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional

import numpy as np

from ..robot_profile import ProfileError, RobotProfile, config_dir
from .terrain import TERRAIN_GEOM_GROUP, Course

try:  # Python 3.11+
    import tomllib as _toml
except ModuleNotFoundError:  # Python 3.10
    import tomli as _toml  # type: ignore[no-redef]

#: Geom group of every robot geom (terrain is TERRAIN_GEOM_GROUP).
ROBOT_GEOM_GROUP = 1
IMU_SITE = "imu"
DEPTH_CAMERA = "depth_camera"
CHASE_CAMERA = "chase"
BASE_BODY = "base"
BASE_JOINT = "base_freejoint"
GYRO_SENSOR = "imu_gyro"
ACCEL_SENSOR = "imu_accelerometer"


def foot_contact_sensor(foot_name: str) -> str:
    return f"{foot_name}_contact_force"


@dataclass(frozen=True)
class LegSpec:
    prefix: str
    x_sign: float
    y_sign: float


@dataclass(frozen=True)
class Go2ModelParams:
    """Everything in go2_mujoco.toml, typed. Lengths m, masses kg, inertias kg m^2."""

    profile_name: str
    cone: str
    impratio: float
    integrator: str
    joint_damping_nm_s_per_rad: float
    joint_armature_kg_m2: float
    joint_frictionloss_nm: float
    max_joint_velocity_rad_s: Mapping[str, float]  # per link kind: the training asset's solver clamp
    foot_friction: tuple[float, float, float]
    foot_condim: int
    body_friction: tuple[float, float, float]
    self_collision: bool
    base: Mapping[str, Any]
    inertials: Mapping[str, Mapping[str, Any]]  # per link kind, front-left leg frame
    leg: Mapping[str, Any]
    legs: tuple[LegSpec, ...]


def load_model_params(name_or_path: str | os.PathLike = "go2_mujoco") -> Go2ModelParams:
    """Load the MuJoCo model parameters (``config/robots/<name>.toml`` or a path)."""
    p = Path(name_or_path)
    if p.suffix != ".toml":
        p = config_dir() / "robots" / f"{name_or_path}.toml"
    if not p.is_file():
        raise ProfileError(f"MuJoCo model parameters {str(p)!r} not found")
    with open(p, "rb") as f:
        d = _toml.load(f)
    try:
        legs = tuple(LegSpec(k, float(v["x_sign"]), float(v["y_sign"])) for k, v in d["legs"].items())
        return Go2ModelParams(
            profile_name=str(d["model"]["profile"]),
            cone=str(d["options"]["cone"]),
            impratio=float(d["options"]["impratio"]),
            integrator=str(d["options"]["integrator"]),
            joint_damping_nm_s_per_rad=float(d["joint_dynamics"]["damping_nm_s_per_rad"]),
            joint_armature_kg_m2=float(d["joint_dynamics"]["armature_kg_m2"]),
            joint_frictionloss_nm=float(d["joint_dynamics"]["frictionloss_nm"]),
            max_joint_velocity_rad_s={str(k): float(v) for k, v in d["joint_dynamics"]["max_velocity_rad_s"].items()},
            foot_friction=tuple(float(v) for v in d["contact"]["foot_friction"]),  # type: ignore[arg-type]
            foot_condim=int(d["contact"]["foot_condim"]),
            body_friction=tuple(float(v) for v in d["contact"]["body_friction"]),  # type: ignore[arg-type]
            self_collision=bool(d["contact"]["self_collision"]),
            base=d["base"],
            inertials=d["inertials"],
            leg=d["leg"],
            legs=legs,
        )
    except KeyError as e:
        raise ProfileError(f"{p}: missing field {e.args[0]!r}") from None


# ---------------------------------------------------------------------------------- MJCF helpers


def _v(values: Any) -> str:
    return " ".join(f"{float(x):.9g}" for x in np.ravel(values))


def _look_at_xyaxes(eye: np.ndarray, target: np.ndarray) -> str:
    """MuJoCo camera xyaxes (x right, y up, looking along -z) for a camera at eye looking at target."""
    f = target - eye
    f = f / np.linalg.norm(f)
    right = np.cross(f, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    up = np.cross(right, f)
    return _v(np.concatenate([right, up]))


def mirrored_inertial(inertial: Mapping[str, Any], sign_xyz: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """CoM and full inertia (ixx iyy izz ixy ixz iyz) of a front-left link mirrored by diag(sign_xyz).

    A reflection S maps the tensor to S I S: each product of inertia changes sign once per flipped axis.
    """
    com = np.asarray(inertial["com_pos_m"], dtype=float) * sign_xyz
    ixx, iyy, izz, ixy, ixz, iyz = (float(v) for v in inertial["full_inertia_kg_m2"])
    sx, sy, sz = (float(v) for v in sign_xyz)
    return com, np.array([ixx, iyy, izz, sx * sy * ixy, sx * sz * ixz, sy * sz * iyz])


def _inertial_xml(inertial: Mapping[str, Any], sign_xyz: np.ndarray) -> str:
    com, full = mirrored_inertial(inertial, sign_xyz)
    mass = float(inertial["mass_kg"])
    return f'<inertial pos="{_v(com)}" mass="{mass:.9g}" fullinertia="{_v(full)}"/>'


def _leg_joints(profile: RobotProfile, leg: LegSpec, chain: list[str]) -> list[int]:
    """Robot-order joint indices of one leg, outward along the chain; matched by name prefix and actuator kind."""
    idx = []
    for kind in chain:
        hits = [
            i
            for i, n in enumerate(profile.joint_names)
            if n.startswith(leg.prefix + "_") and profile.joint_actuator_kind[i] == kind
        ]
        if len(hits) != 1:
            raise ProfileError(
                f"MuJoCo model: leg {leg.prefix!r} needs exactly one profile joint named {leg.prefix}_* "
                f"with actuator kind {kind!r}, found {[profile.joint_names[i] for i in hits]}"
            )
        idx.append(hits[0])
    return idx


def _leg_foot(profile: RobotProfile, leg: LegSpec) -> str:
    hits = [n for n in profile.foot_names if n.startswith(leg.prefix + "_")]
    if len(hits) != 1:
        raise ProfileError(f"MuJoCo model: leg {leg.prefix!r} needs exactly one profile foot named {leg.prefix}_*, found {hits}")
    return hits[0]


def _terrain_xml(course: Course) -> str:
    g = f'group="{TERRAIN_GEOM_GROUP}" contype="1" conaffinity="0"'
    lines = [f'<geom name="floor" type="plane" size="0 0 0.05" pos="0 0 {course.floor_z_m:.9g}" material="floor" {g}/>']
    for b in course.boxes:
        quat = (math.cos(b.pitch_rad / 2.0), 0.0, math.sin(b.pitch_rad / 2.0), 0.0)
        mat = "walkway" if b.kind == "walkway" else "obstacle"
        lines.append(
            f'<geom name="{b.name}" type="box" pos="{_v(b.center_m)}" size="{_v(b.half_extents_m)}" '
            f'quat="{_v(quat)}" material="{mat}" {g}/>'
        )
    for i, (x, y) in enumerate(course.goals_xy_m):  # visual only: group 2, no collision
        lines.append(
            f'<site name="goal_{i}" type="cylinder" size="0.05 0.005" pos="{x:.9g} {y:.9g} 0.0" rgba="0.1 0.8 0.2 0.6" group="2"/>'
        )
    return "\n    ".join(lines)


def go2_mjcf(
    profile: RobotProfile,
    course: Course,
    params: Optional[Go2ModelParams] = None,
    *,
    foot_friction: Optional[float] = None,
    armature_kg_m2: Optional[float] = None,
    fixed_base: bool = False,
) -> str:
    """MJCF text of the Go2 on a course. Actuators are in the profile's robot joint order.

    The base spawns at the course's spawn point, profile.spawn_base_height_m above the ground,
    with every joint at 0; the backend puts the joints at the default pose before stepping.
    ``armature_kg_m2`` overrides go2_mujoco.toml's (the armature measurement, krabby.hal docs/mujoco_model.md);
    ``fixed_base`` welds the base to the world (joint step responses with the legs in the air).
    """
    prm = params or load_model_params()
    if prm.profile_name != profile.name:
        raise ProfileError(f"MuJoCo model parameters are for profile {prm.profile_name!r}, not {profile.name!r}")
    leg, base = prm.leg, prm.base
    chain = list(leg["chain"])
    axes = [np.asarray(a, dtype=float) for a in leg["joint_axes"]]
    if len(chain) != 3 or len(axes) != 3:
        raise ProfileError("MuJoCo model: leg.chain and leg.joint_axes must list hip, thigh and calf")
    used = [i for lg in prm.legs for i in _leg_joints(profile, lg, chain)]
    if sorted(used) != list(range(profile.num_joints)):
        missing = sorted(set(profile.joint_names) - {profile.joint_names[i] for i in used})
        raise ProfileError(f"MuJoCo model: profile joints not placed by any leg: {missing}")
    ff = list(prm.foot_friction)
    if foot_friction is not None:
        ff[0] = float(foot_friction)
    armature = prm.joint_armature_kg_m2 if armature_kg_m2 is None else float(armature_kg_m2)
    inertial = {kind: prm.inertials[kind] for kind in chain}

    def jnt(i: int, axis: np.ndarray) -> str:
        return (
            f'<joint name="{profile.joint_names[i]}" axis="{_v(axis)}" '
            f'range="{profile.pos_min_rad[i]:.9g} {profile.pos_max_rad[i]:.9g}"/>'
        )

    legs_xml = []
    for lg in prm.legs:
        ih, it, ic = _leg_joints(profile, lg, chain)
        foot = _leg_foot(profile, lg)
        m = np.array([lg.x_sign, lg.y_sign, 1.0])
        my = np.array([1.0, lg.y_sign, 1.0])
        p = lg.prefix
        legs_xml.append(
            f"""
      <body name="{p}_hip" pos="{_v(np.asarray(leg['hip_pos_base_m']) * m)}">
        {_inertial_xml(inertial[chain[0]], m)}
        {jnt(ih, axes[0])}
        <geom class="robot" type="cylinder" size="{leg['hip_cylinder_radius_m']} {leg['hip_cylinder_half_length_m']}"
              pos="{_v(np.asarray(leg['hip_cylinder_pos_m']) * my)}" zaxis="0 1 0"/>
        <body name="{p}_thigh" pos="{_v(np.asarray(leg['thigh_pos_hip_m']) * my)}">
          {_inertial_xml(inertial[chain[1]], my)}
          {jnt(it, axes[1])}
          <geom class="robot" type="box" size="{_v(leg['thigh_box_half_extents_m'])}" pos="{_v(leg['thigh_box_pos_m'])}"
                euler="0 1.5707963267948966 0"/>
          <body name="{p}_calf" pos="{_v(leg['calf_pos_thigh_m'])}">
            {_inertial_xml(inertial[chain[2]], my)}
            {jnt(ic, axes[2])}
            <geom class="robot" type="capsule" size="{leg['calf_capsule_radius_m']}"
                  fromto="{_v(leg['calf_capsule_from_m'])} {_v(leg['calf_capsule_to_m'])}"/>
            <geom name="{foot}" class="foot" type="sphere" size="{leg['foot_sphere_radius_m']}"
                  pos="{_v(leg['foot_pos_calf_m'])}"/>
          </body>
        </body>
      </body>"""
        )

    cam = profile.camera
    r_bc = cam.rotation_base_from_camera()  # columns: image right, image down, optical axis
    depth_xyaxes = _v(np.concatenate([r_bc[:, 0], -r_bc[:, 1]]))  # MuJoCo camera: x right, y up
    sensorsize_m = (cam.horizontal_aperture_mm * 1e-3, cam.vertical_aperture_mm * 1e-3)
    focal_m = cam.focal_length_mm * 1e-3
    chase_eye = np.array([-1.1, -1.6, 0.8])
    actuators = "\n    ".join(
        f'<motor name="{n}" joint="{n}" gear="1" ctrlrange="{-e:.9g} {e:.9g}"/>'
        for n, e in zip(profile.joint_names, profile.effort_limit_nm)
    )
    contact_sensors = "\n    ".join(
        f'<contact name="{foot_contact_sensor(f)}" geom1="{f}" data="force" reduce="netforce"/>' for f in profile.foot_names
    )
    sx, sy = course.spawn_xy_m
    spawn_z = course.spawn_ground_z_m + profile.spawn_base_height_m
    # terrain: contype 1 / conaffinity 0. Robot: conaffinity 1 (touches terrain); with self-collision
    # also contype 2 / conaffinity 3, so robot pairs match through bit 2 and terrain never hits terrain.
    robot_contype, robot_conaffinity = (2, 3) if prm.self_collision else (0, 1)
    base_joint = "" if fixed_base else f'<freejoint name="{BASE_JOINT}"/>'
    return f"""<mujoco model="{profile.name}_krabby">
  <compiler angle="radian" autolimits="true"/>
  <option timestep="{profile.physics_dt_s:.9g}" cone="{prm.cone}" impratio="{prm.impratio:.9g}" integrator="{prm.integrator}"/>
  <visual>
    <global offwidth="1920" offheight="1080"/>
    <headlight ambient="0.35 0.35 0.35" diffuse="0.5 0.5 0.5"/>
  </visual>
  <asset>
    <texture name="sky" type="skybox" builtin="gradient" rgb1="0.55 0.7 0.9" rgb2="0.1 0.15 0.25" width="256" height="256"/>
    <texture name="grid" type="2d" builtin="checker" rgb1="0.26 0.28 0.3" rgb2="0.34 0.36 0.38" width="256" height="256"
             mark="edge" markrgb="0.2 0.22 0.24"/>
    <material name="floor" texture="grid" texrepeat="2 2" texuniform="true"/>
    <material name="walkway" texture="grid" texrepeat="4 4" texuniform="true" rgba="0.8 0.85 0.9 1"/>
    <material name="obstacle" rgba="0.75 0.55 0.3 1"/>
    <material name="robot" rgba="0.85 0.85 0.88 1"/>
    <material name="dark" rgba="0.15 0.15 0.17 1"/>
  </asset>
  <default>
    <joint damping="{prm.joint_damping_nm_s_per_rad:.9g}" armature="{armature:.9g}"
           frictionloss="{prm.joint_frictionloss_nm:.9g}"/>
    <default class="robot">
      <geom group="{ROBOT_GEOM_GROUP}" contype="{robot_contype}" conaffinity="{robot_conaffinity}" mass="0"
            friction="{_v(prm.body_friction)}" material="robot"/>
      <default class="foot">
        <geom condim="{prm.foot_condim}" priority="1" friction="{_v(ff)}" material="dark"/>
      </default>
    </default>
  </default>
  <worldbody>
    <light name="sun" directional="true" pos="0 0 5" dir="-0.3 0.2 -1" castshadow="false"/>
    {_terrain_xml(course)}
    <body name="{BASE_BODY}" pos="{sx:.9g} {sy:.9g} {spawn_z:.9g}" quat="{_v([math.cos(course.spawn_yaw_rad / 2), 0, 0, math.sin(course.spawn_yaw_rad / 2)])}">
      {base_joint}
      <inertial pos="{_v(base['com_pos_m'])}" mass="{base['mass_kg']}" fullinertia="{_v(base['full_inertia_kg_m2'])}"/>
      <geom class="robot" type="box" size="{_v(base['box_half_extents_m'])}"/>
      <geom class="robot" type="cylinder" size="{base['head_cylinder_radius_m']} {base['head_cylinder_half_length_m']}"
            pos="{_v(base['head_cylinder_pos_m'])}"/>
      <geom class="robot" type="sphere" size="{base['head_sphere_radius_m']}" pos="{_v(base['head_sphere_pos_m'])}"/>
      <site name="{IMU_SITE}" pos="{_v(base['imu_site_pos_m'])}" size="0.01"/>
      <camera name="{DEPTH_CAMERA}" pos="{_v(cam.mount_pos_base_m)}" xyaxes="{depth_xyaxes}"
              sensorsize="{_v(sensorsize_m)}" focal="{focal_m:.9g} {focal_m:.9g}" resolution="{cam.width_px} {cam.height_px}"/>
      <camera name="{CHASE_CAMERA}" mode="trackcom" pos="{_v(chase_eye)}" xyaxes="{_look_at_xyaxes(chase_eye, np.zeros(3))}"/>
      {"".join(legs_xml)}
    </body>
  </worldbody>
  <actuator>
    {actuators}
  </actuator>
  <sensor>
    <gyro name="{GYRO_SENSOR}" site="{IMU_SITE}"/>
    <accelerometer name="{ACCEL_SENSOR}" site="{IMU_SITE}"/>
    {contact_sensors}
  </sensor>
</mujoco>
"""


def build_go2_model(profile: RobotProfile, course: Course, params: Optional[Go2ModelParams] = None, **kwargs: Any):
    """Compile go2_mjcf into an MjModel (imports mujoco lazily)."""
    import mujoco

    return mujoco.MjModel.from_xml_string(go2_mjcf(profile, course, params, **kwargs))


def clamp_joint_velocity(model, data, qadr: np.ndarray, dadr: np.ndarray, max_vel: np.ndarray) -> None:
    """After a physics step: clamp hinge-joint velocities to max_vel, as PhysX's maxJointVelocity does
    inside its solver, and redo that step's position update with the clamped velocity (semi-implicit
    Euler moved q by dt * v)."""
    v = data.qvel[dadr]
    if (np.abs(v) > max_vel).any():  # 4 times per control step: the method, not np.any's wrapper
        clamped = np.minimum(np.maximum(v, -max_vel), max_vel)  # = np.clip
        data.qpos[qadr] -= model.opt.timestep * (v - clamped)
        data.qvel[dadr] = clamped


def write_mjcf(path, mjcf: str, profile_name: str, max_vel_rad_s: Mapping[str, float], note: str = "") -> str:
    """Write a compiled model's MJCF with a header naming what the file cannot hold; returns the path."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    kinds = ", ".join(f"{k} {v:g}" for k, v in sorted(max_vel_rad_s.items()))
    header = (
        "<!-- Krabby MuJoCo Go2, exactly as compiled by MujocoBackend (krabby-hal-server-mujoco --export-model).\n"
        "     Not in this file, done by the backend every physics step: the training actuator (PD plus\n"
        f"     DC-motor clip, config/robots/{profile_name}.toml) written to the motors' ctrl, and the joint\n"
        f"     velocity clamp (rad/s: {kinds}). {note} -->\n"
    )
    p.write_text(header + mjcf)
    return str(p)
