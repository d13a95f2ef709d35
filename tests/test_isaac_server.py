"""krabby-hal-server-isaac: arguments, action-unit conversion, the env backend and the lock-step loop,
against FAKES of Isaac Lab (tests/fakes/fake_isaaclab.py); the real HalServer / HalClient / inference client."""

from __future__ import annotations

import subprocess
import sys
import threading
import uuid
from types import SimpleNamespace

import numpy as np
import pytest

from fakes.fake_isaaclab import FakeEnv, FakeEnvCfg, add_app_launcher_args, install_fake_isaaclab

from krabby.hal.isaac import main as server_main
from krabby.hal.isaac.env_backend import IsaacLabEnvBackend
from krabby.hal.isaac.main import (
    APP_LAUNCHER_RESERVED, ActionUnits, EnvStepper, action_units_from_env, build_parser, command_targets,
    disable_action_delay, serve_env, validate_args,
)
from krabby.hal.types import ActuatorCommand, ActuatorMode


# ------------------------------------------------------------------------------- arguments
def test_parser_has_our_flags_and_every_app_launcher_flag(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["krabby-hal-server-isaac"])  # AppLauncher parses sys.argv while adding its flags
    ours = build_parser(None)
    assert not any(f"--{name}" in ours._option_string_actions for name in APP_LAUNCHER_RESERVED)
    p = build_parser(add_app_launcher_args)  # the fake raises on a clash, as AppLauncher does
    ckpt = tmp_path / "m.pt"
    ckpt.write_bytes(b"x")
    args, rest = p.parse_known_args([
        "--task", "Isaac-Extreme-Parkour-Teacher-Unitree-Go2-Play-v0", "--checkpoint", str(ckpt), "--action_dim", "12",
        "--obs_dim", "753", "--control_rate", "50", "--device", "cuda:1", "--observation_bind", "tcp://*:5555",
        "--command_bind", "tcp://*:5556", "--headless", "--enable_cameras", "--/app/some/kit=1",
    ])
    assert args.task.startswith("Isaac-") and args.control_rate == 50.0 and args.device == "cuda:1"
    assert args.headless and args.enable_cameras and args.observation_bind == "tcp://*:5555"
    assert rest == ["--/app/some/kit=1"]  # unknown flags go on to Kit
    assert validate_args(args) == []
    defaults = p.parse_args(["--task", "T"])
    assert (defaults.checkpoint, defaults.action_dim, defaults.obs_dim, defaults.control_rate) == (None, 12, 753, None)
    served, client = server_main.serving_configs(defaults)  # the binds: flag, else --deploy's, else inproc
    assert (served.observation_bind, served.command_bind, client) == ("inproc://hal_observation", "inproc://hal_commands", None)
    assert validate_args(p.parse_args([])) == ["--task is required, e.g. --task Isaac-Extreme-Parkour-Teacher-Unitree-Go2-Play-v0"]
    live = p.parse_args(["--task", "T", "--live-view", "--live-view-port", "9001"])
    assert (live.live_view, live.live_view_host, live.live_view_port) == (True, "127.0.0.1", 9001)
    assert defaults.live_view is False


def test_validate_args_reports_every_problem(tmp_path):
    p = build_parser(None)
    args = p.parse_args(["--task", "T", "--checkpoint", str(tmp_path / "none.pt"), "--obs_dim", "0",
                         "--max-steps", "-1", "--command_bind", "localhost:5"])
    errors = validate_args(args)
    assert len(errors) == 4
    assert any("not found" in e for e in errors) and any("--command-bind" in e for e in errors)


def _exit_of_main_with_sys_argv(monkeypatch, profile, *args: str) -> tuple[int, list[str]]:
    """Run the console script as a shell would (sys.argv, no argv) against the fake Isaac Lab; it must exit."""
    calls: list[str] = []
    install_fake_isaaclab(monkeypatch, profile, calls)
    monkeypatch.setattr(sys, "argv", ["krabby-hal-server-isaac", *args])
    with pytest.raises(SystemExit) as e:
        server_main.main()
    return e.value.code, calls


