"""MuJoCo backend: the embedded default simulator behind the HAL (sim-to-sim check of a trained policy).

The robot is the primitive Go2 of ``krabby.hal.sim.go2_model`` on a seeded parkour course from
``krabby.hal.sim.terrain``. The training actuator model runs here, not in MuJoCo: every physics
step (200 Hz) the held ActuatorCommand is turned into torques with ``ActuatorCommand.torque_nm``
(PD plus DC-motor clip, spec §3) from that step's q and q̇, and MuJoCo's motors apply them as is.
Sensors follow the training models: body-frame gyro (not GD's world-frame bug, spec §7), a
terrain-only height scan and depth camera, and training's goal headings.

Usage, one control step per loop::

    backend = MujocoBackend(MujocoBackendConfig(terrain="hurdles", seed=3))
    backend.connect()
    while True:
        frame = backend.read()        # publish
        backend.apply(command)        # hold the newest command
        backend.step_control()        # profile.decimation physics steps

Data consistency: each physics step is ``mj_step1`` (kinematics, contacts, position and velocity
sensors of the current state), torques, ``mj_step2`` (forces, acceleration-stage sensors,
integration). ``step_control`` ends with an ``mj_step1`` of the new state, which the next step needs
anyway, so ``read`` sees current kinematics at no extra cost. The accelerometer and the foot
contact forces are acceleration-stage values: they describe the last physics step (5 ms earlier),
which is also what a contact sensor in Isaac Lab reports.

Joint velocity clamp: after every physics step the joints' velocities are clamped to the training
asset's solver limit (go2_mujoco.toml max_velocity_rad_s: PhysX's maxJointVelocity, 15.7 rad/s on
the calves), and the step's position update is redone with the clamped velocity (semi-implicit
Euler: q += dt * v_new); MuJoCo has no such limit of its own.

Refresh rates: the height scan is cast at every control step that is read; the depth image (the
expensive part, ~1-2 ms) once per camera period, at the first read() of control steps 0-4, 5-9, ...
counted from connect, and never restarted by a respawn: the observation builder's refresh schedule
is a global counter that a training reset does not restart either, so a frame is captured on the
builder's own refresh step, as in training (spec §0), in every episode. The first read() after a
reset also captures a frame: the builder refills its depth buffer from it. Navigation follows training's
waypoint logic, updated once per control step after physics (spec §0 step 3).
"""

from __future__ import annotations

import dataclasses
import math
from collections import deque
from dataclasses import dataclass
from typing import Optional

import numpy as np

from ..backend import HalBackend
from ..clock import now_ns
from ..robot_profile import RobotProfile, load_robot_profile
from ..rotations import euler_xyz_from_quat_wxyz
from ..sim.go2_model import clamp_joint_velocity, write_mjcf
from ..sim.perturbation import SimPerturbation, apply_to_model
from ..types import ActuatorCommand, ActuatorMode, DepthFrame, HeightScan, NavigationCommand, RobotState, SensorFrame, all_finite, vector_norm


class RenderingUnavailableError(RuntimeError):
    """Offscreen rendering needs an OpenGL context that this process cannot create."""


@dataclass
class MujocoBackendConfig:
    """What to simulate. Robot facts come from the profile; this holds only simulation choices."""

    robot: str = "go2"  # robot profile name or path (config/robots/<robot>.toml)
    model_params: str = "go2_mujoco"  # MuJoCo model parameters (config/robots/<model_params>.toml)
    terrain: str = "flat"  # course preset: flat, hurdles, steps, gaps, stones, slopes, parkour
    seed: int = 0  # course seed: same seed, same course
    difficulty: Optional[float] = None  # 0..1, None = the preset's default
    num_goals: int = 8
    forward_speed_m_s: float = 0.5  # the navigation command's forward speed (obs[10])
    foot_friction: Optional[float] = None  # sliding friction of the feet; None = go2_mujoco.toml
    armature_kg_m2: Optional[float] = None  # joint armature; None = go2_mujoco.toml (sensitivity studies)
    enable_height_scan: bool = True
    enable_depth: bool = True
    depth_rate_hz: Optional[float] = None  # None = profile.camera.update_rate_hz
    depth_range_m: Optional[float] = None  # hits beyond this, and misses, read +inf; None = camera.max_distance_m
    goal_reach_radius_m: float = 0.2  # spec §1.1
    goal_reach_delay_s: float = 0.1  # spec §1.1: > 0.1 s / 0.02 s = 5 steps within the radius
    fall_roll_pitch_rad: float = 1.5  # training termination (spec §7)
    fall_base_z_m: float = -0.25  # base below this world height = fallen (into a pit)
    hold_default_pose: bool = True  # after connect/reset hold the default pose under the training PD
    settle_s: float = 0.0  # physics time run at the default pose during connect/reset (0 = as training's spawn)
    perturbation: Optional[SimPerturbation] = None  # training randomisation to replay (sim/perturbation.py); None = off


