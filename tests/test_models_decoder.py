"""Sam.decode (our prompt encoder + mask decoder, the decoder.onnx contract) against the official
segment_anything / mobile_sam prompt encoder + mask decoder, on the image embedding of a real photo.

The official side gets the prompts the official way (``points=(coords, labels)`` padded by its own
rule when there is no box, ``boxes=``, ``masks=``) and is called with multimask_output True and False;
our side gets the contract inputs (box as corner points labelled 2/3, padding point (0,0,-1) appended
by the caller, mask_input + has_mask_input) and returns all 4 tokens.

Tolerance: max |ours - official| <= 1e-4 x max(1, max |official|) (``rel_err``), float32.
"""

from __future__ import annotations

import pytest
import torch

from fixtures_models import rel_err

TOL = 1e-4
H_RESIZED, W_RESIZED = 681, 1024  # 'chelsea' (300x451) resized longest side to 1024


def _official_decode(official, emb, coords=None, labels=None, boxes=None, masks=None, via_forward=False):
    """-> (iou [B,4], masks [B,4,256,256]) from the official prompt encoder + mask decoder.

    ``predict_masks`` returns all 4 tokens (what the official ``forward`` slices: token 0 for
    multimask_output=False, 1..3 for True); ``via_forward`` assembles them from the two ``forward``
    calls instead (twice the cost; used once to pin that equivalence)."""
    pe = official.prompt_encoder
    points = (coords, labels) if coords is not None else None
    with torch.no_grad():
        sparse, dense = pe(points=points, boxes=boxes, masks=masks)
        args = dict(
            image_embeddings=emb,
            image_pe=pe.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
        )
        if not via_forward:
            m, iou = official.mask_decoder.predict_masks(**args)
            return iou, m
        single_m, single_iou = official.mask_decoder(**args, multimask_output=False)
        multi_m, multi_iou = official.mask_decoder(**args, multimask_output=True)
    return torch.cat([single_iou, multi_iou], 1), torch.cat([single_m, multi_m], 1)


def _contract_inputs(coords=None, labels=None, boxes=None, masks=None, b=None):
    """The decoder.onnx inputs for the same prompts (what the runtime builds)."""
    parts_c, parts_l = [], []
    if coords is not None:
        b = coords.shape[0]
        parts_c.append(coords)
        parts_l.append(labels)
    if boxes is not None:
        b = boxes.shape[0]
        parts_c.append(boxes.reshape(b, 2, 2))
        parts_l.append(torch.tensor([[2.0, 3.0]]).expand(b, 2))
    else:
        parts_c.append(torch.zeros(b, 1, 2))
        parts_l.append(-torch.ones(b, 1))
    mask_input = masks if masks is not None else torch.zeros(b, 1, 256, 256)
    has = torch.full((b,), 1.0 if masks is not None else 0.0)
    return torch.cat(parts_c, 1), torch.cat(parts_l, 1), mask_input, has


def _random_points(b, n, seed):
    g = torch.Generator().manual_seed(seed)
    coords = torch.rand(b, n, 2, generator=g) * torch.tensor([W_RESIZED - 1, H_RESIZED - 1])
    labels = (torch.rand(b, n, generator=g) > 0.3).float()  # mostly positive, some negative
    return coords, labels


def _random_boxes(b, seed):
    g = torch.Generator().manual_seed(seed)
    xy0 = torch.rand(b, 2, generator=g) * torch.tensor([600.0, 400.0])
    wh = 50 + torch.rand(b, 2, generator=g) * 300
    return torch.cat([xy0, xy0 + wh], 1)


def _compare(official, ours, emb, via_forward=False, **prompts):
    ref_iou, ref_masks = _official_decode(official, emb, via_forward=via_forward, **prompts)
    with torch.no_grad():
        iou, masks = ours.decode(emb, *_contract_inputs(**prompts))
    assert iou.shape == ref_iou.shape and masks.shape == ref_masks.shape
    assert rel_err(masks, ref_masks) <= TOL
    assert rel_err(iou, ref_iou) <= TOL
    return masks, ref_masks


@pytest.fixture(scope="module")
def mobile(model_pair_factory, embedding_pair_factory):
    official, ours, _ = model_pair_factory("mobile_sam")
    ref_emb, _ = embedding_pair_factory("mobile_sam")
    return official, ours, ref_emb


@pytest.mark.parametrize("b", [1, 5])
@pytest.mark.parametrize("n", [1, 3, 8])
def test_points_dynamic_batch_and_count(mobile, b, n):
    official, ours, emb = mobile
    coords, labels = _random_points(b, n, seed=10 * b + n)
    masks, ref = _compare(official, ours, emb, coords=coords, labels=labels)
    # realistic logits: the thresholded masks agree (the factored arithmetic rounds differently, so
    # a pixel whose logit is ~0 may flip) and are not trivial
    assert ((masks > 0) == (ref > 0)).float().mean() > 0.9999
    assert 0.01 < (ref > 0).float().mean() < 0.99
    assert ref.abs().max() > 5.0


def test_single_and_multimask_official_outputs(mobile):
    """Token 0 = the official multimask_output=False answer, tokens 1..3 = multimask_output=True."""
    official, ours, emb = mobile
    coords, labels = _random_points(1, 2, seed=1)
    _compare(official, ours, emb, via_forward=True, coords=coords, labels=labels)


