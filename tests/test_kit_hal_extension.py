"""krabby.hal's Kit layer against FAKES of omni/carb/pxr/isaacsim (tests/fakes/fake_omni.py).

What this proves: the extension's own logic (subscriptions, lifecycle, Stop -> Play, headless
autoplay, settings, the panel, PD efforts through the real HalServer/HalClient). What it cannot
prove: that the real Kit / Isaac Sim 5.1 APIs behave like the fakes (see exts/krabby.hal/docs/isaac.md).
"""

from __future__ import annotations

import threading
import time
import uuid

import numpy as np
import pytest

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

    def _start(world=None, **settings):
        kit = install_fake_kit(monkeypatch, profile, _settings(**settings), **(world or {}))
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
    assert len(kit.timeline_stream.subs) == 1 and len(kit.stage_stream.subs) == 1 and len(kit.update_observers) == 1
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
    kit.step(1)  # the fake's physics view appears after the first step: not ready yet
    assert not ext.stepper.ready
    kit.step(40)
    st = ext.stepper.stats
    assert st.initializations == 1 and st.errors == 0
    assert st.physics_steps == 40 and st.control_steps == 1 + 40 // 4
    assert len(kit.world.efforts_log) == 40  # efforts before every physics step
    assert st.rate_warning == ""
    gains = kit.world.gains
    assert np.all(gains[0] == 0) and np.all(gains[1] == 0)  # PhysX drives off: torques come from the training PD


def test_commands_reach_articulation_efforts_through_the_pd_model(start, profile):
    kit, ext = start()
    kit.play()
    kit.step(5)
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
    kit.world.generation += 1  # the physics view was recreated under us (e.g. the stage was edited)
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
    assert all("PhysxContactReportAPI" in p.applied for p in feet)


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
