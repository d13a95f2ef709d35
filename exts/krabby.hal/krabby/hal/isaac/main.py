"""krabby-hal-server-isaac: serve an Isaac Lab env through the HAL, with the inference client in the same process.

    krabby-hal-server-isaac --task Isaac-Extreme-Parkour-Teacher-Unitree-Go2-Play-v0 \\
        --checkpoint logs/model_50000.pt --headless
    python -m krabby.hal.isaac.main --task ... --checkpoint ... --headless

Every Isaac Lab AppLauncher flag is accepted (``--headless``, ``--device``, ``--enable_cameras``,
``--livestream``, ``--kit_args`` ...); ``--device`` is also the policy's torch device. With
``--server-only`` (or without ``--checkpoint``) only the HAL is served and an external client (another
process, another machine) drives the env; ``--deploy PROFILE`` or the key flags (``--key-dir``,
``--allow-dir`` ...) make that tcp with CURVE, as for every server entry point
(krabby.hal.deploy.server_flags). ``--config run.toml`` reads flags from a file (keys = flag names);
flags on the line override it.

    krabby-hal-server-isaac --task ... --server-only --deploy robot_tcp --headless

Order, as Isaac Lab requires: parse the arguments, launch the app, and only then import gymnasium,
torch and isaaclab_tasks and ``gym.make`` the task. The env is stepped in lock-step with the HAL:
publish the observation, wait (bounded) for the command computed from it, convert the absolute joint
targets back to the env's action units, ``env.step``.

Action units: the env's joint-position action term computes ``target = offset + scale * a``
(offset = the default joint pose, scale = 0.25 for the parkour Go2), so a HAL target becomes
``a = (target - offset) / scale`` in the action term's joint order, matched BY NAME. Damp /
zero-torque commands (safety) become "target = measured position", i.e. damping only. The env's own
action delay is switched off (``use_delay = False``): the inference client already applies the
student's one-step delay, and a second one would double it.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np

from .versions import isaac_lab_version_problem

INSTALL_HINT = (
    "krabby-hal-server-isaac needs Isaac Lab 2.3 on Isaac Sim 5.1 in this Python: install both (Isaac Lab's pip "
    "installation guide), or run it as `./isaaclab.sh -p -m krabby.hal.isaac.main ...`; see exts/krabby.hal/docs/isaac.md"
)

#: AppLauncher adds these flags (Isaac Lab 2.3 source/isaaclab/isaaclab/app/app_launcher.py:264-361); defining
#: one ourselves makes it raise ValueError (:426-455) or argparse refuse the duplicate option.
APP_LAUNCHER_RESERVED = frozenset({
    "headless", "livestream", "enable_cameras", "xr", "device", "cpu", "verbose", "info", "experience", "rendering_mode",
    "kit_args", "anim_recording_enabled", "anim_recording_start_time", "anim_recording_stop_time",
})
EXAMPLE_TASK = "Isaac-Extreme-Parkour-Teacher-Unitree-Go2-Play-v0"
log = logging.getLogger("krabby.hal.isaac.main")


# ------------------------------------------------------------------------------------ arguments
def build_parser(add_app_launcher_args: Optional[Callable[[argparse.ArgumentParser], None]] = None) -> argparse.ArgumentParser:
    # the flags every Krabby runner shares (krabby.parkour.cli: one-line errors, --config; run_outputs:
    # --live-view), imported here and not at module level: this module is the one in krabby.hal allowed to
    # import krabby.parkour (tests/test_layout.py), and only where it is needed
    from krabby.parkour.cli import OneLineParser, add_config_flag, add_policy_flags, positive
    from krabby.parkour.run_outputs import add_live_view_flags

    from ..deploy.server_flags import add_server_flags

    p = OneLineParser(
        prog="krabby-hal-server-isaac",
        description="Serve an Isaac Lab env through the Krabby HAL (ZeroMQ) and run the parkour policy against it. "
                    "Flags it does not know go on to Kit.",
    )
    add_config_flag(p)
    # not argparse-required: AppLauncher parses sys.argv while adding its flags, with --help switched off
    # (app_launcher.py:238-247), so a required flag would turn --help into an error; checked after parsing
    p.add_argument("--task", default=None, help=f"(required) gym id of the Isaac Lab task, e.g. {EXAMPLE_TASK}")
    add_policy_flags(p, checkpoint_help="policy checkpoint (.pt / .onnx) run in-process (default: none, serve the HAL only, as --server-only)",
                     control_rate_default="the env's, 1/step_dt")
    p.add_argument("--server-only", action="store_true",
                   help="no built-in policy: serve the HAL to an outside client (the same as omitting --checkpoint)")
    p.add_argument("--robot", "--robot_profile", dest="robot", default="go2", help="robot profile name or .toml path (default go2)")
    p.add_argument("--speed", "--forward_speed", dest="speed", type=float, default=0.5,
                   help="commanded forward speed, m/s (default 0.5)")
    p.add_argument("--lockstep-timeout-s", "--lockstep_timeout_s", dest="lockstep_timeout_s", type=positive("seconds", allow_zero=True),
                   default=0.5, help="longest wait for the command of each observation, s (default 0.5; 0 = never wait)")
    p.add_argument("--max-steps", "--max_steps", dest="max_steps", type=int, default=0,
                   help="stop after this many control steps (default 0 = run until the app closes)")
    p.add_argument("--keep-env-action-delay", "--keep_env_action_delay", dest="keep_env_action_delay", action="store_true",
                   help="keep the env's own action delay (default: switched off, the inference client applies it)")
    add_live_view_flags(p)  # the same --live-view flags as every runner
    add_server_flags(p)  # --observation-bind, --command-bind, --deploy, CURVE keys, --insecure-tcp
    if add_app_launcher_args is not None:
        add_app_launcher_args(p)  # --headless, --device, --enable_cameras, --livestream, --kit_args, ...
    return p


def validate_args(args: argparse.Namespace) -> list[str]:
    """Problems a user can fix, one line each (checked before the app is launched)."""
    errors = []
    if not args.task:
        errors.append(f"--task is required, e.g. --task {EXAMPLE_TASK}")
    if args.server_only and args.checkpoint is not None:
        errors.append("--server-only and --checkpoint exclude each other: --server-only serves the HAL to an outside client, "
                      "--checkpoint runs a policy in-process; give one")
    elif args.checkpoint is not None and not Path(args.checkpoint).expanduser().is_file():
        errors.append(f"--checkpoint {args.checkpoint!r} not found")
    if args.action_dim <= 0 or args.obs_dim <= 0:
        errors.append("--action-dim and --obs-dim must be positive")
    if args.max_steps < 0:
        errors.append("--max-steps must be >= 0 (0 = run until the app closes)")
    for name in ("observation_bind", "command_bind"):
        ep = getattr(args, name)
        if ep is not None and not ep.startswith(("inproc://", "tcp://", "ipc://")):
            errors.append(f"--{name.replace('_', '-')} {ep!r} must start with inproc://, tcp:// or ipc://")
    return errors


def serving_configs(args: argparse.Namespace) -> tuple[Any, Any]:
    """(HalServerConfig, HalClientConfig of the in-process policy client or None) from the serving flags.

    The inproc defaults and ``arm_on_start`` unless ``--deploy`` says otherwise (krabby.hal.deploy.server_flags);
    ValueError / HalError with a message a user can act on (a profile or key that cannot be read).
    """
    import dataclasses

    from ..deploy.server_flags import server_and_client_configs
    from ..safety import SafetyConfig

    own_client = bool(args.checkpoint) and not args.server_only
    server_cfg, client_cfg = server_and_client_configs(args, SafetyConfig(arm_on_start=True), own_client=own_client)
    if client_cfg is not None:
        client_cfg = dataclasses.replace(client_cfg, client_name="krabby-hal-server-isaac")
    return server_cfg, client_cfg


# ---------------------------------------------------------------------------------- action units
@dataclass(frozen=True)
class ActionUnits:
    """The env's joint-position action: target = offset + scale * clip(a), in the action term's joint order.

    ``clip_lo`` / ``clip_hi`` are the term's raw-action clip (Isaac Lab 2.3 JointAction ``_clip``,
    source/isaaclab/isaaclab/envs/mdp/actions/joint_actions.py:100-109; the parkour Go2 term clamps to
    +-4.8 before scaling, Isaaclab_Parkour parkour_isaaclab/envs/mdp/parkour_actions/joint_actions.py:50-53,
    parkour_tasks/.../config/go2/parkour_mdp_cfg.py:349): a target further than 4.8 * 0.25 = 1.2 rad from
    the default pose is clipped by the env. ``clip`` models it so it can be reported.
    """

    joint_names: tuple[str, ...]
    offset_rad: np.ndarray
    scale: np.ndarray
    clip_lo: Any = -np.inf
    clip_hi: Any = np.inf

    def __post_init__(self) -> None:
        n = len(self.joint_names)
        for name in ("offset_rad", "scale", "clip_lo", "clip_hi"):
            object.__setattr__(self, name, np.broadcast_to(np.asarray(getattr(self, name), dtype=np.float64), (n,)).copy())
        if np.any(self.scale == 0) or not np.all(np.isfinite(self.scale)):
            raise ValueError(f"action scale must be finite and non-zero, got {self.scale.tolist()}")
        if np.any(self.clip_lo > self.clip_hi):
            raise ValueError("action clip: lower bound above the upper bound")

    @classmethod
    def from_profile(cls, profile) -> "ActionUnits":
        """The training action term of the profile: policy joint order, default pose offset, action_scale, action_clip."""
        clip = profile.action_clip
        return cls(tuple(profile.policy_joint_names), profile.to_policy_order(profile.default_pos_rad), profile.action_scale, -clip, clip)

    def clip(self, actions: np.ndarray) -> tuple[np.ndarray, tuple[str, ...]]:
        """(actions as the env clips them, names of the joints it clipped)."""
        a = np.asarray(actions, dtype=np.float64)
        clipped = np.clip(a, self.clip_lo, self.clip_hi)
        return clipped, tuple(n for n, before, after in zip(self.joint_names, a, clipped) if before != after)

    @classmethod
    def from_action_term(cls, term: Any, robot_joint_names: Sequence[str], default_joint_pos: np.ndarray) -> "ActionUnits":
        """From an Isaac Lab JointPositionAction term: its joints, resolved scale and offset (or its cfg)."""
        from .env_backend import to_numpy

        names = list(getattr(term, "_joint_names", None) or robot_joint_names)
        scale = getattr(term, "_scale", None)
        offset = getattr(term, "_offset", None)
        cfg = getattr(term, "cfg", None)
        if scale is None:
            scale = getattr(cfg, "scale", 1.0)
        if offset is None:
            if getattr(cfg, "use_default_offset", False):
                ids = [list(robot_joint_names).index(n) for n in names]
                offset = np.asarray(default_joint_pos, dtype=np.float64)[ids]
            else:
                offset = getattr(cfg, "offset", 0.0)
        scale = to_numpy(scale) if not isinstance(scale, (int, float)) else scale
        offset = to_numpy(offset) if not isinstance(offset, (int, float)) else offset
        scale, offset = np.asarray(scale, dtype=np.float64), np.asarray(offset, dtype=np.float64)
        if scale.ndim == 2:  # (num_envs, joints)
            scale = scale[0]
        if offset.ndim == 2:
            offset = offset[0]
        lo, hi = _action_clip(term, names)
        return cls(tuple(names), offset, scale, lo, hi)

    def to_actions(self, targets_robot_rad: np.ndarray, profile) -> np.ndarray:
        """Absolute joint targets (robot order, rad) -> env actions a = (target - offset) / scale."""
        by_name = dict(zip(profile.joint_names, np.asarray(targets_robot_rad, dtype=np.float64)))
        missing = [n for n in self.joint_names if n not in by_name]
        if missing:
            raise ValueError(f"the env's action joints {', '.join(missing)} are not in robot profile {profile.name!r}")
        t = np.array([by_name[n] for n in self.joint_names])
        return (t - self.offset_rad) / self.scale

    def to_targets(self, actions: np.ndarray, profile) -> np.ndarray:
        """Env actions -> absolute targets in robot order (the inverse, e.g. for checks)."""
        t = self.offset_rad + self.scale * np.asarray(actions, dtype=np.float64)
        by_name = dict(zip(self.joint_names, t))
        return np.array([by_name[n] for n in profile.joint_names])


def _action_clip(term: Any, names: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """The term's raw-action clip (lo, hi) per joint: its resolved ``_clip`` (num_envs, joints, 2), else ``cfg.clip``."""
    from .env_backend import to_numpy

    lo, hi = np.full(len(names), -np.inf), np.full(len(names), np.inf)
    resolved = getattr(term, "_clip", None)
    if resolved is not None:
        c = to_numpy(resolved)
        c = c[0] if c.ndim == 3 else c
        return c[:, 0].copy(), c[:, 1].copy()
    spec = getattr(getattr(term, "cfg", None), "clip", None)
    for pattern, (low, high) in (spec or {}).items():  # {regex: (min, max)}, as Isaac Lab resolves it
        for i, name in enumerate(names):
            if re.fullmatch(pattern, name):
                lo[i], hi[i] = float(low), float(high)
    return lo, hi


