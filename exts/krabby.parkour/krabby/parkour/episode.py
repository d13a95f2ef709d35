"""One sim-to-sim episode: MuJoCo backend, HAL server and inference client in one process.

Every MuJoCo run mode goes through ``run_episode``: ``krabby-hal-server-mujoco`` (one episode,
live line, video, viewer) and ``krabby-eval`` (many episodes under perturbations). The backend,
the HAL server, the ZeroMQ transport, the observation builder, the policy and the action mapper
are the same code that runs in Isaac Sim and on the robot. Each control step: the server publishes
the observation, waits for the command computed from it, hands the supervisor's output to the
backend, and MuJoCo runs the physics steps of one control period with the training PD.

``args`` is the namespace of ``krabby.parkour.sim2sim.build_parser`` (so a flag added there reaches
every run mode); ``args.checkpoint`` must be set. ``EpisodeHooks`` lets a caller watch each step
(video frames, viewer, evaluation metrics) without a second copy of the loop.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import threading
import time
from typing import Any, Optional

log = logging.getLogger("krabby.sim2sim")

LOCKSTEP_TIME_LIMIT_S = 1.0


class EpisodeHooks:
    """Called by ``run_episode``; the default does nothing. Subclass what you need."""

    def start(self, backend: Any, server: Any, client: Any) -> None:
        """After connect, before the first step."""

    def step(self, backend: Any, step: int) -> None:
        """After each control step (after a fall's respawn, when respawning)."""

    def end(self, backend: Any, summary: dict[str, Any]) -> None:
        """After the last step, before the backend is disconnected; may add to ``summary``."""


def _ms(value: float | None) -> str:
    """A live-line number: '  -  ' until the first sample exists."""
    return "  -  " if value is None or math.isnan(value) else f"{value:5.2f}"


def _pct(values: list[float], q: float) -> float | None:
    import numpy as np

    return float(np.percentile(values, q)) if values else None


def run_episode(args: argparse.Namespace, *, hooks: Optional[EpisodeHooks] = None, policy: Any = None,
                perturbation: Any = None, respawn_on_fall: bool = True) -> dict[str, Any]:
    """Run ``args.duration`` simulated seconds and return the run summary.

    ``policy``: an already loaded ParkourPolicy for ``args.checkpoint`` (reset here), to load it once
    for many episodes. ``perturbation``: a ``krabby.hal.sim.perturbation.SimPerturbation``.
    ``respawn_on_fall``: False ends the episode at the first fall instead of respawning.
    """
    import zmq

    from krabby.hal.backends.mujoco_backend import MujocoBackend, MujocoBackendConfig
    from krabby.hal.deploy.server_flags import server_and_client_configs
    from krabby.hal.robot_profile import load_robot_profile
    from krabby.hal.safety import SafetyConfig
    from krabby.hal.server import HalServer

    from .inference import InferenceOptions, ModelWeights, ParkourInferenceClient

    hooks = hooks or EpisodeHooks()
    checkpoint = args.checkpoint
    profile = load_robot_profile(args.robot)
    server_only = bool(getattr(args, "server_only", False))
    if server_only:
        policy = None
    elif policy is None:
        from . import load_policy

        policy = load_policy(checkpoint, device=args.device, backend=args.backend, num_threads=1)
    else:
        policy.reset()
    kind = policy.kind if policy is not None else ("student" if getattr(args, "depth", False) else "teacher")
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
    if getattr(args, "export_model", None):
        print(f"model: {backend.export_model(args.export_model)}", file=sys.stderr)
    ctx = zmq.Context()
    server = HalServer(backend, server_cfg, context=ctx).start()
    client: Any = _OutsideClient() if server_only else ParkourInferenceClient(
        client_cfg,
        ModelWeights(str(checkpoint), action_dim=args.action_dim, obs_dim=args.obs_dim, backend=args.backend),
        control_rate=args.control_rate, device=args.device, transport_context=ctx,
        options=InferenceOptions(lockstep=args.fast, record_path=args.record,
                                 **({"max_obs_age_s": LOCKSTEP_TIME_LIMIT_S} if args.fast else {})),
        policy=policy,
    )
    try:
        client.initialize()
        control_rate = float(client.control_rate or profile.control_rate_hz)
        running = threading.Event()
        running.set()
        client.start_thread(running)
        hooks.start(backend, server, client)
        steps = int(round(args.duration * profile.control_rate_hz))
        period_s = profile.control_dt_s
        falls, missed, loop_ms = 0, 0, []
        wall0 = time.perf_counter()
        next_status = wall0
        first_wait_s = 0.0 if server_only else 10.0  # the first command includes the policy's warm-up
        progress_before_falls = 0.0
        first_fall_s: float | None = None
        steps_run = 0
        for step in range(steps):
            t_step = time.perf_counter()
            frame = server.observe()
            timeout = first_wait_s if step == 0 else (1.0 if args.fast else max(0.0, period_s - (time.perf_counter() - t_step) - 0.002))
            if not server.wait_for_command(frame.state.stamp_ns, timeout):
                missed += 1
            server.actuate()
            backend.step_control()
            steps_run = step + 1
            if backend.has_fallen:
                falls += 1
                if first_fall_s is None:
                    first_fall_s = steps_run * period_s
                if not respawn_on_fall:
                    hooks.step(backend, step)
                    break
                progress_before_falls += backend.progress_m
                log.warning("fall at t=%.2f s (fall %d): respawning", backend.sim_time_s, falls)
                backend.reset()
            hooks.step(backend, step)
            loop_ms.append((time.perf_counter() - t_step) * 1e3)
            if not args.fast:
                delay = wall0 + (step + 1) * period_s - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
            now = time.perf_counter()
            if not args.quiet and now >= next_status:
                next_status = now + 0.5
                m = client.metrics()
                print(f"\rt={(step + 1) * period_s:5.1f} s  rate={(step + 1) / (now - wall0):6.1f} Hz  "
                      f"compute={_ms(m['compute_ms_p50'])} ms  obs age={_ms(m['obs_age_ms_p50'])} ms  "
                      f"safety={server.supervisor.state.name:6s}  distance={progress_before_falls + backend.progress_m:5.2f} m  "
                      f"falls={falls}", end="", flush=True)
        wall_s = time.perf_counter() - wall0
        if not args.quiet:
            print()
        running.clear()
        client.stop()
        m = client.metrics()
        snap = server.supervisor.snapshot()
        sim_s = steps_run * period_s
        summary = {
            "checkpoint": str(checkpoint), "policy_kind": client.policy.kind if client.policy else None,
            "backend": args.backend, "terrain": args.terrain, "seed": args.seed, "speed_cmd_m_s": args.speed,
            "mode": "fast" if args.fast else "realtime",
            "sim_time_s": round(sim_s, 6), "wall_time_s": wall_s, "realtime_factor": sim_s / wall_s,
            "distance_m": progress_before_falls + backend.progress_m,
            "distance_final_episode_m": backend.progress_m,
            "mean_speed_m_s": (progress_before_falls + backend.progress_m) / sim_s if sim_s else 0.0,
            "falls": falls, "first_fall_s": first_fall_s,
            "goals_reached": backend.goals_reached, "course_complete": backend.course_complete,
            "control_rate_hz_target": control_rate, "control_rate_hz_achieved": steps_run / wall_s,
            "commands_missed": missed,
            "loop_ms_p50": _pct(loop_ms, 50), "loop_ms_p99": _pct(loop_ms, 99),
            "compute_ms_p50": m["compute_ms_p50"], "compute_ms_p99": m["compute_ms_p99"],
            "obs_age_ms_p50": m["obs_age_ms_p50"], "obs_age_ms_p99": m["obs_age_ms_p99"],
            "commands_accepted": server.stats["commands_accepted"] if server_only else m["commands_accepted"],
            "commands_refused": m["commands_refused"],
            "safety": {
                "final_state": snap["state"], "watchdog_trips": snap["watchdog_trips"],
                "clamped_commands": snap["clamped_commands"], "refusals": snap["refusals"],
                "events": [{"t_ns": e.stamp_ns, "kind": e.kind, "detail": e.detail} for e in server.supervisor.events],
            },
            "record": args.record, "video": None,
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

    def initialize(self) -> None:
        pass

    def start_thread(self, running: Any = None) -> None:
        pass

    def stop(self) -> None:
        pass

    def metrics(self) -> dict:
        nan = math.nan
        return {"compute_ms_p50": nan, "compute_ms_p99": nan, "obs_age_ms_p50": nan, "obs_age_ms_p99": nan,
                "commands_accepted": 0, "commands_refused": {}}
