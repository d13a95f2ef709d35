"""ZED Mini: planar depth -> training camera (analytic flat floor), IMU/unit conversions, the capture thread."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

from fakes.fake_zed import ZED_MINI_VGA, FakeZedSource, pitched_accel
from krabby.hal.devices.depth_reprojection import (
    DepthReprojector, flat_floor_distance, flat_floor_planar_depth, rotation_base_from_camera,
)
from krabby.hal.devices.zed_mini import (
    PYZED_INSTALL_HINT, PyZedSource, ZedError, ZedMini, ZedMiniConfig, camera_pitch_down_from_gravity_deg,
    deg_s_to_rad_s, zed_quat_xyzw_to_wxyz,
)

BASE_HEIGHT_M = 0.30  # base above the floor


def test_mount_rotation_matches_the_profile_camera(profile):
    np.testing.assert_allclose(rotation_base_from_camera(0, 20, 0), profile.camera.rotation_base_from_camera(), atol=1e-12)
    r = rotation_base_from_camera(3, 17, -2)
    np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-12)
    assert np.linalg.det(r) == pytest.approx(1.0)
    axis = profile.camera.rotation_base_from_camera() @ np.array([0, 0, 1.0])
    np.testing.assert_allclose(axis, [0.940, 0, -0.342], atol=1e-3)  # spec §2: 20 deg below base +x


@pytest.mark.parametrize("pos,pitch", [((0.33, 0.0, 0.08), 20.0), ((0.33, 0.0315, 0.08), 20.0), ((0.30, -0.03, 0.10), 24.0)])
def test_flat_floor_reprojection_matches_analytic_distance(profile, pos, pitch):
    cam = profile.camera
    rot = rotation_base_from_camera(0.0, pitch, 0.0)
    planar = flat_floor_planar_depth(ZED_MINI_VGA, rot, BASE_HEIGHT_M + pos[2])
    out = DepthReprojector(ZED_MINI_VGA, rot, pos, cam, max_depth_m=20.0)(planar)
    ref = flat_floor_distance(cam, BASE_HEIGHT_M + cam.mount_pos_base_m[2])
    assert out.shape == (cam.height_px, cam.width_px) and out.dtype == np.float32
    used = np.isfinite(ref) & (ref < cam.max_distance_m)  # what the policy sees (beyond 2 m everything reads 2 m)
    assert used.sum() > 3000
    covered = used & np.isfinite(out)
    assert covered.sum() >= 0.98 * used.sum()  # a few edge pixels fall outside the ZED's field of view
    rel = np.abs(out[covered] - ref[covered]) / ref[covered]
    assert rel.max() < 0.01, f"max relative error {rel.max():.4f}"
    assert np.all(~np.isfinite(out[~np.isfinite(ref)]) | (out[~np.isfinite(ref)] > 10))  # sky stays far


def test_reprojection_is_euclidean_not_planar(profile):
    cam = profile.camera
    rot = cam.rotation_base_from_camera()
    planar = flat_floor_planar_depth(ZED_MINI_VGA, rot, 0.38)
    out = DepthReprojector(ZED_MINI_VGA, rot, cam.mount_pos_base_m, cam)(planar)
    dirs = cam.ray_directions_camera()
    row, col = 55, 5  # off-axis pixel: distance = planar z / cos(angle to the axis)
    planar_z_target = out[row, col] * dirs[row, col, 2]
    assert out[row, col] > planar_z_target * 1.1


def test_invalid_source_depth_reads_as_a_miss(profile):
    cam = profile.camera
    rot = cam.rotation_base_from_camera()
    planar = flat_floor_planar_depth(ZED_MINI_VGA, rot, 0.38)
    planar[:, :] = np.nan
    out = DepthReprojector(ZED_MINI_VGA, rot, cam.mount_pos_base_m, cam)(planar)
    assert np.all(np.isinf(out))
    with pytest.raises(ValueError):
        DepthReprojector(ZED_MINI_VGA, rot, cam.mount_pos_base_m, cam)(planar[:10])


def test_imu_and_unit_conversions():
    np.testing.assert_allclose(zed_quat_xyzw_to_wxyz([0.1, 0.2, 0.3, 0.9]), [0.9, 0.1, 0.2, 0.3])
    np.testing.assert_allclose(deg_s_to_rad_s([180.0, -90.0, 0.0]), [math.pi, -math.pi / 2, 0.0])
    for p in (0.0, 20.0, 35.0):
        assert camera_pitch_down_from_gravity_deg(np.array(pitched_accel(p))) == pytest.approx(p, abs=1e-9)
    rot = rotation_base_from_camera(0, 20, 0)
    src = FakeZedSource(rot, 0.38, accel_m_s2=pitched_accel(20.0), gyro_deg_s=(0.0, 0.0, 57.29577951308232))
    s = src.imu()
    gyro_b, acc_b = s.to_base(rot)
    np.testing.assert_allclose(acc_b, [0, 0, 9.81], atol=1e-9)  # at rest: +g up in the base frame
    assert np.linalg.norm(gyro_b) == pytest.approx(1.0)  # 57.3 deg/s = 1 rad/s about the optical axis
    np.testing.assert_allclose(gyro_b, rot @ np.array([0, 0, 1.0]))


def test_zed_driver_with_a_fake_source(profile):
    cfg = ZedMiniConfig(mount_pos_base_m=(0.33, 0.0, 0.08), output_rate_hz=20.0, source_stride=2, max_depth_m=20.0)
    src = FakeZedSource(cfg.rotation_base_from_camera(), BASE_HEIGHT_M + 0.08, fps=100.0)
    zed = ZedMini(profile.camera, cfg, source=src)
    zed.connect()
    try:
        time.sleep(0.6)
        frame = zed.latest_depth()
        st = zed.stats()
    finally:
        zed.disconnect()
    assert src.opened and src.closed
    assert frame is not None and frame.stamp_ns in src.stamps  # stamped with the camera's capture time
    assert st["capture_rate_hz"] > 50 and st["reprojected"] < st["frames"]  # output rate-limited below capture rate
    ref = flat_floor_distance(profile.camera, BASE_HEIGHT_M + 0.08)
    used = np.isfinite(ref) & (ref < 2.0)
    ok = used & np.isfinite(frame.distance_m)
    assert ok.sum() > 0.98 * used.sum()
    assert np.max(np.abs(frame.distance_m[ok] - ref[ok]) / ref[ok]) < 0.02  # VGA/2 source still within 2 %
    imu = zed.latest_imu()
    assert imu is not None and imu.quat_wxyz[0] == 1.0


def test_missing_sdk_says_what_to_install():
    try:
        import pyzed.sl  # noqa: F401
        pytest.skip("the real ZED SDK is installed here")
    except ImportError:
        pass
    with pytest.raises(ZedError) as e:
        PyZedSource(ZedMiniConfig()).open()
    assert "ZED SDK" in str(e.value) and "unrelated" in str(e.value)
    assert e.value.args[0] == PYZED_INSTALL_HINT
