"""The factored decoder (what Sam.decode and decoder.onnx compute) equals the plain reference form
(MaskDecoder.predict_masks, which mirrors the official code) for every prompt shape and mask mix."""

import pytest
import torch

from samdeploy.models.build import random_model


@pytest.fixture(scope="module")
def sam():
    torch.manual_seed(0)
    return random_model("mobile_sam", seed=3)


@pytest.mark.parametrize("b,n", [(1, 1), (5, 3), (3, 8)])
def test_factored_equals_reference(sam, b, n):
    g = torch.Generator().manual_seed(b * 10 + n)
    emb = torch.randn(1, 256, 64, 64, generator=g)
    coords = torch.rand(b, n, 2, generator=g) * 1024
    labels = torch.randint(-1, 4, (b, n), generator=g).float()
    mask = torch.randn(b, 1, 256, 256, generator=g) * 8
    has = (torch.arange(b) % 2).float()  # mixed: with and without mask input in one call
    with torch.no_grad():
        iou_f, masks_f = sam.decode(emb, coords, labels, mask, has)
        iou_r, masks_r = sam.decode_reference(emb, coords, labels, mask, has)
    scale = masks_r.abs().max().item()
    assert scale > 1.0  # realistic logits, so the comparison is not trivially small
    assert (masks_f - masks_r).abs().max().item() <= 1e-5 * scale
    assert (iou_f - iou_r).abs().max().item() <= 1e-5
    # thresholded masks agree (the quantity users see)
    agree = ((masks_f > 0) == (masks_r > 0)).float().mean().item()
    assert agree > 0.9999