def test_help_prints_usage_with_app_launcher_flags(monkeypatch, profile, capsys):
    """The real add_app_launcher_args parses sys.argv with --help switched off: a required --task made --help exit 2."""
    assert _exit_of_main_with_sys_argv(monkeypatch, profile, "--help") == (0, [])
    out = capsys.readouterr().out
    assert "--task" in out and "--checkpoint" in out and "--headless" in out and "--kit_args" in out


def test_missing_task_is_one_clear_error_before_launching(monkeypatch, profile, capsys):
    assert _exit_of_main_with_sys_argv(monkeypatch, profile, "--headless") == (2, [])
    assert "--task is required" in capsys.readouterr().err


@pytest.mark.parametrize("newer", ["version", "isaaclab_physx"])
def test_isaac_lab_3_is_refused_in_one_line(monkeypatch, profile, capsys, newer):
    import importlib.machinery
    import types

    calls: list[str] = []
    install_fake_isaaclab(monkeypatch, profile, calls)
    if newer == "version":
        monkeypatch.setattr(sys.modules["isaaclab"], "__version__", "3.5.3")
    else:
        physx = types.ModuleType("isaaclab_physx")
        physx.__spec__ = importlib.machinery.ModuleSpec("isaaclab_physx", None)
        monkeypatch.setitem(sys.modules, "isaaclab_physx", physx)
    assert server_main.main(["--task", "T", "--headless"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Isaac Lab 2.x" in err[0] and calls == []


def test_without_isaac_lab_one_line_and_nonzero_exit():
    out = subprocess.run([sys.executable, "-m", "krabby.hal.isaac.main", "--task", "X", "--headless"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode != 0
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "Isaac Lab" in lines[0] and "install" in lines[0], out.stderr
    assert out.stdout == ""


# ------------------------------------------------------------------------------ action units
def test_action_units_from_profile_invert_the_training_action_term(profile):
    u = ActionUnits.from_profile(profile)
    assert u.to_actions(profile.default_pos_rad, profile) == pytest.approx(np.zeros(12))
    targets = profile.default_pos_rad.copy()
    targets[profile.joint_index("FR_hip_joint")] += 0.25
    a = u.to_actions(targets, profile)
    i = profile.policy_joint_names.index("FR_hip_joint")  # action order = Isaac (policy) order
    assert a[i] == pytest.approx(1.0) and np.count_nonzero(a) == 1
    rng = np.random.default_rng(3)
    a = rng.uniform(-4.8, 4.8, 12)
    assert u.to_actions(u.to_targets(a, profile), profile) == pytest.approx(a)


def test_action_units_from_an_action_term(profile):
    env = FakeEnv(profile)
    from_private = action_units_from_env(env, profile)
    ref = ActionUnits.from_profile(profile)
    assert from_private.joint_names == ref.joint_names
    assert from_private.offset_rad == pytest.approx(ref.offset_rad) and from_private.scale == pytest.approx(ref.scale)
    cfg_only = SimpleNamespace(cfg=SimpleNamespace(scale=0.25, use_default_offset=True))
    from_cfg = ActionUnits.from_action_term(cfg_only, env.robot.joint_names, env.robot.data.default_joint_pos[0])
    assert from_cfg.offset_rad == pytest.approx(ref.offset_rad) and from_cfg.scale == pytest.approx(ref.scale)
    with pytest.raises(ValueError, match="non-zero"):
        ActionUnits(("a",), 0.0, 0.0)
    with pytest.raises(ValueError, match="not in robot profile"):
        ActionUnits(("elbow",), 0.0, 1.0).to_actions(profile.default_pos_rad, profile)


def test_action_clip_is_modelled_and_reported(profile, caplog):
    """The parkour term clamps raw actions to +-4.8: a target more than 1.2 rad from the default pose is clipped."""
    env = FakeEnv(profile)
    units = action_units_from_env(env, profile)
    assert units.clip_hi == pytest.approx(np.full(12, 4.8)) and units.clip_lo == pytest.approx(np.full(12, -4.8))
    assert ActionUnits.from_profile(profile).clip_hi == pytest.approx(np.full(12, profile.action_clip))
    cfg_only = SimpleNamespace(cfg=SimpleNamespace(scale=0.25, use_default_offset=True, clip={".*_calf_joint": (-1.0, 2.0)}))
    from_cfg = ActionUnits.from_action_term(cfg_only, env.robot.joint_names, env.robot.data.default_joint_pos[0])
    calf = [n.endswith("_calf_joint") for n in from_cfg.joint_names]
    assert np.all(from_cfg.clip_hi[calf] == 2.0) and np.all(np.isinf(from_cfg.clip_hi[~np.array(calf)]))
    server, _ = _server(profile, env)
    try:
        stepper = EnvStepper(server, units, profile, lockstep_timeout_s=0.0)
        frame = server.tick()
        targets = profile.default_pos_rad.copy()
        targets[profile.joint_index("FL_calf_joint")] += 1.5  # 6.0 in action units
        server.last_command = ActuatorCommand(ActuatorMode.POSITION, targets, profile.kp_nm_per_rad, profile.kd_nm_s_per_rad)
        with caplog.at_level("WARNING", logger="krabby.hal.isaac.main"):
            a = stepper.actions_for(frame)
            stepper.actions_for(frame)
        i = units.joint_names.index("FL_calf_joint")
        assert a[i] == pytest.approx(4.8) and stepper.clipped_steps == 2
        lines = [r.getMessage() for r in caplog.records if "clips" in r.getMessage()]
        assert len(lines) == 1 and "FL_calf_joint" in lines[0] and "1.20" in lines[0]  # once a second at most
        env.step(a[None])
        assert env.actions[-1][i] == pytest.approx(4.8)
    finally:
        server.close()


def test_command_targets_and_action_delay(profile):
    q = np.arange(12.0)
    damp = ActuatorCommand(ActuatorMode.DAMP, np.zeros(12), np.zeros(12), np.ones(12))
    assert command_targets(damp, q) == pytest.approx(q)  # damping only: track the measured position
    assert command_targets(None, q) == pytest.approx(q)
    pos = ActuatorCommand(ActuatorMode.POSITION, np.ones(12), np.zeros(12), np.zeros(12))
    assert command_targets(pos, q) == pytest.approx(np.ones(12))
    cfg = FakeEnvCfg()
    assert disable_action_delay(cfg) == ["joint_pos"] and cfg.actions.joint_pos.use_delay is False
    assert disable_action_delay(cfg) == []


# ------------------------------------------------------------------------------ env backend
def test_env_backend_reads_by_name(profile):
    env = FakeEnv(profile)
    b = IsaacLabEnvBackend(env, profile)
    assert b.provides_height_scan and b.provides_depth
    f = b.read()
    d = env.robot.data
    by_name = dict(zip(env.robot.joint_names, d.joint_pos[0]))
    assert f.state.joint_pos_rad == pytest.approx([by_name[n] for n in profile.joint_names])
    # contact bodies come in policy order after "base"; the wire wants robot foot order
    forces = {name: 5.0 * (i + 1) for i, name in enumerate(profile.policy_foot_names)}
    assert f.state.foot_force_n == pytest.approx([forces[n] for n in profile.foot_names])
    scan = f.height_scan.base_height_above_hit_m
    assert scan[:-1] == pytest.approx(np.full(len(scan) - 1, 0.42)) and scan[-1] == -np.inf
    assert f.depth.distance_m.shape == (profile.camera.height_px, profile.camera.width_px)
    assert [b.read().depth is None for _ in range(5)] == [True, True, True, True, False]  # 10 Hz at 50 Hz
    assert f.state.base_lin_acc_body_m_s2 == pytest.approx([0, 0, 9.81])


# ------------------------------------------------------------------------------ the loop
def _server(profile, env):
    from krabby.hal.safety import SafetyConfig
    from krabby.hal.server import HalServer, HalServerConfig

    tag = uuid.uuid4().hex[:6]
    backend = IsaacLabEnvBackend(env, profile)
    cfg = HalServerConfig(f"inproc://is-o-{tag}", f"inproc://is-c-{tag}", safety=SafetyConfig(arm_on_start=True))
    return HalServer(backend, cfg).start(), backend


def test_serve_env_lockstep_with_a_real_client(profile):
    from krabby.hal.client import HalClient, HalClientConfig
    from krabby.hal.protocol import Kind

    env = FakeEnv(profile, terminate_at=5)
    server, backend = _server(profile, env)
    client = HalClient(HalClientConfig(server.config.observation_bind, server.config.command_bind), context=server.context)
    client.connect()
    stop = threading.Event()
    offsets = []

    def policy():  # answers every observation with default + 0.1 * (k + 1) on every joint
        k = 0
        while not stop.is_set():
            s = client.wait_new(Kind.STATE, 0.05)
            if s is None:
                continue
            k += 1
            offsets.append(0.1 * min(k, 3))
            client.send_command(profile.default_pos_rad + offsets[-1], s, timeout_s=1.0)

    t = threading.Thread(target=policy, daemon=True)
    t.start()
    try:
        units = action_units_from_env(env, profile)
        steps = serve_env(env, server, units, profile, is_running=lambda: True, max_steps=12, lockstep_timeout_s=1.0,
                          on_reset=backend.on_reset)
    finally:
        stop.set()
        t.join(2)
        client.close()
        server.close()
    assert steps == 12 and env.resets == 1 and backend.episode == 1
    # lock-step: the action of step k comes from the command computed on observation k
    expected = [o / profile.action_scale for o in offsets[:12]]
    got = [float(a.mean()) for a in env.actions]
    assert got == pytest.approx(expected, abs=1e-4)
    assert np.allclose(env.actions[-1], 0.3 / 0.25, atol=1e-4)


def test_env_stepper_holds_the_default_pose_while_nobody_commands(profile):
    env = FakeEnv(profile)
    server, backend = _server(profile, env)
    try:
        stepper = EnvStepper(server, action_units_from_env(env, profile), profile, lockstep_timeout_s=5.0)
        frame = server.tick()
        a = stepper.actions_for(frame)  # ARMED, no client: no wait, default pose = zero actions
        assert stepper.waits == 0 and a == pytest.approx(np.zeros(12))
    finally:
        server.close()


def test_main_launches_the_app_before_making_the_env_and_runs_the_policy(monkeypatch, profile, tmp_path):
    from krabby.parkour.upstream_format import random_teacher_checkpoint

    ckpt = random_teacher_checkpoint(tmp_path / "model_0.pt")
    calls: list[str] = []
    made = install_fake_isaaclab(monkeypatch, profile, calls)
    monkeypatch.setattr(sys, "argv", ["krabby-hal-server-isaac"])
    tag = uuid.uuid4().hex[:6]
    rc = server_main.main([
        "--task", "Isaac-Extreme-Parkour-Teacher-Unitree-Go2-Play-v0", "--checkpoint", str(ckpt), "--headless",
        "--device", "cpu", "--max_steps", "25", "--observation_bind", f"inproc://m-o-{tag}", "--command_bind", f"inproc://m-c-{tag}",
        "--/some/kit/flag=1",
    ])
    assert rc == 0
    assert calls == ["launch", "parse_env_cfg", "gym.make", "app.close"]
    assert made["argv_at_launch"] == ["krabby-hal-server-isaac", "--/some/kit/flag=1"]  # our flags do not reach Kit
    assert made["launcher_args"].headless is True
    assert made["env_cfg_args"] == ("Isaac-Extreme-Parkour-Teacher-Unitree-Go2-Play-v0", "cpu", 1)
    assert made["env_cfg"].actions.joint_pos.use_delay is False
    env = made["env"]
    assert env.closed and len(env.actions) == 25
    assert np.abs(np.array(env.actions[5:])).max() > 1e-3  # the random teacher's actions reached the env
    assert not [t for t in threading.enumerate() if t.name in ("krabby-inference", "krabby-hal-commands")]


def test_main_rejects_bad_arguments_before_launching(monkeypatch, profile, tmp_path, capsys):
    calls: list[str] = []
    install_fake_isaaclab(monkeypatch, profile, calls)
    with pytest.raises(SystemExit) as e:
        server_main.main(["--task", "T", "--checkpoint", str(tmp_path / "missing.pt")])
    assert e.value.code == 2 and calls == []
    assert "not found" in capsys.readouterr().err
