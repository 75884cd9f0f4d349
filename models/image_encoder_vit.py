"""SAM's ViT image encoder (ViTDet-style), also used by the uniform-pruned SlimSAM models.

Architecture (Kirillov et al., "Segment Anything", 2023; Li et al., "ViTDet", 2022)::

    image [B,3,1024,1024] (normalised)
      patch_embed   16x16 conv, stride 16          -> [B,64,64,C]   (channels last)
      + pos_embed   learned [1,64,64,C]
      blocks        `depth` pre-norm transformer blocks; windowed attention (14x14, the map is
                    zero-padded 64 -> 70) except the `global_attn_indexes` blocks, which attend
                    over all 64x64 tokens; decomposed relative position biases (rel_pos_h/w)
      neck          1x1 conv C->256, LayerNorm2d, 3x3 conv, LayerNorm2d -> [B,256,64,64]

Differences from the official code, all about export (the arithmetic is the same): every reshape
uses sizes fixed at construction (batch as -1), the decomposed relative position terms are two
batched matmuls instead of einsum, the relative-position index is a constant of the module (no
interpolation: the input size is fixed), and there is no Python branching on tensor values.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .common import LayerNorm2d, MLPBlock

__all__ = ["ImageEncoderViT"]


def relative_position_index(size: int) -> torch.Tensor:
    """[size, size] index into a (2*size-1)-row table: entry (i, j) is the offset i - j + size - 1."""
    coords = torch.arange(size)
    return coords[:, None] - coords[None, :] + (size - 1)


class PatchEmbed(nn.Module):
    """Non-overlapping patch projection: [B,3,S,S] -> [B,S/p,S/p,C] (channels last)."""

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).permute(0, 2, 3, 1)


class Attention(nn.Module):
    """Multi-head self-attention over a size x size token map with decomposed relative position
    biases (MViTv2): bias(q_i, k_j) = q_i . rel_pos_h[row offset] + q_i . rel_pos_w[col offset].

    x [B', size, size, C] -> [B', size, size, C]; B' is images x windows.
    """

    def __init__(self, dim: int, num_heads: int, size: int, qkv_bias: bool = True) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embed_dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.size = size
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.rel_pos_h = nn.Parameter(torch.zeros(2 * size - 1, self.head_dim))
        self.rel_pos_w = nn.Parameter(torch.zeros(2 * size - 1, self.head_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s, heads, hd = self.size, self.num_heads, self.head_dim
        n = s * s
        # qkv features are [q | k | v], each head-major: -> 3 x [B'*heads, N, hd]
        qkv = self.qkv(x).reshape(-1, n, 3, heads, hd).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.reshape(3, -1, n, hd).unbind(0)

        attn = (q * self.scale) @ k.transpose(-2, -1)  # [B'*heads, N, N]

        # Decomposed relative position terms. Rh[i, j] = rel_pos_h[i - j + s - 1] (rows), same for Rw.
        idx = relative_position_index(s).to(q.device)
        rh = self.rel_pos_h[idx]  # [s(q row), s(k row), hd]
        rw = self.rel_pos_w[idx]  # [s(q col), s(k col), hd]
        r_q = q.reshape(-1, s, s, hd)  # [B'*heads, q_row, q_col, hd]
        # rel_h[b, y, x, ky] = sum_c r_q[b, y, x, c] * rh[y, ky, c]: batched over (b, y)
        rel_h = r_q @ rh.transpose(1, 2)  # [B'*heads, s, s, s]
        # rel_w[b, y, x, kx] = sum_c r_q[b, y, x, c] * rw[x, kx, c]: batched over (b, x)
        rel_w = (r_q.transpose(1, 2) @ rw.transpose(1, 2)).transpose(1, 2)  # [B'*heads, s, s, s]
        attn = attn.reshape(-1, s, s, s, s) + rel_h[:, :, :, :, None] + rel_w[:, :, :, None, :]
        attn = attn.reshape(-1, n, n).softmax(dim=-1)

        x = (attn @ v).reshape(-1, heads, s, s, hd).permute(0, 2, 3, 1, 4).reshape(-1, s, s, heads * hd)
        return self.proj(x)


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm1(x)), then x + mlp(norm2(x)). x [B,H,W,C].

    ``window_size`` 0 means global attention over the whole ``grid_size`` x ``grid_size`` map;
    otherwise the map is zero-padded at the bottom/right to a multiple of the window (64 -> 70 for
    window 14), split into windows, attended per window and cropped back.
    """

    def __init__(self, dim: int, num_heads: int, mlp_dim: int, window_size: int, grid_size: int) -> None:
        super().__init__()
        self.window_size = window_size
        self.grid_size = grid_size
        self.pad = (window_size - grid_size % window_size) % window_size if window_size > 0 else 0
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads, window_size if window_size > 0 else grid_size)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = MLPBlock(dim, mlp_dim, nn.GELU)

    def _windowed_attention(self, x: torch.Tensor) -> torch.Tensor:
        ws, g, c = self.window_size, self.grid_size, x.shape[-1]
        padded = g + self.pad
        n = padded // ws  # windows per side
        if self.pad:  # a constant of the module, not of the data
            x = F.pad(x, (0, 0, 0, self.pad, 0, self.pad))
        # [B,P,P,C] -> [B*n*n, ws, ws, C]
        x = x.reshape(-1, n, ws, n, ws, c).permute(0, 1, 3, 2, 4, 5).reshape(-1, ws, ws, c)
        x = self.attn(x)
        # [B*n*n, ws, ws, C] -> [B,P,P,C]
        x = x.reshape(-1, n, n, ws, ws, c).permute(0, 1, 3, 2, 4, 5).reshape(-1, padded, padded, c)
        if self.pad:
            x = x[:, :g, :g, :]
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm1(x)
        y = self._windowed_attention(y) if self.window_size > 0 else self.attn(y)
        x = x + y
        return x + self.mlp(self.norm2(x))


class ImageEncoderViT(nn.Module):
    """SAM ViT encoder + neck: [B,3,S,S] normalised image -> [B,out_chans,S/16,S/16].

    Arguments read like the SAM / SlimSAM tables: ``embed_dim``, ``depth``, ``num_heads``, ``mlp_dim``
    (explicit, because SlimSAM-77 prunes it to 696 != 4 x 168) and ``global_attn_indexes``.
    """

    def __init__(
        self,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_dim: int = 3072,
        global_attn_indexes: Sequence[int] = (2, 5, 8, 11),
        img_size: int = 1024,
        patch_size: int = 16,
        in_chans: int = 3,
        window_size: int = 14,
        out_chans: int = 256,
    ) -> None:
        super().__init__()
        if img_size % patch_size:
            raise ValueError(f"img_size {img_size} is not a multiple of patch_size {patch_size}")
        self.img_size = img_size
        grid = img_size // patch_size
        self.patch_embed = PatchEmbed(patch_size, in_chans, embed_dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, grid, grid, embed_dim))
        self.blocks = nn.ModuleList(
            Block(
                dim=embed_dim,
                num_heads=num_heads,
                mlp_dim=mlp_dim,
                window_size=0 if i in global_attn_indexes else window_size,
                grid_size=grid,
            )
            for i in range(depth)
        )
        self.neck = nn.Sequential(
            nn.Conv2d(embed_dim, out_chans, kernel_size=1, bias=False),
            LayerNorm2d(out_chans),
            nn.Conv2d(out_chans, out_chans, kernel_size=3, padding=1, bias=False),
            LayerNorm2d(out_chans),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return self.neck(x.permute(0, 3, 1, 2))
