"""Drive a HalServer from a simulator's physics-step callbacks, the way Isaac Lab steps its envs.

Pure Python (no omni / carb / isaacsim): the Kit extension (``krabby.hal.kit``) only forwards its
PhysX pre-/post-step callbacks here, so the scheduling below is tested without Kit.

Per physics step (200 Hz for the Go2), as in training (spec §0 and §3):

- **pre-step**: the backend computes the training PD torque from the joint state *of this step*
  and the held target (``ActuatorCommand.torque_nm``, DC-motor clip included) and writes it as
  joint efforts; the simulator's own joint drives are switched off.
- **post-step**: every ``decimation``-th step is a control step: ``HalServer.tick()`` reads the
  backend, publishes the observation, runs the safety supervisor and hands its command to the
  backend, which holds it for the next ``decimation`` physics steps.

The very first physics step after Play (or after Stop -> Play) first (re)acquires the simulator
handles and publishes the initial observation, so step 0 already runs under a command, as step 0
of an Isaac Lab episode runs under the action computed from the reset observation.

Lock-step (``lockstep_timeout_s > 0``, the Kit default): after publishing, wait up to that long for
the command computed from *this* observation and apply it at once (training timing exactly, at the
price of blocking the physics loop); only waited for while a client is actively commanding. The
safety supervisor then runs on the simulation clock (``SimClock``): its watchdog and HOLD time
count simulated seconds, which is what matters when the simulator runs faster (or slower) than
real time, as Isaac Sim's unthrottled loop does. Asynchronous mode (``lockstep_timeout_s = 0``)
never blocks physics, but a command then takes effect whenever it arrives, and the supervisor runs
on the wall clock, blind to how much simulated time passed.

Steps before the extension has prepared a Play (``awaiting_play``; Isaac Sim warm-starts physics
inside the Play event, possibly before the extension's own Play handler) are counted and skipped.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Optional, Protocol, Sequence

import numpy as np

from .. import clock
from ..robot_profile import Rates, RobotProfile
from ..safety import SafetyState
from ..types import ActuatorCommand, SensorFrame

log = logging.getLogger("krabby.hal.isaac.stepper")


class JointMapError(ValueError):
    """The simulator's articulation does not have the joints the robot profile names."""


class JointNameMap:
    """Index maps between a simulator's DOF order and the profile's robot order, built BY NAME.

    ``robot[j] = dof[dof_from_robot[j]]``. DOFs the profile does not name (e.g. a gripper) get zero
    effort and are reported in ``extra_dofs``.
    """

    def __init__(self, profile: RobotProfile, dof_names: Sequence[str]):
        names = [str(n) for n in dof_names]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise JointMapError(f"articulation lists joint(s) {', '.join(dup)} more than once")
        missing = [n for n in profile.joint_names if n not in names]
        if missing:
            raise JointMapError(
                f"the articulation has no joint(s) {', '.join(missing)} of robot profile {profile.name!r}; "
                f"its joints are: {', '.join(names) or '(none)'} (wrong robot_prim_path or robot_profile?)"
            )
        self.dof_names = tuple(names)
        self.num_dof = len(names)
        self.dof_from_robot = np.array([names.index(n) for n in profile.joint_names], dtype=np.int64)
        self.extra_dofs = tuple(n for n in names if n not in profile.joint_names)

    def to_robot(self, dof_vec: np.ndarray) -> np.ndarray:
        return np.asarray(dof_vec, dtype=np.float64)[..., self.dof_from_robot]

    def to_dof(self, robot_vec: np.ndarray, fill: float = 0.0) -> np.ndarray:
        out = np.full(self.num_dof, fill, dtype=np.float64)
        out[self.dof_from_robot] = robot_vec
        return out


