"""ZED Mini driver: depth at VGA (up to 100 FPS) + IMU, reprojected into the training camera model.

``ZedMini`` runs a capture thread over a *frame source*: ``PyZedSource`` (Stereolabs' ``pyzed.sl``,
imported lazily) on the robot, or a fake in tests (``tests/fakes/fake_zed.py``). Each grabbed frame
keeps its camera timestamp (``TIME_REFERENCE.IMAGE``, epoch ns = the wire clock). The newest frame is
reprojected (``depth_reprojection.DepthReprojector``: ZED intrinsics of the left lens + the mount
from the deployment TOML -> 106x60 Euclidean distance, 87x58 deg, 20 deg down) at most
``output_rate_hz`` times per second; ``latest_depth()`` returns it as a ``DepthFrame`` stamped with
the capture time of the source image, so observation age and latency stay honest.

Depth you can trust: a frame older than ``max_frame_age_s`` is stale (the backend stops publishing it and
the supervisor leaves POLICY); "too close" pixels (the SDK's -inf, closer than ``min_depth_m``) become
``min_depth_m`` instead of a miss, since a miss reads as 2 m of free space; the fraction of invalid
pixels per frame is reported. Field of view: no ZED Mini mode covers the training camera's 87 x 58 deg
(Stereolabs' published focal lengths, ``NOMINAL_FOCAL_PX``: VGA, the widest, is ~87.7 x 56.5 deg), so
``connect()`` measures how much of the training image can never have data and reports it.

IMU: the SDK gives the orientation as (x, y, z, w) and the gyro in deg/s; ``ImuSample`` holds
(w, x, y, z) and rad/s (``zed_quat_xyzw_to_wxyz``, ``deg_s_to_rad_s``), in the camera's IMAGE frame
(x right, y down, z forward); ``to_base`` rotates the vectors with the mount rotation. The Go2's own
IMU feeds the policy; the ZED's is for checking the mount (``camera_pitch_down_from_gravity_deg``).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Optional, Tuple

import numpy as np

from .. import clock
from ..robot_profile import CameraSpec
from ..types import DepthFrame
from .depth_reprojection import DepthReprojector, PinholeIntrinsics, rotation_base_from_camera

log = logging.getLogger("krabby.hal.devices.zed_mini")

PYZED_INSTALL_HINT = (
    "pyzed is not installed: install the ZED SDK for your JetPack from Stereolabs, then its Python API with "
    "`python3 /usr/local/zed/get_python_api.py` (PyPI's `pyzed` is an unrelated package, do not pip install it)"
)


#: Stereolabs' published nominal focal length per resolution (ZED and ZED Mini: support article "What is the camera
#: focal length and field of view?"), in pixels, with the image size. A factory calibration of a ZED Mini's left lens
#: at VGA reads fx = fy = 350.5 px (tests/fakes/fake_zed.py); the real values come from the SDK at runtime.
NOMINAL_FOCAL_PX = {"HD2K": (2208, 1242, 1400.0), "HD1080": (1920, 1080, 1400.0), "HD720": (1280, 720, 700.0),
                    "VGA": (672, 376, 350.0)}


def nominal_fov_deg(resolution: str) -> Tuple[float, float]:
    """(horizontal, vertical) field of view of a ZED Mini resolution from the published focal length."""
    w, h, f = NOMINAL_FOCAL_PX[resolution]
    return 2.0 * math.degrees(math.atan(w / (2.0 * f))), 2.0 * math.degrees(math.atan(h / (2.0 * f)))


class ZedError(RuntimeError):
    """The ZED Mini cannot be used (SDK missing, camera not found, grab failures); the message says why."""


@dataclass
class ZedMiniConfig:
    serial_number: int = 0
    resolution: str = "VGA"
    fps: int = 100
    depth_mode: str = "PERFORMANCE"
    min_depth_m: float = 0.15
    max_depth_m: float = 3.0
    mount_pos_base_m: Tuple[float, float, float] = (0.33, 0.0315, 0.08)
    mount_roll_deg: float = 0.0
    mount_pitch_down_deg: float = 20.0
    mount_yaw_deg: float = 0.0
    output_rate_hz: float = 50.0
    source_stride: int = 2
    grab_timeout_s: float = 1.0  # no frame for this long: reported in stats and the log
    max_frame_age_s: float = 0.2  # older depth is stale: not published, and the supervisor leaves POLICY

    @classmethod
    def from_section(cls, sec: Any) -> "ZedMiniConfig":
        return cls(serial_number=sec.serial_number, resolution=sec.resolution, fps=sec.fps, depth_mode=sec.depth_mode,
                   min_depth_m=sec.min_depth_m, max_depth_m=sec.max_depth_m, mount_pos_base_m=tuple(sec.mount_pos_base_m),
                   mount_roll_deg=sec.mount_roll_deg, mount_pitch_down_deg=sec.mount_pitch_down_deg,
                   mount_yaw_deg=sec.mount_yaw_deg, output_rate_hz=sec.output_rate_hz, source_stride=sec.source_stride,
                   max_frame_age_s=sec.max_frame_age_s)

    def rotation_base_from_camera(self) -> np.ndarray:
        return rotation_base_from_camera(self.mount_roll_deg, self.mount_pitch_down_deg, self.mount_yaw_deg)


@dataclass
class ImuSample:
    stamp_ns: int
    quat_wxyz: np.ndarray  # orientation as the ZED reports it, reordered to (w, x, y, z)
    ang_vel_cam_rad_s: np.ndarray  # camera IMAGE frame
    lin_acc_cam_m_s2: np.ndarray  # camera IMAGE frame, includes gravity (reads +9.81 "up" at rest)

    def to_base(self, rot_base_from_cam: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """(angular velocity, linear acceleration) rotated into the base frame."""
        return rot_base_from_cam @ self.ang_vel_cam_rad_s, rot_base_from_cam @ self.lin_acc_cam_m_s2


def zed_quat_xyzw_to_wxyz(q_xyzw: Any) -> np.ndarray:
    """pyzed's ``Orientation.get()`` is (ox, oy, oz, ow); Krabby's quaternions are (w, x, y, z)."""
    x, y, z, w = (float(v) for v in q_xyzw)
    return np.array([w, x, y, z])


def deg_s_to_rad_s(v: Any) -> np.ndarray:
    """The ZED IMU's angular velocity is in degrees per second."""
    return np.asarray(v, dtype=np.float64) * (math.pi / 180.0)


