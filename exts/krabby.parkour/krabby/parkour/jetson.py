"""The robot runner CLI (``jetson/run.py``, console script ``krabby-hal-server-jetson``).

Composes the robot-side stack (``krabby.hal.robot.runner.RobotStack``: Go2 over DDS, ZED Mini,
robot safety supervisor, HAL server) with the ``ParkourInferenceClient`` over inproc in one
process. It lives in krabby.parkour because krabby.hal never imports krabby.parkour (DESIGN §2).
Without ``--checkpoint`` it runs the HAL server alone, for a policy on another machine (tcp).

    python jetson/run.py --checkpoint model.pt                    # on the robot: dry run until you enable torque (--live)
    python jetson/run.py --sim --checkpoint model.pt --arm-policy # rehearsal on a laptop (simulated Go2 over DDS)

Imports nothing from Kit; Python 3.10 compatible (JetPack 6).
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading
import time
from pathlib import Path
from typing import Any, Optional

from .run_outputs import add_live_view_flags, live_view_config

log = logging.getLogger("krabby.parkour.jetson")


def build_parser() -> argparse.ArgumentParser:
    from .cli import OneLineParser, add_config_flag, add_policy_flags

    ap = OneLineParser(
        prog="krabby-hal-server-jetson",
        description="Run a parkour policy on the Go2 (or its simulated twin) through the Krabby HAL. "
                    "Dry run by default: zero torque until the operator enables it (needs --live).")
    add_config_flag(ap)
    add_policy_flags(ap, checkpoint_help="policy checkpoint (rsl_rl model_*.pt, TorchScript or ONNX); omit to run the HAL server only",
                     control_rate_default="the checkpoint's params/env.yaml, else 50")
    ap.add_argument("--server-only", action="store_true",
                    help="no built-in policy: serve the HAL to a policy on another machine (the same as omitting --checkpoint)")
    ap.add_argument("--device", default="cpu", help="torch device for the policy: cpu, cuda (default cpu)")
    ap.add_argument("--backend", choices=("torch", "onnx"), default=None,
                    help="inference runtime (default: onnx for an ONNX export, else torch)")
    ap.add_argument("--observation-bind", "--observation_bind", dest="observation_bind", default=None,
                    help="HAL telemetry endpoint (default: the deployment's, inproc)")
    ap.add_argument("--command-bind", "--command_bind", dest="command_bind", default=None,
                    help="HAL command endpoint (default: the deployment's, inproc)")
    ap.add_argument("--insecure-tcp", "--insecure_tcp", dest="insecure_tcp", action="store_true",
                    help="allow an unauthenticated tcp command channel (explicit opt-out)")
    ap.add_argument("--robot", default=None, help="robot profile name or path (default: the deployment's)")
    ap.add_argument("--deploy", default="go2_jetson",
                    help="deployment profile: config/deploy/<name>.toml or a path (binds, keys, safety; default go2_jetson)")
    ap.add_argument("--sim", action="store_true", help="use the simulated Go2 low-level node (MuJoCo over DDS on loopback)")
    ap.add_argument("--sim-physics", "--sim_physics", dest="sim_physics", choices=("mujoco", "double"), default="mujoco",
                    help="--sim: the simulated Go2's physics: mujoco, or double = a deterministic test double without physics (default mujoco)")
    ap.add_argument("--sim-terrain", "--sim_terrain", dest="sim_terrain", default="flat",
                    help="--sim with MuJoCo: the course under the simulated Go2 (default flat)")
    ap.add_argument("--release-sport-mode", "--release_sport_mode", dest="release_sport_mode", action="store_true",
                    help="release Unitree's sport-mode controller before writing rt/lowcmd (robot lying down); "
                         "default: refuse to start while it is on")
    ap.add_argument("--live", action="store_true", help="allow the operator to enable torque (on the robot; --sim always allows it)")
    ap.add_argument("--arm-policy", "--arm_policy", dest="arm_policy", action="store_true",
                    help="--sim only: enable torque, stand up and arm the policy by script")
    ap.add_argument("--script", default=None, help='timed operator actions, e.g. "1:stand_up,4:arm_policy,10:estop" (default none)')
    ap.add_argument("--camera", choices=("auto", "zed", "none"), default="auto",
                    help="depth camera (default auto: the ZED on the robot, none in --sim)")
    ap.add_argument("--domain", type=int, default=None, help="DDS domain id override (default: the deployment's; a random one in --sim)")
    ap.add_argument("--record", metavar="DIR", default="runs",
                    help="a FOLDER, not a file name: each run writes its MCAP log as DIR/robot[-sim]-<date>-<time>.mcap "
                         "(default runs; '' = no recording)")
    add_live_view_flags(ap)  # --live-view: watch in Foxglove; not --live, which allows torque
    ap.add_argument("--duration", type=float, default=None, help="stop after this many seconds (default: run until stopped)")
    ap.add_argument("--no-dashboard", "--no_dashboard", dest="no_dashboard", action="store_true",
                    help="log a status line every 2 s instead of the terminal dashboard")
    ap.add_argument("--no-keyboard", "--no_keyboard", dest="no_keyboard", action="store_true",
                    help="no operator keys on this terminal (the gamepad and --script still work)")
    ap.add_argument("-v", "--verbose", action="store_true", help="debug logging and tracebacks")
    return ap


def policy_input_problem(kind: str, action_dim: int, num_joints: int, provides: dict) -> str:
    """Why this policy cannot run on this stack ('' when it can): every input it needs must have a source."""
    if action_dim != num_joints:
        return f"the policy drives {action_dim} joints, the robot has {num_joints}"
    if kind == "teacher" and not provides.get("height_scan"):
        return ("it is a teacher policy: it needs a height scan, which only the simulator provides (--sim); "
                "on the robot run a student checkpoint (depth camera)")
    if kind == "student" and not provides.get("depth"):
        return "it is a student policy: it needs the depth camera, and this run has none (--camera none or [zed] enabled = false)"
    return ""


def _client_endpoint(bind: str) -> str:
    return bind.replace("tcp://*:", "tcp://127.0.0.1:").replace("tcp://0.0.0.0:", "tcp://127.0.0.1:")


class Runner:
    """The composed runner, usable from tests: ``start()``, ``view()``, ``stop()``."""

    def __init__(self, args: argparse.Namespace, context: Any = None):
        import zmq

        from krabby.hal.deploy.profile import load_deployment
        from krabby.hal.robot.deploy_config import DeployConfig
        from krabby.hal.robot.runner import RobotStack, StackOptions

        self.args = args
        self.context = context or zmq.Context()
        self._own_context = context is None
        deploy = DeployConfig.from_deployment(load_deployment(args.deploy), robot=args.robot)
        self.stack = RobotStack(deploy, StackOptions(
            sim=args.sim, live=args.live, camera=args.camera, script=args.script, arm_policy=args.arm_policy,
            domain_id=args.domain, sim_physics=args.sim_physics, sim_terrain=args.sim_terrain,
            keyboard=not args.no_keyboard, gamepad=not args.sim, insecure_tcp=args.insecure_tcp,
            observation_bind=args.observation_bind, command_bind=args.command_bind, defer_inputs=True,
            release_sport_mode=args.release_sport_mode), context=self.context)
        self.client: Any = None
        self.running = threading.Event()
        self.record_path: Optional[Path] = None

    def start(self) -> "Runner":
        policy = self._load_policy() if self.args.checkpoint else None  # refused before anything reaches the robot
        self.stack.start()
        if policy is not None:
            try:
                self._start_client(policy)
            except BaseException:
                self.stack.stop()
                raise
        self.stack.start_inputs()  # operator actions (and --arm-policy's script) only once the policy is ready
        return self

    def _load_policy(self) -> Any:
        from . import load_policy
        from .policy_formats import default_backend

        a, st = self.args, self.stack
        policy = load_policy(a.checkpoint, device=a.device, backend=a.backend or default_backend(a.checkpoint))
        why = policy_input_problem(policy.kind, policy.action_dim, st.profile.num_joints, st.provides())
        if why:
            raise ValueError(f"{a.checkpoint} cannot run here: {why}")
        return policy

    def _start_client(self, policy: Any) -> None:
        from .inference import InferenceOptions, ModelWeights, ParkourInferenceClient

        a, srv = self.args, self.stack.server
        assert srv is not None
        options = InferenceOptions(max_depth_age_s=self.stack.deploy.zed.max_frame_age_s + 0.1,  # + a HAL tick or two
                                   live_view=live_view_config(a))
        if a.record:
            try:
                import foxglove  # noqa: F401
                import mcap  # noqa: F401

                self.record_path = Path(a.record) / time.strftime(f"robot{'-sim' if a.sim else ''}-%Y%m%d-%H%M%S.mcap")
                options.record_path = str(self.record_path)
            except ImportError:
                log.warning("recording off: the MCAP library is missing (pip install 'krabby[record]')")
        self.client = ParkourInferenceClient(
            self.stack.deploy.deployment.client_config(
                observation_endpoint=_client_endpoint(srv.config.observation_bind),
                command_endpoint=_client_endpoint(srv.config.command_bind), client_name="jetson-runner"),
            model_weights=ModelWeights(a.checkpoint, action_dim=a.action_dim, obs_dim=a.obs_dim, backend=policy.backend),
            control_rate=a.control_rate, device=a.device, transport_context=self.context, options=options, policy=policy)
        self.client.on_step_result = self.stack.supervisor.policy_step_result
        self.client.initialize()
        if self.client.session is not None and self.client.session.live_url:
            print(f"live view: {self.client.session.live_url} (Foxglove: Open connection -> Foxglove WebSocket)", file=sys.stderr)
        self.running.set()
        self.client.start_thread(self.running)

    def view(self) -> tuple:
        """(status dict, per-joint arrays, operator messages) for the dashboard."""
        st = self.stack
        s = {"robot": st.robot_status(), "hal_state": st.server.supervisor.state.name if st.server else "-",
             "policy": self.client.metrics() if self.client is not None else None}
        joints = {}
        be = st.backend
        fb = be.lowlevel.latest() if be is not None else None
        if fb is not None:
            joints = {"q": fb.joint_pos_rad, "tau": fb.joint_tau_est_nm, "temp_c": fb.motor_temp_c}
        out = st.supervisor.last_output
        if out is not None:
            joints["target"] = (out.would_send or out).target_pos_rad
        return s, joints, list(st.messages)

    def stop(self) -> None:
        self.stack.request_stop("(runner stopping)")  # damp first: the policy client may take a while to stop
        self.running.clear()
        if self.client is not None:
            self.client.stop()
            self.client = None
        self.stack.stop()
        if self._own_context:
            self.context.term()


class _ExpectedRefusals(logging.Filter):
    """Drop the HAL's NOT_ARMED refusal lines: before the operator arms, every policy command is refused
    by design (the dashboard counts them)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "NOT_ARMED" not in record.getMessage()


