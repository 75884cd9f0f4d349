"""EfficientSAM (Xiong et al., "EfficientSAM: Leveraged Masked Image Pretraining for Efficient Segment
Anything", 2023; yformer/EfficientSAM) ViT-T and ViT-S, written for export, with the official keys.

EfficientSAM is NOT SAM's decoder with a small encoder: its prompt encoder, two-way transformer and
upscaling differ (models.md 3.8), so the family has its own module tree here (``model_builder`` /
``random_builder`` in ``variants._FAMILY_CODE``).

    image_encoder   plain ViT, patch 16, depth 12, mlp_ratio 4, GLOBAL attention in every block (4096
                    tokens), fused qkv with bias, LayerNorm eps 1e-6; pos_embed (1, 197, C) trained at 224
                    with a cls token: the cls row is dropped and the 14x14 grid is BICUBIC-interpolated
                    to 64x64 (align_corners=False); neck Conv1x1 (no bias), LN2d, Conv3x3 (no bias), LN2d
                    -> [B, 256, 64, 64].  ViT-T: C = 192, 3 heads; ViT-S: C = 384, 6 heads.
    prompt_encoder  pe_layer (SAM's random Fourier features) + four (1, 256) embeddings:
                    invalid_points (label -1), point_embeddings (label 1 ONLY), bbox_top_left_embeddings
                    (2), bbox_bottom_right_embeddings (3). Label 0 (negative click) gets NO embedding:
                    its token is the positional encoding alone. A label -1 point keeps the positional
                    encoding of its coordinates (SAM zeroes it). No mask input, no dense embedding, no
                    "not a point" token.
    decoder points  exactly 6 per prompt (``decoder_max_num_input_points``): longer prompts are
                    truncated, shorter ones padded with (-1, -1) label -1. Before that, a coordinate < 0
                    becomes -1 (x and y separately; ``get_rescaled_pts``). Then +0.5, / 1024.
    mask_decoder    tokens [iou_token, mask_tokens(4), 6 point tokens]; two-way transformer (depth 2,
                    256, 8 heads, MLP 2048) with GELU MLPs, and a block that, unlike SAM's, always keeps
                    the self-attention residual and (layers > 0) adds the query PE to the residual stream
                    itself (``queries = queries + query_pe`` before self-attention); no dense prompt
                    embedding is added to the image tokens. Upscaling ``final_output_upscaling_layers``:
                    [ConvT 256->64, GroupNorm(1, 64), GELU], [ConvT 64->32, Identity, GELU].
                    Hypernetwork MLPs and the IoU head are ``layers.{0,1}.0`` (Linear + GELU each) +
                    ``fc``. The IoU head's raw outputs are the scores (no sigmoid).

Public API::

    build_efficient_sam(name, device=None) -> EfficientSam   ("efficient_sam_vitt" | "efficient_sam_vits")
    random_efficient_sam(name, seed=0, realistic=True) -> EfficientSam
    EfficientSam.encode(image [B,3,1024,1024] RGB 0..255, STRETCHED to 1024x1024) -> image_embeddings [B,256,64,64]
    EfficientSam.decode(image_embeddings [1,256,64,64], point_coords [B,N,2], point_labels [B,N],
                        mask_input [B,1,256,256], has_mask_input [B])
        -> (iou_predictions [B,4], low_res_masks [B,4,256,256])      (token 0 single, 1..3 multimask)
    EfficientSam.decode_reference(image_embeddings, point_coords, point_labels)  the official arithmetic
    bicubic_resize_matrix(n_in, n_out) -> [n_out, n_in] (torch's bicubic, align_corners=False, as a matrix)

Preprocessing (the official ``EfficientSam.preprocess``): ToTensor (0..1), bilinear resize to
1024x1024 ignoring the aspect ratio (``F.interpolate``, no antialias), ImageNet mean/std. The graph
takes the stretched image in 0..255 and normalises inside. Prompts are pixels in the 1024 frame
(x * 1024 / W, y * 1024 / H). Output logits are resized straight to (H, W) BICUBIC by the official
PyTorch model (its ONNX example uses bilinear); the contract says ``decoder.mask_interpolation``.

Export notes: ``mask_input`` / ``has_mask_input`` are graph inputs of every samdeploy decoder; this
decoder ignores their values (contract ``decoder.mask_input = False``; the runtime refuses a mask
prompt) but reads them for the prompt batch, so N = 0 points works and the inputs stay in the graph.
The 6-point pad/truncate is a concat + static slice (no Python branch on N); label handling is
masks times embeddings (no boolean-index writes); the image embedding has batch 1 and broadcasts over
the B prompts (the official code tiles it). The bicubic pos-embed interpolation is two constant
matrices (``bicubic_resize_matrix``), so the encoder graph has no Resize.

Key counts (official code, models.md 3.8): 278 for both sizes (encoder 153, prompt encoder 5,
mask decoder 120); parameters ViT-T 10.22M, ViT-S 26.41M.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .common import LayerNorm2d
from .prompt_encoder import PositionEmbeddingRandom
from .transformer import Attention as TokenAttention
from .variants import IMAGENET_MEAN, IMAGENET_STD

__all__ = [
    "EfficientSam",
    "EfficientSamImageEncoder",
    "EfficientSamPromptEncoder",
    "EfficientSamMaskDecoder",
    "build_efficient_sam",
    "random_efficient_sam",
    "make_realistic_efficient_sam_",
    "bicubic_resize_matrix",
    "MAX_DECODER_POINTS",
]

MAX_DECODER_POINTS = 6  # decoder_max_num_input_points of build_efficient_sam
IMG_SIZE = 1024
PATCH = 16
PRETRAIN_GRID = 224 // PATCH  # 14: pos_embed was trained at 224 (+ a cls token)
PROMPT_DIM = 256


def bicubic_resize_matrix(n_in: int, n_out: int) -> np.ndarray:
    """``[n_out, n_in]`` float64 matrix M with ``M @ v`` = torch's 1-D bicubic resize of ``v``
    (``F.interpolate(mode="bicubic", align_corners=False)``, a = -0.75, border-clamped taps).

    torch's 2-D bicubic is separable, so a 2-D resize of P [n_in, n_in] is ``M @ P @ M.T``. Computed
    with torch itself on the unit vectors (CPU, float64), so the semantics are torch's by construction."""
    eye = torch.eye(n_in, dtype=torch.float64, device="cpu").reshape(n_in, 1, 1, n_in)
    with torch.no_grad():
        out = F.interpolate(eye, size=(1, n_out), mode="bicubic", align_corners=False)  # [n_in, 1, 1, n_out]
    return out.reshape(n_in, n_out).T.contiguous().numpy()


