"""Run the episodes of a grid: in this process, over local processes (spawn), or as Ray tasks.

Each episode is ``krabby.parkour.episode.run_episode`` — the HAL server and client, observation
builder, policy and action mapper of every run mode, lock-step (``--fast``) — with an
``EpisodeMetrics`` hook that counts what the card reports. A worker loads each policy once and
keeps it for all its episodes (``policy.reset()`` between them).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import os
import time
from typing import Any, Callable, Iterable, Iterator, Optional

import numpy as np

from ..episode import EpisodeHooks, StepInfo, run_episode
from .grid import EpisodeTask

JOINT_LIMIT_MARGIN_RAD = 0.01  # a joint this close to its limit counts as at the limit
_POLICIES: dict[tuple[str, str, str], Any] = {}


class EpisodeMetrics(EpisodeHooks):
    """Per-step counters of one episode: speed tracking, torque and joint-limit saturation, time to goal."""

    def start(self, backend: Any, server: Any, client: Any) -> None:
        prof = backend.profile
        self.dt_s = prof.control_dt_s
        self.speed_cmd = float(backend.config.forward_speed_m_s)
        self.lo_rad, self.hi_rad = prof.pos_min_rad + JOINT_LIMIT_MARGIN_RAD, prof.pos_max_rad - JOINT_LIMIT_MARGIN_RAD
        self.limits = prof.dc_motor_limits_nm
        self.steps = self.torque_sat = self.joint_limit = 0
        self.abs_speed_err = 0.0
        self.time_to_goal_s: Optional[float] = None
        self.server = server

    def step(self, backend: Any, step: int, info: StepInfo) -> None:
        qd, tau = backend.joint_vel_rad_s, backend.applied_torque_nm
        lo, hi = self.limits(qd)
        self.torque_sat += int(np.count_nonzero((tau >= hi - 1e-9) | (tau <= lo + 1e-9)))
        q = backend.joint_pos_rad
        self.joint_limit += int(np.count_nonzero((q <= self.lo_rad) | (q >= self.hi_rad)))
        self.abs_speed_err += abs(float(backend.base_lin_vel_body_m_s[0]) - self.speed_cmd)
        self.steps += 1
        if self.time_to_goal_s is None and backend.course_complete:
            self.time_to_goal_s = (step + 1) * self.dt_s

    def end(self, backend: Any, summary: dict[str, Any]) -> None:
        summary["eval"] = {
            "steps": self.steps,
            "speed_tracking_error_m_s": self.abs_speed_err / self.steps if self.steps else math.nan,
            "torque_saturation_joint_steps": self.torque_sat,
            "joint_limit_joint_steps": self.joint_limit,
            "time_to_goal_s": self.time_to_goal_s,
            "num_goals": len(backend.course.goals_xy_m),
            "difficulty": float(backend.course.difficulty),
            "pushes": backend.pushes_applied,
        }


def safety_events(safety: dict[str, Any]) -> int:
    """Supervisor interventions: transitions into HOLD, DAMP or ESTOP, plus refused commands.

    Arming and the first command (DISARMED->ARMED->ACTIVE) are the normal start, not events.
    """
    interventions = [e for e in safety["events"] if e["kind"].split("->")[-1] not in ("ARMED", "ACTIVE")]
    return len(interventions) + sum(safety["refusals"].values())


def episode_args(task: EpisodeTask) -> argparse.Namespace:
    """The sim-to-sim namespace of one task: the CLI's own parser, so its defaults apply."""
    from ..sim2sim import build_parser

    argv = ["--checkpoint", task.checkpoint, "--backend", task.backend, "--device", task.device,
            "--terrain", task.terrain, "--seed", str(task.seed), "--duration", str(task.duration_s),
            "--speed", str(task.speed_m_s), "--fast", "--quiet"]
    if task.difficulty is not None:
        argv += ["--difficulty", str(task.difficulty)]
    return build_parser().parse_args(argv)


def run_task(task: EpisodeTask, success_fraction: float = 0.5) -> dict[str, Any]:
    """One episode -> one record (plain JSON types). The episode ends at the first fall."""
    key = (task.checkpoint, task.backend, task.device)
    policy = _POLICIES.get(key)
    if policy is None:
        from .. import load_policy

        policy = _POLICIES[key] = load_policy(task.checkpoint, device=task.device, backend=task.backend, num_threads=1)
    metrics = EpisodeMetrics()
    t0 = time.perf_counter()
    s = run_episode(episode_args(task), hooks=metrics, policy=policy, perturbation=task.perturbation, respawn_on_fall=False)
    wall_s = time.perf_counter() - t0
    e = s["eval"]
    fell = s["falls"] > 0
    distance = float(s["distance_m"])
    success = (not fell) and (bool(s["course_complete"]) or distance >= success_fraction * task.speed_m_s * task.duration_s)
    p = task.perturbation
    return {
        "index": task.index, "checkpoint": task.checkpoint, "backend": task.backend, "terrain": task.terrain,
        "difficulty": round(e["difficulty"], 6), "seed": task.seed, "perturbation": task.perturbation_name,
        "success": success, "distance_m": round(distance, 6), "fell": fell, "fall_time_s": s["first_fall_s"],
        "goals_reached": s["goals_reached"], "num_goals": e["num_goals"], "course_complete": bool(s["course_complete"]),
        "time_to_goal_s": e["time_to_goal_s"], "sim_time_s": s["sim_time_s"],
        "speed_tracking_error_m_s": round(e["speed_tracking_error_m_s"], 6),
        "torque_saturation_joint_steps": e["torque_saturation_joint_steps"],
        "joint_limit_joint_steps": e["joint_limit_joint_steps"],
        "safety_events": safety_events(s["safety"]), "watchdog_trips": s["safety"]["watchdog_trips"],
        "clamped_commands": s["safety"]["clamped_commands"], "commands_missed": s["commands_missed"],
        "pushes": e["pushes"],
        "base_mass_offset_kg": round(p.base_mass_offset_kg, 6), "base_com_offset_m": [round(v, 6) for v in p.base_com_offset_m],
        "foot_friction": None if p.foot_friction is None else round(p.foot_friction, 6),
        "motor_strength": round(p.motor_strength, 6), "push_vel_m_s": p.push_vel_m_s,
        "action_latency_steps": p.action_latency_steps, "depth_latency_frames": p.depth_latency_frames,
        "depth_noise_m": round(p.depth_noise_m, 6),
        "wall_time_s": wall_s,  # not part of the table: varies with the machine
    }


