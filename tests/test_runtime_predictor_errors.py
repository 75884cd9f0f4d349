"""Predictor input handling on a tiny fake model (contract-v1 I/O): typed errors for every bad input,
image format conversions, embedding reuse, batching/chunking plumbing."""

from __future__ import annotations

import numpy as np
import pytest

from samdeploy.errors import InputError, PredictorStateError
from samdeploy.runtime import Predictor
from samdeploy.runtime.transforms import apply_coords


@pytest.fixture(scope="module")
def pred(fake_model_dir):
    p = Predictor(fake_model_dir, threads=1, max_points=8, max_prompts=16)
    yield p
    p.close()


@pytest.fixture(scope="module")
def photo(photos):
    return photos["chelsea"]  # 300x451 real photograph


def test_predict_before_set_image(fake_model_dir):
    p = Predictor(fake_model_dir)
    with pytest.raises(PredictorStateError, match="set_image"):
        p.predict(point_coords=[[1, 1]], point_labels=[1])
    with pytest.raises(PredictorStateError):
        p.get_image_embedding()
    p.close()


@pytest.mark.parametrize(
    "image, match",
    [
        (np.zeros((0, 10, 3), np.uint8), "empty"),
        (np.zeros((10, 0, 3), np.uint8), "empty"),
        (np.zeros((10, 10, 2), np.uint8), "expected HxW"),
        (np.zeros((10, 10, 5), np.uint8), "expected HxW"),
        (np.zeros((3, 40, 50), np.uint8), "channels-first"),
        (np.zeros((10, 10, 3), np.int32), "unsupported dtype"),
        (np.full((10, 10, 3), 2.0, np.float32), "must be in \\[0, 1\\]"),
        (np.full((10, 10, 3), np.nan, np.float32), "NaN"),
        (np.zeros((2, 10, 10, 3), np.uint8), "expected HxW"),
    ],
)
def test_bad_images(pred, image, match):
    with pytest.raises(InputError, match=match):
        pred.set_image(image)


def test_bad_image_format(pred, photo):
    with pytest.raises(InputError, match="image_format"):
        pred.set_image(photo, image_format="HSV")


def test_image_conversions_match_rgb(pred, photo):
    pred.set_image(photo)
    ref = pred.get_image_embedding().copy()
    pred.set_image(np.ascontiguousarray(photo[..., ::-1]), image_format="BGR")
    np.testing.assert_array_equal(pred.get_image_embedding(), ref)
    rgba = np.concatenate([photo, np.full(photo.shape[:2] + (1,), 7, np.uint8)], axis=2)
    pred.set_image(rgba)
    np.testing.assert_array_equal(pred.get_image_embedding(), ref)
    pred.set_image(photo.astype(np.uint16) * 257)  # 16-bit -> same 8-bit values
    np.testing.assert_array_equal(pred.get_image_embedding(), ref)
    gray = photo[..., 1]
    pred.set_image(gray)
    pred2 = pred.get_image_embedding().copy()
    pred.set_image(np.repeat(gray[..., None], 3, axis=2))
    np.testing.assert_array_equal(pred.get_image_embedding(), pred2)
    assert pred.original_size == photo.shape[:2] and pred.input_size == (681, 1024)


def test_bad_prompts(pred, photo):
    pred.set_image(photo)
    with pytest.raises(InputError, match="NaN"):
        pred.predict(point_coords=[[np.nan, 1]], point_labels=[1])
    with pytest.raises(InputError, match="must be 1"):
        pred.predict(point_coords=[[1, 1]], point_labels=[3])
    with pytest.raises(InputError, match="x1 < x0"):
        pred.predict(box=[100, 10, 50, 60])
    with pytest.raises(InputError, match="box has shape"):
        pred.predict(box=[[1, 2, 3, 4], [1, 2, 3, 4]])
    with pytest.raises(InputError, match="limit of 8"):
        pred.predict(point_coords=np.ones((9, 2)), point_labels=np.ones(9))
    with pytest.raises(InputError, match="limit of 16"):
        pred.predict_batch(boxes=np.tile([0, 0, 5, 5], (17, 1)))
    with pytest.raises(InputError, match="mask_input has shape"):
        pred.predict(point_coords=[[1, 1]], point_labels=[1], mask_input=np.zeros((1, 64, 64)))
    with pytest.raises(InputError, match="disagree on the number of prompts"):
        pred.predict_batch(point_coords=np.ones((2, 1, 2)), point_labels=np.ones((2, 1)), boxes=np.tile([0, 0, 5, 5], (3, 1)))
    with pytest.raises(InputError, match="needs points, boxes or mask_input"):
        pred.predict_batch()
    with pytest.raises(InputError, match="mask_input has shape"):
        pred.predict_batch(mask_input=np.zeros((256, 256)))
    m, s, _ = pred.predict_batch(mask_input=np.zeros((2, 1, 256, 256)), multimask_output=False)
    assert m.shape == (2, 1, 300, 451) and s.shape == (2, 1)


