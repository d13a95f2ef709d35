"""Shared fixtures: the Go2 profile, free loopback ports, and a running HAL on the loopback test double."""

from __future__ import annotations

import contextlib
import socket
import sys
import threading
import uuid
from pathlib import Path

import pytest
import zmq

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
FIXTURES = SHARED / "fixtures" / "parkour"
sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/fakes importable as `fakes`


def free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_curve_keys(folder: Path, *unallowed: str) -> tuple[Path, Path]:
    """CURVE key files as ``krabby-keys`` writes them: ``folder/keys`` holds robot (the server) and policy (the
    allowed client), plus each name in ``unallowed`` (a valid key the server does not allow);
    ``folder/allowed`` is the server's allow-list. Returns (key dir, allow dir)."""
    from krabby.hal.deploy.keys import add_to_allow_list, generate_keypair

    key_dir, allow_dir = folder / "keys", folder / "allowed"
    for name in ("robot", "policy", *unallowed):
        generate_keypair(key_dir, name)
    add_to_allow_list(key_dir / "policy.key", allow_dir)
    return key_dir, allow_dir


@pytest.fixture
def profile():
    from krabby.hal.robot_profile import load_robot_profile

    return load_robot_profile("go2")


@pytest.fixture
def zmq_context():
    ctx = zmq.Context()
    yield ctx
    ctx.destroy(linger=0)


def endpoints(transport: str) -> tuple[str, str]:
    """A fresh (observation, command) endpoint pair for inproc or tcp on 127.0.0.1."""
    if transport == "inproc":
        tag = uuid.uuid4().hex[:8]
        return f"inproc://obs-{tag}", f"inproc://cmd-{tag}"
    return f"tcp://127.0.0.1:{free_tcp_port()}", f"tcp://127.0.0.1:{free_tcp_port()}"


def loopback_server(profile, ctx: zmq.Context, obs: str, cmd: str, *, security=None, **safety):
    """A started HalServer on the loopback test double, armed at start (``safety`` sets any other
    ``SafetyConfig`` field, or overrides that); tcp without ``security`` is allowed, as on 127.0.0.1 only."""
    from krabby.hal.backends.loopback_double import LoopbackTestDouble
    from krabby.hal.safety import SafetyConfig
    from krabby.hal.server import HalServer, HalServerConfig

    cfg = HalServerConfig(obs, cmd, security=security, allow_insecure_tcp=security is None,
                          safety=SafetyConfig(**{"arm_on_start": True, **safety}))
    return HalServer(LoopbackTestDouble(profile), cfg, context=ctx).start()


def raw_dealer(ctx: zmq.Context, endpoint: str, keys: tuple[Path, Path] | None = None) -> zmq.Socket:
    """A bare DEALER on the command endpoint, as a hand-written peer would open it (no HalClient);
    a CURVE client with the allowed ``policy`` key when ``keys`` (from ``make_curve_keys``) is given."""
    from krabby.hal.deploy.keys import load_public_key, load_secret_key

    d = ctx.socket(zmq.DEALER)
    d.linger = 0
    if keys is not None:
        d.curve_publickey, d.curve_secretkey = load_secret_key(keys[0] / "policy.key_secret")
        d.curve_serverkey = load_public_key(keys[0] / "robot.key")
    d.connect(endpoint)
    return d


def raw_request(dealer: zmq.Socket, frames: list[bytes], timeout_ms: int = 1000):
    """Send one request and wait for its reply: the decoded WELCOME message, else the ``Ack``."""
    from krabby.hal.protocol import Ack, Kind, decode

    dealer.send_multipart(frames)
    assert dealer.poll(timeout_ms), "server did not answer"
    msg = decode(dealer.recv_multipart())
    return msg if msg.header.kind == Kind.WELCOME else Ack.unpack(msg.header.seq, msg.payload)


@contextlib.contextmanager
def ticking(server, duration_s: float = 60.0):
    """Run the server at its control rate (50 Hz for the Go2) in a thread, as a robot would."""
    running = threading.Event()
    running.set()
    t = threading.Thread(target=server.run, args=(running,), kwargs={"duration_s": duration_s}, daemon=True)
    t.start()
    try:
        yield
    finally:
        running.clear()
        t.join(2.0)
