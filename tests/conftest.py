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
