"""The variant table: one entry per supported model (no torch import).

Each entry says which encoder to build with which arguments (they read like the papers' tables),
the family, and the contract defaults (preprocessing, decoder semantics) that export writes into the
ONNX metadata. ``build.build_model(name)`` turns an entry into a ``Sam``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Mapping

from ..contract import (ENCODER_OUTPUT, HQ_FEATURES, SAM2_ENCODER_OUTPUTS as SAM2_OUTPUTS, SAM2_OBJECT_SCORE,
                        ZERO_TOKEN_LABEL, Decoder, Encoder, ModelContract, Preprocess, Prompts, TensorSpec)
# SAM2's image path: the 64x64 embedding (no_mem_embed added) and the two high-resolution levels
SAM2_SHAPES = ((256, 64, 64), (32, 256, 256), (64, 128, 128))
IMAGENET_MEAN = (0.485, 0.456, 0.406)  # on 0..1 (pixel_scale 1)
IMAGENET_STD = (0.229, 0.224, 0.225)
from ..errors import InputError

__all__ = ["Variant", "VARIANTS", "get_variant", "contract_for", "variant_names"]


@dataclass(frozen=True)
class Variant:
    name: str  # what --model takes
    family: str  # ModelContract.family
    # "vit" (image_encoder_vit.ImageEncoderViT) | "tiny_vit" (tiny_vit.TinyViT) |
    # "efficientvit_sam" (efficientvit_sam.EfficientViTSamImageEncoder) | "rep_vit" (rep_vit.RepViT) |
    # "nanosam" (nanosam.NanoSamImageEncoder) | "efficient_sam" (efficient_sam.EfficientSam, own module tree)
    encoder: str
    encoder_args: Mapping[str, Any]
    description: str
    always_multimask: bool = False  # TinySAM's decoder only answers with tokens 1..3
    input_size: int = 1024  # the encoder input (S x S)
    frame_size: int = 1024  # the prompt/mask frame (EfficientViT-SAM L: 1024 while the encoder sees 512)
    score: str = "iou_head"  # the family's default mask score (EdgeSAM: "stability")
    zero_token_label: int | None = None  # EdgeSAM: label -2 gives an all-zero token
    registry_name: str | None = None  # default checkpoint in samdeploy.models.registry
    params: str = ""  # parameter count, for `samdeploy models list`
    licence: str = "Apache-2.0"  # of the official weights (EdgeSAM: non-commercial)
    heavy: bool = False  # too big for routine CI parity runs (tests use meta tensors for it)
    interm_dim: int | None = None  # HQ-SAM: channels of the early encoder feature its decoder also reads
    sam2: bool = False  # SAM2/SAM2.1 image path: stretch + ImageNet input, 3 encoder outputs, object score
    # EfficientSAM (yformer): stretch (bilinear, no antialias) + ImageNet input, its own prompt encoder
    # (6 decoder points, no padding point, no mask input), bicubic mask resize
    efficient_sam: bool = False
    # Where the family's code lives, as "module:function" inside samdeploy.models (imported on demand):
    # ``builder(variant) -> image encoder`` for families that use SAM's prompt encoder + decoder, or
    # ``model_builder(name, device=None)`` / ``random_builder(name, seed, realistic)`` for families
    # with their own module tree. Empty: the built-in ViT / TinyViT encoders.
    builder: str = ""
    model_builder: str = ""
    random_builder: str = ""
    # Key substrings that ALL occur in this family's checkpoints (with or without "image_encoder.";
    # "a|b" = either): how `--model auto` recognises the family before comparing keys/shapes.
    signature: tuple[str, ...] = ()

    @property
    def preprocess(self) -> Preprocess:
        if self.sam2:  # SAM2Transforms: ToTensor, Resize((1024, 1024)) with antialias, ImageNet Normalize
            return Preprocess(input_size=self.input_size, resize="stretch", interpolation="bilinear_antialias_float",
                              pixel_mean=IMAGENET_MEAN, pixel_std=IMAGENET_STD, pixel_scale=1.0,
                              pad_value=(0.0, 0.0, 0.0))
        if self.efficient_sam:  # EfficientSam.preprocess: ToTensor, F.interpolate bilinear to 1024x1024, ImageNet
            return Preprocess(input_size=self.input_size, resize="stretch", interpolation="bilinear_float",
                              pixel_mean=IMAGENET_MEAN, pixel_std=IMAGENET_STD, pixel_scale=1.0,
                              pad_value=(0.0, 0.0, 0.0))
        return Preprocess(input_size=self.input_size)

    @property
    def prompts(self) -> Prompts:
        labels = dict(Prompts().labels)
        if self.zero_token_label is not None:
            labels["zero_token"] = self.zero_token_label
        if self.sam2:  # SAM2ImagePredictor: box corners first, padding point always
            return Prompts(frame_size=self.frame_size, labels=labels, box_first=True, pad_point_always=True)
        if self.efficient_sam:  # clicks, box corners; the graph pads to 6 points with (-1, -1, -1) itself
            return Prompts(frame_size=self.frame_size, labels=labels, pad_point_when_no_box=False, max_decoder_points=6)
        return Prompts(frame_size=self.frame_size, labels=labels)

    @property
    def decoder(self) -> Decoder:
        if self.sam2:  # IoU head already sigmoided; SAM2's dynamic single mask; direct resize; clamp 32
            return Decoder(embedding_inputs=SAM2_OUTPUTS, extra_outputs=(SAM2_OBJECT_SCORE,), score="iou_head",
                           single_mask="dynamic_stability", postprocess="direct", low_res_clamp=32.0,
                           accepts_no_points=True)
        if self.efficient_sam:  # raw IoU-head scores, no mask input, logits resized bicubic to the image
            return Decoder(score=self.score, mask_input=False, accepts_no_points=True, postprocess="direct",
                           mask_interpolation="bicubic")
        if self.interm_dim is not None:  # HQ-SAM: 4 SAM tokens + the HQ token, two encoder outputs
            return Decoder(num_mask_tokens=5, hq_token=4, embedding_inputs=(ENCODER_OUTPUT, HQ_FEATURES),
                           score=self.score, accepts_no_points=True)
        return Decoder(always_multimask=self.always_multimask, score=self.score, accepts_no_points=True)

    @property
    def encoder_spec(self) -> Encoder:
        if self.sam2:
            return Encoder(outputs=tuple(TensorSpec(n, s) for n, s in zip(SAM2_OUTPUTS, SAM2_SHAPES)))
        outputs = (TensorSpec(ENCODER_OUTPUT, (256, 64, 64)),)
        if self.interm_dim is not None:  # F_hq, once per image (transformer_dim / 8 channels at 4x the embedding)
            outputs += (TensorSpec(HQ_FEATURES, (32, 256, 256)),)
        return Encoder(outputs=outputs)


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

_EDGE_SAM_NOTE = "S-Lab License 1.0: NON-COMMERCIAL use only"

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
    # EfficientViT-SAM (Zhang et al. 2024): L models see 512x512, prompts and masks stay in the 1024 frame.
    Variant("efficientvit_sam_l0", "efficientvit_sam", "efficientvit_sam", MappingProxyType(dict(name="l0")),
            "EfficientViT-SAM-L0 (512 encoder input, 1024 prompt frame)", input_size=512,
            registry_name="efficientvit_sam_l0", params="34.8M"),
    Variant("efficientvit_sam_l1", "efficientvit_sam", "efficientvit_sam", MappingProxyType(dict(name="l1")),
            "EfficientViT-SAM-L1 (512 encoder input, 1024 prompt frame)", input_size=512,
            registry_name="efficientvit_sam_l1", params="47.7M", heavy=True),
    Variant("efficientvit_sam_l2", "efficientvit_sam", "efficientvit_sam", MappingProxyType(dict(name="l2")),
            "EfficientViT-SAM-L2 (512 encoder input, 1024 prompt frame)", input_size=512,
            registry_name="efficientvit_sam_l2", params="61.3M", heavy=True),
    Variant("efficientvit_sam_xl0", "efficientvit_sam", "efficientvit_sam", MappingProxyType(dict(name="xl0")),
            "EfficientViT-SAM-XL0 (1024 input)", registry_name="efficientvit_sam_xl0", params="117.0M", heavy=True),
    Variant("efficientvit_sam_xl1", "efficientvit_sam", "efficientvit_sam", MappingProxyType(dict(name="xl1")),
            "EfficientViT-SAM-XL1 (1024 input)", registry_name="efficientvit_sam_xl1", params="203.3M", heavy=True),
    # EdgeSAM (Zhou et al. 2023): RepViT-M1 with stage fusion; its predictor scores by stability.
    Variant("edge_sam", "edge_sam", "rep_vit", MappingProxyType(dict(arch="edge_sam")),
            "EdgeSAM (RepViT-M1 + fusion; scores by stability, label -2)", score="stability",
            zero_token_label=ZERO_TOKEN_LABEL, registry_name="edge_sam", params="9.6M", licence=_EDGE_SAM_NOTE),
    Variant("edge_sam_3x", "edge_sam", "rep_vit", MappingProxyType(dict(arch="edge_sam")),
            "EdgeSAM-3x (same architecture, 3x training schedule)", score="stability",
            zero_token_label=ZERO_TOKEN_LABEL, registry_name="edge_sam_3x", params="9.6M", licence=_EDGE_SAM_NOTE),
    # HQ-SAM (Ke et al. 2023): SAM's encoder returning an early feature too, MaskDecoderHQ with the HQ token.
    Variant("hq_vit_b", "hq_sam", "hq_sam", MappingProxyType(dict(name="hq_vit_b")),
            "HQ-SAM ViT-B (SAM ViT-B + HQ token)", registry_name="sam_hq_vit_b", params="94.8M",
            interm_dim=768, heavy=True),
    Variant("hq_vit_tiny", "hq_sam", "hq_sam", MappingProxyType(dict(name="hq_vit_tiny")),
            "HQ-SAM light (TinyViT-5M 'vit_tiny' + HQ token)", registry_name="sam_hq_vit_tiny", params="10.6M",
            interm_dim=160),
    # SAM 2 / 2.1 (Ravi et al. 2024), image path: Hiera trunk + FPN neck, SAM2 mask decoder with object score.
    *[Variant(f"{gen}_hiera_{size}", "sam2", "sam2", MappingProxyType(dict(name=f"{gen}_hiera_{size}")),
              f"{'SAM 2.1' if gen == 'sam2.1' else 'SAM 2'} Hiera-{label} (images)", sam2=True,
              registry_name=f"{gen}_hiera_{size}", params=params, heavy=size != "t")
      for gen in ("sam2.1", "sam2")
      for size, label, params in (("t", "T", "39.0M"), ("s", "S", "46.1M"), ("b+", "B+", "80.8M"), ("l", "L", "224.4M"))],
    # RepViT-SAM (Wang et al. 2023): RepViT-M2.3 with the last stage at stride 1.
    Variant("repvit_sam", "repvit_sam", "rep_vit", MappingProxyType(dict(arch="repvit_sam")),
            "RepViT-SAM (RepViT-M2.3, last stride 1)", registry_name="repvit_sam", params="27.2M", heavy=True),
    # NanoSAM (NVIDIA-AI-IOT): ResNet-18 encoder distilled from MobileSAM + MobileSAM's decoder. Upstream
    # ships ONNX only (`samdeploy import`); its predictor resizes BICUBIC with int() truncation, our
    # PyTorch export keeps SAM's preprocessing (see models/nanosam.py).
    Variant("nanosam", "nanosam", "nanosam", MappingProxyType(dict(backbone="resnet18")),
            "NanoSAM (ResNet-18 encoder distilled from MobileSAM; MobileSAM decoder)", registry_name="nanosam",
            params="15.8M"),
    # EfficientSAM (Xiong et al. 2023, yformer): plain ViT-T/S with global attention, its own decoder.
    Variant("efficient_sam_vitt", "efficient_sam", "efficient_sam", MappingProxyType(dict(embed_dim=192, num_heads=3)),
            "EfficientSAM-Ti (ViT-T, global attention; own prompt encoder/decoder)", efficient_sam=True,
            registry_name="efficient_sam_vitt", params="10.2M"),
    Variant("efficient_sam_vits", "efficient_sam", "efficient_sam", MappingProxyType(dict(embed_dim=384, num_heads=6)),
            "EfficientSAM-S (ViT-S, global attention; own prompt encoder/decoder)", efficient_sam=True,
            registry_name="efficient_sam_vits", params="26.4M", heavy=True),
]

# Where each family's code lives and how its checkpoints are recognised (see the Variant fields).
_FAMILY_CODE: Mapping[str, Mapping[str, Any]] = {
    "efficientvit_sam": dict(builder="efficientvit_sam:encoder_for", signature=("backbone.stages.", "neck.")),
    "edge_sam": dict(builder="rep_vit:encoder_for", signature=("fuse_stage2.",)),
    "hq_sam": dict(model_builder="hq_sam:build_hq_sam", random_builder="hq_sam:random_hq_sam", signature=("hf_token",)),
    "sam2": dict(model_builder="sam2:build_sam2_image", random_builder="sam2:random_sam2_image", signature=("sam_mask_decoder.|trunk.",)),
    "repvit_sam": dict(builder="rep_vit:encoder_for", signature=("features.", "neck.")),  # after edge_sam
    "nanosam": dict(builder="nanosam:encoder_for", signature=("up_1.0.weight", "backbone.")),
    "efficient_sam": dict(model_builder="efficient_sam:build_efficient_sam", random_builder="efficient_sam:random_efficient_sam",
                          signature=("patch_embed.proj.", "pos_embed", "mlp.fc1.")),
}
_TABLE = [dataclasses.replace(v, **_FAMILY_CODE.get(v.family, {})) for v in _TABLE]

VARIANTS: Mapping[str, Variant] = MappingProxyType({v.name: v for v in _TABLE})


def family_signatures() -> list[tuple[str, tuple[str, ...]]]:
    """(family, key substrings) in table order, for checkpoint detection (edge_sam before repvit_sam:
    EdgeSAM's keys contain RepViT-SAM's signature too)."""
    seen: dict[str, tuple[str, ...]] = {}
    for v in _TABLE:
        if v.signature and v.family not in seen:
            seen[v.family] = v.signature
    return list(seen.items())


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
        prompts=v.prompts,
        decoder=v.decoder,
        encoder=v.encoder_spec,
        licence=v.licence,
        samdeploy_version=__version__,
        provenance=dict(provenance or {}),
    )
