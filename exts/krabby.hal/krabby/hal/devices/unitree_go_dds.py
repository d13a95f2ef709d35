"""Cyclone DDS transport for the Go2's ``rt/lowcmd`` / ``rt/lowstate`` topics, safe with the robot's 0.10.x.

Standard library plus cyclonedds (imported lazily); no numpy, so the version-interop test can run
this file in bare cyclonedds environments. Facts from ../shared/research/dds_can_feasibility.md:

- **Version trap (§5).** The robot runs Cyclone DDS 0.10.2. cyclonedds-python 11 generates different
  XTypes type information for the same IDL (uint8 as TK_UINT8 instead of TK_BYTE), and a 0.10.2
  participant *crashes* when it resolves that type. Every topic created here therefore carries the
  type information that 0.10.x (and Unitree's C++ SDK) generates, vendored in
  ``unitree_go_typeinfo.py``. Setting it uses a private attribute, so only tested cyclonedds
  versions are accepted (``SUPPORTED_CYCLONEDDS``); others are refused with a clear message.
- **Discovery.** On lo, 0.10.2 is unicast-only while 11 defaults to multicast, and they never meet.
  ``loopback_config_xml()`` is the config that worked for both (fixed address, no multicast, a
  localhost peer, ``ParticipantIndex auto``). On the robot use ``interface_config_xml("eth0")``.
- **Speed (§2).** cyclonedds' Python (de)serialisation costs ~0.5 ms per LowState_; the struct codec
  in ``unitree_go_msgs`` is byte-identical and ~10x faster. Raw bytes go through cyclonedds'
  ``_clayer.ddspy_write/ddspy_take`` (private, hence the version pin); when those are missing the
  public IdlStruct path is used instead (same bytes, slower).

Unitree's PyPI ``unitree-sdk2`` is not used at all (its 1.0.1 wheel cannot even be imported).
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any, Callable, Dict, Optional

log = logging.getLogger("krabby.hal.devices.dds")

SUPPORTED_CYCLONEDDS = ("0.10.", "11.0.")
ALLOW_UNTESTED_ENV = "KRABBY_DDS_ALLOW_UNTESTED"
LOWCMD_TOPIC = "rt/lowcmd"
LOWSTATE_TOPIC = "rt/lowstate"

INSTALL_HINT = (
    "cyclonedds is not installed. On x86_64 (laptop, CI): pip install cyclonedds==11.0.1. On the Jetson "
    "(no aarch64 wheels): build it from source against the robot's Cyclone DDS 0.10.x, see jetson/README.md."
)


class DdsError(RuntimeError):
    """A DDS setup problem the user can act on (missing or untested cyclonedds, bad domain, no interface)."""


# ----------------------------------------------------------------------------------- cyclonedds
def import_cyclonedds() -> Any:
    try:
        import cyclonedds  # noqa: F401
        import cyclonedds.domain  # noqa: F401
    except ImportError:
        raise DdsError(INSTALL_HINT) from None
    return cyclonedds


def cyclonedds_version() -> str:
    try:
        from importlib.metadata import PackageNotFoundError, version
    except ImportError:  # pragma: no cover
        return "unknown"
    try:
        return version("cyclonedds")
    except PackageNotFoundError:
        return "unknown"


def check_cyclonedds_version() -> str:
    v = cyclonedds_version()
    if not v.startswith(SUPPORTED_CYCLONEDDS) and os.environ.get(ALLOW_UNTESTED_ENV) != "1":
        raise DdsError(
            f"cyclonedds {v} is untested with the Go2 (Krabby sets private cyclonedds attributes to stay "
            f"compatible with the robot's DDS 0.10.2). Install cyclonedds==11.0.1 or 0.10.x, or set "
            f"{ALLOW_UNTESTED_ENV}=1 to try anyway."
        )
    return v


# ------------------------------------------------------------------------------------ IDL types
_TYPES: Dict[str, Any] = {}
_TYPES_LOCK = threading.Lock()


def idl_types() -> Dict[str, Any]:
    """The unitree_go and unitree_api IdlStruct classes (names, fields, annotations as Unitree's IDL), built once."""
    with _TYPES_LOCK:
        if _TYPES:
            return _TYPES
        import_cyclonedds()
        from . import unitree_api_idl as api
        from . import unitree_go_idl as m

        for name in ("MotorCmd_", "BmsCmd_", "LowCmd_", "IMUState_", "MotorState_", "BmsState_", "LowState_"):
            _TYPES[name] = getattr(m, name)
        for name in ("Request_", "Response_"):
            _TYPES[name] = getattr(api, name)
        return _TYPES


def robot_typeinfo(type_name: str) -> tuple:
    """(typeinfo, typemap) the robot's DDS 0.10.x announces for a topic type (vendored from Unitree's SDK)."""
    from .unitree_api_typeinfo import TYPEINFO_0_10 as API
    from .unitree_go_typeinfo import TYPEINFO_0_10 as GO

    return {**GO, **API}[type_name]


def generated_typeinfo(type_name: str) -> tuple:
    """(typeinfo, typemap) bytes that *this* cyclonedds generates for LowCmd_ or LowState_."""
    T = idl_types()[type_name]
    T.__idl__.populate()
    T.__idl__.fill_type_data()
    return tuple(T.__idl__._xt_bytedata)


def apply_robot_typeinfo(type_name: str) -> bool:
    """Make ``type_name`` announce the 0.10.x type information. Returns True when it had to be changed.

    Must run before the first Topic of that type is created (cyclonedds reads it then).
    """
    T = idl_types()[type_name]
    wanted = robot_typeinfo(type_name)
    T.__idl__.populate()
    T.__idl__.fill_type_data()
    if not hasattr(T.__idl__, "_xt_bytedata"):
        raise DdsError(
            f"this cyclonedds ({cyclonedds_version()}) has no _xt_bytedata; Krabby cannot make {type_name} "
            "safe for the robot's DDS 0.10.2. Use cyclonedds==11.0.1 or 0.10.x."
        )
    current = tuple(T.__idl__._xt_bytedata)
    if current == wanted:
        return False
    T.__idl__._xt_bytedata = wanted
    return True


# ---------------------------------------------------------------------------------- configs
def loopback_config_xml(address: str = "127.0.0.1", trace_file: Optional[str] = None) -> str:
    """The config that works for both 0.10.2 and 11 on loopback (feasibility doc §2): unicast to a local peer."""
    trace = ""
    if trace_file:
        trace = f"<Tracing><Verbosity>finest</Verbosity><OutputFile>{trace_file}</OutputFile></Tracing>"
    return (
        '<CycloneDDS><Domain Id="any">'
        f'<General><Interfaces><NetworkInterface address="{address}"/></Interfaces>'
        "<AllowMulticast>false</AllowMulticast></General>"
        f'<Discovery><Peers><Peer address="{address}"/></Peers>'
        "<ParticipantIndex>auto</ParticipantIndex><MaxAutoParticipantIndex>30</MaxAutoParticipantIndex></Discovery>"
        f"{trace}</Domain></CycloneDDS>"
    )


def interface_config_xml(interface: str) -> str:
    """The robot's network: one named interface (e.g. eth0 on the Go2's 192.168.123.0/24), default discovery.

    Unlike the SDK's ChannelFactoryInitialize this writes no trace file into the shared temp folder.
    """
    return (
        '<CycloneDDS><Domain Id="any"><General><Interfaces>'
        f'<NetworkInterface name="{interface}" priority="default" multicast="default"/>'
        "</Interfaces></General></Domain></CycloneDDS>"
    )


# ----------------------------------------------------------------------------------- the bus
_DOMAINS: Dict[int, tuple] = {}
_DOMAINS_LOCK = threading.Lock()

class RawWriter:
    """Publishes already-encoded wire bytes (header + XCDR1 body) on one topic."""

    def __init__(self, bus: "DdsBus", writer: Any, data_type: Any):
        self._writer = writer
        self._type = data_type
        self._fast = bus._ddspy_write
        self.written = 0

    def write(self, wire: bytes) -> None:
        if self._fast is not None:
            ret = self._fast(self._writer._ref, wire)
            if ret < 0:
                raise DdsError(f"dds write failed with code {ret}")
        else:
            self._writer.write(self._type.deserialize(wire))
        self.written += 1

    @property
    def matched(self) -> int:
        """Number of matched readers (0 until discovery found the peer)."""
        try:
            return len(self._writer.get_matched_subscriptions())
        except Exception:
            return -1


class RawReader:
    """Delivers the wire bytes of every received sample to ``on_bytes`` from Cyclone's listener thread."""

    def __init__(self, bus: "DdsBus", reader: Any, data_type: Any, on_bytes: Callable[[bytes], None]):
        self._reader = reader
        self._type = data_type
        self._bus = bus
        self._on_bytes = on_bytes
        self.received = 0
        self.callback_errors = 0

    def _drain(self) -> None:
        try:
            for data in self._bus._take_raw(self._reader, self._type):
                self.received += 1
                self._on_bytes(data)
        except Exception:  # never let a bad sample kill Cyclone's thread
            self.callback_errors += 1
            if self.callback_errors <= 5:
                log.exception("dds reader callback failed")

    @property
    def matched(self) -> int:
        try:
            return len(self._reader.get_matched_publications())
        except Exception:
            return -1


class DdsBus:
    """One participant on one domain, with raw-bytes writers and readers for the unitree_go types."""

    def __init__(self, domain_id: int = 0, config_xml: Optional[str] = None, *, robot_typeinfo: bool = True,
                 raw_api: bool = True):
        import_cyclonedds()
        self.version = check_cyclonedds_version()
        if not 0 <= domain_id <= 232:
            raise DdsError(f"DDS domain id {domain_id} is invalid (0..232; use 1..100 for tests to keep ports low)")
        from cyclonedds.domain import Domain, DomainParticipant

        self.domain_id = domain_id
        self.robot_typeinfo = robot_typeinfo
        types = idl_types()
        if robot_typeinfo:
            for name in ("LowCmd_", "LowState_"):
                if apply_robot_typeinfo(name):
                    log.info("dds: %s announces the robot's 0.10.x type information (cyclonedds %s)", name, self.version)
        self._types = types
        self._domain = None
        if config_xml is not None:
            with _DOMAINS_LOCK:  # one Domain per id per process; a second bus in this process shares it
                known = _DOMAINS.get(domain_id)
                if known is None:
                    try:
                        known = _DOMAINS[domain_id] = (config_xml, Domain(domain_id, config_xml))
                    except Exception as e:
                        raise DdsError(f"cannot create DDS domain {domain_id} with the given config: {e}") from None
                elif known[0] != config_xml:
                    raise DdsError(f"DDS domain {domain_id} already exists in this process with another config")
                self._domain = known[1]
        try:
            self.participant = DomainParticipant(domain_id)
        except Exception as e:
            raise DdsError(
                f"cannot create a DDS participant on domain {domain_id}: {e} (is the network interface up?)"
            ) from None
        self._topics: Dict[str, Any] = {}
        self._readers: list = []
        self._ddspy_write = None
        self._ddspy_take = None
        self._take_mask = None
        try:
            from cyclonedds import _clayer

            if raw_api:
                self._ddspy_write = _clayer.ddspy_write
                self._ddspy_take = _clayer.ddspy_take
        except (ImportError, AttributeError):
            log.warning("cyclonedds %s lacks the raw-bytes API; using the slower IdlStruct path", self.version)
        if self.version.startswith("0.10."):
            self._take_args = lambda ref, n: (ref, n)
        else:
            from cyclonedds.core import InstanceState, SampleState, ViewState

            mask = SampleState.Any | ViewState.Any | InstanceState.Any
            self._take_args = lambda ref, n: (ref, mask, n)

    def _topic(self, name: str, type_name: str) -> Any:
        from cyclonedds.topic import Topic

        key = f"{name}:{type_name}"
        if key not in self._topics:
            if self.robot_typeinfo and apply_robot_typeinfo(type_name):
                log.info("dds: %s announces the robot's 0.10.x type information (cyclonedds %s)", type_name, self.version)
            self._topics[key] = Topic(self.participant, name, self._types[type_name])
        return self._topics[key]

    def writer(self, topic_name: str, type_name: str) -> RawWriter:
        from cyclonedds.pub import DataWriter

        return RawWriter(self, DataWriter(self.participant, self._topic(topic_name, type_name)), self._types[type_name])

    def reader(self, topic_name: str, type_name: str, on_bytes: Callable[[bytes], None]) -> RawReader:
        from cyclonedds.core import Listener
        from cyclonedds.sub import DataReader

        holder: Dict[str, RawReader] = {}
        listener = Listener(on_data_available=lambda _r: holder["r"]._drain() if "r" in holder else None)
        dr = DataReader(self.participant, self._topic(topic_name, type_name), listener=listener)
        raw = RawReader(self, dr, self._types[type_name], on_bytes)
        holder["r"] = raw
        raw._listener = listener  # keep the listener alive with the reader
        raw._drain()  # anything that arrived before the holder was filled
        self._readers.append(raw)
        return raw

    def _take_raw(self, reader: Any, data_type: Any, n: int = 64) -> list:
        if self._ddspy_take is not None:
            ret = self._ddspy_take(*self._take_args(reader._ref, n))
            if isinstance(ret, int):
                raise DdsError(f"dds take failed with code {ret}")
            return [bytes(data) for data, info in ret if info.valid_data]
        out = []
        for s in reader.take(n):
            if getattr(getattr(s, "sample_info", None), "valid_data", True) and isinstance(s, data_type):
                out.append(s.serialize())
        return out

    def close(self) -> None:
        """Delete the participant (and with it every reader/writer); safe to call twice."""
        p, self.participant = getattr(self, "participant", None), None
        self._readers.clear()
        self._topics.clear()
        if p is not None:
            try:
                p.__del__()  # cyclonedds deletes the entity tree here
            except Exception:
                pass
        self._domain = None


__all__ = [
    "DdsBus", "DdsError", "RawReader", "RawWriter", "loopback_config_xml", "interface_config_xml",
    "idl_types", "apply_robot_typeinfo", "generated_typeinfo", "robot_typeinfo", "cyclonedds_version", "LOWCMD_TOPIC", "LOWSTATE_TOPIC",
]
