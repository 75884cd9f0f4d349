"""Fixtures for the models tests: the OFFICIAL models (test-only oracle packages) with seeded random
weights, saved in the official checkpoint layout, plus SAM-style preprocessing of real photographs.

Oracles (never imported by the product):
- ``segment_anything`` (segment-anything==1.0): SAM ViT-B/L/H via ``sam_model_registry``, and the
  uniform-pruned SlimSAM-50/77 built from its modeling classes with ``embed_dim``/``mlp_ratio`` set
  (the SlimSAM repo's ``vit_p50``/``vit_p77`` builders; models.md §3.9 / §5);
- ``mobile_sam`` (mobilesam-mirror==1.0.0): ``sam_model_registry["vit_t"]`` for MobileSAM and
  TinySAM (identical architecture). ``.eval()`` is called AFTER loading weights: the official TinyViT
  caches its attention biases at ``eval()`` time (models.md §3.2 gotcha).

Weights: every state_dict entry gets a value from ``samdeploy.models.init.random_tensor(key, seed)``
(a generator seeded by seed and key name alone), so the official model built here and
``samdeploy.models.build.random_model(variant, seed)`` hold bit-identical weights. Trivially
initialised parameters (LayerNorm/BN affine, BN running stats, pos_embed, rel-pos tables, TinyViT
attention biases) are randomised too, so the comparisons exercise them.

``make_realistic(model)`` rescales the decoder's output layers so mask logits span about +-20 like a
trained SAM (random models give about +-0.4, where thresholded masks flip on float noise); see
``samdeploy.models.init.make_realistic_`` for exactly what it does. It works on the official ``Sam``
and on ours (same attribute names).
"""

from __future__ import annotations

import warnings
from functools import partial
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch

# conftest does `from fixtures_models import *`: export only the pytest fixtures; tests import the
# helpers (build_official, rel_err, contract_encoder_input, ...) from this module explicitly.
__all__ = ["official_checkpoint_factory", "model_pair_factory", "embedding_pair_factory", "photo_resized"]

OFFICIAL_VARIANTS = ("vit_b", "vit_l", "vit_h", "slimsam_50", "slimsam_77", "mobile_sam", "tinysam")
SLIMSAM_DIMS = {"slimsam_50": (384, 1536), "slimsam_77": (168, 696)}  # (embed_dim, mlp_dim), 12 heads

SAM_MEAN = torch.tensor([123.675, 116.28, 103.53]).view(1, 3, 1, 1)


def _official_slimsam(embed_dim: int, mlp_dim: int):
    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    return Sam(
        image_encoder=ImageEncoderViT(
            depth=12,
            embed_dim=embed_dim,
            img_size=1024,
            mlp_ratio=mlp_dim / embed_dim,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            num_heads=12,
            patch_size=16,
            qkv_bias=True,
            use_rel_pos=True,
            global_attn_indexes=[2, 5, 8, 11],
            window_size=14,
            out_chans=256,
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=256, image_embedding_size=(64, 64), input_image_size=(1024, 1024), mask_in_chans=16
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(depth=2, embedding_dim=256, mlp_dim=2048, num_heads=8),
            transformer_dim=256,
            iou_head_depth=3,
            iou_head_hidden_dim=256,
        ),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    )


def official_architecture(variant: str):
    """The official (oracle-package) model of ``variant`` with the official init, in eval mode.
    Honours ``with torch.device("meta"):`` for the SAM ViT variants."""
    if variant in ("vit_b", "vit_l", "vit_h"):
        from segment_anything import sam_model_registry

        return sam_model_registry[variant]().eval()
    if variant in SLIMSAM_DIMS:
        return _official_slimsam(*SLIMSAM_DIMS[variant]).eval()
    if variant in ("mobile_sam", "tinysam"):
        with warnings.catch_warnings():  # timm deprecation/registry noise from the oracle
            warnings.simplefilter("ignore")
            from mobile_sam import sam_model_registry as mobile_registry

            return mobile_registry["vit_t"]().eval()
    raise KeyError(variant)


def seeded_state_dict(model: torch.nn.Module, seed: int) -> dict[str, torch.Tensor]:
    from samdeploy.models.init import random_tensor

    return {k: random_tensor(k, t, seed) for k, t in model.state_dict().items()}


def make_realistic(model: torch.nn.Module, target: float = 20.0) -> torch.nn.Module:
    """Rescale the decoder output layers in place so mask logits span about +-``target`` and IoU
    predictions sit in a plausible band (details: ``samdeploy.models.init.make_realistic_``).
    Works on the official ``Sam`` and on ours. Returns the model, in eval mode."""
    from samdeploy.models.init import make_realistic_

    make_realistic_(model, target=target)
    return model.eval()


def build_official(variant: str, seed: int = 0, realistic: bool = True):
    """The official model of ``variant`` with seeded random weights (loaded, THEN eval())."""
    model = official_architecture(variant)
    model.load_state_dict(seeded_state_dict(model, seed), strict=True)
    if realistic:
        make_realistic(model)
    return model.eval()  # after loading: refreshes the official TinyViT's cached attention biases


