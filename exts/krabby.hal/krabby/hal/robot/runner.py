"""RobotStack: the robot-side half of the runner (HAL server + Go2 over DDS + camera + supervisor + operator).

``jetson/run.py`` (console script ``krabby-hal-server-jetson``, module ``krabby.parkour.jetson``)
composes this stack with the inference client over inproc in one process; without a checkpoint it
runs the HAL server alone for a policy on another machine (tcp endpoints).

Threads: the DDS listener (LowState_ -> supervisor, remote), the 500 Hz LowCmd_ writer
(supervisor.output), the HAL tick loop at the profile's control rate (read -> publish -> HAL safety
-> apply), the HAL command thread, the camera capture thread, operator inputs, and the caller's
thread for the dashboard. With ``sim=True`` a simulated Go2 node (MuJoCo behind the same DDS
topics) is started as a child process on loopback with a random DDS domain.

This module imports nothing from krabby.parkour (krabby.hal never does, DESIGN §2).
"""

from __future__ import annotations

import logging
import os
import random
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

from .. import clock
from ..devices import unitree_go_dds as dds
from ..devices.go2_lowlevel import Go2LowLevel, Go2LowLevelConfig
from ..robot_profile import RobotProfile, load_robot_profile
from ..safety import SafetyState
from ..server import HalServer
from .deploy_config import DeployConfig
from .go2_backend import Go2RobotBackend, NoRobotStateError
from .operator import GamepadInput, GamepadMap, KeyboardInput, Operator, ScriptedInput, parse_script
from .supervisor import Mode, RobotSupervisor

log = logging.getLogger("krabby.hal.robot.runner")

SIM_ARM_SCRIPT = "0.3:enable_torque,0.6:stand_up,3.6:arm_policy"  # --arm-policy in --sim


class RunnerError(RuntimeError):
    """A setup problem the user can fix; the message says how."""


@dataclass
class StackOptions:
    sim: bool = False
    live: bool = False  # allow the operator to enable torque (never implied on the robot)
    camera: str = "auto"  # auto | zed | none
    script: Optional[str] = None  # timed operator actions, e.g. "1:stand_up,4:arm_policy"
    arm_policy: bool = False  # --sim only: enable torque, stand up and arm by script
    domain_id: Optional[int] = None  # override the deployment's DDS domain
    sim_physics: str = "mujoco"
    sim_terrain: str = "flat"
    keyboard: bool = True
    gamepad: bool = True
    insecure_tcp: bool = False
    observation_bind: Optional[str] = None
    command_bind: Optional[str] = None
    defer_inputs: bool = False  # True: the caller starts operator inputs with start_inputs()
    release_sport_mode: bool = False  # release Unitree's sport mode at start (else the deployment's [dds] sport_mode)


class RobotHalServer(HalServer):
    """HalServer whose STATUS also carries the robot supervisor, the motor bus and the camera.

    ``episode`` counts policy arms: the inference client resets its observation history, action
    history and recurrent state whenever it changes (as after a training reset).
    """

    stack: "RobotStack"

    def status(self) -> dict:
        s = super().status()
        st = self.stack
        s["episode"] = st.supervisor.policy_episode
        s["robot"] = st.robot_status()
        return s


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class SimNodeProcess:
    """The simulated Go2 node as a child process (its own interpreter: real DDS over loopback)."""

    def __init__(self, domain_id: int, physics: str, terrain: str, robot: str, extras_endpoint: Optional[str]):
        self.domain_id = domain_id
        self.extras_endpoint = extras_endpoint
        ext = str(Path(__file__).resolve().parents[3])
        env = dict(os.environ)
        env["PYTHONPATH"] = ext + os.pathsep + env.get("PYTHONPATH", "")
        cmd = [sys.executable, "-m", "krabby.hal.robot.sim_node", "--domain", str(domain_id), "--physics", physics,
               "--terrain", terrain, "--robot", robot]
        if extras_endpoint:
            cmd += ["--extras", extras_endpoint]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, text=True)
        line = self.proc.stdout.readline() if self.proc.stdout else ""
        if line.strip() != "READY":
            self.proc.kill()
            raise RunnerError(f"the simulated Go2 node did not start (exit {self.proc.poll()}); run "
                              f"`python -m krabby.hal.robot.sim_node -v --domain {domain_id}` to see why")

    def send(self, line: str) -> None:
        """A fault-injection command (``press SELECT``, ``temp 80``, ``tilt 1.2``)."""
        if self.proc.stdin and self.proc.poll() is None:
            self.proc.stdin.write(line.strip() + "\n")
            self.proc.stdin.flush()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.send("quit")
            try:
                self.proc.wait(timeout=3.0)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=3.0)


