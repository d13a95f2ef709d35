"""krabby.parkour's Kit layer (FAKE omni surface) and its pure PolicyRunner, including the real
inference client running in-process against krabby.hal's extension over inproc (shared context)."""

from __future__ import annotations

import threading
import time
import uuid

import numpy as np
import pytest

from fakes.fake_omni import FakeButton, FakeLabel, FakeStringField, FakeUi, install_fake_kit, purge_kit_modules

from krabby.hal.safety import SafetyState
from krabby.parkour.panel_model import ParkourExtSettings, PolicyRunner, PolicyStartError


@pytest.fixture(scope="module")
def teacher_ckpt(tmp_path_factory):
    from krabby.parkour.upstream_format import random_teacher_checkpoint

    return random_teacher_checkpoint(tmp_path_factory.mktemp("kitckpt") / "model_0.pt")


@pytest.fixture
def exts(monkeypatch, profile):
    """exts(hal=True, **parkour_settings) -> (kit, hal_ext or None, parkour_ext); all shut down at the end."""
    started = []

    def _start(hal: bool = True, **parkour):
        tag = uuid.uuid4().hex[:8]
        settings = {"/exts/krabby.hal/observation_bind": f"inproc://pk-obs-{tag}", "/exts/krabby.hal/command_bind": f"inproc://pk-cmd-{tag}"}
        settings.update({f"/exts/krabby.parkour/{k}": v for k, v in parkour.items()})
        kit = install_fake_kit(monkeypatch, profile, settings)
        hal_ext = None
        if hal:
            import krabby.hal.kit as hal_kit

            hal_ext = hal_kit.KrabbyHalExtension()
            hal_ext.on_startup("krabby.hal-0.1.0")
            started.append(hal_ext)
        import krabby.parkour.kit as parkour_kit

        ext = parkour_kit.KrabbyParkourExtension()
        ext.on_startup("krabby.parkour-0.1.0")
        started.insert(0, ext)  # parkour shuts down first, as Kit does for dependents
        return kit, hal_ext, ext

    yield _start
    for ext in started:
        ext.on_shutdown()
    purge_kit_modules()


