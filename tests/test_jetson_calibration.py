"""Foot-contact calibration (krabby-calibrate feet) against the simulated node over DDS, the loud warning while the
placeholders are in use, and the LowState_ CRC opt-out for Unitree's Python simulator (unitree_mujoco)."""

from __future__ import annotations

import logging
import random
import threading
import time

import numpy as np
import pytest

from conftest import REPO
from krabby.hal.robot.calibrate import (
    GO2_MASS_KG, CalibrationError, calibrate_feet, foot_force_calibration, write_foot_calibration,
)


def test_calibration_math():
    k, off = foot_force_calibration([40, 42, 38, 40], [40 + 360, 42 + 370, 38 + 350, 40 + 390], mass_kg=15.0)
    assert off == pytest.approx(40.0)
    assert k == pytest.approx(15.0 * 9.81 / 1470)
    with pytest.raises(CalibrationError, match="hoisted first"):
        foot_force_calibration([40, 40, 40, 40], [400, 30, 400, 400], 15.0)


def test_calibrate_feet_against_the_simulated_node_and_write_the_profile(profile, tmp_path):
    pytest.importorskip("cyclonedds")
    from krabby.hal.deploy.profile import load_deployment
    from krabby.hal.devices import unitree_go_dds as dds
    from krabby.hal.robot.deploy_config import DeployConfig
    from krabby.hal.robot.sim_node import SimGo2Node, SimNodeConfig

    dom = random.randint(20, 99)
    # a sensor like a real Go2's: 2.5 counts per newton on top of 35 counts with no load
    node = SimGo2Node(profile, SimNodeConfig(domain_id=dom, physics="double", foot_force_counts_per_n=2.5,
                                             foot_force_offset_counts=35.0)).start()
    node.hoisted = True
    bus = dds.DdsBus(dom, dds.loopback_config_xml())
    poses = []

    def prompt(text):
        poses.append(text)
        node.hoisted = len(poses) == 1  # first prompt: hoisted; second: standing

    try:
        k, off = calibrate_feet(bus, GO2_MASS_KG, 0.5, prompt)
    finally:
        bus.close()
        node.stop()
    assert "Hoist" in poses[0] and "Stand" in poses[1]
    assert off == pytest.approx(35.0, abs=0.5) and k == pytest.approx(1 / 2.5, rel=0.01)  # the double stands on 15 kg
    toml = tmp_path / "mine.toml"
    toml.write_text((REPO / "config" / "deploy" / "go2_jetson.toml").read_text())
    write_foot_calibration(toml, k, off)
    d = DeployConfig.from_deployment(load_deployment(str(toml))).dds
    assert d.foot_force_n_per_count == pytest.approx(k, rel=1e-5) and d.foot_force_offset_counts == pytest.approx(off, rel=1e-5)
    assert "# CALIBRATE" in toml.read_text()  # comments kept


def test_uncalibrated_feet_warn_loudly_at_startup(profile, caplog):
    pytest.importorskip("cyclonedds")
    from jetson_stack import stack_on_sim_node

    with caplog.at_level(logging.WARNING, logger="krabby.hal.robot.runner"):
        with stack_on_sim_node(profile) as (stack, _):
            pass
    assert "FOOT CONTACT UNCALIBRATED" in caplog.text and "krabby-calibrate feet" in caplog.text
    assert any("UNCALIBRATED" in m for m in stack.messages)  # also on the dashboard


def test_lowstate_without_crc_is_dropped_unless_the_profile_opts_out(profile):
    pytest.importorskip("cyclonedds")
    from krabby.hal.devices import unitree_go_dds as dds
    from krabby.hal.devices.go2_lowlevel import Go2LowLevel, Go2LowLevelConfig
    from krabby.hal.devices.unitree_go_msgs import LowState

    dom = random.randint(20, 99)
    sim = dds.DdsBus(dom, dds.loopback_config_xml())
    w = sim.writer(dds.LOWSTATE_TOPIC, "LowState_")
    wire = LowState().encode(fill_crc=False)  # what unitree_mujoco's simulate_python publishes: crc = 0
    stop = threading.Event()

    def pump():
        while not stop.is_set():
            w.write(wire)
            time.sleep(0.005)

    threading.Thread(target=pump, daemon=True).start()
    try:
        results = {}
        for check in (True, False):
            ll = Go2LowLevel(profile, Go2LowLevelConfig(domain_id=dom, network_interface=None, check_lowstate_crc=check))
            ll.connect()
            try:
                results[check] = (ll.wait_for_state(1.5), dict(ll.counters))
            finally:
                ll.disconnect()
    finally:
        stop.set()
        time.sleep(0.02)
        sim.close()
    assert results[True][0] is False and results[True][1]["crc_errors"] > 0  # the robot setting: every frame dropped
    assert results[False][0] is True and results[False][1]["crc_errors"] == 0
    assert np.isfinite(results[False][1]["states"])
