"""The robot-side safety supervisor: the last word on what reaches the Go2's motors.

It sits *below* the HAL's generic ``SafetySupervisor`` (krabby.hal.safety, which validates client
commands and runs the command watchdog) and *above* the motor bus. The 500 Hz command writer calls
``output()`` every cycle and sends whatever it returns, so every rule below is evaluated at 500 Hz,
even when the HAL loop or the policy stalls.

States (``Mode``)::

    DAMPING --stand_up--> STANDING_UP --(ramp done)--> STANDING --arm_policy--> POLICY
       ^                      |                            |                       |
       +---- damp / fall / temperature / state timeout ----+------- watchdog ------+
    POLICY --disarm_policy--> STANDING_UP (ramp from the current pose back to the default pose)
    any --estop--> ESTOP (latched; damping) --clear_estop--> DAMPING

- DAMPING / ESTOP: kp = 0, kd = ``damping_kd``: the joints resist motion but hold nothing.
- STANDING_UP: from the measured pose to the profile's default pose along a smooth ramp
  (``stand_up_s``), stand gains. STANDING holds the default pose.
- POLICY: the HAL's latest ActuatorCommand (the policy's joint targets, already validated and
  clamped to joint limits by the HAL). If the HAL stops calling ``set_policy_command`` for
  ``policy_watchdog_s``, or the HAL itself went to damping (its own watchdog), -> DAMPING.
- POLICY -> STANDING_UP (back to the default pose) after ``max_policy_step_errors`` consecutive failed
  policy steps (``policy_step_result``): a policy that cannot compute must not leave the robot "armed".
- Every state with torque drops to DAMPING on: |roll| or |pitch| above ``max_tilt_rad`` (fall),
  a motor at or above ``motor_temp_limit_c``, or no LowState for ``state_timeout_s``.
- Clamps on every output: targets inside the profile's joint limits (less ``joint_limit_margin_rad``),
  and targets moved so that kp (q* - q) - kd dq stays within the motor's hardware torque limit
  (``profile.hardware_torque_limit_nm``, not the larger training limit) for the measured q, dq.
- **Dry run by default**: everything above is computed (and shown, and recorded), but the command
  actually sent is zero torque until the operator enables torque explicitly with ``enable_torque``,
  which only works in DAMPING and only when the runner was started with ``allow_live``.

Thread-safe: operator actions, LowState updates (DDS thread), HAL commands (HAL thread) and the
writer (500 Hz thread) meet under one lock. Hooks (``on_policy_armed``/``on_policy_disarmed``) are
called outside the lock.
"""

from __future__ import annotations

import logging
import math
import threading
from collections import deque
from typing import Callable, Optional

import numpy as np

from ..robot_profile import RobotProfile
from ..types import ActuatorCommand, ActuatorMode
from .supervisor_types import (
    TORQUE_MODES, Feedback, Mode, MotorCommand, SupervisorConfig, SupervisorEvent, lie_down_pose, roll_pitch_from_quat_wxyz,
    smoothstep,
)

log = logging.getLogger("krabby.hal.robot.supervisor")


