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
    NOMINAL_FOCAL_PX, PYZED_INSTALL_HINT, PyZedSource, ZedError, ZedMini, ZedMiniConfig, camera_pitch_down_from_gravity_deg,
    deg_s_to_rad_s, nominal_fov_deg, zed_quat_xyzw_to_wxyz,
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
    reproject = DepthReprojector(ZED_MINI_VGA, rot, pos, cam, max_depth_m=20.0)
    out = reproject(planar)
    ref = flat_floor_distance(cam, BASE_HEIGHT_M + cam.mount_pos_base_m[2])
    assert out.shape == (cam.height_px, cam.width_px) and out.dtype == np.float32
    used = np.isfinite(ref) & (ref < cam.max_distance_m)  # what the policy sees (beyond 2 m everything reads 2 m)
    assert used.sum() > 3000
    covered = used & np.isfinite(out)
    # a real ZED Mini is narrower than the training camera: the edge pixels it cannot see are missing, no more
    uncovered = reproject.uncovered_fraction() * out.size
    assert used.sum() - covered.sum() <= uncovered
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


def run_zed(profile, cfg, src, seconds):
    """(driver, newest frame, stats) after running the ZED driver over ``src`` for ``seconds``."""
    zed = ZedMini(profile.camera, cfg, source=src)
    zed.connect()
    try:
        time.sleep(seconds)
        return zed, zed.latest_depth(), zed.stats()
    finally:
        zed.disconnect()


def test_zed_driver_with_a_fake_source(profile):
    cfg = ZedMiniConfig(mount_pos_base_m=(0.33, 0.0, 0.08), output_rate_hz=20.0, source_stride=2, max_depth_m=20.0)
    src = FakeZedSource(cfg.rotation_base_from_camera(), BASE_HEIGHT_M + 0.08, fps=100.0)
    zed, frame, st = run_zed(profile, cfg, src, 0.6)
    assert src.opened and src.closed
    assert frame is not None and frame.stamp_ns in src.stamps  # stamped with the camera's capture time
    assert st["capture_rate_hz"] > 50 and st["reprojected"] < st["frames"]  # output rate-limited below capture rate
    ref = flat_floor_distance(profile.camera, BASE_HEIGHT_M + 0.08)
    used = np.isfinite(ref) & (ref < 2.0)
    ok = used & np.isfinite(frame.distance_m)
    assert 0.005 < st["uncovered_fraction"] < 0.1  # measured and reported: the ZED Mini is narrower than training
    assert used.sum() - ok.sum() <= st["uncovered_fraction"] * ref.size
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


def test_zed_mini_modes_and_the_fake_match_stereolabs_published_field_of_view(profile):
    fov = {r: nominal_fov_deg(r) for r in NOMINAL_FOCAL_PX}
    assert fov["VGA"] == pytest.approx((87.7, 56.5), abs=0.1)
    assert max(fov, key=lambda r: fov[r][1]) == "VGA"  # the widest mode is the shipped one...
    assert fov["VGA"][1] < profile.camera.vfov_deg  # ...and still narrower than the training camera (58 deg)
    i = ZED_MINI_VGA
    fake = (2 * np.degrees(np.arctan(i.width_px / (2 * i.fx_px))), 2 * np.degrees(np.arctan(i.height_px / (2 * i.fy_px))))
    assert fake == pytest.approx(fov["VGA"], abs=0.3)


def test_too_close_is_near_not_free_and_invalid_pixels_are_counted(profile):
    cfg = ZedMiniConfig(mount_pos_base_m=(0.33, 0.0, 0.08), output_rate_hz=50.0, source_stride=1, min_depth_m=0.15)
    src = FakeZedSource(cfg.rotation_base_from_camera(), BASE_HEIGHT_M + 0.08, fps=100.0)
    src.depth[150:230, 250:420] = -np.inf  # an obstacle closer than the minimum depth, mid-image
    src.depth[:20, :] = np.nan  # occlusion
    _, frame, st = run_zed(profile, cfg, src, 0.4)
    n = src.depth.size
    assert st["too_close_fraction"] == pytest.approx(80 * 170 / n, rel=1e-6)
    assert st["invalid_fraction"] == pytest.approx(20 * 672 / n, rel=1e-6)  # NaN: no measurement
    centre = frame.distance_m[25:35, 48:58]
    assert np.all(np.isfinite(centre)) and np.all(centre < 0.3)  # near, as the training camera would see it
    assert 0 < st["holes_fraction"] < 1


def test_a_stalled_camera_goes_stale(profile):
    cfg = ZedMiniConfig(mount_pos_base_m=(0.33, 0.0, 0.08), output_rate_hz=50.0, max_frame_age_s=0.2)
    src = FakeZedSource(cfg.rotation_base_from_camera(), BASE_HEIGHT_M + 0.08, fps=100.0)
    zed = ZedMini(profile.camera, cfg, source=src)
    zed.connect()
    try:
        time.sleep(0.3)
        assert zed.depth_age_s() < 0.2
        src.stalled = True
        time.sleep(0.4)
        assert zed.depth_age_s() > 0.3 and zed.latest_depth() is not None  # the last frame is still there...
    finally:
        zed.disconnect()