def _drive(kit, until, timeout_s=10.0):
    """Step physics (one control period at a time) until ``until()`` or the timeout."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        kit.step(4)
        if until():
            return True
        time.sleep(0.002)
    return False


def test_lifecycle_menu_and_release(exts):
    kit, hal, ext = exts()
    assert [m.name for m in kit.menus["Window"]] == ["Krabby HAL", "Krabby Parkour"]
    assert len(kit.update_observers) == 2
    ext.on_shutdown()
    assert [m.name for m in kit.menus["Window"]] == ["Krabby HAL"]
    assert len(kit.update_observers) == 1
    ext.on_startup("krabby.parkour-0.1.0")  # hot reload / re-enable
    assert [m.name for m in kit.menus["Window"]] == ["Krabby HAL", "Krabby Parkour"]


def test_start_without_the_hal_says_so(exts, teacher_ckpt):
    kit, _, ext = exts(hal=False)
    msg = ext.start_policy(str(teacher_ckpt))
    assert "krabby.hal extension is not serving" in msg and not ext.runner.running


def test_policy_runs_in_process_and_drives_the_articulation(exts, teacher_ckpt, profile):
    kit, hal, ext = exts(show_window=True, checkpoint=str(teacher_ckpt))
    kit.play()
    kit.step(5)
    window = next(w for w in FakeUi.windows if w.title == "Krabby Parkour")
    assert window.find(FakeStringField)[0].model.get_value_as_string() == str(teacher_ckpt)
    window.find(FakeButton, "Start policy")[0].click()
    assert ext.runner.running, ext.runner.error
    assert any(label.text.startswith("policy running") for label in window.find(FakeLabel))
    assert hal.panel.snapshot().connection.startswith("1 client")
    assert _drive(kit, lambda: ext.runner.client.metrics()["commands_accepted"] >= 5), ext.runner.snapshot()
    assert hal.server.supervisor.state == SafetyState.ACTIVE
    assert np.abs(kit.world.efforts).max() > 0.1  # the policy's targets reach the joints through the PD
    snap = ext.runner.snapshot()
    assert snap.status.startswith("running model_0.pt") and len(snap.last_action) == 12
    assert "ms" in snap.compute and "ms" in snap.obs_age
    ext.window_host.update(force=True)  # the panel redraws at ui_refresh_hz; do not wait for it
    assert any(label.text.startswith("compute p50") for label in window.find(FakeLabel))
    assert hal.panel.snapshot().latency.startswith("obs->command p50")
    window.find(FakeButton, "Stop policy")[0].click()
    assert not ext.runner.running
    assert not [t for t in threading.enumerate() if t.name == "krabby-inference"]


def test_autostart_from_settings(exts, teacher_ckpt):
    kit, hal, ext = exts(autostart=True, checkpoint=str(teacher_ckpt))
    assert ext.runner.running, kit.logs
    ext.on_shutdown()  # stops the client thread and closes its sockets
    assert not ext.runner.running
    assert not [t for t in threading.enumerate() if t.name == "krabby-inference"]


def test_autostart_with_a_missing_checkpoint_logs_one_line(exts, tmp_path):
    kit, hal, ext = exts(autostart=True, checkpoint=str(tmp_path / "nope.pt"))
    errors = kit.log_lines("error")
    assert len(errors) == 1 and "not found" in errors[0] and "\n" not in errors[0]


# ------------------------------------------------------------------------ PolicyRunner (pure)
class _FakeClient:
    def __init__(self, fail_init=None):
        self.fail_init, self.stopped, self.started = fail_init, False, None

    def initialize(self):
        if self.fail_init:
            raise self.fail_init

    def start_thread(self, running):
        self.started = running

    def stop(self):
        self.stopped = True

    def metrics(self):
        return {"loop_rate_hz": 49.9, "compute_ms_p50": 0.8, "compute_ms_p99": 1.5, "obs_age_ms_p50": 1.0,
                "obs_age_ms_p99": float("nan"), "commands_accepted": 10, "commands_refused": {"STALE": 2},
                "last_action": [0.1] * 12}


def test_policy_runner_start_stop_and_snapshot(tmp_path):
    ckpt = tmp_path / "m.pt"
    ckpt.write_bytes(b"x")
    clients = []
    runner = PolicyRunner(lambda cfg, path, **kw: clients.append(_FakeClient()) or clients[-1])
    with pytest.raises(PolicyStartError, match="no checkpoint"):
        runner.start("", hal_client_config=None, context=None)
    with pytest.raises(PolicyStartError, match="not found"):
        runner.start(str(tmp_path / "missing.pt"), hal_client_config=None, context=None)
    runner.start(str(ckpt), hal_client_config=None, context=None)
    assert runner.running and clients[0].started.is_set()
    with pytest.raises(PolicyStartError, match="already running"):
        runner.start(str(ckpt), hal_client_config=None, context=None)
    s = runner.snapshot()
    assert s.rate == "49.9 Hz" and s.compute == "p50 0.80 ms, p99 1.50 ms" and s.obs_age == "p50 1.0 ms, p99 -"
    assert s.commands == "accepted 10, refused 2 (STALE 2)" and s.last_action == [0.1] * 12
    running_flag = clients[0].started
    runner.stop()
    assert clients[0].stopped and not running_flag.is_set() and not runner.running
    runner.stop()  # twice is fine
    assert runner.snapshot().status == "stopped"


def test_policy_runner_failed_initialize_is_one_line_and_cleans_up(tmp_path):
    ckpt = tmp_path / "m.pt"
    ckpt.write_bytes(b"x")
    client = _FakeClient(fail_init=ValueError("policy has obs_dim 700"))
    runner = PolicyRunner(lambda *a, **k: client)
    with pytest.raises(PolicyStartError, match="cannot start the policy: ValueError: policy has obs_dim 700"):
        runner.start(str(ckpt), hal_client_config=None, context=None)
    assert client.stopped and not runner.running
    assert "obs_dim" in runner.snapshot().error


def test_parkour_settings_defaults():
    s = ParkourExtSettings.from_getter({"/exts/krabby.parkour/autostart": "1", "/exts/krabby.parkour/obs_dim": "753"}.get)
    assert s.autostart is True and s.obs_dim == 753 and s.device == "cpu"
