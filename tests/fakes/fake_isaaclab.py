"""FAKES of the Isaac Lab surface krabby-hal-server-isaac uses (AppLauncher, gym.make'd env, sensors). Not Isaac Lab.

The env is a numpy stand-in with Isaac Lab 2.3's buffer names and shapes (num_envs = 1): joints in
Isaac (policy) order, a JointPositionAction term (scale 0.25, default offset), a contact sensor, a
height scanner and a RayCasterCamera output. ``step`` moves each joint halfway to its target.
"""

from __future__ import annotations

import argparse
import importlib.machinery
import math
import sys
import types
from typing import Any, Optional

import numpy as np

class ExplicitAction(argparse.Action):
    """app_launcher.py:29-36: records that the flag was given."""

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, values)
        setattr(namespace, f"{self.dest}_explicit", True)


#: app_launcher.py:373-381 (names AppLauncher adds itself) and :386-410 (SimulationApp keys and their types)
APPLAUNCHER_CFG_INFO = {"headless": False, "livestream": -1, "enable_cameras": False, "xr": False, "device": "cuda:0",
                        "experience": "", "rendering_mode": "balanced"}
SIM_APP_CFG_TYPES = {"headless": [bool], "hide_ui": [bool, type(None)], "active_gpu": [int, type(None)], "physics_gpu": [int],
                     "multi_gpu": [bool], "sync_loads": [bool], "width": [int], "height": [int], "window_width": [int],
                     "window_height": [int], "display_options": [int], "subdiv_refinement_level": [int], "renderer": [str],
                     "anti_aliasing": [int], "samples_per_pixel_per_frame": [int], "denoiser": [bool], "max_bounces": [int],
                     "max_specular_transmission_bounces": [int], "max_volume_bounces": [int], "open_usd": [str, type(None)],
                     "livesync_usd": [str, type(None)], "fast_shutdown": [bool], "experience": [str]}


def add_app_launcher_args(parser: argparse.ArgumentParser) -> None:
    """AppLauncher.add_app_launcher_args of Isaac Lab 2.3 (app_launcher.py:178-367), step for step.

    It takes -h/--help off the parser, PARSES sys.argv (not the caller's argv) to check the caller's
    flags for clashes, adds its own flags, and puts help back.
    """
    parser_help = None
    if len(parser._actions) > 0 and isinstance(parser._actions[0], argparse._HelpAction):
        parser_help = parser._actions[0]
        parser._option_string_actions.pop("-h")
        parser._option_string_actions.pop("--help")
    known, _ = parser.parse_known_args()
    config = vars(known)
    for key in config:
        if key in APPLAUNCHER_CFG_INFO:
            raise ValueError(f"The passed ArgParser object already has the field '{key}'. This field will be added by"
                             " `AppLauncher.add_app_launcher_args()`, and should not be added directly.")
    for key, value in config.items():
        if key in SIM_APP_CFG_TYPES and type(value) not in set(SIM_APP_CFG_TYPES[key]):
            raise ValueError(f"Invalid value type for the argument '{key}': {type(value)}.")
    g = parser.add_argument_group("app_launcher arguments", description="Arguments for the AppLauncher.")
    g.add_argument("--headless", action="store_true", default=False, help="Force display off at all times.")
    g.add_argument("--livestream", type=int, default=-1, choices={0, 1, 2}, help="Force enable livestreaming.")
    g.add_argument("--enable_cameras", action="store_true", default=False, help="Enable camera sensors.")
    g.add_argument("--xr", action="store_true", default=False, help="Enable XR mode.")
    g.add_argument("--device", type=str, action=ExplicitAction, default="cuda:0", help="The device to run the simulation on.")
    g.add_argument("--cpu", action="store_true", help=argparse.SUPPRESS)
    g.add_argument("--verbose", action="store_true", help="Enable verbose-level log output from the SimulationApp.")
    g.add_argument("--info", action="store_true", help="Enable info-level log output from the SimulationApp.")
    g.add_argument("--experience", type=str, default="", help="The experience file to load.")
    g.add_argument("--rendering_mode", type=str, action=ExplicitAction, choices={"performance", "balanced", "quality"},
                   help="Sets the rendering mode.")
    g.add_argument("--kit_args", type=str, default="", help="Command line arguments for Omniverse Kit.")
    g.add_argument("--anim_recording_enabled", action="store_true", help="Enable recording time-sampled USD animations.")
    g.add_argument("--anim_recording_start_time", type=float, default=0, help="Animation recording start time.")
    g.add_argument("--anim_recording_stop_time", type=float, default=10, help="Animation recording stop time.")
    if parser_help is not None:
        parser._option_string_actions["-h"] = parser_help
        parser._option_string_actions["--help"] = parser_help


class _Data(types.SimpleNamespace):
    pass


class FakeRobot:
    def __init__(self, profile):
        self.joint_names = list(profile.policy_joint_names)
        default = profile.to_policy_order(profile.default_pos_rad)
        yaw = 0.4
        self.data = _Data(
            joint_pos=default[None].copy() + 0.01, joint_vel=np.zeros((1, 12)), applied_torque=np.full((1, 12), 0.5),
            default_joint_pos=default[None].copy(),
            root_quat_w=np.array([[math.cos(yaw / 2), 0.0, 0.0, math.sin(yaw / 2)]]),
            root_ang_vel_b=np.array([[0.0, 0.0, 0.1]]), root_lin_vel_b=np.array([[0.5, 0.0, 0.0]]),
            root_lin_vel_w=np.array([[0.5 * math.cos(yaw), 0.5 * math.sin(yaw), 0.0]]),
        )


