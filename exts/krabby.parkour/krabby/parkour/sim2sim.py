"""krabby-hal-server-mujoco: the sim-to-sim loop — MuJoCo backend, HAL server and inference client in one process.

    krabby-hal-server-mujoco --terrain flat --duration 20 --summary runs/flat.json --video runs/flat.mp4

The backend, the HAL server, the ZeroMQ transport, the observation builder, the policy and the
action mapper are the same code that runs in Isaac Sim and on the robot; only the backend differs.
Each control step: the server publishes the observation, waits for the command computed from it,
hands the supervisor's output to the backend, and MuJoCo runs 4 physics steps with the training PD.

``--server-only`` runs no policy: the MuJoCo robot is served, in real time, to an outside client (a
policy on another machine: ``--deploy robot_tcp`` or ``--key-dir/--allow-dir`` for CURVE on tcp; see
``krabby.hal.deploy.server_flags``). ``--fast`` runs as fast as the machine allows (lock-step with the policy, deterministic; the world
is paused while the policy computes, so the watchdog and staleness limits are loosened to 1 s);
``--realtime`` (default) keeps wall-clock time and gives the policy one control period to answer,
as a robot would.

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
from pathlib import Path
from typing import Any

from krabby.hal.deploy.server_flags import add_server_flags

from .episode import EpisodeHooks, run_episode

log = logging.getLogger("krabby.sim2sim")

TERRAINS = ("flat", "hurdles", "steps", "gaps", "stones", "slopes", "parkour")


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
    ap = argparse.ArgumentParser(prog="krabby-hal-server-mujoco", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", help="policy: model_*.pt, an export directory or an ONNX directory (default: the bundled demo policy)")
    ap.add_argument("--action_dim", type=int, default=12)
    ap.add_argument("--obs_dim", type=int, default=753)
    ap.add_argument("--control_rate", type=float, default=None, help="Hz (default: the policy's trained rate, else the robot profile's)")
    ap.add_argument("--device", default="cpu", help="torch device for the policy")
    ap.add_argument("--backend", choices=["torch", "onnx"], default="torch", help="inference runtime")
    ap.add_argument("--server-only", action="store_true", help="no built-in policy: serve the robot to an outside client")
    ap.add_argument("--depth", action="store_true", help="--server-only: also render the depth camera (a student client)")
    ap.add_argument("--robot", default="go2", help="robot profile name or path")
    ap.add_argument("--terrain", choices=TERRAINS, default="flat")
    ap.add_argument("--difficulty", type=float, default=None, help="0..1, preset default when omitted")
    ap.add_argument("--seed", type=int, default=0, help="course seed (same seed, same course)")
    ap.add_argument("--speed", type=float, default=0.5, help="commanded forward speed, m/s (trained: 0.3-0.8; outside it warns)")
    ap.add_argument("--duration", type=float, default=20.0, help="simulated seconds")
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--realtime", dest="fast", action="store_false", help="keep wall-clock time (default)")
    mode.add_argument("--fast", dest="fast", action="store_true", help="as fast as possible, lock-step with the policy")
    ap.add_argument("--viewer", action="store_true", help="open the MuJoCo viewer (needs a display)")
    ap.add_argument("--record", metavar="LOG", help="write an MCAP run log (replay it with krabby-replay)")
    ap.add_argument("--summary", metavar="JSON", help="write the run summary here")
    ap.add_argument("--video", metavar="OUT", help="write an .mp4 or .gif of the run (offscreen rendering)")
    ap.add_argument("--video-fps", type=int, default=25)
    ap.add_argument("--export-model", metavar="PATH",
                    help="write the exact MuJoCo model (MJCF) this run compiles, to open in MuJoCo's viewer or diff "
                         "(with --duration 0 the run stops there)")
    ap.add_argument("--quiet", action="store_true", help="no live status line")
    add_server_flags(ap)
    ap.set_defaults(fast=False)
    return ap


class VideoWriter:
    """Records the robot's pose each frame period during the run and renders the video afterwards.

    Rendering offscreen costs 15-25 ms a frame on a CPU (Mesa llvmpipe), most of a 20 ms control
    period, so doing it inside a real-time loop would change the run being filmed. Poses are cheap to
    keep; ``write()`` puts each one back into MuJoCo and renders it. Says clearly, once, when offscreen
    rendering is unavailable.
    """

    def __init__(self, path: str, fps: int, control_rate_hz: float):
        self.path, self.fps = path, fps
        self.every = max(1, int(round(control_rate_hz / fps)))
        self.poses: list[Any] = []
        self.error: str | None = None

    def maybe_capture(self, backend: Any, step: int) -> None:
        if step % self.every == 0:
            self.poses.append((backend.data.qpos.copy(), backend.data.qvel.copy()))

    def write(self, backend: Any) -> str | None:
        import mujoco

        from krabby.hal.backends.mujoco_backend import RenderingUnavailableError

        frames = []
        for qpos, qvel in self.poses:
            backend.data.qpos[:], backend.data.qvel[:] = qpos, qvel
            mujoco.mj_forward(backend.model, backend.data)
            try:
                frames.append(backend.render_rgb(480, 320))
            except RenderingUnavailableError as e:
                self.error = str(e)
                print(f"video: not written, {e}", file=sys.stderr)
                return None
        if not frames:
            self.error = "no frames"
            return None
        import imageio.v2 as imageio

        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        if self.path.lower().endswith(".gif"):
            imageio.mimsave(self.path, frames[:: max(1, len(frames) // 200)], duration=1000 / self.fps, loop=0)
        else:
            imageio.mimsave(self.path, frames, fps=self.fps, macro_block_size=16)
        return self.path


class _ViewerAndVideo(EpisodeHooks):
    """The run's optional viewer window and video, fed by the episode loop."""

    def __init__(self, args: argparse.Namespace):
        self.args, self.viewer, self.video = args, None, None

    def start(self, backend: Any, server: Any, client: Any) -> None:
        if self.args.viewer:
            self.viewer = _open_viewer(backend)
        if self.args.video:
            self.video = VideoWriter(self.args.video, self.args.video_fps, backend.profile.control_rate_hz)

    def step(self, backend: Any, step: int) -> None:
        if self.video is not None:
            self.video.maybe_capture(backend, step)
        if self.viewer is not None:
            self.viewer.sync()

    def end(self, backend: Any, summary: dict[str, Any]) -> None:
        if self.video is not None:
            summary["video"] = self.video.write(backend)
            if summary["video"] is None:
                summary["video_error"] = self.video.error or "no frames"


