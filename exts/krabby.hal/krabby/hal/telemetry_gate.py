"""What a client accepts from telemetry, per server session: sequence, stamp and value checks.

The client hands telemetry to a policy that moves a robot, so a sample must be plausible before it is
"the newest". Three rules, each refusal counted in the client's ``stats`` under ``refused_<why>``:

- **seq**, per kind and per session: newer than the last accepted one, and at most ``MAX_SEQ_JUMP``
  ahead of it (a seq of 2**63 is refused, audit D3). The ``RESYNC_AFTER``-th out-of-line sample in a
  row is accepted anyway and the gate continues from it (``seq_resyncs``): one bad sample, or a
  legitimate jump, can never hide every later sample.
- **stamp**: not more than ``MAX_FUTURE_S`` ahead of, nor ``MAX_PAST_S`` behind, the server's clock as
  this client knows it (the local clock for inproc/ipc; local clock + the offset measured at the
  handshake for tcp).
- **value**: STATE fields finite (``base_lin_vel_body_m_s`` may be all NaN: "unknown"), the base
  quaternion of unit norm within ``QUAT_NORM_TOL``; NAVIGATION finite; DEPTH and HEIGHT_SCAN of the
  shape the WELCOME announced.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import numpy as np

from .protocol import Kind
from .types import DepthFrame, HeightScan, NavigationCommand, RobotState, all_finite

MAX_SEQ_JUMP = 1 << 20  # ticks: 5.8 h at 50 Hz; a larger forward jump is not a sample of this session
RESYNC_AFTER = 3  # the 3rd out-of-line sample of a kind in a row is accepted: the gate follows the stream again
MAX_FUTURE_S = 0.05  # telemetry stamped further ahead of the server clock than this is refused
MAX_PAST_S = 10.0  # ... or further behind it (a stale sample is merely old; this one is implausible)
QUAT_NORM_TOL = 1e-3  # float32 unit quaternions are within ~1e-7 of 1


class TelemetryGate:
    """Judges each telemetry sample of one session; ``reset()`` at a new session."""

    def __init__(self, stats: Counter):
        self.stats = stats
        self._last_seq: dict[Kind, int] = {}
        self._refused_in_row: Counter = Counter()

    def reset(self) -> None:
        self._last_seq.clear()
        self._refused_in_row.clear()

    def _refuse(self, kind: Kind, why: str) -> str:
        self.stats[f"refused_{why}"] += 1
        self._refused_in_row[kind] += 1
        return why

    def judge(self, kind: Kind, seq: int, stamp_ns: int, server_now_ns: int, value: Any, expected_shape: Any = None) -> str | None:
        """None if the sample is accepted (it becomes the newest of its kind), else why not."""
        why = stamp_problem(stamp_ns, server_now_ns) or value_problem(kind, value, expected_shape)
        if why is not None:
            return self._refuse(kind, why)
        last = self._last_seq.get(kind)
        if last is not None and not 0 < seq - last <= MAX_SEQ_JUMP:
            if self._refused_in_row[kind] + 1 < RESYNC_AFTER:
                return self._refuse(kind, "old_seq" if seq <= last else "seq_jump")
            self.stats["seq_resyncs"] += 1
        self._last_seq[kind] = seq
        self._refused_in_row[kind] = 0
        return None


def stamp_problem(stamp_ns: int, server_now_ns: int) -> str | None:
    ahead_s = (stamp_ns - server_now_ns) * 1e-9
    if ahead_s > MAX_FUTURE_S:
        return "future_stamp"
    if ahead_s < -MAX_PAST_S:
        return "past_stamp"
    return None


_STATE_FIELDS = ("joint_pos_rad", "joint_vel_rad_s", "joint_torque_nm", "base_quat_wxyz", "base_ang_vel_body_rad_s",
                 "base_lin_acc_body_m_s2", "foot_force_n")  # all must be finite; base_lin_vel_body_m_s may be NaN


def value_problem(kind: Kind, value: Any, expected_shape: Any = None) -> str | None:
    if kind == Kind.STATE:
        assert isinstance(value, RobotState)
        return _state_problem(value)
    if kind == Kind.NAVIGATION:
        assert isinstance(value, NavigationCommand)
        if not all(math.isfinite(v) for v in (value.forward_speed_m_s, value.delta_yaw_rad, value.delta_next_yaw_rad)):
            return "non_finite"
    elif kind == Kind.DEPTH and expected_shape is not None:
        assert isinstance(value, DepthFrame)
        if tuple(value.distance_m.shape) != tuple(expected_shape):
            return "shape"
    elif kind == Kind.HEIGHT_SCAN and expected_shape is not None:
        assert isinstance(value, HeightScan)
        if value.base_height_above_hit_m.shape != (int(expected_shape),):
            return "shape"
    return None


def _state_problem(state: RobotState) -> str | None:
    """One finiteness check over all the fields that must be finite, one over the velocity (one call
    each in the common case), instead of one per field."""
    if not all_finite(np.concatenate([getattr(state, name) for name in _STATE_FIELDS], dtype=np.float64)):
        return "non_finite"
    vel = np.asarray(state.base_lin_vel_body_m_s, dtype=np.float64)
    if not (all_finite(vel) or np.all(np.isnan(vel))):
        return "non_finite"
    if abs(math.hypot(*state.base_quat_wxyz.tolist()) - 1.0) > QUAT_NORM_TOL:
        return "quaternion"
    return None