def command_targets(command: Any, measured_pos_rad: np.ndarray) -> np.ndarray:
    """Joint targets (robot order) the env should track for a supervisor command.

    POSITION: the command's targets. DAMP / ZERO_TORQUE cannot be expressed as position actions; the
    target becomes the measured position, so the env's PD gives damping only (-kd * qd).
    """
    from ..types import ActuatorMode

    if command is None or command.mode != ActuatorMode.POSITION:
        return np.asarray(measured_pos_rad, dtype=np.float64).copy()
    return np.asarray(command.target_pos_rad, dtype=np.float64)


def disable_action_delay(env_cfg: Any) -> list[str]:
    """Switch off ``use_delay`` on every action term that has it; returns the names switched off."""
    actions = getattr(env_cfg, "actions", None)
    changed = []
    for name, term in (vars(actions).items() if actions is not None else []):
        if getattr(term, "use_delay", False):
            term.use_delay = False
            changed.append(name)
    return changed


def action_units_from_env(unwrapped: Any, profile) -> ActionUnits:
    """The single joint-position action term of the env, or the profile's training term if it cannot be read."""
    from .env_backend import to_numpy

    manager = getattr(unwrapped, "action_manager", None)
    robot = unwrapped.scene["robot"]
    if manager is not None:
        names = list(getattr(manager, "active_terms", []))
        if len(names) == 1:
            return ActionUnits.from_action_term(manager.get_term(names[0]), list(robot.joint_names), to_numpy(robot.data.default_joint_pos)[0])
        if len(names) > 1:
            raise ValueError(f"the env has {len(names)} action terms ({', '.join(names)}); krabby drives one joint-position term")
    return ActionUnits.from_profile(profile)


