"""krabby-hal-server-mujoco: the sim-to-sim loop — MuJoCo backend, HAL server and inference client in one process.

    krabby-hal-server-mujoco --terrain flat --duration 20 --runs runs      # -> runs/<date>-<time>-flat/, runs/latest
    krabby-hal-server-mujoco --config run.toml --speed 0.8                  # flags from a file, overridden on the line

The backend, the HAL server, the ZeroMQ transport, the observation builder, the policy and the
action mapper are the same code that runs in Isaac Sim and on the robot; only the backend differs.
Each control step: the server publishes the observation, waits for the command computed from it,
hands the supervisor's output to the backend, and MuJoCo runs 4 physics steps with the training PD.

``--fast`` runs as fast as the machine allows (lock-step with the policy, deterministic; the world
is paused while the policy computes, so the watchdog and staleness limits are loosened to 1 s);
``--realtime`` (default) keeps wall-clock time and gives the policy one control period to answer,
as a robot would.

Ctrl-C stops the run early and still writes the summary, the log and the video of what ran
(exit status 130). Mistakes in the flags or an output folder that cannot be written stop the
command in one line before anything runs (exit status 2).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

from .obs_layout import COMMAND_VX_TRAINED_M_S

log = logging.getLogger("krabby.sim2sim")

LOCKSTEP_TIME_LIMIT_S = 1.0
TERRAINS = ("flat", "hurdles", "steps", "gaps", "stones", "slopes", "parkour")
TRAINED_SPEED = COMMAND_VX_TRAINED_M_S  # m/s
PROG = "krabby-hal-server-mujoco"


def default_checkpoint() -> Path | None:
    """The bundled demo policy, else the upstream-format fixture beside the checkout (random weights)."""
    from krabby.hal.robot_profile import config_dir

    repo = config_dir().parent
    bundled = sorted((repo / "policies" / "go2_demo_teacher").glob("model_*.pt"),
                     key=lambda p: int(p.stem.split("_")[-1]) if p.stem.split("_")[-1].isdigit() else -1)
    if bundled:
        return bundled[-1]
    fixture = repo.parent / "shared" / "fixtures" / "parkour" / "teacher" / "model_0.pt"
    return fixture if fixture.is_file() else None


def build_parser() -> argparse.ArgumentParser:
    from .cli import OneLineParser, add_config_flag, positive
    from .run_outputs import add_output_flags

    ap = OneLineParser(prog="krabby-hal-server-mujoco", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_flag(ap)
    ap.add_argument("--checkpoint", help="policy: model_*.pt, an export directory or an ONNX directory (default: the bundled demo policy)")
    ap.add_argument("--action-dim", "--action_dim", dest="action_dim", type=int, default=12, help="check: the policy's output size (default 12)")
    ap.add_argument("--obs-dim", "--obs_dim", dest="obs_dim", type=int, default=753, help="check: the policy's observation size (default 753)")
    ap.add_argument("--control-rate", "--control_rate", dest="control_rate", type=positive("Hz"), default=None,
                    help="Hz (default: the policy's trained rate, else the robot profile's)")
    ap.add_argument("--device", default="cpu", help="torch device for the policy (default cpu)")
    ap.add_argument("--backend", choices=["torch", "onnx"], default=None,
                    help="inference runtime (default: onnx for an ONNX export, else torch)")
    ap.add_argument("--observation-bind", "--observation_bind", dest="observation_bind", default="inproc://hal_observation",
                    help="HAL telemetry endpoint (default inproc)")
    ap.add_argument("--command-bind", "--command_bind", dest="command_bind", default="inproc://hal_commands",
                    help="HAL command endpoint (default inproc)")
    ap.add_argument("--insecure-tcp", "--insecure_tcp", dest="insecure_tcp", action="store_true",
                    help="allow a tcp command channel without CURVE keys")
    ap.add_argument("--robot", default="go2", help="robot profile name or path (default go2)")
    ap.add_argument("--terrain", choices=TERRAINS, default="flat",
                    help="course (default flat); the bundled demo policy walks flat, hurdles and steps")
    ap.add_argument("--difficulty", type=float, default=None, help="0..1, preset default when omitted")
    ap.add_argument("--seed", type=int, default=0, help="course seed (same seed, same course)")
    ap.add_argument("--speed", type=float, default=0.5,
                    help=f"commanded forward speed, m/s (default 0.5; trained on {TRAINED_SPEED[0]}..{TRAINED_SPEED[1]})")
    ap.add_argument("--duration", type=positive("simulated seconds"), default=20.0, help="simulated seconds (default 20)")
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--realtime", dest="fast", action="store_false", help="keep wall-clock time (default)")
    mode.add_argument("--fast", dest="fast", action="store_true", help="as fast as possible, lock-step with the policy")
    ap.add_argument("--viewer", action="store_true", help="open the MuJoCo viewer (needs a display)")
    add_output_flags(ap)
    ap.add_argument("--video-fps", "--video_fps", dest="video_fps", type=int, default=25, help="video frame rate (default 25)")
    ap.add_argument("--quiet", action="store_true", help="no live status line")
    ap.set_defaults(fast=False)
    return ap


def _ms(value: float | None) -> str:
    """A live-line number: '  -  ' until the first sample exists."""
    return "  -  " if value is None or math.isnan(value) else f"{value:5.2f}"


def _pct(values: list[float], q: float) -> float | None:
    import numpy as np

    return float(np.percentile(values, q)) if values else None


def _path(p: str | None) -> Path | None:
    return Path(p) if p else None


def _write_summary(outputs: Any, summary: dict[str, Any]) -> None:
    if outputs.summary is not None:
        text = json.dumps(summary, indent=2, default=lambda o: None if isinstance(o, float) and math.isnan(o) else str(o))
        outputs.summary.parent.mkdir(parents=True, exist_ok=True)
        outputs.summary.write_text(text + "\n")


class StopOnCtrlC:
    """While installed, the first Ctrl-C only asks the loop to stop (``requested``); a second one interrupts."""

    def __init__(self) -> None:
        import signal

        self.requested = False
        self._previous = None
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)

    def _handle(self, signum: int, frame: Any) -> None:
        import signal

        self.requested = True
        signal.signal(signal.SIGINT, self._previous)

    def restore(self) -> bool:
        import signal

        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None
        return self.requested


class SpeedMeter:
    """Base speed over ground from successive positions, smoothed over about half a second.

    A new episode (a respawn) moves the base without walking, so that step is not counted."""

    def __init__(self, period_s: float, smoothing_s: float = 0.5):
        self.period_s, self.alpha = period_s, min(1.0, period_s / smoothing_s)
        self.m_s = 0.0
        self._last = self._episode = None

    def update(self, pos_w_m: Any, episode: int) -> None:
        import numpy as np

        pos = np.asarray(pos_w_m[:2], dtype=float)
        if self._last is not None and episode == self._episode:
            v = float(np.linalg.norm(pos - self._last)) / self.period_s
            self.m_s += self.alpha * (v - self.m_s)
        self._last, self._episode = pos, episode


def run(args: argparse.Namespace, outputs: Any = None) -> dict[str, Any]:
    """One run; ``outputs`` (``run_outputs.RunOutputs``) says where the summary, log, video and plots go."""
    from .run_outputs import RunOutputs, live_view_config

    outputs = outputs or RunOutputs(None, _path(args.summary), _path(args.record), _path(getattr(args, "video", None)), None)
    if outputs.video and "MUJOCO_GL" not in os.environ:
        os.environ["MUJOCO_GL"] = "egl"  # must be set before mujoco is imported; EGL works without a display
    import zmq

    from krabby.hal.backends.mujoco_backend import MujocoBackend, MujocoBackendConfig
    from krabby.hal.client import HalClientConfig
    from krabby.hal.robot_profile import load_robot_profile
    from krabby.hal.safety import SafetyConfig
    from krabby.hal.server import HalServer, HalServerConfig

    from .inference import InferenceOptions, ModelWeights, ParkourInferenceClient
    from .status_line import StatusLine
    from .video import FrameFacts, VideoWriter, depth_to_u8

    checkpoint = args.checkpoint or default_checkpoint()
    if checkpoint is None:
        raise SystemExit(f"{PROG}: no --checkpoint given and no bundled policy found (policies/go2_demo_teacher)")
    profile = load_robot_profile(args.robot)
    from . import load_policy
    from .policy_formats import resolve_artifact

    backend_kind = args.backend or ("onnx" if resolve_artifact(Path(checkpoint)).fmt == "onnx" else "torch")
    policy = load_policy(checkpoint, device=args.device, backend=backend_kind, num_threads=1)
    # each policy kind gets the sensor it reads: the teacher the height scan, the student the depth camera
    backend = MujocoBackend(
        MujocoBackendConfig(robot=args.robot, terrain=args.terrain, seed=args.seed, difficulty=args.difficulty,
                            forward_speed_m_s=args.speed, enable_height_scan=policy.kind == "teacher",
                            enable_depth=policy.kind == "student"),
        profile=profile,
    )
    backend.connect()
    ctx = zmq.Context()
    # --fast pauses the simulated world while the policy computes, so wall-clock limits mean nothing
    # there: the supervisor and the client allow 1 s. --realtime keeps the deployment defaults.
    safety = SafetyConfig(arm_on_start=True)
    if args.fast:
        safety.watchdog_s = safety.max_command_age_s = LOCKSTEP_TIME_LIMIT_S
    server_cfg = HalServerConfig(args.observation_bind, args.command_bind, safety=safety, allow_insecure_tcp=args.insecure_tcp)
    server = HalServer(backend, server_cfg, context=ctx).start()
    connect = lambda ep: ep.replace("tcp://*", "tcp://127.0.0.1").replace("tcp://0.0.0.0", "tcp://127.0.0.1")  # noqa: E731
    client = ParkourInferenceClient(
        HalClientConfig(connect(args.observation_bind), connect(args.command_bind)),
        ModelWeights(str(checkpoint), action_dim=args.action_dim, obs_dim=args.obs_dim, backend=backend_kind),
        control_rate=args.control_rate, device=args.device, transport_context=ctx,
        options=InferenceOptions(lockstep=args.fast, record_path=outputs.record and str(outputs.record),
                                 live_view=live_view_config(args), link_poses_from_joints=False,  # WorldChannels logs the truth
                                 **({"max_obs_age_s": LOCKSTEP_TIME_LIMIT_S} if args.fast else {})),
        policy=policy,
    )
    viewer = None
    stop = StopOnCtrlC()  # from here on Ctrl-C ends the run after the current step; what ran is written
    try:
        client.initialize()
        control_rate = float(client.control_rate or profile.control_rate_hz)
        running = threading.Event()
        running.set()
        client.start_thread(running)
        if args.viewer:
            viewer = _open_viewer(backend)
        video = VideoWriter(outputs.video, args.video_fps, profile.control_rate_hz) if outputs.video else None
        world = None
        if client.session is not None:
            from .foxglove_world import WorldChannels

            world = WorldChannels(client.session, backend.model, sim_clock=args.fast)
            if client.session.live_url:
                print(f"live view: {client.session.live_url} (Foxglove: Open connection -> Foxglove WebSocket)", file=sys.stderr)
        steps = int(round(args.duration * profile.control_rate_hz))
        period_s = profile.control_dt_s
        falls, missed, loop_ms = 0, 0, []
        wall0 = time.perf_counter()
        next_status = wall0
        first_wait_s = 10.0  # the first command includes the policy's warm-up
        progress_before_falls = 0.0
        status = None if args.quiet else StatusLine(args.duration, "s")
        speed = SpeedMeter(period_s)
        step = -1
        for step in range(steps):
            t_step = time.perf_counter()
            frame = server.observe()
            timeout = first_wait_s if step == 0 else (1.0 if args.fast else max(0.0, period_s - (time.perf_counter() - t_step) - 0.002))
            if not server.wait_for_command(frame.state.stamp_ns, timeout):
                missed += 1
            server.actuate()
            backend.step_control()
            if backend.has_fallen:
                falls += 1
                progress_before_falls += backend.progress_m
                log.warning("fall at t=%.2f s (fall %d): respawning", backend.sim_time_s, falls)
                backend.reset()
            speed.update(backend.base_pos_w_m, backend.episode)
            if video is not None:
                video.maybe_capture(backend, step, FrameFacts(
                    (step + 1) * period_s, args.speed, speed.m_s, server.supervisor.state.name, falls,
                    depth_to_u8(frame.depth.distance_m, profile.camera.max_distance_m) if frame.depth is not None else None))
            if world is not None:
                world.update(backend.data, {
                    "sim_time_s": (step + 1) * period_s, "episode": backend.episode, "falls": falls,
                    "goals_reached": backend.goals_reached, "distance_m": progress_before_falls + backend.progress_m,
                    "speed_cmd_m_s": args.speed, "speed_m_s": speed.m_s,
                    "base_pos_w_m": [float(v) for v in backend.base_pos_w_m]}, server.supervisor.events)
            if viewer is not None:
                viewer.sync()
            loop_ms.append((time.perf_counter() - t_step) * 1e3)
            if not args.fast:
                delay = wall0 + (step + 1) * period_s - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
            now = time.perf_counter()
            if status is not None and now >= next_status:
                next_status = now + 0.5
                m = client.metrics()
                status.update((step + 1) * period_s,
                              f"rate={(step + 1) / (now - wall0):5.1f} Hz  compute={_ms(m['compute_ms_p50'])} ms  "
                              f"obs age={_ms(m['obs_age_ms_p50'])} ms  safety={server.supervisor.state.name:6s}  "
                              f"speed={speed.m_s:4.2f}/{args.speed:.2f} m/s  distance={progress_before_falls + backend.progress_m:5.2f} m  "
                              f"goals={backend.goals_reached}  falls={falls}")
            if stop.requested:
                break
        interrupted = stop.restore()
        steps = step + 1  # fewer than planned after Ctrl-C
        wall_s = max(time.perf_counter() - wall0, 1e-9)
        if status is not None:
            status.close(steps * period_s)
        if interrupted:
            print(f"{PROG}: interrupted at t={steps * period_s:.2f} s; writing what ran", file=sys.stderr)
        running.clear()
        client.stop()
        m = client.metrics()
        snap = server.supervisor.snapshot()
        summary = {
            "checkpoint": str(checkpoint), "policy_kind": client.policy.kind if client.policy else None,
            "backend": backend_kind, "terrain": args.terrain, "seed": args.seed, "speed_cmd_m_s": args.speed,
            "mode": "fast" if args.fast else "realtime", "interrupted": interrupted,
            "sim_time_s": round(steps * period_s, 6), "wall_time_s": wall_s, "realtime_factor": steps * period_s / wall_s,
            "distance_m": progress_before_falls + backend.progress_m,
            "distance_final_episode_m": backend.progress_m,
            "mean_speed_m_s": (progress_before_falls + backend.progress_m) / max(steps * period_s, 1e-9),
            "falls": falls, "goals_reached": backend.goals_reached, "course_complete": backend.course_complete,
            "control_rate_hz_target": control_rate, "control_rate_hz_achieved": steps / wall_s,
            "commands_missed": missed,
            "loop_ms_p50": _pct(loop_ms, 50), "loop_ms_p99": _pct(loop_ms, 99),
            "policy_period_ms_p50": m["loop_period_ms_p50"], "policy_period_ms_p99": m["loop_period_ms_p99"],
            "compute_ms_p50": m["compute_ms_p50"], "compute_ms_p99": m["compute_ms_p99"],
            "obs_age_ms_p50": m["obs_age_ms_p50"], "obs_age_ms_p99": m["obs_age_ms_p99"],
            "commands_accepted": m["commands_accepted"], "commands_refused": m["commands_refused"],
            "safety": {
                "final_state": snap["state"], "watchdog_trips": snap["watchdog_trips"],
                "clamped_commands": snap["clamped_commands"], "refusals": snap["refusals"],
                "events": [{"t_ns": e.stamp_ns, "kind": e.kind, "detail": e.detail} for e in server.supervisor.events],
            },
            "record": outputs.record and str(outputs.record), "video": None,
        }
        _write_summary(outputs, summary)  # before the video: a Ctrl-C there must not lose it
        if video is not None:
            try:
                summary["video"] = video.write(backend, show_progress=not args.quiet)
            except KeyboardInterrupt:
                summary["interrupted"] = True
                summary["video"] = outputs.video and str(outputs.video)
                summary["video_error"] = f"interrupted after {video.frames_written} of {len(video.poses)} frames"
            if summary["video"] is None:
                summary["video_error"] = video.error or "no frames"
            _write_summary(outputs, summary)
        return summary
    finally:
        stop.restore()
        if viewer is not None:
            viewer.close()
        client.stop()
        server.close()
        backend.disconnect()
        ctx.destroy(0)


def _open_viewer(backend: Any) -> Any:
    if not os.environ.get("DISPLAY") and sys.platform.startswith("linux"):
        print("viewer: no display here (DISPLAY is unset); running without it", file=sys.stderr)
        return None
    import mujoco.viewer

    return mujoco.viewer.launch_passive(backend.model, backend.data)


def main(argv: list[str] | None = None) -> int:
    from .cli import INTERRUPTED, USAGE_ERROR, UsageError, parse_with_config
    from .run_outputs import describe, prepare_outputs, write_plots

    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_with_config(build_parser(), argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("krabby.hal.safety").setLevel(logging.ERROR)  # transitions go to the summary
    from krabby.hal.server import HalError
    from krabby.parkour.policy import PolicyLoadError

    from .foxglove_log import LiveViewError

    if not TRAINED_SPEED[0] <= args.speed <= TRAINED_SPEED[1]:
        print(f"{PROG}: warning: --speed {args.speed:g} m/s is outside the range the policy was trained on "
              f"({TRAINED_SPEED[0]}..{TRAINED_SPEED[1]} m/s); expect it to walk differently or fall", file=sys.stderr)
    try:
        outputs = prepare_outputs(args, args.terrain, argv)
        summary = run(args, outputs)
    except (UsageError, HalError, PolicyLoadError, LiveViewError, ValueError, FileNotFoundError) as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return USAGE_ERROR
    except KeyboardInterrupt:  # before the loop started: nothing ran, nothing to write
        print(f"{PROG}: interrupted before the run started; nothing written", file=sys.stderr)
        return INTERRUPTED
    print(f"{summary['terrain']}: {summary['distance_m']:.2f} m in {summary['sim_time_s']:.1f} s, falls {summary['falls']}, "
          f"goals {summary['goals_reached']}, watchdog trips {summary['safety']['watchdog_trips']}, "
          f"{summary['control_rate_hz_achieved']:.0f} Hz achieved ({summary['mode']})")
    for line in describe(outputs, summary):
        print(line)
    if outputs.plots is not None and outputs.record is not None:
        print(write_plots(outputs.record, outputs.plots))
    elif outputs.folder is not None:
        print(f"plots:   krabby-plot {outputs.folder.path}")
    return INTERRUPTED if summary.get("interrupted") else 0


if __name__ == "__main__":
    sys.exit(main())
