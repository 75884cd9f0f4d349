"""samdeploy.models.hq_sam against the official HQ-SAM package (segment-anything-hq==0.3, test-only).

Seeded random weights (``random_hq_sam``: every key randomised, decoder output layers rescaled to a
trained model's logit range) are saved in the official layout (a plain state_dict via torch.save)
and loaded strictly into the oracle AND into a freshly built model of ours. vit_tiny everywhere; the
ViT path is checked on a small ViT (same code, cheap) and the vit_dim=768 decoder once; vit_b/l/h
key lists on the meta device.
"""

from __future__ import annotations

import inspect
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
from fixtures_models import contract_encoder_input, official_encoder_input, rel_err

from samdeploy.models.hq_sam import (
    HQSam,
    ImageEncoderViTHQ,
    MaskDecoderHQ,
    build_hq_sam,
    hq_select,
    make_realistic_hq_,
    random_hq_sam,
)
from samdeploy.models.init import randomize_
from samdeploy.models.prompt_encoder import PromptEncoder
from samdeploy.contract import (
    DECODER_HAS_MASK_INPUT, DECODER_IOU, DECODER_LOW_RES_MASKS, DECODER_MASK_INPUT, DECODER_POINT_COORDS,
    DECODER_POINT_LABELS, ENCODER_INPUT, ENCODER_OUTPUT, HQ_FEATURES, PROMPT_INPUTS,
)

HQ_DECODER_KEYS = 25  # hf_token 1 + hf_mlp 6 + compress_vit_feat 6 + embedding_encoder 6 + embedding_maskfeature 6
KEY_COUNTS = {"hq_vit_b": 339, "hq_vit_l": 507, "hq_vit_h": 619, "hq_vit_tiny": 464}
MODES = [(mm, hq) for mm in (True, False) for hq in (False, True)]


def _oracle():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # timm deprecation / registry-overwrite noise
        import segment_anything_hq
        from segment_anything_hq import modeling

    return segment_anything_hq.sam_model_registry, modeling