class RobotStack:
    def __init__(self, deploy: DeployConfig, options: Optional[StackOptions] = None, *, context: Any = None,
                 profile: Optional[RobotProfile] = None):
        import zmq

        self.deploy = deploy
        self.options = options or StackOptions()
        self.profile = profile or load_robot_profile(deploy.robot)
        self.context = context or zmq.Context.instance()
        o = self.options
        if o.arm_policy and not o.sim:
            raise RunnerError("--arm-policy only works with --sim: on the robot, arm with the remote or the keyboard")
        sup_cfg = deploy.supervisor
        sup_cfg.allow_live = bool(o.live or o.sim)
        self.supervisor = RobotSupervisor(self.profile, sup_cfg)
        op = deploy.operator
        # --sim: the rehearsal walks at the simulator's speed until the operator changes it (w/z, j/l)
        default_fwd = op.default_forward_m_s
        if o.sim:
            from .sim_node import SimNodeConfig

            default_fwd = SimNodeConfig().forward_speed_m_s
        self.operator = Operator(op.max_forward_m_s, op.max_yaw_rad, op.stick_deadband, default_fwd)
        self.operator.handler = self.handle_action
        self.messages: List[str] = []
        self.quit = threading.Event()
        self.sim_node: Optional[SimNodeProcess] = None
        self.server: Optional[RobotHalServer] = None
        self.backend: Optional[Go2RobotBackend] = None
        self.camera: Any = None
        self._inputs: List[Any] = []
        self._running = threading.Event()
        self._tick_thread: Optional[threading.Thread] = None
        self._tick_times: List[float] = []
        self.tick_errors = 0
        self.versions: Dict[str, Any] = {}
        self.started_ns = 0

    # ---------------------------------------------------------------------------- lifecycle
    def start(self) -> "RobotStack":
        d, o = self.deploy, self.options
        extras = None
        if o.sim:
            domain = o.domain_id if o.domain_id is not None else random.randint(20, 99)
            extras_ep = f"tcp://127.0.0.1:{_free_port()}"
            self.sim_node = SimNodeProcess(domain, o.sim_physics, o.sim_terrain, d.robot, extras_ep)
            ll_cfg = Go2LowLevelConfig(domain_id=domain, network_interface=None, write_rate_hz=d.dds.write_rate_hz,
                                       motor_joint_names=d.dds.motor_joint_names, foot_force_names=d.dds.foot_force_names)
            from .sim_node import SimExtrasClient

            extras = SimExtrasClient(extras_ep)
        else:
            ll_cfg = Go2LowLevelConfig(
                domain_id=o.domain_id if o.domain_id is not None else d.dds.domain_id,
                network_interface=d.dds.network_interface, write_rate_hz=d.dds.write_rate_hz,
                motor_joint_names=d.dds.motor_joint_names, foot_force_names=d.dds.foot_force_names,
                foot_force_n_per_count=d.dds.foot_force_n_per_count, foot_force_offset_counts=d.dds.foot_force_offset_counts,
                check_lowstate_crc=self._lowstate_crc_check(), rt_priority=d.dds.writer_rt_priority,
                lock_memory=d.dds.writer_lock_memory,
                cpu_affinity=[int(c) for c in d.dds.writer_cpu_affinity.split(",") if c.strip()] or None)
            self._warn_uncalibrated()
        try:
            self._preflight(ll_cfg)
        except BaseException:
            self.stop()
            raise
        self.camera = self._make_camera()
        if self.camera is not None:  # the robot stands back up when depth goes stale in POLICY
            self.supervisor.config.depth_max_age_s = self.camera.config.max_frame_age_s
        lowlevel = Go2LowLevel(self.profile, ll_cfg)
        self.backend = Go2RobotBackend(self.profile, lowlevel, self.supervisor, self.operator, camera=self.camera,
                                       extras=extras, terrain_is_flat=d.operator.terrain_is_flat)
        try:
            self.backend.connect()
        except dds.DdsError as e:
            self.stop()
            raise RunnerError(str(e)) from None
        if not lowlevel.wait_for_state(5.0 if o.sim else 3.0):
            log.warning("no LowState_ from the robot yet on DDS domain %d (%s): waiting; check the cable/interface",
                        ll_cfg.domain_id, ll_cfg.network_interface or "loopback")
        else:
            try:
                self._check_versions(lowlevel)
            except RunnerError:
                self.stop()
                raise
        dep = d.deployment
        hal_cfg = dep.server_config(
            observation_bind=o.observation_bind or dep.observation_bind, command_bind=o.command_bind or dep.command_bind,
            allow_insecure_tcp=o.insecure_tcp or dep.allow_insecure_tcp)
        hal_cfg.safety.arm_on_start = False
        server = RobotHalServer(self.backend, hal_cfg, context=self.context)
        server.stack = self
        self.supervisor.on_policy_armed = lambda: server.supervisor.arm(clock.now_ns())
        self.supervisor.on_policy_disarmed = lambda: server.supervisor.disarm(clock.now_ns())
        try:
            server.start()
        except Exception:
            self.stop()
            raise
        self.server = server
        self.started_ns = clock.now_ns()
        self._running.set()
        self._tick_thread = threading.Thread(target=self._tick_loop, name="krabby-hal-tick", daemon=True)
        self._tick_thread.start()
        if not self.options.defer_inputs:
            self.start_inputs()
        return self

    def _lowstate_crc_check(self) -> bool:
        mode = self.deploy.dds.lowstate_crc
        if mode not in ("enforce", "ignore"):
            raise RunnerError(f'[dds] lowstate_crc = "{mode}": use "enforce" (the robot) or "ignore" (unitree_mujoco)')
        if mode == "ignore":
            log.warning('[dds] lowstate_crc = "ignore": LowState_ CRCs are not checked (for simulators only, never the robot)')
        return mode == "enforce"

    def _warn_uncalibrated(self) -> None:
        from .calibrate import feet_uncalibrated

        d = self.deploy.dds
        if feet_uncalibrated(d.foot_force_n_per_count, d.foot_force_offset_counts):
            line = ("FOOT CONTACT UNCALIBRATED: [dds] foot_force_n_per_count = 1.0 and offset 0 are placeholders; every real "
                    "foot reads 'in contact'. Run `krabby-calibrate feet --deploy <profile> --write` before a live run.")
            log.warning("%s\n%s\n%s", "!" * 100, line, "!" * 100)
            self.messages.append(line)

    def _check_versions(self, lowlevel: Go2LowLevel) -> None:
        """Log SDK, DDS and robot firmware versions; refuse a robot the profile does not list (when it lists any)."""
        import platform

        from .. import __version__ as krabby_version

        v = lowlevel.robot_versions or {}
        robot = f"lowstate {'.'.join(str(x) for x in v.get('lowstate_version', []))} bms {v.get('bms_version', '?')}"
        self.versions = {"krabby": krabby_version, "python": platform.python_version(),
                         "cyclonedds": lowlevel.bus.version if lowlevel.bus else "?", "robot": robot,
                         "serial": v.get("serial")}
        log.warning("versions: krabby %s, Python %s, cyclonedds %s (the Go2 runs Cyclone DDS 0.10.x), robot %s, serial %s",
                    *self.versions.values())
        allowed = self.deploy.dds.allowed_robot_versions
        if allowed and robot not in allowed:
            raise RunnerError(f"robot reports '{robot}', not in [dds] allowed_robot_versions {allowed}: "
                              "rehearse with this firmware, then add it")

    def _preflight(self, ll_cfg: Go2LowLevelConfig) -> None:
        """Before the writer starts: Unitree's sport mode off (or released), nobody else on rt/lowcmd."""
        from ..devices.go2_motion_switcher import SportModeError, preflight

        d = self.deploy.dds
        policy = "release" if self.options.release_sport_mode else d.sport_mode
        try:
            bus = dds.DdsBus(ll_cfg.domain_id, ll_cfg.config_xml())
        except dds.DdsError as e:
            raise RunnerError(str(e)) from None
        try:
            # --sim: the simulated node's service is certainly there, but discovery on a loaded laptop can be slow
            timeout_s = max(d.motion_switcher_timeout_s, 10.0) if self.options.sim else d.motion_switcher_timeout_s
            summary = preflight(bus, sport_mode=policy, probe_s=d.lowcmd_probe_s, timeout_s=timeout_s)
        except (SportModeError, ValueError) as e:
            raise RunnerError(str(e)) from None
        finally:
            bus.close()
        log.info("preflight: %s", summary)

    def _camera_mode(self) -> str:
        mode = self.options.camera
        if mode == "auto":
            mode = "none" if self.options.sim or not self.deploy.zed.enabled else "zed"
        if mode not in ("zed", "none"):
            raise RunnerError(f"--camera {mode!r}: use auto, zed or none")
        return mode

    def provides(self) -> Dict[str, bool]:
        """Which policy inputs this stack will publish, known before ``start()``: a depth camera, a height scan."""
        return {"depth": self._camera_mode() == "zed", "height_scan": bool(self.options.sim)}

    def _make_camera(self) -> Any:
        if self._camera_mode() == "none":
            return None
        from ..devices.zed_mini import ZedMini, ZedMiniConfig

        return ZedMini(self.profile.camera, ZedMiniConfig.from_section(self.deploy.zed))

    def start_inputs(self) -> None:
        """Keyboard, gamepad and the timed script (the runner calls this once the policy is loaded)."""
        o = self.options
        if o.keyboard:
            kb = KeyboardInput(self.operator)
            if kb.start():
                self._inputs.append(kb)
        if o.gamepad and not o.sim:
            gp = GamepadInput(self.operator, GamepadMap(device=self.deploy.operator.gamepad_device))
            if gp.start():
                self._inputs.append(gp)
        script = o.script or (SIM_ARM_SCRIPT if o.arm_policy else None)
        if script:
            s = ScriptedInput(self.operator, parse_script(script))
            s.start()
            self._inputs.append(s)

    def _tick_loop(self) -> None:
        assert self.server is not None
        period_ns = int(1e9 / self.profile.control_rate_hz)
        nxt = time.monotonic_ns()
        while self._running.is_set():
            try:
                self.server.tick()
                self._tick_times.append(time.monotonic())
                if len(self._tick_times) > 500:
                    del self._tick_times[:250]
                if self.server.supervisor.state == SafetyState.ESTOP and self.supervisor.mode != Mode.ESTOP:
                    self.supervisor.estop("(e-stop from a HAL client)")
                self._check_remote()
            except NoRobotStateError:
                pass
            except Exception:
                self.tick_errors += 1
                if self.tick_errors <= 5:
                    log.exception("HAL tick failed")
            nxt += period_ns
            delay = nxt - time.monotonic_ns()
            if delay > 0:
                time.sleep(delay * 1e-9)
            else:
                nxt = time.monotonic_ns()

    def request_stop(self, reason: str) -> None:
        """Damp now and ask the runner to stop (signals, uncaught thread exceptions: robot/shutdown.py)."""
        if self.supervisor.mode != Mode.ESTOP:
            self.supervisor.damp(reason)
        self.quit.set()

    def _check_remote(self) -> None:
        """Remote lost (seen, then silent): leave POLICY to standing, then lie down and damp."""
        lost, op, sup = self.operator.remote_lost_s(), self.deploy.operator, self.supervisor
        if lost <= op.remote_timeout_s:
            return
        if sup.mode == Mode.POLICY:
            self.handle_result("remote lost", *sup.disarm_policy(f"(remote silent for {lost:.1f} s: back to standing)"))
        elif sup.mode in (Mode.STANDING, Mode.STANDING_UP) and lost > op.remote_timeout_s + op.remote_lost_lie_down_s:
            self.handle_result("remote lost", *sup.lie_down(f"(remote silent for {lost:.1f} s: lying down)"))

    def stop(self) -> None:
        """Damp, keep sending damping frames for ``shutdown_damp_s``, then shut everything down (safe to call twice)."""
        if self.backend is not None:
            if self.supervisor.mode != Mode.ESTOP:
                self.supervisor.damp("(runner stopping)")
            time.sleep(self.supervisor.config.shutdown_damp_s)  # the 500 Hz writer sends damping LowCmd_ meanwhile
        for i in self._inputs:
            i.stop()
        self._inputs = []
        self._running.clear()
        if self._tick_thread is not None:
            self._tick_thread.join(timeout=2.0)
            self._tick_thread = None
        if self.server is not None:
            self.server.close()
            self.server = None
        if self.backend is not None:
            self.backend.disconnect()
            self.backend = None
        if self.sim_node is not None:
            self.sim_node.stop()
            self.sim_node = None

    def __enter__(self) -> "RobotStack":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # ---------------------------------------------------------------------------- operator
    def handle_action(self, action: str, source: str) -> None:
        sup = self.supervisor
        now = clock.now_ns()
        if action == "quit":
            ok, msg = True, "quitting"
            self.quit.set()
        elif action == "estop":
            ok, msg = sup.estop(f"({source})")
            if self.server is not None:
                self.server.supervisor.estop(now, f"(robot e-stop via {source})")
        elif action == "clear_estop":
            ok, msg = sup.clear_estop()
            if ok and self.server is not None:
                self.server.supervisor.clear_estop(now)
        else:
            ok, msg = getattr(sup, action)()
        self.handle_result(f"{source}: {action}", ok, msg)

    def handle_result(self, what: str, ok: bool, msg: str) -> None:
        line = f"{time.strftime('%H:%M:%S')} {what} -> {msg}"
        (log.info if ok else log.warning)(line)
        self.messages.append(line)
        del self.messages[:-20]

    # ------------------------------------------------------------------------------ status
    def hal_tick_rate_hz(self) -> float:
        t = self._tick_times[-100:]
        return (len(t) - 1) / (t[-1] - t[0]) if len(t) > 2 and t[-1] > t[0] else 0.0

    def robot_status(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {"supervisor": self.supervisor.snapshot(), "hal_tick_rate_hz": self.hal_tick_rate_hz(),
                               "tick_errors": self.tick_errors}
        if self.backend is not None:
            out["lowlevel"] = self.backend.lowlevel.stats()
        if self.camera is not None:
            out["camera"] = self.camera.stats()
        vel = self.operator.velocity()
        out["operator"] = {"forward_m_s": vel.forward_m_s, "yaw_rad": vel.yaw_rad, "remote_lost_s": self.operator.remote_lost_s()}
        be = self.backend
        fb = be.lowlevel.latest() if be is not None else None
        if fb is not None:
            thr = self.profile.contact_threshold_n
            out["battery"] = {"voltage_v": fb.power_v, "current_a": fb.power_a, "soc_pct": fb.battery_soc_pct}
            out["contacts"] = {n.replace("_foot", ""): bool(f > thr) for n, f in zip(self.profile.foot_names, fb.foot_force_n)}
        nav = be.last_navigation if be is not None else None
        if nav is not None:  # what the policy is told, which in --sim is not necessarily the keys' value
            out["navigation"] = {"forward_m_s": nav.forward_speed_m_s, "yaw_rad": nav.delta_yaw_rad}
        return out


__all__ = ["RobotStack", "StackOptions", "RobotHalServer", "RunnerError", "SimNodeProcess", "SIM_ARM_SCRIPT"]
