"""One episode's deviations from the nominal simulated robot: the training randomisation, replayed.

Isaac Lab randomised these during training (spec ../shared/spec/parkour_policy.md §1.3, §8;
EventCfg of the upstream task); a sim-to-sim check that never perturbs them cannot tell a robust
policy from a lucky one. ``MujocoBackend`` applies a ``SimPerturbation`` given in its config:

- base mass offset (kg, added to the base body, as ``randomize_rigid_body_mass`` "add") and base
  CoM offset (m, base frame, as ``randomize_rigid_body_com``), at build time;
- foot sliding friction (absolute MuJoCo coefficient), at build time;
- motor strength: a factor on the PD torque before the DC-motor clip (kp and kd scaled);
- pushes: every ``push_interval_s`` of episode time, U(-v, v) added to the base's world x and y
  velocity (Isaac Lab ``push_by_setting_velocity``);
- action latency: whole control steps between a command's arrival and its application;
- depth latency (whole camera frames of extra staleness) and Gaussian depth noise (m).

Every field defaults to "off"; the random parts (pushes, depth noise) draw from ``seed``, so one
perturbation on one course replays exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class SimPerturbation:
    """Concrete values for one episode (sampling them from ranges is the evaluator's job)."""

    base_mass_offset_kg: float = 0.0
    base_com_offset_m: tuple[float, float, float] = (0.0, 0.0, 0.0)
    foot_friction: Optional[float] = None  # sliding friction of the feet; None = the model's
    motor_strength: float = 1.0  # PD torque factor before the DC-motor clip
    push_interval_s: float = 0.0  # 0 = no pushes
    push_vel_m_s: float = 0.0  # each push adds U(-v, v) m/s to the base's world x and y velocity
    action_latency_steps: int = 0  # control steps between a command's arrival and its application
    depth_latency_frames: int = 0  # extra camera frames of staleness
    depth_noise_m: float = 0.0  # std of Gaussian noise added to each finite depth pixel
    seed: int = 0  # pushes and depth noise

    def __post_init__(self) -> None:
        finite = [self.base_mass_offset_kg, *self.base_com_offset_m, self.motor_strength, self.push_interval_s,
                  self.push_vel_m_s, self.depth_noise_m] + ([] if self.foot_friction is None else [self.foot_friction])
        if not all(math.isfinite(float(v)) for v in finite):
            raise ValueError(f"SimPerturbation: non-finite value in {self}")
        if len(self.base_com_offset_m) != 3:
            raise ValueError("SimPerturbation.base_com_offset_m must have 3 entries (x, y, z in the base frame)")
        if self.motor_strength <= 0 or self.push_interval_s < 0 or self.push_vel_m_s < 0 or self.depth_noise_m < 0:
            raise ValueError(f"SimPerturbation: motor_strength must be > 0 and push/noise magnitudes >= 0, got {self}")
        if self.foot_friction is not None and self.foot_friction <= 0:
            raise ValueError(f"SimPerturbation.foot_friction must be > 0, got {self.foot_friction}")
        for name in ("action_latency_steps", "depth_latency_frames"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise ValueError(f"SimPerturbation.{name} must be a non-negative int, got {v!r}")

    @property
    def pushes(self) -> bool:
        return self.push_interval_s > 0 and self.push_vel_m_s > 0


def apply_to_model(mujoco, model, base_body_id: int, p: SimPerturbation) -> None:
    """Base mass and CoM offsets, in place (inertia scaled with the mass, as Isaac Lab's recompute_inertia)."""
    if p.base_mass_offset_kg == 0.0 and not any(p.base_com_offset_m):
        return
    mass = float(model.body_mass[base_body_id])
    new_mass = mass + p.base_mass_offset_kg
    if new_mass <= 0.0:
        raise ValueError(f"SimPerturbation: base mass {mass:.3f} kg + offset {p.base_mass_offset_kg:.3f} kg is not positive")
    model.body_mass[base_body_id] = new_mass
    model.body_inertia[base_body_id] *= new_mass / mass
    model.body_ipos[base_body_id] += p.base_com_offset_m
    data = mujoco.MjData(model)
    mujoco.mj_setConst(model, data)  # derived constants (subtree masses) follow the new mass