# --------------------------------------------------------------------------------------- loop
class EnvStepper:
    """Lock-step glue between a HalServer and an env: after publishing, wait for the command, convert it."""

    def __init__(self, server: Any, units: ActionUnits, profile, lockstep_timeout_s: float = 0.5):
        self.server, self.units, self.profile = server, units, profile
        self.lockstep_timeout_s = lockstep_timeout_s
        self.waits = 0
        self.timeouts = 0
        self.clipped_steps = 0  # control steps whose targets the env's action clip changed
        self._last_clip_log = -np.inf

    def actions_for(self, frame: Any) -> np.ndarray:
        """Env actions for the step after ``frame`` was published (robot order in, action order out)."""
        from ..safety import SafetyState

        server = self.server
        state = server.supervisor.state
        commanding = state == SafetyState.ACTIVE or (state == SafetyState.ARMED and server.status()["clients"] > 0)
        if commanding and self.lockstep_timeout_s > 0:
            self.waits += 1
            if server.wait_for_command(frame.state.stamp_ns, self.lockstep_timeout_s):
                server.actuate()
            else:
                self.timeouts += 1
        targets = command_targets(server.last_command, frame.state.joint_pos_rad)
        actions, clipped = self.units.clip(self.units.to_actions(targets, self.profile))
        if clipped:
            self.clipped_steps += 1
            now = time.monotonic()
            if now - self._last_clip_log >= 1.0:  # rate-limited: at most one line a second
                self._last_clip_log = now
                log.warning(
                    "the env clips the action of %s: targets further than %s rad from the default pose are not reached "
                    "(%d control steps clipped so far)", ", ".join(clipped),
                    "/".join(f"{v:.2f}" for v in sorted(set(np.round(self.units.clip_hi * np.abs(self.units.scale), 2)))),
                    self.clipped_steps,
                )
        return actions


