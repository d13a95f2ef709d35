"""Every way the runner ends is damped: real SIGTERM/SIGINT/SIGHUP to jetson/run.py against the simulated node,
and an uncaught exception in any thread."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time

import pytest

pytest.importorskip("cyclonedds", reason="cyclonedds not installed (pip install cyclonedds==11.0.1)")

from conftest import REPO  # noqa: E402
from krabby.hal.robot.sim_node import SimGo2Node, SimNodeConfig  # noqa: E402
from krabby.hal.robot.supervisor import Mode  # noqa: E402
from test_jetson_e2e import wait_for  # noqa: E402


def loopback_deployment(tmp_path, **replace) -> str:
    text = (REPO / "config" / "deploy" / "go2_jetson.toml").read_text().replace('network_interface = "eth0"', 'network_interface = ""')
    for old, new in replace.items():
        text = text.replace(old, new)
    p = tmp_path / "go2_loopback.toml"
    p.write_text(text)
    return str(p)


# a loaded 2-core CI machine can stall LowState_ past 0.1 s, which (correctly) drops the robot to damping
LOADED_CI = {"state_timeout_s = 0.1": "state_timeout_s = 0.5", "writer_lock_memory = true": "writer_lock_memory = false"}



@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_signals_damp_before_exit(profile, tmp_path, sig):
    dom = random.randint(20, 99)
    node = SimGo2Node(profile, SimNodeConfig(domain_id=dom, physics="double")).start()
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, str(REPO / "jetson" / "run.py"), "--deploy", loopback_deployment(tmp_path, **LOADED_CI),
                             "--domain", str(dom), "--camera", "none", "--live", "--record", "", "--no-dashboard",
                             "--no-keyboard", "--script", "0.1:enable_torque,0.2:stand_up"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        try:
            wait_for(lambda: any(kp > 0 for _, kp, _ in list(node.lowcmd_log)[-50:]), 20.0, "torque frames (standing up)")
        except AssertionError:
            proc.kill()
            err = proc.communicate()[1]
            raise AssertionError(f"no torque frames in {len(node.lowcmd_log)} LowCmd_; the runner said: {err[-2500:]}") from None
        time.sleep(0.3)
        t_sig = time.monotonic()
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
        node.stop()
    assert proc.returncode == 0, err[-800:]
    after = [(t, kp, kd) for t, kp, kd in node.lowcmd_log if t > t_sig + 0.05]
    assert after, "no LowCmd_ after the signal"
    assert all(kp == 0 and kd > 0 for _, kp, kd in after), after[:3]  # damping only, to the very last frame
    # for the shutdown window (0.5 s; the best-effort reader of a loaded CI machine may miss frames, not the window)
    assert after[-1][0] - after[0][0] > 0.3 and len(after) >= 10
    assert signal.Signals(sig).name in err


def test_an_uncaught_thread_exception_damps_and_stops(profile):
    from jetson_stack import stack_on_sim_node
    from krabby.hal.robot.shutdown import ShutdownHooks

    with stack_on_sim_node(profile, live=True) as (stack, _):
        hooks = ShutdownHooks(stack.request_stop).install()
        try:
            assert stack.supervisor.enable_torque()[0] and stack.supervisor.stand_up()[0]
            assert stack.supervisor.mode == Mode.STANDING_UP

            def boom():
                raise RuntimeError("camera thread died")

            t = threading.Thread(target=boom, name="krabby-test-thread")
            t.start()
            t.join()
            assert stack.quit.wait(2.0)
            assert stack.supervisor.mode == Mode.DAMPING
            assert "RuntimeError in thread krabby-test-thread" in stack.supervisor.snapshot()["last_event"]
        finally:
            hooks.uninstall()
