"""Depth preprocessing against an independent torch computation and the spec's crop sizes (spec §2)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch.nn import functional as F  # noqa: E402

from krabby.hal.robot_profile import load_robot_profile  # noqa: E402
from krabby.parkour import obs_layout as L  # noqa: E402
from krabby.parkour.depth import DepthPreprocessor, cropped_shape_px, preprocess_depth_tensor  # noqa: E402

PROFILE = load_robot_profile("go2")


def reference(img_m: np.ndarray) -> np.ndarray:
    """Spec §2 written out by hand: clip at 2 m (misses -> 2), crop [:58, 4:102], bicubic AA to 58x87, d/2 - 0.5."""
    t = torch.from_numpy(img_m.astype(np.float32))
    t = torch.where(torch.isinf(t), torch.tensor(2.0), t).clamp(max=2.0)
    t = t[0:58, 4:102]
    assert t.shape == (58, 98)
    r = F.interpolate(t[None, None], size=(58, 87), mode="bicubic", align_corners=False, antialias=True)[0, 0]
    return (r / 2.0 - 0.5).numpy()


@pytest.fixture
def pre() -> DepthPreprocessor:
    return DepthPreprocessor(PROFILE.camera)


def test_sizes_from_profile_and_layout(pre):
    assert (PROFILE.camera.height_px, PROFILE.camera.width_px) == (60, 106)
    assert pre.cropped_shape_px == (58, 98) == cropped_shape_px(60, 106)
    assert pre.output_shape_px == (58, 87) == (L.DEPTH_HEIGHT_PX, L.DEPTH_WIDTH_PX)
    assert pre.max_distance_m == 2.0


def test_matches_independent_torch_pipeline(pre):
    rng = np.random.default_rng(0)
    img = rng.uniform(0.1, 3.0, size=(60, 106)).astype(np.float32)
    img[rng.random((60, 106)) < 0.05] = np.inf
    out = pre(img)
    assert out.shape == (58, 87) and out.dtype == np.float32
    np.testing.assert_array_equal(out, reference(img))


def test_antialias_is_on(pre):
    """The antialiased and plain bicubic resizes differ visibly on a textured image (spec: up to 0.11)."""
    rng = np.random.default_rng(1)
    img = rng.uniform(0.0, 2.0, size=(60, 106)).astype(np.float32)
    crop = torch.from_numpy(img[0:58, 4:102])[None, None]
    plain = F.interpolate(crop, size=(58, 87), mode="bicubic", align_corners=False, antialias=False)[0, 0] / 2 - 0.5
    assert np.abs(pre(img) - plain.numpy()).max() > 1e-2


def test_crop_removes_exactly_bottom_two_rows_and_four_columns_each_side(pre):
    img = np.full((60, 106), 2.0, np.float32)
    img[58:, :] = 0.0
    img[:, :4] = 0.0
    img[:, 102:] = 0.0
    np.testing.assert_allclose(pre(img), 0.5, atol=1e-6)  # nothing of the border survives
    for row, col in ((57, 50), (30, 4), (30, 101)):  # one pixel inside the crop does show
        probe = img.copy()
        probe[row, col] = 0.0
        assert pre(probe).min() < 0.45, (row, col)
    top = img.copy()
    top[0, 50] = 0.0  # the top row is kept
    assert pre(top).min() < 0.45


def test_constant_values_misses_and_clip(pre):
    np.testing.assert_allclose(pre(np.full((60, 106), 1.0, np.float32)), 0.0, atol=1e-6)
    np.testing.assert_allclose(pre(np.full((60, 106), 0.5, np.float32)), -0.25, atol=1e-6)
    np.testing.assert_allclose(pre(np.full((60, 106), np.inf, np.float32)), 0.5, atol=1e-6)
    np.testing.assert_allclose(pre(np.full((60, 106), np.nan, np.float32)), 0.5, atol=1e-6)
    np.testing.assert_allclose(pre(np.full((60, 106), 7.0, np.float32)), 0.5, atol=1e-6)


def test_overshoot_is_not_clamped(pre):
    """Bicubic may leave [-0.5, 0.5] on sharp edges; training did not clamp float output (spec §2 step 3)."""
    img = np.where(np.arange(106)[None, :] % 2 == 0, 0.0, 2.0).astype(np.float32) * np.ones((60, 1), np.float32)
    out = pre(img)
    np.testing.assert_array_equal(out, reference(img))


def test_batched_tensor_path_equals_single(pre):
    rng = np.random.default_rng(2)
    imgs = rng.uniform(0.0, 2.5, size=(3, 60, 106)).astype(np.float32)
    batch = preprocess_depth_tensor(torch.from_numpy(imgs), 2.0).numpy()
    assert batch.shape == (3, 58, 87)
    for i in range(3):
        np.testing.assert_array_equal(batch[i], pre(imgs[i]))


def test_wrong_shape_raises(pre):
    with pytest.raises(ValueError, match="profile camera"):
        pre(np.ones((58, 87), np.float32))