def serve_env(env: Any, server: Any, units: ActionUnits, profile, *, is_running: Callable[[], bool],
              to_env_action: Callable[[np.ndarray], Any] = lambda a: a[None], max_steps: int = 0,
              lockstep_timeout_s: float = 0.5, on_reset: Optional[Callable[[], None]] = None,
              stepper: Optional[EnvStepper] = None) -> int:
    """Reset, then publish -> wait for command -> env.step until ``is_running()`` is false; returns steps run."""
    env.reset()
    frame = server.tick()
    stepper = stepper or EnvStepper(server, units, profile, lockstep_timeout_s)
    steps = 0
    while is_running() and (not max_steps or steps < max_steps):
        result = env.step(to_env_action(stepper.actions_for(frame)))
        if on_reset is not None and len(result) == 5:
            terminated, truncated = result[2], result[3]
            if bool(np.any(_np_bool(terminated)) or np.any(_np_bool(truncated))):
                on_reset()
        frame = server.tick()
        steps += 1
    return steps


def _np_bool(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=bool)


# --------------------------------------------------------------------------------------- main
def isaaclab_available() -> bool:
    return importlib.util.find_spec("isaaclab") is not None


def main(argv: Optional[Sequence[str]] = None) -> int:
    if not isaaclab_available():
        print(INSTALL_HINT, file=sys.stderr)
        return 1
    import isaaclab

    problem = isaac_lab_version_problem(str(getattr(isaaclab, "__version__", "")), importlib.util.find_spec("isaaclab_physx") is not None)
    if problem:
        print(problem, file=sys.stderr)
        return 1
    from isaaclab.app import AppLauncher

    if argv is not None:  # AppLauncher.add_app_launcher_args parses sys.argv itself: make it see these arguments
        sys.argv = [sys.argv[0]] + list(argv)
    from krabby.parkour.cli import parse_known_with_config

    from ..server import HalError

    parser = build_parser(AppLauncher.add_app_launcher_args)
    args, rest = parse_known_with_config(parser, argv)  # --config FILE, flags on the line override it
    errors = validate_args(args)
    if errors:
        parser.error("; ".join(errors))
    try:  # a deployment profile or key that cannot be read stops here, before the (slow) app launch
        configs = serving_configs(args)
    except (ValueError, HalError) as e:
        parser.error(str(e))
    sys.argv = [sys.argv[0]] + list(rest)  # our flags must not reach Kit / Hydra
    app_launcher = AppLauncher(args)
    simulation_app = app_launcher.app
    try:
        return run(args, simulation_app, configs)
    finally:
        simulation_app.close()


