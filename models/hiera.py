"""SAM2's image encoder: the Hiera trunk (hieradet) and the FPN neck, written for export.

Official key names (``image_encoder.trunk.*``, ``image_encoder.neck.*``); the arithmetic is the
official one, the forward pass is our own:

    PatchEmbed       conv k7 s4 p3 (3 -> C), channels last [B, 256, 256, C]
    + pos embed      bicubic(pos_embed (1,C,bkg,bkg) -> 256x256) + pos_embed_window (1,C,w0,w0) tiled
    blocks           MultiScaleBlock x sum(stages); LayerNorm eps 1e-6, MLP ratio 4 (GELU)
                     - window attention with window_spec[stage] (padding to a multiple of the window),
                       global attention in ``global_att_blocks``;
                     - the first block of stages 2..4 doubles the width (``proj`` on the shortcut), the
                       heads, and max-pools q (2x2) -- its windows are the PREVIOUS stage's window, the
                       pooled output is unpartitioned with window // 2;
    outputs          the last block of every stage, NCHW: [C,256^2], [2C,128^2], [4C,64^2], [8C,32^2]
    FpnNeck          1x1 convs (``convs.0`` = the lowest resolution) to 256; top-down fusion (nearest x2)
                     only into level 2 (64x64) from level 3; levels 0 and 1 are lateral only;
                     scalp=1 drops the 32x32 level -> [256@256^2, 256@128^2, 256@64^2]

Export notes: every spatial size is a Python int fixed by ``img_size`` (1024), so the graph has no
shape arithmetic besides the dynamic batch. The bicubic resize of ``pos_embed`` is written as two
constant interpolation matrices (PyTorch's bicubic, A = -0.75, align_corners=False, clamped borders),
``A_h @ pos_embed @ A_w^T``: no Resize op, and the whole positional embedding is a function of the
weights only (constant-folded). The window tiling is a broadcast add + reshape (no Tile), the nearest x2
upsampling likewise (no Resize). Attention is written out (MatMul / Softmax), not SDPA.

Configurations (``HIERA_CONFIGS``; SAM2 and SAM2.1 share the trunk and neck):

    name  embed heads stages         global_att_blocks  window_spec   bkg    channel list
    t     96    1     (1, 2, 7, 2)   (5, 7, 9)          (8, 4, 14, 7) 7x7    768,384,192,96
    s     96    1     (1, 2, 11, 2)  (7, 10, 13)        (8, 4, 14, 7) 7x7    768,384,192,96
    b+    112   2     (2, 3, 16, 3)  (12, 16, 20)       (8, 4, 14, 7) 14x14  896,448,224,112
    l     144   2     (2, 6, 36, 4)  (23, 33, 43)       (8, 4, 16, 8) 7x7    1152,576,288,144
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["HieraConfig", "HIERA_CONFIGS", "Hiera", "MultiScaleBlock", "FpnNeck", "Sam2ImageEncoder", "bicubic_matrix"]


@dataclass(frozen=True)
class HieraConfig:
    embed_dim: int
    num_heads: int
    stages: tuple[int, ...]
    global_att_blocks: tuple[int, ...]
    window_spec: tuple[int, ...] = (8, 4, 14, 7)
    bkg_size: tuple[int, int] = (7, 7)

    @property
    def channel_list(self) -> list[int]:
        """Trunk output widths, lowest resolution first (the neck's ``backbone_channel_list``)."""
        return [self.embed_dim * 2**i for i in range(len(self.stages))][::-1]


HIERA_CONFIGS: dict[str, HieraConfig] = {
    "t": HieraConfig(96, 1, (1, 2, 7, 2), (5, 7, 9)),
    "s": HieraConfig(96, 1, (1, 2, 11, 2), (7, 10, 13)),
    "b+": HieraConfig(112, 2, (2, 3, 16, 3), (12, 16, 20), bkg_size=(14, 14)),
    "l": HieraConfig(144, 2, (2, 6, 36, 4), (23, 33, 43), window_spec=(8, 4, 16, 8)),
}


def bicubic_matrix(out_size: int, in_size: int) -> Tensor:
    """[out, in] matrix M with ``M @ v`` = PyTorch's 1-D bicubic resize of v (align_corners=False,
    A = -0.75, source indices clamped to the border). float64 weights, returned as float32."""
    a = -0.75
    scale = in_size / out_size
    rows = []
    for i in range(out_size):
        real = scale * (i + 0.5) - 0.5  # not clamped for cubic
        base = math.floor(real)
        t = real - base
        w = (
            ((a * (t + 1) - 5 * a) * (t + 1) + 8 * a) * (t + 1) - 4 * a,
            ((a + 2) * t - (a + 3)) * t * t + 1,
            ((a + 2) * (1 - t) - (a + 3)) * (1 - t) * (1 - t) + 1,
            ((a * (2 - t) - 5 * a) * (2 - t) + 8 * a) * (2 - t) - 4 * a,
        )
        row = [0.0] * in_size
        for k, wk in enumerate(w):
            j = min(max(base - 1 + k, 0), in_size - 1)
            row[j] += wk
        rows.append(row)
    return torch.tensor(rows, dtype=torch.float64).to(torch.float32)


class _GeluMLP(nn.Module):
    """Linear -> GELU -> Linear with SAM2's key names (``layers.0``, ``layers.1``)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList([nn.Linear(dim, hidden), nn.Linear(hidden, dim)])

    def forward(self, x: Tensor) -> Tensor:
        return self.layers[1](F.gelu(self.layers[0](x)))


def _max_pool2(x: Tensor) -> Tensor:
    """2x2 max pool, stride 2, of a channels-last map [b, H, W, C] (floor, like MaxPool2d)."""
    return F.max_pool2d(x.permute(0, 3, 1, 2), kernel_size=2, stride=2).permute(0, 2, 3, 1)


class MultiScaleAttention(nn.Module):
    """Attention over tokens [b, H, W, dim] -> [b, H', W', dim_out]; optional 2x2 max-pooled queries."""

    def __init__(self, dim: int, dim_out: int, num_heads: int, q_pool: bool) -> None:
        super().__init__()
        self.dim_out = dim_out
        self.num_heads = num_heads
        self.head_dim = dim_out // num_heads
        self.q_pool = q_pool
        self.qkv = nn.Linear(dim, dim_out * 3)
        self.proj = nn.Linear(dim_out, dim_out)

    def forward(self, x: Tensor, hw: tuple[int, int]) -> Tensor:
        h, w = hw
        nh, hd = self.num_heads, self.head_dim
        qkv = self.qkv(x)  # [b, h, w, 3*dim_out], channels ordered (3, heads, hd)
        q, k, v = qkv[..., : self.dim_out], qkv[..., self.dim_out : 2 * self.dim_out], qkv[..., 2 * self.dim_out :]
        if self.q_pool:
            q = _max_pool2(q)
            h, w = h // 2, w // 2
        q = q.reshape(-1, h * w, nh, hd).transpose(1, 2)  # [b, nh, Lq, hd]
        k = k.reshape(-1, hw[0] * hw[1], nh, hd).transpose(1, 2)
        v = v.reshape(-1, hw[0] * hw[1], nh, hd).transpose(1, 2)
        attn = torch.softmax((q * (1.0 / math.sqrt(hd))) @ k.transpose(-2, -1), dim=-1)
        out = (attn @ v).transpose(1, 2).reshape(-1, h, w, self.dim_out)
        return self.proj(out)


class MultiScaleBlock(nn.Module):
    """One Hiera block on a channels-last map of the fixed size ``hw`` (the block's INPUT size)."""

    def __init__(
        self, dim: int, dim_out: int, num_heads: int, hw: tuple[int, int], q_stride: bool = False,
        window_size: int = 0, mlp_ratio: float = 4.0,
    ) -> None:
        super().__init__()
        self.dim, self.dim_out = dim, dim_out
        self.hw = hw
        self.q_stride = q_stride
        self.window_size = window_size
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = MultiScaleAttention(dim, dim_out, num_heads, q_pool=q_stride)
        self.norm2 = nn.LayerNorm(dim_out, eps=1e-6)
        self.mlp = _GeluMLP(dim_out, int(dim_out * mlp_ratio))
        if dim != dim_out:
            self.proj = nn.Linear(dim, dim_out)

    def forward(self, x: Tensor) -> Tensor:
        h, w = self.hw
        shortcut = x
        x = self.norm1(x)
        if self.dim != self.dim_out:
            shortcut = self.proj(x)
            if self.q_stride:
                shortcut = _max_pool2(shortcut)
        oh, ow = (h // 2, w // 2) if self.q_stride else (h, w)  # output size

        ws = self.window_size
        if ws > 0:
            ph, pw = -h % ws, -w % ws
            if ph or pw:
                x = F.pad(x, (0, 0, 0, pw, 0, ph))
            hp, wp = h + ph, w + pw
            nwh, nww = hp // ws, wp // ws
            c = self.dim
            x = x.reshape(-1, nwh, ws, nww, ws, c).permute(0, 1, 3, 2, 4, 5).reshape(-1, ws, ws, c)
            x = self.attn(x, (ws, ws))
            wo = ws // 2 if self.q_stride else ws  # window size after the pooled queries
            x = x.reshape(-1, nwh, nww, wo, wo, self.dim_out).permute(0, 1, 3, 2, 4, 5)
            x = x.reshape(-1, nwh * wo, nww * wo, self.dim_out)
            if nwh * wo > oh or nww * wo > ow:
                x = x[:, :oh, :ow, :]
        else:
            x = self.attn(x, (h, w))
        x = shortcut + x
        return x + self.mlp(self.norm2(x))


class _PatchEmbed(nn.Module):
    def __init__(self, embed_dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, embed_dim, kernel_size=7, stride=4, padding=3)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x).permute(0, 2, 3, 1)  # channels last


class Hiera(nn.Module):
    """The trunk: x [B,3,S,S] (normalised) -> [stage1 .. stage4] NCHW (highest resolution first)."""

    def __init__(self, config: HieraConfig, img_size: int = 1024) -> None:
        super().__init__()
        cfg = self.config = config
        self.patch_embed = _PatchEmbed(cfg.embed_dim)
        self.grid = img_size // 4
        self.pos_embed = nn.Parameter(torch.zeros(1, cfg.embed_dim, *cfg.bkg_size))
        w0 = cfg.window_spec[0]
        self.pos_embed_window = nn.Parameter(torch.zeros(1, cfg.embed_dim, w0, w0))

        stage_ends = [sum(cfg.stages[: i + 1]) - 1 for i in range(len(cfg.stages))]
        self.stage_ends = stage_ends
        q_pool_blocks = [e + 1 for e in stage_ends[:-1]]  # q_pool = 3: every stage transition
        dim, heads, stage, side = cfg.embed_dim, cfg.num_heads, 0, self.grid
        blocks = []
        for i in range(sum(cfg.stages)):
            window = 0 if i in cfg.global_att_blocks else cfg.window_spec[stage]  # lags by one block
            dim_out = dim
            if i - 1 in stage_ends:
                dim_out, heads, stage = dim * 2, heads * 2, stage + 1
            pool = i in q_pool_blocks
            blocks.append(MultiScaleBlock(dim, dim_out, heads, (side, side), q_stride=pool, window_size=window))
            dim = dim_out
            side = side // 2 if pool else side
        self.blocks = nn.ModuleList(blocks)
        self.channel_list = [self.blocks[e].dim_out for e in stage_ends[::-1]]

    def get_pos_embed(self) -> Tensor:
        """[1, grid, grid, C] channels last; a function of the weights only."""
        g = self.grid
        dev = self.pos_embed.device
        ah = bicubic_matrix(g, self.pos_embed.shape[2]).to(dev)
        aw = bicubic_matrix(g, self.pos_embed.shape[3]).to(dev)
        pos = ah @ self.pos_embed @ aw.t()  # [1, C, g, g]
        c, w0 = self.pos_embed_window.shape[1], self.pos_embed_window.shape[2]
        n = g // w0
        win = self.pos_embed_window.reshape(1, c, 1, w0, 1, w0)  # tiled by broadcasting (no Tile / Expand)
        return (pos.reshape(1, c, n, w0, n, w0) + win).reshape(1, c, g, g).permute(0, 2, 3, 1)

    def forward(self, x: Tensor) -> list[Tensor]:
        x = self.patch_embed(x) + self.get_pos_embed()
        outputs = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in self.stage_ends:
                outputs.append(x.permute(0, 3, 1, 2))
        return outputs


def _add_upsampled_nearest2(lateral: Tensor, coarse: Tensor, c: int, h: int, w: int) -> Tensor:
    """lateral [B, c, 2h, 2w] + nearest-x2-upsampled coarse [B, c, h, w], by broadcasting (no Resize);
    the sizes are Python ints so the graph has no shape arithmetic."""
    fine = lateral.reshape(-1, c, h, 2, w, 2) + coarse.reshape(-1, c, h, 1, w, 1)
    return fine.reshape(-1, c, 2 * h, 2 * w)


class _Conv(nn.Module):
    """``convs.N.conv`` (official: an nn.Sequential holding one 1x1 conv named ``conv``)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class FpnNeck(nn.Module):
    """xs [stage1..stage4] -> [level0 (4x), level1 (8x), level2 (16x)], d_model channels (scalp = 1).
    Top-down fusion (nearest x2, sum) only into ``fpn_top_down_levels`` = (2, 3)."""

    def __init__(self, backbone_channel_list: list[int], d_model: int = 256, top_down_levels: tuple[int, ...] = (2, 3),
                 scalp: int = 1, grid: int = 256) -> None:
        super().__init__()
        self.grid = grid  # side of level 0 (the trunk's first stage); level i has side grid >> i
        self.backbone_channel_list = list(backbone_channel_list)
        self.d_model = d_model
        self.convs = nn.ModuleList(_Conv(c, d_model) for c in backbone_channel_list)
        self.top_down_levels = tuple(top_down_levels)
        self.scalp = scalp

    def forward(self, xs: list[Tensor]) -> list[Tensor]:
        n = len(self.convs) - 1
        out: list[Tensor] = [xs[0]] * (n + 1)
        prev: Tensor | None = None
        for i in range(n, -1, -1):
            lateral = self.convs[n - i](xs[i])
            if i in self.top_down_levels and prev is not None:
                side = self.grid >> (i + 1)  # prev's side
                prev = _add_upsampled_nearest2(lateral, prev, self.d_model, side, side)
            else:
                prev = lateral
            out[i] = prev
        return out[: len(out) - self.scalp] if self.scalp else out


class Sam2ImageEncoder(nn.Module):
    """``image_encoder``: trunk + neck. x [B,3,1024,1024] normalised -> [256@256^2, 256@128^2, 256@64^2]."""

    def __init__(self, config: HieraConfig, img_size: int = 1024, d_model: int = 256) -> None:
        super().__init__()
        self.trunk = Hiera(config, img_size)
        self.neck = FpnNeck(self.trunk.channel_list, d_model, grid=self.trunk.grid)

    def forward(self, x: Tensor) -> list[Tensor]:
        return self.neck(self.trunk(x))
