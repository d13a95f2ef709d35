"""One command-line language for the three runners and krabby-parkour-client (issue #15 item 8, issue #14 "serving an outside client").

krabby-hal-server-mujoco (sim2sim), krabby-hal-server-isaac and the robot runner (krabby-hal-server-jetson,
jetson/run.py): every option has help; a concept has one spelling everywhere (dashed, the old underscore
spelling kept as an alias); ``--config FILE`` works with flags overriding it. Then the Isaac server's
serving flags: ``--deploy`` and CURVE keys reach its HalServerConfig, ``--server-only`` excludes ``--checkpoint``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from conftest import REPO, free_tcp_port, make_curve_keys
from fakes.fake_isaaclab import add_app_launcher_args, install_fake_isaaclab

from krabby.hal.deploy.curve import CurveClientKeys, CurveServerKeys
from krabby.hal.isaac import main as isaac_main
from krabby.parkour import jetson
from krabby.parkour.cli import parse_known_with_config, parse_with_config
from krabby.parkour.remote_client import build_parser as remote_client_parser
from krabby.parkour.sim2sim import build_parser as sim2sim_parser

ISAAC = "krabby-hal-server-isaac"
TASK = "Isaac-Extreme-Parkour-Teacher-Unitree-Go2-Play-v0"

RUNNERS = {"sim2sim", "isaac", "jetson"}  # the three that serve a robot; "client" is krabby-parkour-client
# concept -> the commands that have it (None: all four)
SHARED = {
    "--checkpoint": None, "--device": None, "--control-rate": None, "--action-dim": RUNNERS, "--obs-dim": RUNNERS,
    "--robot": RUNNERS, "--observation-bind": RUNNERS, "--command-bind": RUNNERS, "--deploy": None, "--insecure-tcp": RUNNERS,
    "--live-view": None, "--live-view-host": None, "--live-view-port": None, "--config": None,
    "--server-only": RUNNERS, "--speed": {"sim2sim", "isaac", "client"}, "--backend": {"sim2sim", "jetson", "client"},
    "--record": {"sim2sim", "jetson", "client"}, "--duration": {"sim2sim", "client"}, "--quiet": {"sim2sim", "client"},
    "--key-dir": {"sim2sim", "isaac", "client"}, "--allow-dir": {"sim2sim", "isaac"},
    "--server-key": {"sim2sim", "isaac", "client"}, "--client-key": {"sim2sim", "isaac", "client"},
    "--plain-telemetry": {"sim2sim", "isaac", "client"},
}
# the old spellings that must still parse, and where they go
ALIASES = {
    "sim2sim": [("--control_rate", "30", "control_rate", 30.0), ("--action_dim", "12", "action_dim", 12),
                ("--observation_bind", "inproc://x", "observation_bind", "inproc://x")],
    "isaac": [("--control_rate", "30", "control_rate", 30.0), ("--action_dim", "12", "action_dim", 12),
              ("--obs_dim", "753", "obs_dim", 753), ("--robot_profile", "go2", "robot", "go2"),
              ("--forward_speed", "0.7", "speed", 0.7), ("--lockstep_timeout_s", "0.2", "lockstep_timeout_s", 0.2),
              ("--max_steps", "9", "max_steps", 9), ("--observation_bind", "tcp://*:5555", "observation_bind", "tcp://*:5555"),
              ("--command_bind", "tcp://*:5556", "command_bind", "tcp://*:5556")],
    "jetson": [("--control_rate", "30", "control_rate", 30.0), ("--action_dim", "12", "action_dim", 12),
               ("--obs_dim", "753", "obs_dim", 753), ("--observation_bind", "inproc://x", "observation_bind", "inproc://x"),
               ("--command_bind", "inproc://y", "command_bind", "inproc://y"), ("--sim_physics", "double", "sim_physics", "double")],
}
RENAMED = {"--robot_profile": "--robot", "--forward_speed": "--speed"}  # the Isaac server's old names for sim2sim's concepts
FLAG_ALIASES = {"isaac": [("--keep_env_action_delay", "keep_env_action_delay"), ("--insecure_tcp", "insecure_tcp")],
                "jetson": [("--insecure_tcp", "insecure_tcp"), ("--no_dashboard", "no_dashboard"), ("--arm_policy", "arm_policy")]}


@pytest.fixture
def parsers(monkeypatch):
    """name -> (the runner's parser, the runner's own parser without upstream flags, argv every parse needs)."""
    monkeypatch.setattr(sys, "argv", [ISAAC])  # AppLauncher parses sys.argv while adding its flags
    return {
        "sim2sim": (sim2sim_parser(), sim2sim_parser(), []),
        "isaac": (isaac_main.build_parser(add_app_launcher_args), isaac_main.build_parser(None), ["--task", "T"]),
        "jetson": (jetson.build_parser(), jetson.build_parser(), []),
        "client": (remote_client_parser(), remote_client_parser(), []),
    }


def _long_options(parser) -> set[str]:
    return {s for a in parser._actions for s in a.option_strings if s.startswith("--")}


def test_every_option_has_help(parsers):
    """Isaac Lab's own AppLauncher flags are upstream's: the Isaac server's own parser is checked."""
    for name, (_, ours, _) in parsers.items():
        missing = [a.option_strings[0] for a in ours._actions if a.option_strings and not (a.help or "").strip()]
        assert not missing, f"{name}: options without help: {missing}"


