"""EfficientViT-SAM image encoder (our own implementation, official key names).

Architecture (Zhang et al., "EfficientViT-SAM", 2024; Cai et al., "EfficientViT", ICCV 2023). All
activations are GELU (tanh approximation), all norms BatchNorm2d except the final LayerNorm2d::

    image [B,3,S,S]                        S = 512 (L0/L1/L2) or 1024 (XL0/XL1)
      backbone.stages.0   3x3 s2 conv+BN+GELU, then `depths[0]` residual ResBlocks       -> S/2
      backbone.stages.i   (i >= 1) a stride-2 downsampling block without shortcut (MBConv if the
                          stage's block type is attention, expand ratio 4x the stage's), then
                          `depths[i]` residual blocks of the stage's type:
                            res  ResBlock      3x3 conv -> 3x3 conv
                            fmb  FusedMBConv   3x3 conv (expand) -> 1x1 conv
                            mb   MBConv        1x1 (expand) -> 3x3 depthwise -> 1x1
                            att  EfficientViTBlock: residual LiteMLA (ReLU linear attention over
                                 q/k/v and a 5x5 (att) or 3x3 (att@3) multi-scale aggregate of
                                 them) then a residual MBConv                               -> S/2^(i+1)
                          "fewer norm" stages drop the BN (and add conv biases) on all but the
                          last conv of a block.
      neck.input_ops      for 3 backbone stages: 1x1 conv+BN, bicubic resize to 64x64; summed
      neck.middle         `head_depth` residual FusedMBConv(256, expand `head_expand_ratio`)
      neck.output_ops     1x1 conv with bias
      norm                LayerNorm2d(256)                                             -> [B,256,64,64]

The state_dict matches the official ``image_encoder.*`` keys (prefix removed) and shapes exactly.
Every BatchNorm/LayerNorm uses ``norm_eps`` (1e-6: the official builder calls ``set_norm_eps(model,
1e-6)`` after construction, and eps is not stored in checkpoints).

Differences from the official code, all about inference and export (fp32 arithmetic is the same):
- The backbone returns the three stage maps the neck needs as a tuple, not a dict of every stage; the
  neck is a plain module, not a generic DAG block.
- Every reshape uses static sizes derived from ``input_size`` (batch as -1): no Shape ops in the
  exported graph. The neck's power-of-two resizes use ``scale_factor`` (the same coordinate mapping
  as the official ``size=``, exactly) so the exported Resize has constant scales. The
  linear-vs-quadratic attention choice (quadratic iff H*W <= qkv_dim) and the "skip the resize if
  already 64x64" test are made once at construction from the static resolution, never on tensor
  values. No in-place ops on activations. BatchNorms stay nn.BatchNorm2d modules (folded later).
- LiteMLA always computes in float32 and casts back (the official linear path upcasts only fp16, its
  quadratic path only the normalisation); identical in fp32, more robust in fp16/bf16.
- ``forward`` checks the input resolution (skipped while tracing) instead of silently folding a
  wrong-sized input into the batch dimension.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .common import LayerNorm2d

__all__ = [
    "EFFICIENTVIT_SAM_CONFIGS",
    "EfficientViTSamImageEncoder",
    "efficientvit_sam_encoder",
]

BLOCK_TYPES = ("res", "fmb", "mb", "att", "att@3")

# The paper's table / the official builders. `block_types[i]` is the stage's repeated block; the
# first block of every stage i >= 1 is a stride-2 downsampler (see module docstring).
EFFICIENTVIT_SAM_CONFIGS: dict[str, dict] = {
    "l0": dict(
        widths=(32, 64, 128, 256, 512),
        depths=(1, 1, 1, 4, 4),
        block_types=("res", "fmb", "fmb", "mb", "att"),
        expand_ratios=(1, 4, 4, 4, 6),
        fewer_norm=(False, False, False, True, True),
        qkv_dim=32,
        neck_in_stages=(4, 3, 2),
        head_depth=4,
        head_expand_ratio=1,
        input_size=512,
    ),
    "l1": dict(
        widths=(32, 64, 128, 256, 512),
        depths=(1, 1, 1, 6, 6),
        block_types=("res", "fmb", "fmb", "mb", "att"),
        expand_ratios=(1, 4, 4, 4, 6),
        fewer_norm=(False, False, False, True, True),
        qkv_dim=32,
        neck_in_stages=(4, 3, 2),
        head_depth=8,
        head_expand_ratio=1,
        input_size=512,
    ),
    "l2": dict(
        widths=(32, 64, 128, 256, 512),
        depths=(1, 2, 2, 8, 8),
        block_types=("res", "fmb", "fmb", "mb", "att"),
        expand_ratios=(1, 4, 4, 4, 6),
        fewer_norm=(False, False, False, True, True),
        qkv_dim=32,
        neck_in_stages=(4, 3, 2),
        head_depth=12,
        head_expand_ratio=1,
        input_size=512,
    ),
    "xl0": dict(
        widths=(32, 64, 128, 256, 512, 1024),
        depths=(0, 1, 1, 2, 3, 3),
        block_types=("res", "fmb", "fmb", "fmb", "att@3", "att@3"),
        expand_ratios=(1, 4, 4, 4, 4, 6),
        fewer_norm=(False, False, False, False, True, True),
        qkv_dim=32,
        neck_in_stages=(5, 4, 3),
        head_depth=6,
        head_expand_ratio=4,
        input_size=1024,
    ),
    "xl1": dict(
        widths=(32, 64, 128, 256, 512, 1024),
        depths=(1, 2, 2, 4, 6, 6),
        block_types=("res", "fmb", "fmb", "fmb", "att@3", "att@3"),
        expand_ratios=(1, 4, 4, 4, 4, 6),
        fewer_norm=(False, False, False, False, True, True),
        qkv_dim=32,
        neck_in_stages=(5, 4, 3),
        head_depth=12,
        head_expand_ratio=4,
        input_size=1024,
    ),
}


def efficientvit_sam_encoder(name: str, **overrides) -> "EfficientViTSamImageEncoder":
    """The encoder of EfficientViT-SAM-``name`` (l0, l1, l2, xl0, xl1), with optional overrides."""
    key = name.lower().replace("-", "").replace("_", "")
    if key not in EFFICIENTVIT_SAM_CONFIGS:
        raise ValueError(f"unknown EfficientViT-SAM variant {name!r}; known: {sorted(EFFICIENTVIT_SAM_CONFIGS)}")
    return EfficientViTSamImageEncoder(**{**EFFICIENTVIT_SAM_CONFIGS[key], **overrides})


def _gelu() -> nn.Module:
    return nn.GELU(approximate="tanh")


def _down(size: int, stride: int) -> int:
    """Output size of a 'same'-padded odd-kernel conv."""
    return (size - 1) // stride + 1


# --------------------------------------------------------------------------------------------------
# Building blocks (attribute names are the official ones: they define the state_dict keys)
# --------------------------------------------------------------------------------------------------


class ConvLayer(nn.Module):
    """Conv2d ('same' padding) -> optional BatchNorm2d -> optional activation. Keys `conv`, `norm`."""

    def __init__(
        self,
        cin: int,
        cout: int,
        kernel_size: int,
        *,
        eps: float,
        stride: int = 1,
        groups: int = 1,
        bias: bool = False,
        norm: bool = True,
        act: bool = False,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel_size, stride, kernel_size // 2, groups=groups, bias=bias)
        self.norm = nn.BatchNorm2d(cout, eps=eps) if norm else None
        self.act = _gelu() if act else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if self.norm is not None:
            x = self.norm(x)
        if self.act is not None:
            x = self.act(x)
        return x


class OpSequential(nn.Module):
    """A chain of ops stored as `op_list` (official container name)."""

    def __init__(self, ops: Sequence[nn.Module]) -> None:
        super().__init__()
        self.op_list = nn.ModuleList(ops)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for op in self.op_list:
            x = op(x)
        return x


class ResidualBlock(nn.Module):
    """`main(x) + x`, or just `main(x)` for the downsampling blocks (official key `main`)."""

    def __init__(self, main: nn.Module, residual: bool) -> None:
        super().__init__()
        self.main = main
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.main(x)
        return y + x if self.residual else y


class ResBlock(nn.Module):
    """3x3 conv (+act) -> 3x3 conv."""

    def __init__(self, cin: int, cout: int, stride: int, expand: float, fewer_norm: bool, eps: float) -> None:
        super().__init__()
        mid = round(cin * expand)
        self.conv1 = ConvLayer(cin, mid, 3, eps=eps, stride=stride, bias=fewer_norm, norm=not fewer_norm, act=True)
        self.conv2 = ConvLayer(mid, cout, 3, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.conv1(x))


class FusedMBConv(nn.Module):
    """3x3 conv to the expanded width (+act) -> 1x1 projection."""

    def __init__(self, cin: int, cout: int, stride: int, expand: float, fewer_norm: bool, eps: float) -> None:
        super().__init__()
        mid = round(cin * expand)
        self.spatial_conv = ConvLayer(
            cin, mid, 3, eps=eps, stride=stride, bias=fewer_norm, norm=not fewer_norm, act=True
        )
        self.point_conv = ConvLayer(mid, cout, 1, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.point_conv(self.spatial_conv(x))


class MBConv(nn.Module):
    """1x1 expansion (+act) -> 3x3 depthwise (+act) -> 1x1 projection."""

    def __init__(self, cin: int, cout: int, stride: int, expand: float, fewer_norm: bool, eps: float) -> None:
        super().__init__()
        mid = round(cin * expand)
        self.inverted_conv = ConvLayer(cin, mid, 1, eps=eps, bias=fewer_norm, norm=not fewer_norm, act=True)
        self.depth_conv = ConvLayer(
            mid, mid, 3, eps=eps, stride=stride, groups=mid, bias=fewer_norm, norm=not fewer_norm, act=True
        )
        self.point_conv = ConvLayer(mid, cout, 1, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.point_conv(self.depth_conv(self.inverted_conv(x)))


_LOCAL_BLOCKS: dict[str, type[nn.Module]] = {"res": ResBlock, "fmb": FusedMBConv, "mb": MBConv}


class LiteMLA(nn.Module):
    """Multi-scale ReLU linear attention on an NCHW map of static size `resolution` x `resolution`.

    q, k, v (``dim`` channels per head) come from a 1x1 conv; each aggregation branch (depthwise
    `scale` x `scale` conv, then a grouped 1x1 conv with one group per head and q/k/v) makes another
    set of heads. Per head, with phi = ReLU and n running over the H*W positions::

        out[:, m] = sum_n v[:, n] (phi(k[:, n]) . phi(q[:, m])) / (sum_n phi(k[:, n]) . phi(q[:, m]) + eps)

    computed linearly as ((v;1) @ phi(k)^T) @ phi(q) when H*W > dim, else quadratically (the
    official rule; the choice is static here). Always in float32.
    """

    def __init__(
        self, channels: int, dim: int, scales: Sequence[int], resolution: int, eps: float, attn_eps: float = 1e-15
    ) -> None:
        super().__init__()
        heads = channels // dim
        total = heads * dim
        self.dim = dim
        self.attn_eps = attn_eps
        self.num_heads = heads * (1 + len(scales))  # heads over all branches
        self.resolution = resolution
        self.num_tokens = resolution * resolution
        self.quadratic = self.num_tokens <= dim
        self.qkv = ConvLayer(channels, 3 * total, 1, eps=eps, norm=False)
        self.aggreg = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(3 * total, 3 * total, s, padding=s // 2, groups=3 * total, bias=False),
                nn.Conv2d(3 * total, 3 * total, 1, groups=3 * heads, bias=False),
            )
            for s in scales
        )
        self.proj = ConvLayer(total * (1 + len(scales)), channels, 1, eps=eps)

    def _attend(self, qkv: torch.Tensor) -> torch.Tensor:
        d = self.dim
        qkv = qkv.reshape(-1, self.num_heads, 3 * d, self.num_tokens)
        q = F.relu(qkv[:, :, :d])  # [B, heads, d, N]
        k = F.relu(qkv[:, :, d : 2 * d])
        v = qkv[:, :, 2 * d :]
        if self.quadratic:
            weights = torch.matmul(k.transpose(-1, -2), q)  # [B, heads, N(key), N(query)]
            weights = weights / (weights.sum(dim=2, keepdim=True) + self.attn_eps)
            return torch.matmul(v, weights)
        # A row of ones under v turns the last output row into the normaliser sum_n phi(k_n) . phi(q).
        v_one = F.pad(v, (0, 0, 0, 1), mode="constant", value=1.0)  # [B, heads, d+1, N]
        kv = torch.matmul(v_one, k.transpose(-1, -2))  # [B, heads, d+1, d]
        num_den = torch.matmul(kv, q)  # [B, heads, d+1, N]
        return num_den[:, :, :d] / (num_den[:, :, d:] + self.attn_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        qkv = self.qkv(x)
        qkv = torch.cat([qkv] + [branch(qkv) for branch in self.aggreg], dim=1)
        dtype = qkv.dtype
        if dtype != torch.float32:
            qkv = qkv.float()
        out = self._attend(qkv)
        out = out.reshape(-1, self.num_heads * self.dim, self.resolution, self.resolution)
        if dtype != torch.float32:
            out = out.to(dtype)
        return self.proj(out)


class EfficientViTBlock(nn.Module):
    """Residual LiteMLA (global context) followed by a residual MBConv (local), no BN but the last."""

    def __init__(
        self, channels: int, dim: int, expand: float, scales: Sequence[int], resolution: int, eps: float
    ) -> None:
        super().__init__()
        self.context_module = ResidualBlock(LiteMLA(channels, dim, scales, resolution, eps), residual=True)
        self.local_module = ResidualBlock(MBConv(channels, channels, 1, expand, True, eps), residual=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.local_module(self.context_module(x))


class EfficientViTLargeBackbone(nn.Module):
    """The stages of EfficientViT-L/XL; returns the maps of `out_stages`, in that order."""

    def __init__(
        self,
        widths: Sequence[int],
        depths: Sequence[int],
        block_types: Sequence[str],
        expand_ratios: Sequence[float],
        fewer_norm: Sequence[bool],
        qkv_dim: int,
        input_size: int,
        out_stages: Sequence[int],
        eps: float,
    ) -> None:
        super().__init__()
        self.out_stages = tuple(out_stages)
        res = _down(input_size, 2)
        stage0: list[nn.Module] = [ConvLayer(3, widths[0], 3, eps=eps, stride=2, act=True)]
        for _ in range(depths[0]):
            block = _LOCAL_BLOCKS[block_types[0]](widths[0], widths[0], 1, expand_ratios[0], fewer_norm[0], eps)
            stage0.append(ResidualBlock(block, residual=True))
        stages = [OpSequential(stage0)]
        self.resolutions = [res]

        cin = widths[0]
        for i in range(1, len(widths)):
            kind, width, expand = block_types[i], widths[i], expand_ratios[i]
            attention = kind.startswith("att")
            down_cls = _LOCAL_BLOCKS["mb" if attention else kind]
            ops: list[nn.Module] = [
                ResidualBlock(down_cls(cin, width, 2, expand * 4, fewer_norm[i], eps), residual=False)
            ]
            res = _down(res, 2)
            for _ in range(depths[i]):
                if attention:
                    scales = (3,) if kind == "att@3" else (5,)
                    ops.append(EfficientViTBlock(width, qkv_dim, expand, scales, res, eps))
                else:
                    block = _LOCAL_BLOCKS[kind](width, width, 1, expand, fewer_norm[i], eps)
                    ops.append(ResidualBlock(block, residual=True))
            stages.append(OpSequential(ops))
            self.resolutions.append(res)
            cin = width
        self.stages = nn.ModuleList(stages)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        return tuple(feats[i] for i in self.out_stages)


class Resize(nn.Module):
    """Bicubic (align_corners=False) resize to a static size; the identity if already that size."""

    def __init__(self, in_size: int, out_size: int) -> None:
        super().__init__()
        self.out_size = out_size
        self.skip = in_size == out_size
        # An integer up-/down-sampling ratio is passed as scale_factor: PyTorch then maps coordinates
        # with exactly the same (power-of-two) ratio as for size=, and the exporter emits a Resize with
        # constant scales instead of a Shape -> Slice -> Concat sizes subgraph.
        ratio = out_size / in_size
        self.scale = ratio if _is_pow2(ratio) else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.skip:
            return x
        if self.scale is not None:
            return F.interpolate(x, scale_factor=self.scale, mode="bicubic", align_corners=False)
        return F.interpolate(x, size=(self.out_size, self.out_size), mode="bicubic", align_corners=False)


def _is_pow2(r: float) -> bool:
    """True for 2**k, k integer (exact in binary floating point, so 1/r is exact too)."""
    return math.frexp(r)[0] == 0.5


class SamNeck(nn.Module):
    """Fuse three backbone maps at 64x64, refine with residual FusedMBConvs, project to 256."""

    def __init__(
        self,
        in_channels: Sequence[int],
        in_resolutions: Sequence[int],
        width: int,
        depth: int,
        expand: float,
        out_dim: int,
        out_size: int,
        eps: float,
    ) -> None:
        super().__init__()
        self.input_ops = nn.ModuleList(
            OpSequential([ConvLayer(c, width, 1, eps=eps), Resize(r, out_size)])
            for c, r in zip(in_channels, in_resolutions)
        )
        self.middle = OpSequential(
            [ResidualBlock(FusedMBConv(width, width, 1, expand, False, eps), residual=True) for _ in range(depth)]
        )
        self.output_ops = nn.ModuleList([OpSequential([ConvLayer(width, out_dim, 1, eps=eps, bias=True, norm=False)])])

    def forward(self, feats: Sequence[torch.Tensor]) -> torch.Tensor:
        maps = [op(f) for op, f in zip(self.input_ops, feats)]
        fused = maps[-1]
        for m in reversed(maps[:-1]):  # x0 + (x1 + (x2 + ...)): the official summation order
            fused = m + fused
        return self.output_ops[0](self.middle(fused))


class EfficientViTSamImageEncoder(nn.Module):
    """EfficientViT-SAM image encoder: [B,3,S,S] normalised, zero-padded image -> [B,256,64,64].

    Arguments follow the paper's table (one entry per backbone stage for the sequences):
        widths, depths, block_types ("res" | "fmb" | "mb" | "att" | "att@3"), expand_ratios,
        fewer_norm: per stage; qkv_dim: channels per attention head;
        neck_in_stages: backbone stages fed to the neck (deepest first, the official order);
        neck_in_channels: their widths (derived from `widths` if omitted; checked if given);
        neck_width, head_depth, head_expand_ratio: the neck's residual FusedMBConv stack;
        out_dim, embed_size: output channels and spatial size; input_size: S; norm_eps: every norm.
    """

    def __init__(
        self,
        widths: Sequence[int] = (32, 64, 128, 256, 512),
        depths: Sequence[int] = (1, 1, 1, 4, 4),
        block_types: Sequence[str] = ("res", "fmb", "fmb", "mb", "att"),
        expand_ratios: Sequence[float] = (1, 4, 4, 4, 6),
        fewer_norm: Sequence[bool] = (False, False, False, True, True),
        qkv_dim: int = 32,
        neck_in_stages: Sequence[int] = (4, 3, 2),
        neck_in_channels: Sequence[int] | None = None,
        neck_width: int = 256,
        head_depth: int = 4,
        head_expand_ratio: float = 1,
        out_dim: int = 256,
        embed_size: int = 64,
        input_size: int = 512,
        norm_eps: float = 1e-6,
    ) -> None:
        super().__init__()
        n = len(widths)
        if not (len(depths) == len(block_types) == len(expand_ratios) == len(fewer_norm) == n) or n < 2:
            raise ValueError("widths, depths, block_types, expand_ratios and fewer_norm need one entry per stage")
        bad = [b for b in block_types if b not in BLOCK_TYPES]
        if bad or block_types[0].startswith("att"):
            raise ValueError(f"block types must be in {BLOCK_TYPES} (stage 0 not attention), got {list(block_types)}")
        if not all(0 <= s < n for s in neck_in_stages):
            raise ValueError(f"neck_in_stages {list(neck_in_stages)} out of range for {n} stages")
        derived = [widths[s] for s in neck_in_stages]
        if neck_in_channels is not None and list(neck_in_channels) != derived:
            raise ValueError(f"neck_in_channels {list(neck_in_channels)} != widths of stages {derived}")
        self.input_size = input_size
        self.norm_eps = norm_eps

        self.backbone = EfficientViTLargeBackbone(
            widths, depths, block_types, expand_ratios, fewer_norm, qkv_dim, input_size, neck_in_stages, norm_eps
        )
        self.neck = SamNeck(
            derived,
            [self.backbone.resolutions[s] for s in neck_in_stages],
            neck_width,
            head_depth,
            head_expand_ratio,
            out_dim,
            embed_size,
            norm_eps,
        )
        self.norm = LayerNorm2d(out_dim, eps=norm_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.jit.is_tracing() and tuple(x.shape[-3:]) != (3, self.input_size, self.input_size):
            raise ValueError(f"expected input [B,3,{self.input_size},{self.input_size}], got {list(x.shape)}")
        return self.norm(self.neck(self.backbone(x)))


def encoder_for(variant) -> "EfficientViTSamImageEncoder":
    """The variant table's builder hook (``Variant.builder``): encoder_args ``name`` at the variant's input size."""
    return efficientvit_sam_encoder(variant.encoder_args["name"], input_size=variant.input_size)
