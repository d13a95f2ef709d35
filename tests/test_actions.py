"""ActionMapper against the spec's processing, delay and joint orders (spec §3)."""

from __future__ import annotations

import numpy as np
import pytest

from krabby.hal.robot_profile import load_robot_profile
from krabby.parkour.actions import ActionMapper

PROFILE = load_robot_profile("go2")
ISAAC_TO_MUJOCO = [1, 5, 9, 0, 4, 8, 3, 7, 11, 2, 6, 10]
DEFAULT_ISAAC = np.array([0.1, -0.1, 0.1, -0.1, 0.8, 0.8, 1.0, 1.0, -1.5, -1.5, -1.5, -1.5])
SDK_NAMES = ["FR_hip_joint", "FR_thigh_joint", "FR_calf_joint", "FL_hip_joint", "FL_thigh_joint", "FL_calf_joint",
             "RR_hip_joint", "RR_thigh_joint", "RR_calf_joint", "RL_hip_joint", "RL_thigh_joint", "RL_calf_joint"]


def expected_targets_sdk(a_isaac: np.ndarray) -> np.ndarray:
    """sdk[j] = isaac[isaac_to_mujoco[j]] of default + 0.25 * clip(a, -4.8, 4.8)."""
    isaac = DEFAULT_ISAAC + 0.25 * np.clip(a_isaac, -4.8, 4.8)
    return isaac[ISAAC_TO_MUJOCO]


def test_robot_order_is_the_sdk_order():
    assert list(PROFILE.joint_names) == SDK_NAMES


def test_teacher_no_delay_scale_offset_order():
    m = ActionMapper.for_kind(PROFILE, "teacher")
    assert m.delay_steps == 0
    a = np.zeros(12)
    a[5] = 1.0  # Isaac 5 = FR_thigh -> SDK index 1
    t = m.step(a)
    assert t.shape == (12,)
    assert t[1] == pytest.approx(0.8 + 0.25)
    assert t[0] == pytest.approx(-0.1) and t[2] == pytest.approx(-1.5)
    rng = np.random.default_rng(0)
    for _ in range(5):
        a = rng.normal(0.0, 3.0, 12)
        np.testing.assert_allclose(m.step(a), expected_targets_sdk(a), atol=1e-12)
        np.testing.assert_array_equal(m.last_raw_action, a)


def test_clip_applies_to_targets_but_not_to_last_raw_action():
    m = ActionMapper(PROFILE, delay_steps=0)
    a = np.array([10.0, -10.0] + [4.8] * 5 + [-5.0] * 5)
    t = m.step(a)
    isaac = DEFAULT_ISAAC + 0.25 * np.array([4.8, -4.8] + [4.8] * 5 + [-4.8] * 5)
    np.testing.assert_allclose(t, isaac[ISAAC_TO_MUJOCO], atol=1e-12)
    assert t[PROFILE.joint_index("FL_hip_joint")] == pytest.approx(0.1 + 1.2)
    assert t[PROFILE.joint_index("FR_hip_joint")] == pytest.approx(-0.1 - 1.2)
    np.testing.assert_array_equal(m.last_raw_action, a)  # unclipped
    np.testing.assert_allclose(m.applied_action_policy, np.clip(a, -4.8, 4.8))


def test_last_raw_action_is_a_read_only_snapshot():
    """The mapper hands its own array to the next build (no copy per step): read-only, and not the caller's."""
    m = ActionMapper(PROFILE, delay_steps=1)
    raw = np.linspace(-1.0, 1.0, 12)
    m.step(raw)
    raw[:] = 5.0  # the caller reuses its buffer
    np.testing.assert_array_equal(m.last_raw_action, np.linspace(-1.0, 1.0, 12))
    with pytest.raises(ValueError, match="read-only"):
        m.last_raw_action[0] = 1.0
    m.reset()
    with pytest.raises(ValueError, match="read-only"):
        m.last_raw_action[0] = 1.0


def test_student_one_step_delay_and_reset():
    m = ActionMapper.for_kind(PROFILE, "student")
    assert m.delay_steps == 1
    np.testing.assert_array_equal(m.last_raw_action, np.zeros(12))
    a0, a1, a2 = np.full(12, 0.4), np.linspace(-1, 1, 12), np.full(12, -2.0)
    np.testing.assert_allclose(m.step(a0), expected_targets_sdk(np.zeros(12)))  # step 0 applies the zero history
    np.testing.assert_array_equal(m.last_raw_action, a0)  # undelayed
    np.testing.assert_allclose(m.step(a1), expected_targets_sdk(a0))
    np.testing.assert_allclose(m.step(a2), expected_targets_sdk(a1))
    np.testing.assert_array_equal(m.last_raw_action, a2)
    m.reset()
    np.testing.assert_array_equal(m.last_raw_action, np.zeros(12))
    np.testing.assert_allclose(m.step(a1), expected_targets_sdk(np.zeros(12)))  # history zeroed by reset


def test_longer_delay_and_batch_of_one():
    m = ActionMapper(PROFILE, delay_steps=2)
    acts = [np.full(12, float(k)) for k in range(1, 5)]
    targets = [m.step(a[None, :]) for a in acts]
    np.testing.assert_allclose(targets[0], expected_targets_sdk(np.zeros(12)))
    np.testing.assert_allclose(targets[1], expected_targets_sdk(np.zeros(12)))
    np.testing.assert_allclose(targets[2], expected_targets_sdk(acts[0]))
    np.testing.assert_allclose(targets[3], expected_targets_sdk(acts[1]))


def test_invalid_actions_are_refused():
    m = ActionMapper.for_kind(PROFILE, "student")
    with pytest.raises(ValueError, match="shape"):
        m.step(np.zeros(11))
    bad = np.zeros(12)
    bad[3] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        m.step(bad)
    np.testing.assert_array_equal(m.last_raw_action, np.zeros(12))  # a refused action is not recorded
    with pytest.raises(ValueError):
        ActionMapper(PROFILE, delay_steps=-1)
    with pytest.raises(ValueError):
        ActionMapper.for_kind(PROFILE, "critic")
