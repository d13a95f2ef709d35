"""What the compiled MuJoCo Go2 weighs and how its mass is spread, next to the reference numbers.

    python -m krabby.hal.sim.model_report [--model-params go2_mujoco] [--json OUT]

Prints the total mass, the whole-robot centre of mass and inertia at the default pose (base frame,
base level) and each leg joint's reflected inertia (the joint-space inertia matrix's diagonal: the
links it moves, plus the armature), beside MuJoCo Menagerie's ``unitree_go2`` and Unitree's
go2_description URDF (its rotors and feet fused into their parents), the two published Go2 models.
Those reference numbers were computed in ../shared/research/audits/mujoco_model_fidelity.md Part B.
The tests in tests/test_go2_model.py hold the model to them.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass
from typing import Optional

import numpy as np

#: Reference numbers (audit Part B, Table 1): base frame, at the default pose, kg / m / kg m^2.
#: Joint inertia excludes the armature. "urdf" fuses rotors and feet into their parents.
REFERENCES = {
    "menagerie": {
        "total_mass_kg": 15.206,
        "com_base_m": (-0.0040, 0.0, -0.0203),
        "inertia_roll_pitch_yaw_kg_m2": (0.188, 0.508, 0.559),
        "joint_inertia_hip_thigh_calf_kg_m2": (0.0286, 0.0247, 0.00633),
    },
    "urdf": {
        "total_mass_kg": 16.087,
        "com_base_m": (-0.0030, 0.0, -0.0161),
        "inertia_roll_pitch_yaw_kg_m2": (0.180, 0.520, 0.582),
        "joint_inertia_hip_thigh_calf_kg_m2": (0.0253, 0.0214, 0.00497),
    },
}


@dataclass
class MassReport:
    total_mass_kg: float
    com_base_m: tuple[float, float, float]
    inertia_roll_pitch_yaw_kg_m2: tuple[float, float, float]  # at the CoM, base axes (diagonal)
    joint_inertia_hip_thigh_calf_kg_m2: tuple[float, float, float]  # front-left leg, armature excluded
    armature_hip_thigh_calf_kg_m2: tuple[float, float, float]
    joint_names: tuple[str, ...]
    joint_inertia_kg_m2: tuple[float, ...]  # every joint, robot order, armature excluded


def mass_report(model_params: str = "go2_mujoco", robot: str = "go2", armature_kg_m2: Optional[float] = None) -> MassReport:
    """Compile the backend's model (flat course), put it at the default pose with the base level at the origin, and measure."""
    import mujoco

    from ..robot_profile import load_robot_profile
    from .go2_model import BASE_BODY, BASE_JOINT, build_go2_model, load_model_params
    from .terrain import CourseConfig, make_course

    prof = load_robot_profile(robot)
    m = build_go2_model(prof, make_course(CourseConfig("flat", 0, None, 1)), load_model_params(model_params), armature_kg_m2=armature_kg_m2)
    d = mujoco.MjData(m)
    base_j = m.joint(BASE_JOINT)
    d.qpos[base_j.qposadr[0] : base_j.qposadr[0] + 7] = (0, 0, 0, 1, 0, 0, 0)  # base frame = world frame
    jnt = [m.joint(n) for n in prof.joint_names]
    for j, q in zip(jnt, prof.default_pos_rad):
        d.qpos[j.qposadr[0]] = q
    mujoco.mj_forward(m, d)
    base = m.body(BASE_BODY).id
    bodies = [b for b in range(m.nbody) if b == base or _is_descendant(m, b, base)]
    mass = np.array([m.body_mass[b] for b in bodies])
    pos = np.array([d.xipos[b] for b in bodies])
    com = mass @ pos / mass.sum()
    inertia = np.zeros((3, 3))
    for b, mb, p in zip(bodies, mass, pos):
        r = d.ximat[b].reshape(3, 3)
        r_rel = p - com
        inertia += r @ np.diag(m.body_inertia[b]) @ r.T + mb * (r_rel @ r_rel * np.eye(3) - np.outer(r_rel, r_rel))
    full = np.zeros((m.nv, m.nv))
    mujoco.mj_fullM(m, d, full)
    dof = [int(j.dofadr[0]) for j in jnt]
    arm = np.array([m.dof_armature[i] for i in dof])
    link = np.array([full[i, i] for i in dof]) - arm
    fl = [i for i, n in enumerate(prof.joint_names) if n.startswith("FL_")]
    return MassReport(
        total_mass_kg=float(mass.sum()),
        com_base_m=tuple(float(v) for v in com),  # type: ignore[arg-type]
        inertia_roll_pitch_yaw_kg_m2=tuple(float(inertia[i, i]) for i in range(3)),  # type: ignore[arg-type]
        joint_inertia_hip_thigh_calf_kg_m2=tuple(float(link[i]) for i in fl),  # type: ignore[arg-type]
        armature_hip_thigh_calf_kg_m2=tuple(float(arm[i]) for i in fl),  # type: ignore[arg-type]
        joint_names=tuple(prof.joint_names),
        joint_inertia_kg_m2=tuple(float(v) for v in link),
    )


