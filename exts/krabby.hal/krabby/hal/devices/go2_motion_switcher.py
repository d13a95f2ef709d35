"""Unitree's sport-mode controller: detect it, ask the motion switcher, release it, before rt/lowcmd is written.

A Go2 boots with its own locomotion service ("sport mode") driving the motors. A second program writing
``rt/lowcmd`` fights it (violent twitching, even with zero-torque frames). Every upstream low-level
program first releases it (unitree_sdk2 ``example/go2/go2_stand_example.cpp``: CheckMode, then
ReleaseMode until CheckMode reports no mode). Facts used here, all from Unitree's published sources:

- RPC over DDS: requests on ``rt/api/motion_switcher/request``, responses on ``.../response``
  (unitree_sdk2_python ``core/channel_name.py``), types ``unitree_api::msg::dds_::Request_`` /
  ``Response_`` (``unitree_api_idl``; 0.10.x type information vendored in ``unitree_api_typeinfo``).
- api ids (``comm/motion_switcher/motion_switcher_api.py``): CheckMode 1001, SelectMode 1002,
  ReleaseMode 1003. Parameters are JSON strings (``"{}"``); CheckMode answers
  ``{"form": "0", "name": "normal"}``; an empty name means no mode is active.
- A request's ``header.identity.id`` is the client's ``time.monotonic_ns()``; the response echoes
  it with the api id and a status code (0 = ok; 3104 client timeout, 3203 not implemented).

``preflight`` runs both checks of the runner: nobody else publishes rt/lowcmd, and the sport mode is
off (or released when the operator asked). ``SimMotionSwitcher`` plays the robot's service for the
simulated node and the tests. Standard library plus cyclonedds only (runs in bare DDS environments).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Dict

from . import unitree_go_dds as dds

log = logging.getLogger("krabby.hal.devices.go2_motion_switcher")

SERVICE = "motion_switcher"
API_CHECK_MODE = 1001
API_SELECT_MODE = 1002
API_RELEASE_MODE = 1003
RESEND_S = 0.5  # a request not answered in this long is sent again (same id) until the timeout
RPC_OK = 0
RPC_ERR_SERVER_API_NOT_IMPL = 3203
SPORT_MODE_POLICIES = ("check", "release", "skip")


def request_topic(service: str = SERVICE) -> str:
    return f"rt/api/{service}/request"


def response_topic(service: str = SERVICE) -> str:
    return f"rt/api/{service}/response"


class SportModeError(RuntimeError):
    """The robot's own controller (or another program) would fight the runner; the message says what to do."""


@dataclass
class SportMode:
    form: str
    name: str  # "" = released: no Unitree locomotion service drives the motors

    @property
    def active(self) -> bool:
        return bool(self.name)


# ------------------------------------------------------------------------------------- codec
def encode_request(request_id: int, api_id: int, parameter: str = "{}", *, lease_id: int = 0, priority: int = 0,
                   noreply: bool = False) -> bytes:
    """Wire bytes (XCDR1 header + body) of a unitree_api Request_."""
    from .unitree_api_idl import Request_, RequestHeader_, RequestIdentity_, RequestLease_, RequestPolicy_

    dds.idl_types()
    header = RequestHeader_(RequestIdentity_(request_id, api_id), RequestLease_(lease_id), RequestPolicy_(priority, noreply))
    return Request_(header, parameter, []).serialize()


def decode_request(buf: bytes) -> Any:
    return dds.idl_types()["Request_"].deserialize(buf)


def encode_response(request_id: int, api_id: int, code: int, data: str = "") -> bytes:
    from .unitree_api_idl import RequestIdentity_, Response_, ResponseHeader_, ResponseStatus_

    dds.idl_types()
    return Response_(ResponseHeader_(RequestIdentity_(request_id, api_id), ResponseStatus_(code)), data, []).serialize()


def decode_response(buf: bytes) -> Any:
    return dds.idl_types()["Response_"].deserialize(buf)


# ------------------------------------------------------------------------------------ client
class MotionSwitcherClient:
    """CheckMode / ReleaseMode against the robot's motion_switcher service, over an existing ``DdsBus``."""

    def __init__(self, bus: "dds.DdsBus", timeout_s: float = 2.0):
        self.timeout_s = timeout_s
        self._lock = threading.Lock()
        self._waiting: Dict[int, Any] = {}
        self._writer = bus.writer(request_topic(), "Request_")
        self._reader = bus.reader(response_topic(), "Response_", self._on_response)

    def _on_response(self, buf: bytes) -> None:
        r = decode_response(buf)
        with self._lock:
            slot = self._waiting.get(r.header.identity.id)
        if slot is not None:
            slot[1] = r
            slot[0].set()

    def call(self, api_id: int, parameter: str = "{}") -> tuple:
        """(status code, data string); raises SportModeError when the service does not answer in time."""
        end = time.monotonic() + self.timeout_s
        while (self._writer.matched <= 0 or self._reader.matched <= 0) and time.monotonic() < end:
            time.sleep(0.01)  # discovery: a request (or response) sent before both sides matched is lost
        rid = time.monotonic_ns()
        slot = [threading.Event(), None]
        with self._lock:
            self._waiting[rid] = slot
        try:
            # matched here does not mean the service's response writer has matched our reader yet (discovery
            # is per side; responses are volatile): resend the same request until it is answered
            request = encode_request(rid, api_id, parameter)
            answered = False
            while not answered and time.monotonic() < end:
                self._writer.write(request)
                answered = slot[0].wait(min(RESEND_S, max(0.0, end - time.monotonic())))
            if not answered:
                raise SportModeError(f"Unitree's motion_switcher service did not answer api {api_id} within "
                                     f"{self.timeout_s:.1f} s (rt/api/motion_switcher/request)")
        finally:
            with self._lock:
                self._waiting.pop(rid, None)
        r = slot[1]
        if r.header.identity.api_id != api_id:
            raise SportModeError(f"motion_switcher answered api {r.header.identity.api_id} to a request for {api_id}")
        return int(r.header.status.code), str(r.data)

    def check_mode(self) -> SportMode:
        code, data = self.call(API_CHECK_MODE)
        if code != RPC_OK:
            raise SportModeError(f"motion_switcher CheckMode failed with code {code}")
        try:
            d = json.loads(data) if data else {}
        except ValueError:
            raise SportModeError(f"motion_switcher CheckMode answered unreadable data {data[:80]!r}") from None
        return SportMode(form=str(d.get("form", "")), name=str(d.get("name", "")))

    def release_mode(self) -> int:
        return self.call(API_RELEASE_MODE)[0]


