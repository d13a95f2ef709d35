"""A simulated Go2 low-level node: MuJoCo physics behind the robot's own DDS topics, on loopback.

It plays the part of the Go2's motor controller board, so the whole robot stack (``jetson/run.py``:
DDS codec and CRC, 500 Hz writer, robot supervisor, HAL, policy) can be rehearsed on a laptop and in
CI with nothing changed but the network config:

- subscribes ``rt/lowcmd`` (LowCmd_, CRC checked; a bad CRC is dropped, as the robot does) and holds
  the newest command; each physics step applies tau = kp (q - q_m) + kd (0 - dq_m) per motor slot,
  mapped to joints by name through the profile, with the profile's DC-motor clip;
- publishes ``rt/lowstate`` (LowState_ with CRC) after every physics step: joint q/dq/tau,
  IMU quaternion (w, x, y, z), body gyro and accelerometer, foot forces as raw "counts"
  (``foot_force_counts_per_n``), motor temperatures, the wireless-remote bytes, a ms tick;
- starts lying on the ground, motors off, like a real Go2 before stand-up;
- optionally publishes what only a simulator knows (the training height scan and goal headings) on a
  ZeroMQ PUB ``extras_bind``, so teacher policies can be rehearsed (``SimExtrasClient``);
- hosts the robot's motion_switcher service (``sport_mode``: the mode that is active at boot, ""
  = released; while a mode is active the node ignores rt/lowcmd, as the robot's own controller owns
  the motors), so the runner's sport-mode checks are rehearsed too;
- keeps a short log of what arrived on rt/lowcmd (``lowcmd_log``: time, max kp, max kd) for tests;
- fault injection for tests and rehearsals (``press``, ``set_motor_temperature``, ``tilt``), also
  over stdin when run as a program: ``press SELECT 0.3``, ``temp 80``, ``temp FR_calf_joint 80``,
  ``tilt 1.2``, ``remote off`` / ``remote on`` (out of range: 40 zero bytes), ``quit``.

The physics source is pluggable: ``physics="mujoco"`` wraps ``backends.mujoco_backend.MujocoBackend``
(stepped one physics step per control step via a profile copy with decimation 1); ``"double"``
uses the deterministic ``LoopbackTestDouble`` (no physics; quick tests).

    python -m krabby.hal.robot.sim_node --domain 7 [--physics mujoco] [--terrain flat] [--extras tcp://127.0.0.1:5590]
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Dict, Iterable, Optional

import numpy as np

from ..robot_profile import RobotProfile, load_robot_profile, profile_from_dict
from ..types import ActuatorCommand, ActuatorMode, HeightScan, NavigationCommand
from ..devices import unitree_go_dds as dds
from ..devices.unitree_go_msgs import POS_STOP_F, CodecError, LowCmd, LowState
from .operator import encode_wireless_remote

log = logging.getLogger("krabby.hal.robot.sim_node")


@dataclass
class SimNodeConfig:
    domain_id: int = 1
    dds_config_xml: Optional[str] = None  # None = loopback_config_xml()
    physics: str = "mujoco"  # "mujoco" or "double"
    terrain: str = "flat"
    seed: int = 0
    realtime: bool = True
    start_lying: bool = True  # let the robot collapse with motors off before the node goes live
    foot_force_counts_per_n: float = 1.0
    foot_force_offset_counts: float = 0.0  # what an unloaded foot reads (a real Go2's sensors have an offset)
    motor_temperature_c: float = 35.0
    extras_bind: Optional[str] = None  # ZeroMQ PUB for the height scan / navigation (sim-only data)
    forward_speed_m_s: float = 0.5  # the sim's navigation command, for extras
    sport_mode: str = ""  # Unitree sport mode active at start ("normal", ...); "" = released
    version: tuple = (0, 0)  # LowState_.version of the simulated board (a real Go2's values are firmware-specific)


class SimGo2Node:
    def __init__(self, profile: Optional[RobotProfile] = None, config: Optional[SimNodeConfig] = None):
        self.profile = profile or load_robot_profile("go2")
        self.config = config or SimNodeConfig()
        p = self.profile
        self._slot_of_joint = np.arange(p.num_joints)  # the Go2 profile's robot order is the SDK motor order
        self._lock = threading.Lock()
        self._cmd: Optional[LowCmd] = None
        self._remote = bytes(40)
        self.remote_connected = True  # False: the remote is out of range (LowState_.wireless_remote all zero)
        self._remote_until = 0.0
        self._temps = np.full(p.num_joints, float(self.config.motor_temperature_c))
        self._tilt_request: Optional[float] = None
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self.counters = {"lowcmd": 0, "lowcmd_crc_errors": 0, "lowstate": 0, "steps": 0, "late_steps": 0,
                         "lowcmd_ignored_sport_mode": 0}
        self.lowcmd_log: deque = deque(maxlen=20000)  # (monotonic s, max kp, max kd) per received LowCmd_
        self.motion_switcher: Any = None
        self.hoisted = False  # True: the feet carry no load (foot-force calibration)
        self.physics: Any = None
        self.bus: Optional[dds.DdsBus] = None
        self._extras_pub = None
        self._zmq_ctx = None
        self.ready = threading.Event()

    # ------------------------------------------------------------------------------ physics
    def _make_physics(self) -> Any:
        p, cfg = self.profile, self.config
        if cfg.physics == "double":
            from ..backends.loopback_double import LoopbackTestDouble

            return LoopbackTestDouble(p)
        if cfg.physics != "mujoco":
            raise ValueError(f"unknown physics {cfg.physics!r}: use 'mujoco' or 'double'")
        from ..backends.mujoco_backend import MujocoBackend, MujocoBackendConfig

        src = dict(p.source)
        src["rates"] = {"physics_rate_hz": p.physics_rate_hz, "control_rate_hz": p.physics_rate_hz}
        fine = profile_from_dict(src, origin=f"{p.name} (sim node: one physics step per step)")
        return MujocoBackend(MujocoBackendConfig(robot=p.name, terrain=cfg.terrain, seed=cfg.seed, enable_depth=False,
                                                 enable_height_scan=cfg.extras_bind is not None,
                                                 forward_speed_m_s=cfg.forward_speed_m_s, hold_default_pose=False),
                             profile=fine)

    def _step_physics(self) -> None:
        step = getattr(self.physics, "step_control", None)
        if step is not None:
            step()

    # ------------------------------------------------------------------------------ lifecycle
    def start(self) -> "SimGo2Node":
        cfg = self.config
        self.physics = self._make_physics()
        self.physics.connect()
        if cfg.start_lying and cfg.physics == "mujoco":
            n = self.profile.num_joints
            self.physics.apply(ActuatorCommand(ActuatorMode.ZERO_TORQUE, np.zeros(n), np.zeros(n), np.zeros(n)))
            for _ in range(int(1.5 * self.profile.physics_rate_hz)):
                self._step_physics()
        if cfg.extras_bind:
            import zmq

            self._zmq_ctx = zmq.Context()
            self._extras_pub = self._zmq_ctx.socket(zmq.PUB)
            self._extras_pub.linger = 0
            self._extras_pub.bind(cfg.extras_bind)
        self.bus = dds.DdsBus(cfg.domain_id, cfg.dds_config_xml or dds.loopback_config_xml())
        self._writer = self.bus.writer(dds.LOWSTATE_TOPIC, "LowState_")
        self._reader = self.bus.reader(dds.LOWCMD_TOPIC, "LowCmd_", self._on_lowcmd)
        from ..devices.go2_motion_switcher import SimMotionSwitcher

        self.motion_switcher = SimMotionSwitcher(self.bus, mode_name=cfg.sport_mode)
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="krabby-sim-go2", daemon=True)
        self._thread.start()
        self.ready.wait(10.0)
        log.info("simulated Go2 on DDS domain %d (%s physics, %s)", cfg.domain_id, cfg.physics, self.bus.version)
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=3.0)
            self._thread = None
        if self.bus is not None:
            self.bus.close()
            self.bus = None
        if self._extras_pub is not None:
            self._extras_pub.close(0)
            self._zmq_ctx.term()
            self._extras_pub = None
        if self.physics is not None:
            self.physics.disconnect()

    def __enter__(self) -> "SimGo2Node":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # ------------------------------------------------------------------------------ injection
    def press(self, buttons: Iterable[str], seconds: float = 0.3) -> None:
        """Hold these remote buttons for ``seconds`` (then release)."""
        with self._lock:
            self._remote = encode_wireless_remote(tuple(buttons))
            self._remote_until = time.monotonic() + seconds

    def set_motor_temperature(self, celsius: float, joint: Optional[str] = None) -> None:
        with self._lock:
            if joint is None:
                self._temps[:] = celsius
            else:
                self._temps[self.profile.joint_index(joint)] = celsius

    def tilt(self, roll_rad: float) -> None:
        """Roll the base by ``roll_rad`` in place (MuJoCo physics only): a fall, for the supervisor."""
        with self._lock:
            self._tilt_request = roll_rad

    # ---------------------------------------------------------------------------------- DDS
    def _on_lowcmd(self, buf: bytes) -> None:
        try:
            cmd = LowCmd.decode(buf)
        except CodecError:
            self.counters["lowcmd_crc_errors"] += 1
            return
        self.lowcmd_log.append((time.monotonic(), max(m.kp for m in cmd.motor_cmd), max(m.kd for m in cmd.motor_cmd)))
        if self.motion_switcher is not None and self.motion_switcher.mode.active:
            self.counters["lowcmd_ignored_sport_mode"] += 1  # the robot's own controller owns the motors
            return
        with self._lock:
            self._cmd = cmd
        self.counters["lowcmd"] += 1

    def _actuator_command(self, cmd: Optional[LowCmd], q_now: np.ndarray) -> ActuatorCommand:
        n = self.profile.num_joints
        if cmd is None:
            return ActuatorCommand(ActuatorMode.ZERO_TORQUE, np.zeros(n), np.zeros(n), np.zeros(n))
        target, kp, kd = np.zeros(n), np.zeros(n), np.zeros(n)
        for j, s in enumerate(self._slot_of_joint):
            m = cmd.motor_cmd[int(s)]
            kp[j], kd[j] = max(m.kp, 0.0), max(m.kd, 0.0)
            target[j] = q_now[j] if abs(m.q) >= POS_STOP_F * 0.5 or not math.isfinite(m.q) else m.q
        if not np.any(kp) and not np.any(kd):
            return ActuatorCommand(ActuatorMode.ZERO_TORQUE, target, kp, kd)
        return ActuatorCommand(ActuatorMode.POSITION, target, kp, kd)

    def _lowstate(self, frame: Any, tick: int) -> LowState:
        st = LowState(version=list(self.config.version))
        s = frame.state
        with self._lock:
            temps = self._temps.copy()
            remote = self._remote if time.monotonic() < self._remote_until else encode_wireless_remote()
            if not self.remote_connected:
                remote = bytes(40)
        for j, slot in enumerate(self._slot_of_joint):
            m = st.motor_state[int(slot)]
            m.mode = 0x01
            m.q, m.dq, m.tau_est = float(s.joint_pos_rad[j]), float(s.joint_vel_rad_s[j]), float(s.joint_torque_nm[j])
            m.q_raw, m.dq_raw = m.q, m.dq
            m.temperature = int(max(0, min(255, round(temps[j]))))
        imu = st.imu_state
        imu.quaternion = [float(v) for v in s.base_quat_wxyz]
        imu.gyroscope = [float(v) for v in s.base_ang_vel_body_rad_s]
        imu.accelerometer = [float(v) for v in s.base_lin_acc_body_m_s2]
        w, x, y, z = imu.quaternion
        imu.rpy = [math.atan2(2 * (w * x + y * z), 1 - 2 * (x * x + y * y)),
                   math.asin(max(-1.0, min(1.0, 2 * (w * y - z * x)))),
                   math.atan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z))]
        imu.temperature = 40
        force_n = np.zeros(len(s.foot_force_n)) if self.hoisted else np.asarray(s.foot_force_n)
        counts = np.clip(np.round(force_n * self.config.foot_force_counts_per_n + self.config.foot_force_offset_counts),
                         -32768, 32767)
        st.foot_force = [int(c) for c in counts]
        st.foot_force_est = list(st.foot_force)
        st.tick = tick & 0xFFFFFFFF
        st.wireless_remote = list(remote)
        st.power_v, st.power_a = 28.8, 2.0
        return st

    def _apply_tilt(self) -> None:
        with self._lock:
            roll, self._tilt_request = self._tilt_request, None
        if roll is None or not hasattr(self.physics, "set_base_pose"):
            return
        pos = self.physics.base_pos_w_m.copy()
        self.physics.set_base_pose(pos, [math.cos(roll / 2), math.sin(roll / 2), 0.0, 0.0])

    def _loop(self) -> None:
        p, cfg = self.profile, self.config
        dt = 1.0 / p.physics_rate_hz
        extras_every = max(1, int(round(p.physics_rate_hz / p.control_rate_hz)))
        t0 = time.monotonic()
        nxt = t0
        step = 0
        frame = self.physics.read()
        while not self._stop.is_set():
            with self._lock:
                cmd = self._cmd
            self._apply_tilt()
            self.physics.apply(self._actuator_command(cmd, frame.state.joint_pos_rad))
            self._step_physics()
            frame = self.physics.read()
            step += 1
            self.counters["steps"] = step
            try:
                self._writer.write(self._lowstate(frame, int(step * dt * 1000)).encode())
                self.counters["lowstate"] += 1
            except Exception:
                log.exception("LowState_ publish failed")
            if self._extras_pub is not None and step % extras_every == 0:
                self._publish_extras(frame)
            self.ready.set()
            if cfg.realtime:
                nxt += dt
                delay = nxt - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                elif delay < -0.1:
                    self.counters["late_steps"] += 1
                    nxt = time.monotonic()

    def _publish_extras(self, frame: Any) -> None:
        import zmq

        msgs = []
        if frame.height_scan is not None:
            hs = frame.height_scan
            msgs.append([b"scan", json.dumps({"stamp_ns": hs.stamp_ns}).encode(),
                         np.ascontiguousarray(hs.base_height_above_hit_m, dtype=np.float64).tobytes()])
        if frame.navigation is not None:
            n = frame.navigation
            msgs.append([b"nav", json.dumps({"stamp_ns": n.stamp_ns, "forward_speed_m_s": n.forward_speed_m_s,
                                             "delta_yaw_rad": n.delta_yaw_rad, "delta_next_yaw_rad": n.delta_next_yaw_rad,
                                             "terrain_is_flat": n.terrain_is_flat}).encode(), b""])
        for m in msgs:
            try:
                self._extras_pub.send_multipart(m, zmq.NOBLOCK)
            except zmq.Again:
                pass

    def stats(self) -> Dict[str, Any]:
        return dict(self.counters)


class SimExtrasClient:
    """Runner side of the sim-only extras: latest height scan and navigation from a SimGo2Node."""

    provides_height_scan = True

    def __init__(self, endpoint: str, use_navigation: bool = True):
        self.endpoint = endpoint
        self.use_navigation = use_navigation
        self._scan: Optional[HeightScan] = None
        self._nav: Optional[NavigationCommand] = None
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def connect(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="krabby-sim-extras", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        import zmq

        ctx = zmq.Context.instance()
        sub = ctx.socket(zmq.SUB)
        sub.linger = 0
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        sub.connect(self.endpoint)
        try:
            while not self._stop.is_set():
                if not sub.poll(50):
                    continue
                topic, meta, data = sub.recv_multipart()
                info = json.loads(meta)
                if topic == b"scan":
                    self._scan = HeightScan(info["stamp_ns"], np.frombuffer(data, dtype=np.float64).copy())
                elif topic == b"nav":
                    self._nav = NavigationCommand(info["stamp_ns"], info["forward_speed_m_s"], info["delta_yaw_rad"],
                                                  info["delta_next_yaw_rad"], info["terrain_is_flat"])
        finally:
            sub.close(0)

    def latest_height_scan(self) -> Optional[HeightScan]:
        return self._scan

    def latest_navigation(self) -> Optional[NavigationCommand]:
        return self._nav

    def disconnect(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=1.0)


def _stdin_commands(node: SimGo2Node, done: threading.Event) -> None:
    for line in sys.stdin:
        parts = line.split()
        if not parts:
            continue
        try:
            if parts[0] == "press":
                node.press(parts[1].split("+"), float(parts[2]) if len(parts) > 2 else 0.3)
            elif parts[0] == "temp":
                if len(parts) == 2:
                    node.set_motor_temperature(float(parts[1]))
                else:
                    node.set_motor_temperature(float(parts[2]), parts[1])
            elif parts[0] == "remote":  # remote off | remote on
                node.remote_connected = parts[1] == "on"
            elif parts[0] == "tilt":
                node.tilt(float(parts[1]))
            elif parts[0] == "stats":
                print(json.dumps(node.stats()), flush=True)
            elif parts[0] == "quit":
                break
            else:
                print(f"unknown command {parts[0]!r}", file=sys.stderr, flush=True)
        except (IndexError, ValueError) as e:
            print(f"bad command {line.strip()!r}: {e}", file=sys.stderr, flush=True)
    done.set()


def main(argv: Optional[list] = None) -> None:
    ap = argparse.ArgumentParser(prog="krabby-go2-sim-node", description="Simulated Go2 low-level node (MuJoCo behind rt/lowcmd, rt/lowstate)")
    ap.add_argument("--robot", default="go2", help="robot profile name or path")
    ap.add_argument("--domain", type=int, default=1, help="DDS domain id (1..100 on loopback)")
    ap.add_argument("--physics", choices=("mujoco", "double"), default="mujoco")
    ap.add_argument("--terrain", default="flat")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--extras", default=None, help="ZeroMQ PUB endpoint for the sim-only height scan / navigation")
    ap.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    ap.add_argument("--no-stdin", action="store_true", help="ignore stdin (no fault-injection commands)")
    ap.add_argument("--sport-mode", default="", help='Unitree sport mode active at start (e.g. "normal"); default released')
    ap.add_argument("-v", "--verbose", action="store_true")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO if a.verbose else logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    try:
        node = SimGo2Node(load_robot_profile(a.robot), SimNodeConfig(domain_id=a.domain, physics=a.physics, terrain=a.terrain,
                                                                     seed=a.seed, extras_bind=a.extras,
                                                                     sport_mode=a.sport_mode))
        node.start()
    except dds.DdsError as e:
        sys.exit(f"krabby-go2-sim-node: {e}")
    print("READY", flush=True)
    done = threading.Event()
    if not a.no_stdin:
        threading.Thread(target=_stdin_commands, args=(node, done), daemon=True).start()
    try:
        done.wait(a.duration)
    except KeyboardInterrupt:
        pass
    finally:
        node.stop()


if __name__ == "__main__":
    main()