# ---- image encoder ----------------------------------------------------------------------------------
class PatchEmbed(nn.Module):
    def __init__(self, in_chans: int, embed_dim: int, patch_size: int = PATCH) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size, bias=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x)  # [B, C, 64, 64]


class Attention(nn.Module):
    """Global multi-head self-attention over all tokens (fused qkv with bias)."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embed dim {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:  # [B, N, C]
        qkv = self.qkv(x).unflatten(-1, (3, self.num_heads, self.head_dim)).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]  # [B, heads, N, hd]
        # softmax(q k^T * head_dim^-0.5) v; PyTorch's fused kernel (3x faster on CPU for 4096 tokens),
        # exported as Mul/MatMul/Softmax/MatMul (q and k each scaled by head_dim^-0.25; the scale is
        # given so it is a constant, not computed from shapes in the graph)
        out = F.scaled_dot_product_attention(q, k, v, scale=self.head_dim ** -0.5)
        return self.proj(out.transpose(1, 2).flatten(2))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class EfficientSamImageEncoder(nn.Module):
    """x [B,3,1024,1024] (normalised) -> [B,256,64,64]."""

    def __init__(self, embed_dim: int, num_heads: int, depth: int = 12, mlp_ratio: float = 4.0,
                 img_size: int = IMG_SIZE, neck_dim: int = PROMPT_DIM) -> None:
        super().__init__()
        self.img_size = img_size
        self.grid = img_size // PATCH
        self.embed_dim = embed_dim
        self.patch_embed = PatchEmbed(3, embed_dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, PRETRAIN_GRID * PRETRAIN_GRID + 1, embed_dim))
        self.blocks = nn.ModuleList(Block(embed_dim, num_heads, mlp_ratio) for _ in range(depth))
        self.neck = nn.Sequential(
            nn.Conv2d(embed_dim, neck_dim, kernel_size=1, bias=False),
            LayerNorm2d(neck_dim),
            nn.Conv2d(neck_dim, neck_dim, kernel_size=3, padding=1, bias=False),
            LayerNorm2d(neck_dim),
        )
        # A plain array (not a buffer: not in state_dicts, and valid for meta-device builds too).
        self._pos_resize = bicubic_resize_matrix(PRETRAIN_GRID, self.grid).astype(np.float32)

    def abs_pos(self) -> Tensor:
        """The official ``get_abs_pos``: drop the cls row, bicubic 14x14 -> 64x64. [1, 64, 64, C]."""
        g, c = PRETRAIN_GRID, self.embed_dim
        grid = self.pos_embed[0, 1:].reshape(g, g, c).permute(2, 0, 1)  # [C, 14, 14]
        m = torch.from_numpy(self._pos_resize).to(device=grid.device, dtype=grid.dtype)  # [64, 14]
        return (m @ grid @ m.t()).permute(1, 2, 0).unsqueeze(0)

    def forward(self, x: Tensor) -> Tensor:
        x = self.patch_embed(x).permute(0, 2, 3, 1) + self.abs_pos()  # [B, 64, 64, C]
        x = x.flatten(1, 2)
        for block in self.blocks:
            x = block(x)
        x = x.unflatten(1, (self.grid, self.grid)).permute(0, 3, 1, 2)
        return self.neck(x)


# ---- prompt encoder -----------------------------------------------------------------------------------
class EfficientSamPromptEncoder(nn.Module):
    def __init__(self, embed_dim: int = PROMPT_DIM, image_embedding_size: tuple[int, int] = (64, 64),
                 input_image_size: tuple[int, int] = (IMG_SIZE, IMG_SIZE), max_points: int = MAX_DECODER_POINTS) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.image_embedding_size = image_embedding_size
        self.input_image_size = input_image_size
        self.max_points = max_points
        self.pe_layer = PositionEmbeddingRandom(embed_dim // 2)
        self.invalid_points = nn.Embedding(1, embed_dim)  # label -1
        self.point_embeddings = nn.Embedding(1, embed_dim)  # label 1 (label 0 gets none)
        self.bbox_top_left_embeddings = nn.Embedding(1, embed_dim)  # label 2
        self.bbox_bottom_right_embeddings = nn.Embedding(1, embed_dim)  # label 3

    def get_dense_pe(self) -> Tensor:
        h, w = self.image_embedding_size
        return self.pe_layer.dense(h, w).unsqueeze(0)

    def fit_points(self, point_coords: Tensor, point_labels: Tensor, per_prompt: Tensor) -> tuple[Tensor, Tensor]:
        """[B,N,2], [B,N] (N >= 0, prompt frame) -> exactly ``max_points`` points: coordinates < 0 become
        -1 (per axis), then padding with (-1, -1) label -1 or truncation. ``per_prompt`` [B,1,1] zeros."""
        k = self.max_points
        coords = torch.where(point_coords >= 0, point_coords, torch.full_like(point_coords, -1.0))
        pad_c = per_prompt + torch.full((1, k, 2), -1.0, dtype=coords.dtype, device=coords.device)  # [B,k,2]
        pad_l = per_prompt[..., 0] + torch.full((1, k), -1.0, dtype=point_labels.dtype, device=coords.device)
        return torch.cat([coords, pad_c], dim=1)[:, :k], torch.cat([point_labels, pad_l], dim=1)[:, :k]

    def embed_points(self, coords: Tensor, labels: Tensor) -> Tensor:
        """Fitted points [B,k,2] / labels [B,k] -> tokens [B,k,C]: PE(coord + 0.5) plus the label's
        embedding (-1 invalid, 1 point, 2/3 box corners; 0 and anything else: none)."""
        pe = self.pe_layer.forward_with_coords(coords + 0.5, self.input_image_size)
        lab = labels.unsqueeze(-1)
        out = pe + (lab == -1).to(pe.dtype) * self.invalid_points.weight
        out = out + (lab == 1).to(pe.dtype) * self.point_embeddings.weight
        out = out + (lab == 2).to(pe.dtype) * self.bbox_top_left_embeddings.weight
        return out + (lab == 3).to(pe.dtype) * self.bbox_bottom_right_embeddings.weight


# ---- mask decoder -------------------------------------------------------------------------------------
class GeluMLP(nn.Module):
    """The official ``MLPBlock``: ``num_layers`` x (Linear + GELU) as ``layers.{i}.0``, then ``fc``."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int) -> None:
        super().__init__()
        dims_in = [input_dim] + [hidden_dim] * (num_layers - 1)
        self.layers = nn.ModuleList(nn.Sequential(nn.Linear(i, hidden_dim), nn.GELU()) for i in dims_in)
        self.fc = nn.Linear(hidden_dim, output_dim)

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.layers:
            x = layer(x)
        return self.fc(x)


