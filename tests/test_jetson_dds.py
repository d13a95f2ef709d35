"""Go2 low-level over real DDS on loopback: the 500 Hz writer and the simulated node; 0.10.2 <-> 11 interop.

The interop test runs each side in its own bare cyclonedds environment, provisioned by
``jetson/dds_envs.py`` under .dds-envs/ (created on first use; set KRABBY_DDS_ENVS=off to skip).
The 0.10.2 side is a faithful stand-in for the robot only when Debian's libddsc 0.10.2 is installed
(``python jetson/dds_envs.py --apt``); the test reports which one it ran against.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PEER = REPO / "tests" / "jetson_dds_peer.py"

pytest.importorskip("cyclonedds", reason="cyclonedds not installed (pip install cyclonedds==11.0.1)")

from krabby.hal.devices.go2_lowlevel import Go2LowLevel, Go2LowLevelConfig  # noqa: E402
from krabby.hal.devices.unitree_go_msgs import LowCmd  # noqa: E402
from krabby.hal.robot.sim_node import SimGo2Node, SimNodeConfig  # noqa: E402
from krabby.hal.robot.supervisor import MotorCommand, Mode  # noqa: E402


def _domain() -> int:
    return random.randint(20, 99)


def test_writer_and_simulated_node_over_dds(profile):
    dom = _domain()
    node = SimGo2Node(profile, SimNodeConfig(domain_id=dom, physics="double")).start()
    ll = Go2LowLevel(profile, Go2LowLevelConfig(domain_id=dom, network_interface=None))
    target = profile.default_pos_rad + 0.1
    n = profile.num_joints
    ll.set_command_source(lambda: MotorCommand(target, profile.kp_nm_per_rad, profile.kd_nm_s_per_rad, False, Mode.POLICY))
    ll.connect()
    try:
        assert ll.wait_for_state(5.0), "no LowState_ from the simulated node"
        time.sleep(1.0)
        st = ll.stats()
        fb = ll.latest()
        with node._lock:
            cmd = node._cmd
    finally:
        ll.disconnect()
        node.stop()
    assert st["crc_errors"] == 0 and node.counters["lowcmd_crc_errors"] == 0
    assert st["write_rate_hz"] > 400 and st["state_rate_hz"] > 150, st
    assert node.counters["lowcmd"] > 300
    assert isinstance(cmd, LowCmd)
    # joint order through the profile: slot of FL_calf carries FL_calf's target
    j = profile.joint_index("FL_calf_joint")
    assert cmd.motor_cmd[int(ll.slot_of_joint[j])].q == pytest.approx(target[j], abs=1e-6)
    assert fb.joint_pos_rad.shape == (n,) and fb.motor_temp_c[0] == pytest.approx(35.0)


# ------------------------------------------------------------------------------------- interop
def _envs() -> dict:
    if os.environ.get("KRABBY_DDS_ENVS", "").lower() in ("off", "0", "no"):
        pytest.skip("KRABBY_DDS_ENVS=off")
    sys.path.insert(0, str(REPO / "jetson"))
    try:
        import dds_envs
    finally:
        sys.path.pop(0)
    try:
        envs = dds_envs.ensure(create=True)
    except Exception as e:  # no network, no Python 3.10, build failure...
        pytest.skip(f"could not provision the cyclonedds environments: {e}")
    if envs["old"] is None or envs["new"] is None:
        pytest.skip(f"cyclonedds environments unavailable (old={envs['old']}, new={envs['new']}); "
                    "run `python jetson/dds_envs.py --apt` (needs Python 3.10 for cyclonedds 0.10.x)")
    return envs


def _pair(robot_py: str, runner_py: str, *, robot_args=(), runner_args=(), seconds: float = 6.0):
    dom = _domain()
    base = [str(PEER), "--domain", str(dom)]
    robot = subprocess.Popen([robot_py, *base, "--role", "robot", "--seconds", str(seconds), *robot_args],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(0.3)
    runner = subprocess.Popen([runner_py, *base, "--role", "runner", "--seconds", str(seconds - 1.5), *runner_args],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    r_out, r_err = robot.communicate(timeout=seconds + 20)
    n_out, n_err = runner.communicate(timeout=seconds + 20)

    def last_json(out):
        lines = [l for l in out.splitlines() if l.startswith("{")]
        return json.loads(lines[-1]) if lines else None

    return (robot.returncode, last_json(r_out), r_err), (runner.returncode, last_json(n_out), n_err)


@pytest.mark.slow
def test_cyclonedds_0_10_robot_and_11_runner_interoperate():
    envs = _envs()
    old, new = envs["old"]["python"], envs["new"]["python"]
    # the robot's side (0.10.2, the SDK's IdlStruct path) against Krabby's runner side (11.0.1, type-info override)
    (rc_r, robot, err_r), (rc_n, runner, _) = _pair(old, new, robot_args=["--public-api"])
    assert rc_r == 0, f"the 0.10.2 robot stand-in died (rc {rc_r}): {err_r[-500:]}"
    assert rc_n == 0 and robot and runner
    assert robot["echoed"] >= 300 and robot["crc_errors"] == 0 and runner["crc_errors"] == 0
    # and the other way round: Krabby's simulated node on 11.0.1, a runner built against 0.10.x (e.g. on the Jetson)
    (rc_r, robot, _), (rc_n, runner, err_n) = _pair(new, old)
    assert rc_r == 0 and rc_n == 0, err_n[-500:]
    assert robot["echoed"] >= 300 and runner["received"] >= 300


@pytest.mark.slow
def test_without_the_typeinfo_override_the_0_10_side_breaks():
    """The trap itself (feasibility §5): an unpatched cyclonedds 11 participant crashes (or never talks to) 0.10.2."""
    envs = _envs()
    if not envs["old"].get("faithful_robot_stand_in"):
        pytest.skip("the 0.10.2 environment uses the PyPI wheel's bundled C library, not Debian's 0.10.2 "
                    "(run `python jetson/dds_envs.py --apt` for a faithful robot stand-in)")
    (rc_r, robot, _), _ = _pair(envs["old"]["python"], envs["new"]["python"], robot_args=["--public-api"],
                                runner_args=["--native-typeinfo"], seconds=5.0)
    assert rc_r != 0 or (robot is not None and robot["echoed"] == 0)