def pd_efforts(
    command: Optional[ActuatorCommand], profile: RobotProfile, joint_map: JointNameMap,
    pos_dof_rad: np.ndarray, vel_dof_rad_s: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """The training PD + DC-motor clip for one physics step: (efforts in DOF order, torques in robot order).

    No command yet (before the first control tick) means zero torque.
    """
    q = joint_map.to_robot(pos_dof_rad)
    qd = joint_map.to_robot(vel_dof_rad_s)
    tau = np.zeros(profile.num_joints) if command is None else command.torque_nm(profile, q, qd)
    return joint_map.to_dof(tau), tau


def effective_rates(profile: RobotProfile, physics_rate_hz: float = 0.0, control_rate_hz: float = 0.0) -> tuple[Rates, list[str]]:
    """The rates to run at: the profile's, unless overridden (> 0). Returns (rates, warnings)."""
    phys = physics_rate_hz if physics_rate_hz > 0 else profile.physics_rate_hz
    ctrl = control_rate_hz if control_rate_hz > 0 else profile.control_rate_hz
    if ctrl > phys or abs(phys / ctrl - round(phys / ctrl)) > 1e-9:
        raise ValueError(f"control rate {ctrl:g} Hz must divide the physics rate {phys:g} Hz (integer decimation)")
    warnings = []
    if (phys, ctrl) != (profile.physics_rate_hz, profile.control_rate_hz):
        warnings.append(
            f"running physics at {phys:g} Hz and control at {ctrl:g} Hz, but robot profile {profile.name!r} was "
            f"trained at {profile.physics_rate_hz:g} / {profile.control_rate_hz:g} Hz: expect the policy to behave differently"
        )
    return Rates(phys, ctrl), warnings


def physics_rate_message(scene_rate_hz: Optional[float], wanted_hz: float) -> Optional[str]:
    """A one-line warning when a stage's physics rate differs from the wanted one; None when it matches."""
    if scene_rate_hz is not None and abs(scene_rate_hz - wanted_hz) <= 1e-6 * wanted_hz:
        return None
    have = "not set (PhysX default 60 Hz)" if scene_rate_hz is None else f"{scene_rate_hz:g} Hz"
    return (
        f"physics scene rate is {have} but the policy needs {wanted_hz:g} Hz: the PD and the control rate would "
        f"be wrong (set the PhysicsScene's timeStepsPerSecond to {wanted_hz:g}, or keep "
        f"--/exts/krabby.hal/set_physics_rate=true)"
    )


class SteppedBackend(Protocol):
    """What the stepper needs from a simulator backend besides HalBackend.read()/apply()."""

    def ensure_ready(self) -> bool:
        """(Re)acquire simulator handles if needed; False while the simulation cannot be read yet."""

    def apply_pd(self) -> None:
        """Write this physics step's PD efforts from the held command and the current joint state."""

    def invalidate(self) -> None:
        """Drop simulator handles (timeline Stop, stage change, an error)."""


@dataclass
class StepperStats:
    physics_steps: int = 0
    control_steps: int = 0
    initializations: int = 0
    errors: int = 0
    lockstep_waits: int = 0
    lockstep_timeouts: int = 0
    steps_before_play: int = 0  # physics steps that ran before the Play preparation (skipped)
    last_dt_s: float = 0.0
    rate_warning: str = ""  # set while the physics dt differs from the expected one, cleared once it is right
    last_error: str = ""
    tick_ms: deque = field(default_factory=lambda: deque(maxlen=256))


ControlObserver = Callable[[SensorFrame, ActuatorCommand], None]


class SimClock:
    """Supervisor time (epoch ns) that runs with the SIMULATION while a command is overdue.

    ``anchor()`` whenever nothing is overdue (a fresh command arrived, or nothing is being timed);
    from then on ``now_ns()`` advances only by the physics steps taken (``advance``), so the
    supervisor's watchdog and HOLD time count simulated seconds however fast the simulator runs.
    Anchored on the wall clock, it stays comparable with the server's wall-clock command stamps.
    """

    def __init__(self, wall_ns: Callable[[], int] = clock.now_ns):
        self._wall_ns = wall_ns
        self.sim_ns = 0
        self._anchor_wall_ns: Optional[int] = None
        self._anchor_sim_ns = 0

    def advance(self, dt_s: float) -> None:
        self.sim_ns += int(round(dt_s * 1e9))

    def anchor(self) -> None:
        self._anchor_wall_ns, self._anchor_sim_ns = self._wall_ns(), self.sim_ns

    def now_ns(self) -> int:
        if self._anchor_wall_ns is None:
            self.anchor()
        return self._anchor_wall_ns + (self.sim_ns - self._anchor_sim_ns)


class PhysicsStepper:
    """Turns physics-step callbacks into PD application (every step) and HAL ticks (every decimation-th)."""

    def __init__(
        self, server, backend: SteppedBackend, *, rates: Rates, lockstep_timeout_s: float = 0.0,
        perf_counter: Callable[[], float] = time.perf_counter, awaiting_play: bool = False,
    ):
        self.server = server
        self.backend = backend
        self.rates = rates
        self.decimation = rates.decimation
        self.lockstep_timeout_s = float(lockstep_timeout_s)
        self.stats = StepperStats()
        self.observers: list[ControlObserver] = []
        self._perf = perf_counter
        self._ready = False
        self._steps_in_period = 0
        self._last_error_log = 0.0
        self.awaiting_play = awaiting_play
        self.sim_clock = SimClock()

    @property
    def ready(self) -> bool:
        return self._ready

    def on_play(self) -> None:
        """The extension prepared this Play (physics rate, contact reporting, supervisor armed): step from now on."""
        self.awaiting_play = False

    # ----------------------------------------------------------------------- physics callbacks
    def on_pre_step(self, dt_s: float) -> None:
        """Before each physics step: initialise on the first one, then apply the PD efforts."""
        if self.awaiting_play:
            self.stats.steps_before_play += 1
            return
        try:
            if not self._ready:
                if not self.backend.ensure_ready():
                    return
                self._ready = True
                self._steps_in_period = 0
                self.stats.initializations += 1
                self._control_tick()  # the initial observation, and the command for step 0
            self._check_dt(dt_s)
            self.backend.apply_pd()
        except Exception as e:  # a physics callback must never raise into Kit: log, re-initialise next step
            self._fail(e)

    def on_post_step(self, dt_s: float) -> None:
        """After each physics step: every decimation-th step read, publish and take the new command."""
        if not self._ready or self.awaiting_play:
            return
        try:
            self.sim_clock.advance(dt_s)
            self.stats.physics_steps += 1
            self._steps_in_period += 1
            if self._steps_in_period >= self.decimation:
                self._steps_in_period = 0
                self._control_tick()
        except Exception as e:
            self._fail(e)

    def on_stop(self) -> None:
        """Timeline stopped (or the stage changed): handles are invalid until the next Play is prepared."""
        self.awaiting_play = True
        self._ready = False
        self._steps_in_period = 0
        self.backend.invalidate()

    # ------------------------------------------------------------------------------ internals
    def _control_tick(self) -> None:
        t0 = self._perf()
        if self.lockstep_timeout_s > 0:
            frame = self.server.observe()
            state = self.server.supervisor.state
            if state == SafetyState.ACTIVE:
                self.stats.lockstep_waits += 1
                if self.server.wait_for_command(frame.state.stamp_ns, self.lockstep_timeout_s):
                    self.sim_clock.anchor()  # the command of this very observation: nothing overdue
                else:
                    self.stats.lockstep_timeouts += 1
            elif state != SafetyState.HOLD:
                self.sim_clock.anchor()  # nothing is being timed
            self.server.actuate(self.sim_clock.now_ns())
        else:
            frame = self.server.tick()
        self.stats.control_steps += 1
        self.stats.tick_ms.append((self._perf() - t0) * 1e3)
        cmd = self.server.last_command
        for observer in self.observers:
            observer(frame, cmd)

    def _check_dt(self, dt_s: float) -> None:
        """Warn while the physics dt is wrong (once per change), and clear the warning once it is right."""
        self.stats.last_dt_s = float(dt_s)
        if not dt_s:
            return
        want = self.rates.physics_dt_s
        if abs(dt_s - want) <= 1e-4 * want:
            self.stats.rate_warning = ""
            return
        msg = physics_rate_message(1.0 / dt_s, self.rates.physics_rate_hz) or ""
        if msg != self.stats.rate_warning:
            self.stats.rate_warning = msg
            log.warning("%s", msg)

    def _fail(self, e: Exception) -> None:
        self.stats.errors += 1
        self.stats.last_error = f"{type(e).__name__}: {e}"
        now = self._perf()
        if now - self._last_error_log > 1.0:
            self._last_error_log = now
            log.error("physics step failed (%s); re-acquiring the robot on the next step", self.stats.last_error)
        self._ready = False
        try:
            self.backend.invalidate()
        except Exception:  # pragma: no cover - best effort
            log.exception("backend.invalidate failed")


__all__ = [
    "JointMapError", "JointNameMap", "pd_efforts", "Rates", "effective_rates", "physics_rate_message",
    "SteppedBackend", "StepperStats", "PhysicsStepper", "SimClock",
]
