"""Overlay drawing and mask serialisation (PNG, COCO RLE via pycocotools)."""

from __future__ import annotations

import cv2
import numpy as np

from samdeploy.runtime.overlay import POSITIVE, draw_overlay, palette, write_png
from samdeploy.runtime.rle import mask_to_rle, rle_to_mask


def test_overlay_tints_masks_and_draws_prompts(photos):
    img = photos["coffee"]
    h, w = img.shape[:2]
    yy, xx = np.mgrid[:h, :w]
    mask = (xx - 300) ** 2 + (yy - 200) ** 2 < 80**2
    out = draw_overlay(img, mask[None], points=np.array([[300, 200]]), labels=np.array([1]), alpha=0.5)
    c = palette(1)[0].astype(np.float32)
    # inside (away from the contour and the click marker): 50% blend with the mask colour
    y, x = 200, 340
    np.testing.assert_allclose(out[y, x], (img[y, x] * 0.5 + c * 0.5).astype(np.uint8), atol=1)
    assert np.array_equal(out[20, 20], img[20, 20])  # far outside: untouched
    assert tuple(out[200, 300]) == POSITIVE  # the click marker
    assert not np.array_equal(out[200, 380], img[200, 380])  # the contour
    box_out = draw_overlay(img, boxes=np.array([[10, 10, 100, 100]]))
    assert tuple(box_out[10, 50]) == (255, 255, 255) and np.array_equal(box_out[50, 50], img[50, 50])


def test_png_and_rle_roundtrip(tmp_path):
    from pycocotools import mask as mask_utils

    rng = np.random.default_rng(0)
    m = rng.random((37, 53)) > 0.6
    rle = mask_to_rle(m)
    assert rle["size"] == [37, 53] and isinstance(rle["counts"], str)
    assert np.array_equal(rle_to_mask(rle), m)
    assert mask_utils.area({"size": rle["size"], "counts": rle["counts"].encode()}) == m.sum()
    write_png(tmp_path / "m.png", m)
    assert np.array_equal(cv2.imread(str(tmp_path / "m.png"), cv2.IMREAD_GRAYSCALE) > 127, m)
    rgb = (rng.random((5, 6, 3)) * 255).astype(np.uint8)
    write_png(tmp_path / "c.png", rgb)
    assert np.array_equal(cv2.cvtColor(cv2.imread(str(tmp_path / "c.png")), cv2.COLOR_BGR2RGB), rgb)
