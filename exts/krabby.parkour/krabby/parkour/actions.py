"""Policy action -> joint position targets, as the training action term did (spec §3).

Upstream ``DelayedJointPositionAction``, per control step, with a = the raw policy output
(policy / Isaac Lab joint order):

1. push a into the action history (zeros after a reset);
2. pick the entry ``delay_steps`` back (teacher 0 = the current a, student 1 = the previous
   step's a: the target applied during step t comes from the action of step t - 1);
3. clamp to +-action_clip (4.8);
4. target = default_pos + action_scale (0.25) * clamped, then to robot order for the wire.

The observation's "last action" term is the raw a of the latest call: unclipped and undelayed
(``last_raw_action``). Scale, clip, default pose and both joint orders come from the profile.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from krabby.hal.robot_profile import RobotProfile
from krabby.hal.types import all_finite

DELAY_STEPS_BY_KIND: dict[str, int] = {"teacher": 0, "student": 1}
"""Training's action delay: teacher use_delay False; student use_delay True with delay 1 (spec §3)."""


class ActionMapper:
    """Stateful action post-processing for one robot; one ``step()`` per control step."""

    def __init__(self, profile: RobotProfile, *, delay_steps: int):
        if not isinstance(delay_steps, (int, np.integer)) or isinstance(delay_steps, bool) or delay_steps < 0:
            raise ValueError(f"delay_steps must be a non-negative int, got {delay_steps!r}")
        self.profile = profile
        self.delay_steps = int(delay_steps)
        self._num_joints = profile.num_joints
        self._robot_from_policy = profile.robot_from_policy
        self._default_pos_policy_rad = profile.to_policy_order(profile.default_pos_rad).astype(np.float64)
        self._scale = float(profile.action_scale)
        self._clip_hi = np.full(self._num_joints, float(profile.action_clip))
        self._clip_lo = -self._clip_hi
        self._target_policy_rad = np.empty(self._num_joints)  # scratch: step() returns a reordered copy
        self._applied: Optional[np.ndarray] = None
        self.reset()

    @classmethod
    def for_kind(cls, profile: RobotProfile, kind: str) -> "ActionMapper":
        """The training delay for a policy kind: "teacher" (0) or "student" (1)."""
        if kind not in DELAY_STEPS_BY_KIND:
            raise ValueError(f"kind must be one of {tuple(DELAY_STEPS_BY_KIND)}, got {kind!r}")
        return cls(profile, delay_steps=DELAY_STEPS_BY_KIND[kind])

    def reset(self) -> None:
        """New episode: action history and last raw action become zeros (as the training reset)."""
        zeros = np.zeros(self._num_joints, dtype=np.float64)
        zeros.flags.writeable = False
        self._recent = [zeros] * (self.delay_steps + 1)  # oldest first; each entry read-only, never written
        self._applied = None

    @property
    def last_raw_action(self) -> np.ndarray:
        """Raw policy output of the latest ``step`` (policy order, unclipped, undelayed, float64, read-only);
        zeros after reset.

        This is what the next observation's last-action term must hold.
        """
        return self._recent[-1]

    @property
    def applied_action_policy(self) -> Optional[np.ndarray]:
        """The delayed, clipped action behind the latest targets (policy order); None before a step."""
        return None if self._applied is None else self._applied.copy()

    def step(self, raw_action_policy: np.ndarray) -> np.ndarray:
        """Push one raw policy action (policy order) and return joint position targets in rad, ROBOT order.

        Raises ValueError for a wrong shape or non-finite entries (a NaN must never become a target).
        """
        a = np.array(raw_action_policy, dtype=np.float64)  # a copy: the history must not alias the caller's array
        if a.shape == (1, self._num_joints):  # a batch of one, as the networks return it
            a = a[0]
        if a.shape != (self._num_joints,):
            raise ValueError(f"policy action must have shape ({self._num_joints},), got {np.shape(raw_action_policy)}")
        if not all_finite(a):
            raise ValueError(f"policy action has non-finite entries at {np.flatnonzero(~np.isfinite(a)).tolist()}")
        a.flags.writeable = False
        recent = self._recent
        recent.append(a)
        del recent[0]
        delayed = recent[0]  # delay_steps back: the current a when there is no delay
        # = np.clip on finite values, without its wrapper's cost
        clipped = np.maximum(np.minimum(delayed, self._clip_hi), self._clip_lo)
        self._applied = clipped
        np.multiply(clipped, self._scale, out=self._target_policy_rad)
        np.add(self._target_policy_rad, self._default_pos_policy_rad, out=self._target_policy_rad)
        return self._target_policy_rad.take(self._robot_from_policy)
