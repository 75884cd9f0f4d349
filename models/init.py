"""Deterministic seeded weights, and a realistic output scale for random decoders.

``randomize_(module, seed)`` fills every parameter and buffer of a state_dict from a generator
seeded by (seed, key) alone, so two modules with the same key names and shapes -- ours and the
official one -- get bit-identical weights regardless of construction order. Parameters that the
official code initialises to trivial values (LayerNorm/BatchNorm affine, BN running statistics,
``pos_embed``, relative-position tables, TinyViT attention biases) are randomised too, so parity
tests exercise them.

``make_realistic_(module)`` rescales the decoder's output layers so a random model's mask logits
span roughly +-20 (a trained SAM's range) instead of +-0.4, and its IoU predictions lie in a
plausible band (centres 0.75..0.9). Without it, thresholded masks of random models flip on float noise.
Both functions use only official key/attribute names, so they work on the official modules too.

The BatchNorm scale at the END of a residual branch (RepViT's RepVGG 3x3/1x1 branches and channel
MLP, which the official init sets to zero) is drawn small (0.1..0.3): with unit scales the residual
stream of EdgeSAM/RepViT-SAM grows to ~1e7 over 26-54 blocks and float rounding is amplified ~1000x,
which no trained network does (parity checks would measure the fixture, not the export).
"""

from __future__ import annotations

import hashlib
import math
import re

import torch
from torch import nn

__all__ = ["randomize_", "make_realistic_", "random_tensor"]

# RepViT blocks: the last BN of each residual branch (token mixer's DW branches, channel MLP).
# RepViT-SAM's RepVGGDW normalises the sum x + dw3x3(x) + dw1x1(x) (~1.5x its input): a scale below 1
# keeps the stream from compounding that over 36 blocks.
_POST_SUM_BN = re.compile(r"\.token_mixer\.0\.bn\.weight$")
_RESIDUAL_BRANCH_END = re.compile(r"\.(token_mixer\.0\.conv1?\.bn|channel_mixer\.m\.2\.bn)\.weight$")

_EMBEDDING_NAMES = ("point_embeddings", "not_a_point_embed", "no_mask_embed", "iou_token", "mask_tokens")


def _key_seed(seed: int, key: str) -> int:
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def random_tensor(key: str, like: torch.Tensor, seed: int) -> torch.Tensor:
    """The seeded random value of state_dict entry ``key`` (CPU, dtype of ``like``)."""
    g = torch.Generator().manual_seed(_key_seed(seed, key))
    shape, name = tuple(like.shape), key.rsplit(".", 1)[-1]

    def normal(std: float, mean: float = 0.0) -> torch.Tensor:
        return torch.randn(shape, generator=g) * std + mean

    def uniform(lo: float, hi: float) -> torch.Tensor:
        return torch.rand(shape, generator=g) * (hi - lo) + lo

    if not like.is_floating_point():  # num_batches_tracked
        return like.detach().clone().cpu()
    if name == "running_mean":
        out = normal(0.1)
    elif name == "running_var":
        out = uniform(0.5, 1.5)
    elif name == "positional_encoding_gaussian_matrix":
        out = normal(1.0)  # the official init (scale 1)
    elif name == "pos_embed":
        out = normal(0.1)
    elif name in ("rel_pos_h", "rel_pos_w"):
        out = normal(0.1)
    elif name == "attention_biases":
        out = normal(0.5)
    elif any(part in _EMBEDDING_NAMES for part in key.split(".")):
        out = normal(1.0)  # nn.Embedding's init
    elif like.ndim == 1 and _RESIDUAL_BRANCH_END.search(key):
        out = uniform(0.1, 0.3)
    elif like.ndim == 1 and _POST_SUM_BN.search(key):
        out = uniform(0.5, 0.7)
    elif like.ndim == 1 and name == "weight":  # LayerNorm / LayerNorm2d / BatchNorm scale
        out = uniform(0.75, 1.25)
    elif name == "bias":
        out = normal(0.05)
    elif like.ndim >= 2:  # Linear / Conv / ConvTranspose: unit-gain uniform (variance preserving)
        fan_in = math.prod(shape[1:])
        bound = math.sqrt(3.0 / max(fan_in, 1))
        out = uniform(-bound, bound)
    else:
        out = normal(0.1)
    return out.to(like.dtype)


@torch.no_grad()
def randomize_(module: nn.Module, seed: int) -> nn.Module:
    """Overwrite every state_dict entry of ``module`` with its seeded random value (in place)."""
    for key, tensor in module.state_dict(keep_vars=True).items():
        tensor.data.copy_(random_tensor(key, tensor, seed).to(tensor.device))
    return module


@torch.no_grad()
def make_realistic_(model: nn.Module, target: float = 20.0, seed: int = 0) -> nn.Module:
    """Rescale ``model.mask_decoder``'s output layers in place (see the module docstring).

    A probe (random unit-scale image embedding, 4 single-point prompts + the padding point, no mask
    input) measures each mask token's largest |logit|; the last Linear of that token's hypernetwork
    MLP is scaled by ``target / measured`` (logits are linear in it, so the probe then spans exactly
    +-target). The IoU head's last Linear is shifted and scaled so the probe's predictions have a
    different centre per token (0.75..0.9) and a standard deviation of 0.04. Deterministic; works on the official ``Sam`` too.
    """
    pe, dec = model.prompt_encoder, model.mask_decoder
    device = pe.point_embeddings[0].weight.device
    c = pe.point_embeddings[0].weight.shape[1]
    h, w = pe.image_embedding_size
    size = float(pe.input_image_size[0])
    g = torch.Generator().manual_seed(seed)
    n = 4
    emb = torch.randn(1, c, h, w, generator=g).to(device)
    coords = (torch.rand(n, 1, 2, generator=g) * size).to(device)
    # Sparse tokens of "one positive click + padding point", built from the official attributes.
    click = pe.pe_layer._pe_encoding((coords + 0.5) / size) + pe.point_embeddings[1].weight
    pad = pe.not_a_point_embed.weight.expand(n, 1, c)
    sparse = torch.cat([click, pad], dim=1)
    dense = pe.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(n, -1, h, w)
    image_pe = pe.get_dense_pe()

    masks, iou = dec.predict_masks(emb, image_pe, sparse, dense)  # [n,4,256,256], [n,4]
    for i, mlp in enumerate(dec.output_hypernetworks_mlps):
        peak = masks[:, i].abs().max().item()
        factor = target / max(peak, 1e-12)
        mlp.layers[-1].weight.mul_(factor)
        mlp.layers[-1].bias.mul_(factor)

    # The IoU head reads only the IoU token, which the rescale above does not touch.
    last = dec.iou_prediction_head.layers[-1]
    mean = iou.mean(0)
    spread = (iou - mean).std().clamp_min(1e-12)
    scale = 0.04 / spread
    centres = torch.tensor([0.85, 0.75, 0.80, 0.90], device=device)[: iou.shape[1]]
    last.weight.mul_(scale)
    last.bias.copy_((last.bias - mean) * scale + centres)
    return model