def test_shared_concepts_have_one_spelling(parsers):
    for flag, where in SHARED.items():
        for name, (parser, _, _) in parsers.items():
            if where is None or name in where:
                assert flag in _long_options(parser), f"{name} has no {flag}"


def test_backend_defaults_to_the_checkpoints_own_runtime(parsers, tmp_path):
    """No --backend: every runner (and krabby-eval) runs an ONNX export on onnxruntime and anything else on torch."""
    from krabby.parkour.evaluate.cli import build_parser as eval_parser
    from krabby.parkour.policy_formats import ONNX_MANIFEST, default_backend

    for name, (parser, _, base) in parsers.items():
        if "--backend" in _long_options(parser):
            assert parser.parse_args(base).backend is None, name
    assert eval_parser().parse_args([]).backend is None
    onnx = tmp_path / "onnx"
    onnx.mkdir()
    (onnx / ONNX_MANIFEST).write_text("{}")
    assert default_backend(onnx) == "onnx"
    assert default_backend(REPO / "policies" / "go2_demo_teacher" / "model_13.pt") == "torch"
    assert default_backend(tmp_path / "missing.pt") == "torch"  # the loader then says what is missing


def test_canonical_names_are_dashed_and_every_underscore_spelling_is_an_alias(parsers):
    for name, (_, ours, _) in parsers.items():
        for a in ours._actions:
            longs = [s for s in a.option_strings if s.startswith("--")]
            if not longs:
                continue
            assert "_" not in longs[0], f"{name}: {longs[0]} is shown as the flag's name; the dashed form comes first"
            for s in longs[1:]:
                assert RENAMED.get(s, s.replace("_", "-")) in longs, f"{name}: alias {s} has no dashed twin"
            if len(longs) > 1 or "-" in longs[0][2:]:  # dest = the canonical name, so --config keys are the flag names
                assert a.dest == longs[0][2:].replace("-", "_"), f"{name}: {longs[0]} stores into {a.dest}"


@pytest.mark.parametrize("name", ["sim2sim", "isaac", "jetson"])
def test_underscore_aliases_still_parse(parsers, name):
    parser, _, base = parsers[name]
    for flag, value, dest, expected in ALIASES[name]:
        assert getattr(parser.parse_args(base + [flag, value]), dest) == expected, flag
        canonical = RENAMED.get(flag, flag.replace("_", "-"))
        assert getattr(parser.parse_args(base + [canonical, value]), dest) == expected, canonical
    for flag, dest in FLAG_ALIASES.get(name, []):
        assert getattr(parser.parse_args(base + [flag]), dest) is True


def test_isaac_config_file_with_flags_overriding(monkeypatch, profile, tmp_path):
    """krabby-hal-server-isaac --config run.toml: its keys (our flags and AppLauncher's) reach the launch;
    a flag on the line wins; flags it does not know still go on to Kit."""
    cfg = tmp_path / "run.toml"
    cfg.write_text(f'task = "{TASK}"\nserver-only = true\ncontrol-rate = 30\nforward_speed = 0.4\nmax_steps = 4\n'
                   'headless = true\ndevice = "cpu"\nrobot = "go2"\n')
    made = install_fake_isaaclab(monkeypatch, profile, calls := [])
    monkeypatch.setattr(sys, "argv", [ISAAC])
    rc = isaac_main.main(["--config", str(cfg), "--control-rate", "60", "--/some/kit=1"])
    assert rc == 0 and calls == ["launch", "parse_env_cfg", "gym.make", "app.close"]
    args = made["launcher_args"]
    assert (args.task, args.server_only, args.control_rate, args.speed, args.max_steps) == (TASK, True, 60.0, 0.4, 4)
    assert args.headless is True and args.device == "cpu"
    assert made["argv_at_launch"] == [ISAAC, "--/some/kit=1"] and len(made["env"].actions) == 4
    # a file value the flag's own check refuses: one line, exit 2, before the launch
    cfg.write_text('control_rate = -2\n')
    parser = isaac_main.build_parser(None)
    with pytest.raises(SystemExit) as e:
        parse_known_with_config(parser, ["--config", str(cfg), "--task", "T"])
    assert e.value.code == 2


