"""The safety supervisor every HAL server runs: the one file that holds Krabby's safety rules.

States (``SafetyState``)::

    DISARMED --arm--> ARMED --first valid command--> ACTIVE --no valid command for watchdog_s--> HOLD
                        ^                                                                        |
                        +------------------------------ arm ------------- DAMP <--- hold_s ------+
    any state --estop--> ESTOP (latched) --clear_estop--> DISARMED

- DISARMED, DAMP, ESTOP: joints are damped (kp = 0); commands are refused (NOT_ARMED / ESTOP).
- ARMED: holds the profile's default pose until the first valid command starts the watchdog.
- ACTIVE: the latest accepted targets, clamped to the profile's joint limits, are applied.
- HOLD: the watchdog tripped; the last targets are held for ``hold_s``, then DAMP. A valid command
  does **not** re-arm from HOLD or DAMP: only an explicit ``arm()`` does, so a client that comes back
  after a stall never moves the robot by surprise.

Command validation (shape, NaN/Inf, replayed, out-of-order, stale, future stamp) happens in
``check_command``; CONTROL requests pass the same seq and stamp rules in ``control``. The server
calls them for every COMMAND / CONTROL and sends the returned reason in the ACK.

One commander at a time: the connection whose command made the supervisor ACTIVE is the commander;
other connections' commands are refused (NOT_COMMANDER) until the commander goes quiet, i.e. until the
supervisor leaves ACTIVE (watchdog HOLD, disarm, e-stop). Anyone handshaken may still send CONTROL
(e-stop above all). A second client can therefore neither mask a dead policy by feeding the watchdog
nor have its targets interleaved with the commander's.
"""

from __future__ import annotations

import enum
import logging
import threading
from collections import Counter, deque
from dataclasses import dataclass

import numpy as np

from .protocol import Reason
from .ratelimit import RateLimitedLog
from .robot_profile import RobotProfile
from .types import ActuatorCommand, ActuatorMode, all_finite

log = logging.getLogger("krabby.hal.safety")


class SafetyState(enum.IntEnum):
    DISARMED = 0
    ARMED = 1
    ACTIVE = 2
    HOLD = 3
    DAMP = 4
    ESTOP = 5


@dataclass
class SafetyConfig:
    """Supervisor tuning; times in seconds on the wire clock."""

    watchdog_s: float = 0.1  # no valid command for this long in ACTIVE => HOLD (5 policy periods at 50 Hz)
    hold_s: float = 0.5  # HOLD lasts this long, then DAMP
    damping_kd_nm_s_per_rad: float = 2.0  # joint damping in DISARMED / DAMP / ESTOP
    max_command_age_s: float = 0.1  # a command built from an observation older than this is refused
    max_future_s: float = 0.01  # a command stamped this far ahead of the server clock is refused
    arm_on_start: bool = False  # simulators arm themselves; robots never should


@dataclass
class SafetyEvent:
    stamp_ns: int
    kind: str
    detail: str = ""


@dataclass(eq=False)
class ClientSession:
    """One handshaken connection as the supervisor sees it: its replay guard and a name for logs."""

    last_seq: int = -1  # the last seq that passed the order and stamp rules (COMMAND or CONTROL)
    peer: str = ""


CONTROL_ACTIONS = ("arm", "disarm", "estop", "clear_estop")


