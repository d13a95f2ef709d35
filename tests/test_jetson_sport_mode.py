"""Unitree's sport mode vs the runner: the motion_switcher RPC over real cyclonedds on loopback, and the rt/lowcmd probe.

The byte layout is checked against Unitree's IDL by hand (struct, not cyclonedds); the type information is
Unitree's C++ SDK's (unitree_api_typeinfo.py); the cross-version test runs the robot's service in a
cyclonedds 0.10.2 environment (jetson/dds_envs.py) when one is provisioned.
"""

from __future__ import annotations

import json
import random
import struct
import subprocess
import time

import pytest

pytest.importorskip("cyclonedds", reason="cyclonedds not installed (pip install cyclonedds==11.0.1)")

from krabby.hal.devices import go2_motion_switcher as ms  # noqa: E402
from krabby.hal.devices import unitree_go_dds as dds  # noqa: E402
from krabby.hal.devices.unitree_go_msgs import LowCmd  # noqa: E402


def _bus(dom: int) -> dds.DdsBus:
    return dds.DdsBus(dom, dds.loopback_config_xml())


def _xcdr1_string(s: str, offset: int) -> bytes:
    raw = s.encode() + b"\0"
    pad = (-(offset + 4 + len(raw))) % 4
    return struct.pack("<I", len(raw)) + raw + bytes(pad)


def test_request_and_response_bytes_follow_unitrees_idl():
    # Request_ { RequestHeader_ { RequestIdentity_ {int64 id; int64 api_id}; RequestLease_ {int64 id};
    #            RequestPolicy_ {int32 priority; boolean noreply} }; string parameter; sequence<octet> binary }
    body = struct.pack("<qqqi?3x", 1234567890123, 1003, 7, 2, True)
    body += _xcdr1_string("{}", len(body)) + struct.pack("<I", 0)
    assert ms.encode_request(1234567890123, ms.API_RELEASE_MODE, "{}", lease_id=7, priority=2, noreply=True) == \
        b"\x00\x01\x00\x00" + body
    # Response_ { ResponseHeader_ { RequestIdentity_; ResponseStatus_ {int32 code} }; string data; sequence<octet> binary }
    data = '{"form":"0","name":"normal"}'
    body = struct.pack("<qqi", 42, 1001, 0)
    body += _xcdr1_string(data, len(body)) + struct.pack("<I", 0)
    assert ms.encode_response(42, ms.API_CHECK_MODE, 0, data) == b"\x00\x01\x00\x00" + body
    r = ms.decode_response(b"\x00\x01\x00\x00" + body)
    assert (r.header.identity.id, r.header.identity.api_id, r.header.status.code, r.data) == (42, 1001, 0, data)


def test_topics_api_ids_and_robot_type_information():
    assert (ms.request_topic(), ms.response_topic()) == ("rt/api/motion_switcher/request", "rt/api/motion_switcher/response")
    assert (ms.API_CHECK_MODE, ms.API_SELECT_MODE, ms.API_RELEASE_MODE) == (1001, 1002, 1003)
    for name, sizes in {"Request_": (292, 1382), "Response_": (244, 1068)}.items():
        ti, tm = dds.robot_typeinfo(name)
        assert (len(ti), len(tm)) == sizes  # the blob sizes in Unitree's Request_.hpp / Response_.hpp
        dds.apply_robot_typeinfo(name)
        T = dds.idl_types()[name]
        assert tuple(T.__idl__._xt_bytedata) == (ti, tm)
        # the type map names the SDK's C++ type
        assert f"unitree_api::msg::dds_::{name}".encode() in tm


def test_check_refuses_release_releases_against_the_simulated_service():
    dom = random.randint(20, 99)
    robot, runner = _bus(dom), _bus(dom)
    try:
        svc = ms.SimMotionSwitcher(robot, mode_name="normal")
        client = ms.MotionSwitcherClient(runner, timeout_s=5.0)
        mode = client.check_mode()
        assert mode.active and (mode.form, mode.name) == ("0", "normal")
        with pytest.raises(ms.SportModeError, match="--release-sport-mode"):
            ms.preflight(runner, sport_mode="check", probe_s=0.0, timeout_s=5.0)
        summary = ms.preflight(runner, sport_mode="release", probe_s=0.2, timeout_s=5.0)
        assert "released" in summary and not svc.mode.active
        assert ms.API_RELEASE_MODE in svc.requests and svc.requests.count(ms.API_CHECK_MODE) >= 3
        assert ms.preflight(runner, sport_mode="check", probe_s=0.0, timeout_s=5.0).startswith("sport mode off")
    finally:
        runner.close()
        robot.close()


