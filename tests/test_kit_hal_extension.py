"""krabby.hal's Kit layer against FAKES of omni/carb/isaacsim (tests/fakes/fake_omni.py, fake_isaacsim.py)
on a REAL usd-core stage.

What this proves: the extension's own logic (subscriptions, lifecycle, Stop -> Play, headless
autoplay, settings, the panel, PD efforts through the real HalServer/HalClient), against stand-ins
that behave like Isaac Sim 5.1 where it bit before: Play warm-up steps inside the Play event, the
torch backend under GPU physics, views that rewrite the stage. What it cannot prove: that the real
Kit / Isaac Sim 5.1 APIs behave like the fakes (see exts/krabby.hal/docs/isaac.md).
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid

import numpy as np
import pytest

pytest.importorskip("pxr", reason="the Kit tests run on a real USD stage: pip install usd-core (in krabby[test])")

from fakes.fake_isaacsim import PhysxSchema, applied_api_names  # noqa: E402
from fakes.fake_omni import FakeButton, FakeLabel, FakePlot, FakeUi, install_fake_kit, purge_kit_modules

from krabby.hal.client import HalClient, HalClientConfig
from krabby.hal.protocol import Kind
from krabby.hal.safety import SafetyState
from krabby.hal.types import ActuatorCommand, ActuatorMode

P = "/exts/krabby.hal/"


def _settings(**extra):
    tag = uuid.uuid4().hex[:8]
    s = {P + "observation_bind": f"inproc://kit-obs-{tag}", P + "command_bind": f"inproc://kit-cmd-{tag}"}
    s.update({P + k: v for k, v in extra.items()})
    return s


@pytest.fixture
def start(monkeypatch, profile):
    """start(**settings) -> (kit, ext): fakes installed, extension started; shut down at the end."""
    started = []

    def _start(world=None, before_startup=None, **settings):
        kit = install_fake_kit(monkeypatch, profile, _settings(**settings), **(world or {}))
        if before_startup is not None:
            before_startup(kit)
        import krabby.hal.kit as hal_kit

        ext = hal_kit.KrabbyHalExtension()
        ext.on_startup("krabby.hal-0.1.0")
        started.append(ext)
        return kit, ext

    yield _start
    for ext in started:
        if ext.server is not None:
            ext.on_shutdown()
    purge_kit_modules()  # the kit packages were imported against fakes: never leave them behind


def _krabby_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("krabby")]


def test_startup_subscribes_and_shutdown_releases_everything(start):
    before = _krabby_threads()
    kit, ext = start()
    assert ext.error == ""
    physics = kit.physics_subs
    assert sorted(s.info["pre_step"] for s in physics) == [False, True]
    ours = [sub for sub in kit.timeline_stream.subs if sub.info["name"] == "krabby.hal"]
    assert len(ours) == 1 and len(kit.stage_stream.subs) == 1 and len(kit.update_observers) == 1
    assert kit.active_subscriptions == 5
    assert [m.name for m in kit.menus["Window"]] == ["Krabby HAL"]
    kit.menus["Window"][0].onclick_fn()  # open the window
    assert [w.title for w in FakeUi.windows] == ["Krabby HAL"]
    assert "krabby-hal-commands" in _krabby_threads()

    ext.on_shutdown()
    assert kit.active_subscriptions == 0
    assert kit.menus["Window"] == []
    assert FakeUi.windows == []
    assert ext.server is None
    assert _krabby_threads() == before  # command thread joined


def test_hot_reload_and_disable_enable_rebind_the_same_tcp_ports(start, monkeypatch):
    from conftest import free_tcp_port

    obs, cmd = f"tcp://127.0.0.1:{free_tcp_port()}", f"tcp://127.0.0.1:{free_tcp_port()}"
    kit, ext = start(observation_bind=obs, command_bind=cmd, allow_insecure_tcp=True)
    assert ext.error == ""
    import importlib

    import krabby.hal.kit.extension as ext_module

    for _ in range(2):  # hot reload = on_shutdown, reload the module, on_startup of a fresh instance
        ext.on_shutdown()
        assert kit.active_subscriptions == 0
        ext_module = importlib.reload(ext_module)
        ext = ext_module.KrabbyHalExtension()
        ext.on_startup("krabby.hal-0.1.0")
        assert ext.error == "", ext.error  # sockets were closed with linger 0: no EADDRINUSE
        assert kit.active_subscriptions == 5
        assert len(kit.menus["Window"]) == 1
        assert ext_module.current() is ext
    ext.on_shutdown()
    assert ext_module.current() is None


def test_play_step_publishes_every_decimation_and_applies_pd_every_step(start, profile):
    kit, ext = start()
    kit.play()
    assert ext.server.supervisor.state == SafetyState.ARMED  # arm_on_play
    assert kit.world.physics_dt() == pytest.approx(1 / 200)  # the extension set the PhysicsScene rate
    # Play warm-started physics: a step without a simulation view (nothing to read), then the view and
    # a second step, which the HAL already handled (initial observation, PD)
    assert kit.world.total_steps == 2 and ext.stepper.ready
    kit.step(39)
    st = ext.stepper.stats
    assert st.initializations == 1 and st.errors == 0
    assert st.physics_steps == 40 and st.control_steps == 1 + 40 // 4
    assert len(kit.world.efforts_log) == 40  # efforts before every physics step the HAL handled
    assert st.rate_warning == ""
    gains = kit.world.gains
    assert np.all(gains[0] == 0) and np.all(gains[1] == 0)  # PhysX drives off: torques come from the training PD


def test_commands_reach_articulation_efforts_through_the_pd_model(start, profile):
    kit, ext = start()
    kit.play()
    kit.step(3)  # with the warm-up step the HAL handled: 4 physics steps, so control ticks end each step(4) below
    obs_ep, cmd_ep = ext.client_endpoints()
    client = HalClient(HalClientConfig(observation_endpoint=obs_ep, command_endpoint=cmd_ep), context=ext.context)
    client.connect()
    try:
        deadline = time.monotonic() + 2.0
        sample = None
        while sample is None and time.monotonic() < deadline:
            kit.step(4)
            sample = client.wait_new(Kind.STATE, 0.05)
        assert sample is not None, "no telemetry"
        world = kit.world
        # telemetry is in robot order, mapped by joint NAME from the simulator's (Isaac) DOF order
        dof = {n: i for i, n in enumerate(world.dof_names)}
        assert sample.value.joint_pos_rad == pytest.approx([world.q[dof[n]] for n in profile.joint_names], abs=1e-5)
        scan = client.latest(Kind.HEIGHT_SCAN)
        assert scan is not None
        # flat floor under a base at z = 0.35: base_z - hit_z = 0.35 everywhere, the robot's own body never hit
        assert scan.value.base_height_above_hit_m == pytest.approx(np.full(profile.height_scan.num_points, 0.35))

        targets = profile.default_pos_rad + np.linspace(-0.2, 0.2, profile.num_joints)
        ack = client.send_command(targets, sample, timeout_s=1.0)
        assert ack.accepted, ack
        kit.step(4)  # the next control tick hands the command to the backend
        q_before, qd_before = world.q.copy(), world.qd.copy()
        kit.step(1)  # the pre-step applies it
        q_r = np.array([q_before[dof[n]] for n in profile.joint_names])
        qd_r = np.array([qd_before[dof[n]] for n in profile.joint_names])
        cmd = ActuatorCommand(ActuatorMode.POSITION, profile.clamp_to_limits(targets), profile.kp_nm_per_rad, profile.kd_nm_s_per_rad)
        expected_robot = cmd.torque_nm(profile, q_r, qd_r)
        applied_robot = np.array([world.efforts[dof[n]] for n in profile.joint_names])
        assert applied_robot == pytest.approx(expected_robot, rel=1e-5, abs=1e-4)
        assert np.abs(applied_robot).max() > 1.0  # not trivially zero
        assert ext.server.supervisor.state == SafetyState.ACTIVE
    finally:
        client.close()


def test_stop_then_play_reacquires_handles(start):
    kit, ext = start()
    kit.play()
    kit.step(10)
    assert ext.stepper.ready
    kit.stop()
    assert not ext.stepper.ready
    assert ext.server.supervisor.state == SafetyState.DISARMED  # disarmed on Stop
    kit.play()
    assert ext.server.supervisor.state == SafetyState.ARMED
    n = len(kit.world.efforts_log)
    kit.step(10)
    assert ext.stepper.stats.initializations == 2
    assert ext.stepper.stats.errors == 0
    assert len(kit.world.efforts_log) > n


def test_invalidated_handle_mid_run_is_recovered(start):
    kit, ext = start()
    kit.play()
    kit.step(6)
    kit.recreate_view()  # the physics view was recreated under us (e.g. the stage was edited)
    kit.step(3)
    assert ext.stepper.stats.initializations == 2
    assert ext.stepper.ready


def test_headless_autoplay_opens_the_stage_and_presses_play(start, tmp_path):
    stage = tmp_path / "parkour.usd"
    stage.write_text("#usda 1.0\n")
    kit, ext = start(usd_path=str(stage), autoplay=True)
    assert not kit.world.playing
    kit.run_tasks()
    assert kit.opened_stages == [str(stage)]
    assert kit.world.playing
    assert kit.world.physics_dt() == pytest.approx(1 / 200)
    kit.step(9)
    assert ext.stepper.stats.control_steps == 3
    feet = [kit.world.stage.GetPrimAtPath(f"/World/Go2/{f}") for f in ext.backend.profile.foot_names]
    assert all("PhysxContactReportAPI" in applied_api_names(p) for p in feet)


def test_autoplay_with_a_missing_stage_says_so_and_does_not_play(start, tmp_path):
    kit, ext = start(usd_path=str(tmp_path / "nope.usd"), autoplay=True)
    kit.run_tasks()
    assert not kit.world.playing
    assert any("does not exist" in m for m in kit.log_lines("error"))


def test_autoplay_task_is_cancelled_on_shutdown(start):
    kit, ext = start(autoplay=True)
    task = kit.tasks[0]
    ext.on_shutdown()
    assert task.cancelled


def test_physics_rate_not_set_warns(start):
    kit, ext = start(set_physics_rate=False)
    assert any("60 Hz" in m and "200" in m for m in kit.log_lines("warn"))
    kit.play()
    kit.step(5)
    assert "60 Hz" in ext.stepper.stats.rate_warning
    assert "60 Hz" in ext.panel.snapshot().warning


def test_wrong_robot_prim_path_is_reported(start):
    kit, ext = start(robot_prim_path="/World/Nope")
    kit.play()
    kit.step(3)
    assert not ext.stepper.ready
    assert "robot_prim_path" in ext.stepper.stats.last_error
    assert "robot_prim_path" in ext.panel.snapshot().warning


def test_articulation_without_profile_joint_is_reported(start, profile):
    kit, ext = start(world={"dof_names": list(profile.policy_joint_names[:-1])})
    kit.play()
    kit.step(3)
    assert "has no joint(s) RR_calf_joint" in ext.stepper.stats.last_error


def test_missing_pyzmq_is_one_line_and_extension_still_shuts_down(start, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "zmq", None)
    kit, ext = start()
    errors = kit.log_lines("error")
    assert len(errors) == 1 and "pip install pyzmq" in errors[0] and "\n" not in errors[0]
    assert ext.server is None
    kit.menus["Window"][0].onclick_fn()
    window = FakeUi.windows[0]
    assert any("pyzmq" in label.text for label in window.find(FakeLabel))  # the panel says it too
    ext.on_shutdown()
    assert kit.active_subscriptions == 0


def test_panel_buttons_and_live_plots(start, profile):
    kit, ext = start(show_window=True)
    window = FakeUi.windows[0]
    (estop,) = window.find(FakeButton, "E-STOP")
    estop.click()
    assert ext.server.supervisor.state == SafetyState.ESTOP
    window.find(FakeButton, "Arm")[0].click()
    assert ext.server.supervisor.state == SafetyState.ESTOP  # latched
    window.find(FakeButton, "Clear e-stop")[0].click()
    assert ext.server.supervisor.state == SafetyState.DISARMED
    window.find(FakeButton, "Arm")[0].click()
    assert ext.server.supervisor.state == SafetyState.ARMED
    kit.play()
    kit.step(41)
    ext.window_host.update(force=True)  # the panel redraws at ui_refresh_hz; do not wait for it
    labels = [label.text for label in window.find(FakeLabel)]
    assert "ARMED" in labels
    assert any(t.startswith("telemetry inproc://") for t in labels)
    plots = window.find(FakePlot)
    assert len(plots) == 2 and all(len(p.data) == 11 for p in plots)  # one point per control step
    assert any("FR_hip_joint" in t and "target" in t for t in labels)


def test_settings_from_the_command_line_are_coerced(start):
    kit, ext = start(autoplay="true", lockstep_timeout_ms="20", arm_on_play="false")
    assert ext.settings.autoplay is True and ext.settings.lockstep_timeout_ms == 20.0 and ext.settings.arm_on_play is False
    assert ext.stepper.lockstep_timeout_s == pytest.approx(0.02)
    kit.play()
    assert ext.server.supervisor.state == SafetyState.DISARMED


# ------------------------------------------------ what broke against the real Isaac Sim 5.1 (issue #13)
def test_gpu_physics_drives_the_robot_through_the_torch_backend(start, profile):
    """GPU physics switches the views to the torch backend, whose move_data calls .to(): numpy would fail every step."""
    kit, ext = start(world={"gpu": True})
    kit.play()
    assert kit.simulation_manager.get_backend() == "torch"
    kit.step(8)
    st = ext.stepper.stats
    assert st.errors == 0, st.last_error
    assert st.control_steps == 1 + 9 // 4 and len(kit.world.efforts_log) == 9
    assert np.all(kit.world.gains[0] == 0) and np.all(kit.world.gains[1] == 0)  # effort mode, set in the view's backend
    frame = ext.backend.read()  # torch tensors read back
    assert np.all(np.isfinite(frame.state.joint_pos_rad)) and frame.state.foot_force_n == pytest.approx([30, 35, 40, 45], rel=1e-5)


def test_play_does_not_rewrite_the_robots_transform_ops(start):
    kit, ext = start()
    before = kit.world.xform_op_order()
    assert before == ["xformOp:translate", "xformOp:rotateXYZ"]  # the user's own ops
    for _ in range(2):
        kit.play()
        kit.step(5)
        assert ext.stepper.ready and ext.stepper.stats.errors == 0
        kit.stop()
    assert kit.world.xform_op_order() == before
    robot = kit.world.stage.GetPrimAtPath(kit.world.robot_path)
    assert not robot.GetAttribute("xformOp:orient").IsValid() and robot.GetAttribute("xformOp:rotateXYZ").IsValid()


def test_feet_that_are_not_rigid_bodies_are_reported_and_never_made_bodies(start, profile):
    from pxr import UsdPhysics

    kit, ext = start(world={"feet_rigid": False})
    kit.play()
    kit.step(3)
    assert not ext.stepper.ready
    assert "not rigid bodies" in ext.stepper.stats.last_error and "foot_path_template" in ext.stepper.stats.last_error
    assert "not rigid bodies" in ext.panel.snapshot().warning
    for foot in profile.foot_names:
        prim = kit.world.stage.GetPrimAtPath(f"{kit.world.robot_path}/{foot}")
        assert not prim.HasAPI(UsdPhysics.RigidBodyAPI)
        assert not {"PhysxRigidBodyAPI", "PhysxContactReportAPI"} & set(applied_api_names(prim))


def test_play_prepares_the_stage_before_isaac_sims_warm_up_steps(start):
    """SimulationManager steps physics inside the PLAY event: the rate must be right and the supervisor armed by then."""
    kit, ext = start()
    scene = kit.world.stage.GetPrimAtPath("/physicsScene")
    PhysxSchema.PhysxSceneAPI(scene).GetTimeStepsPerSecondAttr().Set(60)  # the user set the scene back to 60 Hz
    first = []
    ext.stepper.observers.append(lambda frame, cmd: first.append(cmd) if not first else None)
    kit.play()
    kit.step(6)
    assert kit.world.dts == pytest.approx([1 / 200] * 8)  # the warm-up steps too
    assert ext.stepper.stats.rate_warning == "" and "60 Hz" not in ext.panel.snapshot().warning
    assert first and first[0].mode == ActuatorMode.POSITION  # the first control step ran ARMED (default pose), not disarmed


def test_steps_before_the_play_handler_are_skipped_and_the_rate_warning_clears(start):
    """Whatever steps physics before krabby's Play handler (another extension at a lower order) is tolerated."""
    kit, ext = start(set_physics_rate=False)
    scene = kit.world.stage.GetPrimAtPath("/physicsScene")
    kit.timeline_stream.create_subscription_to_pop(lambda e: kit.physics_step() if e.type == 0 else None, order=-1000, name="other")
    kit.play()
    assert ext.stepper.stats.steps_before_play == 1 and ext.stepper.stats.errors == 0
    kit.step(2)
    assert "60 Hz" in ext.stepper.stats.rate_warning  # only warns: set_physics_rate=false
    PhysxSchema.PhysxSceneAPI(scene).CreateTimeStepsPerSecondAttr().Set(200)  # the user fixes it while playing
    kit.step(2)
    assert ext.stepper.stats.rate_warning == ""