class TwoWayAttentionBlock(nn.Module):
    def __init__(self, dim: int, num_heads: int, mlp_dim: int, downsample: int = 2, skip_first_layer_pe: bool = False) -> None:
        super().__init__()
        self.self_attn = TokenAttention(dim, num_heads)
        self.norm1 = nn.LayerNorm(dim)
        self.cross_attn_token_to_image = TokenAttention(dim, num_heads, downsample)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = GeluMLP(dim, mlp_dim, dim, 1)
        self.norm3 = nn.LayerNorm(dim)
        self.norm4 = nn.LayerNorm(dim)
        self.cross_attn_image_to_token = TokenAttention(dim, num_heads, downsample)
        self.skip_first_layer_pe = skip_first_layer_pe

    def forward(self, queries: Tensor, keys: Tensor, query_pe: Tensor, key_pe: Tensor) -> tuple[Tensor, Tensor]:
        if not self.skip_first_layer_pe:  # a constant of the module
            queries = queries + query_pe  # EfficientSAM: the PE enters the residual stream
        queries = self.norm1(queries + self.self_attn(queries, queries, queries))  # residual always kept
        q, k = queries + query_pe, keys + key_pe
        queries = self.norm2(queries + self.cross_attn_token_to_image(q, k, keys))
        queries = self.norm3(queries + self.mlp(queries))
        q, k = queries + query_pe, keys + key_pe
        keys = self.norm4(keys + self.cross_attn_image_to_token(k, q, queries))
        return queries, keys