def camera_pitch_down_from_gravity_deg(lin_acc_cam_m_s2: np.ndarray) -> float:
    """Camera tilt below horizontal from an accelerometer at rest (IMAGE frame: +y down, +z forward).

    At rest the accelerometer reads the reaction to gravity, pointing up = -y in a level camera; a
    camera pitched down by p reads (0, -g cos p, -g sin p).
    """
    a = np.asarray(lin_acc_cam_m_s2, dtype=np.float64)
    return math.degrees(math.atan2(-a[2], -a[1]))


# ------------------------------------------------------------------------------- frame sources
class PyZedSource:
    """The real ZED Mini through pyzed.sl (ZED SDK 4.x/5.x; 3.x attribute names handled)."""

    def __init__(self, config: ZedMiniConfig):
        self.config = config
        self.intrinsics: Optional[PinholeIntrinsics] = None
        self._sl: Any = None
        self._zed: Any = None
        self._mat: Any = None
        self._runtime: Any = None
        self._sensors: Any = None

    def open(self) -> None:
        try:
            import pyzed.sl as sl
        except ImportError:
            raise ZedError(PYZED_INSTALL_HINT) from None
        cfg = self.config
        init = sl.InitParameters()
        try:
            init.camera_resolution = getattr(sl.RESOLUTION, cfg.resolution)
            init.depth_mode = getattr(sl.DEPTH_MODE, cfg.depth_mode)
        except AttributeError as e:
            raise ZedError(f"unknown ZED setting: {e}") from None
        init.camera_fps = int(cfg.fps)
        init.coordinate_units = sl.UNIT.METER
        init.coordinate_system = sl.COORDINATE_SYSTEM.IMAGE  # x right, y down, z forward
        init.depth_minimum_distance = float(cfg.min_depth_m)
        init.depth_maximum_distance = float(cfg.max_depth_m)
        if cfg.serial_number:
            init.set_from_serial_number(int(cfg.serial_number))
        zed = sl.Camera()
        err = zed.open(init)
        # ZED SDK 5 orders its warning codes (CONFIGURATION_FALLBACK, POTENTIAL_CALIBRATION_ISSUE, ...)
        # before SUCCESS: the camera is open and usable, as Stereolabs' own samples treat it
        if not err <= sl.ERROR_CODE.SUCCESS:
            raise ZedError(f"cannot open the ZED Mini ({err}): is it plugged in (USB 3) and is the ZED SDK working (ZED_Explorer)?")
        if err != sl.ERROR_CODE.SUCCESS:
            log.warning("ZED Mini opened with a warning from the SDK: %s", err)
        info = zed.get_camera_information()
        conf = getattr(info, "camera_configuration", info)
        calib = conf.calibration_parameters.left_cam
        res = getattr(conf, "resolution", None) or getattr(info, "camera_resolution")
        self.intrinsics = PinholeIntrinsics(int(res.width), int(res.height), float(calib.fx), float(calib.fy),
                                            float(calib.cx), float(calib.cy))
        self._sl, self._zed = sl, zed
        self._mat = sl.Mat()
        self._runtime = sl.RuntimeParameters()
        self._sensors = sl.SensorsData()
        log.info("ZED Mini open: %dx%d @ %d FPS, fx %.1f fy %.1f", res.width, res.height, cfg.fps, calib.fx, calib.fy)

    def grab(self) -> Optional[Tuple[int, np.ndarray]]:
        sl, zed = self._sl, self._zed
        if zed.grab(self._runtime) != sl.ERROR_CODE.SUCCESS:
            return None
        zed.retrieve_measure(self._mat, sl.MEASURE.DEPTH)
        stamp = int(zed.get_timestamp(sl.TIME_REFERENCE.IMAGE).get_nanoseconds())
        return stamp, np.array(self._mat.get_data(), dtype=np.float32, copy=True)

    def imu(self) -> Optional[ImuSample]:
        sl, zed = self._sl, self._zed
        if zed.get_sensors_data(self._sensors, sl.TIME_REFERENCE.CURRENT) != sl.ERROR_CODE.SUCCESS:
            return None
        imu = self._sensors.get_imu_data()
        return ImuSample(
            stamp_ns=int(imu.timestamp.get_nanoseconds()),
            quat_wxyz=zed_quat_xyzw_to_wxyz(imu.get_pose().get_orientation().get()),
            ang_vel_cam_rad_s=deg_s_to_rad_s(imu.get_angular_velocity()),
            lin_acc_cam_m_s2=np.asarray(imu.get_linear_acceleration(), dtype=np.float64),
        )

    def close(self) -> None:
        if self._zed is not None:
            self._zed.close()
            self._zed = None