def _is_descendant(m, body: int, ancestor: int) -> bool:
    while body > 0:
        body = int(m.body_parentid[body])
        if body == ancestor:
            return True
    return False


def format_report(r: MassReport) -> str:
    ref_m, ref_u = REFERENCES["menagerie"], REFERENCES["urdf"]

    def row(name: str, ours, men, urdf, fmt: str) -> str:
        cells = [" / ".join(format(v, fmt) for v in np.atleast_1d(x)) for x in (ours, men, urdf)]
        return f"| {name} | {cells[0]} | {cells[1]} | {cells[2]} |"

    lines = [
        "| quantity (default pose, base frame) | this model | Menagerie unitree_go2 | go2_description URDF (fused) |",
        "| --- | --- | --- | --- |",
        row("total mass (kg)", r.total_mass_kg, ref_m["total_mass_kg"], ref_u["total_mass_kg"], ".3f"),
        row("whole-robot CoM x / y / z (m)", r.com_base_m, ref_m["com_base_m"], ref_u["com_base_m"], "+.4f"),
        row("inertia at CoM roll / pitch / yaw (kg m^2)", r.inertia_roll_pitch_yaw_kg_m2,
            ref_m["inertia_roll_pitch_yaw_kg_m2"], ref_u["inertia_roll_pitch_yaw_kg_m2"], ".3f"),
        row("joint inertia hip / thigh / calf, links only (kg m^2)", r.joint_inertia_hip_thigh_calf_kg_m2,
            ref_m["joint_inertia_hip_thigh_calf_kg_m2"], ref_u["joint_inertia_hip_thigh_calf_kg_m2"], ".4f"),
        row("armature hip / thigh / calf (kg m^2)", r.armature_hip_thigh_calf_kg_m2, (0.01, 0.01, 0.01), (0.0, 0.0, 0.0), ".4f"),
        row("reflected inertia hip / thigh / calf, links + armature (kg m^2)",
            np.add(r.joint_inertia_hip_thigh_calf_kg_m2, r.armature_hip_thigh_calf_kg_m2),
            np.add(ref_m["joint_inertia_hip_thigh_calf_kg_m2"], 0.01), ref_u["joint_inertia_hip_thigh_calf_kg_m2"], ".4f"),
    ]
    per_joint = ", ".join(f"{n} {v:.4f}" for n, v in zip(r.joint_names, r.joint_inertia_kg_m2))
    return "\n".join(lines) + f"\n\nper joint, links only (kg m^2): {per_joint}"


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m krabby.hal.sim.model_report", description=__doc__.split("\n")[0])
    ap.add_argument("--model-params", default="go2_mujoco", help="config/robots/<name>.toml or a path")
    ap.add_argument("--robot", default="go2", help="robot profile name or path")
    ap.add_argument("--armature", type=float, default=None, help="override the armature (kg m^2)")
    ap.add_argument("--json", metavar="OUT", help="also write the numbers as JSON")
    args = ap.parse_args(argv)
    r = mass_report(args.model_params, args.robot, args.armature)
    print(format_report(r))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"model": asdict(r), "references": REFERENCES}, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