def test_a_lost_request_is_sent_again_until_answered():
    """Matched readers on our side do not mean the service's response writer has matched ours yet; a request
    (or its answer) lost that way is resent with the same id, so CheckMode still answers within the timeout."""

    class DropsFirst(ms.SimMotionSwitcher):
        def _on_request(self, buf: bytes) -> None:
            if not getattr(self, "dropped", False):
                self.dropped = True
                return
            super()._on_request(buf)

    dom = random.randint(20, 99)
    robot, runner = _bus(dom), _bus(dom)
    try:
        svc = DropsFirst(robot, mode_name="")
        client = ms.MotionSwitcherClient(runner, timeout_s=5.0)
        t0 = time.monotonic()
        assert not client.check_mode().active
        assert svc.dropped and svc.requests == [ms.API_CHECK_MODE]
        assert ms.RESEND_S * 0.9 <= time.monotonic() - t0 < 5.0
    finally:
        runner.close()
        robot.close()


def test_no_motion_switcher_is_refused_unless_skipped():
    dom = random.randint(20, 99)
    runner = _bus(dom)
    try:
        with pytest.raises(ms.SportModeError, match='sport_mode = "skip"'):
            ms.preflight(runner, sport_mode="check", probe_s=0.0, timeout_s=0.5)
        assert "not checked" in ms.preflight(runner, sport_mode="skip", probe_s=0.1)
    finally:
        runner.close()


def test_another_lowcmd_publisher_is_refused():
    dom = random.randint(20, 99)
    other, runner = _bus(dom), _bus(dom)
    stop = False
    try:
        w = other.writer(dds.LOWCMD_TOPIC, "LowCmd_")
        wire = LowCmd.zero_torque().encode()
        import threading

        def pump():
            while not stop:
                w.write(wire)
                time.sleep(0.002)

        t = threading.Thread(target=pump, daemon=True)
        t.start()
        with pytest.raises(ms.SportModeError, match="another program publishes rt/lowcmd"):
            ms.preflight(runner, sport_mode="skip", probe_s=0.5)
    finally:
        stop = True
        time.sleep(0.05)
        runner.close()
        other.close()


def test_runner_refuses_an_active_sport_mode_and_releases_it_when_asked(profile):
    from krabby.hal.deploy.profile import load_deployment
    from krabby.hal.robot.deploy_config import DeployConfig
    from krabby.hal.robot.runner import RobotStack, RunnerError, StackOptions
    from krabby.hal.robot.sim_node import SimGo2Node, SimNodeConfig

    dom = random.randint(20, 99)
    node = SimGo2Node(profile, SimNodeConfig(domain_id=dom, physics="double", sport_mode="normal")).start()
    try:
        deploy = DeployConfig.from_deployment(load_deployment("go2_jetson"))
        deploy.dds.network_interface = None  # loopback, the simulated node's config
        opts = dict(camera="none", domain_id=dom, keyboard=False, gamepad=False)
        with pytest.raises(RunnerError, match="sport mode 'normal' is active"):
            RobotStack(deploy, StackOptions(**opts)).start()
        assert node.counters["lowcmd"] == 0 and not node.lowcmd_log  # nothing was written
        stack = RobotStack(deploy, StackOptions(release_sport_mode=True, **opts)).start()
        try:
            assert not node.motion_switcher.mode.active
            assert stack.backend.lowlevel.wait_for_state(5.0)
        finally:
            stack.stop()
    finally:
        node.stop()


@pytest.mark.slow
def test_release_against_a_cyclonedds_0_10_motion_switcher():
    from test_jetson_dds import PEER, _envs

    envs = _envs()
    dom = random.randint(20, 99)
    svc = subprocess.Popen([envs["old"]["python"], str(PEER), "--role", "motion-switcher", "--domain", str(dom),
                            "--seconds", "15"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert svc.stdout.readline().strip() == "READY"
        runner = _bus(dom)
        try:
            assert "released" in ms.preflight(runner, sport_mode="release", probe_s=0.0, timeout_s=5.0)
        finally:
            runner.close()
        out, err = svc.communicate(timeout=20)
    finally:
        if svc.poll() is None:
            svc.kill()
    assert svc.returncode == 0, err[-500:]
    got = json.loads([line for line in out.splitlines() if line.startswith("{")][-1])
    assert got["cyclonedds"].startswith("0.10.") and ms.API_RELEASE_MODE in got["requests"]
