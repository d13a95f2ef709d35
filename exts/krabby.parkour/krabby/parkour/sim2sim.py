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

``--server-only`` runs no policy: the MuJoCo robot is served, in real time, to an outside client (a
policy on another machine: ``--deploy robot_tcp`` or ``--key-dir/--allow-dir`` for CURVE on tcp; see
``krabby.hal.deploy.server_flags``).

The default policy is the bundled demo (policies/go2_demo_teacher): a scripted trot distilled on
this MuJoCo model. It walks at 0.3-0.8 m/s on flat ground, 5 cm hurdles, 5 cm steps and slopes; it
cannot cross gaps, climb the parkour boxes or walk the stones. It shows the loop works; pass
--checkpoint to test an Isaac-trained policy. The model is in exts/krabby.hal/docs/mujoco_model.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import threading
from pathlib import Path
from typing import Any

from krabby.hal.deploy.server_flags import add_server_flags

from .episode import EpisodeHooks, StepInfo, run_episode
from .obs_layout import COMMAND_VX_TRAINED_M_S

log = logging.getLogger("krabby.sim2sim")

TERRAINS = ("flat", "hurdles", "steps", "gaps", "stones", "slopes", "parkour")
TRAINED_SPEED = COMMAND_VX_TRAINED_M_S  # m/s
PROG = "krabby-hal-server-mujoco"
BUNDLED_POLICY = "policies/go2_demo_teacher"  # beside config/, in the checkout


def default_checkpoint() -> Path | None:
    """The bundled demo policy, else the upstream-format fixture beside the checkout (random weights)."""
    from krabby.hal.robot_profile import config_dir

    repo = config_dir().parent
    bundled = sorted((repo / BUNDLED_POLICY).glob("model_*.pt"),
                     key=lambda p: int(p.stem.split("_")[-1]) if p.stem.split("_")[-1].isdigit() else -1)
    if bundled:
        return bundled[-1]
    fixture = repo.parent / "shared" / "fixtures" / "parkour" / "teacher" / "model_0.pt"
    return fixture if fixture.is_file() else None


def resolve_checkpoint(given: str | Path | None, flag: str = "--checkpoint") -> str | Path:
    """``given``, else ``default_checkpoint()``; else ``UsageError`` naming ``flag`` (how the caller's user
    gives one), so every command says the same thing when there is neither."""
    from .cli import UsageError

    checkpoint = given or default_checkpoint()
    if checkpoint is None:
        raise UsageError(f"no {flag} given and no bundled policy found ({BUNDLED_POLICY})")
    return checkpoint


