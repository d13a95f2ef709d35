"""A scripted trot for the MuJoCo Go2: the expert that the demo policy is distilled from.

It follows ../shared/research/mujoco_feasibility.md §2, measured there under the soft training PD
(kp 40, kd 1):

- trot pairs FL+RR (phase 0) and FR+RL (phase 0.5); a leg is in stance while its phase is in [0, duty);
- foot targets in each thigh-joint frame (aligned with the body): stance slides from x0 + L/2 to
  x0 - L/2 at z = -h, swing comes back along a smoothstep with z = -h + H sin(pi s);
- analytic two-link IK in the sagittal plane, hip abduction held at the default pose;
- a gravity target offset on stance legs, dq = -J_foot^T (0, 0, W) / kp with W = m g / stance legs
  (without it the legs sag and the feet scuff);
- step length L = g v_cmd T duty, g = stride_gain + I, where I integrates the speed error after 1 s;
- heading and lateral correction by a differential stride, steering on the navigation command's
  delta_yaw (the same number the policy observes);
- terrain awareness: stance feet are shifted by the terrain under them, swing feet blend from the
  lift-off height to the landing height, with a higher swing on courses with obstacles.

The expert reads privileged simulator state (joint Jacobians, body velocity, the course's
terrain heights). It runs at the policy rate (50 Hz) and returns joint position targets in robot
order, which the trainer turns into policy actions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import mujoco
import numpy as np

LEGS = ("FL", "FR", "RL", "RR")
PHASE_OFFSET = {"FL": 0.0, "RR": 0.0, "FR": 0.5, "RL": 0.5}
SIDE = {"FL": 1.0, "RL": 1.0, "FR": -1.0, "RR": -1.0}  # +1 left legs, -1 right legs


@dataclass
class TrotParams:
    period_s: float = 0.45
    duty: float = 0.6
    swing_height_m: float = 0.07  # flat ground
    swing_height_obstacles_m: float = 0.09  # courses with obstacles
    stance_height_m: float = 0.29  # thigh joint to foot centre
    x0_front_m: float = 0.0
    x0_rear_m: float = -0.03
    stride_gain: float = 1.5
    speed_ki: float = 1.0  # integral gain on the speed error, per second
    integral_min: float = -1.0
    integral_max: float = 2.0
    integral_start_s: float = 1.0
    vel_filter_tau_s: float = 0.5
    heading_gain: float = 1.0  # per rad of delta_yaw
    ramp_s: float = 1.0  # command ramp from 0 (counted from the gait start)
    stand_s: float = 0.3  # stand on all four legs after the spawn drop before the trot starts
    swing_ramp_s: float = 0.5  # swing height ramps in over this time after the gait start
    max_stride_m: float = 0.30
    lateral_gain_s: float = 0.3  # Raibert-style lateral foot placement: dy = gain * vy_body (m per m/s)
    lateral_tau_s: float = 0.1  # low-pass of vy_body for the placement
    max_hip_offset_rad: float = 0.3
    resync_window_steps: float = 5.0  # phase re-synchronisation search, +- control steps (0 = pure clock)
    thigh_len_m: float = 0.213
    calf_len_m: float = 0.213


def smoothstep(s: np.ndarray | float) -> np.ndarray | float:
    return s * s * (3.0 - 2.0 * s)


class ScriptedTrot:
    """Expert trot controller for one MujocoBackend (connected). Call ``reset`` with each episode."""

    def __init__(self, backend, params: TrotParams | None = None):
        self.b = backend
        self.p = params or TrotParams()
        m = backend.model
        prof = backend.profile
        self.m = m
        self.dt = prof.control_dt_s
        self.kp = np.asarray(prof.kp_nm_per_rad, dtype=np.float64)
        self.default_robot = np.asarray(prof.default_pos_rad, dtype=np.float64)
        self.total_mass = float(np.sum(m.body_mass))
        self.g = float(-m.opt.gravity[2])
        names = list(prof.joint_names)
        self.leg_joints = {}  # leg -> robot-order indices (hip, thigh, calf)
        self.leg_dofs = {}
        self.thigh_pos_base = {}
        self.calf_body = {}
        self.foot_geom = {}
        for leg in LEGS:
            idx = [names.index(f"{leg}_{k}_joint") for k in ("hip", "thigh", "calf")]
            self.leg_joints[leg] = np.array(idx)
            jids = [mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_JOINT, f"{leg}_{k}_joint") for k in ("hip", "thigh", "calf")]
            self.leg_dofs[leg] = np.array([m.jnt_dofadr[j] for j in jids])
            hip_b = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, f"{leg}_hip")
            thigh_b = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, f"{leg}_thigh")
            self.thigh_pos_base[leg] = m.body_pos[hip_b] + m.body_pos[thigh_b]
            self.calf_body[leg] = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, f"{leg}_calf")
            self.foot_geom[leg] = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_GEOM, f"{leg}_foot")
        self.hip_default = {leg: self.default_robot[self.leg_joints[leg][0]] for leg in LEGS}
        self.foot_radius = float(m.geom_size[self.foot_geom["FL"], 0])
        self._jacp = np.zeros((3, m.nv))
        self.reset()

    # ------------------------------------------------------------------------------ state
    def reset(self, phase: float = 0.0) -> None:
        self.t = 0.0
        self.phase = phase
        self.prev_phase = phase
        self.integral = 0.0
        self.vx_f = 0.0
        self.was_stance = {leg: True for leg in LEGS}
        self.lift_z = {leg: 0.0 for leg in LEGS}
        self.land_z = {leg: 0.0 for leg in LEGS}
        self.obstacles = not self.b.course.is_flat
        self.vy_f = 0.0
        self.hip_off = {leg: 0.0 for leg in LEGS}  # current hip abduction offset of each leg
        self.hip_lift = {leg: 0.0 for leg in LEGS}
        self.hip_land = {leg: 0.0 for leg in LEGS}

    def _terrain(self, xy: np.ndarray) -> np.ndarray:
        return self.b.course.surface_height_m(xy)

    # ------------------------------------------------------------------------------ IK
    def _ik(self, x: float, z: float) -> tuple[float, float]:
        l1, l2 = self.p.thigh_len_m, self.p.calf_len_m
        d2 = x * x + z * z
        d = math.sqrt(d2)
        d = min(max(d, 0.08), l1 + l2 - 1e-3)
        c = (d * d - l1 * l1 - l2 * l2) / (2 * l1 * l2)
        knee = -math.acos(max(-1.0, min(1.0, c)))
        phi = math.atan2(-x, -z)
        phi0 = math.atan2(l2 * math.sin(knee), l1 + l2 * math.cos(knee))
        return phi - phi0, knee

    # ------------------------------------------------------------------------------ step
    def _leg_xz(self, leg: str, ph: float, stance: bool, standing: bool, length: float, steer: float, H: float,
                terrain: float, ref_z: float) -> tuple[float, float]:
        """Foot target (x, z) in the thigh-joint frame for one leg at leg phase ph."""
        p = self.p
        x0 = p.x0_front_m if leg[0] == "F" else p.x0_rear_m
        L = length * (1.0 + SIDE[leg] * steer)
        if standing:
            return x0, -p.stance_height_m + (terrain - ref_z)
        if stance:
            st = ph / p.duty
            return x0 + L / 2.0 - L * st, -p.stance_height_m + (terrain - ref_z)
        sw = (ph - p.duty) / (1.0 - p.duty)
        x = x0 - L / 2.0 + L * smoothstep(sw)
        zt = self.lift_z[leg] + (self.land_z[leg] - self.lift_z[leg]) * smoothstep(min(1.0, sw * 1.6))
        return x, -p.stance_height_m + (zt - ref_z) + H * math.sin(math.pi * sw)

    def _sagittal(self, phase: float, ctx: dict) -> np.ndarray:
        """(thigh, calf) targets of the four legs at a gait phase, without touching any state; (4, 2)."""
        p = self.p
        out = np.zeros((4, 2))
        phases = [(phase + PHASE_OFFSET[leg]) % 1.0 for leg in LEGS]
        stance = [ph < p.duty for ph in phases]
        W = self.total_mass * self.g / max(1, sum(stance))
        for k, leg in enumerate(LEGS):
            x, z = self._leg_xz(leg, phases[k], stance[k], False, ctx["length"], ctx["steer"], ctx["H"],
                                ctx["terrain"][leg], ctx["ref_z"])
            out[k] = self._ik(x, z)
            if stance[k]:
                out[k] += -ctx["jtz"][leg][1:] * W / self.kp[self.leg_joints[leg][1:]]
        return out

    def _resync(self, last_targets_robot: np.ndarray, ctx: dict) -> None:
        """Put the gait clock on the phase whose targets best match the targets applied last step.

        When the student drives, its gait need not keep the expert's clock; labelling its states
        with a clock it cannot observe would teach it contradictions. Matching the last applied
        targets (which the policy observes as its last action) keeps the label a function of
        what the student sees.
        """
        p = self.p
        step = self.dt / p.period_s
        offsets = np.arange(-p.resync_window_steps, p.resync_window_steps + 1e-9, 0.5) * step
        last = np.array([[last_targets_robot[self.leg_joints[leg][1]], last_targets_robot[self.leg_joints[leg][2]]] for leg in LEGS])
        costs = []
        for off in offsets:
            q = self._sagittal((self.prev_phase + off) % 1.0, ctx)
            costs.append(float(np.sum((q - last) ** 2)) + 1e-4 * abs(off))  # ties: stay on the clock
        best = float(offsets[int(np.argmin(costs))])
        self.phase = (self.prev_phase + best + step) % 1.0

    def targets(self, v_cmd: float, delta_yaw: float, last_targets_robot: np.ndarray | None = None) -> np.ndarray:
        """Joint position targets (robot order, rad) for the next control step; advances the clock.

        last_targets_robot: the targets applied during the previous control step (whoever chose
        them); given, the gait phase is re-synchronised to them first (``_resync``).
        """
        p, b, d = self.p, self.b, self.b.data
        rot = b.rot_w_from_base
        yaw = math.atan2(rot[1, 0], rot[0, 0])
        vel_w = d.qvel[b._base_v : b._base_v + 3]
        vx_heading = math.cos(yaw) * vel_w[0] + math.sin(yaw) * vel_w[1]
        a = self.dt / (p.vel_filter_tau_s + self.dt)
        self.vx_f += a * (vx_heading - self.vx_f)
        vy_body = float((rot.T @ vel_w)[1])
        self.vy_f += self.dt / (p.lateral_tau_s + self.dt) * (vy_body - self.vy_f)
        t_gait = self.t - p.stand_s
        v = v_cmd * min(1.0, max(0.0, t_gait) / p.ramp_s) if p.ramp_s > 0 else v_cmd
        if t_gait >= p.integral_start_s:
            self.integral = float(np.clip(self.integral + p.speed_ki * (v_cmd - self.vx_f) * self.dt, p.integral_min, p.integral_max))
        gain = p.stride_gain + self.integral
        length = float(np.clip(gain * v * p.period_s * p.duty, -p.max_stride_m, p.max_stride_m))
        steer = float(np.clip(-p.heading_gain * delta_yaw, -0.5, 0.5))
        H = p.swing_height_obstacles_m if self.obstacles else p.swing_height_m
        H *= min(1.0, max(0.0, t_gait) / p.swing_ramp_s) if p.swing_ramp_s > 0 else 1.0
        standing = t_gait < 0.0

        base = b.base_pos_w_m
        c, s = math.cos(yaw), math.sin(yaw)
        foot_xy = {leg: d.geom_xpos[self.foot_geom[leg], :2].copy() for leg in LEGS}
        if self.obstacles:
            under = self._terrain(np.array([foot_xy[leg] for leg in LEGS]))
            terrain_now = dict(zip(LEGS, under))
        else:
            terrain_now = {leg: 0.0 for leg in LEGS}
        # J^T e_z of each foot (3,), for the gravity offsets
        jtz = {}
        for leg in LEGS:
            mujoco.mj_jac(self.m, d, self._jacp, None, d.geom_xpos[self.foot_geom[leg]], self.calf_body[leg])
            jtz[leg] = self._jacp[2, self.leg_dofs[leg]].copy()

        if last_targets_robot is not None and not standing and t_gait > self.dt and p.resync_window_steps > 0:
            phases0 = [(self.prev_phase + PHASE_OFFSET[leg]) % 1.0 for leg in LEGS]
            st0 = [terrain_now[leg] for leg, ph in zip(LEGS, phases0) if ph < p.duty]
            ctx = dict(length=length, steer=steer, H=H, terrain=terrain_now, jtz=jtz,
                       ref_z=float(np.mean(st0)) if st0 else float(np.mean(list(terrain_now.values()))))
            self._resync(np.asarray(last_targets_robot, dtype=np.float64), ctx)

        phases = {leg: (self.phase + PHASE_OFFSET[leg]) % 1.0 for leg in LEGS}
        stance = {leg: standing or phases[leg] < p.duty for leg in LEGS}
        # terrain memory: record lift-off and predicted landing heights when a leg starts swinging
        for leg in LEGS:
            if not stance[leg] and self.was_stance[leg]:
                self.lift_z[leg] = terrain_now[leg] if self.obstacles else 0.0
                if self.obstacles:
                    thigh_w = base[:2] + np.array([c * self.thigh_pos_base[leg][0] - s * self.thigh_pos_base[leg][1],
                                                   s * self.thigh_pos_base[leg][0] + c * self.thigh_pos_base[leg][1]])
                    x0 = p.x0_front_m if leg[0] == "F" else p.x0_rear_m
                    ahead = x0 + length / 2.0 + self.vx_f * (1 - p.duty) * p.period_s
                    land = thigh_w + ahead * np.array([c, s])
                    # the highest terrain around the landing point (feet land with some spread)
                    probe = land + np.array([[0, 0], [0.04 * c, 0.04 * s], [-0.04 * c, -0.04 * s]])
                    self.land_z[leg] = float(np.max(self._terrain(probe)))
                else:
                    self.land_z[leg] = 0.0
                self.hip_lift[leg] = self.hip_off[leg]
            if stance[leg] and not self.was_stance[leg]:
                self.hip_land[leg] = self.hip_off[leg]
            self.was_stance[leg] = stance[leg]
        stance_terrain = [terrain_now[leg] for leg in LEGS if stance[leg]]
        ref_z = float(np.mean(stance_terrain)) if stance_terrain else float(np.mean(list(terrain_now.values())))

        W = self.total_mass * self.g / max(1, sum(stance.values()))
        q = np.array(self.default_robot)
        for leg in LEGS:
            ph = phases[leg]
            x, z = self._leg_xz(leg, ph, stance[leg], standing, length, steer, H, terrain_now[leg], ref_z)
            if p.lateral_gain_s > 0.0 and not standing:
                if stance[leg]:
                    self.hip_off[leg] = self.hip_land[leg] * (1.0 - ph / p.duty)
                else:
                    sw = (ph - p.duty) / (1.0 - p.duty)
                    want = float(np.clip(p.lateral_gain_s * self.vy_f / p.stance_height_m, -p.max_hip_offset_rad, p.max_hip_offset_rad))
                    self.hip_off[leg] = self.hip_lift[leg] + (want - self.hip_lift[leg]) * smoothstep(sw)
            th, kn = self._ik(x, z)
            ji = self.leg_joints[leg]
            q[ji[0]] = self.hip_default[leg] + self.hip_off[leg]
            q[ji[1]] = th
            q[ji[2]] = kn
            if stance[leg]:
                q[ji] += -jtz[leg] * W / self.kp[ji]
        self.t += self.dt
        self.prev_phase = self.phase
        if not standing:
            self.phase = (self.phase + self.dt / p.period_s) % 1.0
        return q
