"""Run logs: every HAL message a client received and sent, each control step, and Foxglove channels, in one MCAP file.

MCAP (https://mcap.dev) is the robotics log container (Foxglove, ROS 2 bags). A Krabby log has:

| channel | message_encoding | data |
|---|---|---|
| ``hal/rx`` | ``krabby-hal-v1`` | one telemetry or ACK message exactly as received: the HAL wire frames (docs/protocol.md), each as ``u32 length`` + bytes |
| ``hal/tx`` | ``krabby-hal-v1`` | one COMMAND/CONTROL exactly as sent, same framing |
| ``krabby/step`` | ``json`` (schema ``krabby.step``) | one control step: which telemetry (kind, session, seq) fed the observation, the raw policy action (policy order), the joint targets sent (robot order), timings |
| ``/joint_states``, ``/depth``, ``/tf``, ... | Foxglove well-known schemas or JSON with a schema | what Foxglove shows (``krabby.parkour.foxglove_log``, ``foxglove_world``) |

and the metadata record ``krabby`` with the checkpoint path, policy kind, backend, estimator
choice and robot profile name. Because ``hal/rx`` holds the exact bytes, a replay decodes them with
the same protocol code, rebuilds the observation with the same builder and runs the same policy:
see ``krabby.parkour.replay``. The file is written by foxglove-sdk; the same channels can also
stream live (``FoxgloveSession``).
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

from .foxglove_log import STEP_SCHEMA, FoxgloveSession, LiveViewConfig

FRAME_LEN = struct.Struct("<I")
HAL_ENCODING = "krabby-hal-v1"
HAL_SCHEMA_NAME = "krabby.hal.v1.frames"
CH_RX, CH_TX, CH_STEP = "hal/rx", "hal/tx", "krabby/step"
MCAP_MAGIC = b"\x89MCAP0\r\n"


def pack_frames(frames: Sequence[Any]) -> bytes:
    out = bytearray()
    for f in frames:
        b = f.bytes if hasattr(f, "bytes") else bytes(f)
        out += FRAME_LEN.pack(len(b)) + b
    return bytes(out)


def unpack_frames(data: bytes) -> list[bytes]:
    frames, i = [], 0
    while i < len(data):
        (n,) = FRAME_LEN.unpack_from(data, i)
        i += FRAME_LEN.size
        frames.append(data[i : i + n])
        i += n
    return frames


class RunRecorder:
    """The raw HAL and step channels; the HAL client's receive thread and the control loop both write to it.

    Writes into ``session`` when given (the runner's, shared with its other channels), else opens
    its own session on ``path`` (and on ``live``, a WebSocket).
    """

    def __init__(self, path: str | Path | None = None, metadata: dict[str, Any] | None = None, *,
                 session: FoxgloveSession | None = None, live: LiveViewConfig | None = None):
        self._owns = session is None
        self.session = session if session is not None else FoxgloveSession(path, live)
        self.path = self.session.path
        s = self.session
        self._ch = {
            CH_RX: s.channel(CH_RX, encoding=HAL_ENCODING, schema_name=HAL_SCHEMA_NAME),
            CH_TX: s.channel(CH_TX, encoding=HAL_ENCODING, schema_name=HAL_SCHEMA_NAME),
            CH_STEP: s.channel(CH_STEP, STEP_SCHEMA),
        }
        if metadata:
            s.metadata("krabby", metadata)
        self.closed = False

    def hal_frames(self, direction: str, frames: Sequence[Any], stamp_ns: int) -> None:
        if not self.closed:
            self._ch[CH_RX if direction == "rx" else CH_TX].log(pack_frames(frames), log_time=stamp_ns)

    def step(self, record: dict[str, Any], stamp_ns: int) -> None:
        if not self.closed:
            self._ch[CH_STEP].log(json.dumps(record, separators=(",", ":")).encode(), log_time=stamp_ns)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._owns:
            self.session.close()


@dataclass
class LogMessage:
    channel: str
    log_time_ns: int
    data: bytes
    schema: Any = None
    channel_record: Any = None


class LogReadError(ValueError):
    """A file that is not a readable Krabby run log; the message says what it is and what to do."""


@dataclass
class RunLog:
    """An opened run log: metadata, messages in log-time order, and whether the file was cut short."""

    path: Path
    metadata: dict[str, str]
    messages: Iterator[LogMessage]
    truncated: str | None = None  # why the end is missing, None for a complete file
    channels: dict[str, tuple[Any, Any]] = field(default_factory=dict)  # topic -> (channel, schema)


def open_log(path: str | Path, topics: Sequence[str] | None = None) -> RunLog:
    """Open a run log. A file cut short (a crash mid-write) is read as far as its complete records go."""
    from mcap.exceptions import McapError
    from mcap.reader import make_reader

    path = Path(path)
    f = open(path, "rb")  # OSError (no such file, permission) is the caller's one-line message
    head = f.read(len(MCAP_MAGIC))
    if head != MCAP_MAGIC:
        f.close()
        what = "an empty file" if not head else f"it starts with {head[:8]!r}"
        raise LogReadError(f"{path}: not an MCAP run log ({what}); give the log.mcap a run wrote (--record or --runs)")
    f.seek(0)
    try:
        reader = make_reader(f)
        summary = reader.get_summary()
        if summary is None:
            raise McapError("no summary section")
    except (McapError, ValueError, struct.error, EOFError) as e:
        f.seek(0)
        return _stream_log(path, f, f"{type(e).__name__}: {e}", topics)
    meta = {}
    for m in reader.iter_metadata():
        if m.name == "krabby":
            meta = dict(m.metadata)
    channels = {c.topic: (c, summary.schemas.get(c.schema_id)) for c in summary.channels.values()}

    def messages() -> Iterator[LogMessage]:
        try:
            for schema, channel, message in reader.iter_messages(topics=topics, log_time_order=True):
                yield LogMessage(channel.topic, message.log_time, message.data, schema, channel)
        finally:
            f.close()

    return RunLog(path, meta, messages(), None, channels)


def _stream_log(path: Path, f: Any, why: str, topics: Sequence[str] | None) -> RunLog:
    """Every complete record of a file without a usable summary, sorted by log time."""
    from mcap.records import Channel, Message, Metadata, Schema
    from mcap.stream_reader import StreamReader

    schemas: dict[int, Any] = {}
    chans: dict[int, Any] = {}
    meta: dict[str, str] = {}
    msgs: list[LogMessage] = []
    try:
        for r in StreamReader(f, record_size_limit=1 << 30).records:
            if isinstance(r, Schema):
                schemas[r.id] = r
            elif isinstance(r, Channel):
                chans[r.id] = r
            elif isinstance(r, Metadata) and r.name == "krabby":
                meta = dict(r.metadata)
            elif isinstance(r, Message) and r.channel_id in chans:
                c = chans[r.channel_id]
                if topics is None or c.topic in topics:
                    msgs.append(LogMessage(c.topic, r.log_time, r.data, schemas.get(c.schema_id), c))
        truncated = f"{path} has no summary section ({why}); it was probably cut short"
    except Exception as e:  # noqa: BLE001 - any failure past the last complete record ends the read
        truncated = f"{path} is truncated at byte {f.tell()} ({type(e).__name__}); read the {len(msgs)} messages before it"
    finally:
        f.close()
    msgs.sort(key=lambda m: m.log_time_ns)  # stable: same-time messages keep file order
    channels = {c.topic: (c, schemas.get(c.schema_id)) for c in chans.values()}
    return RunLog(path, meta, iter(msgs), truncated, channels)


def read_log(path: str | Path) -> tuple[dict[str, str], Iterator[LogMessage]]:
    """Metadata and an iterator over messages in log-time order."""
    log = open_log(path)
    return log.metadata, log.messages