class SafetySupervisor:
    """Decides, every control step, what the backend is allowed to do. Thread-safe."""

    def __init__(self, profile: RobotProfile, config: SafetyConfig | None = None):
        self.profile = profile
        self.config = config or SafetyConfig()
        self._lock = threading.Lock()
        self._state = SafetyState.DISARMED
        self._state_since_ns = 0
        self._targets = profile.default_pos_rad.copy()
        self._targets_seq = -1
        self._last_valid_ns = 0
        self.refusals: Counter[str] = Counter()
        self.events: deque[SafetyEvent] = deque(maxlen=1000)
        self.clamped_commands = 0
        self.watchdog_trips = 0
        self._commander: ClientSession | None = None
        self._log = RateLimitedLog(log)  # arm/disarm floods from a client must not flood the log

    # --------------------------------------------------------------------------- operator actions
    @property
    def state(self) -> SafetyState:
        return self._state

    def _set(self, state: SafetyState, now_ns: int, detail: str = "") -> None:
        if state != self._state:
            kind = f"{self._state.name}->{state.name}"
            normal = state in (SafetyState.ARMED, SafetyState.ACTIVE)  # the usual start: not a warning
            self._log(kind, "safety: %s -> %s %s", self._state.name, state.name, detail,
                      level=logging.INFO if normal else logging.WARNING)
            self.events.append(SafetyEvent(now_ns, kind, detail))
            self._state = state
            self._state_since_ns = now_ns
            if state != SafetyState.ACTIVE:
                self._commander = None  # the lease ends when commanding stops being possible

    def arm(self, now_ns: int) -> Reason:
        with self._lock:
            if self._state == SafetyState.ESTOP:
                return Reason.ESTOP
            if self._state in (SafetyState.ARMED, SafetyState.ACTIVE):
                return Reason.OK
            self._targets = self.profile.default_pos_rad.copy()
            self._targets_seq = -1  # the default pose comes from no command (found by fuzzing)
            self._set(SafetyState.ARMED, now_ns, "(explicit arm)")
            return Reason.OK

    def disarm(self, now_ns: int) -> Reason:
        with self._lock:
            if self._state != SafetyState.ESTOP:
                self._set(SafetyState.DISARMED, now_ns, "(explicit disarm)")
            return Reason.OK

    def estop(self, now_ns: int, detail: str = "(e-stop)") -> Reason:
        with self._lock:
            self._set(SafetyState.ESTOP, now_ns, detail)
            return Reason.OK

    def clear_estop(self, now_ns: int) -> Reason:
        with self._lock:
            if self._state == SafetyState.ESTOP:
                self._set(SafetyState.DISARMED, now_ns, "(e-stop cleared)")
            return Reason.OK

    # ------------------------------------------------------------------------------- commands
    def check_command(self, targets_rad: np.ndarray, obs_stamp_ns: int, seq: int, client: ClientSession, now_ns: int) -> Reason:
        """Validate one command; on success the targets become the ones applied. Returns the ACK reason.

        Order: BAD_SHAPE, NON_FINITE, REPLAYED / OUT_OF_ORDER, STALE, FUTURE_STAMP (the seq is consumed
        from here on), ESTOP, NOT_ARMED, NOT_COMMANDER.
        """
        t64 = targets_rad.astype(np.float64)  # float32 from the wire: its squares cannot overflow float64
        if targets_rad.shape != (self.profile.num_joints,):
            reason = Reason.BAD_SHAPE
        elif not all_finite(t64):
            reason = Reason.NON_FINITE
        else:
            reason = self._check_order_and_stamp(obs_stamp_ns, seq, client, now_ns)
        if not reason.accepted:
            self.refusals[reason.name] += 1
            return reason
        client.last_seq = seq
        clamped = self.profile.clamp_to_limits(t64)
        was_clamped = bool((clamped != targets_rad).any())
        with self._lock:
            if self._state == SafetyState.ESTOP:
                reason = Reason.ESTOP
            elif self._state not in (SafetyState.ARMED, SafetyState.ACTIVE):
                reason = Reason.NOT_ARMED
            elif self._commander is not None and self._commander is not client:
                reason = Reason.NOT_COMMANDER
            else:
                self._targets, self._targets_seq, self._last_valid_ns = clamped, seq, now_ns
                self._commander = client
                if self._state == SafetyState.ARMED:
                    self._set(SafetyState.ACTIVE, now_ns, f"(first command, from {client.peer or 'a client'})")
        if not reason.accepted:
            self.refusals[reason.name] += 1
            return reason
        if was_clamped:
            self.clamped_commands += 1
            return Reason.OK_CLAMPED
        return Reason.OK

    def control(self, action: str, stamp_ns: int, seq: int, client: ClientSession, now_ns: int) -> Reason:
        """An operator request under the same seq and stamp rules as a command (``estop`` excepted). ``action`` in CONTROL_ACTIONS."""
        reason = self._check_order_and_stamp(stamp_ns, seq, client, now_ns)
        if action == "estop":  # never refused: a late or repeated e-stop can only make the robot safer
            client.last_seq = max(client.last_seq, seq)
            return self.estop(now_ns, "(e-stop from a client)")
        if not reason.accepted:
            self.refusals[reason.name] += 1
            return reason
        client.last_seq = seq
        return {"arm": self.arm, "disarm": self.disarm, "estop": self.estop, "clear_estop": self.clear_estop}[action](now_ns)

    def _check_order_and_stamp(self, stamp_ns: int, seq: int, client: ClientSession, now_ns: int) -> Reason:
        if seq == client.last_seq:
            return Reason.REPLAYED
        if seq < client.last_seq:
            return Reason.OUT_OF_ORDER
        age_s = (now_ns - stamp_ns) * 1e-9
        if age_s > self.config.max_command_age_s:
            return Reason.STALE
        if -age_s > self.config.max_future_s:
            return Reason.FUTURE_STAMP
        return Reason.OK

    # ------------------------------------------------------------------------------- the step
    def tick(self, now_ns: int) -> ActuatorCommand:
        """Advance the watchdog and return what the backend must apply this control step."""
        with self._lock:
            cfg = self.config
            if self._state == SafetyState.ACTIVE and (now_ns - self._last_valid_ns) * 1e-9 > cfg.watchdog_s:
                self.watchdog_trips += 1
                self._set(SafetyState.HOLD, now_ns, f"(watchdog: no valid command for {cfg.watchdog_s:.3f} s)")
            if self._state == SafetyState.HOLD and (now_ns - self._state_since_ns) * 1e-9 > cfg.hold_s:
                self._set(SafetyState.DAMP, now_ns, f"(held {cfg.hold_s:.2f} s)")
            return self._output()

    def _output(self) -> ActuatorCommand:
        p = self.profile
        if self._state in (SafetyState.ARMED, SafetyState.ACTIVE, SafetyState.HOLD):
            return ActuatorCommand(ActuatorMode.POSITION, self._targets.copy(), p.kp_nm_per_rad, p.kd_nm_s_per_rad, self._targets_seq)
        kd = np.full(p.num_joints, self.config.damping_kd_nm_s_per_rad)
        return ActuatorCommand(ActuatorMode.DAMP, self._targets.copy(), np.zeros(p.num_joints), kd, -1)

    def snapshot(self) -> dict:
        with self._lock:
            return {
                "state": self._state.name,
                "state_code": int(self._state),
                "watchdog_trips": self.watchdog_trips,
                "clamped_commands": self.clamped_commands,
                "refusals": dict(self.refusals),
                "last_command_seq": self._targets_seq,
                "commander": self._commander.peer if self._commander is not None else None,
            }


__all__ = ["SafetyState", "SafetyConfig", "SafetySupervisor", "SafetyEvent", "ClientSession", "CONTROL_ACTIONS"]