class RobotSupervisor:
    """Computes the motor command at every writer cycle; see the module docstring for the rules."""

    def __init__(self, profile: RobotProfile, config: Optional[SupervisorConfig] = None, clock_ns: Callable[[], int] | None = None):
        from .. import clock

        self.profile = profile
        self.config = config or SupervisorConfig()
        self._now = clock_ns or clock.now_ns
        self._lock = threading.Lock()
        self._mode = Mode.DAMPING
        self._mode_since_ns = self._now()
        self._dry_run = bool(self.config.dry_run)
        self._feedback: Optional[Feedback] = None
        self._policy_cmd: Optional[ActuatorCommand] = None
        self._policy_cmd_ns = 0
        self._ramp_from: Optional[np.ndarray] = None
        self._ramp_start_ns = 0
        self._estop_reason = ""
        self.events: deque = deque(maxlen=500)
        self.counters = {"torque_clamped": 0, "limit_clamped": 0, "falls": 0, "over_temperature": 0,
                         "state_timeouts": 0, "policy_watchdog": 0, "hal_damped": 0, "estops": 0, "policy_arms": 0,
                         "policy_step_errors": 0, "policy_error_stops": 0,
                         "depth_stale_stops": 0}
        self._step_errors_in_row = 0
        self.last_policy_error = ""
        self._depth_age_s: Optional[float] = None
        self.last_output: Optional[MotorCommand] = None
        self.on_policy_armed: Optional[Callable[[], None]] = None
        self.on_policy_disarmed: Optional[Callable[[], None]] = None
        p = profile
        margin = self.config.joint_limit_margin_rad
        self._lo = p.pos_min_rad + margin
        self._hi = p.pos_max_rad - margin
        self._tau_max = p.hardware_torque_limit_nm * self.config.torque_limit_scale
        self._stand_kp = np.full(p.num_joints, self.config.stand_kp_nm_per_rad)
        self._stand_kd = np.full(p.num_joints, self.config.stand_kd_nm_s_per_rad)
        self._damp_kd = np.full(p.num_joints, self.config.damping_kd_nm_s_per_rad)
        self._zeros = np.zeros(p.num_joints)
        self._lie_pose = lie_down_pose(list(p.joint_names))

    # ------------------------------------------------------------------------------ queries
    @property
    def mode(self) -> Mode:
        return self._mode

    @property
    def dry_run(self) -> bool:
        return self._dry_run

    @property
    def policy_episode(self) -> int:
        """How many times the policy was armed: a new policy episode each time (history reset)."""
        return self.counters["policy_arms"]

    def _event(self, now: int, kind: str, detail: str = "") -> None:
        self.events.append(SupervisorEvent(now, kind, detail))

    def _set(self, mode: Mode, now: int, detail: str) -> list:
        """Change mode (lock held); returns the hooks to call after the lock is released."""
        hooks = []
        if mode == self._mode:
            return hooks
        old = self._mode
        level = logging.WARNING if mode in (Mode.DAMPING, Mode.ESTOP) and old in TORQUE_MODES else logging.INFO
        log.log(level, "robot supervisor: %s -> %s %s", old.name, mode.name, detail)
        self._event(now, f"{old.name}->{mode.name}", detail)
        self._mode, self._mode_since_ns = mode, now
        if old == Mode.POLICY and self.on_policy_disarmed is not None:
            hooks.append(self.on_policy_disarmed)
        if mode == Mode.POLICY:
            self.counters["policy_arms"] += 1
            self._policy_cmd = None
            self._policy_cmd_ns = now
            if self.on_policy_armed is not None:
                hooks.append(self.on_policy_armed)
        return hooks

    def _run(self, hooks: list) -> None:
        for h in hooks:
            try:
                h()
            except Exception:
                log.exception("supervisor hook failed")

    # ----------------------------------------------------------------------- operator actions
    def enable_torque(self) -> tuple:
        """Leave dry run. Only from DAMPING, and only when the runner allows live torque."""
        now = self._now()
        with self._lock:
            if not self._dry_run:
                return True, "torque already enabled"
            if not self.config.allow_live:
                return False, "dry run: this runner was started without --live, torque stays off"
            if self._mode != Mode.DAMPING:
                return False, f"enable torque only from DAMPING (now {self._mode.name})"
            self._dry_run = False
            self._event(now, "torque-enabled", "operator")
            log.warning("robot supervisor: TORQUE ENABLED by the operator")
            return True, "torque enabled: commands now reach the motors"

    def disable_torque(self) -> tuple:
        now = self._now()
        with self._lock:
            hooks = [] if self._mode == Mode.ESTOP else self._set(Mode.DAMPING, now, "(torque disabled)")
            self._dry_run = True
            self._event(now, "torque-disabled", "operator")
        self._run(hooks)
        return True, "dry run: zero-torque commands"

    def stand_up(self) -> tuple:
        now = self._now()
        with self._lock:
            if self._mode != Mode.DAMPING:
                return False, f"stand up only from DAMPING (now {self._mode.name})"
            why = self._unsafe_to_move(now)
            if why:
                return False, f"cannot stand up: {why}"
            self._start_ramp(now)
            hooks = self._set(Mode.STANDING_UP, now, "(operator)")
        self._run(hooks)
        return True, "standing up"

    def arm_policy(self) -> tuple:
        now = self._now()
        with self._lock:
            if self._mode != Mode.STANDING:
                return False, f"arm the policy only from STANDING (now {self._mode.name})"
            why = self._unsafe_to_move(now) or self._depth_stale()
            if why:
                return False, f"cannot arm: {why}"
            hooks = self._set(Mode.POLICY, now, "(operator)")
        self._run(hooks)
        return True, "policy armed"

    def disarm_policy(self, detail: str = "(operator disarm: back to standing)") -> tuple:
        now = self._now()
        with self._lock:
            if self._mode != Mode.POLICY:
                return False, f"policy not armed (now {self._mode.name})"
            self._start_ramp(now)
            hooks = self._set(Mode.STANDING_UP, now, detail)
        self._run(hooks)
        return True, "policy disarmed, returning to the default pose"

    def lie_down(self, detail: str = "(operator)") -> tuple:
        """Stand -> sit (a smooth ramp to the lying pose) -> damp: a controlled way down before power-off."""
        now = self._now()
        with self._lock:
            if self._mode not in (Mode.STANDING_UP, Mode.STANDING, Mode.POLICY):
                return False, f"lie down only while standing or walking (now {self._mode.name})"
            self._start_ramp(now)
            hooks = self._set(Mode.LYING_DOWN, now, detail)
        self._run(hooks)
        return True, "lying down, then damping"

    def damp(self, detail: str = "(operator)") -> tuple:
        now = self._now()
        with self._lock:
            if self._mode == Mode.ESTOP:
                return False, "e-stop is latched: clear it first"
            hooks = self._set(Mode.DAMPING, now, detail)
        self._run(hooks)
        return True, "damping"

    def estop(self, detail: str = "(operator)") -> tuple:
        now = self._now()
        with self._lock:
            if self._mode != Mode.ESTOP:
                self.counters["estops"] += 1
                self._estop_reason = detail
            hooks = self._set(Mode.ESTOP, now, detail)
        self._run(hooks)
        return True, "E-STOP latched"

    def clear_estop(self) -> tuple:
        now = self._now()
        with self._lock:
            if self._mode != Mode.ESTOP:
                return False, "no e-stop to clear"
            hooks = self._set(Mode.DAMPING, now, "(e-stop cleared)")
            self._estop_reason = ""
        self._run(hooks)
        return True, "e-stop cleared: DAMPING"

    # ---------------------------------------------------------------------------- inputs
    def on_feedback(self, fb: Feedback) -> None:
        with self._lock:
            self._feedback = fb

    def on_depth_age(self, age_s: Optional[float]) -> None:
        """Age of the newest depth frame (None: none yet), from the HAL tick; checked only when depth_max_age_s > 0."""
        with self._lock:
            self._depth_age_s = age_s

    def _depth_stale(self) -> str:
        """Why depth cannot be trusted now ('' when fine or not required). Lock held."""
        limit, age = self.config.depth_max_age_s, self._depth_age_s
        if limit <= 0:
            return ""
        if age is None:
            return "no depth frame yet"
        return f"depth frame {age * 1e3:.0f} ms old (limit {limit * 1e3:.0f} ms)" if age > limit else ""

    def set_policy_command(self, cmd: ActuatorCommand) -> None:
        """The HAL's per-tick output (``HalBackend.apply``); used only in POLICY."""
        now = self._now()
        with self._lock:
            self._policy_cmd = cmd
            self._policy_cmd_ns = now

    def policy_step_result(self, error: Optional[BaseException]) -> None:
        """The policy client's verdict on one control step (None = computed); failures in a row leave POLICY."""
        now = self._now()
        hooks: list = []
        with self._lock:
            if error is None:
                self._step_errors_in_row = 0
                return
            self._step_errors_in_row += 1
            self.counters["policy_step_errors"] += 1
            self.last_policy_error = f"{type(error).__name__}: {error}"[:200]
            n = self._step_errors_in_row
            if self._mode == Mode.POLICY and n >= self.config.max_policy_step_errors:
                self.counters["policy_error_stops"] += 1
                self._start_ramp(now)
                hooks = self._set(Mode.STANDING_UP, now, f"({n} policy steps failed in a row: {self.last_policy_error})")
        self._run(hooks)

    # ---------------------------------------------------------------------------- the rules
    def _start_ramp(self, now: int) -> None:
        fb = self._feedback
        self._ramp_from = (fb.joint_pos_rad if fb is not None else self.profile.default_pos_rad).astype(np.float64).copy()
        self._ramp_start_ns = now

    def _unsafe_to_move(self, now: int) -> str:
        """Why torque must not be applied now ('' when fine). Lock held."""
        cfg, fb = self.config, self._feedback
        if fb is None:
            return "no robot state received yet"
        if (now - fb.stamp_ns) * 1e-9 > cfg.state_timeout_s:
            return f"robot state is {(now - fb.stamp_ns) * 1e-9:.3f} s old"
        roll, pitch = roll_pitch_from_quat_wxyz(fb.base_quat_wxyz)
        if abs(roll) > cfg.max_tilt_rad or abs(pitch) > cfg.max_tilt_rad:
            return f"tilted (roll {math.degrees(roll):.0f} deg, pitch {math.degrees(pitch):.0f} deg)"
        hot = float(np.max(fb.motor_temp_c)) if fb.motor_temp_c.size else 0.0
        if hot >= cfg.motor_temp_limit_c:
            j = int(np.argmax(fb.motor_temp_c))
            return f"{self.profile.joint_names[j]} at {hot:.0f} C (limit {cfg.motor_temp_limit_c:.0f} C)"
        return ""

    def _check(self, now: int) -> list:
        """Transitions forced by the robot's state (lock held); returns hooks."""
        cfg, mode = self.config, self._mode
        if mode not in TORQUE_MODES:
            return []
        fb = self._feedback
        if fb is None or (now - fb.stamp_ns) * 1e-9 > cfg.state_timeout_s:
            self.counters["state_timeouts"] += 1
            return self._set(Mode.DAMPING, now, f"(no robot state for {cfg.state_timeout_s:.3f} s)")
        roll, pitch = roll_pitch_from_quat_wxyz(fb.base_quat_wxyz)
        if abs(roll) > cfg.max_tilt_rad or abs(pitch) > cfg.max_tilt_rad:
            self.counters["falls"] += 1
            return self._set(Mode.DAMPING, now, f"(fall: roll {math.degrees(roll):.0f} deg, pitch {math.degrees(pitch):.0f} deg)")
        if fb.motor_temp_c.size and float(np.max(fb.motor_temp_c)) >= cfg.motor_temp_limit_c:
            self.counters["over_temperature"] += 1
            j = int(np.argmax(fb.motor_temp_c))
            return self._set(Mode.DAMPING, now, f"({self.profile.joint_names[j]} at {fb.motor_temp_c[j]:.0f} C)")
        if mode == Mode.STANDING_UP and (now - self._ramp_start_ns) * 1e-9 >= cfg.stand_up_s:
            return self._set(Mode.STANDING, now, "(ramp done)")
        if mode == Mode.LYING_DOWN and (now - self._ramp_start_ns) * 1e-9 >= cfg.lie_down_s:
            return self._set(Mode.DAMPING, now, "(lying down)")
        if mode == Mode.POLICY:
            stale = self._depth_stale()
            if stale:
                self.counters["depth_stale_stops"] += 1
                self._start_ramp(now)
                return self._set(Mode.STANDING_UP, now, f"({stale}: back to standing)")
            if (now - self._policy_cmd_ns) * 1e-9 > cfg.policy_watchdog_s:
                self.counters["policy_watchdog"] += 1
                return self._set(Mode.DAMPING, now, f"(watchdog: no HAL command for {cfg.policy_watchdog_s:.3f} s)")
            cmd = self._policy_cmd
            armed_s = (now - self._mode_since_ns) * 1e-9
            # grace: a HAL tick that raced the arm may still deliver the pre-arm DAMP output once
            if cmd is not None and cmd.mode != ActuatorMode.POSITION and armed_s > cfg.arm_grace_s:
                self.counters["hal_damped"] += 1
                return self._set(Mode.DAMPING, now, f"(HAL output is {cmd.mode.name}: policy stopped or HAL watchdog)")
        return []

    def _desired(self, now: int) -> tuple:
        """(targets, kp, kd) of the current mode before clamps (lock held)."""
        p, mode = self.profile, self._mode
        if mode == Mode.STANDING_UP and self._ramp_from is not None:
            a = smoothstep((now - self._ramp_start_ns) * 1e-9 / max(self.config.stand_up_s, 1e-6))
            return self._ramp_from + a * (p.default_pos_rad - self._ramp_from), self._stand_kp, self._stand_kd
        if mode == Mode.LYING_DOWN and self._ramp_from is not None:
            a = smoothstep((now - self._ramp_start_ns) * 1e-9 / max(self.config.lie_down_s, 1e-6))
            return self._ramp_from + a * (self._lie_pose - self._ramp_from), self._stand_kp, self._stand_kd
        if mode in (Mode.STANDING, Mode.STANDING_UP):
            return p.default_pos_rad.copy(), self._stand_kp, self._stand_kd
        if mode == Mode.POLICY:
            cmd = self._policy_cmd
            if cmd is None or cmd.mode != ActuatorMode.POSITION:  # armed, no policy target yet: keep standing
                return p.default_pos_rad.copy(), self._stand_kp, self._stand_kd
            return (np.asarray(cmd.target_pos_rad, dtype=np.float64).copy(),
                    np.asarray(cmd.kp_nm_per_rad, dtype=np.float64), np.asarray(cmd.kd_nm_s_per_rad, dtype=np.float64))
        fb = self._feedback
        hold = fb.joint_pos_rad.copy() if fb is not None else p.default_pos_rad.copy()
        return hold, self._zeros, self._damp_kd

    def _clamp(self, q_des: np.ndarray, kp: np.ndarray, kd: np.ndarray) -> np.ndarray:
        """Joint-limit clamp, then the hardware torque clamp for the measured q, dq (lock held)."""
        clamped = np.clip(q_des, self._lo, self._hi)
        if np.any(clamped != q_des):
            self.counters["limit_clamped"] += 1
        fb = self._feedback
        if fb is not None and np.any(kp > 0):
            q, dq = fb.joint_pos_rad, fb.joint_vel_rad_s
            safe_kp = np.where(kp > 0, kp, 1.0)
            lo = q + (-self._tau_max + kd * dq) / safe_kp
            hi = q + (self._tau_max + kd * dq) / safe_kp
            t = np.where(kp > 0, np.clip(clamped, lo, hi), clamped)
            if np.any(t != clamped):
                self.counters["torque_clamped"] += 1
            clamped = np.clip(t, self._lo, self._hi)  # joint limits win over the torque clamp
        return clamped

    def output(self) -> MotorCommand:
        """The command for this writer cycle (call at the bus rate, e.g. 500 Hz)."""
        now = self._now()
        with self._lock:
            hooks = self._check(now)
            q, kp, kd = self._desired(now)
            q = self._clamp(q, kp, kd)
            computed = MotorCommand(q, np.array(kp, dtype=np.float64), np.array(kd, dtype=np.float64), False, self._mode)
            if self._dry_run:
                out = MotorCommand(q, self._zeros.copy(), self._zeros.copy(), True, self._mode, would_send=computed)
            else:
                out = computed
            self.last_output = out
        self._run(hooks)
        return out

    def snapshot(self) -> dict:
        with self._lock:
            fb = self._feedback
            now = self._now()
            rp = roll_pitch_from_quat_wxyz(fb.base_quat_wxyz) if fb is not None else (math.nan, math.nan)
            return {
                "mode": self._mode.name,
                "mode_code": int(self._mode),
                "dry_run": self._dry_run,
                "allow_live": self.config.allow_live,
                "estop_reason": self._estop_reason,
                "state_age_s": (now - fb.stamp_ns) * 1e-9 if fb is not None else None,
                "policy_cmd_age_s": (now - self._policy_cmd_ns) * 1e-9 if self._mode == Mode.POLICY else None,
                "roll_rad": rp[0],
                "pitch_rad": rp[1],
                "max_motor_temp_c": float(np.max(fb.motor_temp_c)) if fb is not None and fb.motor_temp_c.size else None,
                "counters": dict(self.counters),
                "policy_episode": self.counters["policy_arms"],
                "last_policy_error": self.last_policy_error,
                "depth_age_s": self._depth_age_s,
                "last_event": (self.events[-1].kind + " " + self.events[-1].detail) if self.events else "",
            }


__all__ = ["Mode", "RobotSupervisor", "SupervisorConfig", "Feedback", "MotorCommand", "roll_pitch_from_quat_wxyz"]
