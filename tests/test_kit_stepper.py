"""The pure parts behind the Kit layer: name mapping, PD, the physics-step scheduler, sensors, settings, panel model."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

from krabby.hal.isaac.ext_settings import HalExtSettings, coerce, connect_endpoint
from krabby.hal.isaac.stepper import (
    JointMapError, JointNameMap, PhysicsStepper, Rates, SimClock, effective_rates, pd_efforts, physics_rate_message,
)
from krabby.hal.isaac.panel_model import CounterRates, HalPanelModel, JointTrace
from krabby.hal.safety import SafetyState
from krabby.hal.isaac.articulation import (
    ArticulationHalBackend, ArticulationIO, HeadingHoldNavigation, depth_image, depth_rays, height_scan_rays,
    height_scan_values, world_to_body,
)
from krabby.hal.types import ActuatorCommand, ActuatorMode, RobotState, SensorFrame


# ------------------------------------------------------------------------------ name mapping, PD
def test_joint_map_is_by_name(profile):
    dof = list(profile.policy_joint_names) + ["gripper_joint"]
    jm = JointNameMap(profile, dof)
    dof_vec = np.arange(len(dof), dtype=float)
    robot = jm.to_robot(dof_vec)
    assert [dof[int(i)] for i in robot] == list(profile.joint_names)
    back = jm.to_dof(robot)
    assert back[:-1] == pytest.approx(dof_vec[:-1]) and back[-1] == 0.0  # unknown DOF gets zero effort
    assert jm.extra_dofs == ("gripper_joint",)


def test_joint_map_errors_name_the_joint(profile):
    with pytest.raises(JointMapError, match="FR_hip_joint.*robot_prim_path"):
        JointNameMap(profile, [n for n in profile.joint_names if n != "FR_hip_joint"])
    with pytest.raises(JointMapError, match="more than once"):
        JointNameMap(profile, list(profile.joint_names) + ["FR_hip_joint"])


def test_pd_efforts_is_the_training_model(profile):
    jm = JointNameMap(profile, profile.policy_joint_names)
    rng = np.random.default_rng(0)
    q_dof, qd_dof = rng.normal(size=12), rng.normal(size=12) * 20
    cmd = ActuatorCommand(ActuatorMode.POSITION, profile.default_pos_rad.copy(), profile.kp_nm_per_rad, profile.kd_nm_s_per_rad)
    eff, tau = pd_efforts(cmd, profile, jm, q_dof, qd_dof)
    q, qd = jm.to_robot(q_dof), jm.to_robot(qd_dof)
    raw = 40.0 * (profile.default_pos_rad - q) - 1.0 * qd
    assert tau == pytest.approx(profile.dc_motor_clip_nm(raw, qd))
    assert jm.to_robot(eff) == pytest.approx(tau)
    assert pd_efforts(None, profile, jm, q_dof, qd_dof)[0] == pytest.approx(np.zeros(12))


def test_rates(profile):
    rates, warnings = effective_rates(profile)
    assert (rates.physics_rate_hz, rates.control_rate_hz, rates.decimation) == (200.0, 50.0, 4) and warnings == []
    rates, warnings = effective_rates(profile, physics_rate_hz=400)
    assert rates.decimation == 8 and "trained at 200" in warnings[0]
    with pytest.raises(ValueError, match="integer decimation"):
        effective_rates(profile, control_rate_hz=60)
    assert physics_rate_message(200.0, 200.0) is None
    assert "not set (PhysX default 60 Hz)" in physics_rate_message(None, 200.0)


# ------------------------------------------------------------------------------ the scheduler
class _StubServer:
    """HalServer's stepping surface: observe() publishes, actuate(now_ns) runs the supervisor, tick() does both."""

    def __init__(self, backend):
        self.backend = backend
        self.ticks = 0
        self.last_command = None
        self.waited = []
        self.actuated_at = []
        self.command_arrives = True
        self.supervisor = SimpleNamespace(state=SafetyState.ARMED, tick=lambda now: f"cmd{self.ticks}")

    def observe(self):
        self.ticks += 1
        return SimpleNamespace(state=SimpleNamespace(stamp_ns=self.ticks))

    def tick(self):
        frame = self.observe()
        self.actuate()
        return frame

    def wait_for_command(self, stamp, timeout):
        self.waited.append(stamp)
        return self.command_arrives

    def actuate(self, now_ns=None):
        self.actuated_at.append(now_ns)
        self.last_command = self.supervisor.tick(now_ns)
        self.backend.apply(self.last_command)
        return self.last_command


