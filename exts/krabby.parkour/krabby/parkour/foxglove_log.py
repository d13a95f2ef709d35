"""Foxglove channels for a run: typed telemetry into the MCAP run log and, with --live-view, a WebSocket.

A ``FoxgloveSession`` is one foxglove-sdk ``Context`` with its sinks: the run log file
(``open_mcap``) and/or a live WebSocket server (``start_server``, bound to 127.0.0.1 unless told
otherwise). Every channel created on the session goes to both, so the live view shows exactly
what the log holds. ``TelemetryChannels`` turns what the inference client received into
Foxglove's well-known schemas (protobuf) or JSON with a real JSON schema; ``foxglove_world``
adds what only a simulator knows (the base position, the links, the course).

| topic | schema | from |
|---|---|---|
| ``/joint_states`` | ``foxglove.JointStates`` (position rad, velocity rad/s, effort N·m) | STATE |
| ``/joint_targets`` | ``foxglove.JointStates`` (position = target sent, rad) | each command |
| ``/imu`` | JSON ``krabby.Imu`` | STATE |
| ``/foot_contacts`` | JSON ``krabby.FootContacts`` | STATE |
| ``/depth`` | ``foxglove.RawImage`` 32FC1, metres (0 = no return) | DEPTH |
| ``/height_scan`` | ``foxglove.PointCloud`` in ``base_yaw`` (yaw-aligned, z = -height above ground) | HEIGHT_SCAN |
| ``/navigation`` | JSON ``krabby.Navigation`` | NAVIGATION |
| ``/safety`` | JSON ``krabby.Safety`` | STATUS |
| ``/timing`` | JSON ``krabby.Timing`` (compute, observation age, depth age, loop period, ms) | each step |

Log times are the session's ``clock``: the wire clock (ns since the epoch, the clock of the raw
``hal/*`` frames) by default; a ``--fast`` simulation sets it to start time + simulated time, so
Foxglove's timeline and ``krabby-plot`` show simulated seconds, not the compressed wall time.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_LIVE_PORT = 8765
#: uncompressed MCAP chunk size: a crash loses at most the open chunk, about 0.7 s of a run
CHUNK_BYTES = 256 * 1024


def _num(desc: str) -> dict[str, Any]:
    return {"type": "number", "description": desc}


def json_schema(title: str, properties: dict[str, Any], description: str = "") -> dict[str, Any]:
    """An object JSON schema, the form Foxglove's JSON support accepts (``"type": "object"``)."""
    return {"title": title, "type": "object", "description": description, "properties": properties}


def _per_name(names: Any, desc: str, kind: str = "number") -> dict[str, Any]:
    return {"type": "object", "description": desc, "properties": {n: {"type": kind} for n in names}}


