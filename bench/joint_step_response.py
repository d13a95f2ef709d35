"""How the Go2's joints answer a position step under the training actuator, per armature value.

The training USD's joint armature cannot be read here, so config/robots/go2_mujoco.toml's value is
chosen by measurement (exts/krabby.hal/docs/mujoco_model.md, "Armature"). This prints, for each candidate armature, the
step response of one front-left joint with the base welded in the air: the training PD (Kp 40,
Kd 1, DC-motor clip) evaluated explicitly at every 5 ms physics step, as Isaac Lab's explicit
actuator does, the rest of the legs holding the default pose, then a step of the policy action by
+2 (0.5 rad). Columns: fraction of the step reached after 20 / 40 / 60 ms, peak overshoot, time to
stay within 5 %, and the explicit-damping number Kd dt / I (I = links + armature; near or above 1
the discrete PD rings).

    python bench/joint_step_response.py [--armature 0 0.005 0.01]
"""

from __future__ import annotations

import argparse

import numpy as np

from krabby.hal.robot_profile import load_robot_profile
from krabby.hal.sim.go2_model import build_go2_model, clamp_joint_velocity, load_model_params
from krabby.hal.sim.model_report import mass_report
from krabby.hal.sim.terrain import CourseConfig, make_course
from krabby.hal.types import ActuatorCommand, ActuatorMode


def step_response(armature: float, joint: str, step_rad: float = 0.5, settle_s: float = 0.5, record_s: float = 0.3):
    """(times after the step, joint position as a fraction of the step) for one joint, base welded."""
    import mujoco

    prof = load_robot_profile("go2")
    prm = load_model_params()
    m = build_go2_model(prof, make_course(CourseConfig("flat", 0, None, 1)), prm, armature_kg_m2=armature, fixed_base=True)
    d = mujoco.MjData(m)
    qadr = np.array([m.joint(n).qposadr[0] for n in prof.joint_names])
    dadr = np.array([m.joint(n).dofadr[0] for n in prof.joint_names])
    act = np.array([m.actuator(n).id for n in prof.joint_names])
    vmax = np.array([prm.max_joint_velocity_rad_s[k] for k in prof.joint_actuator_kind])
    d.qpos[qadr] = prof.default_pos_rad
    mujoco.mj_forward(m, d)
    target = np.array(prof.default_pos_rad, dtype=float)
    cmd = ActuatorCommand(ActuatorMode.POSITION, target, prof.kp_nm_per_rad.copy(), prof.kd_nm_s_per_rad.copy())
    j = prof.joint_names.index(joint)

    def physics_step():
        mujoco.mj_step1(m, d)
        d.ctrl[act] = cmd.torque_nm(prof, d.qpos[qadr], d.qvel[dadr])
        mujoco.mj_step2(m, d)
        clamp_joint_velocity(m, d, qadr, dadr, vmax)  # the backend's clamp (training USD maxJointVelocity)

    for _ in range(int(round(settle_s / m.opt.timestep))):
        physics_step()
    q0 = float(d.qpos[qadr[j]])
    target[j] += step_rad
    out_t, out_x = [], []
    for k in range(int(round(record_s / m.opt.timestep))):
        physics_step()
        out_t.append((k + 1) * m.opt.timestep)
        out_x.append((float(d.qpos[qadr[j]]) - q0) / step_rad)
    return np.array(out_t), np.array(out_x)


def summarize(t: np.ndarray, x: np.ndarray) -> dict:
    at = {ms: float(x[np.argmin(np.abs(t - ms / 1e3))]) for ms in (20, 40, 60)}
    outside = np.flatnonzero(np.abs(x - 1.0) > 0.05)
    settle = float(t[outside[-1]]) if outside.size else 0.0
    return {"at_ms": at, "overshoot": max(0.0, float(x.max()) - 1.0), "settle_5pct_s": settle}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--armature", type=float, nargs="+", default=[0.0, 0.005, 0.01])
    ap.add_argument("--joints", nargs="+", default=["FL_hip_joint", "FL_thigh_joint", "FL_calf_joint"])
    a = ap.parse_args()
    prof = load_robot_profile("go2")
    links = mass_report(armature_kg_m2=0.0)
    inertia = dict(zip(links.joint_names, links.joint_inertia_kg_m2))
    print("| armature (kg m^2) | joint | @20 / 40 / 60 ms | overshoot | within 5 % after | Kd dt / I |")
    print("| --- | --- | --- | --- | --- | --- |")
    for arm in a.armature:
        for joint in a.joints:
            s = summarize(*step_response(arm, joint))
            kd = prof.kd_nm_s_per_rad[prof.joint_names.index(joint)]
            ratio = kd * prof.physics_dt_s / (inertia[joint] + arm)
            at = " / ".join(f"{v:.2f}" for v in s["at_ms"].values())
            print(f"| {arm:g} | {joint} | {at} | {100 * s['overshoot']:.0f} % | {1e3 * s['settle_5pct_s']:.0f} ms | {ratio:.2f} |")


if __name__ == "__main__":
    main()
