"""Go2 low-level interface over DDS: rt/lowstate in, rt/lowcmd out at a steady 500 Hz.

- **Joint order through the profile.** LowCmd_/LowState_ have 20 motor slots. Which slot drives
  which joint is ``Go2LowLevelConfig.motor_joint_names`` (default: the profile's robot order, which
  for the Go2 *is* the SDK motor order FR, FL, RR, RL x hip, thigh, calf); the mapping is built by
  name, so a reordered profile cannot silently swap legs. Foot forces likewise by name
  (LowState_.foot_force is FR, FL, RR, RL, spec §10).
- **Steady writer.** A dedicated thread sends one LowCmd_ every 2 ms, always the *current* output
  of a command source (the robot supervisor's ``output()``), computed fresh each cycle; it never
  replays a stale policy target by itself. Every LowCmd_ carries Unitree's CRC.
- **Real time where permitted.** With ``rt_priority`` > 0 the writer thread asks for SCHED_FIFO (and
  ``lock_memory``: mlockall, no page faults mid-cycle; ``cpu_affinity``: pinned cores); refused (no
  CAP_SYS_NICE / RLIMIT_RTPRIO) it runs at normal priority and says so (``rt_status``). Every cycle's
  lateness against its schedule is kept: p50/p99/max and the share of cycles more than 1 ms late.
- **Feedback.** LowState_ is decoded in Cyclone's listener thread with the byte-exact codec, its CRC
  checked (bad frames are counted and dropped), and kept latest-only.
- Units: foot_force arrives in raw sensor counts; ``foot_force_n_per_count``/``foot_force_offset_counts``
  turn them into newtons for the training contact test (calibrate per robot in the deployment TOML).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence

import numpy as np

from .. import clock
from ..robot_profile import RobotProfile
from . import unitree_go_dds as dds
from .unitree_go_msgs import MOTOR_MODE_SERVO, NUM_MOTORS, CodecError, LowCmd, LowState

log = logging.getLogger("krabby.hal.devices.go2_lowlevel")


@dataclass
class Go2LowLevelConfig:
    domain_id: int = 0
    network_interface: Optional[str] = "eth0"  # the Go2's internal network; None = loopback (sim / tests)
    dds_config_xml: Optional[str] = None  # overrides network_interface when set
    write_rate_hz: float = 500.0
    lowcmd_topic: str = dds.LOWCMD_TOPIC
    lowstate_topic: str = dds.LOWSTATE_TOPIC
    motor_joint_names: Optional[Sequence[str]] = None  # slot i drives this joint; None = profile robot order
    foot_force_names: Optional[Sequence[str]] = None  # LowState_.foot_force[i] is this foot; None = profile foot order
    foot_force_n_per_count: float = 1.0
    foot_force_offset_counts: float = 0.0
    check_lowstate_crc: bool = True  # False only for simulators that leave the CRC empty (unitree_mujoco's Python one)
    rt_priority: int = 0  # > 0: SCHED_FIFO priority of the writer thread (falls back with a warning)
    lock_memory: bool = False  # mlockall(MCL_CURRENT | MCL_FUTURE) before the writer starts (falls back with a warning)
    cpu_affinity: Optional[Sequence[int]] = None  # pin the writer thread to these cores

    def config_xml(self) -> str:
        if self.dds_config_xml:
            return self.dds_config_xml
        if self.network_interface:
            return dds.interface_config_xml(self.network_interface)
        return dds.loopback_config_xml()


@dataclass
class Go2Feedback:
    """One decoded LowState_, robot joint order, SI units (temperatures in deg C)."""

    stamp_ns: int  # receive time on the wire clock (the robot's ``tick`` is its own ms counter)
    tick: int
    joint_pos_rad: np.ndarray
    joint_vel_rad_s: np.ndarray
    joint_tau_est_nm: np.ndarray
    motor_temp_c: np.ndarray
    base_quat_wxyz: np.ndarray  # Go2 IMUState.quaternion is already (w, x, y, z)
    base_ang_vel_body_rad_s: np.ndarray
    base_lin_acc_body_m_s2: np.ndarray
    foot_force_counts: np.ndarray  # robot foot order
    foot_force_n: np.ndarray
    wireless_remote: bytes
    power_v: float = 0.0
    power_a: float = 0.0
    battery_soc_pct: float = 0.0  # BmsState_.soc


class _Rate:
    """Rate and period jitter of an event stream over the last N events."""

    def __init__(self, n: int = 1000):
        self.t: deque = deque(maxlen=n)

    def tick(self, t_s: float) -> None:
        self.t.append(t_s)

    def rate_hz(self) -> float:
        if len(self.t) < 2 or self.t[-1] == self.t[0]:
            return 0.0
        return (len(self.t) - 1) / (self.t[-1] - self.t[0])

    def period_ms_pct(self, q: float) -> float:
        if len(self.t) < 3:
            return float("nan")
        return float(np.percentile(np.diff(np.asarray(self.t)) * 1e3, q))


class Go2LowLevel:
    """``connect()``, ``set_command_source(fn)``, read ``latest()``, ``disconnect()``."""

    def __init__(self, profile: RobotProfile, config: Optional[Go2LowLevelConfig] = None):
        self.profile = profile
        self.config = config or Go2LowLevelConfig()
        names = list(self.config.motor_joint_names or profile.joint_names)
        if len(names) > NUM_MOTORS:
            raise ValueError(f"motor_joint_names lists {len(names)} motors; LowCmd_ has {NUM_MOTORS} slots")
        missing = [n for n in profile.joint_names if n not in names]
        unknown = [n for n in names if n not in profile.joint_names]
        if missing or unknown:
            raise ValueError(f"motor_joint_names must name each profile joint once (missing {missing}, unknown {unknown})")
        #: motor slot of each robot-order joint
        self.slot_of_joint = np.array([names.index(n) for n in profile.joint_names], dtype=np.int64)
        feet = list(self.config.foot_force_names or profile.foot_names)
        if sorted(feet) != sorted(profile.foot_names):
            raise ValueError(f"foot_force_names {feet} must be a permutation of the profile's feet {list(profile.foot_names)}")
        self.foot_slot = np.array([feet.index(n) for n in profile.foot_names], dtype=np.int64)
        self.bus: Optional[dds.DdsBus] = None
        self._writer = None
        self._reader = None
        self._latest: Optional[Go2Feedback] = None
        self._lock = threading.Lock()
        self._source: Optional[Callable[[], object]] = None
        self._thread: Optional[threading.Thread] = None
        self._stop = threading.Event()
        self._cmd = LowCmd.zero_torque()
        self._zero_wire = LowCmd.zero_torque().encode()
        self.listeners: List[Callable[[Go2Feedback], None]] = []
        self.state_rate = _Rate()
        self.write_rate = _Rate()
        self.counters = {"states": 0, "crc_errors": 0, "decode_errors": 0, "writes": 0, "write_errors": 0,
                         "source_errors": 0, "late_cycles": 0, "zero_torque_writes": 0}
        self.last_sent = None
        self.robot_versions: Optional[dict] = None  # from the first LowState_ (version, sn, BMS version)
        self.lateness_ms: deque = deque(maxlen=5000)  # per cycle: wake-up time minus scheduled time
        self.rt_status = "normal priority"

    # ------------------------------------------------------------------------------ lifecycle
    def connect(self) -> None:
        cfg = self.config
        self.bus = dds.DdsBus(cfg.domain_id, cfg.config_xml())
        self._writer = self.bus.writer(cfg.lowcmd_topic, "LowCmd_")
        self._reader = self.bus.reader(cfg.lowstate_topic, "LowState_", self._on_lowstate)
        self._stop.clear()
        self._thread = threading.Thread(target=self._write_loop, name="krabby-go2-lowcmd", daemon=True)
        self._thread.start()
        log.info("Go2 low-level on DDS domain %d (cyclonedds %s), writing %s at %.0f Hz",
                 cfg.domain_id, self.bus.version, cfg.lowcmd_topic, cfg.write_rate_hz)

    def disconnect(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
            self._thread = None
        if self.bus is not None:
            self.bus.close()
            self.bus = None

    def set_command_source(self, fn: Callable[[], object]) -> None:
        """``fn()`` returns a ``robot.supervisor.MotorCommand``-like object; called every write cycle."""
        self._source = fn

    def wait_for_state(self, timeout_s: float) -> bool:
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            if self._latest is not None:
                return True
            time.sleep(0.01)
        return False

    # ------------------------------------------------------------------------------- feedback
    def latest(self) -> Optional[Go2Feedback]:
        return self._latest

    def _on_lowstate(self, buf: bytes) -> None:
        try:
            st = LowState.decode(buf, check_crc=self.config.check_lowstate_crc)
        except CodecError as e:
            key = "crc_errors" if "CRC" in str(e) else "decode_errors"
            self.counters[key] += 1
            if self.counters[key] <= 3:
                log.warning("dropped a LowState_: %s", e)
            return
        if self.robot_versions is None:
            self.robot_versions = {"lowstate_version": list(st.version), "serial": list(st.sn),
                                   "bms_version": f"{st.bms_state.version_high}.{st.bms_state.version_low}"}
        fb = self.feedback_from_lowstate(st, clock.now_ns())
        self._latest = fb
        self.counters["states"] += 1
        self.state_rate.tick(time.monotonic())
        for fn in list(self.listeners):
            try:
                fn(fb)
            except Exception:
                log.exception("LowState listener failed")

    def feedback_from_lowstate(self, st: LowState, stamp_ns: int) -> Go2Feedback:
        ms = [st.motor_state[int(s)] for s in self.slot_of_joint]
        counts = np.array([st.foot_force[int(s)] for s in self.foot_slot], dtype=np.float64)
        cfg = self.config
        imu = st.imu_state
        return Go2Feedback(
            stamp_ns=stamp_ns,
            tick=st.tick,
            joint_pos_rad=np.array([m.q for m in ms]),
            joint_vel_rad_s=np.array([m.dq for m in ms]),
            joint_tau_est_nm=np.array([m.tau_est for m in ms]),
            # the IDL says uint8, but the byte is signed (unitree_ros2's msg: int8; the SDK's CRC packer: 'b'):
            # a motor at -5 C sends 251, which read unsigned would refuse a cold start as "over temperature"
            motor_temp_c=np.array([m.temperature for m in ms], dtype=np.uint8).view(np.int8).astype(np.float64),
            base_quat_wxyz=np.array(imu.quaternion, dtype=np.float64),
            base_ang_vel_body_rad_s=np.array(imu.gyroscope, dtype=np.float64),
            base_lin_acc_body_m_s2=np.array(imu.accelerometer, dtype=np.float64),
            foot_force_counts=counts,
            foot_force_n=np.maximum(0.0, (counts - cfg.foot_force_offset_counts) * cfg.foot_force_n_per_count),
            wireless_remote=bytes(st.wireless_remote),
            power_v=st.power_v,
            power_a=st.power_a,
            battery_soc_pct=float(st.bms_state.soc),
        )

    # -------------------------------------------------------------------------------- commands
    def encode_command(self, cmd: object) -> bytes:
        """LowCmd_ wire bytes for a MotorCommand (robot order -> motor slots), CRC filled."""
        if cmd is None or getattr(cmd, "zero_torque", True):
            self.counters["zero_torque_writes"] += 1
            return self._zero_wire
        m = self._cmd
        q, kp, kd = cmd.target_pos_rad, cmd.kp_nm_per_rad, cmd.kd_nm_s_per_rad
        for j, s in enumerate(self.slot_of_joint):
            c = m.motor_cmd[int(s)]
            c.mode, c.q, c.dq, c.tau, c.kp, c.kd = MOTOR_MODE_SERVO, float(q[j]), 0.0, 0.0, float(kp[j]), float(kd[j])
        return m.encode()

    def _realtime(self) -> None:
        """SCHED_FIFO, locked memory and pinning for this (the writer) thread, each where permitted."""
        cfg, notes = self.config, []
        if cfg.cpu_affinity:
            try:
                os.sched_setaffinity(0, set(cfg.cpu_affinity))
                notes.append(f"cores {sorted(cfg.cpu_affinity)}")
            except (OSError, AttributeError) as e:
                notes.append(f"pinning refused ({e})")
        if cfg.lock_memory:
            try:
                libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
                if libc.mlockall(3) != 0:  # MCL_CURRENT | MCL_FUTURE
                    raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
                notes.append("memory locked")
            except (OSError, AttributeError) as e:
                notes.append(f"mlockall refused ({e})")
        if cfg.rt_priority > 0:
            try:
                os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(int(cfg.rt_priority)))  # 0: this thread
                notes.insert(0, f"SCHED_FIFO {cfg.rt_priority}")
            except (OSError, AttributeError) as e:
                notes.insert(0, f"normal priority (SCHED_FIFO refused: {e}; allow it with LimitRTPRIO or CAP_SYS_NICE)")
        self.rt_status = ", ".join(notes) or "normal priority"
        if "refused" in self.rt_status:
            log.warning("rt/lowcmd writer: %s", self.rt_status)

    def _write_loop(self) -> None:
        self._realtime()
        period = 1.0 / self.config.write_rate_hz
        nxt = time.monotonic()
        while not self._stop.is_set():
            self.lateness_ms.append((time.monotonic() - nxt) * 1e3)
            cmd = None
            if self._source is not None:
                try:
                    cmd = self._source()
                except Exception:
                    self.counters["source_errors"] += 1
                    if self.counters["source_errors"] <= 3:
                        log.exception("command source failed: sending zero torque")
                    cmd = None
            try:
                wire = self.encode_command(cmd)
                self._writer.write(wire)
                self.last_sent = cmd
                self.counters["writes"] += 1
                self.write_rate.tick(time.monotonic())
            except Exception:
                self.counters["write_errors"] += 1
                if self.counters["write_errors"] <= 3:
                    log.exception("LowCmd_ write failed")
            nxt += period
            delay = nxt - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            elif delay < -period:  # more than a cycle late: count it and re-anchor, no burst
                self.counters["late_cycles"] += 1
                nxt = time.monotonic()

    # ---------------------------------------------------------------------------------- stats
    def jitter(self) -> dict:
        """Lateness of the writer's cycles against their schedule (ms): p50, p99, max, % of cycles > 1 ms late."""
        late = np.asarray(self.lateness_ms, dtype=np.float64)
        if late.size < 10:
            return {"late_ms_p50": float("nan"), "late_ms_p99": float("nan"), "late_ms_max": float("nan"), "late_over_1ms_pct": float("nan")}
        return {"late_ms_p50": float(np.percentile(late, 50)), "late_ms_p99": float(np.percentile(late, 99)),
                "late_ms_max": float(late.max()), "late_over_1ms_pct": float(np.mean(late > 1.0) * 100.0)}

    def stats(self) -> dict:
        fb = self._latest
        return {
            "state_rate_hz": self.state_rate.rate_hz(),
            "state_age_ms": (clock.now_ns() - fb.stamp_ns) * 1e-6 if fb is not None else None,
            "write_rate_hz": self.write_rate.rate_hz(),
            "write_period_ms_p50": self.write_rate.period_ms_pct(50),
            "write_period_ms_p99": self.write_rate.period_ms_pct(99),
            **self.jitter(),
            "rt_status": self.rt_status,
            **self.counters,
        }


__all__ = ["Go2LowLevel", "Go2LowLevelConfig", "Go2Feedback"]
