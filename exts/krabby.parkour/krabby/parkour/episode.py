"""One sim-to-sim episode: MuJoCo backend, HAL server and inference client in one process.

Every MuJoCo run mode goes through ``run_episode``: ``krabby-hal-server-mujoco`` (one episode,
status line, run log, video, viewer, or ``--server-only`` for an outside client) and ``krabby-eval``
(many episodes under perturbations). The backend, the HAL server, the ZeroMQ transport, the
observation builder, the policy and the action mapper are the same code that runs in Isaac Sim and
on the robot. Each control step: the server publishes the observation, waits for the command
computed from it, hands the supervisor's output to the backend, and MuJoCo runs the physics steps of
one control period with the training PD.

``args`` is the namespace of ``krabby.parkour.sim2sim.build_parser`` (so a flag added there reaches
every run mode); ``args.checkpoint`` must be set unless ``args.server_only``. ``EpisodeHooks`` lets a
caller watch each step (video frames, viewer, evaluation metrics) without a second copy of the loop.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

log = logging.getLogger("krabby.sim2sim")

LOCKSTEP_TIME_LIMIT_S = 1.0


@dataclass
class StepInfo:
    """What the loop knows after one control step, for hooks."""

    sim_time_s: float
    frame: Any  # the SensorFrame the policy was given this step
    falls: int
    speed_m_s: float  # smoothed speed over ground
    safety_state: str
    server: Any
    progress: Callable[[], float] = field(repr=False, default=lambda: math.nan)

    @property
    def distance_m(self) -> float:
        """Along the course, respawns included (computed when asked: most steps of an evaluation never do)."""
        return self.progress()


class EpisodeHooks:
    """Called by ``run_episode``; the default does nothing. Subclass what you need."""

    def start(self, backend: Any, server: Any, client: Any) -> None:
        """After connect, before the first step."""

    def step(self, backend: Any, step: int, info: StepInfo) -> None:
        """After each control step (after a fall's respawn, when respawning)."""

    def end(self, backend: Any, summary: dict[str, Any]) -> None:
        """After the last step, before the backend is disconnected; may add to ``summary``."""


class SpeedMeter:
    """Base speed over ground from successive positions, smoothed over about half a second.

    A new episode (a respawn) moves the base without walking, so that step is not counted."""

    def __init__(self, period_s: float, smoothing_s: float = 0.5):
        self.period_s, self.alpha = period_s, min(1.0, period_s / smoothing_s)
        self.m_s = 0.0
        self._last = self._episode = None

    def update(self, pos_w_m: Any, episode: int) -> None:
        import numpy as np

        from krabby.hal.types import vector_norm

        pos = np.asarray(pos_w_m[:2], dtype=float)
        if self._last is not None and episode == self._episode:
            v = vector_norm(pos - self._last) / self.period_s
            self.m_s += self.alpha * (v - self.m_s)
        self._last, self._episode = pos, episode


def _ms(value: float | None) -> str:
    """A live-line number: '  -  ' until the first sample exists."""
    return "  -  " if value is None or math.isnan(value) else f"{value:5.2f}"


def _pct(values: list[float], q: float) -> float | None:
    import numpy as np

    return float(np.percentile(values, q)) if values else None


def policy_backend_kind(args: argparse.Namespace, checkpoint: Any) -> str:
    """``--backend``, else onnx for an ONNX export and torch for anything else."""
    from .policy_formats import default_backend

    return args.backend or default_backend(checkpoint)


def run_episode(args: argparse.Namespace, *, hooks: Optional[EpisodeHooks] = None, policy: Any = None,
                perturbation: Any = None, respawn_on_fall: bool = True, record_path: Optional[Path] = None,
                stop_requested: Optional[Callable[[], bool]] = None) -> dict[str, Any]:
    """Run ``args.duration`` simulated seconds and return the run summary.

    ``policy``: an already loaded ParkourPolicy for ``args.checkpoint`` (reset here), to load it once
    for many episodes. ``perturbation``: a ``krabby.hal.sim.perturbation.SimPerturbation``.
    ``respawn_on_fall``: False ends the episode at the first fall instead of respawning.
    ``record_path``: the MCAP run log (default ``args.record``). ``stop_requested``: polled after each
    step; True ends the run there (Ctrl-C), and the summary says ``interrupted``.
    """
    import zmq

    from krabby.hal.backends.mujoco_backend import MujocoBackend, MujocoBackendConfig
    from krabby.hal.deploy.server_flags import server_and_client_configs
    from krabby.hal.robot_profile import load_robot_profile
    from krabby.hal.safety import SafetyConfig
    from krabby.hal.server import HalServer

    from .inference import InferenceOptions, ModelWeights, ParkourInferenceClient
    from .run_outputs import live_view_config
    from .status_line import StatusLine

    hooks = hooks or EpisodeHooks()
    checkpoint = args.checkpoint
    server_only = bool(args.server_only)
    record_path = record_path if record_path is not None else (Path(args.record) if args.record else None)
    profile = load_robot_profile(args.robot)
    backend_kind = None if server_only else policy_backend_kind(args, checkpoint)
    if server_only:
        policy = None
    elif policy is None:
        from . import load_policy

        policy = load_policy(checkpoint, device=args.device, backend=backend_kind, num_threads=1)
    else:
        policy.reset()
    kind = policy.kind if policy is not None else ("student" if args.depth else "teacher")
    # each policy kind gets the sensor it reads: the teacher the height scan, the student the depth camera
    backend = MujocoBackend(
        MujocoBackendConfig(robot=args.robot, terrain=args.terrain, seed=args.seed, difficulty=args.difficulty,
                            forward_speed_m_s=args.speed, enable_height_scan=kind == "teacher",
                            enable_depth=kind == "student", perturbation=perturbation),
        profile=profile,
    )
    # --fast pauses the simulated world while the policy computes, so wall-clock limits mean nothing
    # there: the supervisor and the client allow 1 s. --realtime keeps the deployment defaults.
    safety = SafetyConfig(arm_on_start=True)
    server_cfg, client_cfg = server_and_client_configs(args, safety, own_client=not server_only)
    if args.fast:
        server_cfg.safety.watchdog_s = server_cfg.safety.max_command_age_s = LOCKSTEP_TIME_LIMIT_S
    backend.connect()
    if args.export_model:
        print(f"model: {backend.export_model(args.export_model)}", file=sys.stderr)
    ctx = zmq.Context()
    server = HalServer(backend, server_cfg, context=ctx).start()
    client: Any = _OutsideClient() if server_only else ParkourInferenceClient(
        client_cfg,
        ModelWeights(str(checkpoint), action_dim=args.action_dim, obs_dim=args.obs_dim, backend=backend_kind),
        control_rate=args.control_rate, device=args.device, transport_context=ctx,
        options=InferenceOptions(lockstep=args.fast, record_path=record_path and str(record_path),
                                 live_view=live_view_config(args), link_poses_from_joints=False,  # WorldChannels logs the truth
                                 **({"max_obs_age_s": LOCKSTEP_TIME_LIMIT_S} if args.fast else {})),
        policy=policy,
    )
    try:
        client.initialize()
        control_rate = float(client.control_rate or profile.control_rate_hz)
        running = threading.Event()
        running.set()
        client.start_thread(running)
        world = None
        if client.session is not None:
            from .foxglove_world import WorldChannels

            world = WorldChannels(client.session, backend.model, sim_clock=args.fast)
            if client.session.live_url:
                print(f"live view: {client.session.live_url} (Foxglove: Open connection -> Foxglove WebSocket)", file=sys.stderr)
        hooks.start(backend, server, client)
        if not server_only and not server.wait_for_subscriber(5.0):
            log.warning("the inference client's telemetry subscription was not in effect after 5 s: the first steps may miss")
        steps = int(round(args.duration * profile.control_rate_hz))
        period_s = profile.control_dt_s
        falls, missed, loop_ms = 0, 0, []
        wall0 = time.perf_counter()
        next_status = wall0
        first_wait_s = 0.0 if server_only else 10.0  # the first command includes the policy's warm-up
        progress_before_falls = 0.0
        first_fall_s: float | None = None
        steps_run = 0
        interrupted = False
        status = None if args.quiet else StatusLine(args.duration, "s")
        speed = SpeedMeter(period_s)
        for step in range(steps):
            t_step = time.perf_counter()
            frame = server.observe()
            timeout = first_wait_s if step == 0 else (1.0 if args.fast else max(0.0, period_s - (time.perf_counter() - t_step) - 0.002))
            if not server.wait_for_command(frame.state.stamp_ns, timeout):
                missed += 1
            server.actuate()
            backend.step_control()
            steps_run = step + 1
            sim_s = steps_run * period_s
            fell = backend.has_fallen
            if fell:
                falls += 1
                if first_fall_s is None:
                    first_fall_s = sim_s
                if respawn_on_fall:
                    progress_before_falls += backend.progress_m
                    log.warning("fall at t=%.2f s (fall %d): respawning", backend.sim_time_s, falls)
                    backend.reset()
            speed.update(backend.base_pos_w_m, backend.episode)
            before = progress_before_falls
            info = StepInfo(sim_s, frame, falls, speed.m_s, server.supervisor.state.name, server,
                            lambda: before + backend.progress_m)
            hooks.step(backend, step, info)
            if world is not None:
                world.update(backend.data, {
                    "sim_time_s": sim_s, "episode": backend.episode, "falls": falls, "goals_reached": backend.goals_reached,
                    "distance_m": info.distance_m, "speed_cmd_m_s": args.speed, "speed_m_s": speed.m_s,
                    "base_pos_w_m": [float(v) for v in backend.base_pos_w_m]}, server.supervisor.events)
            if fell and not respawn_on_fall:
                break
            loop_ms.append((time.perf_counter() - t_step) * 1e3)
            if not args.fast:
                delay = wall0 + steps_run * period_s - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
            now = time.perf_counter()
            if status is not None and now >= next_status:
                next_status = now + 0.5
                m = client.metrics()
                status.update(sim_s, f"rate={steps_run / (now - wall0):5.1f} Hz  compute={_ms(m['compute_ms_p50'])} ms  "
                                     f"obs age={_ms(m['obs_age_ms_p50'])} ms  safety={server.supervisor.state.name:6s}  "
                                     f"speed={speed.m_s:4.2f}/{args.speed:.2f} m/s  distance={info.distance_m:5.2f} m  "
                                     f"goals={backend.goals_reached}  falls={falls}")
            if stop_requested is not None and stop_requested():
                interrupted = True
                break
        wall_s = max(time.perf_counter() - wall0, 1e-9)
        sim_s = steps_run * period_s
        if status is not None:
            status.close(sim_s)
        running.clear()
        client.stop()
        m = client.metrics()
        snap = server.supervisor.snapshot()
        summary = {
            "checkpoint": checkpoint and str(checkpoint), "policy_kind": client.policy.kind if client.policy else None,
            "backend": backend_kind, "terrain": args.terrain, "seed": args.seed, "speed_cmd_m_s": args.speed,
            "mode": "fast" if args.fast else "realtime", "interrupted": interrupted,
            "sim_time_s": round(sim_s, 6), "wall_time_s": wall_s, "realtime_factor": sim_s / wall_s,
            "distance_m": progress_before_falls + backend.progress_m,
            "distance_final_episode_m": backend.progress_m,
            "mean_speed_m_s": (progress_before_falls + backend.progress_m) / sim_s if sim_s else 0.0,
            "falls": falls, "first_fall_s": first_fall_s,
            "goals_reached": backend.goals_reached, "course_complete": backend.course_complete,
            "control_rate_hz_target": control_rate, "control_rate_hz_achieved": steps_run / wall_s,
            "commands_missed": missed,
            "loop_ms_p50": _pct(loop_ms, 50), "loop_ms_p99": _pct(loop_ms, 99),
            "policy_period_ms_p50": m["loop_period_ms_p50"], "policy_period_ms_p99": m["loop_period_ms_p99"],
            "compute_ms_p50": m["compute_ms_p50"], "compute_ms_p99": m["compute_ms_p99"],
            "obs_age_ms_p50": m["obs_age_ms_p50"], "obs_age_ms_p99": m["obs_age_ms_p99"],
            "commands_accepted": server.stats["commands_accepted"] if server_only else m["commands_accepted"],
            "commands_refused": m["commands_refused"],
            "safety": {
                "final_state": snap["state"], "watchdog_trips": snap["watchdog_trips"],
                "clamped_commands": snap["clamped_commands"], "refusals": snap["refusals"],
                "events": [{"t_ns": e.stamp_ns, "kind": e.kind, "detail": e.detail} for e in server.supervisor.events],
            },
            "record": record_path and str(record_path), "video": None,
        }
        hooks.end(backend, summary)
        return summary
    finally:
        client.stop()
        server.close()
        backend.disconnect()
        ctx.destroy(0)


class _OutsideClient:
    """--server-only: the policy runs elsewhere; this stands in for the built-in client's lifecycle and metrics."""

    policy = None
    control_rate = None
    session = None

    def initialize(self) -> None:
        pass

    def start_thread(self, running: Any = None) -> None:
        pass

    def stop(self) -> None:
        pass

    def metrics(self) -> dict:
        nan = math.nan
        return {"compute_ms_p50": nan, "compute_ms_p99": nan, "obs_age_ms_p50": nan, "obs_age_ms_p99": nan,
                "loop_period_ms_p50": nan, "loop_period_ms_p99": nan, "commands_accepted": 0, "commands_refused": {}}
