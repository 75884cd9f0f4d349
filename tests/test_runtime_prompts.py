"""Prompt validation (typed, actionable errors) and packing (SAM's prompt-encoder order and padding)."""

from __future__ import annotations

import numpy as np
import pytest

from samdeploy.errors import InputError
from samdeploy.runtime.prompts import PromptLimits, check_boxes, check_mask_input, check_points, pack_prompts


def test_points_single_and_batched_shapes():
    c, l = check_points([[1, 2], [3, 4]], [1, 0], batched=False)
    assert c.shape == (1, 2, 2) and l.shape == (1, 2) and l.dtype == np.float32
    c, l = check_points(np.zeros((3, 2, 2)), np.ones((3, 2)), batched=True)
    assert c.shape == (3, 2, 2) and l.shape == (3, 2)
    assert check_points(None, None, batched=False) == (None, None)
    # empty clicks stay empty clicks (SamPredictor pads them; None means "no points at all")
    c, l = check_points(np.zeros((0, 2)), np.zeros(0), batched=False)
    assert c.shape == (1, 0, 2) and l.shape == (1, 0)


@pytest.mark.parametrize(
    "coords, labels, match",
    [
        ([[1, 2]], None, "together"),
        (None, [1], "together"),
        ([[np.nan, 2]], [1], "NaN or inf"),
        ([[np.inf, 2]], [1], "NaN or inf"),
        ([[1, 2]], [np.nan], "NaN or inf"),
        ([[1, 2]], [2], "must be 1 .*0 .*-1"),
        ([[1, 2]], [0.5], "must be 1 .*0 .*-1"),
        ([1, 2], [1], "expected \\[N, 2\\]"),
        ([[1, 2, 3]], [1], "expected \\[N, 2\\]"),
        ([[1, 2], [3, 4]], [1], "one label per point"),
        ([["a", "b"]], [1], "numeric"),
    ],
)
def test_bad_points_raise_input_error(coords, labels, match):
    with pytest.raises(InputError, match=match):
        check_points(coords, labels, batched=False)


def test_too_many_points():
    with pytest.raises(InputError, match="exceeds the limit of 4"):
        check_points(np.zeros((5, 2)), np.ones(5), batched=False, limits=PromptLimits(max_points=4))


@pytest.mark.parametrize(
    "box, match",
    [
        ([10, 10, 5, 20], "x1 < x0"),
        ([10, 10, 20, 5], "y1 < y0"),
        ([1, 2, 3], "expected \\[4\\]"),
        ([[1, 2, 3, 4], [1, 2, 3, 4]], "expected \\[4\\]"),
        ([0, 0, np.nan, 4], "NaN or inf"),
    ],
)
def test_bad_boxes_raise_input_error(box, match):
    with pytest.raises(InputError, match=match):
        check_boxes(box, batched=False)


def test_batched_boxes_shape_checked():
    assert check_boxes([[0, 0, 1, 1], [2, 2, 3, 3]], batched=True).shape == (2, 4)
    with pytest.raises(InputError, match="\\[K, 4\\]"):
        check_boxes([0, 0, 1, 1], batched=True)


def test_mask_input_shapes():
    assert check_mask_input(np.zeros((1, 256, 256)), batched=False, k=1).shape == (1, 1, 256, 256)
    assert check_mask_input(np.zeros((256, 256)), batched=False, k=1).shape == (1, 1, 256, 256)
    assert check_mask_input(np.zeros((3, 256, 256)), batched=True, k=3).shape == (3, 1, 256, 256)
    with pytest.raises(InputError, match="mask_input has shape"):
        check_mask_input(np.zeros((1, 128, 128)), batched=False, k=1)
    with pytest.raises(InputError, match="one per prompt"):
        check_mask_input(np.zeros((2, 1, 256, 256)), batched=True, k=3)
    with pytest.raises(InputError, match="NaN"):
        check_mask_input(np.full((1, 256, 256), np.nan), batched=False, k=1)


def test_packing_follows_sam_prompt_encoder():
    # SAM: clicks, then box corners labelled 2 and 3; a (0,0,-1) pad point only when there is no box.
    clicks = np.array([[[10, 20], [30, 40]]], np.float32)
    labels = np.array([[1, 0]], np.float32)
    corners = np.array([[[1, 2], [3, 4]]], np.float32)
    pc, pl = pack_prompts(clicks, labels, None, 1)
    np.testing.assert_array_equal(pc, [[[10, 20], [30, 40], [0, 0]]])
    np.testing.assert_array_equal(pl, [[1, 0, -1]])
    pc, pl = pack_prompts(clicks, labels, corners, 1)
    np.testing.assert_array_equal(pc, [[[10, 20], [30, 40], [1, 2], [3, 4]]])
    np.testing.assert_array_equal(pl, [[1, 0, 2, 3]])
    pc, pl = pack_prompts(None, None, np.repeat(corners, 2, axis=0), 2)
    np.testing.assert_array_equal(pl, [[2, 3], [2, 3]])
    pc, pl = pack_prompts(None, None, None, 1)  # mask-only prompt: no sparse tokens at all
    assert pc.shape == (1, 0, 2) and pl.shape == (1, 0)
    # ... unless the decoder needs a point (v1 exports, engines with min N = 1): the padding point
    pc, pl = pack_prompts(None, None, None, 1, no_points_ok=False)
    np.testing.assert_array_equal(pl, [[-1]])
    # empty clicks get SAM's padding point, as SamPredictor's prompt encoder does
    pc, pl = pack_prompts(np.zeros((1, 0, 2), np.float32), np.zeros((1, 0), np.float32), None, 1)
    np.testing.assert_array_equal(pl, [[-1]])
    assert pc.dtype == pl.dtype == np.float32 and pc.flags.c_contiguous
