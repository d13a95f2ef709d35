"""FAKE ``pyzed.sl`` (Stereolabs' ZED SDK Python API, 5.4): enough of the module for ``PyZedSource``.

The real module cannot be installed here (it needs the ZED SDK and a CUDA GPU; the PyPI ``pyzed`` is
an unrelated package). What this stand-in keeps from pyzed 5.4 (stereolabs/zed-python-api,
src/pyzed/sl.pyx), so that a wrong call fails here as it would on the robot:

- ``ERROR_CODE`` is an ``enum.Enum`` ordered by value with ``<``/``<=``/``>``/``>=`` defined only between
  ERROR_CODEs (comparing with an int is a TypeError, as in pyzed); SDK 5's *warning* codes come before
  ``SUCCESS`` in the C enum (SENSOR_CONFIGURATION_CHANGED .. CAMERA_REBOOTING), errors after it.
- ``InitParameters`` has fixed attributes (a misspelt one raises AttributeError, as a cdef class does);
  ``Camera.open`` takes an ``InitParameters`` and returns an ``ERROR_CODE``; ``get_data`` takes a ``MEM``.
- Orientation ``get()`` is (ox, oy, oz, ow); angular velocity in deg/s; timestamps are ``Timestamp``s.

What it does not model: the SDK's depth computation, image content, USB and GPU behaviour.
"""

from __future__ import annotations

import enum
import types
from typing import Any

import numpy as np


class _Ordered(enum.Enum):
    def _cmp(self, other: Any, op: Any) -> Any:
        if isinstance(other, type(self)):
            return op(self.value, other.value)
        return NotImplemented

    def __lt__(self, other: Any) -> Any:
        return self._cmp(other, lambda a, b: a < b)

    def __le__(self, other: Any) -> Any:
        return self._cmp(other, lambda a, b: a <= b)

    def __gt__(self, other: Any) -> Any:
        return self._cmp(other, lambda a, b: a > b)

    def __ge__(self, other: Any) -> Any:
        return self._cmp(other, lambda a, b: a >= b)


class ERROR_CODE(_Ordered):  # noqa: N801 - pyzed's name
    SENSOR_CONFIGURATION_CHANGED = -6
    POTENTIAL_CALIBRATION_ISSUE = -5
    CONFIGURATION_FALLBACK = -4
    SENSORS_DATA_REQUIRED = -3
    CORRUPTED_FRAME = -2
    CAMERA_REBOOTING = -1
    SUCCESS = 0
    FAILURE = 1
    NO_GPU_COMPATIBLE = 2
    NOT_ENOUGH_GPU_MEMORY = 3
    CAMERA_NOT_DETECTED = 4
    LOW_USB_BANDWIDTH = 8


RESOLUTION = enum.Enum("RESOLUTION", "HD2K HD1080 HD1200 HD1536 HD720 SVGA VGA AUTO")
DEPTH_MODE = enum.Enum("DEPTH_MODE", "NONE PERFORMANCE QUALITY ULTRA NEURAL_LIGHT NEURAL NEURAL_PLUS")
UNIT = enum.Enum("UNIT", "MILLIMETER CENTIMETER METER INCH FOOT")
COORDINATE_SYSTEM = enum.Enum("COORDINATE_SYSTEM", "IMAGE LEFT_HANDED_Y_UP RIGHT_HANDED_Y_UP RIGHT_HANDED_Z_UP")
MEASURE = enum.Enum("MEASURE", "DISPARITY DEPTH CONFIDENCE XYZ")
TIME_REFERENCE = enum.Enum("TIME_REFERENCE", "IMAGE CURRENT")
MEM = enum.Enum("MEM", "CPU GPU BOTH")


