"""CURVE security of the HAL: keys, the krabby-keys CLI, the ZAP allow-list, deployment profiles."""

from __future__ import annotations

import logging
import os
import stat
import subprocess
import sys
import time

import numpy as np
import pytest
import zmq
import zmq.auth as zmq_auth

from conftest import REPO, endpoints, loopback_server, make_curve_keys
from krabby.hal import clock
from krabby.hal.backends.loopback_double import LoopbackTestDouble
from krabby.hal.client import HalClient, HalClientConfig, HandshakeError
from krabby.hal.deploy.profile import DeploymentError, deployment_from_dict, load_deployment
from krabby.hal.deploy.keys_cli import main as keys_main
from krabby.hal.protocol import Kind, Reason, Topic, decode, encode, hello_payload
from krabby.hal.safety import SafetyConfig
from krabby.hal.deploy.curve import CurveClientKeys, CurveServerKeys, running_authenticators
from krabby.hal.deploy.keys import (
    AllowList, SecurityError, add_to_allow_list, generate_keypair, load_public_key, load_secret_key,
)
from krabby.hal.server import HalError, HalServer, HalServerConfig


@pytest.fixture
def keys(tmp_path):
    """robot (server), policy (allowed client), mallory (a valid key that is not allowed)."""
    return make_curve_keys(tmp_path, "mallory")


def secure_server(profile, ctx, keys, *, telemetry_encrypted=True, **safety):
    key_dir, allow_dir = keys
    sec = CurveServerKeys.from_dir(key_dir, "robot", allow_dir, telemetry_encrypted=telemetry_encrypted)
    return loopback_server(profile, ctx, *endpoints("tcp"), security=sec, **safety)


def secure_client(server, ctx, keys, name="policy", server_name="robot", telemetry_encrypted=True, **kw):
    sec = CurveClientKeys.from_dir(keys[0], name, server_name, telemetry_encrypted=telemetry_encrypted)
    return HalClient(HalClientConfig(server.config.observation_bind, server.config.command_bind, security=sec, **kw), context=ctx)