def run(args: argparse.Namespace) -> dict[str, Any]:
    """One episode (``krabby.parkour.episode.run_episode``) with this command's viewer and video."""
    if args.video and "MUJOCO_GL" not in os.environ:
        os.environ["MUJOCO_GL"] = "egl"  # must be set before mujoco is imported; EGL works without a display
    if args.server_only and (args.fast or args.record):
        raise ValueError("--server-only runs in real time with no policy of its own: --fast and --record need one")
    checkpoint = None if args.server_only else (args.checkpoint or default_checkpoint())
    if checkpoint is None and not args.server_only:
        raise SystemExit("krabby-hal-server-mujoco: no --checkpoint given and no bundled policy found (policies/go2_demo_teacher)")
    hooks = _ViewerAndVideo(args)
    try:
        return run_episode(argparse.Namespace(**{**vars(args), "checkpoint": checkpoint}), hooks=hooks)
    finally:
        if hooks.viewer is not None:
            hooks.viewer.close()


def _open_viewer(backend: Any) -> Any:
    if not os.environ.get("DISPLAY") and sys.platform.startswith("linux"):
        print("viewer: no display here (DISPLAY is unset); running without it", file=sys.stderr)
        return None
    import mujoco.viewer

    return mujoco.viewer.launch_passive(backend.model, backend.data)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("krabby.hal.safety").setLevel(logging.ERROR)  # transitions go to the summary
    from krabby.hal.server import HalError
    from krabby.parkour.policy import PolicyLoadError

    if args.export_model and args.duration <= 0:  # only the model: no policy, no loop
        from krabby.hal.backends.mujoco_backend import MujocoBackend, MujocoBackendConfig

        backend = MujocoBackend(MujocoBackendConfig(robot=args.robot, terrain=args.terrain, seed=args.seed, difficulty=args.difficulty))
        backend.connect()
        print(f"model: {backend.export_model(args.export_model)}")
        backend.disconnect()
        return 0
    try:
        summary = run(args)
    except (HalError, PolicyLoadError, ValueError, FileNotFoundError) as e:
        print(f"krabby-hal-server-mujoco: {e}", file=sys.stderr)
        return 2
    text = json.dumps(summary, indent=2, default=lambda o: None if isinstance(o, float) and math.isnan(o) else str(o))
    if args.summary:
        Path(args.summary).parent.mkdir(parents=True, exist_ok=True)
        Path(args.summary).write_text(text + "\n")
    print(f"{summary['terrain']}: {summary['distance_m']:.2f} m in {summary['sim_time_s']:.0f} s, falls {summary['falls']}, "
          f"goals {summary['goals_reached']}, watchdog trips {summary['safety']['watchdog_trips']}, "
          f"{summary['control_rate_hz_achieved']:.0f} Hz achieved ({summary['mode']})")
    if args.summary:
        print(f"summary: {args.summary}")
    if summary.get("video"):
        print(f"video:   {summary['video']}")
    elif args.video:
        print(f"video:   not written ({summary.get('video_error')})")
    if args.record:
        print(f"log:     {args.record}  (check it with: krabby-replay {args.record})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