def _shapes(model: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def rel_l2(got, ref) -> float:
    got, ref = np.asarray(got, np.float64), np.asarray(ref, np.float64)
    assert got.shape == ref.shape, (got.shape, ref.shape)
    return float(np.linalg.norm(got - ref) / max(np.linalg.norm(ref), 1e-12))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(ours, oracle, checkpoint path): seeded weights saved officially, loaded strictly into both."""
    registry, _ = _oracle()
    path = tmp_path_factory.mktemp("hq") / "sam_hq_vit_tiny.pth"
    torch.save(random_hq_sam("hq_vit_tiny", seed=0).state_dict(), path)
    state = torch.load(path, map_location="cpu", weights_only=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        oracle = registry["vit_tiny"](checkpoint=None)
    oracle.load_state_dict(state, strict=True)
    oracle.eval()  # AFTER loading: the official TinyViT caches its attention biases at eval()
    ours = build_hq_sam("hq_vit_tiny")
    ours.load_state_dict(state, strict=True)
    return ours.eval(), oracle, path


@pytest.fixture(scope="module")
def tiny_embeddings(tiny, photo_resized):
    ours, oracle, _ = tiny
    with torch.no_grad():
        ref_emb, ref_interm = oracle.image_encoder(official_encoder_input(oracle, photo_resized))
        x = contract_encoder_input(photo_resized)
        emb, hq = ours.encode(x)  # the encoder graph's two outputs
        _, interm = ours.image_encoder((x - ours.pixel_mean) / ours.pixel_std)  # the early feature F_hq is made of
    return x, (emb, interm, hq), (ref_emb, ref_interm[0])


# ---- keys -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("name,official", [("hq_vit_b", "vit_b"), ("hq_vit_l", "vit_l"), ("hq_vit_h", "vit_h")])
def test_vit_keys_and_shapes_match_official_on_meta(name, official):
    registry, _ = _oracle()
    ours = build_hq_sam(name, device="meta")
    with torch.device("meta"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = registry[official](checkpoint=None)
    assert list(_shapes(ours).items()) == list(_shapes(ref).items())
    assert len(ours.state_dict()) == KEY_COUNTS[name]
    extra = [k for k in ours.state_dict() if k.split(".")[1] in ("hf_token", "hf_mlp", "compress_vit_feat", "embedding_encoder", "embedding_maskfeature")]
    assert len(extra) == HQ_DECODER_KEYS
    assert ours.mask_decoder.compress_vit_feat[0].weight.shape[0] == ours.image_encoder.pos_embed.shape[-1]


def test_tiny_keys_identical_and_strict_load(tiny):
    ours, oracle, path = tiny
    assert list(_shapes(ours).items()) == list(_shapes(oracle).items())
    assert len(ours.state_dict()) == KEY_COUNTS["hq_vit_tiny"]
    assert ours.mask_decoder.compress_vit_feat[0].weight.shape[0] == 160
    saved = torch.load(path, map_location="cpu", weights_only=True)
    for k, v in ours.state_dict().items():
        assert torch.equal(v, saved[k]), k


# ---- encoders -----------------------------------------------------------------------------------
def test_tiny_encoder_both_outputs_match_official(tiny, tiny_embeddings):
    _, oracle, _ = tiny
    _, (emb, interm, hq), (ref_emb, ref_interm) = tiny_embeddings
    assert emb.shape == (1, 256, 64, 64) and interm.shape == (1, 64, 64, 160) and hq.shape == (1, 32, 256, 256)
    assert rel_err(emb, ref_emb) < 1e-5
    assert rel_err(interm, ref_interm) < 1e-5
    # F_hq as the official MaskDecoderHQ.forward computes it from the official encoder's outputs
    dec = oracle.mask_decoder
    with torch.no_grad():
        ref_hq = dec.embedding_encoder(ref_emb) + dec.compress_vit_feat(ref_interm.permute(0, 3, 1, 2))
    assert float(ref_hq.abs().max()) > 0.1 and rel_err(hq, ref_hq) < 1e-5


def test_vit_encoder_interm_is_first_global_block_output():
    """Same code path as vit_b/l/h on a small ViT: the interm is the first global block's output."""
    _, modeling = _oracle()
    from functools import partial

    cfg = dict(embed_dim=64, depth=4, num_heads=2, global_attn_indexes=(1, 3), img_size=256, window_size=7)
    ref = modeling.ImageEncoderViT(
        img_size=256, patch_size=16, embed_dim=64, depth=4, num_heads=2, mlp_ratio=4.0, out_chans=256,
        qkv_bias=True, norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), use_rel_pos=True,
        window_size=7, global_attn_indexes=[1, 3],
    ).eval()
    ours = ImageEncoderViTHQ(mlp_dim=256, **cfg).eval()
    randomize_(ours, seed=3)
    ref.load_state_dict(ours.state_dict(), strict=True)
    x = torch.randn(2, 3, 256, 256, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        emb, interm = ours(x)
        ref_emb, ref_interms = ref(x)
    assert ours.interm_index == 1 and len(ref_interms) == 2
    assert rel_err(emb, ref_emb) < 1e-5
    assert rel_err(interm, ref_interms[0]) < 1e-5


# ---- decoder ----------------------------------------------------------------------------------------
def _prompts(case: str, b: int = 3, seed: int = 0):
    """-> (our decode inputs after the embeddings, the oracle prompt encoder's kwargs)."""
    g = torch.Generator().manual_seed(seed)
    frame = torch.tensor([1023.0, 680.0])  # chelsea resized: 1024 x 681
    clicks = torch.rand(b, 2, 2, generator=g) * frame
    labels = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])[:b]
    tl = torch.rand(b, 2, generator=g) * frame * 0.5
    box = torch.cat([tl, tl + 100.0 + torch.rand(b, 2, generator=g) * frame * 0.4], dim=1)  # [B,4] x0 y0 x1 y1
    corners, corner_labels = box.reshape(b, 2, 2), torch.tensor([[2.0, 3.0]]).expand(b, 2)
    pad, pad_label = torch.zeros(b, 1, 2), torch.full((b, 1), -1.0)
    mask = torch.randn(b, 1, 256, 256, generator=g) * 8.0
    no_mask, has_none, has_all = torch.zeros(b, 1, 256, 256), torch.zeros(b), torch.ones(b)
    if case == "clicks":
        ours = (torch.cat([clicks, pad], 1), torch.cat([labels, pad_label], 1), no_mask, has_none)
        ref = dict(points=(clicks, labels), boxes=None, masks=None)
    elif case == "box":
        ours = (corners, corner_labels, no_mask, has_none)
        ref = dict(points=None, boxes=box, masks=None)
    elif case == "box_click":
        ours = (torch.cat([clicks[:, :1], corners], 1), torch.cat([labels[:, :1], corner_labels], 1), no_mask, has_none)
        ref = dict(points=(clicks[:, :1], labels[:, :1]), boxes=box, masks=None)
    elif case == "mask_click":
        ours = (torch.cat([clicks, pad], 1), torch.cat([labels, pad_label], 1), mask, has_all)
        ref = dict(points=(clicks, labels), boxes=None, masks=mask)
    elif case == "mask_only":  # N = 0 points
        ours = (torch.zeros(b, 0, 2), torch.zeros(b, 0), mask, has_all)
        ref = dict(points=None, boxes=None, masks=mask)
    else:
        raise KeyError(case)
    return ours, ref


