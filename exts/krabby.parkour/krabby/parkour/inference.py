"""ParkourInferenceClient: poll the HAL -> build the training observation -> infer -> map -> command.

One thread, one control step per new STATE from the HAL: the server's control tick sets the pace
(the client warns when that pace differs from ``control_rate``). It never sends a command built
from telemetry older than ``max_obs_age_s`` or from another server session. An episode reset (the
simulator's ``episode`` counter, carried in every telemetry header) resets the observation history, the
action history and the policy's recurrent state on exactly the first state of the new episode, as training did.

The student runs its depth encoder on refresh steps (every 5 control steps, spec §2) and holds the
latent and the predicted yaw in between; the yaw (x1.5) replaces obs[6:8] every step.
"""

from __future__ import annotations

import json
import logging
import math
import re
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import zmq

from krabby.hal import clock
from krabby.hal.client import HalClient, HalClientConfig
from krabby.hal.protocol import Kind, Reason
from krabby.hal.types import NavigationCommand

from . import obs_layout as L
from .actions import ActionMapper
from .observation import ObservationBuilder
from .policy_step import PolicyStep

log = logging.getLogger("krabby.parkour.inference")


@dataclass
class ModelWeights:
    """Which policy to run. ``use_estimator``: None = the upstream play/deploy choice (see ``estimator_choice``)."""

    checkpoint_path: str
    action_dim: int = L.NUM_JOINTS
    obs_dim: int = L.OBS_DIM
    backend: str = "torch"  # or "onnx"
    use_estimator: bool | None = None


@dataclass
class InferenceOptions:
    max_obs_age_s: float = 0.05  # never act on a state older than this (2.5 control periods at 50 Hz)
    max_depth_age_s: float | None = None  # student: a depth frame older than this (capture time) fails the step
    lockstep: bool = False  # the server waits for each command (a --fast simulator): rate checks off
    default_forward_speed_m_s: float = 0.5  # used when the HAL publishes no navigation command
    record_path: str | None = None  # MCAP run log (krabby.parkour.record)
    live_view: Any = None  # a foxglove_log.LiveViewConfig: stream the log's channels to Foxglove live
    link_poses_from_joints: bool = True  # Foxglove /tf + robot scene by forward kinematics; off where a simulator logs the truth
    num_threads: int | None = 1  # torch/onnxruntime intra-op threads: 1 keeps latency steady


def trained_control_rate_hz(checkpoint_path: str | Path) -> float | None:
    """The policy's control rate from the run's ``params/env.yaml`` (sim.dt x decimation), if present.

    Isaac Lab writes env.yaml with Python-specific YAML tags, so the two scalars are read by pattern
    rather than with a YAML loader.
    """
    p = Path(checkpoint_path).resolve()
    for d in [p if p.is_dir() else p.parent, *p.parents][:3]:
        env = d / "params" / "env.yaml"
        if env.is_file():
            text = env.read_text(errors="replace")
            dec = re.search(r"^decimation:\s*([0-9]+)\s*$", text, re.M)
            dt = re.search(r"^sim:\s*$.*?^\s+dt:\s*([0-9.eE+-]+)\s*$", text, re.M | re.S)
            if dec and dt:
                return 1.0 / (float(dt.group(1)) * int(dec.group(1)))
    return None


def estimator_choice(policy: Any, base_lin_vel_known: bool) -> bool:
    """Upstream's inference paths (spec §4.4): teacher play.py runs the estimator when it has one;
    the student was trained on the true velocity (play.py) but deploys with the estimator where
    the velocity is unknown (exported_deploy)."""
    if policy.kind == "teacher":
        return bool(policy.has_estimator)
    return bool(policy.has_estimator) and not base_lin_vel_known


class _Stats:
    """Rolling percentiles of the last N samples (ms)."""

    def __init__(self, n: int = 2000):
        self.values: deque[float] = deque(maxlen=n)

    def add(self, v: float) -> None:
        self.values.append(v)

    def pct(self, q: float) -> float:
        return float(np.percentile(self.values, q)) if self.values else math.nan


@dataclass
class InferenceMetrics:
    steps: int = 0
    commands_accepted: int = 0
    commands_refused: dict[str, int] = field(default_factory=dict)
    stale_skipped: int = 0
    not_armed_skipped: int = 0  # steps computed while the HAL would refuse commands (not sent)
    errors: int = 0
    episodes: int = 0
    session_restarts: int = 0  # HAL server restarts seen (each resets the history like an episode)