def run(args: argparse.Namespace) -> int:
    from krabby.hal.robot.dashboard import Dashboard, status_line
    from krabby.hal.robot.shutdown import ShutdownHooks

    runner = Runner(args)
    # SIGTERM/SIGINT/SIGHUP and uncaught thread exceptions: damp now, then the damped stop below
    hooks = ShutdownHooks(runner.stack.request_stop).install()
    try:
        runner.start()
    except BaseException:
        hooks.uninstall()
        raise
    stop = threading.Event()
    if args.duration is not None:
        timer = threading.Timer(args.duration, stop.set)
        timer.daemon = True
        timer.start()
    quit_watch = threading.Thread(target=lambda: (runner.stack.quit.wait(), stop.set()), daemon=True)
    quit_watch.start()
    try:
        use_dash = not args.no_dashboard and sys.stdout.isatty()
        if use_dash:
            try:
                Dashboard(runner.stack.profile.joint_names).run(runner.view, stop)
            except ImportError:
                use_dash = False
        if not use_dash:
            while not stop.wait(2.0):
                log.warning("%s", status_line(runner.view()[0]))
    except KeyboardInterrupt:
        pass
    finally:
        runner.stop()
        hooks.uninstall()
        if runner.record_path is not None:
            print(f"run recorded to {runner.record_path}")
    return 0


def main(argv: Optional[list] = None) -> None:
    from .cli import parse_with_config

    parser = build_parser()
    args = parse_with_config(parser, argv)  # --config FILE, flags on the line override it
    if args.server_only and args.checkpoint:
        parser.error("--server-only and --checkpoint exclude each other: --server-only serves the HAL to a policy "
                     "on another machine, --checkpoint runs one here; give one")
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname).1s %(name)s: %(message)s")
    for name in ("krabby.hal.server", "krabby.parkour.inference"):
        logging.getLogger(name).addFilter(_ExpectedRefusals())
    from krabby.hal.devices.unitree_go_dds import DdsError
    from krabby.hal.robot.runner import RunnerError
    from krabby.hal.robot_profile import ProfileError
    from krabby.hal.server import HalError

    try:
        sys.exit(run(args))
    except (RunnerError, ProfileError, DdsError, HalError, FileNotFoundError, ValueError, RuntimeError) as e:
        if args.verbose:
            raise
        sys.exit(f"krabby-hal-server-jetson: {e}")


if __name__ == "__main__":
    main()
