"""Segment-everything building blocks vs independent references: torchvision NMS, pycocotools RLE,
hand-computed stability scores, and SAM's own amg utilities (oracle, test-only)."""

from __future__ import annotations

import numpy as np
import pytest

from samdeploy.runtime import amg_utils as U
from samdeploy.runtime import rle as R


# ---- NMS vs torchvision.ops.batched_nms ---------------------------------------------------------------
def _random_boxes(rng, n, size=200, quantise=True):
    xy = rng.uniform(0, size, (n, 2))
    wh = rng.uniform(2, size / 2, (n, 2))
    boxes = np.concatenate([xy, xy + wh], axis=1)
    if quantise:  # mask boxes are integer pixel indices: many exact ties in IoU
        boxes = np.floor(boxes)
    return boxes.astype(np.float32)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("thresh", [0.3, 0.5, 0.7])
def test_box_nms_matches_torchvision(seed, thresh):
    import torch
    from torchvision.ops import batched_nms

    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 400))
    boxes = _random_boxes(rng, n)
    # Many duplicate boxes and tied scores: the cases where the order rule matters.
    dup = rng.integers(0, n, n // 4)
    boxes[rng.integers(0, n, n // 4)] = boxes[dup]
    scores = np.round(rng.uniform(0, 1, n), 1).astype(np.float32)
    ours = U.box_nms(boxes, scores, thresh)
    ref = batched_nms(torch.from_numpy(boxes), torch.from_numpy(scores), torch.zeros(n), thresh).numpy()
    # Same kept set in the same order (decreasing score, ties by index), like torchvision's kernel.
    assert ours.tolist() == ref.tolist()


def test_box_nms_categories_match_torchvision():
    import torch
    from torchvision.ops import batched_nms

    rng = np.random.default_rng(7)
    boxes = _random_boxes(rng, 300)
    scores = rng.uniform(0, 1, 300).astype(np.float32)
    cats = rng.integers(0, 4, 300)
    ours = U.box_nms(boxes, scores, 0.5, categories=cats)
    ref = batched_nms(torch.from_numpy(boxes), torch.from_numpy(scores), torch.from_numpy(cats), 0.5).numpy()
    assert ours.tolist() == ref.tolist()  # no ties in scores: order must match too


def test_box_nms_strict_greater_than_threshold():
    # IoU of these two is exactly 0.5: kept at thresh 0.5 (suppression needs IoU > thresh).
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 5]], np.float32)
    assert U.box_nms(boxes, np.array([1.0, 0.9]), 0.5).tolist() == [0, 1]
    assert U.box_nms(boxes, np.array([1.0, 0.9]), 0.49).tolist() == [0]
    assert U.box_nms(np.zeros((0, 4)), np.zeros(0), 0.5).tolist() == []


# ---- RLE vs pycocotools ------------------------------------------------------------------------------------
def _random_masks(rng):
    masks = [rng.random((37, 53)) > 0.5, np.zeros((20, 30), bool), np.ones((20, 30), bool)]
    blob = np.zeros((300, 411), bool)
    blob[40:250, 100:390] = True
    blob[100:120, 150:170] = False
    masks.append(blob)
    first_on = np.zeros((5, 7), bool)
    first_on[0, 0] = True
    masks.append(first_on)
    return masks


def test_rle_matches_pycocotools_and_round_trips():
    from pycocotools import mask as mask_utils

    rng = np.random.default_rng(0)
    for m in _random_masks(rng):
        ours = R.mask_to_rle(m)
        ref = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
        assert ours["counts"] == ref["counts"].decode("ascii")
        assert ours["size"] == list(ref["size"])
        # Our uncompressed RLE compressed by pycocotools gives the same string too.
        unc = R.mask_to_uncompressed_rle(m)
        assert mask_utils.frPyObjects(unc, *unc["size"])["counts"].decode() == ours["counts"]
        # Decoding: ours (from string and from counts) and pycocotools agree with the mask.
        np.testing.assert_array_equal(R.rle_to_mask(ours), m)
        np.testing.assert_array_equal(R.rle_to_mask(unc), m)
        np.testing.assert_array_equal(mask_utils.decode({"size": ours["size"], "counts": ours["counts"].encode()}), m)
        assert R.rle_area(ours) == R.rle_area(unc) == int(m.sum()) == int(mask_utils.area(ref))