class _StubBackend:
    def __init__(self, ready_after=0):
        self.ready_after, self.calls, self.applied, self.pd = ready_after, 0, [], 0
        self.invalidated = 0
        self.fail_pd = False

    def ensure_ready(self):
        self.calls += 1
        return self.calls > self.ready_after

    def apply_pd(self):
        if self.fail_pd:
            raise RuntimeError("handle gone")
        self.pd += 1

    def invalidate(self):
        self.invalidated += 1

    def apply(self, cmd):
        self.applied.append(cmd)


def _stepper(backend, **kw):
    server = _StubServer(backend)
    return server, PhysicsStepper(server, backend, rates=Rates(200.0, 50.0), **kw)


def _run(stepper, n, dt=0.005):
    for _ in range(n):
        stepper.on_pre_step(dt)
        stepper.on_post_step(dt)


def test_stepper_ticks_every_decimation_and_applies_pd_every_step():
    backend = _StubBackend(ready_after=2)
    server, st = _stepper(backend)
    _run(st, 2)
    assert server.ticks == 0 and backend.pd == 0  # not ready: nothing happens
    _run(st, 12)
    assert backend.pd == 12
    assert server.ticks == 1 + 12 // 4  # the initial observation + one per 4 physics steps
    assert st.stats.physics_steps == 12 and st.stats.control_steps == server.ticks
    seen = []
    st.observers.append(lambda frame, cmd: seen.append(cmd))
    _run(st, 4)
    assert seen == [f"cmd{server.ticks}"]


def test_stepper_stop_and_errors_reinitialise():
    backend = _StubBackend()
    server, st = _stepper(backend)
    _run(st, 5)
    st.on_stop()
    assert not st.ready and backend.invalidated == 1
    st.on_post_step(0.005)  # a stray post-step after Stop does nothing
    _run(st, 1)  # a step before the next Play is prepared is skipped
    assert st.stats.initializations == 1 and st.stats.steps_before_play == 1
    st.on_play()
    _run(st, 1)
    assert st.stats.initializations == 2
    backend.fail_pd = True
    _run(st, 1)
    assert st.stats.errors == 1 and "handle gone" in st.stats.last_error and not st.ready
    backend.fail_pd = False
    _run(st, 1)
    assert st.ready and st.stats.initializations == 3


def test_stepper_warns_on_a_wrong_physics_rate_and_clears_it_once_right():
    backend = _StubBackend()
    server, st = _stepper(backend)
    _run(st, 3, dt=1 / 60)  # e.g. Play warm-up steps at the stage's old rate
    assert "60 Hz" in st.stats.rate_warning and "200" in st.stats.rate_warning
    _run(st, 3, dt=float(np.float32(1 / 200)))  # the rate was set: PhysX passes dt as float32
    assert st.stats.rate_warning == ""


def test_stepper_skips_steps_until_the_play_is_prepared():
    """Isaac Sim steps physics inside the Play event, possibly before the extension's Play handler ran."""
    backend = _StubBackend()
    server, st = _stepper(backend, awaiting_play=True)
    _run(st, 2)
    assert st.stats.steps_before_play == 2 and backend.calls == 0 and server.ticks == 0 and backend.pd == 0
    st.on_play()
    _run(st, 4)
    assert st.ready and st.stats.physics_steps == 4 and server.ticks == 2


def test_stepper_lockstep_waits_only_while_a_client_commands():
    backend = _StubBackend()
    server, st = _stepper(backend, lockstep_timeout_s=0.05)
    _run(st, 4)
    assert server.waited == []  # ARMED: nobody commanding, never block the physics loop
    server.supervisor.state = SafetyState.ACTIVE
    applied = len(backend.applied)
    _run(st, 4)
    assert server.waited == [server.ticks]  # waited for the command of the observation just published
    assert len(backend.applied) == applied + 1  # then actuated once, with that command
    server.command_arrives = False
    _run(st, 4)
    assert st.stats.lockstep_timeouts == 1


def test_lockstep_supervisor_time_is_simulated_time_while_a_command_is_overdue():
    wall = [10_000_000_000]
    st_clock = SimClock(wall_ns=lambda: wall[0])
    st_clock.anchor()
    wall[0] += 3_000_000_000  # the simulator stalled 3 s of wall time ...
    st_clock.advance(0.005)  # ... for one 5 ms physics step
    assert st_clock.now_ns() == 10_005_000_000
    st_clock.anchor()  # a fresh command: back on the wall clock
    assert st_clock.now_ns() == wall[0]
    backend = _StubBackend()
    server, st = _stepper(backend, lockstep_timeout_s=0.05)
    server.supervisor.state = SafetyState.ACTIVE
    server.command_arrives = False
    _run(st, 1)  # the initial tick anchors nothing while ACTIVE: supervisor time starts where it was
    t0 = server.actuated_at[-1]
    _run(st, 8)
    assert [t - t0 for t in server.actuated_at[-2:]] == [20_000_000, 40_000_000]  # 4 physics steps of 5 ms per tick


