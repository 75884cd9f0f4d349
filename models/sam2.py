"""SAM2 / SAM2.1 (facebookresearch/sam2), the IMAGE path, written for export, with the official keys.

``Sam2Image`` holds every key of the official checkpoints (``torch.load(f)["model"]``, strict), so
the official files load with ``load_state_dict(strict=True)``. The video modules (``memory_attention``,
``memory_encoder``: ``models/sam2_video.py``; object-pointer projections, temporal encodings,
``mask_downsample``) are real modules: ``samdeploy export --video`` exports them as the three video graphs
(``sam2_video.MemoryAttentionGraph`` / ``MemoryEncoderGraph`` / ``TrackDecoderGraph`` = :meth:`Sam2Image.track_decode`).

Image size: ``image_size=S`` (a multiple of 32, default 1024; the official ``++model.image_size=S``)
changes the encoder input, the prompt frame (S), the low-res masks (S/4) and the embeddings (S/16); the
weights do not depend on S (``with_image_size``). The shapes below are for S = 1024.

Public API::

    build_sam2_image(name, device=None, image_size=1024) -> Sam2Image   (device="meta" allocates nothing)
    random_sam2_image(name, seed=0, realistic=True, image_size=1024) -> Sam2Image
    Sam2Image.with_image_size(S) -> Sam2Image (same weights)
    Sam2Image.track_decode(conditioned_embeddings [B,256,64,64], high_res_feats_0/1 [1,...], prompts as decode)
        -> (iou_predictions, low_res_masks, object_score_logits, obj_ptrs [B,4,256])
    Sam2Image.make_contract(video=False), Sam2Image.video_contract() -> contract.Video
    Sam2Image.encode(image [B,3,1024,1024] RGB 0..255, stretched to 1024x1024, no padding)
        -> (image_embeddings [B,256,64,64]   (the 64x64 FPN level + no_mem_embed, as set_image does),
            high_res_feats_0 [B,32,256,256]   (sam_mask_decoder.conv_s0 of the 256x256 level),
            high_res_feats_1 [B,64,128,128])  (sam_mask_decoder.conv_s1 of the 128x128 level)
    Sam2Image.decode(image_embeddings [1,...], high_res_feats_0 [1,...], high_res_feats_1 [1,...],
                     point_coords [B,N,2], point_labels [B,N], mask_input [B,1,256,256], has_mask_input [B])
        -> (iou_predictions [B,4]       AFTER the IoU head's sigmoid (iou_prediction_use_sigmoid: the
                                        official decoder returns sigmoid scores; no further sigmoid),
            low_res_masks [B,4,256,256] mask logits of all four tokens (0 single, 1..3 multimask),
            object_score_logits [B,1])  raw logit of the object-score head (> 0: object present)
    Sam2Image.decode_reference(...)     same outputs, the plain official arithmetic (tests)
    sam2_variant_of(state_dict) -> name (by keys and shapes; SAM2 vs 2.1 by ``no_obj_embed_spatial``)
    SAM2_OUTPUT_NAMES = contract.SAM2_ENCODER_OUTPUTS: image_embeddings, high_res_feats_0, high_res_feats_1

The encoder normalises inside: ``(image / 255 - ImageNet mean) / ImageNet std`` (SAM2Transforms:
ToTensor, Resize((1024,1024)) ignoring the aspect ratio, Normalize). Prompt coordinates are pixels in the
1024 frame (x * 1024 / W, y * 1024 / H); the +0.5 shift happens in the graph. The caller appends the
padding point (0, 0, -1) when there is no box, as for SAM. No selection happens in the graph: with
``multimask_output=True`` the official predictor returns tokens 1..3; with False it returns token 0,
except that ``build_sam2(apply_postprocessing=True)`` (the default) turns on
``dynamic_multimask_via_stability``: if token 0's stability score (area(logits > 0.05) / area(logits >
-0.05), 1 when the union is empty) is below 0.98, it returns the token in 1..3 with the highest IoU.
The image predictor does not gate masks by the object score.

Decoder differences from SAM-1 (same prompt encoder keys): token order [obj_score, iou, masks(4),
prompts]; the transformer MLPs are ``mlp.layers.{0,1}``; upscaling adds the high-res features:
``gelu(ln(dc1(x) + feats_1))`` then ``gelu(dc2(.) + feats_0)``; object-score MLP 256-256-256-1.

Export notes (same as ``hq_sam``): the image inputs have batch 1 and broadcast over the B prompts; the
prompt batch comes from ``has_mask_input`` so N = 0 works; no boolean-index writes, no OneHot/Tile; the
two-way transformer is ``factored_decoder.factored_two_way`` (prompt-independent work once per call).

Key counts (official checkpoints; checked against the sam2==1.1.0 package by tests/test_sam2_models.py):

    variant   SAM2 (sam2_hiera_*)   SAM2.1 (sam2.1_hiera_*)
    t         468                   471
    s         516                   519
    b+        612                   615
    l         900                   903

SAM2.1 adds ``no_obj_embed_spatial`` (1,64) and ``obj_ptr_tpos_proj.{weight,bias}`` (64,256)/(64,).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .common import LayerNorm2d, MLP
from .hiera import HIERA_CONFIGS, Sam2ImageEncoder
from .factored_decoder import factored_two_way
from .mask_decoder import MaskDecoder
from .prompt_encoder import PromptEncoder
from .sam2_video import MemoryAttention, MemoryEncoder, check_image_size
from .transformer import TwoWayTransformer

__all__ = [
    "Sam2MaskDecoder",
    "Sam2Image",
    "SAM2_VARIANTS",
    "SAM2_OUTPUT_NAMES",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "build_sam2_image",
    "random_sam2_image",
    "make_realistic_sam2_",
    "sam2_variant_of",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # on 0..1
IMAGENET_STD = (0.229, 0.224, 0.225)
from ..contract import SAM2_ENCODER_OUTPUTS as SAM2_OUTPUT_NAMES  # noqa: E402  (names live in the contract)

#: name -> (Hiera config key, SAM2.1?)
SAM2_VARIANTS: dict[str, tuple[str, bool]] = {
    **{f"sam2.1_hiera_{k}": (k, True) for k in HIERA_CONFIGS},
    **{f"sam2_hiera_{k}": (k, False) for k in HIERA_CONFIGS},
}


# ---- decoder ---------------------------------------------------------------------------------------
class Sam2MaskDecoder(MaskDecoder):
    """SAM's mask decoder with SAM2's extras (official names): ``obj_score_token``, ``conv_s0`` (C->C/8),
    ``conv_s1`` (C->C/4), ``pred_obj_score_head`` (MLP C-C-C-1); transformer MLPs as ``mlp.layers``."""

    def __init__(self, transformer_dim: int = 256) -> None:
        c = transformer_dim
        tf = TwoWayTransformer(depth=2, embedding_dim=c, num_heads=8, mlp_dim=2048)
        for layer in tf.layers:
            layer.mlp = MLP(c, 2048, c, 2)  # Linear-ReLU-Linear, keys mlp.layers.{0,1}
        super().__init__(c, tf, num_multimask_outputs=3, iou_head_depth=3, iou_head_hidden_dim=256)
        self.obj_score_token = nn.Embedding(1, c)
        self.conv_s0 = nn.Conv2d(c, c // 8, kernel_size=1)
        self.conv_s1 = nn.Conv2d(c, c // 4, kernel_size=1)
        self.pred_obj_score_head = MLP(c, c, 1, 3)

    def output_tokens(self) -> Tensor:
        """[obj_score_token, iou_token, mask_tokens(4)]: [6, C]."""
        return torch.cat([self.obj_score_token.weight, self.iou_token.weight, self.mask_tokens.weight], dim=0)

    def upscale(self, src: Tensor, feats_0: Tensor, feats_1: Tensor) -> Tensor:
        """src [B,C,h,w] (image tokens after the transformer) -> [B,C/8,4h,4w] with the high-res features."""
        dc1, ln1, _, dc2, _ = self.output_upscaling
        x = F.gelu(ln1(dc1(src) + feats_1))
        return F.gelu(dc2(x) + feats_0)

    def heads(self, queries: Tensor, keys: Tensor, hw: tuple[int, int], feats_0: Tensor, feats_1: Tensor
              ) -> tuple[Tensor, Tensor, Tensor]:
        """Transformer outputs (queries [B,6+N,C], image tokens [B,hw,C]) -> (iou [B,4] after sigmoid,
        masks [B,4,4h,4w], object_score_logits [B,1])."""
        h, w = hw
        obj = self.pred_obj_score_head(queries[:, 0, :])
        iou = torch.sigmoid(self.iou_prediction_head(queries[:, 1, :]))
        upscaled = self.upscale(keys.transpose(1, 2).unflatten(-1, (h, w)), feats_0, feats_1)  # [B,C/8,4h,4w]
        hyper = torch.stack([mlp(queries[:, 2 + i, :]) for i, mlp in enumerate(self.output_hypernetworks_mlps)], 1)
        masks = (hyper @ upscaled.flatten(2)).unflatten(-1, (4 * h, 4 * w))
        return iou, masks, obj


# ---- the model ---------------------------------------------------------------------------------------
class Sam2Image(nn.Module):
    """SAM2 / SAM2.1 with the image path as ``encode`` / ``decode`` (see the module docstring)."""

    def __init__(self, hiera: str = "t", sam2_1: bool = True, variant: str = "", weights_sha256: str = "",
                 image_size: int = 1024) -> None:
        super().__init__()
        d, mem = 256, 64
        s = check_image_size(image_size)
        self._image_size = s
        self.image_encoder = Sam2ImageEncoder(HIERA_CONFIGS[hiera], img_size=s, d_model=d)
        self.sam_prompt_encoder = PromptEncoder(d, (s // 16, s // 16), (s, s), mask_in_chans=16)
        self.sam_mask_decoder = Sam2MaskDecoder(d)
        self.memory_attention = MemoryAttention(d, num_layers=4, mem_dim=mem)
        self.memory_encoder = MemoryEncoder(d, mem)
        self.maskmem_tpos_enc = nn.Parameter(torch.zeros(7, 1, 1, mem))
        self.no_mem_embed = nn.Parameter(torch.zeros(1, 1, d))
        self.no_mem_pos_enc = nn.Parameter(torch.zeros(1, 1, d))
        self.no_obj_ptr = nn.Parameter(torch.zeros(1, d))
        self.mask_downsample = nn.Conv2d(1, 1, kernel_size=4, stride=4)
        self.obj_ptr_proj = MLP(d, d, d, 3)
        self.sam2_1 = sam2_1
        if sam2_1:
            self.no_obj_embed_spatial = nn.Parameter(torch.zeros(1, mem))
            self.obj_ptr_tpos_proj = nn.Linear(d, mem)
        self.hiera = hiera
        self.variant = variant
        self.weights_sha256 = weights_sha256
        # video settings of the official configs (sam2/configs/sam2*/sam2*_hiera_*.yaml, SAM2Base defaults,
        # build_sam2_video_predictor's overrides); written into the contract's video section
        self.hidden_dim, self.mem_dim, self.num_maskmem = d, mem, 7
        self.sigmoid_scale_for_mem_enc, self.sigmoid_bias_for_mem_enc = 20.0, -10.0

    # ---- the contract ----------------------------------------------------------------------------
    def encode(self, image: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """[B,3,1024,1024] RGB in 0..255 -> (image_embeddings, high_res_feats_0, high_res_feats_1)."""
        mean = torch.tensor(IMAGENET_MEAN, dtype=image.dtype, device=image.device).reshape(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, dtype=image.dtype, device=image.device).reshape(1, 3, 1, 1)
        x = (image / 255.0 - mean) / std
        level0, level1, level2 = self.image_encoder(x)
        dec = self.sam_mask_decoder
        image_embeddings = level2 + self.no_mem_embed.reshape(1, -1, 1, 1)
        return image_embeddings, dec.conv_s0(level0), dec.conv_s1(level1)

    def decode(
        self,
        image_embeddings: Tensor,
        high_res_feats_0: Tensor,
        high_res_feats_1: Tensor,
        point_coords: Tensor,
        point_labels: Tensor,
        mask_input: Tensor,
        has_mask_input: Tensor,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """One image, B prompts -> (iou_predictions [B,4] (sigmoid), low_res_masks [B,4,256,256],
        object_score_logits [B,1]). Coordinates in the 1024 frame; labels -1 pad, 0/1, 2/3 box corners."""
        pe, dec = self.sam_prompt_encoder, self.sam_mask_decoder
        h, w = image_embeddings.shape[-2:]
        sparse = pe.embed_points(point_coords, point_labels)  # [B,N,C]
        per_prompt = has_mask_input.reshape(-1, 1, 1) * 0.0  # [B,1,1]: the batch even when N = 0
        tokens = torch.cat([dec.output_tokens().unsqueeze(0) + per_prompt, sparse], dim=1)  # [B,6+N,C]
        queries, keys = factored_two_way(pe, dec.transformer, image_embeddings, tokens, mask_input, has_mask_input)
        iou, masks, obj = dec.heads(queries, keys, (h, w), high_res_feats_0, high_res_feats_1)
        return iou, masks, obj

    def decode_reference(
        self,
        image_embeddings: Tensor,
        high_res_feats_0: Tensor,
        high_res_feats_1: Tensor,
        point_coords: Tensor,
        point_labels: Tensor,
        mask_input: Tensor,
        has_mask_input: Tensor,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """:meth:`decode` computed the way the official MaskDecoder reads (for tests)."""
        pe, dec = self.sam_prompt_encoder, self.sam_mask_decoder
        h, w = image_embeddings.shape[-2:]
        sparse, dense = pe(point_coords, point_labels, mask_input, has_mask_input)
        tokens = torch.cat([dec.output_tokens().unsqueeze(0).expand(dense.shape[0], -1, -1), sparse], dim=1)
        queries, keys = dec.transformer(image_embeddings + dense, pe.get_dense_pe(), tokens)
        return dec.heads(queries, keys, (h, w), high_res_feats_0, high_res_feats_1)

    def forward(self, image: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return self.encode(image)

    @property
    def image_size(self) -> int:
        """S: the encoder input is S x S, prompts are in the S frame, low-res masks are S/4 (default 1024)."""
        return self._image_size

    def with_image_size(self, image_size: int) -> "Sam2Image":
        """The same weights in a model for S x S inputs (every weight is independent of S: Hiera's
        position embedding is resized, the prompt encoder's Fourier features are continuous)."""
        if int(image_size) == self._image_size:
            return self
        dev = self.no_mem_embed.device
        with torch.device(dev):
            other = Sam2Image(self.hiera, self.sam2_1, self.variant, self.weights_sha256, image_size=int(image_size))
        other.load_state_dict(self.state_dict(), strict=True)
        return other.train(self.training)

    # ---- the video graphs ------------------------------------------------------------------------------
    def track_decode(
        self,
        conditioned_embeddings: Tensor,
        high_res_feats_0: Tensor,
        high_res_feats_1: Tensor,
        point_coords: Tensor,
        point_labels: Tensor,
        mask_input: Tensor,
        has_mask_input: Tensor,
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """:meth:`decode` with per-object image embeddings ``[B,256,h,w]`` (the high-res features keep batch
        1) -> (iou_predictions [B,4], low_res_masks [B,4,4h,4w], object_score_logits [B,1], obj_ptrs [B,4,256]).
        ``obj_ptrs[:, i]`` = obj_ptr_proj(mask token i's output), replaced by ``no_obj_ptr`` where
        object_score_logits <= 0 (fixed_no_obj_ptr, as ``_forward_sam_heads``)."""
        pe, dec = self.sam_prompt_encoder, self.sam_mask_decoder
        h, w = conditioned_embeddings.shape[-2:]
        sparse = pe.embed_points(point_coords, point_labels)  # [B,N,C]
        per_prompt = has_mask_input.reshape(-1, 1, 1) * 0.0  # [B,1,1]: the batch even when N = 0
        tokens = torch.cat([dec.output_tokens().unsqueeze(0) + per_prompt, sparse], dim=1)  # [B,6+N,C]
        queries, keys = factored_two_way(pe, dec.transformer, conditioned_embeddings, tokens, mask_input, has_mask_input)
        iou, masks, obj = dec.heads(queries, keys, (h, w), high_res_feats_0, high_res_feats_1)
        ptrs = self.obj_ptr_proj(queries[:, 2:6, :]).reshape(-1, 4, self.hidden_dim)  # [B,4,C] (static 4)
        present = (obj > 0).to(ptrs.dtype).unsqueeze(-1)  # [B,1,1]
        ptrs = present * ptrs + (1.0 - present) * self.no_obj_ptr.unsqueeze(0)
        return iou, masks, obj, ptrs

    def video_contract(self):
        """The contract's ``video`` section of this model (``contract.Video``)."""
        from ..contract import Video

        s = self._image_size
        return Video(
            image_size=s,
            tokens_per_frame=(s // 16) ** 2,
            mem_dim=self.mem_dim,
            num_maskmem=self.num_maskmem,
            sigmoid_scale_for_mem_enc=self.sigmoid_scale_for_mem_enc,
            sigmoid_bias_for_mem_enc=self.sigmoid_bias_for_mem_enc,
            add_tpos_enc_to_obj_ptrs=self.sam2_1,
            use_signed_tpos_enc_to_obj_ptrs=self.sam2_1,
        )

    # ---- metadata (as models.sam.Sam) ----------------------------------------------------------------
    @property
    def contract(self):
        return self.make_contract()

    def make_contract(self, weights_sha256: str | None = None, video: bool = False, **provenance):
        """The contract of this variant (``models.variants``) with this model's weights hash, its image
        size (encoder input, prompt frame, low-res masks S/4, embedding shapes) and, with ``video``, the
        video section (``samdeploy export --video``)."""
        import dataclasses

        from .variants import contract_for

        sha = weights_sha256 if weights_sha256 is not None else self.weights_sha256
        if not self.variant or not sha:
            raise ValueError("this model has no variant name or weights hash; build it with build_model/load_checkpoint")
        c = contract_for(self.variant, sha, provenance=provenance)
        s = self._image_size
        if s != c.preprocess.input_size:
            from ..contract import TensorSpec

            base = c.preprocess.input_size  # the table's S: each output's stride is base // side
            shapes = {o.name: (o.shape[0], s // (base // o.shape[1]), s // (base // o.shape[2])) for o in c.encoder.outputs}
            c = dataclasses.replace(
                c,
                preprocess=dataclasses.replace(c.preprocess, input_size=s),
                prompts=dataclasses.replace(c.prompts, frame_size=s),
                decoder=dataclasses.replace(c.decoder, low_res_size=s // 4, embedding_shape=(256, s // 16, s // 16)),
                encoder=dataclasses.replace(c.encoder, outputs=tuple(TensorSpec(n, shapes[n]) for n in c.encoder.output_names)),
            )
        if video:
            c = dataclasses.replace(c, video=self.video_contract())
        return c


def build_sam2_image(name: str, device: str | torch.device | None = None, image_size: int = 1024) -> Sam2Image:
    """``name`` in :data:`SAM2_VARIANTS` ("sam2.1_hiera_t" | "_s" | "_b+" | "_l", "sam2_hiera_*"):
    official keys and shapes, PyTorch default init, eval mode. ``device="meta"`` allocates nothing.
    ``image_size`` S (multiple of 32, default 1024; the official ``++model.image_size=S``)."""
    if name not in SAM2_VARIANTS:
        raise ValueError(f"unknown SAM2 variant {name!r}; choose one of {sorted(SAM2_VARIANTS)}")
    hiera, is21 = SAM2_VARIANTS[name]
    with torch.device(device if device is not None else "cpu"):
        model = Sam2Image(hiera, is21, variant=name, image_size=image_size)
    return model.eval()


def sam2_variant_of(state_dict: dict[str, Tensor]) -> str:
    """The :data:`SAM2_VARIANTS` name whose keys and shapes equal ``state_dict``'s (raises otherwise)."""
    want = {k: tuple(v.shape) for k, v in state_dict.items()}
    for name in SAM2_VARIANTS:
        if SAM2_VARIANTS[name][1] != ("no_obj_embed_spatial" in want):
            continue
        sd = build_sam2_image(name, device="meta").state_dict()
        if len(sd) == len(want) and all(want.get(k) == tuple(v.shape) for k, v in sd.items()):
            return name
    raise ValueError("state_dict matches no SAM2/SAM2.1 image model (keys or shapes differ)")


@torch.no_grad()
def make_realistic_sam2_(model: Sam2Image, target: float = 20.0, seed: int = 0) -> Sam2Image:
    """Rescale a random model's output layers (in place, deterministic) so a probe (unit-scale random
    features, 4 single clicks) gives mask logits spanning +-``target`` per token, IoU scores (after the
    sigmoid) centred at 0.85/0.75/0.80/0.90, and object-score logits around +4."""
    dec = model.sam_mask_decoder
    device = dec.iou_token.weight.device
    g = torch.Generator().manual_seed(seed)
    n = 4
    emb = torch.randn(1, 256, 64, 64, generator=g).to(device)
    f0 = torch.randn(1, 32, 256, 256, generator=g).to(device)
    f1 = torch.randn(1, 64, 128, 128, generator=g).to(device)
    coords = torch.cat([torch.rand(n, 1, 2, generator=g) * 1024.0, torch.zeros(n, 1, 2)], dim=1).to(device)
    labels = torch.tensor([[1.0, -1.0]] * n, device=device)
    mask_in, has = torch.zeros(n, 1, 256, 256, device=device), torch.zeros(n, device=device)
    _, masks, obj = model.decode_reference(emb, f0, f1, coords, labels, mask_in, has)
    for i, mlp in enumerate(dec.output_hypernetworks_mlps):
        factor = target / max(masks[:, i].abs().max().item(), 1e-12)
        mlp.layers[-1].weight.mul_(factor)
        mlp.layers[-1].bias.mul_(factor)
    # IoU head (pre-sigmoid logits) and object-score head read tokens the rescale above leaves alone.
    pe, tf = model.sam_prompt_encoder, dec.transformer
    sparse, dense = pe(coords, labels, mask_in, has)
    tokens = torch.cat([dec.output_tokens().unsqueeze(0).expand(n, -1, -1), sparse], dim=1)
    queries, _ = tf(emb + dense, pe.get_dense_pe(), tokens)
    logits = dec.iou_prediction_head(queries[:, 1, :])
    centres = torch.logit(torch.tensor([0.85, 0.75, 0.80, 0.90], device=device))
    last = dec.iou_prediction_head.layers[-1]
    mean, scale = logits.mean(0), 0.3 / (logits - logits.mean(0)).std().clamp_min(1e-12)
    last.weight.mul_(scale)
    last.bias.copy_((last.bias - mean) * scale + centres)
    head = dec.pred_obj_score_head.layers[-1]
    o_mean, o_scale = obj.mean(), 1.0 / obj.std().clamp_min(1e-12)
    head.weight.mul_(o_scale)
    head.bias.copy_((head.bias - o_mean) * o_scale + 4.0)
    return model


def random_sam2_image(name: str, seed: int = 0, realistic: bool = True, image_size: int = 1024) -> Sam2Image:
    """``name`` with ``init.randomize_``'s seeded weights (same value per key as for the official
    module), optionally rescaled by :func:`make_realistic_sam2_` (always probed at S = 1024, so the
    weights do not depend on ``image_size``). eval mode."""
    from .init import randomize_

    model = build_sam2_image(name)
    randomize_(model, seed)
    if realistic:
        make_realistic_sam2_(model)
    model.weights_sha256 = f"random:{name}:seed={seed}" + ("" if realistic else ":raw")
    return model.with_image_size(image_size).eval()