class FakeActionTerm:
    """The parkour DelayedJointPositionAction: raw actions clamped to +-4.8 (cfg.clip), then offset + scale * a."""

    def __init__(self, robot: FakeRobot, scale: float, private: bool = True, clip: float = 4.8):
        self.cfg = types.SimpleNamespace(scale=scale, use_default_offset=True, use_delay=True, clip={".*": (-clip, clip)})
        if private:
            self._joint_names = list(robot.joint_names)
            self._scale = scale
            self._offset = robot.data.default_joint_pos.copy()
            self._clip = np.tile(np.array([-clip, clip]), (1, len(robot.joint_names), 1))  # (num_envs, joints, 2)

    def process(self, actions: np.ndarray) -> np.ndarray:
        """joint_actions.py:50-54 of Isaaclab_Parkour: clamp the raw actions, then scale and offset."""
        lo, hi = self.cfg.clip[".*"]
        return np.clip(actions, lo, hi) * self.cfg.scale + self._offset


class FakeEnv:
    """gym.make(...) result: ``.unwrapped`` is itself (like a ManagerBasedRLEnv without wrappers)."""

    def __init__(self, profile, terminate_at: Optional[int] = None):
        self.profile = profile
        self.robot = FakeRobot(profile)
        feet_bodies = ["base"] + list(profile.policy_foot_names)  # sensor body order differs from robot foot order
        k = profile.height_scan.num_points
        cam = profile.camera
        self.scene = _Scene({"robot": self.robot}, {
            "contact_forces": types.SimpleNamespace(
                body_names=feet_bodies,
                data=_Data(net_forces_w=np.array([[[0, 0, 0.0]] + [[0.0, 3.0 * (i + 1), 4.0 * (i + 1)] for i in range(4)]]))),
            "height_scanner": types.SimpleNamespace(data=_Data(
                pos_w=np.array([[0.0, 0.0, 0.42]]),
                ray_hits_w=np.concatenate([np.zeros((1, k - 1, 3)), np.array([[[0.0, 0.0, np.inf]]])], axis=1))),
            "depth_camera": types.SimpleNamespace(data=_Data(output={"distance_to_camera": np.full((1, cam.height_px, cam.width_px, 1), 1.5)})),
        })
        self.step_dt = 0.02
        self.device = "cpu"
        self.action_manager = types.SimpleNamespace(active_terms=["joint_pos"], get_term=lambda name: self.term)
        self.term = FakeActionTerm(self.robot, profile.action_scale)
        self.actions: list[np.ndarray] = []
        self.resets = 0
        self.closed = False
        self.terminate_at = terminate_at

    @property
    def unwrapped(self) -> "FakeEnv":
        return self

    def reset(self):
        self.resets += 1
        return {"policy": np.zeros((1, 753))}, {}

    def step(self, action):
        a = np.asarray(action, dtype=np.float64)
        assert a.shape == (1, 12), a.shape
        self.actions.append(a[0].copy())
        target = self.term.process(a)
        d = self.robot.data
        new = d.joint_pos + 0.5 * (target - d.joint_pos)
        d.joint_vel = (new - d.joint_pos) / self.step_dt
        d.joint_pos = new
        terminated = np.array([self.terminate_at is not None and len(self.actions) == self.terminate_at])
        return {"policy": np.zeros((1, 753))}, np.zeros(1), terminated, np.array([False]), {}

    def close(self) -> None:
        self.closed = True


class _Scene:
    def __init__(self, assets: dict, sensors: dict):
        self._assets, self.sensors = assets, sensors

    def __getitem__(self, key: str):
        return self._assets[key] if key in self._assets else self.sensors[key]


class FakeEnvCfg:
    def __init__(self):
        self.actions = types.SimpleNamespace(joint_pos=types.SimpleNamespace(use_delay=True, scale=0.25))


def install_fake_isaaclab(monkeypatch, profile, calls: list, *, app_running_steps: int = 1000, env_kwargs: Optional[dict] = None) -> dict:
    """Fake isaaclab.app / isaaclab_tasks / gymnasium in sys.modules; ``calls`` records the order of events."""
    made: dict[str, Any] = {}

    class FakeApp:
        def __init__(self):
            self.n = 0
            self.closed = False

        def is_running(self) -> bool:
            self.n += 1
            return self.n <= app_running_steps

        def close(self) -> None:
            calls.append("app.close")
            self.closed = True

    class AppLauncher:
        add_app_launcher_args = staticmethod(add_app_launcher_args)

        def __init__(self, args):
            calls.append("launch")
            made["launcher_args"] = args
            made["argv_at_launch"] = list(sys.argv)
            self.app = FakeApp()
            made["app"] = self.app

    def module(name: str, **attrs: Any) -> types.ModuleType:
        m = types.ModuleType(name)
        m.__dict__.update(attrs)
        m.__spec__ = importlib.machinery.ModuleSpec(name, None)
        m.__path__ = []
        monkeypatch.setitem(sys.modules, name, m)
        return m

    def parse_env_cfg(task, device="cuda:0", num_envs=None, use_fabric=None):
        calls.append("parse_env_cfg")
        made["env_cfg_args"] = (task, device, num_envs)
        made["env_cfg"] = FakeEnvCfg()
        return made["env_cfg"]

    def make(task, cfg=None, **kw):
        calls.append("gym.make")
        made["env"] = FakeEnv(profile, **(env_kwargs or {}))
        return made["env"]

    module("isaaclab", __version__="0.47.3")  # the isaaclab package of Isaac Lab 2.3
    module("isaaclab.app", AppLauncher=AppLauncher)
    module("isaaclab_tasks")
    module("isaaclab_tasks.utils", parse_env_cfg=parse_env_cfg)
    module("gymnasium", make=make)
    return made


__all__ = ["add_app_launcher_args", "FakeEnv", "FakeEnvCfg", "install_fake_isaaclab", "APPLAUNCHER_CFG_INFO"]
