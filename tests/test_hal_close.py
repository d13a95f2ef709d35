"""close() wakes the HAL's background threads at once, over real sockets (inproc and tcp on 127.0.0.1).

The command channel's ROUTER thread, the client's telemetry thread and the CURVE authenticator (ZAP)
thread each poll their socket together with a doorbell (``zmq_io.Doorbell``) that ``close()`` rings,
so they stop on the ring instead of at their next poll timeout. These tests check the mechanism, not
a duration: with the safety-net poll timeouts raised to a minute, the poll that ended each thread
returned because something woke it. Close latency in milliseconds: ``bench/hal_close.py``."""

from __future__ import annotations

import logging
import threading
import time

import pytest
import zmq

from conftest import make_curve_keys
from krabby.hal import client as hal_client
from krabby.hal import command_channel
from krabby.hal.deploy import curve
from krabby.hal.protocol import Kind
from test_hal import make_client, make_server
from test_security import secure_client, secure_server

COMMAND_THREAD = "krabby-hal-commands"
CLIENT_TELEMETRY_THREAD = "krabby-hal-telemetry"
ZAP_THREAD = "krabby-hal-zap"


@pytest.fixture(autouse=True)
def quiet_logs(caplog):
    caplog.set_level(logging.ERROR, logger="krabby")
    yield


@pytest.fixture
def polls(monkeypatch):
    """Every ``zmq.Poller.poll`` and ``Socket.poll`` from now on: (thread name, timeout ms, returned events?)."""
    record: list[tuple[str, int | None, bool]] = []

    class RecordingPoller(zmq.Poller):  # the real poller; it only notes what each poll returned
        def poll(self, timeout=None):
            events = super().poll(timeout)
            record.append((threading.current_thread().name, timeout, bool(events)))
            return events

    monkeypatch.setattr(zmq, "Poller", RecordingPoller)
    monkeypatch.setattr(zmq.Socket, "_poller_class", RecordingPoller)  # what Socket.poll builds
    return record


@pytest.fixture
def no_timeouts(monkeypatch):
    """A minute for every safety-net poll timeout: no thread can stop at one during a test.
    (raising=False: the code before the doorbell had fixed timeouts, and these tests must fail there.)"""
    monkeypatch.setattr(command_channel, "IDLE_POLL_MS", 60_000, raising=False)
    monkeypatch.setattr(hal_client, "IDLE_POLL_MS", 60_000, raising=False)
    monkeypatch.setattr(curve._ZapHandler, "POLL_MS", 60_000, raising=False)
    monkeypatch.setattr(curve._ZapHandler, "PRUNE_S", 3600.0)  # only close() may stop it, not its own prune


def last_poll(polls, thread_name):
    mine = [p for p in polls if p[0] == thread_name]
    assert mine, f"no poll recorded in {thread_name}"
    return mine[-1]


def receive_one_state(server, client, timeout_s=5.0):
    """Tick until the client's telemetry thread hands out a state (tcp subscriptions join late)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        server.tick()
        s = client.wait_new(Kind.STATE, 0.05)
        if s is not None:
            return s
    raise AssertionError("no state arrived")


def test_doorbell_wakes_a_poll_in_another_thread(zmq_context):
    from krabby.hal.zmq_io import Doorbell

    bell = Doorbell(zmq_context, "test")
    woke: list = []
    connected = threading.Event()

    def waiter():
        pull = bell.receiver()  # the polling thread owns its end
        connected.set()
        try:
            woke.append(_poller(pull).poll(30_000))
        finally:
            pull.close(0)

    t = threading.Thread(target=waiter)
    t.start()
    assert connected.wait(5.0)
    for _ in range(100):  # rings beyond the pending one are dropped, never block
        bell.ring()
    t.join(30.0)
    bell.close()
    bell.ring()  # after close: a no-op
    assert woke and woke[0], "the poll timed out instead of waking on the ring"


def _poller(sock):
    p = zmq.Poller()
    p.register(sock, zmq.POLLIN)
    return p


@pytest.mark.parametrize("transport", ["inproc", "tcp"])
def test_server_close_wakes_the_command_thread(profile, zmq_context, polls, no_timeouts, transport):
    server = make_server(profile, zmq_context, transport)
    thread = server._thread
    try:
        client = make_client(server, zmq_context)  # the channel serves: a handshake went through it
        client.close()
    finally:
        server.close()
    assert not thread.is_alive()
    name, timeout_ms, woke = last_poll(polls, COMMAND_THREAD)
    assert woke, f"the command thread noticed close() at its {timeout_ms} ms poll timeout, not at once"


@pytest.mark.parametrize("transport", ["inproc", "tcp"])
def test_client_close_wakes_the_telemetry_thread(profile, zmq_context, polls, no_timeouts, transport):
    server = make_server(profile, zmq_context, transport)
    client = None
    try:
        client = make_client(server, zmq_context)
        thread = client._rx_thread
        receive_one_state(server, client)
        client.close()
        assert not thread.is_alive()
        name, timeout_ms, woke = last_poll(polls, CLIENT_TELEMETRY_THREAD)
        assert woke, f"the telemetry thread noticed close() at its {timeout_ms} ms poll timeout, not at once"

        polls.clear()
        client.connect()  # a closed client connects again, with a fresh doorbell
        receive_one_state(server, client)
        client.close()
        assert last_poll(polls, CLIENT_TELEMETRY_THREAD)[2]
    finally:
        if client is not None:
            client.close()
        server.close()


def test_server_close_wakes_the_curve_authenticator_thread(profile, zmq_context, polls, no_timeouts, tmp_path):
    keys = make_curve_keys(tmp_path)
    server = secure_server(profile, zmq_context, keys)
    client = secure_client(server, zmq_context, keys)
    try:
        client.connect()  # the ZAP thread answered this handshake
        assert server.config.security.stats["accepted"] >= 1
    finally:
        client.close()
        server.close()
    assert curve.running_authenticators() == 0
    name, timeout_ms, woke = last_poll(polls, ZAP_THREAD)
    assert woke, f"the ZAP thread noticed close() at its {timeout_ms} ms poll timeout, not at once"