def _check_against_oracle(ours: HQSam, oracle, emb, interm, case: str, modes, b: int = 2, reference: bool = False) -> None:
    """The oracle's MaskDecoderHQ.forward in each (multimask, hq_token_only) mode == hq_select of
    our hq_decode outputs; with ``reference`` also our decode == our decode_reference."""
    inputs, ref_prompts = _prompts(case, b)
    with torch.no_grad():
        f_hq = ours.mask_decoder.hq_features(emb, interm)  # what our encoder graph returns; the oracle gets interm
        iou, low = ours.decode(emb, f_hq, *inputs)
        assert iou.shape == (b, 4) and low.shape == (b, 5, 256, 256)
        if reference:
            iou_ref_path, low_ref_path = ours.decode_reference(emb, f_hq, *inputs)
            assert rel_err(low, low_ref_path) < 1e-4 and rel_err(iou, iou_ref_path) < 1e-5
        sparse, dense = oracle.prompt_encoder(**ref_prompts)
        for mm, hq in modes:
            ref_masks, ref_iou = oracle.mask_decoder(
                image_embeddings=emb, image_pe=oracle.prompt_encoder.get_dense_pe(),
                sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                multimask_output=mm, hq_token_only=hq, interm_embeddings=[interm],
            )
            scores, masks = hq_select(iou.numpy(), low.numpy(), multimask=mm, hq_token_only=hq)
            assert masks.shape == tuple(ref_masks.shape) == (b, 1, 256, 256)
            assert scores.shape == tuple(ref_iou.shape) == (b, 1)
            assert float(ref_masks.abs().max()) > 5.0  # realistic logit range, not float noise
            err = rel_err(torch.from_numpy(masks), ref_masks)
            assert err < 1e-4, (case, mm, hq, err)
            assert float(np.abs(scores - ref_iou.numpy()).max()) < 1e-5, (case, mm, hq)


# Every (multimask, hq_token_only) mode on clicks; two complementary modes per other prompt kind
# (each oracle call runs the HQ 256x256 convolutions per prompt: the full cross product is ~2x slower).
DECODER_CASES = [
    ("clicks", MODES),
    ("box", [(True, False), (False, True)]),
    ("box_click", [(False, False), (True, True)]),
    ("mask_click", [(True, False), (False, True)]),
    ("mask_only", [(False, False), (True, True)]),  # N = 0 points
]


@pytest.mark.parametrize("case,modes", DECODER_CASES, ids=[c for c, _ in DECODER_CASES])
def test_tiny_decoder_matches_official(tiny, tiny_embeddings, case, modes):
    ours, oracle, _ = tiny
    _, _, (emb, interm) = tiny_embeddings  # the oracle's encoder outputs feed both decoders
    _check_against_oracle(ours, oracle, emb, interm, case, modes, reference=(case == "clicks"))


def test_vit_b_decoder_matches_official():
    """The vit_dim=768 decoder (hq_vit_b) on unit-scale random embeddings, one case."""
    _, modeling = _oracle()
    ours = HQSam(torch.nn.Identity(), PromptEncoder(), MaskDecoderHQ(vit_dim=768)).eval()
    randomize_(ours, seed=5)
    make_realistic_hq_(ours)
    ref = modeling.Sam(
        image_encoder=torch.nn.Identity(),
        prompt_encoder=modeling.PromptEncoder(embed_dim=256, image_embedding_size=(64, 64), input_image_size=(1024, 1024), mask_in_chans=16),
        mask_decoder=modeling.MaskDecoderHQ(
            transformer_dim=256, transformer=modeling.TwoWayTransformer(depth=2, embedding_dim=256, mlp_dim=2048, num_heads=8),
            num_multimask_outputs=3, iou_head_depth=3, iou_head_hidden_dim=256, vit_dim=768,
        ),
        pixel_mean=[123.675, 116.28, 103.53], pixel_std=[58.395, 57.12, 57.375],
    ).eval()
    ref.load_state_dict(ours.state_dict(), strict=True)
    g = torch.Generator().manual_seed(1)
    emb, interm = torch.randn(1, 256, 64, 64, generator=g), torch.randn(1, 64, 64, 768, generator=g)
    _check_against_oracle(ours, ref, emb, interm, "box_click", [(True, False)], b=1)


