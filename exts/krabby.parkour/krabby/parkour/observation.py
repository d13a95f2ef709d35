"""Telemetry -> the 753-float parkour observation, built exactly as in training (spec §0-§2, §9, §10).

``ObservationBuilder`` turns one control step of HAL telemetry (robot order, SI units) plus the
previous raw policy action into the observation the policy was trained on. Slice names and
constants come from ``obs_layout``; every robot fact (joint and foot orders, default pose,
contact threshold, camera) comes from the ``RobotProfile``. No ZeroMQ, no Isaac Lab.

Usage, one call per control step (the inference client's loop)::

    builder = ObservationBuilder(profile, kind="student")
    mapper = ActionMapper.for_kind(profile, "student")          # krabby.parkour.actions
    while running:
        obs = builder.build(state, nav, last_action_policy=mapper.last_raw_action,
                            height_scan=scan, depth=frame)       # (753,) float32
        if builder.is_refresh_step:                             # student: GRU step
            out = encoder(builder.depth_for_encoder, proprio_for_depth_encoder(obs))
        apply_predicted_yaw(obs, out_yaw_raw)                    # student only, every step
        targets_robot_rad = mapper.step(policy(obs))
        if episode_over: builder.reset(); mapper.reset()

Step-counter semantics (how training's counters map onto HAL-driven deployment)
------------------------------------------------------------------------------
Training computes the observation LAST in ``env.step``, after ``common_step_counter += 1`` and
``episode_length_buf += 1`` (spec §0); a reset inside ``env.step`` sets ``episode_length_buf``
to 0 before that observation is computed, and ``common_step_counter`` is global and never reset.
So, between any two consecutive observations the global counter advances by exactly one, and
the observation right after a reset has episode step 0. The builder reproduces that:

- ``global_step`` is the value of ``common_step_counter`` the last observation was computed at.
  The first ``build()`` after construction is at counter 0 (training's initial reset
  observation); every later ``build()`` is at the previous value + 1. ``reset()`` does NOT touch
  it, exactly like an in-step reset in training.
- ``episode_step`` is ``episode_length_buf`` of the last observation: 0 for the first build
  after construction or after ``reset()``, then 1, 2, ...
- ``is_refresh_step`` is ``global_step % 5 == 0``. On those steps delta_yaw/delta_next_yaw, the
  height scan and the depth buffer refresh; otherwise the held values are reused. It is also
  the test upstream play.py applies (``common_step_counter % 5`` checked before ``env.step``,
  i.e. at the counter of the observation just computed) to run the student's depth encoder.
- Training semantics for the very first observation: an all-zero history. Upstream play.py
  instead computes the observation three times at counter 0, so its first observation already
  holds 10 x p0 (spec §10); we deliberately follow training, not that play.py artefact.

What ``reset()`` clears, as training does (spec §1.4, §2, §10): the proprio history (zeros, so
episode step 0 sees an all-zero history, step 1 sees 10 x p0, step 2 10 x p1), the previous
foot-contact step (so contact at episode step 0 is the newest test alone) and marks the depth
buffer for refill: the next build fills both slots with the camera's newest frame (the one
passed to that build, else the last one received). Held delta yaws and the held height scan
are kept across a reset until the next multiple of 5, as in training. The action history is
the ``ActionMapper``'s and is reset separately.

Inputs that are slower than the control loop: the builder remembers the newest ``HeightScan``
and ``DepthFrame`` passed to any build (latest-only, like a sensor buffer) and reads them only
on refresh / refill steps, so a camera at 10 Hz need not be aligned to the counter. A sample is
treated as immutable, as the HAL delivers them: passing the same object again (the latest-only
buffer between two frames) is not checked or copied a second time; pass a new object for new data.

Terms without a real-world source (documented choices):

- priv_explicit (185:194): 2 * base_lin_vel_body_m_s then 6 zeros when the backend reports a
  finite body velocity (simulators), else all 9 zeros; the runtime's estimator overwrites the
  block when the chosen inference path uses one (IP play.py teacher, the student deploy export).
- priv_latent (194:223): zeros. It is read only by priv_encoder, which the history-encoder path
  (hist_encoding=True, used by every play/deploy path) never calls; GD also writes zeros.
- Student: the scan block is zeros unless a scan is given (the student actor uses the depth
  latent instead of scan_encoder); non-finite navigation yaws are written as 0, because the
  student replaces 6:8 with its own prediction (``apply_predicted_yaw``).

Arithmetic follows training's float32 for the elementwise terms (inputs cast to float32, then
scaled), so they match Isaac Lab's values bit for bit; roll/pitch are computed in float64 and
rounded (transcendental functions differ between CPU and GPU anyway).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Literal, Optional, Union

import numpy as np

from krabby.hal.robot_profile import RobotProfile
from krabby.hal.rotations import euler_xyz_from_quat_wxyz, wrap_to_pi  # noqa: F401 - part of this module's API
from krabby.hal.rotations import roll_pitch_of_unit_quat, unit_quat_wxyz, yaw_from_quat_wxyz
from krabby.hal.types import DepthFrame, HeightScan, NavigationCommand, RobotState
from krabby.parkour import obs_layout as L

log = logging.getLogger(__name__)

PolicyKind = Literal["teacher", "student"]
POLICY_KINDS: tuple[str, ...] = ("teacher", "student")

_F32 = np.float32
_SUM = np.add.reduce  # ndarray.sum without its Python wrapper (this runs every control step)


# ------------------------------------------------------------------------------- headings
def heading_errors_rad(
    base_quat_wxyz: np.ndarray, target_yaw_rad: float, next_target_yaw_rad: float
) -> tuple[float, float]:
    """(delta_yaw, delta_next_yaw) as training: target - wrap_to_pi(yaw), NOT re-wrapped.

    For backends that fill ``NavigationCommand`` from goal waypoints (target yaw = atan2 of the
    robot-to-goal vector, spec §1.1).
    """
    yaw = yaw_from_quat_wxyz(base_quat_wxyz)
    return target_yaw_rad - yaw, next_target_yaw_rad - yaw


# --------------------------------------------------------------------- student-side helpers
ArrayLike = Union[np.ndarray, "torch.Tensor"]  # noqa: F821 - torch only for type readers


def apply_predicted_yaw(obs: ArrayLike, yaw_raw: ArrayLike) -> ArrayLike:
    """Student, every step: obs[..., 6:8] <- 1.5 * yaw_raw (the depth encoder's tanh output
    out[32:34], held between encoder steps). In place; returns ``obs``. numpy or torch."""
    obs[..., L.DELTA_YAWS] = L.PREDICTED_YAW_SCALE * yaw_raw
    return obs


def proprio_for_depth_encoder(obs: np.ndarray) -> np.ndarray:
    """Copy of obs[..., 0:53] with the delta-yaw slots zeroed: the depth encoder's proprio input."""
    prop = np.array(obs[..., L.PROPRIO], dtype=np.float32, copy=True)
    prop[..., L.DELTA_YAWS] = 0.0
    return prop


