"""krabby.hal.rotations, held against MuJoCo's own Euler convention and Isaac Lab's documented edge cases."""

from __future__ import annotations

import math

import mujoco
import numpy as np
import pytest

from krabby.hal.rotations import euler_xyz_from_quat_wxyz, unit_quat_wxyz, wrap_to_pi, yaw_from_quat_wxyz


def quat_from_euler_extrinsic_xyz(roll: float, pitch: float, yaw: float) -> np.ndarray:
    """MuJoCo's composition (upper case = extrinsic): R = Rz(yaw) Ry(pitch) Rx(roll), Isaac Lab's order."""
    q = np.zeros(4)
    mujoco.mju_euler2Quat(q, np.array([roll, pitch, yaw]), "XYZ")
    return q


def test_angles_rebuild_every_random_rotation_through_mujoco():
    rng = np.random.default_rng(7)
    for _ in range(500):
        q = rng.normal(size=4)
        q /= np.linalg.norm(q)
        roll, pitch, yaw = euler_xyz_from_quat_wxyz(q)
        assert -math.pi < roll <= math.pi and -math.pi / 2 <= pitch <= math.pi / 2 and -math.pi < yaw <= math.pi
        rebuilt = quat_from_euler_extrinsic_xyz(roll, pitch, yaw)
        assert abs(abs(rebuilt @ q) - 1.0) < 1e-12  # the same rotation (q and -q are one rotation)
        assert yaw_from_quat_wxyz(q) == yaw


def test_unnormalised_and_sign_flipped_quaternions_give_the_same_angles():
    q = quat_from_euler_extrinsic_xyz(0.3, -0.2, 2.5)
    assert euler_xyz_from_quat_wxyz(3.0 * q) == pytest.approx(euler_xyz_from_quat_wxyz(q), abs=1e-15)
    assert euler_xyz_from_quat_wxyz(-q) == pytest.approx(euler_xyz_from_quat_wxyz(q), abs=1e-15)


def test_isaac_lab_edge_cases():
    # wrap_to_pi keeps +pi and -pi where they are (Isaac Lab: zero after the mod and a positive input -> +pi)
    assert wrap_to_pi(math.pi) == math.pi and wrap_to_pi(-math.pi) == -math.pi
    assert wrap_to_pi(3 * math.pi) == math.pi and wrap_to_pi(3 * math.pi / 2) == pytest.approx(-math.pi / 2)
    # yaw of a half turn is +pi (atan2(0, -1) = pi, mod 2pi = pi, wrapped: +pi)
    assert yaw_from_quat_wxyz(np.array([0.0, 0.0, 0.0, 1.0])) == math.pi
    # pitch saturates at the gimbal lock instead of asin raising on 1 + 1 ulp
    s = math.sqrt(0.5)
    assert euler_xyz_from_quat_wxyz(np.array([s, 0.0, s, 0.0]))[1] == math.pi / 2
    assert euler_xyz_from_quat_wxyz(np.array([s, 0.0, -s, 0.0]))[1] == -math.pi / 2


@pytest.mark.parametrize("bad", [np.zeros(4), np.array([1.0, 0.0, np.nan, 0.0]), np.ones(3), np.full(4, np.inf)])
def test_a_quaternion_that_is_no_rotation_is_refused_by_name(bad):
    with pytest.raises(ValueError, match="imu_quat must be a finite non-zero"):
        unit_quat_wxyz(bad, "imu_quat")