IMU_SCHEMA = json_schema("krabby.Imu", {
    "quat_wxyz": {"type": "array", "items": {"type": "number"}, "description": "world-from-base orientation"},
    "ang_vel_body_rad_s": {"type": "array", "items": {"type": "number"}},
    "lin_acc_body_m_s2": {"type": "array", "items": {"type": "number"}},
    "lin_vel_body_m_s": {"type": "array", "items": {"type": ["number", "null"]}, "description": "null when unknown"},
    "roll_rad": _num("from quat_wxyz"), "pitch_rad": _num("from quat_wxyz"), "yaw_rad": _num("from quat_wxyz"),
}, "base orientation and IMU of one STATE")
NAVIGATION_SCHEMA = json_schema("krabby.Navigation", {
    "forward_speed_m_s": _num("commanded forward speed"), "delta_yaw_rad": _num("target yaw - yaw"),
    "delta_next_yaw_rad": _num("next target yaw - yaw"), "terrain_is_flat": {"type": "boolean"},
})
SAFETY_SCHEMA = json_schema("krabby.Safety", {
    "state": {"type": "string", "description": "supervisor state: DISARMED, ARMED, ACTIVE, HOLD, DAMP, ESTOP"},
    "state_code": {"type": "integer"}, "watchdog_trips": {"type": "integer"}, "clamped_commands": {"type": "integer"},
    "refusals": {"type": "object", "additionalProperties": {"type": "integer"}},
    "episode": {"type": ["integer", "null"]},
}, "the HAL STATUS message's safety part")
TIMING_SCHEMA = json_schema("krabby.Timing", {
    "compute_ms": _num("observation + policy + action mapping"),
    "obs_age_ms": _num("age of the STATE the command was built from, when sent"),
    "depth_age_ms": {"type": ["number", "null"], "description": "age of the depth frame used; null without depth"},
    "loop_period_ms": {"type": ["number", "null"], "description": "time since the previous control step"},
})
STEP_SCHEMA = json_schema("krabby.step", {
    "global_step": {"type": "integer"}, "episode_step": {"type": "integer"},
    "inputs": {"type": "object", "description": "telemetry kind -> [session, seq] that fed the observation",
               "additionalProperties": {"type": "array", "items": {"type": "integer"}}},
    "use_estimator": {"type": "boolean"},
    "action": {"type": "array", "items": {"type": "number"}, "description": "raw policy action, policy order"},
    "targets_rad": {"type": "array", "items": {"type": "number"}, "description": "joint targets sent, robot order"},
    "ack": {"type": "string"}, "compute_ms": {"type": "number"},
    "reset": {"type": "boolean", "description": "present and true on an episode reset record"},
}, "one control step of the inference client (replay reads this)")


@dataclass
class LiveViewConfig:
    """Where the live Foxglove WebSocket listens; 127.0.0.1 keeps it on this machine."""

    host: str = "127.0.0.1"
    port: int = DEFAULT_LIVE_PORT


class LiveViewError(RuntimeError):
    pass


class FoxgloveSession:
    """A foxglove-sdk Context with an optional MCAP file sink and an optional live WebSocket sink."""

    def __init__(self, record_path: str | Path | None = None, live: LiveViewConfig | None = None, *, profile: str = "krabby"):
        try:
            import foxglove
            from foxglove.mcap import MCAPWriteOptions
        except ImportError:
            raise RuntimeError("run logs and the live view need foxglove-sdk: pip install 'krabby[record]'") from None
        self._fg = foxglove
        self.clock = time.time_ns  # log times of the Foxglove channels; a simulator may swap in its own
        self.context = foxglove.Context()
        self.writer = self.server = None
        self.path = Path(record_path) if record_path else None
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.writer = foxglove.open_mcap(self.path, allow_overwrite=True, context=self.context,
                                             writer_options=MCAPWriteOptions(profile=profile, compression_threads=0,
                                                                             chunk_size=CHUNK_BYTES))
        if live is not None:
            try:
                self.server = foxglove.start_server(name="krabby", host=live.host, port=live.port, context=self.context,
                                                    channel_filter=_viewable)
            except Exception as e:  # the SDK raises its own error type for a bind failure
                self.close()
                raise LiveViewError(f"live view: cannot listen on {live.host}:{live.port} ({e}); "
                                    f"pick another port with --live-view-port") from None
        self.closed = False

    def now_ns(self) -> int:
        return self.clock()

    @property
    def live_url(self) -> str | None:
        return None if self.server is None else f"ws://127.0.0.1:{self.server.port}"

    def channel(self, topic: str, schema: dict[str, Any] | None = None, *, encoding: str | None = None,
                schema_name: str = "") -> Any:
        """A JSON channel with ``schema``, or a raw-bytes channel with ``encoding`` (schema name only)."""
        if encoding is None:
            return self._fg.Channel(topic, schema=schema, context=self.context)
        return self._fg.Channel(topic, message_encoding=encoding, context=self.context,
                                schema=self._fg.Schema(name=schema_name, encoding="", data=b""))

    def typed(self, channel_cls: str, topic: str) -> Any:
        import foxglove.channels as fc

        return getattr(fc, channel_cls)(topic, context=self.context)

    def metadata(self, name: str, values: dict[str, Any]) -> None:
        if self.writer is not None:
            self.writer.write_metadata(name, {k: str(v) for k, v in values.items()})

    def close(self) -> None:
        if getattr(self, "closed", False):
            return
        self.closed = True
        if self.writer is not None:
            self.writer.close()
        if self.server is not None:
            self.server.stop()