def test_outputs_shapes_and_prompt_plumbing(pred, photo):
    """The fake decoder adds 0.01 * sum(point_coords) * (token + 1) to its logits, so the iou output
    reveals exactly which coordinates reached the graph (clicks mapped to the 1024 frame, +pad (0,0))."""
    pred.set_image(photo)
    base_iou = pred.decode(np.zeros((1, 0, 2), np.float32), np.zeros((1, 0), np.float32))[0][0]
    pts = np.array([[100.0, 50.0], [300.0, 200.0]])
    masks, scores, low = pred.predict(point_coords=pts, point_labels=[1, 0])
    assert masks.shape == (3, 300, 451) and masks.dtype == np.bool_
    assert scores.shape == (3,) and low.shape == (3, 256, 256)
    s = apply_coords(pts, (300, 451), (681, 1024)).sum()
    np.testing.assert_allclose(scores, base_iou[1:] + 0.01 * s * np.array([2, 3, 4]), atol=1e-2)
    m1, s1, l1 = pred.predict(point_coords=pts, point_labels=[1, 0], multimask_output=False)
    assert m1.shape == (1, 300, 451)
    np.testing.assert_allclose(s1, base_iou[:1] + 0.01 * s, atol=1e-2)
    logits, _, _ = pred.predict(point_coords=pts, point_labels=[1, 0], return_logits=True)
    assert logits.dtype == np.float32 and np.array_equal(logits > 0, masks)
    # mask_input reaches the graph with has_mask_input = 1
    m2, s2, _ = pred.predict(mask_input=np.full((1, 256, 256), 2.0, np.float32), multimask_output=False)
    np.testing.assert_allclose(s2, base_iou[:1] + 2.0, atol=1e-2)
    assert pred.timings["prompts"] == 1 and pred.timings["decoder_ms"] > 0


def test_batch_equals_one_by_one_and_chunks(fake_model_dir, photo):
    p = Predictor(fake_model_dir, max_batch=2)
    p.set_image(photo)
    boxes = np.array([[0, 0, 50, 50], [10, 20, 200, 100], [5, 5, 450, 299], [100, 100, 101, 101], [0, 0, 1, 1]], float)
    m, s, l = p.predict_batch(boxes=boxes, multimask_output=False)
    assert m.shape == (5, 1, 300, 451) and s.shape == (5, 1) and l.shape == (5, 1, 256, 256)
    for i, b in enumerate(boxes):
        mi, si, li = p.predict(box=b, multimask_output=False)
        np.testing.assert_array_equal(mi, m[i])
        np.testing.assert_allclose(si, s[i], rtol=1e-6)
    p.close()


def test_embedding_reuse(pred, photo):
    pred.set_image(photo)
    emb = pred.get_image_embedding()
    assert emb.shape == (1, 256, 64, 64) and not emb.flags.writeable
    ref = pred.predict(point_coords=[[10, 10]], point_labels=[1])
    pred.reset_image()
    assert not pred.is_image_set
    pred.set_image_embedding(emb, photo.shape[:2])
    got = pred.predict(point_coords=[[10, 10]], point_labels=[1])
    for a, b in zip(ref, got):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(InputError, match="expects"):
        pred.set_image_embedding(np.zeros((1, 256, 32, 32), np.float32), (10, 10))
    with pytest.raises(InputError, match="positive"):
        pred.set_image_embedding(emb, (0, 10))