# ------------------------------------------------------------------------------------- driver
class ZedMini:
    """Depth camera device: ``connect()``, ``latest_depth()``, ``latest_imu()``, ``stats()``, ``disconnect()``."""

    def __init__(self, camera: CameraSpec, config: Optional[ZedMiniConfig] = None, source: Any = None):
        self.camera = camera
        self.config = config or ZedMiniConfig()
        self.source = source
        self.reprojector: Optional[DepthReprojector] = None
        self._depth: Optional[DepthFrame] = None
        self._imu: Optional[ImuSample] = None
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._grabs: deque = deque(maxlen=200)
        self._reproject_ms: deque = deque(maxlen=200)
        self._last_source_stamp = 0
        self.counters = {"frames": 0, "reprojected": 0, "grab_failures": 0, "errors": 0}
        self.uncovered_fraction = float("nan")  # of the training image, outside the ZED's view (never any data)
        self.last_quality = {"invalid_fraction": float("nan"), "too_close_fraction": float("nan"), "holes_fraction": float("nan")}

    def connect(self) -> None:
        if self.source is None:
            self.source = PyZedSource(self.config)
        self.source.open()
        s = max(1, int(self.config.source_stride))
        intr = self.source.intrinsics.scaled(s) if s > 1 else self.source.intrinsics
        self.reprojector = DepthReprojector(intr, self.config.rotation_base_from_camera(), self.config.mount_pos_base_m,
                                            self.camera, min_depth_m=self.config.min_depth_m, max_depth_m=self.config.max_depth_m)
        self.uncovered_fraction = self.reprojector.uncovered_fraction()
        if self.uncovered_fraction > 0.005:
            log.warning("ZED Mini (%s, fx %.1f px): %.1f %% of the training camera's image is outside its view and "
                        "always reads 2 m (free)", self.config.resolution, intr.fx_px * s, 100 * self.uncovered_fraction)
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="krabby-zed", daemon=True)
        self._thread.start()

    def disconnect(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
            self._thread = None
        if self.source is not None:
            self.source.close()

    def _loop(self) -> None:
        s = max(1, int(self.config.source_stride))
        min_period = 1.0 / self.config.output_rate_hz if self.config.output_rate_hz > 0 else 0.0
        last_out = 0.0
        last_ok = time.monotonic()
        while not self._stop.is_set():
            try:
                got = self.source.grab()
                imu = self.source.imu()
                if imu is not None:
                    self._imu = imu
                if got is None:
                    self.counters["grab_failures"] += 1
                    if time.monotonic() - last_ok > self.config.grab_timeout_s:
                        log.warning("ZED Mini: no frame for %.1f s", time.monotonic() - last_ok)
                        last_ok = time.monotonic()
                    continue
                last_ok = time.monotonic()
                stamp, depth = got
                self.counters["frames"] += 1
                self._grabs.append(time.monotonic())
                if time.monotonic() - last_out < min_period:
                    continue
                t0 = time.perf_counter()
                src = self.clean_depth(depth[::s, ::s] if s > 1 else depth)
                dist = self.reprojector(src)
                self.last_quality["holes_fraction"] = float(np.mean(~np.isfinite(dist)))
                self._reproject_ms.append((time.perf_counter() - t0) * 1e3)
                self._depth = DepthFrame(stamp, dist)
                self._last_source_stamp = stamp
                self.counters["reprojected"] += 1
                last_out = time.monotonic()
            except Exception:
                self.counters["errors"] += 1
                if self.counters["errors"] <= 3:
                    log.exception("ZED capture failed")
                time.sleep(0.01)

    def clean_depth(self, planar_m: np.ndarray) -> np.ndarray:
        """Too close (-inf) -> ``min_depth_m``, the nearest value the camera can vouch for; count the pixels with no
        measurement (NaN: occlusion, low confidence). +inf ("too far") is a valid reading of free space."""
        too_close = np.isneginf(planar_m)
        self.last_quality["too_close_fraction"] = float(np.mean(too_close))
        self.last_quality["invalid_fraction"] = float(np.mean(np.isnan(planar_m)))
        return np.where(too_close, np.float32(self.config.min_depth_m), planar_m)

    def latest_depth(self) -> Optional[DepthFrame]:
        return self._depth

    def depth_age_s(self) -> Optional[float]:
        """Age of the newest depth frame (capture time), None before the first one."""
        d = self._depth
        return (clock.now_ns() - d.stamp_ns) * 1e-9 if d is not None else None

    def latest_imu(self) -> Optional[ImuSample]:
        return self._imu

    def stats(self) -> dict:
        g = list(self._grabs)
        rate = (len(g) - 1) / (g[-1] - g[0]) if len(g) > 2 and g[-1] > g[0] else 0.0
        d = self._depth
        return {
            "capture_rate_hz": rate,
            "reproject_ms_p50": float(np.percentile(self._reproject_ms, 50)) if self._reproject_ms else float("nan"),
            "frame_age_ms": (clock.now_ns() - d.stamp_ns) * 1e-6 if d is not None else None,
            "max_frame_age_ms": self.config.max_frame_age_s * 1e3,
            "uncovered_fraction": self.uncovered_fraction,
            **self.last_quality,
            **self.counters,
        }


__all__ = ["ZedMini", "ZedMiniConfig", "PyZedSource", "ImuSample", "ZedError", "zed_quat_xyzw_to_wxyz", "deg_s_to_rad_s",
           "camera_pitch_down_from_gravity_deg", "PYZED_INSTALL_HINT", "NOMINAL_FOCAL_PX", "nominal_fov_deg"]