class InitParameters:
    __slots__ = ("camera_resolution", "depth_mode", "camera_fps", "coordinate_units", "coordinate_system",
                 "depth_minimum_distance", "depth_maximum_distance", "serial_number")

    def __init__(self) -> None:
        self.camera_resolution, self.depth_mode, self.camera_fps = RESOLUTION.AUTO, DEPTH_MODE.NEURAL, 0
        self.coordinate_units, self.coordinate_system = UNIT.MILLIMETER, COORDINATE_SYSTEM.IMAGE
        self.depth_minimum_distance, self.depth_maximum_distance, self.serial_number = -1.0, -1.0, 0

    def set_from_serial_number(self, serial_number: int) -> None:
        self.serial_number = int(serial_number)


class RuntimeParameters:
    __slots__ = ()


class Timestamp:
    def __init__(self, ns: int) -> None:
        self._ns = int(ns)

    def get_nanoseconds(self) -> int:
        return self._ns


class Mat:
    def __init__(self) -> None:
        self._data = np.zeros((0, 0), np.float32)

    def get_data(self, memory_type: Any = MEM.CPU, deep_copy: bool = False) -> np.ndarray:
        if not isinstance(memory_type, MEM):
            raise TypeError("Argument is not of MEM type.")
        return self._data.copy() if deep_copy else self._data


class SensorsData:
    def get_imu_data(self) -> Any:
        orientation = types.SimpleNamespace(get=lambda: np.array([0.0, 0.0, 0.0, 1.0]))
        return types.SimpleNamespace(timestamp=Timestamp(1), get_pose=lambda: types.SimpleNamespace(get_orientation=lambda: orientation),
                                     get_angular_velocity=lambda: [0.0, 0.0, 0.0], get_linear_acceleration=lambda: [0.0, -9.81, 0.0])


class Camera:
    """``open`` answers ``open_result`` (set it before the source opens); VGA intrinsics of a ZED Mini."""

    open_result = ERROR_CODE.SUCCESS
    grab_result = ERROR_CODE.SUCCESS

    def __init__(self) -> None:
        self.init: InitParameters | None = None

    def open(self, py_init: InitParameters | None = None) -> ERROR_CODE:
        if py_init is not None and not isinstance(py_init, InitParameters):
            raise TypeError("Argument 'py_init' has incorrect type (expected pyzed.sl.InitParameters)")
        self.init = py_init
        return type(self).open_result

    def get_camera_information(self) -> Any:
        from fakes.fake_zed import ZED_MINI_VGA as k

        left = types.SimpleNamespace(fx=k.fx_px, fy=k.fy_px, cx=k.cx_px, cy=k.cy_px)
        conf = types.SimpleNamespace(calibration_parameters=types.SimpleNamespace(left_cam=left),
                                     resolution=types.SimpleNamespace(width=k.width_px, height=k.height_px))
        return types.SimpleNamespace(camera_configuration=conf)

    def grab(self, py_runtime: RuntimeParameters | None = None) -> ERROR_CODE:
        return type(self).grab_result

    def retrieve_measure(self, py_mat: Mat, measure: Any = MEASURE.DEPTH, mem_type: Any = MEM.CPU, resolution: Any = None) -> ERROR_CODE:
        py_mat._data = np.full((376, 672), 1.5, np.float32)
        return ERROR_CODE.SUCCESS

    def get_timestamp(self, time_reference: Any) -> Timestamp:
        return Timestamp(123)

    def get_sensors_data(self, py_sensor_data: SensorsData, time_reference: Any = TIME_REFERENCE.CURRENT) -> ERROR_CODE:
        return ERROR_CODE.SUCCESS

    def close(self) -> None:
        pass


def install(monkeypatch: Any) -> types.ModuleType:
    """Put this module in place of ``pyzed.sl`` for one test; returns it."""
    import sys

    me = sys.modules[__name__]
    pkg = types.ModuleType("pyzed")
    pkg.sl = me  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "pyzed", pkg)
    monkeypatch.setitem(sys.modules, "pyzed.sl", me)
    monkeypatch.setattr(Camera, "open_result", ERROR_CODE.SUCCESS)
    monkeypatch.setattr(Camera, "grab_result", ERROR_CODE.SUCCESS)
    return me
