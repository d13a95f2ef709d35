"""Planar depth from a real camera -> the training camera model (pure numpy, no SDK).

The policy was trained on a ray-cast camera (spec §2): 106x60 pixels, 87 x 58 deg, 20 deg below the
base's +x axis at (0.33, 0, 0.08) m, giving the **Euclidean distance** along each ray through a
pixel centre. A ZED Mini gives **planar** depth (Z along its optical axis) at its own resolution,
intrinsics and mount. ``DepthReprojector`` produces, for every training pixel, the distance from the
training camera's centre to the surface seen along that pixel's ray:

1. Each training ray is o_t + d r_t in the base frame (``CameraSpec.ray_directions_camera`` rotated
   by ``rotation_base_from_camera``; o_t = the training mount position).
2. Fixed-point iteration on d (``iterations`` times, from ``initial_distance_m``): project the point
   at distance d into the source camera (its intrinsics, its mount), take the source depth at the
   nearest source pixel (no interpolation: no "flying pixels" across depth edges), lift that pixel
   to the 3-D surface point Q, set d = (Q - o_t) . r_t. With the source at the training camera's
   position this is exact after one step; a few centimetres of offset converge in 2-3 steps.
3. Output |Q - o_t|; +inf where the source has no valid depth (NaN, occlusion, beyond range) or the
   ray leaves the source image. The observation builder turns +inf into max_distance (2 m), exactly
   as training's ray caster reported a miss.

Frames: camera frames are x right, y down, z forward (ZED's COORDINATE_SYSTEM.IMAGE, and the
profile's CameraSpec convention); the base frame is x forward, y left, z up.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..robot_profile import CameraSpec


@dataclass(frozen=True)
class PinholeIntrinsics:
    """OpenCV-style intrinsics: integer pixel coordinates are pixel centres (ZED calibration convention)."""

    width_px: int
    height_px: int
    fx_px: float
    fy_px: float
    cx_px: float
    cy_px: float

    def scaled(self, stride: int) -> "PinholeIntrinsics":
        """Intrinsics of ``image[::stride, ::stride]``."""
        s = float(stride)
        return PinholeIntrinsics((self.width_px + stride - 1) // stride, (self.height_px + stride - 1) // stride,
                                 self.fx_px / s, self.fy_px / s, self.cx_px / s, self.cy_px / s)


def rotation_base_from_camera(roll_deg: float = 0.0, pitch_down_deg: float = 0.0, yaw_deg: float = 0.0) -> np.ndarray:
    """3x3 rotation taking camera vectors (x right, y down, z forward) into the base frame.

    Zero angles: the optical axis along base +x, image right = base -y, image down = base -z. Then
    roll about the optical axis (positive: image turns clockwise as seen from behind), pitch the
    axis down by ``pitch_down_deg`` (about base +y), yaw it left by ``yaw_deg`` (about base +z).
    Equals ``CameraSpec.rotation_base_from_camera()`` for roll = yaw = 0.
    """
    level = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])  # columns: right, down, forward
    p, y, r = (math.radians(v) for v in (pitch_down_deg, yaw_deg, roll_deg))
    ry = np.array([[math.cos(p), 0.0, math.sin(p)], [0.0, 1.0, 0.0], [-math.sin(p), 0.0, math.cos(p)]])
    rz = np.array([[math.cos(y), -math.sin(y), 0.0], [math.sin(y), math.cos(y), 0.0], [0.0, 0.0, 1.0]])
    roll_cam = np.array([[math.cos(r), -math.sin(r), 0.0], [math.sin(r), math.cos(r), 0.0], [0.0, 0.0, 1.0]])
    return rz @ ry @ level @ roll_cam


class DepthReprojector:
    """Callable: planar depth image of the source camera (metres) -> training-camera distance image."""

    def __init__(self, source: PinholeIntrinsics, rot_base_from_source: np.ndarray, pos_base_source_m: Sequence[float],
                 target: CameraSpec, *, min_depth_m: float = 0.1, max_depth_m: float = 10.0,
                 iterations: int = 3, initial_distance_m: float = 1.0):
        self.source = source
        self.target = target
        self.min_depth_m = min_depth_m
        self.max_depth_m = max_depth_m
        self.iterations = iterations
        self.initial_distance_m = initial_distance_m
        r_bs = np.asarray(rot_base_from_source, dtype=np.float64)
        r_bt = target.rotation_base_from_camera()
        o_s = np.asarray(pos_base_source_m, dtype=np.float64)
        o_t = np.asarray(target.mount_pos_base_m, dtype=np.float64)
        # everything in the *target* camera frame: rays from the origin
        self._dirs_t = target.ray_directions_camera().reshape(-1, 3)  # (N, 3) unit
        self._r_st = r_bs.T @ r_bt  # source-from-target rotation
        self._o_s_in_t = r_bt.T @ (o_s - o_t)  # source origin in the target frame
        self._r_ts = self._r_st.T

    def uncovered_fraction(self, distance_m: float = 1.0) -> float:
        """Fraction of the training camera's pixels whose ray (at ``distance_m``) falls outside the source image.

        Those pixels can never have data: they read as misses (2 m, "free") in every frame. The ZED Mini
        is narrower than the training camera (see ``zed_mini.nominal_fov_deg``), so this is > 0 on the robot.
        """
        src = self.source
        p_s = (self._dirs_t * float(distance_m) - self._o_s_in_t) @ self._r_st.T
        z = p_s[:, 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            u = np.rint(src.fx_px * p_s[:, 0] / z + src.cx_px)
            v = np.rint(src.fy_px * p_s[:, 1] / z + src.cy_px)
        inside = (z > 1e-6) & (u >= 0) & (u < src.width_px) & (v >= 0) & (v < src.height_px)
        return float(1.0 - np.mean(inside))

    def __call__(self, planar_depth_m: np.ndarray) -> np.ndarray:
        src = self.source
        depth = np.asarray(planar_depth_m)
        if depth.shape != (src.height_px, src.width_px):
            raise ValueError(f"depth image is {depth.shape}, the source intrinsics say {(src.height_px, src.width_px)}")
        dirs = self._dirs_t
        n = dirs.shape[0]
        d = np.full(n, float(self.initial_distance_m))
        valid = np.ones(n, dtype=bool)
        q_t = np.zeros((n, 3))
        for _ in range(max(1, self.iterations)):
            p_t = dirs * d[:, None]
            p_s = (p_t - self._o_s_in_t) @ self._r_st.T  # into the source frame
            z = p_s[:, 2]
            in_front = z > 1e-6
            with np.errstate(divide="ignore", invalid="ignore"):
                u = np.rint(src.fx_px * p_s[:, 0] / z + src.cx_px)
                v = np.rint(src.fy_px * p_s[:, 1] / z + src.cy_px)
            inside = in_front & (u >= 0) & (u < src.width_px) & (v >= 0) & (v < src.height_px)
            ui = np.where(inside, u, 0).astype(np.int64)
            vi = np.where(inside, v, 0).astype(np.int64)
            zs = depth[vi, ui].astype(np.float64)
            ok = inside & np.isfinite(zs) & (zs >= self.min_depth_m) & (zs <= self.max_depth_m)
            zs = np.where(ok, zs, 0.0)
            q_s = np.stack([(ui - src.cx_px) / src.fx_px * zs, (vi - src.cy_px) / src.fy_px * zs, zs], axis=1)
            q_t = q_s @ self._r_ts.T + self._o_s_in_t  # surface point in the target frame
            d_new = np.einsum("ij,ij->i", q_t, dirs)
            valid = ok & (d_new > 0)
            d = np.where(valid, d_new, d)
        dist = np.where(valid, np.linalg.norm(q_t, axis=1), np.inf)
        return dist.reshape(self.target.height_px, self.target.width_px).astype(np.float32)


def flat_floor_planar_depth(intr: PinholeIntrinsics, rot_base_from_cam: np.ndarray, cam_height_m: float) -> np.ndarray:
    """Analytic planar depth of a camera ``cam_height_m`` above an infinite floor (base z = 0 plane below it).

    Pixels that do not see the floor read +inf (as the ZED reports "too far"). Used by tests and fakes.
    """
    u = np.arange(intr.width_px) - intr.cx_px
    v = np.arange(intr.height_px) - intr.cy_px
    uu, vv = np.meshgrid(u / intr.fx_px, v / intr.fy_px)
    rays_cam = np.stack([uu, vv, np.ones_like(uu)], axis=-1)  # z = 1: t along this ray is the planar depth
    down = (rays_cam @ rot_base_from_cam.T)[..., 2]
    with np.errstate(divide="ignore"):
        z = np.where(down < -1e-9, cam_height_m / -down, np.inf)
    return z.astype(np.float32)


def flat_floor_distance(target: CameraSpec, cam_height_m: float) -> np.ndarray:
    """Analytic training-camera image (Euclidean distance) of the floor ``cam_height_m`` below the camera."""
    dirs = target.ray_directions_camera() @ target.rotation_base_from_camera().T
    with np.errstate(divide="ignore"):
        return np.where(dirs[..., 2] < -1e-9, cam_height_m / -dirs[..., 2], np.inf).astype(np.float32)


__all__ = ["PinholeIntrinsics", "DepthReprojector", "rotation_base_from_camera", "flat_floor_planar_depth", "flat_floor_distance"]