# ------------------------------------------------------------------------------ sensors
class _PlaneIO(ArticulationIO):
    def __init__(self, profile, yaw=0.0, z=0.35):
        self.dof_names = list(profile.policy_joint_names)
        self.q = np.zeros(12)
        self.yaw, self.z = yaw, z
        self.lin_w = np.array([1.0, 0.0, 0.0])
        self.efforts = None

    def joint_state(self):
        return self.q.copy(), np.zeros(12)

    def root_pose(self):
        return np.array([0.0, 0.0, self.z]), np.array([math.cos(self.yaw / 2), 0, 0, math.sin(self.yaw / 2)])

    def root_velocity_world(self):
        return self.lin_w, np.array([0.0, 0.0, 0.5])

    def foot_forces_n(self):
        return np.array([[0, 0, 10.0], [0, 0, 20.0], [0, 0, 0.0], [3.0, 4.0, 0.0]])

    def set_joint_efforts(self, e):
        self.efforts = e


class _PlaneCaster:
    def cast(self, origins, dirs, max_distance):
        with np.errstate(divide="ignore", invalid="ignore"):
            t = np.where(dirs[:, 2] < 0, -origins[:, 2] / dirs[:, 2], np.inf)
        return np.where(t <= max_distance, t, np.inf)


class _Backend(ArticulationHalBackend):
    def __init__(self, profile, io, **kw):
        super().__init__(profile, **kw)
        self._io = io

    def _acquire(self):
        return self._io, _PlaneCaster()


def test_backend_reads_body_frame_state_scan_depth_and_nav(profile):
    io = _PlaneIO(profile, yaw=math.pi / 2)
    b = _Backend(profile, io, depth=True)
    assert b.ensure_ready()
    frame = b.read()
    s = frame.state
    assert s.base_lin_vel_body_m_s == pytest.approx([0.0, -1.0, 0.0], abs=1e-12)  # world +x seen from a base facing +y
    assert s.base_ang_vel_body_rad_s == pytest.approx([0.0, 0.0, 0.5])
    assert s.base_lin_acc_body_m_s2 == pytest.approx([0.0, 0.0, 9.81])  # at constant velocity: gravity only
    assert s.foot_force_n == pytest.approx([10.0, 20.0, 0.0, 5.0])
    assert frame.height_scan.base_height_above_hit_m == pytest.approx(np.full(profile.height_scan.num_points, 0.35))
    assert frame.navigation.delta_yaw_rad == 0.0  # heading hold: the first heading is the target
    cam = profile.camera
    d = frame.depth.distance_m
    assert d.shape == (cam.height_px, cam.width_px) and d.dtype == np.float32
    assert d.max() == pytest.approx(cam.max_distance_m)  # misses and far hits clip to the max, as in training
    dirs = cam.ray_directions_camera() @ cam.rotation_base_from_camera().T
    expected = np.where(dirs[..., 2] < 0, (0.35 + cam.mount_pos_base_m[2]) / -dirs[..., 2], np.inf)
    assert d == pytest.approx(np.minimum(expected, cam.max_distance_m), rel=1e-5)
    for _ in range(4):
        assert b.read().depth is None  # depth at the camera rate (10 Hz = every 5 control steps)
    assert b.read().depth is not None
    io.yaw += 0.2
    assert b.read().navigation.delta_yaw_rad == pytest.approx(-0.2)


def test_backend_apply_pd_writes_dof_order_efforts(profile):
    io = _PlaneIO(profile)
    b = _Backend(profile, io, height_scan=False)
    b.ensure_ready()
    b.apply(ActuatorCommand(ActuatorMode.POSITION, profile.default_pos_rad.copy(), profile.kp_nm_per_rad, profile.kd_nm_s_per_rad))
    b.apply_pd()
    expected = profile.dc_motor_clip_nm(40.0 * profile.default_pos_rad, np.zeros(12))
    assert b.joint_map.to_robot(io.efforts) == pytest.approx(expected)
    assert b.read().state.joint_torque_nm == pytest.approx(expected)


def test_height_scan_geometry_is_yaw_aligned(profile):
    o, d = height_scan_rays(profile.height_scan, np.array([1.0, 2.0, 0.4]), np.array([math.cos(math.pi / 4), 0, 0, math.sin(math.pi / 4)]))
    pts = profile.height_scan.points_base_xy_m()
    assert o[:, 0] == pytest.approx(1.0 - pts[:, 1]) and o[:, 1] == pytest.approx(2.0 + pts[:, 0])
    assert np.all(o[:, 2] == pytest.approx(20.4)) and np.all(d == [0, 0, -1])
    assert height_scan_values(np.array([20.1, np.inf])).tolist() == pytest.approx([0.1, -np.inf])
    origins, dirs = depth_rays(profile.camera, np.zeros(3), np.array([1.0, 0, 0, 0]))
    assert origins[0] == pytest.approx(profile.camera.mount_pos_base_m)
    assert depth_image(profile.camera, np.full(len(dirs), np.inf)).max() == profile.camera.max_distance_m
    assert world_to_body(np.array([1.0, 0, 0, 0]), [1, 2, 3]) == pytest.approx([1, 2, 3])


