"""Runtime transforms vs the official SAM maths (segment_anything's ResizeLongestSide and the
two-step bilinear postprocess of Sam.postprocess_masks, computed here with torch)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from samdeploy.runtime.transforms import apply_boxes, apply_coords, low_res_crop, resized_shape, upscale_masks

# Awkward sizes: 1xN, Nx1, odd, larger than 1024, downscaling, exactly 1024.
SIZES = [(1080, 1920), (1, 300), (300, 1), (333, 517), (1411, 1411), (100, 100), (2000, 3), (7, 1024), (1024, 1024)]


def smooth_logits(rng, k: int, span: float = 20.0) -> np.ndarray:
    """[k,256,256] smooth fields spanning about +-span (like trained SAM logits)."""
    import cv2

    coarse = rng.standard_normal((k, 24, 24)).astype(np.float32)
    return np.stack([cv2.resize(c, (256, 256), interpolation=cv2.INTER_CUBIC) for c in coarse]) * span / 2


def official_postprocess(low: np.ndarray, input_hw, original_hw) -> np.ndarray:
    """Sam.postprocess_masks: bilinear to 1024, crop, bilinear to the original size."""
    t = torch.from_numpy(low)[None]
    t = F.interpolate(t, (1024, 1024), mode="bilinear", align_corners=False)[..., : input_hw[0], : input_hw[1]]
    return F.interpolate(t, original_hw, mode="bilinear", align_corners=False)[0].numpy()


@pytest.mark.parametrize("hw", SIZES)
def test_upscale_masks_matches_sam_postprocess(hw):
    rng = np.random.default_rng(sum(hw))
    inp = resized_shape(*hw, 1024)
    # white-noise logits: the hardest case for interpolation (every low-res pixel is a kink)
    low = (rng.standard_normal((3, 256, 256)) * 20).astype(np.float32)
    ref = official_postprocess(low, inp, hw)
    logits = upscale_masks(low, inp, hw, threshold=None)
    masks = upscale_masks(low, inp, hw, threshold=0.0)
    assert logits.shape == masks.shape == (3, *hw) and masks.dtype == np.bool_
    assert np.array_equal(masks, logits > 0)
    np.testing.assert_allclose(logits, ref, atol=5e-3)  # same maths as SAM, float32 rounding only
    assert iou(masks, ref > 0) >= 0.9999


@pytest.mark.parametrize("hw", SIZES)
def test_fused_upscale_is_close_for_smooth_logits(hw):
    rng = np.random.default_rng(sum(hw))
    inp = resized_shape(*hw, 1024)
    low = smooth_logits(rng, 3)
    ref = official_postprocess(low, inp, hw)
    fused = upscale_masks(low, inp, hw, threshold=None, exact=False)
    assert iou(fused > 0, ref > 0) >= 0.995
    # One bilinear sampling vs two in a row: differences stay at the kinks, well below 1 logit.
    assert np.abs(fused - ref).mean() < 0.02
    if inp == hw:  # only the first resize exists: the fractional-crop resize must be exact
        np.testing.assert_allclose(fused, ref, atol=1e-4)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = (a | b).sum()
    return 1.0 if union == 0 else float((a & b).sum() / union)


def test_upscale_masks_keeps_leading_axes_and_threshold():
    rng = np.random.default_rng(1)
    low = smooth_logits(rng, 6).reshape(2, 3, 256, 256)
    out = upscale_masks(low, (576, 1024), (1080, 1920), threshold=5.0)
    ref = upscale_masks(low, (576, 1024), (1080, 1920), threshold=None)
    assert out.shape == (2, 3, 1080, 1920)
    assert np.array_equal(out, ref > 5.0)


def test_low_res_crop_covers_what_bilinear_reads():
    assert low_res_crop((576, 1024), 1024, 256) == (145, 256)
    assert low_res_crop((3, 1024), 1024, 256) == (2, 256)
    assert low_res_crop((1024, 1024), 1024, 256) == (256, 256)
    # Changing logits outside the crop must not change the result.
    rng = np.random.default_rng(2)
    low = smooth_logits(rng, 1)
    low2 = low.copy()
    low2[:, 146:, :] = 1e6
    for exact in (True, False):
        a = upscale_masks(low, (576, 1024), (1080, 1920), threshold=None, exact=exact)
        b = upscale_masks(low2, (576, 1024), (1080, 1920), threshold=None, exact=exact)
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("hw", [(1080, 1920), (333, 517), (1, 300), (1411, 1411)])
def test_coords_and_boxes_match_resize_longest_side(hw):
    from segment_anything.utils.transforms import ResizeLongestSide

    t = ResizeLongestSide(1024)
    rng = np.random.default_rng(3)
    pts = rng.uniform(0, 1, (5, 2)) * np.array([hw[1], hw[0]])
    boxes = np.sort(rng.uniform(0, 1, (4, 2, 2)) * np.array([hw[1], hw[0]]), axis=1).reshape(4, 4)
    inp = resized_shape(*hw, 1024)
    assert inp == t.get_preprocess_shape(hw[0], hw[1], 1024)
    np.testing.assert_allclose(apply_coords(pts, hw, inp), t.apply_coords(pts, hw), rtol=1e-6, atol=1e-4)
    np.testing.assert_allclose(apply_boxes(boxes, hw, inp).reshape(4, 4), t.apply_boxes(boxes, hw), rtol=1e-6, atol=1e-4)