def test_jetson_config_file_with_flags_overriding(monkeypatch, tmp_path, capsys):
    cfg = tmp_path / "robot.toml"
    cfg.write_text('sim = true\nsim-physics = "double"\ncontrol_rate = 25\nrecord = ""\nno-keyboard = true\n'
                   'deploy = "go2_jetson"\nobservation_bind = "inproc://o"\n')
    seen = []
    monkeypatch.setattr(jetson, "run", lambda args: seen.append(args) or 0)  # what main would run the robot with
    with pytest.raises(SystemExit) as e:
        jetson.main(["--config", str(cfg), "--control-rate", "40", "--observation-bind", "inproc://flag"])
    assert e.value.code == 0
    (args,) = seen
    assert (args.sim, args.sim_physics, args.control_rate, args.record, args.no_keyboard) == (True, "double", 40.0, "", True)
    assert args.observation_bind == "inproc://flag" and args.live is False  # torque stays off unless asked for
    cfg.write_text("sim_phyiscs = 'double'\n")
    with pytest.raises(SystemExit) as e:
        jetson.main(["--config", str(cfg)])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown key 'sim_phyiscs'" in err[0] and "sim_physics" in err[0]


def test_jetson_server_only_with_a_checkpoint_is_refused_in_one_line(monkeypatch, capsys):
    monkeypatch.setattr(jetson, "run", lambda args: pytest.fail("the runner must not start"))
    with pytest.raises(SystemExit) as e:
        jetson.main(["--server-only", "--checkpoint", "model.pt"])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1 and "--server-only and --checkpoint exclude each other" in err[0]


def test_jetson_record_help_says_it_takes_a_folder():
    record = next(a for a in jetson.build_parser()._actions if "--record" in a.option_strings)
    assert "FOLDER" in record.help and ".mcap" in record.help


# --------------------------------------------------------------------------- the Isaac server's serving flags
def _profile(tmp_path: Path) -> tuple[Path, str, str]:
    """config/deploy/robot_tcp.toml with its keys in tmp_path (relative paths resolve against the file) and free ports."""
    obs, cmd = f"tcp://127.0.0.1:{free_tcp_port()}", f"tcp://127.0.0.1:{free_tcp_port()}"
    text = (REPO / "config" / "deploy" / "robot_tcp.toml").read_text()
    text = (text.replace('"~/.config/krabby/keys"', '"keys"').replace('"~/.config/krabby/allowed_clients"', '"allowed"')
            .replace('"tcp://0.0.0.0:5555"', f'"{obs}"').replace('"tcp://0.0.0.0:5556"', f'"{cmd}"')
            .replace('"tcp://192.168.123.18:5555"', f'"{obs}"').replace('"tcp://192.168.123.18:5556"', f'"{cmd}"'))
    path = tmp_path / "robot_test.toml"
    path.write_text(text)
    return path, obs, cmd


def _isaac_args(*argv: str):
    args, rest = isaac_main.build_parser(None).parse_known_args(["--task", "T", *argv])
    assert rest == [] and isaac_main.validate_args(args) == []
    return args


def test_isaac_deploy_profile_reaches_the_server_and_the_in_process_client(tmp_path):
    make_curve_keys(tmp_path)
    dep, obs, cmd = _profile(tmp_path)
    ckpt = tmp_path / "model_0.pt"
    ckpt.write_bytes(b"x")
    server, client = isaac_main.serving_configs(_isaac_args("--deploy", str(dep), "--checkpoint", str(ckpt)))
    assert (server.observation_bind, server.command_bind) == (obs, cmd)
    assert isinstance(server.security, CurveServerKeys) and server.safety.arm_on_start is False  # the profile's [safety]
    assert isinstance(client.security, CurveClientKeys) and client.client_name == ISAAC
    assert (client.observation_endpoint, client.command_endpoint) == (obs, cmd)
    served, none = isaac_main.serving_configs(_isaac_args("--deploy", str(dep), "--server-only"))
    assert none is None and isinstance(served.security, CurveServerKeys)
    plain, _ = isaac_main.serving_configs(_isaac_args())  # no flags: inproc, armed on start, no keys
    assert plain.security is None and plain.safety.arm_on_start is True and plain.command_bind.startswith("inproc://")