def save_official_checkpoint(model: torch.nn.Module, path: str | Path) -> Path:
    """Save in the official file layout: a plain state_dict via torch.save."""
    path = Path(path)
    torch.save(model.state_dict(), path)
    return path


@pytest.fixture(scope="session")
def official_checkpoint_factory(tmp_path_factory) -> Callable[[str], tuple[Path, torch.nn.Module]]:
    """variant -> (checkpoint path, official model) with seed 0 and realistic decoder; cached per session.
    "tinysam" returns the mobile_sam file and model (identical architecture and seeded weights)."""
    cache: dict[str, tuple[Path, torch.nn.Module]] = {}
    folder = tmp_path_factory.mktemp("official_checkpoints")

    def make(variant: str) -> tuple[Path, torch.nn.Module]:
        if variant == "tinysam":  # same oracle, same keys, same seeded weights as mobile_sam: share them
            variant = "mobile_sam"
        if variant not in cache:
            model = build_official(variant, seed=0)
            cache[variant] = (save_official_checkpoint(model, folder / f"{variant}.pth"), model)
        return cache[variant]

    return make


# ---- SAM-style inputs ----------------------------------------------------------------------------
def sam_resize(image: np.ndarray, size: int = 1024) -> np.ndarray:
    """SamPredictor's resize (ResizeLongestSide.apply_image: PIL bilinear, int(x*scale+0.5))."""
    from segment_anything.utils.transforms import ResizeLongestSide

    return ResizeLongestSide(size).apply_image(image)


def official_encoder_input(official, resized: np.ndarray) -> torch.Tensor:
    """What SamPredictor.set_image feeds the official encoder: normalised, zero-padded [1,3,1024,1024]."""
    x = torch.as_tensor(resized).permute(2, 0, 1).contiguous()[None].float()
    return official.preprocess(x)


def contract_encoder_input(resized: np.ndarray, size: int = 1024) -> torch.Tensor:
    """The samdeploy encoder input: 0..255 RGB padded bottom/right with the pixel mean [1,3,S,S]."""
    h, w = resized.shape[:2]
    x = SAM_MEAN.expand(1, 3, size, size).clone()
    x[:, :, :h, :w] = torch.as_tensor(resized).permute(2, 0, 1).float()
    return x


@pytest.fixture(scope="session")
def photo_resized() -> np.ndarray:
    """A real, non-square photograph (scikit-image 'chelsea', 300x451) resized the SAM way."""
    from samdeploy.images import default_photographs

    return sam_resize(default_photographs(("chelsea",))["chelsea"])


@pytest.fixture(scope="session")
def model_pair_factory(official_checkpoint_factory):
    """variant -> (official model, our model loaded from the official file with variant="auto",
    CheckpointInfo); cached per session. tinysam is loaded with variant="tinysam" (auto cannot
    tell it from mobile_sam)."""
    from samdeploy.models.checkpoint import load_checkpoint

    cache: dict[str, tuple] = {}

    def make(variant: str):
        if variant not in cache:
            path, official = official_checkpoint_factory(variant)
            ours, info = load_checkpoint(path, variant="tinysam" if variant == "tinysam" else "auto")
            cache[variant] = (official, ours, info)
        return cache[variant]

    return make


@pytest.fixture(scope="session")
def embedding_pair_factory(model_pair_factory, photo_resized):
    """variant -> (official image embedding, our Sam.encode embedding) of the real photo; one encoder
    forward per model per session."""
    cache: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def make(variant: str):
        if variant not in cache:
            official, ours, _ = model_pair_factory(variant)
            with torch.no_grad():
                ref = official.image_encoder(official_encoder_input(official, photo_resized))
                got = ours.encode(contract_encoder_input(photo_resized))
            cache[variant] = (ref, got)
        return cache[variant]

    return make


def rel_err(got: torch.Tensor, ref: torch.Tensor) -> float:
    """max |got - ref| relative to the reference's scale (max |ref|, at least 1)."""
    assert got.shape == ref.shape, (got.shape, ref.shape)
    return float((got - ref).abs().max()) / max(1.0, float(ref.abs().max()))


def export_encoder_and_run(module, x, tmp_path, name: str, folded: bool = False):
    """Export an image encoder alone (opset 17, legacy exporter) with the contract's I/O names, run it
    in ONNX Runtime on ``x`` and return ``(onnx model, output ndarray, folded path or None)``.

    With ``folded`` ORT's basic level (constant folding) writes the folded graph next to it, so a test
    can check that every shape is static after folding."""
    import warnings

    import onnx
    import onnxruntime as ort
    import torch

    from samdeploy.contract import ENCODER_INPUT, ENCODER_OUTPUT

    path = tmp_path / f"{name}.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (x,), str(path), dynamo=False, opset_version=17,
                          input_names=[ENCODER_INPUT], output_names=[ENCODER_OUTPUT])
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    folded_path = None
    if folded:
        folded_path = tmp_path / f"{name}_folded.onnx"
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        opts.optimized_model_filepath = str(folded_path)
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    got = sess.run(None, {ENCODER_INPUT: x.numpy()})[0]
    return onnx.load(str(path)), got, folded_path