def test_heading_hold_fixed_target():
    nav = HeadingHoldNavigation(0.7, terrain_is_flat=True, target_yaw_rad=1.0)
    cmd = nav(5, np.array([1.0, 0, 0, 0]))
    assert (cmd.forward_speed_m_s, cmd.delta_yaw_rad, cmd.delta_next_yaw_rad, cmd.terrain_is_flat) == (0.7, 1.0, 1.0, True)


# ------------------------------------------------------------------------------ settings, panel
def test_settings_coercion_and_endpoints():
    s = HalExtSettings.from_getter({"/exts/krabby.hal/autoplay": "true", "/exts/krabby.hal/physics_rate_hz": "400",
                                    "/exts/krabby.hal/usd_path": "/a.usd"}.get)
    assert s.autoplay is True and s.physics_rate_hz == 400.0 and s.usd_path == "/a.usd" and s.robot_profile == "go2"
    with pytest.raises(ValueError, match="true or false"):
        coerce("maybe", bool, "/x")
    with pytest.raises(ValueError, match="number"):
        coerce("fast", float, "/x")
    assert connect_endpoint("tcp://*:5555") == "tcp://127.0.0.1:5555"
    assert connect_endpoint("tcp://0.0.0.0:6000") == "tcp://127.0.0.1:6000"
    assert connect_endpoint("inproc://x") == "inproc://x"


def test_counter_rates_and_trace(profile):
    r = CounterRates(window_s=1.0)
    assert r.update(0.0, {"a": 0}) == {"a": 0.0}
    assert r.update(0.5, {"a": 25})["a"] == pytest.approx(50.0)
    trace = JointTrace(12, length=3)
    for k in range(5):
        st = RobotState(k, np.full(12, k), np.zeros(12), np.zeros(12), np.array([1.0, 0, 0, 0]), np.zeros(3), np.zeros(3), np.zeros(3), np.zeros(4))
        trace.append(SensorFrame(st), ActuatorCommand(ActuatorMode.POSITION, np.full(12, k + 0.5), np.zeros(12), np.zeros(12)))
    targets, positions = trace.series(0)
    assert positions == [2.0, 3.0, 4.0] and targets == [2.5, 3.5, 4.5]


def test_panel_model_with_a_real_server(profile):
    from krabby.hal.backends.loopback_double import LoopbackTestDouble
    from krabby.hal.server import HalServer, HalServerConfig
    import uuid

    tag = uuid.uuid4().hex[:6]
    server = HalServer(LoopbackTestDouble(profile), HalServerConfig(f"inproc://pm-o-{tag}", f"inproc://pm-c-{tag}")).start()
    try:
        model = HalPanelModel(server, None)
        model.attach()
        snap = model.snapshot()
        assert snap.safety_state == "DISARMED" and snap.connection == "no client connected"
        assert model.arm() == "arm: OK" and server.supervisor.state == SafetyState.ARMED
        assert model.estop() == "estop: OK" and model.arm() == "arm: ESTOP"
        msg = SimpleNamespace(header=SimpleNamespace(stamp_ns=0))
        model.on_command(SimpleNamespace(reason=SimpleNamespace(accepted=False)), msg)
        assert not model.latency_ms
        model.detach()
        assert server.on_command is None
    finally:
        server.close()
    assert "not running" in HalPanelModel(None, error="").snapshot().warning


def test_panel_window_host_creates_lazily_and_throttles_redraws():
    from krabby.hal.isaac.panel_model import PanelWindowHost

    made, draws, now = [], [], [0.0]

    class Window:
        visible = False

        def refresh(self, snap):
            draws.append(snap)

        def destroy(self):
            made.remove(self)

    def make():
        made.append(Window())
        return made[-1]

    host = PanelWindowHost(make, lambda: now[0], refresh_hz=10.0, now_s=lambda: now[0])
    host.show(False)
    assert not made  # hiding a window that was never shown creates nothing
    host.toggle()
    assert len(made) == 1 and host.visible and draws == [0.0]
    host.update()
    now[0] = 0.05
    host.update()  # inside the 0.1 s period: no redraw
    assert draws == [0.0, 0.0]
    now[0] = 0.11
    host.update()
    assert draws[-1] == 0.11
    host.update(force=True)
    assert len(draws) == 4
    host.toggle()
    host.update(force=True)  # hidden: nothing drawn
    assert len(draws) == 4 and len(made) == 1
    host.destroy()
    assert not made and host.window is None
