"""Exported graphs (ONNX Runtime) vs the PyTorch model they were exported from, and vs the official
model (oracle package) for a checkpoint exported end to end."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from fixtures_export import decoder_feeds, ort_session
from samdeploy.check.metrics import rel_l2_error
from samdeploy.runtime.transforms import preprocess_image
from samdeploy.contract import (
    DECODER_HAS_MASK_INPUT, DECODER_MASK_INPUT, DECODER_POINT_COORDS, DECODER_POINT_LABELS, ENCODER_INPUT,
    ENCODER_OUTPUT,
)

# One encoder forward per backend per variant. vit_b (about 80 s here: export + ORT + PyTorch at 1024) is
# opt-in: slimsam_77 runs the same ImageEncoderViT code (windowed + global attention, relative positions)
# through export and ORT, and tests/test_models_encoder.py keeps vit_b's PyTorch encoder vs the official one.
SLOW = os.environ.get("SAMDEPLOY_SLOW") == "1"
VARIANTS = ["mobile_sam", "slimsam_77", pytest.param("vit_b", marks=[
    pytest.mark.slow, pytest.mark.skipif(not SLOW, reason="ViT-B export parity: run with SAMDEPLOY_SLOW=1")])]
COMBOS = [(b, n, m) for b in (1, 5) for n in (1, 3, 8) for m in (False, True)]
# The decoders of all variants are the same module with the same (key-seeded) weights: the full grid
# runs on mobile_sam, the corners on the others (which differ in the embedding fed in).
CORNERS = [(1, 1, False), (1, 8, True), (5, 3, False), (5, 8, True)]


@pytest.fixture(scope="module")
def photo():
    from samdeploy.images import default_photographs

    return default_photographs(("coffee",))["coffee"]  # 400x600 real photograph


@pytest.fixture(scope="module")
def encoded(exported_model_dir, reference_model, photo):
    """variant -> (export dir, PyTorch embedding, ONNX embedding) of the photo."""
    cache = {}

    def get(variant):
        if variant not in cache:
            out = exported_model_dir(variant)
            sam = reference_model(variant)
            x, _ = preprocess_image(photo, sam.contract.preprocess)
            with torch.no_grad():
                ref = sam.encode(torch.from_numpy(x)).numpy()
            got = ort_session(out / "encoder.onnx").run(None, {ENCODER_INPUT: x})[0]
            cache[variant] = (out, ref, got)
        return cache[variant]

    return get


@pytest.mark.parametrize("variant", VARIANTS)
def test_encoder_matches_pytorch(encoded, variant):
    _, ref, got = encoded(variant)
    assert got.shape == ref.shape == (1, 256, 64, 64)
    assert rel_l2_error(ref, got) <= 1e-5
    assert np.abs(ref).mean() > 0.05  # a real, non-degenerate embedding


@pytest.mark.parametrize("variant", VARIANTS)
def test_decoder_matches_pytorch(encoded, reference_model, variant):
    """Dynamic B in {1, 5} x N in {1, 3, 8}, with and without mask input, on the real embedding."""
    out, emb, _ = encoded(variant)
    sam = reference_model(variant)
    sess = ort_session(out / "decoder.onnx")
    for b, n, with_mask in COMBOS if variant == "mobile_sam" else CORNERS:
        rng = np.random.default_rng(1000 * b + 10 * n + with_mask)
        feeds = decoder_feeds(rng, emb, b, n, with_mask)
        iou, masks = sess.run(None, feeds)
        with torch.no_grad():
            ref_iou, ref_masks = (t.numpy() for t in sam.decode(*(torch.from_numpy(feeds[k]) for k in feeds)))
        where = f"B={b} N={n} mask={with_mask}"
        assert iou.shape == (b, 4) and masks.shape == (b, 4, 256, 256), where
        assert rel_l2_error(ref_masks, masks) <= 1e-5, where
        assert np.abs(iou - ref_iou).max() <= 1e-4, where
        assert np.abs(ref_masks).max() > 5.0, where  # realistic decoder: logits span about +-20


def test_mask_input_changes_the_output(encoded):
    """has_mask_input really switches the dense embedding (guards against a constant-folded flag)."""
    out, emb, _ = encoded("mobile_sam")
    sess = ort_session(out / "decoder.onnx")
    feeds = decoder_feeds(np.random.default_rng(0), emb, 2, 3, with_mask=True)
    with_mask = sess.run(None, feeds)[1]
    feeds[DECODER_HAS_MASK_INPUT] = np.zeros(2, np.float32)
    without = sess.run(None, feeds)[1]
    assert rel_l2_error(without, with_mask) > 1e-2


def test_dynamic_encoder_batch(exported_model_dir, reference_model):
    """--encoder-batch dynamic: two images in one call give each image's own embedding."""
    out = exported_model_dir("mobile_sam", graphs=("encoder",), encoder_batch=None)
    sess = ort_session(out / "encoder.onnx")
    assert sess.get_inputs()[0].shape[0] == "batch"
    rng = np.random.default_rng(0)
    x = (rng.random((2, 3, 1024, 1024)) * 255).astype(np.float32)
    got = sess.run(None, {ENCODER_INPUT: x})[0]
    with torch.no_grad():
        ref = reference_model("mobile_sam").encode(torch.from_numpy(x)).numpy()
    assert got.shape == (2, 256, 64, 64)
    assert rel_l2_error(ref, got) <= 1e-5
    assert rel_l2_error(got[0], got[1]) > 0.01