def test_hq_select_rules_and_torch_free():
    iou = np.array([[0.9, 0.1, 0.7, 0.7], [0.2, 0.3, 0.8, 0.1]], np.float32)
    low = np.arange(2 * 5 * 2 * 2, dtype=np.float32).reshape(2, 5, 2, 2)
    s, m = hq_select(iou, low, multimask=True, hq_token_only=False)
    np.testing.assert_array_equal(s[:, 0], iou[[0, 1], [2, 2]])  # tie 2/3 -> first (token 2)
    np.testing.assert_array_equal(m[:, 0], [low[0, 2] + low[0, 4], low[1, 2] + low[1, 4]])
    s, m = hq_select(iou, low, multimask=False, hq_token_only=True)
    np.testing.assert_array_equal(s[:, 0], iou[:, 0])
    np.testing.assert_array_equal(m[:, 0], low[:, 4])
    # torch-free: its source runs in a fresh interpreter where importing torch fails
    code = "import sys; sys.modules['torch'] = None\nfrom typing import Any\n" + inspect.getsource(hq_select) + (
        "import numpy as np\ns, m = hq_select(np.ones((2, 4)), np.zeros((2, 5, 3, 3)), True, False)\n"
        "assert s.shape == (2, 1) and m.shape == (2, 1, 3, 3)\n")
    subprocess.run([sys.executable, "-c", code], check=True)


# ---- ONNX -----------------------------------------------------------------------------------------------
class _Enc(torch.nn.Module):
    def __init__(self, sam: HQSam) -> None:
        super().__init__()
        self.sam = sam

    def forward(self, image):
        return self.sam.encode(image)


class _Dec(torch.nn.Module):
    def __init__(self, sam: HQSam) -> None:
        super().__init__()
        self.sam = sam

    def forward(self, *inputs):
        return self.sam.decode(*inputs)


def _session(path):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _export(module, args, path, inputs, outputs, dynamic_axes=None):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, args, str(path), dynamo=False, opset_version=17,
                          input_names=list(inputs), output_names=list(outputs), dynamic_axes=dynamic_axes)


def test_onnx_encoder_two_outputs(tiny, tiny_embeddings, tmp_path):
    ours, _, _ = tiny
    x, (emb, _, hq), _ = tiny_embeddings
    path = tmp_path / "encoder.onnx"
    _export(_Enc(ours).eval(), (x,), path, [ENCODER_INPUT], [ENCODER_OUTPUT, HQ_FEATURES])
    got_emb, got_hq = _session(path).run(None, {ENCODER_INPUT: x.numpy()})
    assert got_hq.shape == (1, 32, 256, 256)
    assert rel_l2(got_emb, emb) <= 1e-5
    assert rel_l2(got_hq, hq) <= 1e-5


def test_onnx_decoder_dynamic_b_and_n(tiny, tiny_embeddings, tmp_path):
    import onnx

    ours, _, _ = tiny
    _, (emb, _, hq), _ = tiny_embeddings
    names = [ENCODER_OUTPUT, HQ_FEATURES, *PROMPT_INPUTS]
    outs = [DECODER_IOU, DECODER_LOW_RES_MASKS]
    per_point = {0: "num_prompts", 1: "num_points"}
    axes = {DECODER_POINT_COORDS: per_point, DECODER_POINT_LABELS: per_point,
            **{n: {0: "num_prompts"} for n in (DECODER_MASK_INPUT, DECODER_HAS_MASK_INPUT, DECODER_IOU, DECODER_LOW_RES_MASKS)}}
    example, _ = _prompts("mask_click", b=2, seed=7)  # B=2, N=3: neither dynamic axis is 1
    path = tmp_path / "decoder.onnx"
    _export(_Dec(ours).eval(), (emb, hq) + example, path, names, outs, axes)
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert not ops & {"OneHot", "Tile", "NonZero", "If", "Loop", "ScatterND"}, ops
    sess = _session(path)
    for case, b in [("clicks", 3), ("box", 1), ("box_click", 2), ("mask_only", 3)]:  # mask_only: N = 0
        inputs, _ = _prompts(case, b, seed=11)
        feeds = dict(zip(names, [t.numpy() for t in (emb, hq) + inputs]))
        got_iou, got_low = sess.run(None, feeds)
        with torch.no_grad():
            iou, low = ours.decode(emb, hq, *inputs)
        assert got_low.shape == (b, 5, 256, 256)
        assert rel_l2(got_iou, iou) <= 1e-4, case
        assert rel_l2(got_low, low) <= 1e-4, case
