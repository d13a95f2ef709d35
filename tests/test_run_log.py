"""A run as a user sees it afterwards: the run folder, the Foxglove channels in the MCAP, the plot report.

One short --fast run (module fixture) feeds every test. The MCAP is read back with the ``mcap``
reader (not with Krabby's own reader) and each protobuf channel is decoded with google.protobuf
from the FileDescriptorSet the file itself carries, as Foxglove does.
"""

from __future__ import annotations

import json
import os

import pytest

from krabby.parkour.sim2sim import main

pytest.importorskip("foxglove")

#: topic -> (message encoding, schema name, schema encoding)
EXPECTED_CHANNELS = {
    "hal/rx": ("krabby-hal-v1", "krabby.hal.v1.frames", ""),
    "hal/tx": ("krabby-hal-v1", "krabby.hal.v1.frames", ""),
    "krabby/step": ("json", "krabby.step", "jsonschema"),
    "/joint_states": ("protobuf", "foxglove.JointStates", "protobuf"),
    "/joint_targets": ("protobuf", "foxglove.JointStates", "protobuf"),
    "/imu": ("json", "krabby.Imu", "jsonschema"),
    "/foot_contacts": ("json", "krabby.FootContacts", "jsonschema"),
    "/height_scan": ("protobuf", "foxglove.PointCloud", "protobuf"),
    "/navigation": ("json", "krabby.Navigation", "jsonschema"),
    "/safety": ("json", "krabby.Safety", "jsonschema"),
    "/timing": ("json", "krabby.Timing", "jsonschema"),
    "/tf": ("protobuf", "foxglove.FrameTransforms", "protobuf"),
    "/scene/robot": ("protobuf", "foxglove.SceneUpdate", "protobuf"),
    "/scene/course": ("protobuf", "foxglove.SceneUpdate", "protobuf"),
    "/sim": ("json", "krabby.Sim", "jsonschema"),
    "/safety/events": ("protobuf", "foxglove.Log", "protobuf"),
}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    assert main(["--terrain", "hurdles", "--duration", "2", "--fast", "--runs", str(root), "--no-video", "--quiet"]) == 0
    return root


def _decode(schema, channel, data):
    from krabby.parkour.foxglove_log import message_decoder

    return message_decoder(schema, channel)(data)


def test_run_folder_holds_everything_and_latest_points_at_it(run_dir):
    latest = run_dir / "latest"
    assert latest.is_symlink() and (run_dir / os.readlink(latest)).is_dir()
    assert os.readlink(latest).endswith("-hurdles")
    names = {p.name for p in latest.iterdir()}
    assert {"summary.json", "log.mcap", "command.txt", "config.toml"} <= names and "video.mp4" not in names
    summary = json.loads((latest / "summary.json").read_text())
    assert summary["terrain"] == "hurdles" and summary["interrupted"] is False
    assert (latest / "command.txt").read_text().startswith("krabby-hal-server-mujoco") or "--runs" in (latest / "command.txt").read_text()
    config = (latest / "config.toml").read_text()
    assert 'terrain = "hurdles"' in config and "duration = 2.0" in config and "runs" not in config.split("\n", 1)[1]


def test_a_second_run_gets_its_own_folder(tmp_path):
    from krabby.parkour.run_folder import make_run_folder

    a = make_run_folder(tmp_path, "flat", now=0)
    b = make_run_folder(tmp_path, "flat", now=0)  # the same second
    assert a.path != b.path and b.path.name.endswith("-2")
    assert os.readlink(tmp_path / "latest") == b.path.name


def test_config_file_rerun_matches(run_dir, tmp_path):
    """config.toml of a run is a valid --config; flags on the command line override it."""
    s = tmp_path / "again.json"
    assert main(["--config", str(run_dir / "latest" / "config.toml"), "--duration", "0.5", "--summary", str(s)]) == 0
    out = json.loads(s.read_text())
    assert out["terrain"] == "hurdles" and out["sim_time_s"] == pytest.approx(0.5) and out["mode"] == "fast"