def run(args: argparse.Namespace, simulation_app: Any, configs: Optional[tuple[Any, Any]] = None) -> int:
    """Everything after the app is up: imports that need it, env, HAL server, in-process client, loop."""
    import gymnasium as gym
    import isaaclab_tasks  # noqa: F401 - registers the Isaac Lab tasks
    import torch
    import zmq
    from isaaclab_tasks.utils import parse_env_cfg

    try:  # the Isaaclab_Parkour tasks register themselves on import, when installed
        import parkour_tasks  # noqa: F401
    except ImportError:
        pass

    from ..robot_profile import load_robot_profile
    from ..server import HalError, HalServer
    from .articulation import HeadingHoldNavigation
    from .env_backend import IsaacLabEnvBackend

    device = getattr(args, "device", None) or "cuda:0"
    env_cfg = parse_env_cfg(args.task, device=device, num_envs=1)
    if not args.keep_env_action_delay:
        for name in disable_action_delay(env_cfg):
            print(f"krabby: switched off the env's action delay on term {name!r} (the inference client applies it)")
    env = gym.make(args.task, cfg=env_cfg)
    unwrapped = env.unwrapped
    profile = load_robot_profile(args.robot)
    units = action_units_from_env(unwrapped, profile)
    backend = IsaacLabEnvBackend(env, profile, navigation=HeadingHoldNavigation(args.speed))
    context = zmq.Context.instance()
    config, client_config = configs if configs is not None else serving_configs(args)
    try:
        server = HalServer(backend, config, context=context).start()
    except HalError as e:
        print(f"krabby-hal-server-isaac: {e}", file=sys.stderr)
        env.close()
        return 1
    runner = None
    try:
        if client_config is not None:  # --checkpoint: the policy client in this process
            from krabby.parkour.inference import InferenceOptions
            from krabby.parkour.run_outputs import live_view_config
            from krabby.parkour.panel_model import PolicyRunner, PolicyStartError

            runner = PolicyRunner()
            try:
                runner.start(
                    args.checkpoint, hal_client_config=client_config,
                    context=context, control_rate=args.control_rate or 1.0 / float(unwrapped.step_dt), device=device,
                    action_dim=args.action_dim, obs_dim=args.obs_dim, options=InferenceOptions(lockstep=True, live_view=live_view_config(args)),
                )
            except PolicyStartError as e:
                print(f"krabby-hal-server-isaac: {e}", file=sys.stderr)
                return 1
        print(f"krabby: serving {args.task} on {config.observation_bind} / {config.command_bind}"
              + (f" with {args.checkpoint}" if client_config is not None else " (no policy: waiting for an external client)"))
        t0 = time.perf_counter()
        stepper = EnvStepper(server, units, profile, args.lockstep_timeout_s)
        with torch.inference_mode():
            steps = serve_env(
                env, server, units, profile, is_running=simulation_app.is_running, max_steps=args.max_steps,
                to_env_action=lambda a: torch.as_tensor(a, dtype=torch.float32, device=unwrapped.device)[None],
                on_reset=backend.on_reset, stepper=stepper,
            )
        print(f"krabby: {steps} control steps in {time.perf_counter() - t0:.1f} s"
              + (f", {stepper.clipped_steps} with targets clipped by the env's action clip" if stepper.clipped_steps else ""))
        return 0
    finally:
        if runner is not None:
            runner.stop()
        server.close()
        env.close()


if __name__ == "__main__":
    sys.exit(main())