class MujocoBackend(HalBackend):
    """A simulated Go2 on a parkour course, stepped by the caller one control step at a time."""

    provides_depth = True
    provides_height_scan = True
    provides_navigation = True

    def __init__(self, config: Optional[MujocoBackendConfig] = None, *, profile: Optional[RobotProfile] = None, course=None) -> None:
        self.config = config or MujocoBackendConfig()
        self.profile = profile or load_robot_profile(self.config.robot)
        self.provides_depth = self.config.enable_depth
        self.provides_height_scan = self.config.enable_height_scan
        self._course = course  # a prebuilt terrain.Course overrides terrain/seed/difficulty
        self._perturb = self.config.perturbation or SimPerturbation()
        self._pending: deque = deque()  # commands waiting out the action latency
        self.pushes_applied = 0
        self.model = None
        self.data = None
        self._renderers: dict = {}
        self.mjcf: Optional[str] = None  # the exact MJCF text the model was compiled from
        self._global_steps = 0  # control steps since connect (the depth camera's phase)

    # ------------------------------------------------------------------------------ lifecycle

    @property
    def is_connected(self) -> bool:
        return self.model is not None

    def connect(self) -> None:
        if self.is_connected:
            return
        try:
            self._build()
        except BaseException:
            self.disconnect()
            raise

    def _build(self) -> None:
        import mujoco

        from ..sim.go2_model import (
            ACCEL_SENSOR,
            BASE_BODY,
            BASE_JOINT,
            GYRO_SENSOR,
            foot_contact_sensor,
            go2_mjcf,
            load_model_params,
        )
        from ..sim.sensors import DepthCamera, GoalTracker, HeightScanner
        from ..sim.terrain import CourseConfig, make_course

        cfg, prof = self.config, self.profile
        if self._course is None:
            self._course = make_course(CourseConfig(cfg.terrain, cfg.seed, cfg.difficulty, cfg.num_goals))
        params = load_model_params(cfg.model_params)
        friction = self._perturb.foot_friction if self._perturb.foot_friction is not None else cfg.foot_friction
        self.mjcf = go2_mjcf(prof, self._course, params, foot_friction=friction, armature_kg_m2=cfg.armature_kg_m2)
        self.model = mujoco.MjModel.from_xml_string(self.mjcf)
        if abs(self.model.opt.timestep - prof.physics_dt_s) > 1e-12:
            raise RuntimeError(f"model timestep {self.model.opt.timestep} != profile physics dt {prof.physics_dt_s}")
        self.data = mujoco.MjData(self.model)
        m = self.model

        def oid(kind, name: str) -> int:
            i = mujoco.mj_name2id(m, kind, name)
            if i < 0:
                raise RuntimeError(f"MuJoCo model has no {kind.name[6:].lower()} named {name!r}")
            return i

        def jid(name: str) -> int:
            return oid(mujoco.mjtObj.mjOBJ_JOINT, name)

        # robot-order index maps into qpos / qvel / ctrl, by name (never by position in the XML)
        self._qadr = np.array([m.jnt_qposadr[jid(n)] for n in prof.joint_names])
        self._dadr = np.array([m.jnt_dofadr[jid(n)] for n in prof.joint_names])
        self._act = np.array([oid(mujoco.mjtObj.mjOBJ_ACTUATOR, n) for n in prof.joint_names])
        self._max_vel = np.array([params.max_joint_velocity_rad_s[k] for k in prof.joint_actuator_kind])
        base_j = jid(BASE_JOINT)
        if m.jnt_bodyid[base_j] != oid(mujoco.mjtObj.mjOBJ_BODY, BASE_BODY):
            raise RuntimeError(f"joint {BASE_JOINT!r} is not the free joint of body {BASE_BODY!r}")
        self._base_q = int(m.jnt_qposadr[base_j])
        self._base_v = int(m.jnt_dofadr[base_j])
        apply_to_model(mujoco, m, int(m.jnt_bodyid[base_j]), self._perturb)

        def sadr(name: str) -> slice:
            i = oid(mujoco.mjtObj.mjOBJ_SENSOR, name)
            return slice(int(m.sensor_adr[i]), int(m.sensor_adr[i] + m.sensor_dim[i]))

        self._gyro = sadr(GYRO_SENSOR)
        self._accel = sadr(ACCEL_SENSOR)
        self._foot_force = [sadr(foot_contact_sensor(f)) for f in prof.foot_names]
        self.total_mass_kg = float(np.sum(m.body_mass))

        self._scanner = HeightScanner(m, prof.height_scan) if cfg.enable_height_scan else None
        depth_range = cfg.depth_range_m if cfg.depth_range_m is not None else prof.camera.max_distance_m
        self._camera = DepthCamera(m, prof.camera, depth_range) if cfg.enable_depth else None
        rate = cfg.depth_rate_hz if cfg.depth_rate_hz is not None else prof.camera.update_rate_hz
        self._depth_every = max(1, int(round(prof.control_rate_hz / rate)))
        scan_rate = prof.height_scan.update_rate_hz or prof.control_rate_hz
        self._scan_every = max(1, int(round(prof.control_rate_hz / scan_rate)))
        self._goals = GoalTracker(
            self._course.goals_xy_m, cfg.goal_reach_radius_m, int(round(cfg.goal_reach_delay_s / prof.control_dt_s))
        )
        self._terrain_is_flat = self._course.is_flat
        self._mujoco = mujoco
        self._global_steps = 0
        self.reset()
        self.episode = 0  # the first spawn; every later reset() is a new episode

    def disconnect(self) -> None:
        for r in self._renderers.values():
            r.close()
        self._renderers = {}
        self.model = None
        self.data = None

    def reset(self) -> None:
        """Back to the spawn pose (default joint angles, at rest) and the first goal; course unchanged. A new episode."""
        self._require()
        self.episode += 1
        mj, m, d, prof, c = self._mujoco, self.model, self.data, self.profile, self._course
        mj.mj_resetData(m, d)
        # perturbation state: pending commands (action latency), captured frames (depth latency), random draws
        push_rng, noise_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(self._perturb.seed).spawn(2))
        self._push_rng, self._noise_rng = push_rng, noise_rng
        self._pending: deque = deque()
        self._depth_frames: deque = deque(maxlen=self._perturb.depth_latency_frames + 1)
        self._next_push_s = self._perturb.push_interval_s
        self.pushes_applied = 0
        d.qpos[self._base_q : self._base_q + 3] = (c.spawn_xy_m[0], c.spawn_xy_m[1], c.spawn_ground_z_m + prof.spawn_base_height_m)
        d.qpos[self._base_q + 3 : self._base_q + 7] = (math.cos(c.spawn_yaw_rad / 2), 0.0, 0.0, math.sin(c.spawn_yaw_rad / 2))
        d.qpos[self._qadr] = prof.default_pos_rad
        mj.mj_forward(m, d)
        self._applied_torque_nm = np.zeros(prof.num_joints)
        self._pos_stage_current = True
        self._control_steps = 0
        self._command = self._with_strength(self.default_pose_command())
        global_steps = self._global_steps  # settling is not a control step of the run
        for _ in range(int(round(self.config.settle_s / prof.control_dt_s))):
            self.step_control()
        self._global_steps = global_steps
        if not self.config.hold_default_pose:
            self._command = self.zero_torque_command()
        self._control_steps = 0
        self._depth: Optional[DepthFrame] = None
        self._depth_period = -1
        self._scan: Optional[HeightScan] = None
        self._scan_period = -1
        self._goals.reset(self.base_pos_w_m[:2])

    # ------------------------------------------------------------------------------ commands

    def default_pose_command(self) -> ActuatorCommand:
        """Hold the profile's default pose under the profile's PD gains."""
        p = self.profile
        return ActuatorCommand(ActuatorMode.POSITION, p.default_pos_rad.copy(), p.kp_nm_per_rad.copy(), p.kd_nm_s_per_rad.copy())

    def zero_torque_command(self) -> ActuatorCommand:
        n = self.profile.num_joints
        return ActuatorCommand(ActuatorMode.ZERO_TORQUE, np.zeros(n), np.zeros(n), np.zeros(n))

    def apply(self, command: ActuatorCommand) -> None:
        """Hold this command until the next apply; DAMP is turned into kp = 0 here."""
        n = self.profile.num_joints
        given = (command.target_pos_rad, command.kp_nm_per_rad, command.kd_nm_s_per_rad)
        arrays = [np.asarray(a, dtype=np.float64) for a in given]
        # one check of all three for the common case (every control step); per-array checks name the bad one
        if any(a.shape != (n,) for a in arrays) or not all_finite(np.concatenate(arrays)):
            for name, a in zip(("target_pos_rad", "kp_nm_per_rad", "kd_nm_s_per_rad"), arrays):
                if a.shape != (n,) or not np.all(np.isfinite(a)):
                    raise ValueError(f"MujocoBackend.apply: {name} must be {n} finite numbers in robot order, got shape {a.shape}")
        target, kp, kd = arrays
        if command.mode == ActuatorMode.DAMP:
            kp = np.zeros(n)
        p = self._perturb
        if any(a is not b for a, b in zip((target, kp, kd), given)):  # float64 arrays of the right shape pass as they are
            command = dataclasses.replace(command, target_pos_rad=target, kp_nm_per_rad=kp, kd_nm_s_per_rad=kd)
        command = self._with_strength(command)
        if p.action_latency_steps == 0:
            self._command = command
            return
        self._pending.append(command)  # applied action_latency_steps control steps later
        if len(self._pending) > p.action_latency_steps:
            self._command = self._pending.popleft()

    def _with_strength(self, command: ActuatorCommand) -> ActuatorCommand:
        """Motor strength (perturbation): the PD torque scaled before the DC-motor clip, i.e. kp and kd scaled."""
        s = self._perturb.motor_strength
        if s == 1.0:
            return command
        return dataclasses.replace(command, kp_nm_per_rad=command.kp_nm_per_rad * s, kd_nm_s_per_rad=command.kd_nm_s_per_rad * s)

    @property
    def held_command(self) -> ActuatorCommand:
        return self._command

    def step_control(self) -> None:
        """Advance one control period: profile.decimation physics steps, PD torque recomputed in each."""
        self._require()
        mj, m, d, prof, cmd = self._mujoco, self.model, self.data, self.profile, self._command
        dadr, vmax = self._dadr, self._max_vel
        for _ in range(prof.decimation):
            if not self._pos_stage_current:
                mj.mj_step1(m, d)
            tau = cmd.torque_nm(prof, d.qpos[self._qadr], d.qvel[dadr])
            d.ctrl[self._act] = tau
            mj.mj_step2(m, d)
            self._pos_stage_current = False
            clamp_joint_velocity(m, d, self._qadr, dadr, vmax)
        self._applied_torque_nm = tau
        p = self._perturb
        if p.pushes and d.time >= self._next_push_s - 1e-9:  # Isaac Lab push_by_setting_velocity: add to world vx, vy
            d.qvel[self._base_v : self._base_v + 2] += self._push_rng.uniform(-p.push_vel_m_s, p.push_vel_m_s, 2)
            self._next_push_s += p.push_interval_s
            self.pushes_applied += 1
        mj.mj_step1(m, d)  # kinematics and contacts of the new state, for read() and the next step
        self._pos_stage_current = True
        self._control_steps += 1
        self._global_steps += 1
        self._goals.update(d.qpos[self._base_q : self._base_q + 2])

    # ------------------------------------------------------------------------------ sensing

    def read(self) -> SensorFrame:
        self._require()
        d = self.data
        stamp = now_ns()
        quat = d.qpos[self._base_q + 3 : self._base_q + 7].copy()
        rot = self.rot_w_from_base
        f = [vector_norm(d.sensordata[s]) for s in self._foot_force]
        state = RobotState(
            stamp_ns=stamp,
            joint_pos_rad=d.qpos[self._qadr].copy(),
            joint_vel_rad_s=d.qvel[self._dadr].copy(),
            joint_torque_nm=np.array(self._applied_torque_nm, dtype=np.float64),
            base_quat_wxyz=quat,
            base_ang_vel_body_rad_s=d.sensordata[self._gyro].copy(),
            base_lin_acc_body_m_s2=d.sensordata[self._accel].copy(),
            base_lin_vel_body_m_s=self.base_lin_vel_body_m_s,
            foot_force_n=np.array(f, dtype=np.float64),
        )
        frame = SensorFrame(state=state, navigation=self._navigation(stamp))
        if self._scanner is not None:
            # like the camera: one scan per refresh period (global control steps 0-4, 5-9, ... at the
            # profile's 10 Hz), at its first read, which is the step the policy's scan term refreshes on
            period = self._global_steps // self._scan_every
            if period != self._scan_period:
                h = self._scanner.scan(d, self.base_pos_w_m, self.roll_pitch_yaw_rad[2])
                self._scan = HeightScan(stamp, h)
                self._scan_period = period
            frame.height_scan = self._scan
        if self._camera is not None:
            # one capture per depth period (global control steps 0-4, 5-9, ... at 10 Hz), at its first
            # read; reset() sets _depth_period to -1, so the first read of an episode captures too
            period = self._global_steps // self._depth_every
            if period != self._depth_period:
                image = self._camera.capture(d, self.base_pos_w_m, rot)
                if self._perturb.depth_noise_m > 0:  # misses stay +inf
                    image = np.maximum(image + self._noise_rng.normal(0.0, self._perturb.depth_noise_m, image.shape), 0.0)
                self._depth_frames.append(DepthFrame(stamp, image))
                self._depth = self._depth_frames[0]  # depth_latency_frames captures old (the newest when 0)
                self._depth_period = period
            frame.depth = self._depth
        return frame

    def _navigation(self, stamp: int) -> NavigationCommand:
        dy, dny = self._goals.heading_errors(self.roll_pitch_yaw_rad[2])
        return NavigationCommand(stamp, float(self.config.forward_speed_m_s), dy, dny, terrain_is_flat=self._terrain_is_flat)

    # ------------------------------------------------------------------------------ sim state

    def _require(self) -> None:
        if self.model is None:
            raise RuntimeError("MujocoBackend is not connected; call connect() first")

    @property
    def course(self):
        """The terrain.Course being simulated (available after connect)."""
        return self._course

    @property
    def sim_time_s(self) -> float:
        return float(self.data.time)

    @property
    def control_step_count(self) -> int:
        """Control steps since connect/reset."""
        return self._control_steps

    @property
    def global_step_count(self) -> int:
        """Control steps since connect, across resets (the depth camera's refresh phase counts from here)."""
        return self._global_steps

    def export_model(self, path) -> str:
        """Write the exact MJCF this run compiled (open it in MuJoCo's viewer, or diff it); returns the path."""
        self._require()
        max_vel = dict(zip(self.profile.joint_actuator_kind, self._max_vel))
        note = f"Terrain: {self.config.terrain}, seed {self.config.seed}."
        if self._perturb != SimPerturbation():  # mass/CoM are patched into the compiled model, not the text
            note += f" Perturbation applied on top of this model and in the loop: {self._perturb}"
        return write_mjcf(path, self.mjcf or "", self.profile.name, max_vel, note)

    @property
    def joint_pos_rad(self) -> np.ndarray:
        """Robot order, read without a telemetry frame (no scan or depth capture)."""
        return self.data.qpos[self._qadr].copy()

    @property
    def joint_vel_rad_s(self) -> np.ndarray:
        return self.data.qvel[self._dadr].copy()

    @property
    def applied_torque_nm(self) -> np.ndarray:
        """The torque of the last physics step, robot order."""
        return np.array(self._applied_torque_nm, dtype=np.float64)

    @property
    def base_lin_vel_body_m_s(self) -> np.ndarray:
        return self.rot_w_from_base.T @ self.data.qvel[self._base_v : self._base_v + 3]

    @property
    def base_pos_w_m(self) -> np.ndarray:
        return self.data.qpos[self._base_q : self._base_q + 3].copy()

    @property
    def base_quat_wxyz(self) -> np.ndarray:
        return self.data.qpos[self._base_q + 3 : self._base_q + 7].copy()

    @property
    def rot_w_from_base(self) -> np.ndarray:
        r = np.zeros(9)
        self._mujoco.mju_quat2Mat(r, self.data.qpos[self._base_q + 3 : self._base_q + 7])
        return r.reshape(3, 3)

    @property
    def roll_pitch_yaw_rad(self) -> tuple[float, float, float]:
        return euler_xyz_from_quat_wxyz(self.data.qpos[self._base_q + 3 : self._base_q + 7])

    @property
    def progress_m(self) -> float:
        """Distance travelled along the course centreline (spawn, goals, run-out)."""
        return self._course.progress_m(self.base_pos_w_m[:2])

    @property
    def goals_reached(self) -> int:
        return self._goals.goals_reached

    @property
    def current_goal_index(self) -> int:
        return self._goals.goal_index

    @property
    def course_complete(self) -> bool:
        return self._goals.complete

    @property
    def has_fallen(self) -> bool:
        """Training's termination: |roll| or |pitch| > 1.5 rad, or the base below fall_base_z_m."""
        roll, pitch, _ = self.roll_pitch_yaw_rad
        lim = self.config.fall_roll_pitch_rad
        return abs(roll) > lim or abs(pitch) > lim or self.base_pos_w_m[2] < self.config.fall_base_z_m

    def set_base_pose(self, pos_w_m, quat_wxyz=None, joint_pos_rad=None) -> None:
        """Teleport the robot (velocities zeroed), e.g. to test sensors at a known pose."""
        self._require()
        d = self.data
        d.qpos[self._base_q : self._base_q + 3] = pos_w_m
        if quat_wxyz is not None:
            q = np.asarray(quat_wxyz, dtype=np.float64)
            d.qpos[self._base_q + 3 : self._base_q + 7] = q / np.linalg.norm(q)
        if joint_pos_rad is not None:
            d.qpos[self._qadr] = joint_pos_rad
        d.qvel[:] = 0.0
        self._mujoco.mj_forward(self.model, d)
        self._pos_stage_current = True
        self._scan_period = self._depth_period = -1

    # ------------------------------------------------------------------------------ video

    def render_rgb(self, width: int = 640, height: int = 480, camera: str = "chase") -> np.ndarray:
        """An RGB frame (height, width, 3) uint8 from a model camera ("chase" follows the robot, or "depth_camera").

        Needs an OpenGL context: set MUJOCO_GL=egl (or osmesa, with libosmesa6 installed) before
        mujoco is first imported when there is no display.
        """
        self._require()
        key = (int(width), int(height))
        r = self._renderers.get(key)
        if r is None:
            try:
                r = self._mujoco.Renderer(self.model, height=key[1], width=key[0])
            except Exception as e:  # glfw without a display, missing EGL/OSMesa libraries, ...
                import os

                raise RenderingUnavailableError(
                    f"cannot render offscreen (MUJOCO_GL={os.environ.get('MUJOCO_GL', '<unset>')}): {e}. "
                    "Set MUJOCO_GL=egl (or osmesa, after apt-get install libosmesa6) before importing mujoco."
                ) from e
            self._renderers[key] = r
        r.update_scene(self.data, camera=camera)
        flags = r.scene.flags
        flags[self._mujoco.mjtRndFlag.mjRND_SHADOW] = 0
        flags[self._mujoco.mjtRndFlag.mjRND_REFLECTION] = 0
        return r.render()