def test_every_channel_has_a_real_schema_and_decodes(run_dir):
    from mcap.reader import make_reader

    with open(run_dir / "latest" / "log.mcap", "rb") as f:
        reader = make_reader(f)
        summary = reader.get_summary()
        channels = {c.topic: c for c in summary.channels.values()}
        assert set(EXPECTED_CHANNELS) <= set(channels), set(EXPECTED_CHANNELS) - set(channels)
        for topic, (enc, schema_name, schema_enc) in EXPECTED_CHANNELS.items():
            ch = channels[topic]
            schema = summary.schemas[ch.schema_id]
            assert (ch.message_encoding, schema.name, schema.encoding) == (enc, schema_name, schema_enc), topic
            if schema_enc == "jsonschema":  # what Foxglove's JSON support requires of a schema
                js = json.loads(schema.data)
                assert js["type"] == "object" and js["properties"], topic
        first = {}
        for schema, ch, msg in reader.iter_messages():
            first.setdefault(ch.topic, (schema, ch, msg))
    assert set(EXPECTED_CHANNELS) <= set(first), "every channel has at least one message"
    decoded = {t: _decode(*first[t][:2], first[t][2].data) for t in EXPECTED_CHANNELS if not t.startswith("hal/")}
    joints = decoded["/joint_states"].joints
    assert [j.name for j in joints][:3] == ["FR_hip_joint", "FR_thigh_joint", "FR_calf_joint"] and len(joints) == 12
    assert all(j.HasField("position") and j.HasField("velocity") and j.HasField("effort") for j in joints)
    assert len(decoded["/joint_targets"].joints) == 12
    tf = {t.child_frame_id: t for t in decoded["/tf"].transforms}
    assert "base_link" in tf and tf["base_link"].parent_frame_id == "world" and 0.1 < tf["base_link"].translation.z < 0.6
    assert any(e.frame_id == "base_link" and e.cubes for e in decoded["/scene/robot"].entities)
    assert decoded["/scene/course"].entities[0].cubes  # the hurdles
    cloud = decoded["/height_scan"]
    assert cloud.frame_id == "base_yaw" and "base_yaw" in tf and cloud.point_stride == 12 and len(cloud.data) == 12 * 132
    yaw_tf = tf["base_yaw"]  # the scan's frame: the base position, rotated by yaw only
    assert yaw_tf.rotation.x == 0 and yaw_tf.rotation.y == 0 and yaw_tf.translation.z == tf["base_link"].translation.z
    assert decoded["/safety"]["state"] in ("ARMED", "ACTIVE") and "episode" in decoded["/safety"]
    assert decoded["/timing"]["compute_ms"] > 0
    assert decoded["/sim"]["sim_time_s"] > 0 and len(decoded["/sim"]["base_pos_w_m"]) == 3
    assert decoded["/navigation"]["forward_speed_m_s"] == pytest.approx(0.5)
    assert set(decoded["/foot_contacts"]["force_n"]) == {"FR_foot", "FL_foot", "RR_foot", "RL_foot"}
    assert "->" in decoded["/safety/events"].message
    assert json.loads(first["krabby/step"][2].data)["global_step"] >= 0


def test_fast_run_log_times_follow_simulated_time(run_dir):
    """A --fast run takes well under its 2 simulated seconds; the Foxglove channels still span 2 s."""
    from mcap.reader import make_reader

    with open(run_dir / "latest" / "log.mcap", "rb") as f:
        times = [m.log_time for _, _, m in make_reader(f).iter_messages(topics=["/sim"])]
    assert (times[-1] - times[0]) * 1e-9 == pytest.approx(2.0, abs=0.05)


def test_depth_channel_is_a_metric_image(tmp_path, profile):
    """The student's depth view (a unit test: no student checkpoint needed) as a 32FC1 RawImage in metres."""
    import numpy as np
    from types import SimpleNamespace

    from krabby.hal.types import DepthFrame
    from krabby.parkour.foxglove_log import FoxgloveSession, TelemetryChannels
    from mcap.reader import make_reader

    session = FoxgloveSession(tmp_path / "d.mcap")
    ch = TelemetryChannels(session, profile)
    d = np.full((58, 87), 1.5, dtype=np.float32)
    d[0, 0] = np.inf
    ch._log_depth(SimpleNamespace(stamp_ns=123, seq=1, value=DepthFrame(123, d)), 1_000)
    session.close()
    with open(tmp_path / "d.mcap", "rb") as f:
        schema, channel, msg = next(make_reader(f).iter_messages(topics=["/depth"]))
    img = _decode(schema, channel, msg.data)
    assert (img.width, img.height, img.encoding, img.step) == (87, 58, "32FC1", 87 * 4)
    px = np.frombuffer(img.data, dtype=np.float32).reshape(58, 87)
    assert px[0, 0] == 0.0 and px[1, 1] == pytest.approx(1.5)