def _viewable(channel: Any) -> bool:
    """The live view skips the raw HAL frames: only Krabby's replay reads them, and they are most of the bytes."""
    return not channel.topic.startswith("hal/")


def _ts(stamp_ns: int) -> Any:
    from foxglove.messages import Timestamp

    return Timestamp(int(stamp_ns // 1_000_000_000), int(stamp_ns % 1_000_000_000))


def rpy_from_quat_wxyz(q: np.ndarray) -> tuple[float, float, float]:
    w, x, y, z = (float(v) for v in q)
    roll = math.atan2(2 * (w * x + y * z), 1 - 2 * (x * x + y * y))
    pitch = math.asin(max(-1.0, min(1.0, 2 * (w * y - z * x))))
    yaw = math.atan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z))
    return roll, pitch, yaw


def _finite_or_none(values: np.ndarray) -> list[Any]:
    return [float(v) if math.isfinite(v) else None for v in np.asarray(values, dtype=float)]


class TelemetryChannels:
    """What a HAL client received, on Foxglove channels. Call ``control_step`` once per command sent."""

    def __init__(self, session: FoxgloveSession, profile: Any):
        from foxglove.messages import PackedElementField, PackedElementFieldNumericType

        self.profile = profile
        s = session
        self.joints = s.typed("JointStatesChannel", "/joint_states")
        self.targets = s.typed("JointStatesChannel", "/joint_targets")
        self.depth = s.typed("RawImageChannel", "/depth")
        self.scan = s.typed("PointCloudChannel", "/height_scan")
        self.imu = s.channel("/imu", IMU_SCHEMA)
        self.contacts = s.channel("/foot_contacts", json_schema("krabby.FootContacts", {
            "force_n": _per_name(profile.foot_names, "contact force magnitude per foot, N"),
            "in_contact": _per_name(profile.foot_names, f"force above {profile.contact_threshold_n} N", "boolean"),
        }))
        self.navigation = s.channel("/navigation", NAVIGATION_SCHEMA)
        self.safety = s.channel("/safety", SAFETY_SCHEMA)
        self.timing = s.channel("/timing", TIMING_SCHEMA)
        f32 = PackedElementFieldNumericType.Float32
        self._xyz = [PackedElementField(name=n, offset=4 * i, type=f32) for i, n in enumerate("xyz")]
        self._scan_xy = profile.height_scan.points_base_xy_m().astype(np.float32)
        self._last_seq: dict[str, int] = {}

    def _new(self, key: str, sample: Any) -> bool:
        if sample is None or self._last_seq.get(key) == sample.seq:
            return False
        self._last_seq[key] = sample.seq
        return True

    def control_step(self, log_ns: int, state_sample: Any, targets_rad: Any, nav: Any, scan: Any, depth: Any,
                     status: Any, compute_ms: float, obs_age_ms: float, loop_period_ms: float | None) -> None:
        from foxglove.messages import JointState, JointStates

        p = self.profile
        st = state_sample.value
        stamp = _ts(state_sample.stamp_ns)
        self.joints.log(JointStates(timestamp=stamp, joints=[
            JointState(name=n, position=float(q), velocity=float(dq), effort=float(t))
            for n, q, dq, t in zip(p.joint_names, st.joint_pos_rad, st.joint_vel_rad_s, st.joint_torque_nm)]), log_time=log_ns)
        if targets_rad is not None:
            self.targets.log(JointStates(timestamp=stamp, joints=[
                JointState(name=n, position=float(q)) for n, q in zip(p.joint_names, targets_rad)]), log_time=log_ns)
        roll, pitch, yaw = rpy_from_quat_wxyz(st.base_quat_wxyz)
        self.imu.log({"quat_wxyz": [float(v) for v in st.base_quat_wxyz],
                      "ang_vel_body_rad_s": [float(v) for v in st.base_ang_vel_body_rad_s],
                      "lin_acc_body_m_s2": [float(v) for v in st.base_lin_acc_body_m_s2],
                      "lin_vel_body_m_s": _finite_or_none(st.base_lin_vel_body_m_s),
                      "roll_rad": roll, "pitch_rad": pitch, "yaw_rad": yaw}, log_time=log_ns)
        forces = [float(f) for f in st.foot_force_n]
        self.contacts.log({"force_n": dict(zip(p.foot_names, forces)),
                           "in_contact": {n: f > p.contact_threshold_n for n, f in zip(p.foot_names, forces)}}, log_time=log_ns)
        if self._new("nav", nav):
            v = nav.value
            self.navigation.log({"forward_speed_m_s": float(v.forward_speed_m_s), "delta_yaw_rad": float(v.delta_yaw_rad),
                                 "delta_next_yaw_rad": float(v.delta_next_yaw_rad),
                                 "terrain_is_flat": bool(v.terrain_is_flat)}, log_time=log_ns)
        if self._new("scan", scan):
            self._log_scan(scan, log_ns)
        if self._new("depth", depth):
            self._log_depth(depth, log_ns)
        if self._new("status", status):
            safety = dict(status.value.get("safety", {}))
            safety["episode"] = status.value.get("episode")
            self.safety.log(safety, log_time=log_ns)
        depth_age = None if depth is None else (log_ns - depth.stamp_ns) * 1e-6
        self.timing.log({"compute_ms": compute_ms, "obs_age_ms": obs_age_ms, "depth_age_ms": depth_age,
                         "loop_period_ms": loop_period_ms}, log_time=log_ns)

    def _log_scan(self, scan: Any, log_ns: int) -> None:
        from foxglove.messages import PointCloud

        h = np.asarray(scan.value.base_height_above_hit_m, dtype=np.float32)
        pts = np.empty((h.size, 3), dtype=np.float32)
        pts[:, :2] = self._scan_xy[: h.size]
        pts[:, 2] = np.where(np.isfinite(h), -h, np.nan)
        self.scan.log(PointCloud(timestamp=_ts(scan.stamp_ns), frame_id="base_yaw", point_stride=12,
                                 fields=self._xyz, data=pts.tobytes()), log_time=log_ns)

    def _log_depth(self, depth: Any, log_ns: int) -> None:
        from foxglove.messages import RawImage

        d = np.asarray(depth.value.distance_m, dtype=np.float32)
        d = np.where(np.isfinite(d), d, 0.0).astype(np.float32)
        h, w = d.shape
        self.depth.log(RawImage(timestamp=_ts(depth.stamp_ns), frame_id="depth_camera", width=w, height=h,
                                encoding="32FC1", step=4 * w, data=d.tobytes()), log_time=log_ns)


# ------------------------------------------------------------------------------------ reading
def message_decoder(schema: Any, channel: Any):
    """A function bytes -> message for one MCAP channel: protobuf classes from the schema's own
    FileDescriptorSet, JSON as dicts; None for encodings only Krabby reads (the raw ``hal/*``)."""
    if channel.message_encoding == "json":
        return lambda data: json.loads(data)
    if channel.message_encoding == "protobuf" and schema is not None:
        from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

        pool = descriptor_pool.DescriptorPool()
        for fd in descriptor_pb2.FileDescriptorSet.FromString(schema.data).file:
            pool.Add(fd)
        cls = message_factory.GetMessageClass(pool.FindMessageTypeByName(schema.name))
        return cls.FromString
    return None