def test_isaac_key_flags_reach_the_server(tmp_path):
    keys, allowed = make_curve_keys(tmp_path)
    bind = ("--observation-bind", "tcp://*:5555", "--command-bind", "tcp://*:5556")
    server, _ = isaac_main.serving_configs(_isaac_args("--server-only", *bind, "--key-dir", str(keys), "--allow-dir", str(allowed)))
    assert isinstance(server.security, CurveServerKeys) and server.command_bind == "tcp://*:5556"
    ckpt = tmp_path / "m.pt"
    ckpt.write_bytes(b"x")
    _, client = isaac_main.serving_configs(_isaac_args("--checkpoint", str(ckpt), *bind, "--key-dir", str(keys),
                                                       "--allow-dir", str(allowed), "--client-key", "policy"))
    assert isinstance(client.security, CurveClientKeys) and client.command_endpoint == "tcp://127.0.0.1:5556"


def test_isaac_server_only_serves_a_curve_deployment(monkeypatch, profile, tmp_path):
    """Through main (fake Isaac Lab): --server-only --deploy binds tcp with CURVE; the HalServer gets the profile's config."""
    import krabby.hal.server as hal_server

    make_curve_keys(tmp_path)
    dep, obs, cmd = _profile(tmp_path)
    configs = []

    class Recording(hal_server.HalServer):
        def __init__(self, backend, config, **kw):
            configs.append(config)
            super().__init__(backend, config, **kw)

    monkeypatch.setattr(hal_server, "HalServer", Recording)
    install_fake_isaaclab(monkeypatch, profile, calls := [])
    monkeypatch.setattr(sys, "argv", [ISAAC])
    assert isaac_main.main(["--task", TASK, "--server-only", "--deploy", str(dep), "--max-steps", "3", "--headless", "--device", "cpu"]) == 0
    (cfg,) = configs
    assert (cfg.observation_bind, cfg.command_bind) == (obs, cmd) and isinstance(cfg.security, CurveServerKeys)
    assert calls[-1] == "app.close"


def _one_line_exit(monkeypatch, profile, capsys, argv) -> str:
    install_fake_isaaclab(monkeypatch, profile, calls := [])
    monkeypatch.setattr(sys, "argv", [ISAAC])
    with pytest.raises(SystemExit) as e:
        isaac_main.main(argv)
    assert e.value.code == 2 and calls == []  # refused before the app launches
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1, err
    return err[0]


def test_isaac_server_only_with_a_checkpoint_is_refused_in_one_line(monkeypatch, profile, capsys, tmp_path):
    ckpt = tmp_path / "model_0.pt"
    ckpt.write_bytes(b"x")
    line = _one_line_exit(monkeypatch, profile, capsys, ["--task", "T", "--server-only", "--checkpoint", str(ckpt)])
    assert line.startswith(f"{ISAAC}: error: --server-only and --checkpoint exclude each other") and "--help" in line


def test_isaac_key_mistakes_are_refused_in_one_line_before_launch(monkeypatch, profile, capsys, tmp_path):
    keys, allowed = make_curve_keys(tmp_path)
    ckpt = tmp_path / "model_0.pt"
    ckpt.write_bytes(b"x")
    line = _one_line_exit(monkeypatch, profile, capsys, ["--task", "T", "--checkpoint", str(ckpt), "--command-bind", "tcp://*:5556",
                                                         "--key-dir", str(keys), "--allow-dir", str(allowed)])
    assert "--client-key" in line
    line = _one_line_exit(monkeypatch, profile, capsys, ["--task", "T", "--key-dir", str(keys)])
    assert "--key-dir and --allow-dir go together" in line
    line = _one_line_exit(monkeypatch, profile, capsys, ["--task", "T", "--deploy", str(tmp_path / "nope.toml")])
    assert "nope.toml" in line


@pytest.mark.parametrize("text, fast", [("fast = true", True), ("realtime = true", False), ("realtime = false", True)])
def test_config_keys_take_any_spelling_of_the_flag(tmp_path, text, fast):
    """A key may be the flag's dashed name, its underscore name or an old alias; a store_false flag keeps its meaning."""
    cfg = tmp_path / "run.toml"
    cfg.write_text(f'{text}\ncontrol-rate = 30\nvideo_fps = 10\n')
    args = parse_with_config(sim2sim_parser(), ["--config", str(cfg)])
    assert (args.fast, args.control_rate, args.video_fps) == (fast, 30.0, 10)