# ------------------------------------------------------------------------- rt/lowcmd probe
def lowcmd_publishers(bus: "dds.DdsBus", window_s: float, topic: str = dds.LOWCMD_TOPIC) -> tuple:
    """(matched publishers, samples received) on rt/lowcmd over ``window_s``: anyone but us writing it."""
    got = [0]
    reader = bus.reader(topic, "LowCmd_", lambda _b: got.__setitem__(0, got[0] + 1))
    time.sleep(window_s)
    return max(reader.matched, 0), got[0]


def preflight(bus: "dds.DdsBus", *, sport_mode: str = "check", probe_s: float = 0.5, timeout_s: float = 2.0,
              release_wait_s: float = 10.0) -> str:
    """Refuse (SportModeError, one line saying what to do) unless the runner would be rt/lowcmd's only writer.

    ``sport_mode``: "check" refuses an active mode, "release" releases it (ReleaseMode, then CheckMode
    until empty), "skip" does not ask (simulators without the service, e.g. unitree_mujoco). Returns a
    summary for the log.
    """
    if sport_mode not in SPORT_MODE_POLICIES:
        raise ValueError(f"sport_mode {sport_mode!r}: use one of {SPORT_MODE_POLICIES}")
    summary = "sport mode not checked ([dds] sport_mode = \"skip\")"
    if sport_mode != "skip":
        client = MotionSwitcherClient(bus, timeout_s)
        try:
            mode = client.check_mode()
        except SportModeError as e:
            raise SportModeError(f"{e}: cannot tell whether Unitree's sport mode is off. Check the robot's network "
                                 "and firmware, or set [dds] sport_mode = \"skip\" for a simulator without it") from None
        if mode.active and sport_mode == "check":
            raise SportModeError(f"Unitree's sport mode '{mode.name}' is active and would fight the runner: rerun with "
                                 "--release-sport-mode (or [dds] sport_mode = \"release\"), robot lying down")
        if mode.active:
            log.warning("releasing Unitree's sport mode '%s' (motion_switcher ReleaseMode)", mode.name)
            end = time.monotonic() + release_wait_s
            while mode.active:
                if time.monotonic() > end:
                    raise SportModeError(f"sport mode '{mode.name}' still active {release_wait_s:.0f} s after ReleaseMode: "
                                         "release it in the Unitree app and retry")
                code = client.release_mode()
                if code != RPC_OK:
                    log.warning("motion_switcher ReleaseMode returned %d", code)
                time.sleep(0.5)
                mode = client.check_mode()
            summary = "sport mode released"
        else:
            summary = "sport mode off (motion_switcher: no mode)"
    if probe_s > 0:
        writers, samples = lowcmd_publishers(bus, probe_s)
        if writers or samples:
            raise SportModeError(f"another program publishes {dds.LOWCMD_TOPIC} ({writers} writer(s), {samples} frames in "
                                 f"{probe_s:.1f} s): stop it first; two controllers would fight over the motors")
        summary += f"; nobody else on {dds.LOWCMD_TOPIC} ({probe_s:.1f} s)"
    return summary


# --------------------------------------------------------------------- the robot's service
class SimMotionSwitcher:
    """The robot's motion_switcher service, for the simulated node and tests: CheckMode, SelectMode, ReleaseMode."""

    def __init__(self, bus: "dds.DdsBus", mode_name: str = "", form: str = "0"):
        self.mode = SportMode(form, mode_name)
        self.requests: list = []
        self._writer = bus.writer(response_topic(), "Response_")
        self._reader = bus.reader(request_topic(), "Request_", self._on_request)

    def _on_request(self, buf: bytes) -> None:
        req = decode_request(buf)
        api, rid = int(req.header.identity.api_id), int(req.header.identity.id)
        self.requests.append(api)
        data, code = "", RPC_OK
        if api == API_CHECK_MODE:
            data = json.dumps({"form": self.mode.form, "name": self.mode.name})
        elif api == API_RELEASE_MODE:
            self.mode = SportMode(self.mode.form, "")
        elif api == API_SELECT_MODE:
            self.mode = SportMode(self.mode.form, str(json.loads(req.parameter or "{}").get("name", "")))
        else:
            code = RPC_ERR_SERVER_API_NOT_IMPL
        if not req.header.policy.noreply:
            self._writer.write(encode_response(rid, api, code, data))


__all__ = ["MotionSwitcherClient", "SimMotionSwitcher", "SportMode", "SportModeError", "preflight", "lowcmd_publishers",
           "encode_request", "decode_request", "encode_response", "decode_response", "request_topic", "response_topic",
           "API_CHECK_MODE", "API_RELEASE_MODE", "API_SELECT_MODE", "SPORT_MODE_POLICIES"]