def test_rle_matches_sam_uncompressed_rle():
    import torch
    from segment_anything.utils.amg import mask_to_rle_pytorch

    rng = np.random.default_rng(1)
    for m in _random_masks(rng):
        ref = mask_to_rle_pytorch(torch.from_numpy(m)[None])[0]
        assert R.mask_to_uncompressed_rle(m) == ref


# ---- stability score, boxes, crops, grids vs hand computations and SAM's utils -------------------------------------
def test_stability_score_hand_computed():
    logits = np.full((2, 4, 5), -5.0, np.float32)
    logits[0, :2, :] = 3.0  # 10 pixels > +1
    logits[0, 2, :] = 0.5  # 5 more pixels > -1 but not > +1
    logits[1] = -5.0  # empty -> NaN (fails every threshold)
    s = U.stability_score(logits, 0.0, 1.0)
    assert s[0] == np.float32(10 / 15)
    assert np.isnan(s[1])
    # Strict inequality: a logit exactly at t+offset is not in the high mask.
    edge = np.array([[[1.0, 2.0, -1.0, 0.0]]], np.float32)
    assert U.stability_score(edge, 0.0, 1.0)[0] == np.float32(1 / 3)


def test_stability_and_boxes_match_sam():
    import torch
    from segment_anything.utils import amg as ref

    rng = np.random.default_rng(2)
    logits = (rng.standard_normal((6, 40, 50)) * 4).astype(np.float32)
    logits[3] = -10  # empty mask
    torch_logits = torch.from_numpy(logits)
    np.testing.assert_array_equal(U.stability_score(logits, 0.0, 1.0)[:3], ref.calculate_stability_score(torch_logits, 0.0, 1.0).numpy()[:3])
    masks = logits > 6
    np.testing.assert_array_equal(U.masks_to_boxes(masks), ref.batched_mask_to_box(torch.from_numpy(masks)).numpy())
    one = np.zeros((9, 9), bool)
    one[4, 7] = True
    assert U.masks_to_boxes(one).tolist() == [7, 4, 7, 4]


def test_grids_and_crop_boxes_match_sam():
    from segment_anything.utils import amg as ref

    for n in (1, 4, 8, 32):
        np.testing.assert_allclose(U.build_point_grid(n), ref.build_point_grid(n), rtol=0, atol=1e-15)
    for hw in ((480, 640), (1411, 1411), (333, 1000)):
        for layers in (0, 1, 2):
            assert U.generate_crop_boxes(hw, layers, 512 / 1500) == ref.generate_crop_boxes(hw, layers, 512 / 1500)


def test_crop_edge_filter_matches_sam():
    import torch
    from segment_anything.utils import amg as ref

    rng = np.random.default_rng(3)
    boxes = np.sort(rng.integers(0, 300, (200, 2, 2)), axis=1).reshape(200, 4)[:, [0, 2, 1, 3]]
    for crop in ([0, 0, 300, 300], [100, 50, 400, 350], [0, 0, 640, 480]):
        ours = U.is_box_near_crop_edge(boxes, crop, [0, 0, 640, 480])
        theirs = ref.is_box_near_crop_edge(torch.from_numpy(boxes), crop, [0, 0, 640, 480]).numpy()
        np.testing.assert_array_equal(ours, theirs)


def test_remove_small_regions_matches_sam():
    from segment_anything.utils.amg import remove_small_regions as ref

    rng = np.random.default_rng(4)
    for _ in range(10):
        import cv2

        noise = cv2.GaussianBlur(rng.standard_normal((80, 120)).astype(np.float32), (0, 0), 3)
        m = noise > 0.05
        for mode in ("holes", "islands"):
            for area in (5, 50, 5000):
                ours, changed = U.remove_small_regions(m, area, mode)
                theirs, ref_changed = ref(m, area, mode)
                assert changed == ref_changed
                np.testing.assert_array_equal(ours, theirs)
    # Hand case: a 2x2 hole is filled, a 1-pixel island removed, the big blob kept.
    m = np.zeros((20, 20), bool)
    m[2:12, 2:12] = True
    m[5:7, 5:7] = False
    m[17, 17] = True
    filled, changed = U.remove_small_regions(m, 10, "holes")
    assert changed and filled[5:7, 5:7].all()
    cleaned, changed = U.remove_small_regions(filled, 10, "islands")
    assert changed and not cleaned[17, 17] and cleaned[2:12, 2:12].all()
