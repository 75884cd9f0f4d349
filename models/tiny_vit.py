"""TinyViT-5M image encoder of MobileSAM / TinySAM (our own implementation, official key names).

Architecture (Wu et al., "TinyViT", ECCV 2022; as adapted by MobileSAM for a 1024x1024 input):

    image [B,3,1024,1024]
      patch_embed   2x (3x3 s2 conv+BN), GELU between        -> [B, 64,256,256]
      layers.0      ConvLayer: 2 MBConv, then PatchMerging   -> [B,128,128,128]
      layers.1      2 TinyViTBlocks (window 7),  PatchMerging -> [B,160, 64, 64]
      layers.2      6 TinyViTBlocks (window 14), PatchMerging with stride 1 (SAM's change) -> [B,320,64,64]
      layers.3      2 TinyViTBlocks (window 7)               -> [B,320, 64, 64]
      neck          1x1 conv, LayerNorm2d, 3x3 conv, LayerNorm2d -> [B,256,64,64]

The state_dict matches the official ``image_encoder.*`` keys and shapes exactly, including the unused
classifier ``norm_head``/``head`` and the BatchNorm buffers, so official checkpoints load strictly.

Differences from the official code, all about inference and export (the arithmetic is the same):
- Attention biases are gathered from ``attention_biases`` in every forward. The official code caches
  them when ``eval()`` is called, so calling ``eval()`` before loading weights leaves stale biases.
- Tokens travel between blocks as channels-last maps [B,H,W,C]; stages exchange NCHW maps. Every
  reshape uses static sizes derived from ``img_size`` (batch as -1): no Shape ops in the exported
  graph, no Python branches on tensor values, no in-place ops on activations. The bias gathers and
  the pad amounts are constant subgraphs; after constant folding every tensor shape is static.
- The attention scale multiplies q before q @ k^T (fused-attention friendly).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .common import Conv2d_BN, LayerNorm2d

__all__ = ["TinyViT", "LayerNorm2d"]


class DropPath(nn.Module):
    """Stochastic depth for training; the identity in eval mode (and in every export)."""

    def __init__(self, rate: float) -> None:
        super().__init__()
        self.rate = rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.rate == 0.0:
            return x
        keep = 1.0 - self.rate
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep


def _drop_path(rate: float) -> nn.Module:
    return DropPath(rate) if rate > 0.0 else nn.Identity()


class PatchEmbed(nn.Module):
    """Two stride-2 3x3 convolutions: [B,3,S,S] -> [B,C,S/4,S/4]."""

    def __init__(self, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.seq = nn.Sequential(
            Conv2d_BN(in_chans, embed_dim // 2, 3, 2, 1),
            nn.GELU(),
            Conv2d_BN(embed_dim // 2, embed_dim, 3, 2, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.seq(x)


class MBConv(nn.Module):
    """Inverted residual: 1x1 expand, 3x3 depthwise, 1x1 project, residual add, GELU (NCHW)."""

    def __init__(self, dim: int, expand_ratio: float, drop_path: float) -> None:
        super().__init__()
        hidden = int(dim * expand_ratio)
        self.conv1 = Conv2d_BN(dim, hidden, 1)
        self.act1 = nn.GELU()
        self.conv2 = Conv2d_BN(hidden, hidden, 3, 1, 1, groups=hidden)
        self.act2 = nn.GELU()
        self.conv3 = Conv2d_BN(hidden, dim, 1, bn_weight_init=0.0)  # the block starts as the identity
        self.act3 = nn.GELU()
        self.drop_path = _drop_path(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act1(self.conv1(x))
        y = self.act2(self.conv2(y))
        y = self.conv3(y)
        return self.act3(x + self.drop_path(y))


class PatchMerging(nn.Module):
    """1x1 conv, 3x3 depthwise conv (stride 2, or 1 for SAM's last stage), 1x1 conv (NCHW -> NCHW)."""

    def __init__(self, dim: int, out_dim: int, stride: int) -> None:
        super().__init__()
        self.act = nn.GELU()
        self.conv1 = Conv2d_BN(dim, out_dim, 1)
        self.conv2 = Conv2d_BN(out_dim, out_dim, 3, stride, 1, groups=out_dim)
        self.conv3 = Conv2d_BN(out_dim, out_dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.conv1(x))
        x = self.act(self.conv2(x))
        return self.conv3(x)


class ConvLayer(nn.Module):
    """Stage 0: MBConv blocks, then the downsampling PatchMerging (NCHW in and out)."""

    def __init__(
        self,
        dim: int,
        out_dim: int,
        depth: int,
        expand_ratio: float,
        drop_path: Sequence[float],
        downsample_stride: int,
    ) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(MBConv(dim, expand_ratio, drop_path[i]) for i in range(depth))
        self.downsample = PatchMerging(dim, out_dim, downsample_stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return self.downsample(x)


class Mlp(nn.Module):
    """Pre-norm MLP: LayerNorm, Linear, GELU, Linear (channels last)."""

    def __init__(self, dim: int, hidden_dim: int, drop: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.drop(self.act(self.fc1(self.norm(x))))
        return self.drop(self.fc2(x))


def relative_offset_index(window_size: int) -> torch.Tensor:
    """[N,N] index into the per-head bias table, N = window_size**2.

    The table has one entry per absolute offset (|dy|, |dx|) between two tokens of a window, at
    position |dy| * window_size + |dx| (the order in which the official code enumerates offsets,
    starting from token (0, 0)).
    """
    coords = torch.arange(window_size)
    ys = coords.repeat_interleave(window_size)  # row of each token, row-major
    xs = coords.repeat(window_size)
    dy = (ys[:, None] - ys[None, :]).abs()
    dx = (xs[:, None] - xs[None, :]).abs()
    return dy * window_size + dx


class Attention(nn.Module):
    """Pre-norm multi-head self-attention over the tokens of one window, with a learned bias per
    head and relative offset (LeViT style). x [Bw,N,C] -> [Bw,N,C]."""

    def __init__(self, dim: int, num_heads: int, window_size: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.num_tokens = window_size * window_size
        self.scale = self.head_dim**-0.5
        self.norm = nn.LayerNorm(dim)
        # Per head the output features are [q | k | v] (head-major), as in the official checkpoints.
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.attention_biases = nn.Parameter(torch.zeros(num_heads, window_size * window_size))
        self.register_buffer("attention_bias_idxs", relative_offset_index(window_size), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, hd = self.num_tokens, self.head_dim
        qkv = self.qkv(self.norm(x)).reshape(-1, n, self.num_heads, 3 * hd).transpose(1, 2)
        q, k, v = qkv.split(hd, dim=-1)  # each [Bw, heads, N, head_dim]
        # Gathered on every call, never cached at eval(); constant folding (ORT, onnxslim, TensorRT)
        # turns it into a constant in the exported graph.
        bias = self.attention_biases[:, self.attention_bias_idxs]  # [heads, N, N]
        attn = ((q * self.scale) @ k.transpose(-2, -1) + bias).softmax(dim=-1)
        x = (attn @ v).transpose(1, 2).reshape(-1, n, self.num_heads * hd)
        return self.proj(x)


class TinyViTBlock(nn.Module):
    """Window attention (residual), 3x3 depthwise conv, MLP (residual). x [B,H,W,C] -> [B,H,W,C].

    The map is zero-padded at the bottom/right to a multiple of the window size, as the official code
    does; the padded tokens take part in attention (no masking) and are cropped afterwards.
    """

    def __init__(
        self,
        dim: int,
        resolution: int,
        num_heads: int,
        window_size: int,
        mlp_ratio: float,
        drop: float,
        drop_path: float,
        local_conv_size: int,
    ) -> None:
        super().__init__()
        self.dim = dim
        self.resolution = resolution
        self.window_size = window_size
        self.pad = (window_size - resolution % window_size) % window_size
        self.attn = Attention(dim, num_heads, window_size)
        self.drop_path = _drop_path(drop_path)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop)
        self.local_conv = Conv2d_BN(dim, dim, local_conv_size, 1, local_conv_size // 2, groups=dim)

    def _window_attention(self, x: torch.Tensor) -> torch.Tensor:
        ws, r, c = self.window_size, self.resolution, self.dim
        padded = r + self.pad
        n = padded // ws  # windows per side
        if self.pad:  # a constant of the module, not of the data
            x = F.pad(x, (0, 0, 0, self.pad, 0, self.pad, 0, 0))  # bottom/right of [B,H,W,C]
        # [B,P,P,C] -> [B*n*n, ws*ws, C]
        x = x.reshape(-1, n, ws, n, ws, c).permute(0, 1, 3, 2, 4, 5).reshape(-1, ws * ws, c)
        x = self.attn(x)
        # [B*n*n, ws*ws, C] -> [B,P,P,C]
        x = x.reshape(-1, n, n, ws, ws, c).permute(0, 1, 3, 2, 4, 5).reshape(-1, padded, padded, c)
        if self.pad:
            x = x[:, :r, :r, :]
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self._window_attention(x))
        x = self.local_conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return x + self.drop_path(self.mlp(x))


class BasicLayer(nn.Module):
    """Stages 1-3: TinyViT blocks on a channels-last map, then an optional PatchMerging (NCHW in/out)."""

    def __init__(
        self,
        dim: int,
        resolution: int,
        depth: int,
        num_heads: int,
        window_size: int,
        mlp_ratio: float,
        drop: float,
        drop_path: Sequence[float],
        local_conv_size: int,
        out_dim: int | None,
        downsample_stride: int,
    ) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            TinyViTBlock(dim, resolution, num_heads, window_size, mlp_ratio, drop, drop_path[i], local_conv_size)
            for i in range(depth)
        )
        self.downsample = PatchMerging(dim, out_dim, downsample_stride) if out_dim is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)
        for block in self.blocks:
            x = block(x)
        x = x.permute(0, 3, 1, 2)
        if self.downsample is not None:
            x = self.downsample(x)
        return x


class TinyViT(nn.Module):
    """TinyViT image encoder with SAM's neck: [B,3,S,S] normalised image -> [B,256,S/16,S/16].

    Defaults are TinyViT-5M as built by MobileSAM's ``vit_t`` (and TinySAM). ``num_classes`` only sizes
    the unused classifier head kept for strict loading of official checkpoints.
    """

    def __init__(
        self,
        img_size: int = 1024,
        in_chans: int = 3,
        num_classes: int = 1000,
        embed_dims: Sequence[int] = (64, 128, 160, 320),
        depths: Sequence[int] = (2, 2, 6, 2),
        num_heads: Sequence[int] = (2, 4, 5, 10),
        window_sizes: Sequence[int] = (7, 7, 14, 7),
        mlp_ratio: float = 4.0,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        mbconv_expand_ratio: float = 4.0,
        local_conv_size: int = 3,
    ) -> None:
        super().__init__()
        num_stages = len(depths)
        if not (len(embed_dims) == len(num_heads) == len(window_sizes) == num_stages) or num_stages < 2:
            raise ValueError("embed_dims, depths, num_heads and window_sizes need one entry per stage (>= 2)")
        if img_size % 16:
            raise ValueError(f"img_size must be a multiple of 16, got {img_size}")
        self.img_size = img_size
        self.num_classes = num_classes

        self.patch_embed = PatchEmbed(in_chans, embed_dims[0])

        # Stage resolutions: S/4 for stage 0, halved by every PatchMerging except the last one, which
        # SAM's TinyViT runs with stride 1 (out_dim 320/448/576 in the official code) to end at S/16.
        strides = [2] * (num_stages - 2) + [1]
        resolutions = [img_size // 4]
        for s in strides:
            resolutions.append(resolutions[-1] // s)

        n_blocks = sum(depths)  # stochastic depth per block, linear in depth (python floats: meta-device safe)
        dpr = [drop_path_rate * i / max(n_blocks - 1, 1) for i in range(n_blocks)]
        self.layers = nn.ModuleList()
        for i in range(num_stages):
            block_dpr = dpr[sum(depths[:i]) : sum(depths[: i + 1])]
            last = i == num_stages - 1
            if i == 0:
                layer: nn.Module = ConvLayer(
                    embed_dims[0], embed_dims[1], depths[0], mbconv_expand_ratio, block_dpr, strides[0]
                )
            else:
                layer = BasicLayer(
                    dim=embed_dims[i],
                    resolution=resolutions[i],
                    depth=depths[i],
                    num_heads=num_heads[i],
                    window_size=window_sizes[i],
                    mlp_ratio=mlp_ratio,
                    drop=drop_rate,
                    drop_path=block_dpr,
                    local_conv_size=local_conv_size,
                    out_dim=None if last else embed_dims[i + 1],
                    downsample_stride=1 if last else strides[i],
                )
            self.layers.append(layer)

        # Classifier head of the ImageNet-pretrained TinyViT: unused by SAM, kept for strict loading.
        self.norm_head = nn.LayerNorm(embed_dims[-1])
        self.head = nn.Linear(embed_dims[-1], num_classes) if num_classes > 0 else nn.Identity()

        out_chans = 256  # SAM's prompt embedding dimension
        self.neck = nn.Sequential(
            nn.Conv2d(embed_dims[-1], out_chans, kernel_size=1, bias=False),
            LayerNorm2d(out_chans),
            nn.Conv2d(out_chans, out_chans, kernel_size=3, padding=1, bias=False),
            LayerNorm2d(out_chans),
        )
        # No custom init: weights always come from a checkpoint or samdeploy.models.init.randomize_
        # (TinyViT's trunc_normal_ init cost ~2 s per build for nothing).

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        for layer in self.layers:
            x = layer(x)
        return self.neck(x)
