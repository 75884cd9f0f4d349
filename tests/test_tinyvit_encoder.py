"""samdeploy.models.tiny_vit.TinyViT against the official MobileSAM TinyViT (mobilesam-mirror oracle).

The official model gets seeded random values in every parameter AND buffer (BN running stats,
attention biases, LayerNorm affine), so a wrong key mapping, a wrong bias index, a missed padding or
an eps mismatch shows up in the output. One real photograph, preprocessed the SAM way.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from fixtures_models import export_encoder_and_run

from samdeploy.models.tiny_vit import TinyViT

PHOTO = "coffee"  # 400x600: the resized image is 683x1024, so the zero padding is exercised


def _randomise_(module: torch.nn.Module, seed: int) -> None:
    """Overwrite every parameter and buffer with seeded random values of a sane scale."""
    g = torch.Generator().manual_seed(seed)
    new = {}
    for key, t in module.state_dict().items():
        if t.dtype == torch.int64:  # num_batches_tracked
            new[key] = torch.randint(0, 1000, t.shape, generator=g)
        elif key.endswith("running_var"):
            new[key] = torch.rand(t.shape, generator=g) * 1.5 + 0.5
        elif key.endswith("attention_biases"):
            new[key] = torch.randn(t.shape, generator=g)
        elif key.endswith(("running_mean", "bias")):
            new[key] = torch.randn(t.shape, generator=g) * 0.1
        elif t.ndim == 1:  # BatchNorm / LayerNorm weights
            new[key] = torch.rand(t.shape, generator=g) + 0.5
        else:  # conv / linear weights: unit-variance outputs
            new[key] = torch.randn(t.shape, generator=g) / t[0].numel() ** 0.5
    module.load_state_dict(new, strict=True)


def _official_sam():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # timm deprecation / registry-overwrite warnings
        from mobile_sam import sam_model_registry

        return sam_model_registry["vit_t"]()


@pytest.fixture(scope="module")
def official():
    """The official MobileSAM Sam with a randomised image encoder, eval() called AFTER loading
    (the official Attention caches its biases at eval() time)."""
    torch.manual_seed(0)
    sam = _official_sam()
    _randomise_(sam.image_encoder, seed=1)
    return sam.eval()


@pytest.fixture(scope="module")
def sam_input(official, photos) -> torch.Tensor:
    """The photograph as SAM feeds it: longest side resized to 1024, normalised, zero-padded."""
    from mobile_sam.utils.transforms import ResizeLongestSide

    img = ResizeLongestSide(1024).apply_image(photos[PHOTO])
    assert img.shape[:2] == (683, 1024)
    x = torch.as_tensor(img).permute(2, 0, 1)[None].float()
    with torch.no_grad():
        return official.preprocess(x)


@pytest.fixture(scope="module")
def official_out(official, sam_input) -> torch.Tensor:
    with torch.no_grad():
        return official.image_encoder(sam_input)


@pytest.fixture(scope="module")
def ours_eval_then_load(official) -> TinyViT:
    """The order the official builder uses (eval() before loading): must not matter for ours."""
    model = TinyViT().eval()
    model.load_state_dict(official.image_encoder.state_dict(), strict=True)
    return model


@pytest.fixture(scope="module")
def ours_out(ours_eval_then_load, sam_input) -> torch.Tensor:
    with torch.no_grad():
        return ours_eval_then_load(sam_input)


def test_state_dict_keys_shapes_and_dtypes_equal_official(official):
    ref = official.image_encoder.state_dict()
    ours = TinyViT().state_dict()
    assert len(official.state_dict()) == 439  # whole Sam, as listed in models.md §3.2
    assert list(ours) == list(ref)  # same keys, same order
    assert len(ours) == 302
    for key, t in ref.items():
        assert ours[key].shape == t.shape, key
        assert ours[key].dtype == t.dtype, key
    assert not any("attention_bias_idxs" in k or k.endswith(".ab") for k in ours)
    # The head is kept (unused in forward) so that official checkpoints load strictly.
    assert ours["head.weight"].shape == (1000, 320) and ours["norm_head.weight"].shape == (320,)


def test_attention_bias_index_equals_official(official, ours_eval_then_load):
    ours_blocks = {n: m for n, m in ours_eval_then_load.named_modules() if n.endswith(".attn")}
    ref_blocks = {n: m for n, m in official.image_encoder.named_modules() if n.endswith(".attn")}
    assert sorted(ours_blocks) == sorted(ref_blocks) and len(ours_blocks) == 10
    for name, ref in ref_blocks.items():
        assert torch.equal(ours_blocks[name].attention_bias_idxs, ref.attention_bias_idxs), name


def test_matches_official_on_photograph(official_out, ours_out, record_property):
    assert ours_out.shape == official_out.shape == (1, 256, 64, 64)
    err = (ours_out - official_out).abs()
    max_abs = err.max().item()
    rel_l2 = (err.norm() / official_out.norm()).item()
    record_property("tinyvit_max_abs_err", max_abs)
    record_property("tinyvit_rel_l2_err", rel_l2)
    print(f"\nTinyViT vs official on {PHOTO}: max abs {max_abs:.3g}, rel L2 {rel_l2:.3g}, "
          f"output std {official_out.std().item():.3g}")
    # float32 rounding only (measured ~4e-6 / ~6e-7). A transposed bias index gives 0.7 / 5e-2; even
    # the neck's LayerNorm2d eps at 1e-5 instead of 1e-6 gives 4e-5 / 4e-6 on this input.
    assert max_abs < 2e-5
    assert rel_l2 < 2e-6


def test_neck_layernorm_eps_matches_official(official, ours_eval_then_load):
    """On low-variance features the LayerNorm2d eps (1e-6) dominates: a wrong eps fails loudly here."""
    x = torch.randn(1, 320, 8, 8, generator=torch.Generator().manual_seed(6)) * 1e-3
    with torch.no_grad():
        torch.testing.assert_close(
            ours_eval_then_load.neck(x), official.image_encoder.neck(x), rtol=1e-4, atol=1e-4
        )


def test_load_order_does_not_matter(official, ours_eval_then_load, ours_out, sam_input):
    model = TinyViT()
    model.load_state_dict(official.image_encoder.state_dict(), strict=True)
    model.eval()  # load, then eval
    with torch.no_grad():
        out = model(sam_input)
    assert torch.equal(out, ours_out)


def test_attention_uses_biases_loaded_after_eval():
    """The official Attention caches gathered biases at eval(); ours must pick up later loads.
    Checked against the official module (loaded first, eval() after) at block level."""
    from mobile_sam.modeling.tiny_vit_sam import Attention as OfficialAttention

    from samdeploy.models.tiny_vit import Attention

    torch.manual_seed(2)
    ref = OfficialAttention(dim=160, key_dim=32, num_heads=5, attn_ratio=1, resolution=(14, 14))
    _randomise_(ref, seed=3)
    ref.eval()
    ours = Attention(dim=160, num_heads=5, window_size=14).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(3, 196, 160)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x), rtol=1e-5, atol=1e-5)
        # new biases after eval(): ours follows them, with no second eval() call
        new_bias = torch.randn_like(ref.attention_biases)
        ours.attention_biases.copy_(new_bias)
        ref.attention_biases.copy_(new_bias)
        ref.eval()  # refresh the official cache
        torch.testing.assert_close(ours(x), ref(x), rtol=1e-5, atol=1e-5)


def test_batch_images_are_independent():
    """Window partition uses -1 for the batch: images in a batch must not mix (small img_size)."""
    torch.manual_seed(4)
    model = TinyViT(img_size=256).eval()
    _randomise_(model, seed=5)
    x = torch.randn(2, 3, 256, 256)
    with torch.no_grad():
        both = model(x)
        one = model(x[1:])
    assert both.shape == (2, 256, 16, 16)
    torch.testing.assert_close(both[1:], one, rtol=1e-5, atol=1e-5)


def test_onnx_export_matches_onnxruntime(ours_eval_then_load, ours_out, sam_input, tmp_path):
    import onnx

    graph, got, folded_path = export_encoder_and_run(ours_eval_then_load, sam_input, tmp_path, "tinyvit", folded=True)
    ops = {n.op_type for n in graph.graph.node}
    assert graph.opset_import[0].version == 17
    assert "Erf" in ops  # exact GELU
    assert not ops & {"Shape", "If", "Loop"}  # no run-time shape arithmetic, no data-dependent control flow
    ref = ours_out.numpy()
    assert got.shape == (1, 256, 64, 64)
    rel_l2 = float(np.linalg.norm(got - ref) / np.linalg.norm(ref))
    print(f"\nTinyViT ONNX Runtime vs PyTorch: rel L2 {rel_l2:.3g}, max abs {np.abs(got - ref).max():.3g}")
    assert rel_l2 <= 1e-5

    # After constant folding (what TensorRT / onnxslim do too) the attention-bias gathers and the pad
    # amounts are constants and every tensor shape is static.
    folded = onnx.load(str(folded_path))
    folded_ops = {n.op_type for n in folded.graph.node}
    assert not folded_ops & {"Gather", "ConstantOfShape", "Shape"}
    del folded.graph.value_info[:]
    folded.graph.output[0].type.tensor_type.ClearField("shape")
    inferred = onnx.shape_inference.infer_shapes(folded, strict_mode=True)
    tensors = list(inferred.graph.value_info) + list(inferred.graph.output)
    dynamic = [v.name for v in tensors if not all(d.HasField("dim_value") for d in v.type.tensor_type.shape.dim)]
    assert not dynamic, dynamic[:5]
    assert [d.dim_value for d in inferred.graph.output[0].type.tensor_type.shape.dim] == [1, 256, 64, 64]
