"""docs/protocol.md §6 as a program: exts/krabby.hal/docs/minimal_client.py, written from the doc alone,
run against a real HAL server over tcp on 127.0.0.1 (plain, and CURVE with krabby-keys files).

The server starts DISARMED, as a robot does, so the script must arm it (§4.3) before its commands count.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import threading

import pytest

from conftest import REPO, endpoints, make_curve_keys, ticking
from krabby.hal.backends.loopback_double import LoopbackTestDouble
from krabby.hal.deploy.curve import CurveServerKeys
from krabby.hal.safety import SafetyConfig
from krabby.hal.server import HalServer, HalServerConfig

SCRIPT = REPO / "exts" / "krabby.hal" / "docs" / "minimal_client.py"


def test_the_minimal_client_imports_nothing_from_krabby():
    tree = ast.parse(SCRIPT.read_text())
    modules = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    modules |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert modules <= {"__future__", "argparse", "json", "struct", "sys", "time", "collections", "numpy", "zmq"}, modules


@pytest.mark.parametrize("secure", [False, True], ids=["insecure-opt-out", "curve"])
def test_the_minimal_client_from_the_doc_drives_a_real_server(profile, zmq_context, tmp_path, secure):
    obs, cmd = endpoints("tcp")
    args = []
    security = None
    if secure:
        keys, allowed = make_curve_keys(tmp_path)
        security = CurveServerKeys.from_dir(keys, "robot", allowed)
        args = ["--server-key", str(keys / "robot.key"), "--client-key", str(keys / "policy.key_secret")]
    cfg = HalServerConfig(obs, cmd, security=security, allow_insecure_tcp=not secure,
                          safety=SafetyConfig(arm_on_start=False, watchdog_s=0.5, max_command_age_s=0.5))
    server = HalServer(LoopbackTestDouble(profile), cfg, context=zmq_context).start()
    try:
        with ticking(server):
            out = subprocess.run([sys.executable, str(SCRIPT), "--telemetry", obs, "--commands", cmd, "--steps", "50", *args],
                                 capture_output=True, text=True, timeout=60, cwd=REPO)
        assert out.returncode == 0, out.stdout + out.stderr[-3000:]
        result = json.loads(out.stdout.strip().splitlines()[-1])
        assert result["sent"] == 50 and result["accepted"] >= 45, result
        assert result["session_id"] == server.session_id
        assert server.supervisor.snapshot()["refusals"].get("BAD_VERSION", 0) == 0
    finally:
        server.close()


@pytest.mark.parametrize("entry", ["krabby-hal-demo", "krabby-hal-server-mujoco"])
def test_server_entry_points_serve_an_outside_curve_client(entry, tmp_path):
    """`--server-only` with key flags: the entry point runs no client of its own and an outside client (the
    doc's script, another process) drives the robot over tcp with CURVE."""
    if entry == "krabby-hal-server-mujoco":
        pytest.importorskip("mujoco")
        from krabby.parkour.sim2sim import main
    else:
        from krabby.hal.testing.demo import main
    keys, allowed = make_curve_keys(tmp_path)
    obs, cmd = endpoints("tcp")
    argv = ["--server-only", "--duration", "6", "--observation_bind", obs, "--command_bind", cmd,
            "--key-dir", str(keys), "--server-key", "robot", "--allow-dir", str(allowed)]
    if entry == "krabby-hal-server-mujoco":
        argv += ["--quiet", "--summary", str(tmp_path / "summary.json")]
    rc = []
    t = threading.Thread(target=lambda: rc.append(main(argv)), daemon=True)
    t.start()
    out = subprocess.run([sys.executable, str(SCRIPT), "--telemetry", obs, "--commands", cmd, "--steps", "40",
                          "--server-key", str(keys / "robot.key"), "--client-key", str(keys / "policy.key_secret")],
                         capture_output=True, text=True, timeout=60, cwd=REPO)
    t.join(30)
    assert rc == [0]
    assert out.returncode == 0, out.stdout + out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["sent"] == 40 and result["accepted"] >= 36, result
    if entry == "krabby-hal-server-mujoco":
        summary = json.loads((tmp_path / "summary.json").read_text())
        assert summary["commands_accepted"] >= 36 and summary["policy_kind"] is None


def test_a_client_without_an_allowed_key_gets_nothing_from_a_server_only_entry_point(tmp_path):
    from krabby.hal.testing.demo import main

    keys, allowed = make_curve_keys(tmp_path, "stranger")
    obs, cmd = endpoints("tcp")
    rc = []
    t = threading.Thread(target=lambda: rc.append(main(["--server-only", "--duration", "3", "--observation_bind", obs,
                                                         "--command_bind", cmd, "--key-dir", str(keys), "--allow-dir", str(allowed)])),
                         daemon=True)
    t.start()
    out = subprocess.run([sys.executable, str(SCRIPT), "--telemetry", obs, "--commands", cmd, "--steps", "5",
                          "--server-key", str(keys / "robot.key"), "--client-key", str(keys / "stranger.key_secret")],
                         capture_output=True, text=True, timeout=60, cwd=REPO)
    t.join(30)
    assert rc == [0] and out.returncode != 0 and "no WELCOME" in out.stdout + out.stderr


def test_entry_points_explain_missing_keys(tmp_path, capsys):
    from krabby.hal.testing.demo import main

    obs, cmd = endpoints("tcp")
    assert main(["--duration", "0.1", "--observation_bind", obs, "--command_bind", cmd]) == 2
    assert "krabby-keys" in capsys.readouterr().err
    keys, allowed = make_curve_keys(tmp_path)
    assert main(["--duration", "0.1", "--observation_bind", obs, "--command_bind", cmd, "--key-dir", str(keys), "--allow-dir", str(allowed)]) == 2
    assert "--client-key" in capsys.readouterr().err


def test_the_demo_ends_with_a_verdict_and_the_normal_start_is_not_a_warning(capsys, caplog):
    """An install check says OK (or FAILED) in its last line; arming and the first command are INFO, not WARNING."""
    from krabby.hal.testing.demo import main

    with caplog.at_level("INFO", logger="krabby.hal.safety"):
        assert main(["--duration", "1"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("HAL round trip OK: ")
    transitions = [r for r in caplog.records if "->" in r.getMessage()]
    assert {r.getMessage().split(" (")[0].split("safety: ")[1].strip() for r in transitions} >= {"DISARMED -> ARMED", "ARMED -> ACTIVE"}
    assert all(r.levelname == "INFO" for r in transitions), [(r.levelname, r.getMessage()) for r in transitions]