class TwoWayTransformer(nn.Module):
    def __init__(self, depth: int = 2, dim: int = PROMPT_DIM, num_heads: int = 8, mlp_dim: int = 2048, downsample: int = 2) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            TwoWayAttentionBlock(dim, num_heads, mlp_dim, downsample, skip_first_layer_pe=(i == 0)) for i in range(depth)
        )
        self.final_attn_token_to_image = TokenAttention(dim, num_heads, downsample)
        self.norm_final_attn = nn.LayerNorm(dim)

    def forward(self, image_embedding: Tensor, image_pe: Tensor, point_embedding: Tensor) -> tuple[Tensor, Tensor]:
        """image [b,C,h,w] (b = 1 broadcasts over the B prompts), pe [1,C,h,w], tokens [B,T,C]."""
        keys = image_embedding.flatten(2).transpose(1, 2)
        key_pe = image_pe.flatten(2).transpose(1, 2)
        queries = point_embedding
        for layer in self.layers:
            queries, keys = layer(queries, keys, point_embedding, key_pe)
        attn = self.final_attn_token_to_image(queries + point_embedding, keys + key_pe, keys)
        return self.norm_final_attn(queries + attn), keys


class EfficientSamMaskDecoder(nn.Module):
    def __init__(self, dim: int = PROMPT_DIM, num_multimask_outputs: int = 3, upscaling_dims: tuple[int, ...] = (64, 32),
                 iou_head_depth: int = 2, iou_head_hidden_dim: int = 256) -> None:
        super().__init__()
        self.transformer = TwoWayTransformer(2, dim, 8, 2048)
        self.num_mask_tokens = num_multimask_outputs + 1
        self.iou_token = nn.Embedding(1, dim)
        self.mask_tokens = nn.Embedding(self.num_mask_tokens, dim)
        layers, cin = [], dim
        for i, cout in enumerate(upscaling_dims):
            norm = nn.GroupNorm(1, cout) if i < len(upscaling_dims) - 1 else nn.Identity()
            layers.append(nn.Sequential(nn.ConvTranspose2d(cin, cout, kernel_size=2, stride=2), norm, nn.GELU()))
            cin = cout
        self.final_output_upscaling_layers = nn.ModuleList(layers)
        self.output_hypernetworks_mlps = nn.ModuleList(GeluMLP(dim, dim, cin, 2) for _ in range(self.num_mask_tokens))
        self.iou_prediction_head = GeluMLP(dim, iou_head_hidden_dim, self.num_mask_tokens, iou_head_depth)

    def output_tokens(self) -> Tensor:
        return torch.cat([self.iou_token.weight, self.mask_tokens.weight], dim=0)  # [5, C]

    def upscale(self, x: Tensor) -> Tensor:
        for layer in self.final_output_upscaling_layers:
            x = layer(x)
        return x

    def predict_masks(self, image_embeddings: Tensor, image_pe: Tensor, tokens: Tensor) -> tuple[Tensor, Tensor]:
        """tokens [B, 5+P, C] (output tokens then the prompt tokens) -> (masks [B,4,4h,4w], iou [B,4])."""
        h, w = image_embeddings.shape[-2:]
        hs, src = self.transformer(image_embeddings, image_pe, tokens)
        iou = self.iou_prediction_head(hs[:, 0, :])
        upscaled = self.upscale(src.transpose(1, 2).unflatten(-1, (h, w)))  # [B, 32, 4h, 4w]
        hyper = torch.stack([mlp(hs[:, 1 + i, :]) for i, mlp in enumerate(self.output_hypernetworks_mlps)], dim=1)
        masks = (hyper @ upscaled.flatten(2)).unflatten(-1, upscaled.shape[-2:])
        return masks, iou