def test_plot_report(run_dir, tmp_path):
    pytest.importorskip("matplotlib")
    from krabby.parkour.plot import main as plot_main

    assert plot_main([str(run_dir / "latest"), "--out", str(tmp_path / "report"), "--replay"]) == 0
    files = {p.name for p in (tmp_path / "report").iterdir()}
    assert {"index.html", "joints.png", "torques.png", "timing.png", "ages.png", "safety.png", "trajectory.png",
            "replay.png"} <= files
    html = (tmp_path / "report" / "index.html").read_text()
    assert "p50" in html and "p99" in html and "trajectory.png" in html and "largest 0" in html


def test_layout_file_is_current_and_names_only_logged_topics(run_dir):
    """The shipped Foxglove layout is what foxglove_layout builds, and its panels read topics the log really has."""
    import re

    from conftest import REPO
    from mcap.reader import make_reader

    from krabby.parkour.foxglove_layout import layout_json

    shipped = (REPO / "config" / "foxglove_layout.json").read_text()
    assert shipped == layout_json(), "regenerate: python -m krabby.parkour.foxglove_layout > config/foxglove_layout.json"
    doc = json.loads(shipped)  # the app's import format: panel configs by id, a mosaic of splits
    assert {"configById", "layout", "globalVariables", "userNodes", "playbackConfig"} <= set(doc)
    assert {pid.split("!")[0] for pid in doc["configById"]} <= {"3D", "Image", "Plot", "StateTransitions", "RosOut", "Tab"}

    def referenced(node):
        if isinstance(node, str):
            yield node
            for tab in doc["configById"][node].get("tabs", []) if node.startswith("Tab!") else []:
                yield from referenced(tab["layout"])
        else:
            yield from referenced(node["first"])
            yield from referenced(node["second"])

    assert set(referenced(doc["layout"])) == set(doc["configById"])  # every panel placed, none dangling
    with open(run_dir / "latest" / "log.mcap", "rb") as f:
        topics = {c.topic for c in make_reader(f).get_summary().channels.values()}
    used = {re.match(r"/[a-z_/]+", s).group(0).rstrip(".") for s in re.findall(r'"(/[a-z_/]+[^"]*)"', shipped)}
    assert {"/scene/robot", "/joint_states", "/depth", "/timing", "/safety"} <= used
    assert used - {"/depth"} <= topics, used - topics  # /depth: a student's; this run's teacher has the height scan


def test_joint_kinematics_places_the_links_from_joints_and_imu(tmp_path, profile):
    """Without a simulator (robot, Isaac): links from the measured joints and the IMU by forward kinematics."""
    import math

    import numpy as np
    from mcap.reader import make_reader

    from krabby.hal.types import RobotState
    from krabby.parkour.foxglove_log import FoxgloveSession
    from krabby.parkour.foxglove_world import JointKinematics

    session = FoxgloveSession(tmp_path / "k.mcap")
    kin = JointKinematics(session, profile)
    yaw = math.pi / 2  # facing +y: the robot's front-right is then +x, +y
    z = np.zeros(3)
    state = RobotState(0, profile.default_pos_rad.copy(), np.zeros(12), np.zeros(12),
                       np.array([math.cos(yaw / 2), 0, 0, math.sin(yaw / 2)]), z, z, z, np.zeros(4))
    kin.update(state, 1_000_000_000)
    session.close()
    with open(tmp_path / "k.mcap", "rb") as f:
        msgs = {ch.topic: _decode(sc, ch, m.data) for sc, ch, m in make_reader(f).iter_messages()}
    assert set(msgs) == {"/tf", "/scene/robot"}
    tf = {t.child_frame_id: t for t in msgs["/tf"].transforms}
    base = tf["base_link"]
    assert (base.translation.x, base.translation.y, base.translation.z) == (0.0, 0.0, pytest.approx(profile.spawn_base_height_m))
    assert base.rotation.z == pytest.approx(math.sin(yaw / 2))
    hip = tf["FR_hip"].translation
    assert hip.x > 0.02 and hip.y > 0.1  # front (+y) and right (+x) after the 90-degree turn
    calf = tf["FR_calf"].translation
    assert calf.z < base.translation.z - 0.1  # the default pose's legs hang below the base