@contextlib.contextmanager
def _commanding_policy(kit, ext, profile):
    """A policy stand-in answering every observation with default + 0.001 * k, until the robot is ACTIVE.

    Yields (answered: obs stamp -> offset, answer: clear it to make the policy hang).
    """
    obs_ep, cmd_ep = ext.client_endpoints()
    client = HalClient(HalClientConfig(observation_endpoint=obs_ep, command_endpoint=cmd_ep), context=ext.context)
    client.connect()
    answered: dict = {}
    stop, answer = threading.Event(), threading.Event()
    answer.set()

    def loop():
        while not stop.is_set():
            s = client.wait_new(Kind.STATE, 0.02)
            if s is None or not answer.is_set():
                continue
            offset = 0.001 * (len(answered) + 1)
            answered[s.stamp_ns] = offset
            client.send_command(profile.default_pos_rad + offset, s, timeout_s=1.0)

    thread = threading.Thread(target=loop, name="test-policy", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 5.0
        while ext.server.supervisor.state != SafetyState.ACTIVE and time.monotonic() < deadline:
            kit.step(4)
            time.sleep(0.005)
        assert ext.server.supervisor.state == SafetyState.ACTIVE
        yield answered, answer
    finally:
        stop.set()
        thread.join(2)
        client.close()


def test_lockstep_is_the_default_each_observation_gets_its_own_command(start, profile):
    kit, ext = start()
    assert ext.stepper.lockstep_timeout_s > 0  # lock-step by default in Kit
    ext.stepper.lockstep_timeout_s = 5.0  # and patient enough for a loaded CI machine
    applied = []
    ext.stepper.observers.append(lambda frame, cmd: applied.append((frame.state.stamp_ns, cmd)))
    kit.play()
    with _commanding_policy(kit, ext, profile) as (answered, _):
        kit.step(4 * 12)  # as fast as the loop goes: the simulator never outruns the policy
    for stamp, cmd in applied[-12:]:  # the command applied after observation k is the one computed from observation k
        assert stamp in answered
        assert cmd.target_pos_rad - profile.default_pos_rad == pytest.approx(np.full(12, answered[stamp]), abs=1e-6)
    assert ext.stepper.stats.lockstep_timeouts == 0


def test_watchdog_and_hold_count_simulated_time_in_lockstep(start, profile):
    """The policy stops answering: HOLD after watchdog_s (0.1 s) and DAMP after hold_s (0.5 s) of SIMULATED time."""
    kit, ext = start()
    kit.play()
    with _commanding_policy(kit, ext, profile) as (_, answer):
        kit.step(8)
        answer.clear()  # the policy hangs
        periods = 0
        while ext.server.supervisor.state == SafetyState.ACTIVE and periods < 20:
            kit.step(4)
            periods += 1
        assert ext.server.supervisor.state == SafetyState.HOLD
        assert 4 <= periods <= 6  # 0.1 s of simulated time = 5 control periods, however long each wait was
        kit.step(4 * 24)  # 0.48 s simulated (a few milliseconds of wall time): still holding
        assert ext.server.supervisor.state == SafetyState.HOLD
        kit.step(4 * 2)  # 0.52 s simulated: DAMP, whatever the wall clock says
        assert ext.server.supervisor.state == SafetyState.DAMP


def test_an_unsupported_isaac_sim_is_refused_in_one_line(start):
    def isaac_sim_6(kit):
        kit.isaac_version = ("6.0.1", "rc.7", "6", "0", "1", "rc", "7", "")
        kit.kit_version = "110.1.2+production.manylinux_2_35_x86_64.release"

    kit, ext = start(before_startup=isaac_sim_6)
    assert ext.server is None
    (error,) = kit.log_lines("error")
    assert "Isaac Sim 5.0 / 5.1" in error and "6.0.1" in error and "\n" not in error
    assert "Isaac Sim 5.0 / 5.1" in ext.panel.snapshot().warning
    ext.on_shutdown()
    assert kit.active_subscriptions == 0


def test_a_stage_opened_while_playing_is_prepared_and_driven(start, tmp_path):
    import asyncio
    import sys

    kit, ext = start()
    kit.play()
    kit.step(4)
    assert ext.stepper.stats.initializations == 1
    ok, _ = asyncio.run(sys.modules["omni.usd"].get_context().open_stage_async(str(tmp_path / "other.usda")))
    assert ok and kit.world.playing
    kit.step(4)
    assert ext.stepper.ready and ext.stepper.stats.initializations == 2 and ext.stepper.stats.steps_before_play == 0
    assert kit.world.physics_dt() == pytest.approx(1 / 200)