# -------------------------------------------------------------------------------- the builder
@dataclass
class _LatestDepth:
    stamp_ns: int
    distance_m: np.ndarray


class ObservationBuilder:
    """Stateful builder of the training observation for one robot; one ``build()`` per control step.

    See the module docstring for the step-counter semantics and what ``reset()`` clears.
    """

    def __init__(self, profile: RobotProfile, *, kind: PolicyKind = "teacher"):
        if kind not in POLICY_KINDS:
            raise ValueError(f"kind must be one of {POLICY_KINDS}, got {kind!r}")
        if profile.num_joints != L.NUM_JOINTS:
            raise ValueError(f"{profile.name}: the parkour observation needs {L.NUM_JOINTS} joints, "
                             f"the profile has {profile.num_joints}")
        if profile.num_feet != L.NUM_FEET:
            raise ValueError(f"{profile.name}: the parkour observation needs {L.NUM_FEET} feet, "
                             f"the profile has {profile.num_feet}")
        if profile.height_scan.num_points != L.NUM_SCAN:
            raise ValueError(f"{profile.name}: height_scan grid has {profile.height_scan.num_points} points, "
                             f"the policy expects {L.NUM_SCAN}")
        self.profile = profile
        self.kind: PolicyKind = kind
        self._policy_from_robot = profile.policy_from_robot
        self._policy_feet_from_robot = profile.policy_feet_from_robot
        self._default_pos_policy_rad = profile.to_policy_order(profile.default_pos_rad).astype(_F32)
        self._contact_threshold_n = float(profile.contact_threshold_n)
        self._speed_range = profile.command_speed_range_m_s  # the trained command range, or None
        self._speed_warned: Optional[float] = None  # the last out-of-range speed warned about
        self._telemetry_layout(profile)
        self._depth = None
        if kind == "student":
            from krabby.parkour.depth import DepthPreprocessor

            self._depth = DepthPreprocessor(profile.camera)

        self._next_global_step = 0
        self._global_step = -1
        self._refresh = False
        self._latest_scan_m: Optional[np.ndarray] = None
        self._scan_seen: Optional[HeightScan] = None  # the HeightScan behind _latest_scan_m
        self._latest_depth: Optional[_LatestDepth] = None
        self._depth_seen: Optional[DepthFrame] = None  # the DepthFrame behind _latest_depth
        self._depth_buffer: Optional[np.ndarray] = None  # (DEPTH_BUFFER_LEN, 58, 87)
        self._depth_buffer_stamps_ns: list[int] = []
        self.reset()

    # ------------------------------------------------------------------ episode and counters
    def reset(self) -> None:
        """Start a new episode: the next build is episode step 0 (see module docstring)."""
        self._next_episode_step = 0
        self._episode_step = -1
        self._history.fill(0.0)
        self._prev_contact: Optional[list[bool]] = None
        self._depth_needs_fill = self.kind == "student"

    @property
    def global_step(self) -> int:
        """``common_step_counter`` of the last observation built (-1 before the first build)."""
        return self._global_step

    @property
    def episode_step(self) -> int:
        """``episode_length_buf`` of the last observation built (-1 right after reset, before a build)."""
        return self._episode_step

    @property
    def is_refresh_step(self) -> bool:
        """True when the last observation was built at a multiple of 5: held terms were refreshed and
        the student runs its depth encoder (GRU) on this step."""
        return self._refresh

    @property
    def depth_for_encoder(self) -> Optional[np.ndarray]:
        """Student: processed (58, 87) float32 image the depth encoder sees this step, = depth
        buffer[-2] (the previous refresh's frame, ~100 ms old). None for the teacher / before a build."""
        if self._depth_buffer is None:
            return None
        return self._depth_buffer[-2].copy()

    @property
    def depth_for_encoder_stamp_ns(self) -> Optional[int]:
        """Capture stamp of the frame behind ``depth_for_encoder`` (for latency monitoring)."""
        if not self._depth_buffer_stamps_ns:
            return None
        return self._depth_buffer_stamps_ns[-2]

    # ----------------------------------------------------------------------------- building
    def build(
        self,
        state: RobotState,
        navigation: NavigationCommand,
        *,
        last_action_policy: np.ndarray,
        height_scan: Optional[HeightScan] = None,
        depth: Optional[DepthFrame] = None,
    ) -> np.ndarray:
        """Advance one control step and return the (753,) float32 observation for it.

        ``last_action_policy`` is the raw policy output of the previous step, policy order
        (``ActionMapper.last_raw_action``; zeros after a reset). Raises ValueError on malformed or
        non-finite telemetry, and when a refresh needs a scan (teacher) or a depth frame (student)
        that has never been received.
        """
        counter = self._next_global_step
        refresh = counter % L.REFRESH_PERIOD_STEPS == 0
        episode_step = self._next_episode_step
        # Validate everything before touching any kept state, so a refused build changes nothing. The
        # telemetry part of the source vector is scratch, rewritten by every build.
        self._telemetry(state, last_action_policy)
        roll, pitch = roll_pitch_of_unit_quat(*unit_quat_wxyz(self._src_quat))
        speed = float(navigation.forward_speed_m_s)
        if not math.isfinite(speed):
            raise ValueError(f"NavigationCommand.forward_speed_m_s must be finite, got {speed}")
        if self._speed_range is not None and not self._speed_range[0] <= speed <= self._speed_range[1]:
            speed = self._out_of_range_speed(speed)
        delta_yaws = self._delta_yaws(navigation) if refresh else None
        if height_scan is not None and height_scan is not self._scan_seen:
            self._latest_scan_m = self._receive_scan(height_scan)
            self._scan_seen = height_scan  # telemetry samples are immutable: the same object needs no second check
        if depth is not None and self._depth is not None and depth is not self._depth_seen:
            self._latest_depth = self._receive_depth(depth)  # a camera at 10 Hz: 4 of 5 steps pass the same frame
            self._depth_seen = depth

        held_scan = self._scan() if refresh else None
        needs_depth = self._depth is not None and (refresh or self._depth_needs_fill)
        if needs_depth and self._latest_depth is None:
            raise ValueError("the student observation needs a DepthFrame (refresh or post-reset refill); none received yet")

        # ---- held terms (refreshed on multiples of 5 of the global counter) stay in the source vector
        if refresh:
            self._src_delta_yaws[...] = delta_yaws
            self._src_scan[...] = held_scan
        if needs_depth:
            self._update_depth_buffer(refresh)

        # ---- head = proprio, scan, priv_explicit (0:194): every term from the one source vector by one
        # precomputed gather, then (x - offset) * scale in float32 as training (cast, then scale)
        flat = bool(navigation.terrain_is_flat)
        self._src_step[...] = (roll, pitch, speed, flat, not flat, *self._contacts(self._src_feet.tolist()))
        head = self._head
        self._src.take(self._head_src, out=head)  # rounds to float32 on the way
        np.subtract(head, self._head_offset, out=head)
        np.multiply(head, self._head_scale, out=head)
        # clip(-100, 100), as training clips the whole vector: history entries are stored clipped (clip
        # commutes with storing) and priv_latent is 0, so the head is all that needs it; minimum/maximum
        # with bound vectors equal np.clip on finite values (all are) without its wrapper's cost
        np.minimum(head, self._head_clip_hi, out=head)
        np.maximum(head, self._head_clip_lo, out=head)
        # obs[PRIV_LATENT] stays zero: unused by the history-encoder path (module docstring); the
        # history is as it was BEFORE this step (spec §1.4)
        obs = self._obs.copy()

        # ---- then update the history in place: fill at episode steps 0 and 1, shift afterwards. The
        # delta-yaw slots are never written (copyto's mask), so they stay the zeros training stores there
        if episode_step <= 1:
            np.copyto(self._history, self._head_proprio, where=self._history_mask)
        else:
            self._history_older[...] = self._history_newer
            np.copyto(self._history_last, self._head_proprio, where=self._history_mask)

        self._global_step = counter
        self._episode_step = episode_step
        self._refresh = refresh
        self._next_global_step = counter + 1
        self._next_episode_step = episode_step + 1
        return obs

    # ------------------------------------------------------------------------------- terms
    def _delta_yaws(self, navigation: NavigationCommand) -> np.ndarray:
        yaws = np.array([navigation.delta_yaw_rad, navigation.delta_next_yaw_rad], dtype=np.float64)
        if not np.all(np.isfinite(yaws)):
            if self.kind == "teacher":
                raise ValueError(f"teacher needs finite NavigationCommand delta yaws, got {yaws.tolist()}")
            yaws = np.zeros(2)  # the student overwrites 6:8 with its own prediction
        return yaws.astype(_F32)

    def _out_of_range_speed(self, speed: float) -> float:
        """Warn (once per commanded value) about a speed outside the trained range; clamp if the profile says so."""
        lo, hi = self._speed_range  # type: ignore[misc]
        clamp = self.profile.clamp_command_speed
        if self._speed_warned != speed:
            self._speed_warned = speed
            log.warning("forward speed command %.3g m/s is outside the trained range [%.3g, %.3g] m/s: the policy is out of "
                        "distribution%s", speed, lo, hi, f"; clamped to {min(max(speed, lo), hi):.3g}" if clamp else "")
        return min(max(speed, lo), hi) if clamp else speed

    def _scan(self) -> np.ndarray:
        """clip(h - 0.3, -1, 1) of the newest scan; a miss (-inf) gives -1 (spec §1.2)."""
        if self._latest_scan_m is None:
            if self.kind == "teacher":
                raise ValueError("the teacher observation needs a HeightScan on refresh steps; none received yet")
            return np.zeros(L.NUM_SCAN, dtype=_F32)
        h = self._latest_scan_m.astype(_F32)
        return np.clip(h - _F32(L.SCAN_HEIGHT_OFFSET_M), -_F32(L.SCAN_CLIP), _F32(L.SCAN_CLIP))

    def _contacts(self, force_robot_n: list[float]) -> list[bool]:
        """|F| > threshold now OR at the previous control step, feet FL, FR, RL, RR (policy order); the
        gather's offset and scale make CONTACT_OFF / CONTACT_ON of it. Four Python floats cost less
        than four numpy calls."""
        threshold = self._contact_threshold_n
        now = [force_robot_n[i] > threshold for i in self._policy_feet_order]
        prev, self._prev_contact = self._prev_contact, now
        return now if prev is None else [a or b for a, b in zip(now, prev)]

    def _receive_scan(self, height_scan: HeightScan) -> np.ndarray:
        h = np.asarray(height_scan.base_height_above_hit_m, dtype=np.float64)
        if np.isnan(h).any():  # a NaN ray is a miss, as in training: -inf, so the scan term reads -1
            h = np.where(np.isnan(h), -np.inf, h)
        return self._vector(h, L.NUM_SCAN, "HeightScan.base_height_above_hit_m", allow_neg_inf=True)

    # ------------------------------------------------------------------------------- depth
    def _receive_depth(self, frame: DepthFrame) -> _LatestDepth:
        img = np.asarray(frame.distance_m)
        expected = (self.profile.camera.height_px, self.profile.camera.width_px)
        if img.shape != expected:
            raise ValueError(f"DepthFrame.distance_m is {img.shape}, the profile camera is {expected} (H, W)")
        return _LatestDepth(int(frame.stamp_ns), np.array(img, dtype=np.float32, copy=True))

    def _update_depth_buffer(self, refresh: bool) -> None:
        """Refill after reset; shift in the newest frame on refresh steps (spec §2 'Buffer and latency')."""
        assert self._depth is not None and self._latest_depth is not None
        processed = self._depth(self._latest_depth.distance_m)
        stamp = self._latest_depth.stamp_ns
        if self._depth_needs_fill or self._depth_buffer is None:
            self._depth_buffer = np.repeat(processed[None], L.DEPTH_BUFFER_LEN, axis=0)
            self._depth_buffer_stamps_ns = [stamp] * L.DEPTH_BUFFER_LEN
            self._depth_needs_fill = False
        if refresh:
            self._depth_buffer = np.concatenate([self._depth_buffer[1:], processed[None]], axis=0)
            self._depth_buffer_stamps_ns = self._depth_buffer_stamps_ns[1:] + [stamp]

    # -------------------------------------------------------------------------- validation
    def _telemetry_layout(self, profile: RobotProfile) -> None:
        """The source vector and precomputed gather, so ``build`` costs a dozen numpy calls, not dozens.

        One float64 source vector holds every input of the head: the state's vectors (q, qd, quat, gyro,
        foot forces), the last action and the body velocity (written and checked with one reduction each
        build), then roll, pitch, speed, the flags and the contacts (one write each build), a constant
        zero, and the held delta yaws and scan (written on refresh steps). One gather with per-slot offset
        and scale (policy order) makes the proprio, scan and priv_explicit blocks of the head, in place
        in a persistent observation whose history block is updated in place too; build returns a copy.
        """
        nj, nf = profile.num_joints, profile.num_feet
        self._fields = (("joint_pos_rad", nj), ("joint_vel_rad_s", nj), ("base_quat_wxyz", 4),
                        ("base_ang_vel_body_rad_s", 3), ("foot_force_n", nf))
        start = np.cumsum([0] + [n for _, n in self._fields])
        q0, qd0, quat0, gyro0, feet0 = (int(v) for v in start[:-1])
        self._policy_feet_order = tuple(int(i) for i in self._policy_feet_from_robot)
        # state fields, then last action (nj), then body velocity (3): the shapes build() expects
        self._shapes = tuple((n,) for _, n in self._fields) + ((nj,), (3,))
        self._history_mask = np.ones(L.NUM_PROPRIO, dtype=bool)
        self._history_mask[L.DELTA_YAWS] = False  # training stores the history with the delta yaws zeroed

        # the source vector, in this order, and where each head slot reads it
        last0 = int(start[-1])
        vel0 = last0 + nj
        telemetry_end = vel0 + 3
        roll_i, pitch_i, speed_i, flat_i, not_flat_i = range(telemetry_end, telemetry_end + 5)
        contact0 = not_flat_i + 1
        zero_i = contact0 + nf
        yaw0 = zero_i + 1
        scan0 = yaw0 + 2
        self._src = np.zeros(scan0 + L.NUM_SCAN, dtype=np.float64)
        self._src_telemetry = self._src[:telemetry_end]
        self._velocity = slice(vel0, telemetry_end)
        self._src_quat = self._src[quat0:quat0 + 4]
        self._src_feet = self._src[feet0:feet0 + nf]
        self._src_step = self._src[roll_i:zero_i]  # roll, pitch, speed, flat, not flat, contacts
        self._src_delta_yaws = self._src[yaw0:yaw0 + 2]
        self._src_scan = self._src[scan0:]

        head = L.PRIV_EXPLICIT.stop
        src = np.full(head, -1, dtype=np.int64)
        offset = np.zeros(head, dtype=_F32)
        scale = np.ones(head, dtype=_F32)

        def put(sl: slice, source, k: float = 1.0, off=0.0) -> None:
            src[sl] = source
            scale[sl] = k
            offset[sl] = off

        # a contact enters the source as 0 or 1: (c - off) * k gives CONTACT_OFF and CONTACT_ON exactly
        contact_k = _F32(L.CONTACT_ON) - _F32(L.CONTACT_OFF)
        contact_off = -_F32(L.CONTACT_OFF) / contact_k
        assert ((_F32(0) - contact_off) * contact_k, (_F32(1) - contact_off) * contact_k) == (L.CONTACT_OFF, L.CONTACT_ON)
        put(L.BASE_ANG_VEL, np.arange(gyro0, gyro0 + 3), L.ANG_VEL_SCALE)
        put(L.ROLL, roll_i)
        put(L.PITCH, pitch_i)
        put(L.DELTA_YAWS, np.arange(yaw0, yaw0 + 2))
        put(L.COMMAND_VX, speed_i)
        put(L.ENV_NOT_FLAT, not_flat_i)
        put(L.ENV_FLAT, flat_i)
        put(L.JOINT_POS, q0 + self._policy_from_robot, L.JOINT_POS_SCALE, self._default_pos_policy_rad)
        put(L.JOINT_VEL, qd0 + self._policy_from_robot, L.JOINT_VEL_SCALE)
        put(L.LAST_ACTION, np.arange(last0, last0 + nj))
        put(L.FOOT_CONTACT, np.arange(contact0, contact0 + nf), contact_k, contact_off)
        put(L.SCAN, np.arange(scan0, scan0 + L.NUM_SCAN))
        put(L.PRIV_BASE_LIN_VEL, np.arange(vel0, vel0 + 3), L.BASE_LIN_VEL_SCALE)
        src[src < 0] = zero_i  # the constant-zero slots (5, 8:10, the rest of priv_explicit)
        # (x - 0) * 1 is x exactly, so the terms without offset or scale pass through unchanged
        self._head_src, self._head_offset, self._head_scale = src, offset, scale
        self._head_clip_hi = np.full(head, L.OBS_CLIP, dtype=_F32)
        self._head_clip_lo = -self._head_clip_hi

        # the observation build() returns copies of: head, priv_latent (zeros), history (oldest first)
        self._obs = np.zeros(L.OBS_DIM, dtype=_F32)
        self._head, self._head_proprio = self._obs[:head], self._obs[L.PROPRIO]
        self._history = self._obs[L.HISTORY].reshape(L.HISTORY_LENGTH, L.NUM_PROPRIO)
        h = self._history  # views made once: build() shifts and appends through them
        self._history_older, self._history_newer, self._history_last = h[:-1], h[1:], h[-1]

    def _telemetry(self, state: RobotState, last_action_policy: np.ndarray) -> None:
        """Write the state's vectors, the last action and the body velocity into the source vector
        (float64); ValueError naming the field when one is malformed. A body velocity that is not three
        finite numbers (NaN: "unknown") becomes zeros, priv_explicit's documented fallback."""
        parts = (state.joint_pos_rad, state.joint_vel_rad_s, state.base_quat_wxyz, state.base_ang_vel_body_rad_s,
                 state.foot_force_n, last_action_policy, state.base_lin_vel_body_m_s)  # the order of self._shapes
        buf = self._src_telemetry
        try:  # fast path, every control step: ndarrays of the right shapes, all finite (one reduction)
            if (parts[0].shape, parts[1].shape, parts[2].shape, parts[3].shape, parts[4].shape, parts[5].shape,
                    parts[6].shape) == self._shapes:
                np.concatenate(parts, out=buf)
                if math.isfinite(buf.dot(buf)):  # x.x: finite only if every entry is (no NaN of inf - inf)
                    return
                head = buf[:self._velocity.start]
                if math.isfinite(head.dot(head)):  # a robot: velocity unknown (NaN)
                    buf[self._velocity] = 0.0
                    return
        except (AttributeError, TypeError, ValueError):
            pass
        # slow path: the precise message, in field order; an unknown velocity becomes zeros
        for p, (name, n) in zip(parts, self._fields):
            self._vector(p, n, f"RobotState.{name}")
        self._vector(last_action_policy, L.NUM_JOINTS, "last_action_policy")
        try:
            v = np.asarray(parts[6], dtype=np.float64)
        except (TypeError, ValueError):
            v = np.zeros(3)
        if v.shape != (3,) or not np.all(np.isfinite(v)):
            v = np.zeros(3)
        np.concatenate(parts[:6] + (v,), out=buf)  # finite values (a sum may have overflowed)

    @staticmethod
    def _vector(value: np.ndarray, n: int, what: str, *, allow_neg_inf: bool = False) -> np.ndarray:
        a = np.asarray(value, dtype=np.float64)
        if a.shape != (n,):
            raise ValueError(f"{what} must have shape ({n},), got {a.shape}")
        # fast path first (this runs for every vector of every control step): one reduction, no temporaries kept
        total = float(_SUM(a))
        if math.isfinite(total) or (allow_neg_inf and total == -math.inf):  # -inf sum: -inf entries, no nan or +inf
            return a
        bad = np.isnan(a) | (a == np.inf) if allow_neg_inf else ~np.isfinite(a)
        if not bad.any():  # finite values whose sum overflowed
            return a
        raise ValueError(f"{what} has non-finite entries at {np.flatnonzero(bad).tolist()}")
