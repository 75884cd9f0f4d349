"""RepViT image encoders of EdgeSAM and RepViT-SAM (our own implementation, official key names).

Architecture (Wang et al., "RepViT", CVPR 2024; the SAM adaptations of EdgeSAM and RepViT-SAM),
shapes for a 1024x1024 input::

    image [B,3,1024,1024]
      features.0    stem: 3x3 s2 Conv+BN (3 -> C0/2), GELU, 3x3 s2 Conv+BN (-> C0)   -> /4
      features.1..  RepViT blocks, one per row of the config table below:
                      token mixer   stride 1: RepVGG-style DW 3x3 + DW 1x1 + identity, [SE]
                                    downsample: DW 3x3 s2 Conv+BN, [SE], 1x1 Conv+BN (C -> C')
                      channel mixer 1x1 Conv+BN (x2 width), GELU, 1x1 Conv+BN, residual
      EdgeSAM (RepViT-M1, C = 48/96/192/384, stages at /4, /8, /16, /32):
        fuse_stage2(stage 2 [192,64,64]) + upsample2x(fuse_stage3(stage 3 [384,32,32])) -> [256,64,64]
      RepViT-SAM (RepViT-M2.3, C = 80/160/320/640): the last downsample has stride 1, so the
        640-channel stage stays at /16 -> [640,64,64]
      neck          1x1 conv (-> 256), LayerNorm2d, 3x3 conv, LayerNorm2d             -> [B,256,64,64]

The config table has one row per block, ``(kernel, channels, se, stride)`` as in the paper's
tables (expansion ratio 2 everywhere; the official "HS" column selects GELU in both cases, so it is
left out). The state_dict matches the official ``image_encoder.*`` keys and shapes exactly (BN kept
as ``nn.BatchNorm2d`` modules, convolutions without bias where the official ones have none).

The two RepVGG depthwise mixers differ, as in the official repositories:
- EdgeSAM:    ``conv(x) + conv1(x) + x`` with ``conv1`` a DW 1x1 Conv+BN;
- RepViT-SAM: ``bn(conv(x) + conv1(x) + x)`` with ``conv1`` a plain DW 1x1 conv with bias.

Differences from the official code, all about inference and export (the arithmetic is the same):
- ``eval()``/``train()`` return the module (the official EdgeSAM ``RepViT.train`` returns None).
- No training-only paths (stochastic depth, freezing, re-parameterising ``fuse()`` methods, the
  detection ``out_indices`` outputs); the stage taps are fixed Python indices, so the exported graph
  has no data-dependent control flow, no Shape ops and no in-place ops on activations.
- The squeeze-excite is our own module with timm's key names and channel rounding (no timm import);
  its ReLU is not in-place.
- RepViT-SAM's "stride 1 when the block input has 320 channels" is expressed as
  ``last_stage_stride=1`` (in that table the only such block is the last downsample).
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .common import Conv2d_BN, LayerNorm2d

__all__ = [
    "BlockCfg",
    "RepViT",
    "RepViTBlock",
    "SqueezeExcite",
    "EDGE_SAM_M1",
    "REPVIT_SAM_M2_3",
    "edge_sam_encoder",
    "repvit_sam_encoder",
]


class BlockCfg(NamedTuple):
    """One row of the RepViT config table."""

    kernel: int
    channels: int
    se: bool
    stride: int


def _stage(channels: int, se: str, stride: int, kernel: int = 3) -> list[BlockCfg]:
    """Rows of one stage; ``se`` has one '1'/'0' per block (the first block downsamples if stride 2)."""
    return [BlockCfg(kernel, channels, flag == "1", stride if i == 0 else 1) for i, flag in enumerate(se)]


# EdgeSAM's RepViT-M1 (3 + 4 + 16 + 3 blocks); SE on alternate blocks.
EDGE_SAM_M1: tuple[BlockCfg, ...] = tuple(
    _stage(48, "100", 1)
    + _stage(96, "0100", 2)
    + _stage(192, "0" + "10" * 7 + "0", 2)
    + _stage(384, "010", 2)
)

# RepViT-SAM's RepViT-M2.3 without the last two blocks of stages 3 and 4 (7 + 8 + 36 + 3 blocks).
REPVIT_SAM_M2_3: tuple[BlockCfg, ...] = tuple(
    _stage(80, "1010100", 1)
    + _stage(160, "01010100", 2)
    + _stage(320, "0" + "10" * 17 + "0", 2)
    + _stage(640, "010", 2)
)


def make_divisible(v: float, divisor: int = 8, round_limit: float = 0.9) -> int:
    """Nearest multiple of ``divisor`` (halves up), at least ``divisor``; bumped up one step if that
    lost more than ``1 - round_limit`` of ``v`` (timm's / MobileNet's channel rounding)."""
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    if new_v < round_limit * v:
        new_v += divisor
    return new_v


class SqueezeExcite(nn.Module):
    """x * sigmoid(fc2(relu(fc1(mean_hw(x))))), reduced width ``make_divisible(C * rd_ratio, 8)``
    without the round-up guard (timm ``SEModule``: 48 -> 16, 80 -> 24, 192 -> 48, 640 -> 160)."""

    def __init__(self, channels: int, rd_ratio: float = 0.25, rd_divisor: int = 8) -> None:
        super().__init__()
        rd_channels = make_divisible(channels * rd_ratio, rd_divisor, round_limit=0.0)
        self.fc1 = nn.Conv2d(channels, rd_channels, 1, bias=True)
        self.fc2 = nn.Conv2d(rd_channels, channels, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)
        s = self.fc2(F.relu(self.fc1(s)))
        return x * torch.sigmoid(s)


class RepVGGDW(nn.Module):
    """Depthwise 3x3 + depthwise 1x1 + identity (re-parameterisable into one DW 3x3 conv).

    ``post_bn=False`` (EdgeSAM): ``conv(x) + conv1(x) + x``, ``conv1`` a DW 1x1 Conv+BN.
    ``post_bn=True`` (RepViT-SAM): ``bn(conv(x) + conv1(x) + x)``, ``conv1`` a DW 1x1 conv with bias.
    """

    def __init__(self, channels: int, post_bn: bool = False) -> None:
        super().__init__()
        self.conv = Conv2d_BN(channels, channels, 3, groups=channels)
        if post_bn:
            self.conv1 = nn.Conv2d(channels, channels, 1, groups=channels, bias=True)
            self.bn = nn.BatchNorm2d(channels)
        else:
            self.conv1 = Conv2d_BN(channels, channels, 1, groups=channels)
            self.bn = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x) + self.conv1(x) + x)


class Residual(nn.Module):
    """x + m(x) (key ``.m``)."""

    def __init__(self, m: nn.Module) -> None:
        super().__init__()
        self.m = m

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.m(x)


def _channel_mlp(channels: int, hidden: int) -> nn.Sequential:
    return nn.Sequential(
        Conv2d_BN(channels, hidden),
        nn.GELU(),
        Conv2d_BN(hidden, channels, bn_weight_init=0.0),
    )


class RepViTBlock(nn.Module):
    """Token mixer then channel mixer.

    ``downsample=True`` (a stride-2 row of the table) selects the downsampling token mixer (DW kxk
    Conv+BN with ``stride``, [SE], 1x1 Conv+BN); the others use :class:`RepVGGDW` then [SE].
    The channel mixer is residual except after a stride-1 mixer that changes the width (not in
    either table, kept for fidelity to the official RepViT-SAM code).
    """

    def __init__(
        self,
        in_chans: int,
        out_chans: int,
        kernel_size: int = 3,
        stride: int = 1,
        use_se: bool = False,
        downsample: bool = False,
        mlp_ratio: int = 2,
        post_bn_repvgg: bool = False,
    ) -> None:
        super().__init__()
        se: nn.Module = SqueezeExcite(in_chans, 0.25) if use_se else nn.Identity()
        if downsample:
            self.token_mixer = nn.Sequential(
                Conv2d_BN(in_chans, in_chans, kernel_size, stride, groups=in_chans),
                se,
                Conv2d_BN(in_chans, out_chans, 1),
            )
            self.channel_mixer: nn.Module = Residual(_channel_mlp(out_chans, mlp_ratio * out_chans))
        else:
            if kernel_size != 3 or stride != 1:
                raise ValueError("a non-downsampling RepViT block is a 3x3 stride-1 block")
            self.token_mixer = nn.Sequential(RepVGGDW(in_chans, post_bn_repvgg), se)
            hidden = make_divisible(in_chans * mlp_ratio, 8)
            mlp = nn.Sequential(
                Conv2d_BN(in_chans, hidden),
                nn.GELU(),
                Conv2d_BN(hidden, out_chans, bn_weight_init=0.0),
            )
            self.channel_mixer = Residual(mlp) if in_chans == out_chans else mlp

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.channel_mixer(self.token_mixer(x))


class UpSample(nn.Module):
    """F.interpolate by a fixed factor (the official ``UpSampleLayer``; no parameters)."""

    def __init__(self, factor: int = 2, mode: str = "bicubic") -> None:
        super().__init__()
        if mode not in ("bicubic", "bilinear", "nearest"):
            raise ValueError(f"unsupported upsample mode {mode!r}")
        self.factor = float(factor)
        self.mode = mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        align = False if self.mode != "nearest" else None
        return F.interpolate(x, scale_factor=self.factor, mode=self.mode, align_corners=align)


class ProjectUpsample(nn.Module):
    """1x1 conv then 2x upsampling (key ``op_list.0``, as the official ``OpSequential``)."""

    def __init__(self, in_chans: int, out_chans: int, mode: str) -> None:
        super().__init__()
        self.op_list = nn.ModuleList([nn.Conv2d(in_chans, out_chans, 1, bias=False), UpSample(2, mode)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for op in self.op_list:
            x = op(x)
        return x


class RepViT(nn.Module):
    """RepViT backbone + SAM neck -> [B, out_chans, img_size/16, img_size/16].

    Args:
        cfgs: the config table, one :class:`BlockCfg` per block.
        img_size: input side (the network is fully convolutional; kept for the SAM wrappers).
        mlp_ratio: channel-mixer expansion ``t`` (2 in every RepViT-SAM/EdgeSAM table).
        last_stage_stride: stride of the last stage's downsampling block (RepViT-SAM: 1).
        post_bn_repvgg: RepViT-SAM's RepVGGDW variant (BN after the sum, plain 1x1 branch).
        fuse_stages: EdgeSAM: neck input = fuse_stage2(stage 2) + upsampled fuse_stage3(stage 3).
        upsample_mode: interpolation for the stage-3 upsampling (EdgeSAM: bicubic).
        out_chans: neck width (SAM: 256).
    """

    def __init__(
        self,
        cfgs: Sequence[BlockCfg],
        img_size: int = 1024,
        mlp_ratio: int = 2,
        last_stage_stride: int = 2,
        post_bn_repvgg: bool = False,
        fuse_stages: bool = False,
        upsample_mode: str = "bicubic",
        out_chans: int = 256,
    ) -> None:
        super().__init__()
        cfgs = [BlockCfg(*row) for row in cfgs]
        self.img_size = img_size
        stem_chans = cfgs[0].channels
        layers: list[nn.Module] = [
            nn.Sequential(
                Conv2d_BN(3, stem_chans // 2, 3, 2),
                nn.GELU(),
                Conv2d_BN(stem_chans // 2, stem_chans, 3, 2),
            )
        ]
        last_down = max(i for i, row in enumerate(cfgs) if row.stride == 2)
        stage_ends: list[int] = []  # index into `features` of each stage's last block
        in_chans = stem_chans
        for i, row in enumerate(cfgs):
            out = make_divisible(row.channels, 8)
            if out != in_chans and i > 0:
                stage_ends.append(i)  # block i (features[i]) closed the previous stage
            stride = last_stage_stride if i == last_down else row.stride
            layers.append(
                RepViTBlock(
                    in_chans,
                    out,
                    row.kernel,
                    stride,
                    row.se,
                    downsample=row.stride == 2,
                    mlp_ratio=mlp_ratio,
                    post_bn_repvgg=post_bn_repvgg,
                )
            )
            in_chans = out
        stage_ends.append(len(cfgs))
        self.features = nn.ModuleList(layers)
        self.stage_ends: tuple[int, ...] = tuple(stage_ends)
        self.fuse_stages = fuse_stages

        if fuse_stages:
            if len(stage_ends) != 4:
                raise ValueError("stage fusion needs a 4-stage table")
            c2 = make_divisible(cfgs[stage_ends[2] - 1].channels, 8)
            self.fuse_stage2 = nn.Conv2d(c2, out_chans, 1, bias=False)
            self.fuse_stage3 = ProjectUpsample(in_chans, out_chans, upsample_mode)
            neck_in = out_chans
        else:
            neck_in = in_chans
        self.neck = nn.Sequential(
            nn.Conv2d(neck_in, out_chans, 1, bias=False),
            LayerNorm2d(out_chans),
            nn.Conv2d(out_chans, out_chans, 3, padding=1, bias=False),
            LayerNorm2d(out_chans),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.fuse_stages:
            for f in self.features:
                x = f(x)
            return self.neck(x)
        tap = self.stage_ends[2]
        for f in self.features[: tap + 1]:
            x = f(x)
        stage2 = x
        for f in self.features[tap + 1 :]:
            x = f(x)
        return self.neck(self.fuse_stage2(stage2) + self.fuse_stage3(x))


def edge_sam_encoder(img_size: int = 1024) -> RepViT:
    """EdgeSAM's image encoder: ``RepViT(arch="m1", fuse=True, upsample_mode="bicubic")``."""
    return RepViT(EDGE_SAM_M1, img_size, fuse_stages=True, upsample_mode="bicubic")


def repvit_sam_encoder(img_size: int = 1024) -> RepViT:
    """RepViT-SAM's image encoder: RepViT-M2.3, last stage at stride 1, BN-after-sum RepVGGDW."""
    return RepViT(REPVIT_SAM_M2_3, img_size, last_stage_stride=1, post_bn_repvgg=True)


def encoder_for(variant) -> RepViT:
    """The variant table's builder hook (``Variant.builder``): encoder_args ``arch`` = edge_sam | repvit_sam."""
    arch = variant.encoder_args["arch"]
    return edge_sam_encoder(variant.input_size) if arch == "edge_sam" else repvit_sam_encoder(variant.input_size)