def test_stale_depth_blocks_arming_and_leaves_policy(profile):
    from test_jetson_supervisor import FakeClock, make, policy_cmd, stand

    from krabby.hal.robot.supervisor import Mode

    clk = FakeClock()
    sup = make(profile, clk, depth_max_age_s=0.2)
    stand(sup, profile, clk)
    ok, msg = sup.arm_policy()
    assert not ok and "no depth frame yet" in msg
    sup.on_depth_age(0.05)
    assert sup.arm_policy()[0]
    sup.set_policy_command(policy_cmd(profile))
    assert sup.output().mode == Mode.POLICY
    sup.on_depth_age(0.5)  # the camera stalled
    assert sup.output().mode == Mode.STANDING_UP
    assert sup.counters["depth_stale_stops"] == 1 and "500 ms old" in sup.snapshot()["last_event"]


def test_the_robot_backend_stops_publishing_stale_depth(profile):
    pytest.importorskip("cyclonedds")
    from jetson_stack import loopback_deploy, stack_on_sim_node

    deploy = loopback_deploy()
    cfg = ZedMiniConfig.from_section(deploy.zed)
    src = FakeZedSource(cfg.rotation_base_from_camera(), BASE_HEIGHT_M + 0.08, fps=100.0)

    def with_fake_zed(stack):  # the ZED SDK is the boundary
        stack._make_camera = lambda: ZedMini(profile.camera, cfg, source=src)

    with stack_on_sim_node(profile, deploy, before_start=with_fake_zed, camera="zed") as (stack, _):
        assert stack.supervisor.config.depth_max_age_s == pytest.approx(0.2)
        time.sleep(0.4)
        assert stack.backend.read().depth is not None
        src.stalled = True
        time.sleep(0.5)
        assert stack.backend.read().depth is None  # the policy no longer gets the frozen frame
        assert stack.supervisor.snapshot()["depth_age_s"] > 0.2


def test_a_student_refuses_a_stale_depth_sample(profile):
    from conftest import FIXTURES, endpoints

    if not (FIXTURES / "exported_deploy").is_dir():
        pytest.skip(f"parkour fixtures not found at {FIXTURES}")
    import zmq

    from krabby.hal.backends.loopback_double import LoopbackTestDouble
    from krabby.hal.client import HalClientConfig
    from krabby.hal.protocol import Kind
    from krabby.hal.safety import SafetyConfig
    from krabby.hal.server import HalServer, HalServerConfig
    from krabby.parkour.inference import InferenceOptions, ModelWeights, ParkourInferenceClient

    ctx = zmq.Context()
    obs, cmd = endpoints("inproc")
    server = HalServer(LoopbackTestDouble(profile), HalServerConfig(obs, cmd, safety=SafetyConfig(arm_on_start=True)),
                       context=ctx).start()
    client = ParkourInferenceClient(HalClientConfig(obs, cmd), ModelWeights(str(FIXTURES / "exported_deploy")), 50.0,
                                    transport_context=ctx, options=InferenceOptions(max_obs_age_s=1.0, max_depth_age_s=0.05))
    client.initialize()
    try:
        server.tick()  # the double publishes a depth frame on its first read, then every fifth
        sample = client.hal.wait_new(Kind.STATE, 1.0)
        end = time.monotonic() + 1.0
        while client.hal.latest(Kind.DEPTH) is None and time.monotonic() < end:
            time.sleep(0.01)
        client.step(sample)  # fresh depth: used
        time.sleep(0.1)
        server.tick()  # a new state, no new depth frame: the held one is now 100 ms old
        sample = client.hal.wait_new(Kind.STATE, 1.0)
        with pytest.raises(RuntimeError, match="depth frame is [0-9]+ ms old"):
            client.step(sample)
    finally:
        client.stop()
        server.close()
        ctx.destroy(0)


@pytest.mark.parametrize("code, opens", [("SUCCESS", True), ("CONFIGURATION_FALLBACK", True),
                                         ("POTENTIAL_CALIBRATION_ISSUE", True), ("CAMERA_NOT_DETECTED", False),
                                         ("LOW_USB_BANDWIDTH", False)])
def test_sdk5_warnings_open_the_camera_errors_refuse(monkeypatch, caplog, code, opens):
    """PyZedSource against a pyzed 5.4 stand-in (ordered ERROR_CODE, strict InitParameters): SDK 5's warning
    codes sort before SUCCESS and leave the camera usable (logged); real errors refuse in one line."""
    from fakes import fake_pyzed_sl

    sl = fake_pyzed_sl.install(monkeypatch)
    monkeypatch.setattr(sl.Camera, "open_result", sl.ERROR_CODE[code])
    src = PyZedSource(ZedMiniConfig())
    if not opens:
        with pytest.raises(ZedError, match=f"cannot open the ZED Mini \\(ERROR_CODE.{code}\\)"):
            src.open()
        return
    with caplog.at_level("WARNING", logger="krabby.hal.devices.zed_mini"):
        src.open()
    assert src.intrinsics is not None and src.intrinsics.width_px == 672
    assert (f"SDK: ERROR_CODE.{code}" in caplog.text) == (code != "SUCCESS")
    stamp, depth = src.grab()
    assert depth.shape == (376, 672) and stamp == 123
    src.close()