# ---- the model ------------------------------------------------------------------------------------------
class EfficientSam(nn.Module):
    """EfficientSAM with ``encode`` / ``decode`` as the samdeploy graph contract (module docstring)."""

    def __init__(self, embed_dim: int, num_heads: int, variant: str = "", weights_sha256: str = "") -> None:
        super().__init__()
        self.image_encoder = EfficientSamImageEncoder(embed_dim, num_heads)
        grid = IMG_SIZE // PATCH
        self.prompt_encoder = EfficientSamPromptEncoder(PROMPT_DIM, (grid, grid), (IMG_SIZE, IMG_SIZE))
        self.mask_decoder = EfficientSamMaskDecoder(PROMPT_DIM)
        # Not in official checkpoints (persistent=False there too). ImageNet statistics on 0..1.
        self.register_buffer("pixel_mean", torch.tensor(IMAGENET_MEAN, dtype=torch.float32).view(1, 3, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(IMAGENET_STD, dtype=torch.float32).view(1, 3, 1, 1), False)
        self.variant = variant
        self.weights_sha256 = weights_sha256

    # ---- the contract ----------------------------------------------------------------------------
    def encode(self, image: Tensor) -> Tensor:
        """[B,3,1024,1024] RGB in 0..255, already stretched to 1024x1024 -> [B,256,64,64]."""
        x = (image / 255.0 - self.pixel_mean) / self.pixel_std
        return self.image_encoder(x)

    def decode(self, image_embeddings: Tensor, point_coords: Tensor, point_labels: Tensor, mask_input: Tensor,
               has_mask_input: Tensor) -> tuple[Tensor, Tensor]:
        """One image [1,256,64,64], B prompts of N >= 0 points (pixels in the 1024 frame, labels -1/0/1/2/3)
        -> (iou_predictions [B,4], low_res_masks [B,4,256,256]). mask_input's values are not used."""
        pe, dec = self.prompt_encoder, self.mask_decoder
        # [B,1,1] zeros: the prompt batch even when N = 0; keeps both mask inputs in the graph.
        per_prompt = (mask_input[:, 0, :1, :1] + has_mask_input.reshape(-1, 1, 1)) * 0.0
        coords, labels = pe.fit_points(point_coords, point_labels, per_prompt)
        sparse = pe.embed_points(coords, labels)  # [B,6,C]
        tokens = torch.cat([dec.output_tokens().unsqueeze(0) + per_prompt, sparse], dim=1)  # [B,11,C]
        masks, iou = dec.predict_masks(image_embeddings, pe.get_dense_pe(), tokens)
        return iou, masks

    def decode_reference(self, image_embeddings: Tensor, point_coords: Tensor, point_labels: Tensor) -> tuple[Tensor, Tensor]:
        """:meth:`decode` the way the official ``predict_masks`` + ``MaskDecoder`` read (tests): Python
        pad/truncate to 6 with -1, ``get_rescaled_pts``' ``where(x >= 0, x, -1)``, boolean-index label
        adds on a cloned PE, the image embedding and PE repeated per prompt."""
        pe, dec = self.prompt_encoder, self.mask_decoder
        b, n = point_labels.shape
        coords = torch.stack([torch.where(point_coords[..., i] >= 0, point_coords[..., i], -1.0) for i in (0, 1)], -1)
        labels = point_labels.clone()
        k = pe.max_points
        if n > k:
            coords, labels = coords[:, :k], labels[:, :k]
        elif n < k:
            coords = F.pad(coords, (0, 0, 0, k - n), value=-1.0)
            labels = F.pad(labels, (0, k - n), value=-1.0)
        emb = pe.pe_layer.forward_with_coords(coords + 0.5, pe.input_image_size).clone()
        for value, table in ((-1, pe.invalid_points), (1, pe.point_embeddings), (2, pe.bbox_top_left_embeddings),
                             (3, pe.bbox_bottom_right_embeddings)):
            emb[labels == value] += table.weight
        tokens = torch.cat([dec.output_tokens().unsqueeze(0).expand(b, -1, -1), emb], dim=1)
        image = image_embeddings.expand(b, -1, -1, -1).contiguous()
        dense_pe = torch.repeat_interleave(pe.get_dense_pe(), b, dim=0)
        masks, iou = dec.predict_masks(image, dense_pe, tokens)
        return iou, masks

    def forward(self, image: Tensor) -> Tensor:
        return self.encode(image)

    @property
    def image_size(self) -> int:
        return IMG_SIZE

    # ---- metadata (as models.sam.Sam) ----------------------------------------------------------------
    @property
    def contract(self):
        return self.make_contract()

    def make_contract(self, weights_sha256: str | None = None, **provenance: Any):
        from .variants import contract_for

        sha = weights_sha256 if weights_sha256 is not None else self.weights_sha256
        if not self.variant or not sha:
            raise ValueError("this model has no variant name or weights hash; build it with build_model/load_checkpoint")
        return contract_for(self.variant, sha, provenance=provenance)


def build_efficient_sam(name: str, device: str | torch.device | None = None) -> EfficientSam:
    """``name`` ("efficient_sam_vitt" | "efficient_sam_vits"): official keys and shapes, PyTorch
    default init, eval mode. ``device="meta"`` allocates nothing."""
    from .variants import get_variant

    v = get_variant(name)
    if v.family != "efficient_sam":
        raise ValueError(f"{name!r} is not an EfficientSAM variant")
    with torch.device(device if device is not None else "cpu"):
        model = EfficientSam(int(v.encoder_args["embed_dim"]), int(v.encoder_args["num_heads"]), variant=v.name)
    return model.eval()


# Embedding tables the generic init does not know by name (``init._EMBEDDING_NAMES``): drawn N(0, 1)
# like nn.Embedding's init, so random prompts carry trained-like weight.
_EXTRA_EMBEDDINGS = ("invalid_points", "bbox_top_left_embeddings", "bbox_bottom_right_embeddings")


@torch.no_grad()
def make_realistic_efficient_sam_(model: EfficientSam, target: float = 20.0, seed: int = 0) -> EfficientSam:
    """Rescale a random model's output layers in place (deterministic): a probe (unit-scale random
    embedding, 4 single positive clicks) then gives mask logits spanning +-``target`` per token and IoU
    predictions centred at 0.85/0.75/0.80/0.90 with a spread of 0.04 (as ``init.make_realistic_``)."""
    dec = model.mask_decoder
    device = dec.iou_token.weight.device
    g = torch.Generator().manual_seed(seed)
    n = 4
    emb = torch.randn(1, PROMPT_DIM, 64, 64, generator=g).to(device)
    coords = (torch.rand(n, 1, 2, generator=g) * IMG_SIZE).to(device)
    labels = torch.ones(n, 1, device=device)
    iou, masks = model.decode_reference(emb, coords, labels)  # masks are linear in each hypernetwork's fc
    for i, mlp in enumerate(dec.output_hypernetworks_mlps):
        factor = target / max(masks[:, i].abs().max().item(), 1e-12)
        mlp.fc.weight.mul_(factor)
        mlp.fc.bias.mul_(factor)
    # the IoU head reads the iou token only, which the rescale above does not touch
    last = dec.iou_prediction_head.fc
    mean, scale = iou.mean(0), 0.04 / (iou - iou.mean(0)).std().clamp_min(1e-12)
    last.weight.mul_(scale)
    last.bias.copy_((last.bias - mean) * scale + torch.tensor([0.85, 0.75, 0.80, 0.90], device=device))
    return model


def random_efficient_sam(name: str, seed: int = 0, realistic: bool = True) -> EfficientSam:
    """``name`` with ``init.randomize_``'s key-seeded weights (the three label embeddings the generic
    init does not know drawn N(0, 1)), optionally rescaled by :func:`make_realistic_efficient_sam_`."""
    from .init import _key_seed, randomize_

    model = build_efficient_sam(name)
    randomize_(model, seed)
    with torch.no_grad():
        for key, tensor in model.state_dict(keep_vars=True).items():
            if key.split(".")[-2] in _EXTRA_EMBEDDINGS:
                gen = torch.Generator().manual_seed(_key_seed(seed, key))
                tensor.data.copy_(torch.randn(tuple(tensor.shape), generator=gen))
    if realistic:
        make_realistic_efficient_sam_(model)
    model.weights_sha256 = f"random:{name}:seed={seed}" + ("" if realistic else ":raw")
    return model.eval()