@contextlib.contextmanager
def quiet_krabby_logs() -> Iterator[None]:
    """Krabby's warnings (arming, falls) off while episodes run: each record holds them. Restored after."""
    logger = logging.getLogger("krabby")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _worker_init() -> None:
    # one intra-op thread per process: the processes are the parallelism
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    logging.getLogger("krabby").setLevel(logging.ERROR)


def _ray_task(task: EpisodeTask, success_fraction: float) -> dict[str, Any]:
    _worker_init()
    return run_task(task, success_fraction)


Progress = Callable[[dict[str, Any]], None]


class RayUnavailableError(RuntimeError):
    """--ray was given but no Ray instance could be started or reached."""


def run_local(tasks: list[EpisodeTask], workers: int, on_result: Progress, success_fraction: float) -> list[dict[str, Any]]:
    """Episodes over ``workers`` spawned processes (1: in this process); results in task order."""
    if workers <= 1:
        out = []
        with quiet_krabby_logs():
            for t in tasks:
                out.append(run_task(t, success_fraction))
                on_result(out[-1])
        return out
    import functools
    import multiprocessing as mp

    ctx = mp.get_context("spawn")  # fork would copy zmq contexts and torch threads: spawn is the safe start
    results = []
    with ctx.Pool(workers, initializer=_worker_init) as pool:
        for r in pool.imap_unordered(functools.partial(run_task, success_fraction=success_fraction), tasks, chunksize=1):
            results.append(r)
            on_result(r)
    return sorted(results, key=lambda r: r["index"])


def run_ray(tasks: list[EpisodeTask], address: str, on_result: Progress, success_fraction: float) -> tuple[list[dict[str, Any]], int]:
    """Episodes as Ray tasks on the cluster at ``address`` ("local": a local instance started here).

    Returns the records in task order and the cluster's CPU count.
    """
    try:
        import ray
    except ImportError:
        raise SystemExit("krabby-eval --ray needs Ray: pip install 'krabby[ray]'") from None
    started = not ray.is_initialized()
    if started:
        try:
            if address == "local":
                ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
            else:
                ray.init(address=address, log_to_driver=False)
        except Exception as e:  # noqa: BLE001 - Ray raises many kinds here; each means "no cluster"
            raise RayUnavailableError(f"cannot {'start a local Ray instance' if address == 'local' else f'reach Ray at {address!r}'}: "
                                      f"{type(e).__name__}: {e}") from None
    try:
        cpus = int(ray.cluster_resources().get("CPU", 1))
        remote = ray.remote(num_cpus=1)(_ray_task)
        pending = [remote.remote(t, success_fraction) for t in tasks]
        results = []
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            for ref in done:
                results.append(ray.get(ref))
                on_result(results[-1])
        return sorted(results, key=lambda r: r["index"]), cpus
    finally:
        if started:
            ray.shutdown()


def run_tasks(tasks: Iterable[EpisodeTask], *, workers: int, ray_address: Optional[str], success_fraction: float,
              quiet: bool = False, label: str = "episodes") -> tuple[list[dict[str, Any]], float, int]:
    """Run all tasks with a progress bar and ETA; returns (records in task order, wall seconds, cores used)."""
    tasks = list(tasks)
    t0 = time.perf_counter()
    progress = None
    try:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress as Bar, TextColumn, TimeElapsedColumn, TimeRemainingColumn
    except ImportError:  # the eval extra brings rich; without it, a line per episode
        Bar = None  # noqa: N806
    if not quiet and Bar is not None:
        progress = Bar(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                       TextColumn("ETA"), TimeRemainingColumn(), TextColumn("{task.fields[rate]}"))
        bar = progress.add_task(label, total=len(tasks), rate="")
        progress.start()
    sim_s, done = [0.0], [0]

    def on_result(r: dict[str, Any]) -> None:
        sim_s[0] += r["sim_time_s"]
        elapsed = time.perf_counter() - t0
        if progress is not None:
            progress.update(bar, advance=1, rate=f"{sim_s[0] / elapsed:.1f} sim s/wall s")
        elif not quiet:
            done[0] += 1
            eta = elapsed / done[0] * (len(tasks) - done[0])
            print(f"{label}: {done[0]}/{len(tasks)}, {elapsed:.0f} s, ETA {eta:.0f} s, {sim_s[0] / elapsed:.1f} sim s/wall s", flush=True)

    try:
        if ray_address:
            results, cores = run_ray(tasks, ray_address, on_result, success_fraction)
        else:
            results, cores = run_local(tasks, workers, on_result, success_fraction), workers
    finally:
        if progress is not None:
            progress.stop()
    return results, time.perf_counter() - t0, cores
