"""Run logs: every HAL message a client received and sent, plus each control step, in one MCAP file.

MCAP (https://mcap.dev) is the robotics log container (Foxglove, ROS 2 bags). A Krabby log has:

| channel | message_encoding | data |
|---|---|---|
| ``hal/rx`` | ``krabby-hal-v1`` | one telemetry or ACK message exactly as received: the HAL wire frames (docs/protocol.md), each as ``u32 length`` + bytes |
| ``hal/tx`` | ``krabby-hal-v1`` | one COMMAND/CONTROL exactly as sent, same framing |
| ``krabby/step`` | ``json`` | one control step: which telemetry (kind, session, seq) fed the observation, the raw policy action (policy order), the joint targets sent (robot order), timings |

and the metadata record ``krabby`` with the checkpoint path, policy kind, backend, estimator
choice and robot profile name. Because ``hal/rx`` holds the exact bytes, a replay decodes them with
the same protocol code, rebuilds the observation with the same builder and runs the same policy:
see ``krabby.parkour.replay``.
"""

from __future__ import annotations

import json
import struct
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

FRAME_LEN = struct.Struct("<I")
HAL_ENCODING = "krabby-hal-v1"
CH_RX, CH_TX, CH_STEP = "hal/rx", "hal/tx", "krabby/step"


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
    """Thread-safe MCAP writer; the HAL client's receive thread and the control loop both write to it."""

    def __init__(self, path: str | Path, metadata: dict[str, Any] | None = None):
        try:
            from mcap.writer import Writer
        except ImportError:
            raise RuntimeError("recording needs the MCAP library: pip install 'krabby[record]' (or pip install mcap)") from None
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "wb")
        self._w = Writer(self._file)
        self._w.start(profile="krabby", library="krabby.parkour.record")
        hal_schema = self._w.register_schema(name="krabby.hal.v1.frames", encoding="", data=b"")
        step_schema = self._w.register_schema(name="krabby.step", encoding="jsonschema", data=b"{}")
        self._ch = {
            CH_RX: self._w.register_channel(CH_RX, HAL_ENCODING, hal_schema),
            CH_TX: self._w.register_channel(CH_TX, HAL_ENCODING, hal_schema),
            CH_STEP: self._w.register_channel(CH_STEP, "json", step_schema),
        }
        if metadata:
            self._w.add_metadata("krabby", {k: str(v) for k, v in metadata.items()})
        self._lock = threading.Lock()
        self._seq = 0
        self.closed = False

    def _add(self, channel: str, stamp_ns: int, data: bytes) -> None:
        with self._lock:
            if self.closed:
                return
            self._seq += 1
            self._w.add_message(self._ch[channel], log_time=stamp_ns, publish_time=stamp_ns, data=data, sequence=self._seq)

    def hal_frames(self, direction: str, frames: Sequence[Any], stamp_ns: int) -> None:
        self._add(CH_RX if direction == "rx" else CH_TX, stamp_ns, pack_frames(frames))

    def step(self, record: dict[str, Any], stamp_ns: int) -> None:
        self._add(CH_STEP, stamp_ns, json.dumps(record, separators=(",", ":")).encode())

    def close(self) -> None:
        with self._lock:
            if self.closed:
                return
            self.closed = True
            self._w.finish()
            self._file.close()


@dataclass
class LogMessage:
    channel: str
    log_time_ns: int
    data: bytes


def read_log(path: str | Path) -> tuple[dict[str, str], Iterator[LogMessage]]:
    """Metadata and an iterator over messages in log-time order."""
    from mcap.reader import make_reader

    f = open(path, "rb")
    reader = make_reader(f)
    meta: dict[str, str] = {}
    for m in reader.iter_metadata():
        if m.name == "krabby":
            meta = dict(m.metadata)

    def messages() -> Iterator[LogMessage]:
        try:
            for _schema, channel, message in reader.iter_messages(log_time_order=True):
                yield LogMessage(channel.topic, message.log_time, message.data)
        finally:
            f.close()

    return meta, messages()