# ---- end to end against the official model (oracle) --------------------------------------------
def test_checkpoint_export_matches_official_mobile_sam(checkpoint_export_dir, photo_resized):
    """official checkpoint -> samdeploy export -> ONNX Runtime == official MobileSAM on a real photo."""
    from fixtures_models import contract_encoder_input, official_encoder_input

    out, _ckpt, official = checkpoint_export_dir("mobile_sam")
    with torch.no_grad():
        ref_emb = official.image_encoder(official_encoder_input(official, photo_resized))
    x = contract_encoder_input(photo_resized).numpy()
    emb = ort_session(out / "encoder.onnx").run(None, {ENCODER_INPUT: x})[0]
    assert rel_l2_error(ref_emb.numpy(), emb) <= 1e-4

    # one positive click (+ the padding point the runtime appends) through both decoders
    h, w = photo_resized.shape[:2]
    click = torch.tensor([[[0.4 * w, 0.6 * h]]])
    with torch.no_grad():
        sparse, dense = official.prompt_encoder(points=(click, torch.ones(1, 1)), boxes=None, masks=None)
        multi, multi_iou = official.mask_decoder(ref_emb, official.prompt_encoder.get_dense_pe(), sparse, dense, True)
        single, single_iou = official.mask_decoder(ref_emb, official.prompt_encoder.get_dense_pe(), sparse, dense, False)
    feeds = {
        ENCODER_OUTPUT: ref_emb.numpy(),
        DECODER_POINT_COORDS: np.array([[[0.4 * w, 0.6 * h], [0.0, 0.0]]], np.float32),
        DECODER_POINT_LABELS: np.array([[1.0, -1.0]], np.float32),
        DECODER_MASK_INPUT: np.zeros((1, 1, 256, 256), np.float32),
        DECODER_HAS_MASK_INPUT: np.zeros(1, np.float32),
    }
    iou, masks = ort_session(out / "decoder.onnx").run(None, feeds)
    assert rel_l2_error(multi.numpy(), masks[:, 1:]) <= 1e-4
    assert rel_l2_error(single.numpy(), masks[:, :1]) <= 1e-4
    assert np.abs(multi_iou.numpy() - iou[:, 1:]).max() <= 1e-3
    assert np.abs(single_iou.numpy() - iou[:, :1]).max() <= 1e-3
    # and the thresholded masks agree
    assert ((multi.numpy() > 0) == (masks[:, 1:] > 0)).mean() > 0.9999


def test_tinysam_decoder_matches_pytorch(checkpoint_export_dir):
    from samdeploy.models.checkpoint import load_checkpoint

    out, ckpt, _official = checkpoint_export_dir("tinysam", graphs=("decoder",))
    sam, _ = load_checkpoint(ckpt, variant="tinysam")
    rng = np.random.default_rng(7)
    emb = rng.normal(size=(1, 256, 64, 64)).astype(np.float32)
    sess = ort_session(out / "decoder.onnx")
    for b, n, m in [(1, 1, False), (5, 8, True)]:
        feeds = decoder_feeds(rng, emb, b, n, m)
        iou, masks = sess.run(None, feeds)
        with torch.no_grad():
            ref_iou, ref_masks = (t.numpy() for t in sam.decode(*(torch.from_numpy(feeds[k]) for k in feeds)))
        assert rel_l2_error(ref_masks, masks) <= 1e-5
        assert np.abs(iou - ref_iou).max() <= 1e-4