class ParkourInferenceClient:
    """The seed's API: construct, ``initialize()``, ``start_thread(running_flag)``, ``stop()``."""

    def __init__(
        self,
        hal_client_config: HalClientConfig,
        model_weights: ModelWeights,
        control_rate: float | None = None,
        device: str = "cpu",
        transport_context: zmq.Context | None = None,
        options: InferenceOptions | None = None,
        policy: Any = None,
    ):
        self.hal_config = hal_client_config
        self.weights = model_weights
        self.device = device
        self.context = transport_context
        self.options = options or InferenceOptions()
        self.control_rate = control_rate
        self.hal: HalClient | None = None
        self.policy: Any = policy  # a ParkourPolicy already loaded from model_weights, or None to load it here
        self.builder: ObservationBuilder | None = None
        self.mapper: ActionMapper | None = None
        self.recorder: Any = None
        self.session: Any = None  # foxglove_log.FoxgloveSession: the run log file and/or the live view
        self.telemetry: Any = None
        self.kinematics: Any = None
        self._last_period_ms: float | None = None
        self.counters = InferenceMetrics()
        self.loop_period_ms = _Stats()
        self.compute_ms = _Stats()
        self.obs_age_ms = _Stats()
        self.ack_rtt_ms = _Stats()
        self.last_action: np.ndarray | None = None
        self.last_targets_rad: np.ndarray | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._policy_step: PolicyStep | None = None  # the student's held depth latent and yaw
        self._episode: tuple[int, int] | None = None  # (server session, episode) of the last step
        self._use_estimator: bool | None = model_weights.use_estimator
        self.on_step_result: Callable[[Exception | None], None] | None = None  # called after every control step

    # ------------------------------------------------------------------------------ lifecycle
    def initialize(self) -> None:
        """Load the policy, check its dims, handshake with the HAL and set up the builder/mapper."""
        from . import load_policy

        w = self.weights
        if self.policy is None:
            self.policy = load_policy(w.checkpoint_path, device=self.device, backend=w.backend,
                                      **({"num_threads": self.options.num_threads} if self.options.num_threads else {}))
        if self.policy.obs_dim != w.obs_dim or self.policy.action_dim != w.action_dim:
            raise ValueError(
                f"{w.checkpoint_path}: policy has obs_dim {self.policy.obs_dim}, action_dim {self.policy.action_dim}; "
                f"--obs-dim {w.obs_dim} --action-dim {w.action_dim} were requested"
            )
        trained = trained_control_rate_hz(w.checkpoint_path)
        if self.control_rate is None:
            self.control_rate = trained or 50.0
        elif trained is not None and abs(trained - self.control_rate) > 1e-6:
            log.warning("policy was trained at %.1f Hz (params/env.yaml) but runs at %.1f Hz: expect different behaviour",
                        trained, self.control_rate)
        self.hal = HalClient(self.hal_config, context=self.context)
        welcome = self.hal.connect()
        if welcome.profile.num_joints != w.action_dim:
            raise ValueError(f"robot {welcome.profile.name} has {welcome.profile.num_joints} joints, policy outputs {w.action_dim}")
        if abs(welcome.profile.control_rate_hz - self.control_rate) > 1e-6:
            log.warning("HAL server publishes at %.1f Hz, inference client runs at %.1f Hz", welcome.profile.control_rate_hz, self.control_rate)
        self.builder = ObservationBuilder(welcome.profile, kind=self.policy.kind)
        self._policy_step = PolicyStep(self.policy)
        self.mapper = ActionMapper.for_kind(welcome.profile, self.policy.kind)
        if self.options.record_path or self.options.live_view is not None:
            from .foxglove_log import FoxgloveSession, TelemetryChannels
            from .record import RunRecorder

            self.session = FoxgloveSession(self.options.record_path, self.options.live_view)
            self.telemetry = TelemetryChannels(self.session, welcome.profile)
            if self.options.link_poses_from_joints:
                try:
                    from .foxglove_world import JointKinematics

                    self.kinematics = JointKinematics(self.session, welcome.profile)
                except ImportError as e:  # MuJoCo is the sim extra; the log works without the 3D robot
                    log.info("no 3D robot in the log (%s)", e)
            self.recorder = RunRecorder(session=self.session, metadata={
                "checkpoint": str(Path(w.checkpoint_path).resolve()), "kind": self.policy.kind, "backend": w.backend,
                "use_estimator": "auto" if w.use_estimator is None else str(w.use_estimator),
                "robot": welcome.profile.name, "control_rate_hz": self.control_rate,
                "welcome": json.dumps(welcome.info),
            })
            self.hal.on_frames = lambda d, frames, t: self.recorder.hal_frames(d, frames, t)
        log.info("inference client ready: %s policy from %s (%s), %.0f Hz", self.policy.kind, w.checkpoint_path, w.backend, self.control_rate)

    def start_thread(self, running_flag: threading.Event | None = None) -> threading.Thread:
        if self.hal is None:
            self.initialize()
        self._stop.clear()
        self._thread = threading.Thread(target=self.run, args=(running_flag,), name="krabby-inference", daemon=True)
        self._thread.start()
        return self._thread

    def stop(self) -> None:
        self._stop.set()
        if self.hal is not None:
            self.hal.interrupt()  # the loop may be waiting for a state: end that wait now
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5.0)
        self._thread = None
        if self.hal is not None:
            self.hal.close()
            self.hal = None
        if self.recorder is not None:
            self.recorder.close()
            self.recorder = None
        if self.session is not None:
            self.session.close()  # the run log is complete from here on
            self.telemetry = self.kinematics = None

    # ---------------------------------------------------------------------------------- loop
    def run(self, running_flag: threading.Event | None = None) -> None:
        """The control loop; returns when ``running_flag`` is cleared or ``stop()`` is called."""
        assert self.hal is not None and self.builder is not None
        period_ms = 1e3 / float(self.control_rate or 50.0)
        last_start = None
        rate_checked = False
        while not self._stop.is_set() and (running_flag is None or running_flag.is_set()):
            sample = self.hal.wait_new(Kind.STATE, timeout_s=0.1)
            if sample is None:
                continue
            # One control step per new STATE: the HAL server's tick sets the pace. Skipping states to
            # enforce our own rate would drop steps whenever a late server catches up.
            if not rate_checked and not self.options.lockstep and len(self.loop_period_ms.values) >= 100:
                rate_checked = True
                measured = self.loop_period_ms.pct(50)
                if not 0.67 * period_ms < measured < 1.5 * period_ms:
                    log.warning("the HAL publishes a state every %.1f ms but the policy runs at %.1f Hz: "
                                "check the server's control rate", measured, 1e3 / period_ms)
            start = time.perf_counter()
            if last_start is not None:
                self._last_period_ms = (start - last_start) * 1e3
                self.loop_period_ms.add(self._last_period_ms)
            last_start = start
            error: Exception | None = None
            try:
                self.step(sample)
            except Exception as e:  # a bad sample must not end the loop; the server's watchdog covers us
                error = e
                self.counters.errors += 1
                if self.counters.errors <= 5 or self.counters.errors % 100 == 0:
                    log.error("control step failed (%d so far): %s", self.counters.errors, e)
            if self.on_step_result is not None:  # e.g. the robot supervisor: failures in a row leave POLICY
                self.on_step_result(error)

    def step(self, sample: Any) -> Any:
        """One control step from one STATE sample; returns the ACK (or None when nothing was sent)."""
        hal, builder, mapper, policy = self.hal, self.builder, self.mapper, self.policy
        assert hal is not None and builder is not None and mapper is not None and self._policy_step is not None
        age_s = sample.age_s
        if age_s > self.options.max_obs_age_s:
            self.counters.stale_skipped += 1
            return None
        self._check_episode(sample)
        t0 = time.perf_counter()
        state = sample.value
        # only this state's session: right after a restart another session's samples must not mix in
        nav_s, scan_s, depth_s = (s if s is not None and s.session_id == sample.session_id else None
                                  for s in (hal.latest(Kind.NAVIGATION), hal.latest(Kind.HEIGHT_SCAN), hal.latest(Kind.DEPTH)))
        limit = self.options.max_depth_age_s
        if policy.kind == "student" and limit is not None and depth_s is not None:
            depth_age_s = (clock.now_ns() - depth_s.value.stamp_ns) * 1e-9  # a stalled camera: the HAL stops sending
            if depth_age_s > limit:
                raise RuntimeError(f"depth frame is {depth_age_s * 1e3:.0f} ms old (limit {limit * 1e3:.0f} ms): not used")
        nav = nav_s.value if nav_s is not None else NavigationCommand(sample.stamp_ns, self.options.default_forward_speed_m_s, 0.0, 0.0)
        obs = builder.build(state, nav, last_action_policy=mapper.last_raw_action,
                            height_scan=scan_s.value if scan_s is not None else None,
                            depth=depth_s.value if depth_s is not None else None)
        if self._use_estimator is None:
            self._use_estimator = estimator_choice(policy, bool(np.all(np.isfinite(state.base_lin_vel_body_m_s))))
            log.info("estimator: %s", "on" if self._use_estimator else "off (true base velocity from the backend)")
        action = self._policy_step.from_builder(builder, obs, use_estimator=self._use_estimator)
        targets = mapper.step(action)
        compute_ms = (time.perf_counter() - t0) * 1e3
        if sample.age_s > self.options.max_obs_age_s:  # got stale while we computed: do not send
            self.counters.stale_skipped += 1
            return None
        if not self._server_accepts_commands():  # computed (history stays in step), but not sent
            self.counters.not_armed_skipped += 1
            self.last_action, self.last_targets_rad = np.asarray(action), targets
            self._publish(sample, targets, nav_s, scan_s, depth_s, compute_ms)
            return None
        ack = hal.send_command(targets, sample)
        self.counters.steps += 1
        self.compute_ms.add(compute_ms)
        self.obs_age_ms.add(age_s * 1e3)
        self.last_action, self.last_targets_rad = np.asarray(action), targets
        if ack.accepted:
            self.counters.commands_accepted += 1
            self.ack_rtt_ms.add(ack.rtt_s * 1e3)
        else:
            self.counters.commands_refused[ack.reason.name] = self.counters.commands_refused.get(ack.reason.name, 0) + 1
            if ack.reason not in (Reason.TIMEOUT,) and sum(self.counters.commands_refused.values()) <= 5:
                log.warning("command refused: %s", ack.reason.name)
        if self.recorder is not None:
            self.recorder.step({
                "global_step": builder.global_step, "episode_step": builder.episode_step,
                "inputs": {k.name: [s.session_id, s.seq] for k, s in
                           ((Kind.STATE, sample), (Kind.NAVIGATION, nav_s), (Kind.HEIGHT_SCAN, scan_s), (Kind.DEPTH, depth_s))
                           if s is not None},
                "use_estimator": self._use_estimator,
                "action": np.asarray(action, dtype=np.float32).tolist(),
                "targets_rad": np.asarray(targets, dtype=np.float32).tolist(),
                "ack": ack.reason.name, "compute_ms": compute_ms,
            }, clock.now_ns())
        self._publish(sample, targets, nav_s, scan_s, depth_s, compute_ms)
        return ack

    def _publish(self, sample: Any, targets: Any, nav_s: Any, scan_s: Any, depth_s: Any, compute_ms: float) -> None:
        """The step's telemetry on the Foxglove channels (after the command is out, so it never delays it)."""
        if self.telemetry is not None and self.hal is not None:
            log_ns = self.session.now_ns()
            self.telemetry.control_step(log_ns, sample, targets, nav_s, scan_s, depth_s, self.hal.latest(Kind.STATUS),
                                        compute_ms, sample.age_s * 1e3, self._last_period_ms)
            if self.kinematics is not None:
                self.kinematics.update(sample.value, log_ns)

    def _server_accepts_commands(self) -> bool:
        """False while the HAL's STATUS says it would refuse any command (DISARMED, HOLD, DAMP, ESTOP)."""
        status = self.hal.latest(Kind.STATUS) if self.hal else None
        state = status.value.get("safety", {}).get("state") if status is not None else None
        return state is None or state in ("ARMED", "ACTIVE")

    def _check_episode(self, sample: Any) -> None:
        """Reset on the first state of a new episode (every telemetry header carries it, protocol v2) or of a
        new server session: after a server restart nothing observed before it may shape an action."""
        episode = (sample.session_id, sample.episode)
        if episode == self._episode:
            return
        if self._episode is not None:
            if episode[0] != self._episode[0]:
                self.counters.session_restarts += 1
                log.warning("HAL server session changed (%08x -> %08x): history reset, resuming from its telemetry",
                            self._episode[0], episode[0])
            self.reset_episode()
        self._episode = episode

    def reset_episode(self) -> None:
        """New episode: zero history, action history and recurrent state, as a training reset does."""
        assert self.builder is not None and self.mapper is not None and self._policy_step is not None
        self.builder.reset()
        self.mapper.reset()
        self._policy_step.reset()
        self.counters.episodes += 1
        if self.recorder is not None:
            self.recorder.step({"reset": True}, clock.now_ns())

    # ------------------------------------------------------------------------------- metrics
    def metrics(self) -> dict[str, Any]:
        period = self.loop_period_ms.pct(50)
        return {
            "steps": self.counters.steps,
            "loop_rate_hz": 1e3 / period if period and not math.isnan(period) else math.nan,
            "loop_period_ms_p50": period,
            "loop_period_ms_p99": self.loop_period_ms.pct(99),
            "compute_ms_p50": self.compute_ms.pct(50),
            "compute_ms_p99": self.compute_ms.pct(99),
            "obs_age_ms_p50": self.obs_age_ms.pct(50),
            "obs_age_ms_p99": self.obs_age_ms.pct(99),
            "ack_rtt_ms_p50": self.ack_rtt_ms.pct(50),
            "commands_accepted": self.counters.commands_accepted,
            "commands_refused": dict(self.counters.commands_refused),
            "stale_skipped": self.counters.stale_skipped,
            "not_armed_skipped": self.counters.not_armed_skipped,
            "errors": self.counters.errors,
            "episodes": self.counters.episodes,
            "session_restarts": self.counters.session_restarts,
            "last_action": None if self.last_action is None else self.last_action.tolist(),
        }
