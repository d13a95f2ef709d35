"""--live-view: a real foxglove-sdk WebSocket server streams the run's channels to a Foxglove client.

The client here speaks Foxglove's WebSocket protocol (subprotocol ``foxglove.sdk.v1``) with the
``websockets`` library: it reads the advertised channels, subscribes, and decodes a JointStates
message with the protobuf schema the server sent, as the Foxglove app would.
"""

from __future__ import annotations

import base64
import json
import socket
import struct
import threading

import pytest

from conftest import free_tcp_port
from krabby.parkour.sim2sim import main

pytest.importorskip("foxglove")
ws_client = pytest.importorskip("websockets.sync.client")


def _connect_live_view(port: int, runner: threading.Thread, what: str, tries: int, wait_s: float):
    """A Foxglove WebSocket client, once the runner's live view is up (it starts after the policy loads)."""
    for _ in range(tries):
        try:
            return ws_client.connect(f"ws://127.0.0.1:{port}", subprotocols=["foxglove.sdk.v1"], open_timeout=1)
        except OSError:
            runner.join(wait_s)
    raise AssertionError(f"{what} never came up")


def _advertised_until(ws, topics: set[str]) -> dict:
    """Channels by topic, read from 'advertise' messages until every topic in ``topics`` was advertised
    (channels are advertised as their first message is logged)."""
    channels: dict = {}
    while not topics <= set(channels):
        msg = json.loads(ws.recv(timeout=10))
        if msg["op"] == "advertise":
            channels.update({c["topic"]: c for c in msg["channels"]})
    return channels


def test_live_view_streams_the_log_channels(tmp_path):
    port = free_tcp_port()
    result = {}
    t = threading.Thread(target=lambda: result.setdefault("rc", main(
        ["--duration", "4", "--quiet", "--live-view", "--live-view-port", str(port), "--summary", str(tmp_path / "s.json")])))
    t.start()
    try:
        with _connect_live_view(port, t, "live view", tries=100, wait_s=0.1) as ws:
            channels = _advertised_until(ws, {"/joint_states", "/tf", "/sim"})
            assert not any(topic.startswith("hal/") for topic in channels)  # raw frames stay in the file
            js = channels["/joint_states"]
            assert (js["encoding"], js["schemaName"], js["schemaEncoding"]) == ("protobuf", "foxglove.JointStates", "protobuf")
            ws.send(json.dumps({"op": "subscribe", "subscriptions": [{"id": 7, "channelId": js["id"]}]}))
            while True:
                data = ws.recv(timeout=10)
                if isinstance(data, bytes) and data[0] == 0x01:  # MessageData: op, subscription id, log time, payload
                    sub_id, _log_ns = struct.unpack_from("<IQ", data, 1)
                    assert sub_id == 7
                    payload = data[13:]
                    break
        from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

        pool = descriptor_pool.DescriptorPool()
        for fd in descriptor_pb2.FileDescriptorSet.FromString(base64.b64decode(js["schema"])).file:
            pool.Add(fd)
        msg = message_factory.GetMessageClass(pool.FindMessageTypeByName("foxglove.JointStates")).FromString(payload)
        assert len(msg.joints) == 12 and msg.joints[0].name == "FR_hip_joint"
    finally:
        t.join(30)
    assert result["rc"] == 0


def test_live_view_port_in_use_is_one_line(tmp_path, capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert main(["--duration", "1", "--fast", "--quiet", "--live-view", "--live-view-port", str(port)]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and f"live view: cannot listen on 127.0.0.1:{port}" in lines[0]
    assert "--live-view-port" in lines[0]


def test_live_view_listens_on_loopback_by_default():
    from krabby.parkour.foxglove_log import FoxgloveSession, LiveViewConfig

    assert LiveViewConfig().host == "127.0.0.1"
    session = FoxgloveSession(None, LiveViewConfig(port=0))
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as c:  # reachable on loopback
            c.connect(("127.0.0.1", session.server.port))
    finally:
        session.close()


def test_every_runner_has_the_same_live_view_flags():
    """sim2sim, the robot runner and the Isaac Lab server spell it the same; on the robot --live stays 'allow torque'."""
    from krabby.hal.isaac.main import build_parser as isaac_parser
    from krabby.parkour.jetson import build_parser as robot_parser
    from krabby.parkour.run_outputs import live_view_config
    from krabby.parkour.sim2sim import build_parser as sim_parser

    argv = ["--live-view", "--live-view-host", "0.0.0.0", "--live-view-port", "9100"]
    for parser, extra in ((sim_parser(), []), (robot_parser(), []), (isaac_parser(None), ["--task", "T"])):
        cfg = live_view_config(parser.parse_args(argv + extra))
        assert (cfg.host, cfg.port) == ("0.0.0.0", 9100)
    robot = robot_parser().parse_args(["--live-view"])
    assert robot.live_view and not robot.live  # watching never allows torque
    assert robot_parser().parse_args(["--live"]).live and not robot_parser().parse_args(["--live"]).live_view


def test_isaac_server_streams_the_policy_client_live(monkeypatch, profile, tmp_path):
    """krabby-hal-server-isaac --live-view (against the Isaac Lab fakes): a Foxglove client sees the joint states."""
    import sys
    import uuid

    from fakes.fake_isaaclab import install_fake_isaaclab

    from krabby.hal.isaac import main as server_main
    from krabby.parkour.upstream_format import random_teacher_checkpoint

    ckpt = random_teacher_checkpoint(tmp_path / "model_0.pt")
    install_fake_isaaclab(monkeypatch, profile, [])
    monkeypatch.setattr(sys, "argv", ["krabby-hal-server-isaac"])
    port, tag, result = free_tcp_port(), uuid.uuid4().hex[:6], {}
    t = threading.Thread(target=lambda: result.setdefault("rc", server_main.main([
        "--task", "Isaac-Extreme-Parkour-Teacher-Unitree-Go2-Play-v0", "--checkpoint", str(ckpt), "--headless",
        "--device", "cpu", "--max_steps", "400", "--observation_bind", f"inproc://lv-o-{tag}",
        "--command_bind", f"inproc://lv-c-{tag}", "--live-view", "--live-view-port", str(port)])))
    t.start()
    try:
        want = {"/joint_states", "/joint_targets", "/timing", "/safety", "/tf", "/scene/robot"}
        with _connect_live_view(port, t, "the Isaac server's live view", tries=200, wait_s=0.05) as ws:
            topics = set(_advertised_until(ws, want))
        assert want <= topics
    finally:
        t.join(60)
    assert result["rc"] == 0
