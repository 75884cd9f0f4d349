"""Build a ``Sam`` for a variant of the table in ``variants.py``.

    build_model("vit_b")                 architecture only (PyTorch default init), eval mode
    build_model("vit_h", device="meta")  no memory allocated (key/shape inspection)
    random_model("mobile_sam", seed=0)   deterministic seeded weights, realistic decoder scale

Weights from a checkpoint: ``samdeploy.models.checkpoint.load_checkpoint``.
"""

from __future__ import annotations

import torch
from torch import nn

from .image_encoder_vit import ImageEncoderViT
from .init import make_realistic_, randomize_
from .mask_decoder import MaskDecoder
from .prompt_encoder import PromptEncoder
from .sam import Sam
from .transformer import TwoWayTransformer
from .variants import Variant, get_variant

__all__ = ["build_model", "random_model", "build_image_encoder"]

PROMPT_EMBED_DIM = 256  # every SAM-family decoder in the table
VIT_PATCH_SIZE = 16


def build_image_encoder(variant: Variant) -> nn.Module:
    if variant.encoder == "vit":
        return ImageEncoderViT(**variant.encoder_args)
    if variant.encoder == "tiny_vit":
        from .tiny_vit import TinyViT  # imported on demand

        args = dict(variant.encoder_args)
        for key in ("embed_dims", "depths", "num_heads", "window_sizes"):
            args[key] = list(args[key])
        return TinyViT(**args)
    if variant.builder:  # a family's own encoder, named by its variant entry
        return _resolve(variant.builder)(variant)
    raise ValueError(f"unknown encoder kind {variant.encoder!r}")


def build_model(variant: str, device: str | torch.device | None = None) -> Sam:
    """The architecture of ``variant`` (official key names and shapes), in eval mode.

    Weights are PyTorch's default init; use :func:`random_model` or ``load_checkpoint`` for
    meaningful values. ``device="meta"`` builds without allocating memory.
    """
    v = get_variant(variant)
    if v.model_builder:  # a family with its own module tree (HQ-SAM, SAM2)
        return _resolve(v.model_builder)(v.name, device=device)
    with torch.device(device) if device is not None else _nullcontext():
        size = v.frame_size  # the prompt encoder works in the prompt frame, not the encoder input
        grid = size // VIT_PATCH_SIZE  # 64: every family's embedding grid
        sam = Sam(
            image_encoder=build_image_encoder(v),
            prompt_encoder=PromptEncoder(
                embed_dim=PROMPT_EMBED_DIM,
                image_embedding_size=(grid, grid),
                input_image_size=(size, size),
                mask_in_chans=16,
                zero_token_label=v.zero_token_label,
            ),
            mask_decoder=MaskDecoder(
                transformer_dim=PROMPT_EMBED_DIM,
                transformer=TwoWayTransformer(depth=2, embedding_dim=PROMPT_EMBED_DIM, num_heads=8, mlp_dim=2048),
                num_multimask_outputs=3,
                iou_head_depth=3,
                iou_head_hidden_dim=256,
            ),
            variant=v.name,
        )
    return sam.eval()


def random_model(variant: str, seed: int = 0, realistic: bool = True) -> Sam:
    """``variant`` with deterministic seeded weights (see ``init.randomize_``), in eval mode.

    With ``realistic`` (default) the decoder's output layers are rescaled so mask logits span about
    +-20 like a trained model (``init.make_realistic_``); RepViT's residual branches end in small
    BN scales so the residual stream keeps a trained-like scale (see ``init``). ``weights_sha256`` is
    ``"random:<variant>:seed=<n>"`` (plus ``:raw`` without ``realistic``) so contracts tell them apart.
    """
    v = get_variant(variant)
    if v.random_builder:
        return _resolve(v.random_builder)(v.name, seed=seed, realistic=realistic)
    sam = build_model(variant)
    randomize_(sam, seed)
    if realistic:
        make_realistic_(sam)
    sam.weights_sha256 = f"random:{variant}:seed={seed}" + ("" if realistic else ":raw")
    return sam.eval()


def _resolve(ref: str):
    """"module:function" inside samdeploy.models (imported on demand) -> the function."""
    import importlib

    module, _, name = ref.partition(":")
    return getattr(importlib.import_module(f"{__package__}.{module}"), name)


class _nullcontext:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None
