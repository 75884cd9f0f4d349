"""samdeploy.models.efficientvit_sam against the official EfficientViT-SAM encoder (efficientsam oracle).

The `efficientsam` package (1.0.0) is mit-han-lab's EfficientViT-SAM repackaged. The official L0 model
gets seeded random values in every parameter AND buffer (BN running stats included), its encoder
state_dict is loaded strictly into ours, and both run on one real photograph preprocessed the
EfficientViT-SAM way (longest side 512, SAM mean/std, zero padding bottom/right). The other variants
are compared key by key on the meta device.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from fixtures_models import export_encoder_and_run
import torch.nn.functional as F

pytest.importorskip("efficientsam")

from samdeploy.models.common import LayerNorm2d  # noqa: E402
from samdeploy.models.efficientvit_sam import (  # noqa: E402
    EFFICIENTVIT_SAM_CONFIGS,
    EfficientViTSamImageEncoder,
    LiteMLA,
    efficientvit_sam_encoder,
)

PHOTO = "coffee"  # 400x600 -> 341x512, then 171 rows of zero padding

# Official state_dict sizes (whole EfficientViTSam = image_encoder + SAM's prompt encoder + mask
# decoder, the latter two 137 keys in every variant) and encoder parameter counts.
FULL_KEYS = {"l0": 409, "l1": 515, "l2": 645, "xl0": 455, "xl1": 701}
PROMPT_DECODER_KEYS = 137
ENCODER_PARAMS = {"l0": 30_728_224, "l1": 43_585_568, "l2": 57_264_032, "xl0": 112_893_344, "xl1": 199_281_568}


def _official_sam(name: str):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # timm / torchvision deprecation warnings
        from efficientsam.models.efficientvit import sam as official_sam

        return getattr(official_sam, f"efficientvit_sam_{name}")()


def _set_norm_eps(model: torch.nn.Module, eps: float) -> None:
    from efficientsam.models.nn.norm import set_norm_eps

    set_norm_eps(model, eps)


def _randomise_(module: torch.nn.Module, seed: int) -> None:
    """Overwrite every parameter and buffer with seeded random values of a sane scale."""
    g = torch.Generator().manual_seed(seed)
    new = {}
    for key, t in module.state_dict().items():
        if t.dtype == torch.int64:  # num_batches_tracked
            new[key] = torch.randint(0, 1000, t.shape, generator=g)
        elif key.endswith("running_var"):
            new[key] = torch.rand(t.shape, generator=g) * 1.5 + 0.5
        elif key.endswith(("running_mean", "bias")):
            new[key] = torch.randn(t.shape, generator=g) * 0.1
        elif t.ndim == 1:  # BatchNorm / LayerNorm weights
            new[key] = torch.rand(t.shape, generator=g) + 0.5
        else:  # conv weights: unit-variance outputs
            new[key] = torch.randn(t.shape, generator=g) / t[0].numel() ** 0.5
    module.load_state_dict(new, strict=True)


def _low_variance_bn_(module: torch.nn.Module, var: float) -> None:
    """Rescale every conv+BN pair so that the BN sees (and expects) activations of variance ~`var`.

    The scale of everything else is unchanged, but now eps (1e-6 vs 1e-5) is comparable to the
    running variances, as for the near-dead channels of a trained network."""
    sd = module.state_dict()
    for name, sub in module.named_modules():
        conv, norm = getattr(sub, "conv", None), getattr(sub, "norm", None)
        if isinstance(conv, torch.nn.Conv2d) and isinstance(norm, torch.nn.BatchNorm2d):
            sd[f"{name}.conv.weight"] = sd[f"{name}.conv.weight"] * var**0.5
            sd[f"{name}.norm.running_mean"] = sd[f"{name}.norm.running_mean"] * var**0.5
            sd[f"{name}.norm.running_var"] = sd[f"{name}.norm.running_var"] * var
    module.load_state_dict(sd, strict=True)


def _rel_err(got: torch.Tensor, ref: torch.Tensor) -> tuple[float, float]:
    """(max abs error relative to the output std, relative L2 error)."""
    err = (got - ref).abs()
    return (err.max() / ref.std()).item(), (err.norm() / ref.norm()).item()


@pytest.fixture(scope="module")
def official():
    """Official L0 EfficientViTSam, randomised encoder, eps set to 1e-6 as the official builder does."""
    torch.manual_seed(0)
    sam = _official_sam("l0")
    _randomise_(sam.image_encoder, seed=1)
    _set_norm_eps(sam, 1e-6)
    return sam.eval()


@pytest.fixture(scope="module")
def sam_input(official, photos) -> torch.Tensor:
    x = official.transform(photos[PHOTO])[None]  # SamResize(512) (PIL), ToTensor, Normalize, SamPad
    assert x.shape == (1, 3, 512, 512)
    assert torch.count_nonzero(x[..., 341:, :]) == 0 and torch.count_nonzero(x[..., 340, :]) > 0
    return x


@pytest.fixture(scope="module")
def official_out(official, sam_input) -> torch.Tensor:
    with torch.no_grad():
        return official.image_encoder(sam_input)


@pytest.fixture(scope="module")
def ours(official) -> EfficientViTSamImageEncoder:
    model = efficientvit_sam_encoder("l0").eval()
    model.load_state_dict(official.image_encoder.state_dict(), strict=True)
    return model


@pytest.fixture(scope="module")
def ours_out(ours, sam_input) -> torch.Tensor:
    with torch.no_grad():
        return ours(sam_input)


@pytest.mark.parametrize("name", ["l0", "l1", "l2", "xl0", "xl1"])
def test_state_dict_keys_and_shapes_equal_official(name):
    with torch.device("meta"):
        sam = _official_sam(name)
        model = efficientvit_sam_encoder(name)
    full = sam.state_dict()
    ref = sam.image_encoder.state_dict()
    got = model.state_dict()
    assert len(full) == FULL_KEYS[name]
    assert len(full) - len(ref) == PROMPT_DECODER_KEYS
    assert list(got) == list(ref)  # same keys, same order
    for key, t in ref.items():
        assert got[key].shape == t.shape, key
        assert got[key].dtype == t.dtype, key
    assert {k.split(".")[0] for k in got} == {"backbone", "neck", "norm"}
    assert sum(p.numel() for p in model.parameters()) == ENCODER_PARAMS[name]
    assert model.input_size == (512 if name.startswith("l") else 1024)


def test_matches_official_on_photograph(official_out, ours_out, record_property):
    assert ours_out.shape == official_out.shape == (1, 256, 64, 64)
    max_rel, rel_l2 = _rel_err(ours_out, official_out)
    record_property("efficientvit_l0_max_abs_over_std", max_rel)
    record_property("efficientvit_l0_rel_l2", rel_l2)
    print(f"\nEfficientViT-SAM-L0 vs official on {PHOTO}: max abs / std {max_rel:.3g}, rel L2 {rel_l2:.3g}, "
          f"output std {official_out.std().item():.3g}")
    # Same ops in the same order: bit-identical on this machine (0.0 / 0.0); allow BLAS differences.
    assert max_rel <= 1e-4
    assert rel_l2 <= 1e-5


def test_every_norm_uses_eps_1e6(ours):
    norms = [m for m in ours.modules() if isinstance(m, (torch.nn.BatchNorm2d, LayerNorm2d))]
    assert len(norms) == 1 + sum(isinstance(m, torch.nn.BatchNorm2d) for m in ours.modules())
    assert {m.eps for m in norms} == {1e-6}
    assert {m.attn_eps for m in ours.modules() if isinstance(m, LiteMLA)} == {1e-15}


def test_norm_eps_matters(official, ours, sam_input, official_out, ours_out):
    """With the official (default) eps 1e-5 the same weights give a measurably different output."""
    eps5 = efficientvit_sam_encoder("l0", norm_eps=1e-5).eval()
    eps5.load_state_dict(official.image_encoder.state_dict(), strict=True)
    with torch.no_grad():
        out5 = eps5(sam_input)
    parity, _ = _rel_err(ours_out, official_out)
    eps_effect, eps_l2 = _rel_err(out5, official_out)
    print(f"\nnorm eps 1e-5 instead of 1e-6 (running_var 0.5..2): max abs / std {eps_effect:.3g}, rel L2 {eps_l2:.3g}")
    assert eps_effect > 3e-5  # measured 1.3e-4
    assert eps_effect > 10 * parity


def test_norm_eps_dominates_on_low_variance_bn():
    """When running variances are comparable to eps a wrong eps fails loudly (small input: fast)."""
    sam = _official_sam("l0")
    _randomise_(sam.image_encoder, seed=7)
    _low_variance_bn_(sam.image_encoder, var=1e-5)
    sam.eval()
    x = torch.randn(1, 3, 128, 128, generator=torch.Generator().manual_seed(8))
    model = efficientvit_sam_encoder("l0", input_size=128).eval()
    model.load_state_dict(sam.image_encoder.state_dict(), strict=True)
    with torch.no_grad():
        ours = model(x)
        official_default = sam.image_encoder(x)  # official modules as constructed: eps 1e-5
        _set_norm_eps(sam, 1e-6)
        official = sam.image_encoder(x)
    assert torch.isfinite(official).all()
    assert _rel_err(ours, official)[0] <= 1e-4
    wrong, _ = _rel_err(official_default, official)
    print(f"\nlow-variance BN, eps 1e-5 vs 1e-6: max abs / std {wrong:.3g}")
    assert wrong > 0.1


def test_quadratic_attention_fallback_matches_official(official):
    """At 128x128 the attention stage is 4x4 = 16 tokens <= qkv_dim 32: both use quadratic attention."""
    model = efficientvit_sam_encoder("l0", input_size=128).eval()
    model.load_state_dict(official.image_encoder.state_dict(), strict=True)
    attn = [m for m in model.modules() if isinstance(m, LiteMLA)]
    assert len(attn) == 4 and all(m.quadratic for m in attn)
    assert not any(m.quadratic for m in efficientvit_sam_encoder("l0").modules() if isinstance(m, LiteMLA))
    x = torch.randn(1, 3, 128, 128, generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        got, ref = model(x), official.image_encoder(x)
    assert got.shape == (1, 256, 64, 64)
    assert _rel_err(got, ref)[0] <= 1e-4


def test_batch_images_are_independent(ours):
    model = efficientvit_sam_encoder("l0", input_size=128).eval()
    model.load_state_dict(ours.state_dict(), strict=True)
    x = torch.randn(2, 3, 128, 128, generator=torch.Generator().manual_seed(10))
    with torch.no_grad():
        both, one = model(x), model(x[1:])
    assert both.shape == (2, 256, 64, 64)
    torch.testing.assert_close(both[1:], one, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="expected input"):
        model(torch.zeros(1, 3, 512, 512))


def test_configs_read_like_the_paper():
    assert sorted(EFFICIENTVIT_SAM_CONFIGS) == ["l0", "l1", "l2", "xl0", "xl1"]
    assert EFFICIENTVIT_SAM_CONFIGS["xl1"]["depths"] == (1, 2, 2, 4, 6, 6)
    with pytest.raises(ValueError):
        efficientvit_sam_encoder("b0")
    with pytest.raises(ValueError):
        EfficientViTSamImageEncoder(neck_in_channels=(512, 256, 64))


def test_onnx_export_matches_onnxruntime(ours, ours_out, sam_input, tmp_path):
    import onnx

    graph, got, folded_path = export_encoder_and_run(ours, sam_input, tmp_path, "efficientvit_l0", folded=True)
    ops = {n.op_type for n in graph.graph.node}
    assert graph.opset_import[0].version == 17
    assert "Tanh" in ops and "Erf" not in ops  # GELU, tanh approximation
    assert "Resize" in ops  # bicubic, constant scales
    assert not ops & {"Shape", "If", "Loop"}
    ref = ours_out.numpy()
    assert got.shape == (1, 256, 64, 64)
    rel_l2 = float(np.linalg.norm(got - ref) / np.linalg.norm(ref))
    max_rel = float(np.abs(got - ref).max() / ref.std())
    print(f"\nEfficientViT-SAM-L0 ONNX Runtime vs PyTorch: max abs / std {max_rel:.3g}, rel L2 {rel_l2:.3g}")
    assert max_rel <= 1e-4
    assert rel_l2 <= 1e-5

    # After constant folding the Pad amounts are constants and every tensor shape is static.
    folded = onnx.load(str(folded_path))
    assert not {n.op_type for n in folded.graph.node} & {"Gather", "ConstantOfShape", "Shape"}
    del folded.graph.value_info[:]
    folded.graph.output[0].type.tensor_type.ClearField("shape")
    inferred = onnx.shape_inference.infer_shapes(folded, strict_mode=True)
    tensors = list(inferred.graph.value_info) + list(inferred.graph.output)
    dynamic = [v.name for v in tensors if not all(d.HasField("dim_value") for d in v.type.tensor_type.shape.dim)]
    assert not dynamic, dynamic[:5]
    assert [d.dim_value for d in inferred.graph.output[0].type.tensor_type.shape.dim] == [1, 256, 64, 64]


def test_neck_resize_is_bicubic_to_64():
    """The neck's resize equals F.interpolate(size=64, bicubic, align_corners=False) exactly."""
    model = efficientvit_sam_encoder("l0")
    x = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(11))
    resize = model.neck.input_ops[0].op_list[1]
    ref = F.interpolate(x, size=(64, 64), mode="bicubic", align_corners=False)
    assert torch.equal(resize(x), ref)
    assert model.neck.input_ops[2].op_list[1].skip  # stage 2 is already 64x64
