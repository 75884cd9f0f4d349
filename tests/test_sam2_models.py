"""SAM2 / SAM2.1 image path (models/hiera.py, models/sam2.py) against the official sam2==1.1.0 code.

Oracle: the unpacked sam2 1.1.0 sdist on sys.path (default /tmp/sam2src, override with
SAMDEPLOY_SAM2_SRC), or an installed ``sam2`` package (``SAM2_BUILD_CUDA=0 pip install
--no-build-isolation sam2==1.1.0 hydra-core iopath``). Needs hydra-core and iopath; no CUDA extension.

- keys and shapes of all 8 variants (SAM2 / SAM2.1 x t/s/b+/l) equal the official model's (both on meta);
- seeded random weights saved as the official file layout ``{"model": sd}`` load strictly into the oracle;
- encoder (all three outputs) and decoder (clicks, box, mask input, no points) match the official image
  path (SAM2ImagePredictor.set_image / _predict arithmetic) to float precision (sam2.1_hiera_t);
- ONNX (opset 17, TorchScript exporter) of the encoder and of the decoder (dynamic B and N, N = 0)
  matches PyTorch.
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from fixtures_families import sam2_config as _config, sam2_oracle_on_meta as _oracle_on_meta  # noqa: E402
import torch

from samdeploy.models.sam2 import SAM2_OUTPUT_NAMES, SAM2_VARIANTS, build_sam2_image, random_sam2_image, sam2_variant_of
from samdeploy.contract import (
    DECODER_HAS_MASK_INPUT, DECODER_IOU, DECODER_LOW_RES_MASKS, DECODER_MASK_INPUT, DECODER_POINT_COORDS,
    DECODER_POINT_LABELS, ENCODER_INPUT, PROMPT_INPUTS, SAM2_OBJECT_SCORE,
)

SAM2_SRC = Path(os.environ.get("SAMDEPLOY_SAM2_SRC", "/tmp/sam2src"))
TINY = "sam2.1_hiera_t"
EXPECTED_KEYS = {"t": (468, 471), "s": (516, 519), "b+": (612, 615), "l": (900, 903)}


def _rel(a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray) -> float:
    a = torch.as_tensor(np.asarray(a, dtype=np.float64)) if not torch.is_tensor(a) else a.double()
    b = torch.as_tensor(np.asarray(b, dtype=np.float64)) if not torch.is_tensor(b) else b.double()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


@pytest.fixture(scope="module")
def sam2_pkg():
    if SAM2_SRC.is_dir() and str(SAM2_SRC) not in sys.path:
        sys.path.insert(0, str(SAM2_SRC))
    try:
        importlib.import_module("hydra")
        importlib.import_module("iopath")
        pkg = importlib.import_module("sam2")
        build_sam = importlib.import_module("sam2.build_sam")
    except ImportError as exc:
        pytest.skip(
            f"SAM2 oracle unavailable ({exc}): unpack the sam2==1.1.0 sdist to {SAM2_SRC} (or set "
            "SAMDEPLOY_SAM2_SRC) and `pip install hydra-core iopath`"
        )
    return pkg, build_sam


@pytest.mark.parametrize("name", sorted(SAM2_VARIANTS))
def test_keys_and_shapes_equal_official(sam2_pkg, name):
    ours = build_sam2_image(name, device="meta").state_dict()
    official = _oracle_on_meta(name).state_dict()
    assert {k: tuple(v.shape) for k, v in ours.items()} == {k: tuple(v.shape) for k, v in official.items()}
    hiera = SAM2_VARIANTS[name][0]
    assert len(ours) == EXPECTED_KEYS[hiera][int(name.startswith("sam2.1"))]
    assert ("no_obj_embed_spatial" in ours) == name.startswith("sam2.1")


# ---- numerics on sam2.1_hiera_t -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pair(sam2_pkg, tmp_path_factory):
    """(ours, oracle) with the same seeded weights; the oracle loads them from an official-layout file."""
    _, build_sam = sam2_pkg
    torch.manual_seed(0)
    ours = random_sam2_image(TINY, seed=0, realistic=True)
    path = tmp_path_factory.mktemp("sam2") / "sam2.1_hiera_tiny.pt"
    torch.save({"model": ours.state_dict()}, path)
    oracle = build_sam.build_sam2(_config(TINY), None, device="cpu")
    sd = torch.load(path, map_location="cpu", weights_only=True)["model"]
    oracle.load_state_dict(sd, strict=True)
    reloaded = build_sam2_image(TINY)
    reloaded.load_state_dict(sd, strict=True)
    assert sam2_variant_of(sd) == TINY
    return ours, oracle.eval()


@pytest.fixture(scope="module")
def encoded(pair):
    ours, oracle = pair
    g = torch.Generator().manual_seed(1)
    image = torch.rand(1, 3, 1024, 1024, generator=g) * 255.0
    with torch.no_grad():
        mine = ours.encode(image)
        # SAM2ImagePredictor.set_image after SAM2Transforms (ToTensor /255, Normalize)
        mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
        std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
        out = oracle.forward_image((image / 255.0 - mean) / std)
        _, feats, _, _ = oracle._prepare_backbone_features(out)
        feats[-1] = feats[-1] + oracle.no_mem_embed
        sizes = [(256, 256), (128, 128), (64, 64)]
        maps = [f.permute(1, 2, 0).reshape(1, -1, *s) for f, s in zip(feats, sizes)]
    ref = (maps[2], maps[0], maps[1])  # image_embed, high_res_feats[0], high_res_feats[1]
    return image, mine, ref


def test_encoder_matches_official(encoded):
    _, mine, ref = encoded
    for name, a, b in zip(SAM2_OUTPUT_NAMES, mine, ref):
        assert a.shape == b.shape, name
        assert _rel(a, b) < 1e-5, (name, _rel(a, b))


def _prompts(kind: str):
    """-> (ours: coords, labels, mask, has), (official: points or None, mask or None)."""
    g = torch.Generator().manual_seed(2)
    pad_c, pad_l = torch.zeros(1, 1, 2), -torch.ones(1, 1)
    if kind in ("clicks", "mask"):
        clicks = torch.rand(2, 2, 2, generator=g) * 1024.0
        labels = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    elif kind == "box":
        lo = torch.rand(2, 1, 2, generator=g) * 500.0
        clicks = torch.cat([lo, lo + 300.0], dim=1)
        labels = torch.tensor([[2.0, 3.0], [2.0, 3.0]])
    if kind == "none":  # no points, with and without a mask input
        mask = torch.randn(2, 1, 256, 256, generator=g) * 8.0
        has = torch.tensor([1.0, 0.0])
        return (torch.zeros(2, 0, 2), torch.zeros(2, 0), mask, has), None
    b = clicks.shape[0]
    # SAM2ImagePredictor always appends the padding point (boxes travel as points, `pad = boxes is None`)
    coords = torch.cat([clicks, pad_c.expand(b, 1, 2)], dim=1)
    lab = torch.cat([labels, pad_l.expand(b, 1)], dim=1)
    if kind == "mask":
        mask = torch.randn(b, 1, 256, 256, generator=g) * 8.0
        return (coords, lab, mask, torch.ones(b)), ((clicks, labels.int()), mask)
    return (coords, lab, torch.zeros(b, 1, 256, 256), torch.zeros(b)), ((clicks, labels.int()), None)


def _official_decode(oracle, feats, points, mask):
    emb, f0, f1 = feats
    pe, dec = oracle.sam_prompt_encoder, oracle.sam_mask_decoder
    sparse, dense = pe(points=points, boxes=None, masks=mask)
    b = sparse.shape[0]
    kw = dict(image_embeddings=emb, image_pe=pe.get_dense_pe(), sparse_prompt_embeddings=sparse,
              dense_prompt_embeddings=dense, repeat_image=b > 1, high_res_features=[f0, f1])
    multi, iou_multi, _, obj = dec(multimask_output=True, **kw)
    masks, iou, _, obj_all = dec.predict_masks(**kw)  # all four tokens (forward slices these)
    assert torch.equal(masks[:, 1:], multi) and torch.equal(obj, obj_all)
    return iou, masks, obj


@pytest.mark.parametrize("kind", ["clicks", "box", "mask", "none"])
def test_decoder_matches_official(pair, encoded, kind):
    ours, oracle = pair
    _, mine_feats, ref_feats = encoded
    (coords, labels, mask, has), official = _prompts(kind)
    with torch.no_grad():
        got = ours.decode(*mine_feats, coords, labels, mask, has)
        got_ref = ours.decode_reference(*ref_feats, coords, labels, mask, has)
        if official is None:  # no points: mask-only prompt (B=1) and the empty prompt (B=1)
            want = [_official_decode(oracle, ref_feats, None, mask[:1]), _official_decode(oracle, ref_feats, None, None)]
            want = tuple(torch.cat(parts) for parts in zip(*want))
        else:
            want = _official_decode(oracle, ref_feats, *official)
        got_same_feats = ours.decode(*ref_feats, coords, labels, mask, has)
    outputs = (DECODER_IOU, DECODER_LOW_RES_MASKS, SAM2_OBJECT_SCORE)
    for name, a, r, s, b in zip(outputs, got, got_ref, got_same_feats, want):
        assert a.shape == b.shape, name
        assert _rel(s, b) < 1e-5, (kind, name, "factored", _rel(s, b))
        assert _rel(r, b) < 1e-5, (kind, name, "reference", _rel(r, b))
        assert _rel(a, b) < 1e-4, (kind, name, "end to end", _rel(a, b))
    assert got[0].min() >= 0 and got[0].max() <= 1  # sigmoid scores, as the official decoder returns


# ---- ONNX ----------------------------------------------------------------------------------------------
class _Encoder(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, image):
        return self.model.encode(image)


class _Decoder(_Encoder):
    def forward(self, *args):
        return self.model.decode(*args)


def _ops(path: Path) -> set[str]:
    import onnx

    return {n.op_type for n in onnx.load(str(path), load_external_data=False).graph.node}


BANNED = {"OneHot", "Tile", "NonZero", "ScatterND", "DFT", "Resize"}


def _session(path: Path):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def test_onnx_encoder_matches_pytorch(pair, encoded, tmp_path):
    ours, _ = pair
    image, mine, _ = encoded
    path = tmp_path / "encoder.onnx"
    torch.onnx.export(_Encoder(ours), (image,), str(path), dynamo=False, opset_version=17, do_constant_folding=True,
                      input_names=[ENCODER_INPUT], output_names=list(SAM2_OUTPUT_NAMES),
                      dynamic_axes={ENCODER_INPUT: {0: "B"}, **{n: {0: "B"} for n in SAM2_OUTPUT_NAMES}})
    assert not (_ops(path) & BANNED), _ops(path) & BANNED
    outs = _session(path).run(list(SAM2_OUTPUT_NAMES), {ENCODER_INPUT: image.numpy()})
    for name, a, b in zip(SAM2_OUTPUT_NAMES, outs, mine):
        assert a.shape == tuple(b.shape), name
        assert _rel(a, b) <= 1e-5, (name, _rel(a, b))


def test_onnx_decoder_dynamic_b_and_n(pair, encoded, tmp_path):
    ours, _ = pair
    _, feats, _ = encoded
    (coords, labels, mask, has), _ = _prompts("mask")
    names_in = [*SAM2_OUTPUT_NAMES, *PROMPT_INPUTS]
    names_out = [DECODER_IOU, DECODER_LOW_RES_MASKS, SAM2_OBJECT_SCORE]
    path = tmp_path / "decoder.onnx"
    torch.onnx.export(_Decoder(ours), (*feats, coords, labels, mask, has), str(path), dynamo=False, opset_version=17,
                      do_constant_folding=True, input_names=names_in, output_names=names_out,
                      dynamic_axes={DECODER_POINT_COORDS: {0: "B", 1: "N"}, DECODER_POINT_LABELS: {0: "B", 1: "N"},
                                    DECODER_MASK_INPUT: {0: "B"}, DECODER_HAS_MASK_INPUT: {0: "B"},
                                    **{n: {0: "B"} for n in names_out}})
    assert not (_ops(path) & BANNED), _ops(path) & BANNED
    sess = _session(path)
    cases = [_prompts("box")[0], _prompts("none")[0], (coords[:1, :1], labels[:1, :1], mask[:1], has[:1])]
    cases.append((torch.rand(3, 4, 2) * 1024, torch.tensor([[1.0, 0, 2, 3]] * 3), torch.randn(3, 1, 256, 256), torch.ones(3)))
    for c, l, m, h in cases:
        feed = dict(zip(names_in, [t.numpy() for t in (*feats, c, l, m, h)]))
        outs = sess.run(names_out, feed)
        with torch.no_grad():
            want = ours.decode(*feats, c, l, m, h)
        for name, a, b in zip(names_out, outs, want):
            assert a.shape == tuple(b.shape), (name, c.shape)
            assert _rel(a, b) <= 1e-4, (name, tuple(c.shape), _rel(a, b))