@pytest.mark.parametrize("b", [1, 3])
def test_box(mobile, b):
    official, ours, emb = mobile
    _compare(official, ours, emb, boxes=_random_boxes(b, seed=b))


@pytest.mark.parametrize("n", [1, 3])
def test_box_and_points(mobile, n):
    official, ours, emb = mobile
    coords, labels = _random_points(2, n, seed=100 + n)
    _compare(official, ours, emb, coords=coords, labels=labels, boxes=_random_boxes(2, seed=7))


def test_mask_input(mobile):
    official, ours, emb = mobile
    coords, labels = _random_points(2, 2, seed=3)
    g = torch.Generator().manual_seed(4)
    masks = torch.randn(2, 1, 256, 256, generator=g) * 10
    _compare(official, ours, emb, coords=coords, labels=labels, masks=masks)


def test_mixed_has_mask_input_within_a_batch(mobile):
    """has_mask_input selects per prompt: rows with 0 ignore their mask_input entirely."""
    official, ours, emb = mobile
    coords, labels = _random_points(3, 2, seed=5)
    mask = torch.randn(3, 1, 256, 256, generator=torch.Generator().manual_seed(6)) * 10
    has = torch.tensor([1.0, 0.0, 1.0])
    pc, pl, _, _ = _contract_inputs(coords=coords, labels=labels)
    with torch.no_grad():
        iou, got = ours.decode(emb, pc, pl, mask, has)
    for i in range(3):
        ref_iou, ref = _official_decode(
            official, emb, coords=coords[i : i + 1], labels=labels[i : i + 1], masks=mask[i : i + 1] if has[i] else None
        )
        assert rel_err(got[i : i + 1], ref) <= TOL
        assert rel_err(iou[i : i + 1], ref_iou) <= TOL


def test_image_embedding_is_broadcast_not_required_per_prompt(mobile):
    """decode takes ONE image embedding [1,...] for B prompts, and each prompt's answer equals the
    answer for that prompt alone."""
    _, ours, emb = mobile
    coords, labels = _random_points(3, 2, seed=8)
    pc, pl, mi, has = _contract_inputs(coords=coords, labels=labels)
    with torch.no_grad():
        iou, masks = ours.decode(emb, pc, pl, mi, has)
        for i in range(3):
            iou_i, masks_i = ours.decode(emb, pc[i : i + 1], pl[i : i + 1], mi[i : i + 1], has[i : i + 1])
            assert rel_err(masks[i : i + 1], masks_i) <= 1e-5
            assert rel_err(iou[i : i + 1], iou_i) <= 1e-5


def test_end_to_end_with_our_embedding(mobile, embedding_pair_factory):
    official, ours, ref_emb = mobile
    _, our_emb = embedding_pair_factory("mobile_sam")
    coords, labels = _random_points(2, 3, seed=9)
    ref_iou, ref = _official_decode(official, ref_emb, coords=coords, labels=labels)
    with torch.no_grad():
        iou, got = ours.decode(our_emb, *_contract_inputs(coords=coords, labels=labels))
    assert rel_err(got, ref) <= TOL
    assert rel_err(iou, ref_iou) <= TOL


@pytest.mark.parametrize("variant", ["slimsam_77", "slimsam_50", "vit_b"])
def test_decoder_of_vit_variants(variant, model_pair_factory, embedding_pair_factory):
    """The decoder weights of every ViT variant, on a real embedding of the photo (that variant's own for
    the SlimSAMs; vit_b's decoder gets SlimSAM-77's, so its 1024x1024 ViT-B forward is not paid here)."""
    official, ours, _ = model_pair_factory(variant)
    ref_emb, _ = embedding_pair_factory("slimsam_77" if variant == "vit_b" else variant)
    coords, labels = _random_points(2, 3, seed=11)
    _compare(official, ours, ref_emb, coords=coords, labels=labels)
    _compare(official, ours, ref_emb, coords=coords[:, :1], labels=labels[:, :1], boxes=_random_boxes(2, seed=12))


def test_tinysam_decoder_always_multimask_contract(model_pair_factory, embedding_pair_factory):
    """TinySAM has MobileSAM's architecture; its decoder answers with tokens 1..3 only, which is a
    contract flag (the graph still returns all 4 tokens)."""
    official, ours, info = model_pair_factory("tinysam")
    ref_emb, _ = embedding_pair_factory("mobile_sam")
    assert info.variant == "tinysam" and ours.contract.family == "tinysam"
    assert ours.contract.decoder.always_multimask is True
    coords, labels = _random_points(2, 2, seed=13)
    ref_iou, ref = _official_decode(official, ref_emb, coords=coords, labels=labels)
    with torch.no_grad():
        iou, got = ours.decode(ref_emb, *_contract_inputs(coords=coords, labels=labels))
    # TinySAM's official MaskDecoder.forward always returns slice(1, None): the multimask tokens
    assert rel_err(got[:, 1:], ref[:, 1:]) <= TOL and rel_err(iou[:, 1:], ref_iou[:, 1:]) <= TOL