def build_parser() -> argparse.ArgumentParser:
    from .cli import OneLineParser, add_config_flag, add_policy_flags, positive
    from .run_outputs import add_output_flags

    ap = OneLineParser(prog="krabby-hal-server-mujoco", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_flag(ap)
    add_policy_flags(ap, checkpoint_help="policy: model_*.pt, an export directory or an ONNX directory (default: the bundled demo policy)",
                     control_rate_default="the policy's trained rate, else the robot profile's")
    ap.add_argument("--device", default="cpu", help="torch device for the policy (default cpu)")
    ap.add_argument("--backend", choices=["torch", "onnx"], default=None,
                    help="inference runtime (default: onnx for an ONNX export, else torch)")
    ap.add_argument("--server-only", action="store_true", help="no built-in policy: serve the robot to an outside client")
    ap.add_argument("--depth", action="store_true", help="--server-only: also render the depth camera (a student client)")
    ap.add_argument("--robot", default="go2", help="robot profile name or path (default go2)")
    ap.add_argument("--terrain", choices=TERRAINS, default="flat",
                    help="course (default flat); the bundled demo policy walks flat, hurdles and steps")
    ap.add_argument("--difficulty", type=float, default=None, help="0..1, preset default when omitted")
    ap.add_argument("--seed", type=int, default=0, help="course seed (same seed, same course)")
    ap.add_argument("--speed", type=float, default=0.5,
                    help=f"commanded forward speed, m/s (default 0.5; trained on {TRAINED_SPEED[0]}..{TRAINED_SPEED[1]})")
    ap.add_argument("--duration", type=positive("simulated seconds", allow_zero=True), default=20.0,
                    help="simulated seconds (default 20; 0 only with --export-model)")
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--realtime", dest="fast", action="store_false", help="keep wall-clock time (default)")
    mode.add_argument("--fast", dest="fast", action="store_true", help="as fast as possible, lock-step with the policy")
    ap.add_argument("--viewer", action="store_true", help="open the MuJoCo viewer (needs a display)")
    add_output_flags(ap)
    ap.add_argument("--video-fps", "--video_fps", dest="video_fps", type=int, default=25, help="video frame rate (default 25)")
    ap.add_argument("--export-model", metavar="PATH",
                    help="write the exact MuJoCo model (MJCF) this run compiles, to open in MuJoCo's viewer or diff "
                         "(with --duration 0 the run stops there)")
    ap.add_argument("--quiet", action="store_true", help="no live status line")
    add_server_flags(ap)
    ap.set_defaults(fast=False)
    return ap


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


class _ViewerAndVideo(EpisodeHooks):
    """The run's optional viewer window and video, fed by the episode loop; the summary is written
    before the video is rendered, so a Ctrl-C while rendering keeps it."""

    def __init__(self, args: argparse.Namespace, outputs: Any):
        self.args, self.outputs, self.viewer, self.video = args, outputs, None, None

    def start(self, backend: Any, server: Any, client: Any) -> None:
        from .video import VideoWriter

        if self.args.viewer:
            self.viewer = _open_viewer(backend)
        if self.outputs.video:
            self.video = VideoWriter(self.outputs.video, self.args.video_fps, backend.profile.control_rate_hz)

    def step(self, backend: Any, step: int, info: StepInfo) -> None:
        if self.video is not None:
            from .video import FrameFacts, depth_to_u8

            depth = info.frame.depth
            self.video.maybe_capture(backend, step, FrameFacts(
                info.sim_time_s, self.args.speed, info.speed_m_s, info.safety_state, info.falls,
                depth_to_u8(depth.distance_m, backend.profile.camera.max_distance_m) if depth is not None else None))
        if self.viewer is not None:
            self.viewer.sync()

    def end(self, backend: Any, summary: dict[str, Any]) -> None:
        _write_summary(self.outputs, summary)  # before the video: a Ctrl-C there must not lose it
        if self.video is None:
            return
        try:
            summary["video"] = self.video.write(backend, show_progress=not self.args.quiet)
        except KeyboardInterrupt:
            summary["interrupted"] = True
            summary["video"] = self.outputs.video and str(self.outputs.video)
            summary["video_error"] = f"interrupted after {self.video.frames_written} of {len(self.video.poses)} frames"
        if summary["video"] is None:
            summary["video_error"] = self.video.error or "no frames"
        _write_summary(self.outputs, summary)


def run(args: argparse.Namespace, outputs: Any = None) -> dict[str, Any]:
    """One episode (``krabby.parkour.episode.run_episode``) with this command's outputs, viewer and video;
    ``outputs`` (``run_outputs.RunOutputs``) says where the summary, log, video and plots go."""
    from .run_outputs import RunOutputs

    outputs = outputs or RunOutputs(None, _path(args.summary), _path(args.record), _path(getattr(args, "video", None)), None)
    if outputs.video and "MUJOCO_GL" not in os.environ:
        os.environ["MUJOCO_GL"] = "egl"  # must be set before mujoco is imported; EGL works without a display
    if args.server_only and (args.fast or args.record):
        raise ValueError("--server-only runs in real time with no policy of its own: --fast and --record need one")
    if args.server_only:
        outputs.record = None  # a run folder's log records a built-in policy; the outside client keeps its own
    checkpoint = None if args.server_only else resolve_checkpoint(args.checkpoint)  # UsageError: main's status 2
    hooks = _ViewerAndVideo(args, outputs)
    stop = StopOnCtrlC()  # from here on Ctrl-C ends the run after the current step; what ran is written
    try:
        summary = run_episode(argparse.Namespace(**{**vars(args), "checkpoint": checkpoint}), hooks=hooks,
                              record_path=outputs.record, stop_requested=lambda: stop.requested)
    finally:
        stop.restore()
        if hooks.viewer is not None:
            hooks.viewer.close()
    if summary["interrupted"]:
        print(f"{PROG}: interrupted at t={summary['sim_time_s']:.2f} s; wrote what ran", file=sys.stderr)
    return summary


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
    parser = build_parser()
    args = parse_with_config(parser, argv)
    if args.duration == 0 and not args.export_model:
        parser.error("argument --duration: must be a positive number of simulated seconds, got 0 (0 only with --export-model)")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("krabby.hal.safety").setLevel(logging.ERROR)  # transitions go to the summary
    from krabby.hal.server import HalError
    from krabby.parkour.policy import PolicyLoadError

    from .foxglove_log import LiveViewError

    if args.export_model and args.duration <= 0:  # only the model: no policy, no loop
        from krabby.hal.backends.mujoco_backend import MujocoBackend, MujocoBackendConfig

        backend = MujocoBackend(MujocoBackendConfig(robot=args.robot, terrain=args.terrain, seed=args.seed, difficulty=args.difficulty))
        backend.connect()
        print(f"model: {backend.export_model(args.export_model)}")
        backend.disconnect()
        return 0
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
