"""Depth preprocessing exactly as the student was trained (spec §2, §9.8).

Input is a ``DepthFrame``-style Euclidean distance image (distance along each ray, metres, row 0
at the top, +inf where nothing was hit) in the profile camera's resolution. Steps, as upstream
``image_features`` with torchvision >= 0.17:

1. clip to the camera's max distance; misses (+inf) and NaN become exactly the max
   (Isaac Lab ``depth_clipping_behavior="max"``); -inf, never valid, is treated as a miss too;
2. crop: drop the bottom 2 rows and 4 columns on each side -> (58, 98) for the 60 x 106 camera;
3. resize to (58, 87) with ``torch.nn.functional.interpolate(mode="bicubic",
   align_corners=False, antialias=True)`` (what torchvision ``Resize(BICUBIC)`` runs); no clamp,
   so values may overshoot [0, max] slightly, as in training;
4. normalise: d / max - 0.5.

torch is imported lazily so the teacher path (and tests of other modules) work without it; the
student policy needs torch anyway.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from krabby.parkour import obs_layout as L

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from krabby.hal.robot_profile import CameraSpec


def _torch():
    try:
        import torch
    except ModuleNotFoundError:  # pragma: no cover - depends on the install
        raise ModuleNotFoundError(
            "depth preprocessing needs torch; install the build for your platform "
            "(pip install torch==2.13.0, or NVIDIA's JetPack wheel on a Jetson)"
        ) from None
    return torch


def cropped_shape_px(height_px: int, width_px: int) -> tuple[int, int]:
    """(H, W) of the raw image after the training crop: (60, 106) -> (58, 98)."""
    h = height_px - L.DEPTH_CROP_TOP_PX - L.DEPTH_CROP_BOTTOM_PX
    w = width_px - L.DEPTH_CROP_LEFT_PX - L.DEPTH_CROP_RIGHT_PX
    if h <= 0 or w <= 0:
        raise ValueError(f"a {height_px}x{width_px} depth image is too small for the training crop")
    return h, w


def preprocess_depth_tensor(distance_m: "torch.Tensor", max_distance_m: float) -> "torch.Tensor":
    """Raw distances (..., H, W) metres -> normalised (..., 58, 87) float32 tensor; batched or single."""
    torch = _torch()
    from torch.nn import functional as F

    if distance_m.ndim < 2:
        raise ValueError(f"depth image must be (..., H, W), got shape {tuple(distance_m.shape)}")
    d = distance_m.to(torch.float32)
    d = torch.nan_to_num(d, nan=max_distance_m, posinf=max_distance_m, neginf=max_distance_m)
    d = torch.clamp(d, max=max_distance_m)
    h, w = d.shape[-2], d.shape[-1]
    ch, cw = cropped_shape_px(h, w)
    d = d[..., L.DEPTH_CROP_TOP_PX : L.DEPTH_CROP_TOP_PX + ch, L.DEPTH_CROP_LEFT_PX : L.DEPTH_CROP_LEFT_PX + cw]
    lead = d.shape[:-2]
    d = d.reshape(-1, 1, ch, cw)
    d = F.interpolate(
        d, size=(L.DEPTH_HEIGHT_PX, L.DEPTH_WIDTH_PX), mode="bicubic", align_corners=False, antialias=True
    )
    d = d / max_distance_m - L.DEPTH_NORMALISE_OFFSET
    return d.reshape(*lead, L.DEPTH_HEIGHT_PX, L.DEPTH_WIDTH_PX)


class DepthPreprocessor:
    """The training depth pipeline for one camera model (its resolution and max distance)."""

    def __init__(self, camera: "CameraSpec"):
        self.height_px = int(camera.height_px)
        self.width_px = int(camera.width_px)
        self.max_distance_m = float(camera.max_distance_m)
        if not self.max_distance_m > 0.0:
            raise ValueError(f"camera max_distance_m must be positive, got {self.max_distance_m}")
        self.cropped_shape_px = cropped_shape_px(self.height_px, self.width_px)
        self.output_shape_px = (L.DEPTH_HEIGHT_PX, L.DEPTH_WIDTH_PX)

    def __call__(self, distance_m: np.ndarray) -> np.ndarray:
        """One (H, W) distance image in metres (+inf = miss) -> (58, 87) float32, about [-0.5, 0.5]."""
        torch = _torch()
        img = np.asarray(distance_m)
        if img.shape != (self.height_px, self.width_px):
            raise ValueError(
                f"depth image is {img.shape}, the profile camera is {(self.height_px, self.width_px)} (H, W); "
                "render or resample to the training camera model first"
            )
        t = torch.from_numpy(np.ascontiguousarray(img, dtype=np.float32))
        with torch.no_grad():
            out = preprocess_depth_tensor(t, self.max_distance_m)
        return out.numpy()
