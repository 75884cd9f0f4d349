"""The variant table: one entry per supported model (no torch import).

Each entry says which encoder to build with which arguments (they read like the papers' tables),
the family, and the contract defaults (preprocessing, decoder semantics) that export writes into the
ONNX metadata. ``build.build_model(name)`` turns an entry into a ``Sam``.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Mapping

from ..contract import Decoder, ModelContract, Preprocess, Prompts
from ..errors import InputError

__all__ = ["Variant", "VARIANTS", "get_variant", "contract_for", "variant_names"]


@dataclass(frozen=True)
class Variant:
    name: str  # what --model takes
    family: str  # ModelContract.family
    encoder: str  # "vit" (image_encoder_vit.ImageEncoderViT) | "tiny_vit" (tiny_vit.TinyViT)
    encoder_args: Mapping[str, Any]
    description: str
    always_multimask: bool = False  # TinySAM's decoder only answers with tokens 1..3
    input_size: int = 1024
    registry_name: str | None = None  # default checkpoint in samdeploy.models.registry
    params: str = ""  # parameter count, for `samdeploy models list`

    @property
    def preprocess(self) -> Preprocess:
        return Preprocess(input_size=self.input_size)

    @property
    def decoder(self) -> Decoder:
        return Decoder(always_multimask=self.always_multimask)


def _vit(embed_dim: int, depth: int, num_heads: int, mlp_dim: int, global_attn_indexes: tuple[int, ...]) -> Mapping[str, Any]:
    return MappingProxyType(
        dict(
            embed_dim=embed_dim,
            depth=depth,
            num_heads=num_heads,
            mlp_dim=mlp_dim,
            global_attn_indexes=global_attn_indexes,
            img_size=1024,
            patch_size=16,
            window_size=14,
            out_chans=256,
        )
    )


# TinyViT-5M as MobileSAM's build_sam_vit_t constructs it (TinySAM uses the same builder).
_TINY_VIT_5M = MappingProxyType(
    dict(
        img_size=1024,
        in_chans=3,
        num_classes=1000,
        embed_dims=(64, 128, 160, 320),
        depths=(2, 2, 6, 2),
        num_heads=(2, 4, 5, 10),
        window_sizes=(7, 7, 14, 7),
        mlp_ratio=4.0,
        drop_rate=0.0,
        drop_path_rate=0.0,
        mbconv_expand_ratio=4.0,
        local_conv_size=3,
    )
)

_TABLE = [
    #          embed depth heads  mlp   global attention blocks
    Variant("vit_b", "sam", "vit", _vit(768, 12, 12, 3072, (2, 5, 8, 11)),
            "SAM ViT-B (Kirillov et al. 2023)", registry_name="sam_vit_b", params="93.7M"),
    Variant("vit_l", "sam", "vit", _vit(1024, 24, 16, 4096, (5, 11, 17, 23)),
            "SAM ViT-L", registry_name="sam_vit_l", params="312.3M"),
    Variant("vit_h", "sam", "vit", _vit(1280, 32, 16, 5120, (7, 15, 23, 31)),
            "SAM ViT-H", registry_name="sam_vit_h", params="641.1M"),
    # SlimSAM uniform pruning of ViT-B (Chen et al. 2023): 12 heads kept, dims pruned per ratio.
    Variant("slimsam_50", "slimsam", "vit", _vit(384, 12, 12, 1536, (2, 5, 8, 11)),
            "SlimSAM-50 uniform (ViT-B pruned 50%)", registry_name="slimsam_50", params="28.0M"),
    Variant("slimsam_77", "slimsam", "vit", _vit(168, 12, 12, 696, (2, 5, 8, 11)),
            "SlimSAM-77 uniform (ViT-B pruned 77%)", registry_name="slimsam_77", params="9.7M"),
    Variant("mobile_sam", "mobile_sam", "tiny_vit", _TINY_VIT_5M,
            "MobileSAM (TinyViT-5M 'vit_t', Zhang et al. 2023)", registry_name="mobile_sam", params="10.1M"),
    Variant("tinysam", "tinysam", "tiny_vit", _TINY_VIT_5M,
            "TinySAM (TinyViT-5M, decoder always multimask; Shu et al. 2023)", always_multimask=True,
            registry_name="tinysam", params="10.1M"),
]

VARIANTS: Mapping[str, Variant] = MappingProxyType({v.name: v for v in _TABLE})


def variant_names() -> list[str]:
    return list(VARIANTS)


def get_variant(name: str) -> Variant:
    try:
        return VARIANTS[name]
    except KeyError:
        raise InputError(
            f"unknown model variant {name!r}",
            hint=f"choose one of: {', '.join(VARIANTS)}",
        ) from None


def contract_for(variant: str, weights_sha256: str, provenance: Mapping[str, Any] | None = None) -> ModelContract:
    """The ModelContract of ``variant`` with the given weights hash."""
    from .. import __version__

    v = get_variant(variant)
    return ModelContract(
        family=v.family,
        variant=v.name,
        weights_sha256=weights_sha256,
        preprocess=v.preprocess,
        prompts=Prompts(),
        decoder=v.decoder,
        samdeploy_version=__version__,
        provenance=dict(provenance or {}),
    )
