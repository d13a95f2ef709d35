"""krabby-parkour-client: the policy client alone, driving a server-only MuJoCo robot in another process over
tcp with CURVE, both sides configured from one deployment profile (the two-machine story on one host)."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time

import pytest

from conftest import REPO, endpoints, make_curve_keys
from krabby.parkour.remote_client import main

pytest.importorskip("mujoco")


def _profile(tmp_path, obs: str, cmd: str) -> str:
    make_curve_keys(tmp_path, "stranger")  # keys/ and allowed/ beside the profile, which names them relatively
    path = tmp_path / "lab_tcp.toml"
    path.write_text(f"""
[deployment]
name = "lab_tcp"
[server]
observation_bind = "{obs}"
command_bind = "{cmd}"
[client]
observation_endpoint = "{obs}"
command_endpoint = "{cmd}"
client_name = "parkour-policy"
[security]
key_dir = "keys"
server_key = "robot"
client_key = "policy"
allow_dir = "allowed"
[safety]
watchdog_s = 0.5
hold_s = 30.0  # after the client leaves the robot holds its pose to the end (damping would drop it: a "fall")
max_command_age_s = 0.5
arm_on_start = false
""")
    return str(path)


def _wait_listening(endpoint: str, server: subprocess.Popen, timeout_s: float = 60.0) -> None:
    """Until the server binds its command port (imports and model building take seconds on a loaded CI)."""
    host, port = endpoint.removeprefix("tcp://").rsplit(":", 1)
    end = time.monotonic() + timeout_s
    while time.monotonic() < end and server.poll() is None:
        try:
            socket.create_connection((host, int(port)), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"the server never listened on {endpoint}: {server.stderr.read()[-2000:] if server.poll() is not None else ''}")


def test_the_client_alone_arms_and_walks_a_server_only_robot_over_curve(tmp_path, capsys):
    obs, cmd = endpoints("tcp")
    deploy = _profile(tmp_path, obs, cmd)
    summary = tmp_path / "server.json"
    server = subprocess.Popen([sys.executable, "-m", "krabby.parkour.sim2sim", "--server-only", "--deploy", deploy,
                               "--duration", "60", "--quiet", "--summary", str(summary)],
                              cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_listening(cmd, server)
        # a key the server does not allow: CURVE drops the handshake, the client says so in one line
        assert main(["--deploy", deploy, "--key-dir", str(tmp_path / "keys"), "--client-key", "stranger",
                     "--duration", "1", "--quiet"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "no HAL server answered" in err and "keys" in err, err
        assert main(["--deploy", deploy, "--arm", "--duration", "5", "--quiet"]) == 0
        out = capsys.readouterr()
        assert "connected to" in out.err and "stopped (duration)" in out.out, out
        server.send_signal(signal.SIGINT)  # the server stops at Ctrl-C and still writes its summary
        server_out, server_err = server.communicate(timeout=60)
    finally:
        server.kill()
    assert server.returncode == 130, server_err[-3000:]
    s = json.loads(summary.read_text())
    assert s["interrupted"] and s["policy_kind"] is None and s["commands_accepted"] >= 150, s  # 5 s at 50 Hz, less start-up
    # the bundled policy walked the robot (falls are not asserted: a real-time run on a starved CI core can
    # trip the watchdog mid-stride, and the server then holds a pose the robot cannot keep)
    assert s["distance_m"] > 1.0, s
    kinds = [e["kind"] for e in s["safety"]["events"]]
    assert "DISARMED->ARMED" in kinds, kinds  # the profile starts it disarmed; --arm armed it


@pytest.mark.parametrize("argv, says", [
    ([], "--deploy PROFILE, or --observation-endpoint and --command-endpoint"),
    (["--observation-endpoint", "tcp://127.0.0.1:1", "--command-endpoint", "tcp://127.0.0.1:2", "--key-dir", "k"],
     "--key-dir and --client-key go together"),
    (["--deploy", "no_such_profile"], "no_such_profile"),
])
def test_mistakes_end_in_one_line(capsys, argv, says):
    assert main(argv + ["--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("krabby-parkour-client: ") and err.count("\n") == 1 and says in err, err