def newest_state(server, client, timeout_s=3.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        server.tick()
        s = client.wait_new(Kind.STATE, 0.02)
        if s is not None and s.seq == server._seq[Kind.STATE] - 1:
            return s
    raise AssertionError("no state reached the client")


# ------------------------------------------------------------------------------------ key files


def test_generate_writes_0600_secret_and_refuses_to_overwrite(tmp_path):
    public, secret = generate_keypair(tmp_path / "k", "robot")
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert stat.S_IMODE(public.stat().st_mode) == 0o644
    pub, sec = load_secret_key(secret)
    assert load_public_key(public) == pub and zmq.curve_public(sec) == pub
    assert b"secret-key" not in public.read_bytes()
    # the czmq/pyzmq certificate format: zmq.auth reads the files too
    assert zmq_auth.load_certificate(str(secret)) == (pub, sec)
    before = secret.read_bytes()
    with pytest.raises(SecurityError, match="refusing to overwrite"):
        generate_keypair(tmp_path / "k", "robot")
    assert secret.read_bytes() == before


def test_secret_key_readable_by_others_is_refused(tmp_path):
    _, secret = generate_keypair(tmp_path, "robot")
    os.chmod(secret, 0o644)
    with pytest.raises(SecurityError, match="chmod 600"):
        load_secret_key(secret)


def test_allow_list_rejects_secret_files_and_reloads_on_change(tmp_path):
    key_dir, allow = tmp_path / "keys", tmp_path / "allow"
    generate_keypair(key_dir, "a")
    generate_keypair(key_dir, "b")
    with pytest.raises(SecurityError, match="SECRET"):
        add_to_allow_list(key_dir / "a.key_secret", allow)
    add_to_allow_list(key_dir / "a.key", allow)
    add_to_allow_list(key_dir / "a.key", allow)  # idempotent
    lst = AllowList(allow)
    a, b = load_public_key(key_dir / "a.key"), load_public_key(key_dir / "b.key")
    assert lst.lookup(a) == "a" and lst.lookup(b) is None
    add_to_allow_list(key_dir / "b.key", allow)  # takes effect without a restart
    assert lst.lookup(b) == "b"
    (allow / "a.key").unlink()  # revocation, for new handshakes
    assert lst.lookup(a) is None


def test_a_deleted_allow_list_fails_closed_and_says_so(tmp_path, caplog):
    """Audit row 20: deleting the folder refused everyone (right) but logged nothing."""
    import shutil

    key_dir, allow = tmp_path / "keys", tmp_path / "allow"
    generate_keypair(key_dir, "a")
    add_to_allow_list(key_dir / "a.key", allow)
    lst = AllowList(allow)
    a = load_public_key(key_dir / "a.key")
    shutil.rmtree(allow)
    caplog.set_level(logging.WARNING, logger="krabby.hal")
    assert lst.lookup(a) is None and lst.lookup(a) is None
    assert [r.getMessage() for r in caplog.records].count(f"allow-list {allow} is missing or unreadable: every client is refused") == 1


def test_keys_cli(tmp_path, capsys):
    keys, allow = str(tmp_path / "keys"), str(tmp_path / "allow")
    assert keys_main(["generate", "policy", "--dir", keys]) == 0
    assert keys_main(["generate", "policy", "--dir", keys]) == 2
    assert "refusing to overwrite" in capsys.readouterr().err
    assert keys_main(["allow", f"{keys}/policy.key_secret", "--dir", allow]) == 2
    assert keys_main(["allow", f"{keys}/policy.key", "--dir", allow]) == 0
    assert keys_main(["generate", "../evil", "--dir", keys]) == 2
    capsys.readouterr()
    assert keys_main(["show", keys, allow]) == 0
    out = capsys.readouterr().out
    _, secret = load_secret_key(f"{keys}/policy.key_secret")
    assert load_public_key(f"{keys}/policy.key").decode() in out and secret.decode() not in out
    # also runnable as a module
    r = subprocess.run([sys.executable, "-m", "krabby.hal.deploy.keys_cli", "show", keys], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert r.returncode == 0 and "policy.key" in r.stdout


# ---------------------------------------------------------------------------- CURVE end to end


def test_allowed_client_works_with_encrypted_telemetry(profile, zmq_context, keys):
    server = secure_server(profile, zmq_context, keys)
    client = secure_client(server, zmq_context, keys)
    try:
        assert running_authenticators() >= 1
        client.connect()
        s = newest_state(server, client)
        assert client.send_command(profile.default_pos_rad + 0.05, s).reason == Reason.OK
        assert server.config.security.stats["accepted"] >= 2  # command and telemetry sockets
    finally:
        client.close()
        server.close()
    assert running_authenticators() == 0  # close() stopped the ZAP handler


@pytest.mark.parametrize("who", ["mallory", "no_key", "wrong_server_key"])
def test_unauthorised_client_never_reaches_the_supervisor(profile, zmq_context, keys, who, caplog):
    caplog.set_level(logging.INFO, logger="krabby.hal")
    server = secure_server(profile, zmq_context, keys)
    key_dir = keys[0]
    try:
        d = zmq_context.socket(zmq.DEALER)
        d.linger = 0
        if who != "no_key":
            pub, sec = load_secret_key(key_dir / ("mallory.key_secret" if who == "mallory" else "policy.key_secret"))
            d.curve_publickey, d.curve_secretkey = pub, sec
            d.curve_serverkey = load_public_key(key_dir / ("mallory.key" if who == "wrong_server_key" else "robot.key"))
        d.connect(server.config.command_bind)
        # the attacker even knows the session id and sends a perfectly valid command
        d.send_multipart(encode(Kind.HELLO, session_id=0, seq=1, stamp_ns=clock.now_ns(), payload=hello_payload("raw")))
        d.send_multipart(encode(Kind.COMMAND, session_id=server.session_id, seq=424242, stamp_ns=clock.now_ns(),
                                payload=np.asarray(profile.default_pos_rad + 0.2, dtype=np.float32)))
        for _ in range(15):
            server.tick()
            time.sleep(0.02)
        assert not d.poll(100)  # no WELCOME, no ACK: the handshake never completed
        assert server.stats["handshakes"] == 0 and not server.supervisor.refusals and not server.stats.get("commands_accepted")
        assert not any(c.source_seq == 424242 for c in server.backend.applied)
        if who == "mallory":  # refused by the ZAP allow-list, logged with the peer address
            assert server.config.security.stats["refused"] >= 1
            assert any("refused CURVE handshake from 127.0.0.1" in r.getMessage() for r in caplog.records)
        d.close(0)
        name, server_name = {"mallory": ("mallory", "robot"), "wrong_server_key": ("policy", "mallory")}.get(who, ("policy", "robot"))
        if who != "no_key":
            c = secure_client(server, zmq_context, keys, name=name, server_name=server_name, handshake_timeout_s=0.3)
        else:
            c = HalClient(HalClientConfig(server.config.observation_bind, server.config.command_bind, handshake_timeout_s=0.3), context=zmq_context)
        with pytest.raises(HandshakeError, match="keys"):
            c.connect()
        c.close()
    finally:
        server.close()


def test_encrypted_telemetry_is_unreadable_without_an_allowed_key(profile, zmq_context, keys):
    server = secure_server(profile, zmq_context, keys)
    subs = []
    try:
        for key in (None, "mallory"):
            sub = zmq_context.socket(zmq.SUB)
            sub.linger = 0
            if key:
                pub, sec = load_secret_key(keys[0] / f"{key}.key_secret")
                sub.curve_publickey, sub.curve_secretkey = pub, sec
                sub.curve_serverkey = load_public_key(keys[0] / "robot.key")
            sub.setsockopt(zmq.SUBSCRIBE, b"")
            sub.connect(server.config.observation_bind)
            subs.append(sub)
        for _ in range(20):
            server.tick()
            time.sleep(0.01)
        assert all(not s.poll(50) for s in subs)
    finally:
        for s in subs:
            s.close(0)
        server.close()


def test_plain_telemetry_option_still_authenticates_commands(profile, zmq_context, keys):
    server = secure_server(profile, zmq_context, keys, telemetry_encrypted=False)
    sub = zmq_context.socket(zmq.SUB)
    sub.linger = 0
    sub.setsockopt(zmq.SUBSCRIBE, Topic.STATE)
    sub.connect(server.config.observation_bind)
    client = secure_client(server, zmq_context, keys, telemetry_encrypted=False)
    try:
        client.connect()
        s = newest_state(server, client)
        assert client.send_command(profile.default_pos_rad, s).accepted
        assert sub.poll(1000) and decode(sub.recv_multipart()).header.kind == Kind.STATE  # anyone can read...
        d = zmq_context.socket(zmq.DEALER)  # ...nobody unauthenticated can command
        d.linger = 0
        d.connect(server.config.command_bind)
        d.send_multipart(encode(Kind.HELLO, session_id=0, seq=1, stamp_ns=clock.now_ns(), payload=hello_payload("raw")))
        assert not d.poll(300)
        d.close(0)
    finally:
        sub.close(0)
        client.close()
        server.close()


def test_inproc_stays_keyless_even_with_keys_configured(profile, zmq_context, keys):
    obs, cmd = endpoints("inproc")
    sec = CurveServerKeys.from_dir(keys[0], "robot", keys[1])
    server = HalServer(LoopbackTestDouble(profile), HalServerConfig(obs, cmd, security=sec, safety=SafetyConfig(arm_on_start=True)),
                       context=zmq_context).start()
    client = HalClient(HalClientConfig(obs, cmd), context=zmq_context)
    try:
        assert running_authenticators() == 0  # nothing to authenticate on inproc
        client.connect()
        assert client.send_command(profile.default_pos_rad, newest_state(server, client)).accepted
    finally:
        client.close()
        server.close()


def test_two_servers_share_one_authenticator_per_context(profile, zmq_context, keys):
    a = secure_server(profile, zmq_context, keys)
    b = secure_server(profile, zmq_context, keys)
    try:
        assert running_authenticators() == 1
        a.close()
        assert running_authenticators() == 1  # b still needs it
        c = secure_client(b, zmq_context, keys)
        c.connect()
        assert c.send_command(profile.default_pos_rad, newest_state(b, c)).accepted
        c.close()
    finally:
        a.close()
        b.close()
    assert running_authenticators() == 0


def test_failed_start_leaves_no_authenticator_behind(profile, zmq_context, keys):
    server = secure_server(profile, zmq_context, keys)
    try:
        sec = CurveServerKeys.from_dir(keys[0], "robot", keys[1])
        cfg = HalServerConfig(endpoints("tcp")[0], server.config.command_bind, security=sec)
        with pytest.raises(HalError, match="already in use"):
            HalServer(LoopbackTestDouble(profile), cfg, context=zmq_context).start()
    finally:
        server.close()
    deadline = time.monotonic() + 2.0
    while running_authenticators() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert running_authenticators() == 0


# ------------------------------------------------------------------------------ deployment


def test_example_deployment_profile_loads():
    dep = load_deployment("robot_tcp")
    assert dep.command_bind.startswith("tcp://") and not dep.allow_insecure_tcp and dep.telemetry_encrypted
    assert dep.key_dir is not None and dep.server_key == "robot" and dep.client_key == "policy"
    assert dep.safety.watchdog_s == 0.1 and dep.safety.max_command_age_s == 0.1 and not dep.safety.arm_on_start


def test_jetson_deployment_profile_loads_with_the_runner_sections():
    from krabby.hal.robot.deploy_config import DeployConfig

    dep = load_deployment("go2_jetson")
    assert dep.robot == "go2" and dep.command_bind.startswith("inproc://") and dep.server_security() is None
    assert dep.safety.watchdog_s == 0.1 and not dep.safety.arm_on_start
    deploy = DeployConfig.from_deployment(dep, robot="go2")
    assert deploy.dds.network_interface == "eth0" and len(deploy.dds.motor_joint_names) == 12
    assert deploy.zed.mount_pos_base_m == [0.33, 0.0315, 0.08] and deploy.supervisor.dry_run
    deploy.supervisor.allow_live = True  # the runner's copy, not the profile's
    assert not dep.sections["supervisor"].allow_live


def test_deployment_configures_both_sides(profile, zmq_context, tmp_path):
    key_dir, allow = make_curve_keys(tmp_path)
    obs, cmd = endpoints("tcp")
    (tmp_path / "lab.toml").write_text(f"""
[server]
observation_bind = "{obs}"
command_bind = "{cmd}"
[security]
key_dir = "keys"
allow_dir = "allowed"
server_key = "robot"
client_key = "policy"
[safety]
watchdog_s = 0.25
arm_on_start = true
""")
    dep = load_deployment(tmp_path / "lab.toml")
    assert dep.key_dir == key_dir.resolve() and dep.observation_endpoint == obs  # relative to the file; endpoints default to binds
    server = HalServer(LoopbackTestDouble(profile), dep.server_config(), context=zmq_context).start()
    client = HalClient(dep.client_config(), context=zmq_context)
    try:
        assert server.config.safety.watchdog_s == 0.25 and isinstance(server.config.security, CurveServerKeys)
        client.connect()
        assert client.send_command(profile.default_pos_rad, newest_state(server, client)).accepted
    finally:
        client.close()
        server.close()


@pytest.mark.parametrize("data,match", [
    ({"server": {"observation_bind": "tcp://127.0.0.1:1", "command_bind": "tcp://127.0.0.1:2"}}, "need CURVE keys"),
    ({"server": {"observation_bind": "tcp://a:1", "command_bind": "tcp://a:2"}, "security": {"allow_insecure_tcp": True, "key_dir": "k"}}, "opt-out"),
    ({"server": {"observation_bind": "inproc://a", "command_bind": "inproc://b"}, "safety": {"watchdog": 1.0}}, "safety.watchdog"),
    ({"server": {"observation_bind": "inproc://a", "command_bind": "inproc://b"}, "safety": {"watchdog_s": -1.0}}, "> 0"),
    ({"server": {"observation_bind": "localhost:5", "command_bind": "inproc://b"}}, "server.observation_bind"),
    ({"server": {"observation_bind": "inproc://a"}}, "server.command_bind"),
    ({"server": {"observation_bind": "inproc://a", "command_bind": "inproc://b"}, "securty": {}}, r"\[securty\]"),
    ({"server": {"observation_bind": "inproc://a", "command_bind": "inproc://b"}, "hal_safety": {}}, r"now \[safety\]"),
    ({"server": {"observation_bind": "inproc://a", "command_bind": "inproc://b"}, "dds": {"domain": 1}}, "dds.domain"),
    ({"server": {"observation_bind": "inproc://a", "command_bind": "inproc://b"}, "zed": {"mount_pos_base_m": [1, 2]}}, "zed.mount_pos_base_m"),
    ({"server": {"observation_bind": "inproc://a", "command_bind": "inproc://b"}, "supervisor": {"dry_run": 1}}, "supervisor.dry_run"),
])
def test_deployment_errors_name_the_field(tmp_path, data, match):
    with pytest.raises(DeploymentError, match=match):
        deployment_from_dict(data, tmp_path, origin="test.toml")


def test_insecure_deployment_opts_out_explicitly(tmp_path):
    dep = deployment_from_dict({"server": {"observation_bind": "tcp://127.0.0.1:1", "command_bind": "tcp://127.0.0.1:2"},
                                "security": {"allow_insecure_tcp": True}}, tmp_path)
    cfg = dep.server_config()
    assert cfg.allow_insecure_tcp and cfg.security is None and dep.client_config().security is None
