"""docs/protocol.md §6 as a program: exts/krabby.hal/docs/minimal_client.py, written from the doc alone,
run against a real HAL server over tcp on 127.0.0.1 (plain, and CURVE with krabby-keys files).

The server starts DISARMED, as a robot does, so the script must arm it (§4.3) before its commands count.
"""

from __future__ import annotations

import ast
import contextlib
import json
import subprocess
import sys
import threading

import pytest

from conftest import REPO, endpoints
from krabby.hal.backends.loopback_double import LoopbackTestDouble
from krabby.hal.deploy.curve import CurveServerKeys
from krabby.hal.deploy.keys import add_to_allow_list, generate_keypair
from krabby.hal.safety import SafetyConfig
from krabby.hal.server import HalServer, HalServerConfig

SCRIPT = REPO / "exts" / "krabby.hal" / "docs" / "minimal_client.py"


@contextlib.contextmanager
def running(server):
    stop = threading.Event()
    stop.set()
    t = threading.Thread(target=server.run, args=(stop,), kwargs={"duration_s": 60.0}, daemon=True)
    t.start()
    try:
        yield
    finally:
        stop.clear()
        t.join(2.0)


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
        keys, allowed = tmp_path / "keys", tmp_path / "allowed"
        generate_keypair(keys, "robot")
        generate_keypair(keys, "policy")
        add_to_allow_list(keys / "policy.key", allowed)
        security = CurveServerKeys.from_dir(keys, "robot", allowed)
        args = ["--server-key", str(keys / "robot.key"), "--client-key", str(keys / "policy.key_secret")]
    cfg = HalServerConfig(obs, cmd, security=security, allow_insecure_tcp=not secure,
                          safety=SafetyConfig(arm_on_start=False, watchdog_s=0.5, max_command_age_s=0.5))
    server = HalServer(LoopbackTestDouble(profile), cfg, context=zmq_context).start()
    try:
        with running(server):
            out = subprocess.run([sys.executable, str(SCRIPT), "--telemetry", obs, "--commands", cmd, "--steps", "50", *args],
                                 capture_output=True, text=True, timeout=60, cwd=REPO)
        assert out.returncode == 0, out.stdout + out.stderr[-3000:]
        result = json.loads(out.stdout.strip().splitlines()[-1])
        assert result["sent"] == 50 and result["accepted"] >= 45, result
        assert result["session_id"] == server.session_id
        assert server.supervisor.snapshot()["refusals"].get("BAD_VERSION", 0) == 0
    finally:
        server.close()
