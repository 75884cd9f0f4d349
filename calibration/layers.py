"""Which PyTorch modules get quantized, and their weights in the form the exported ONNX holds.

``prepare_model`` deep-copies a model, folds every BatchNorm into the convolution before it (the
exporter's constant folding does the same, so the weights we search scales for are the ones the ONNX
file contains -- TinyViT's ``Conv2d_BN``), freezes the parameters and switches to eval mode.

``find_layers`` lists the weighted layers of a graph: ``nn.Linear``, ``nn.Conv2d`` and the
non-overlapping ``nn.ConvTranspose2d`` (kernel == stride, SAM's ``output_upscaling``). Each becomes a
:class:`QuantLayer` with its weights rewritten as a grouped matrix product, the one form the scale
search needs::

    out[t, g*Ng + n] = sum_k X[t, g, k] * W[g, n, k] + bias[g*Ng + n]

* Linear: G = 1, X = the input row, W = weight.
* Conv2d: G = groups, X = the input patch under output pixel t, W = weight.flatten(1).
* ConvTranspose2d with kernel == stride: every output pixel sees exactly one input pixel, so
  X = the input pixel and the kh*kw kernel taps become extra output columns; ``col_channel`` maps
  each column to its output channel (per-channel scales are per output channel, ONNX axis 1).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
from torch import nn

#: attribute prefixes of the Sam modules quantized in each exported graph (the prompt encoder stays
#: float: its mask-downscaling convs only see work with a mask input, ptq.md §6.3). SAM2 names its
#: decoder ``sam_mask_decoder``. The prefix is only the first guess: the calibration pipeline takes a
#: layer's graph from the call it runs in (``collect.StatsCollector.graph_of``) -- SAM2's
#: ``sam_mask_decoder.conv_s0/conv_s1`` belong to the decoder module but run in the encoder graph
#: (``Sam2Image.encode`` returns their outputs as high_res_feats_0/1).
GRAPH_PREFIXES = {
    "encoder": ("image_encoder.",),
    "decoder": ("mask_decoder.", "sam_mask_decoder."),
}


@dataclass
class QuantLayer:
    """One weighted layer in matrix form (see the module docstring)."""

    name: str  # module path in the prepared model, e.g. "image_encoder.layers.1.blocks.0.attn.qkv"
    graph: str  # "encoder" | "decoder"
    kind: str  # "linear" | "conv" | "conv_transpose"
    module: nn.Module = field(repr=False)
    weight: torch.Tensor = field(repr=False)  # the module's (BN-folded) weight, torch layout
    bias: torch.Tensor | None = field(repr=False)
    groups: int = 1
    order: int = 0  # position in call order (set by the collector); ties in ONNX matching use it

    # ---- matrix form ---------------------------------------------------------------------------
    @property
    def out_channels(self) -> int:
        """Number of per-channel weight scales."""
        w = self.weight
        return int(w.shape[1] * self.groups) if self.kind == "conv_transpose" else int(w.shape[0])

    @property
    def onnx_axis(self) -> int:
        """Per-channel axis of the weight as the ONNX node holds it (Conv 0, ConvTranspose 1)."""
        return 1 if self.kind == "conv_transpose" else 0

    def matrix(self) -> torch.Tensor:
        """W [G, Ng, Kg] (float32)."""
        w = self.weight.detach().float()
        if self.kind == "linear":
            return w.unsqueeze(0)
        if self.kind == "conv":
            g = self.groups
            return w.reshape(g, w.shape[0] // g, -1)
        # conv_transpose (groups 1, kernel == stride): W [Cin, Cout, kh, kw] -> [1, Cout*kh*kw, Cin]
        cin = w.shape[0]
        return w.reshape(cin, -1).t().unsqueeze(0).contiguous()

    def col_channel(self) -> torch.Tensor:
        """[G*Ng] output channel of every matrix column."""
        if self.kind == "conv_transpose":
            taps = self.weight.shape[2] * self.weight.shape[3]
            return torch.arange(self.out_channels).repeat_interleave(taps)
        return torch.arange(self.out_channels)

    def bias_cols(self) -> torch.Tensor:
        """[G*Ng] bias of every matrix column (zeros without bias)."""
        n = int(self.col_channel().numel())
        if self.bias is None:
            return torch.zeros(n)
        b = self.bias.detach().float()
        return b[self.col_channel()] if self.kind == "conv_transpose" else b

    def weight_absmax(self) -> torch.Tensor:
        """[C] max |w| per output channel."""
        w = self.weight.detach().float().abs()
        if self.kind == "conv_transpose":
            return w.transpose(0, 1).reshape(w.shape[1], -1).amax(1)
        return w.reshape(w.shape[0], -1).amax(1)

    @property
    def macs_per_activation(self) -> float:
        """Multiply-adds per activation element read or written: per output position a Conv reads
        Cin x stride^2 new inputs and writes Cout outputs for Cout x Cin/groups x kh x kw MACs.
        High values are compute-bound (INT8 pays off even with extra passes over the data)."""
        w = self.weight
        if self.kind == "linear":
            n_out, n_in = w.shape
            return n_out * n_in / (n_out + n_in)
        if self.kind == "conv_transpose":
            cin, cout_g = int(w.shape[0]), int(w.shape[1])
            taps = int(w.shape[2] * w.shape[3])
            return cin * cout_g * self.groups * taps / (cin + cout_g * self.groups * taps)
        cout = int(w.shape[0])
        stride = getattr(self.module, "stride", (1, 1))
        cin = int(w.shape[1]) * self.groups
        return cout * int(w[0].numel()) / (cout + cin * int(stride[0]) * int(stride[1]))

    def weight_channel_shape(self) -> list[int]:
        """Shape that broadcasts a [C] scale vector against the torch weight."""
        shape = [1] * self.weight.ndim
        shape[self.onnx_axis] = -1
        return shape


# Modules that apply attribute ``conv`` then attribute ``norm`` (EfficientViT-SAM's ConvLayer).
_CONV_NORM_ATTRS = (("conv", "norm"),)


def fold_batchnorm_(model: nn.Module) -> int:
    """Fold every ``Conv2d`` whose output goes straight into a ``BatchNorm2d`` into one conv with
    bias, as the ONNX exporter does, so the PyTorch layers match the exported graph's weights:
    consecutive members of an ``nn.Sequential`` (TinyViT's/RepViT's ``Conv2d_BN``) and modules with a
    ``conv`` then ``norm`` attribute (EfficientViT's ``ConvLayer``). The BN becomes ``nn.Identity``.
    In place; returns the number of folds."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    def foldable(conv: object, bn: object) -> bool:
        return isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d) and bn.track_running_stats

    folded = 0
    for mod in list(model.modules()):
        if isinstance(mod, nn.Sequential):
            names = list(mod._modules)
            for a, b in zip(names, names[1:]):
                conv, bn = mod._modules[a], mod._modules[b]
                if foldable(conv, bn):
                    mod._modules[a] = fuse_conv_bn_eval(conv.eval(), bn.eval())
                    mod._modules[b] = nn.Identity()
                    folded += 1
            continue
        for conv_name, bn_name in _CONV_NORM_ATTRS:
            conv, bn = getattr(mod, conv_name, None), getattr(mod, bn_name, None)
            if foldable(conv, bn):
                setattr(mod, conv_name, fuse_conv_bn_eval(conv.eval(), bn.eval()))
                setattr(mod, bn_name, nn.Identity())
                folded += 1
    return folded


def prepare_model(model: nn.Module) -> nn.Module:
    """An eval-mode, BN-folded, frozen deep copy of ``model`` (the original is not touched)."""
    prepared = copy.deepcopy(model).eval()
    fold_batchnorm_(prepared)
    for p in prepared.parameters():
        p.requires_grad_(False)
    return prepared


def _kind(m: nn.Module) -> str | None:
    if isinstance(m, nn.Linear):
        return "linear"
    if isinstance(m, nn.Conv2d) and m.padding_mode == "zeros" and isinstance(m.padding, tuple):
        return "conv"
    if (
        isinstance(m, nn.ConvTranspose2d)
        and m.groups == 1
        and tuple(m.kernel_size) == tuple(m.stride)
        and tuple(m.padding) == (0, 0)
        and tuple(m.output_padding) == (0, 0)
        and tuple(m.dilation) == (1, 1)
    ):
        return "conv_transpose"
    return None


def find_layers(model: nn.Module, graphs: tuple[str, ...] = ("encoder",)) -> list[QuantLayer]:
    """The quantizable layers of ``graphs`` in a prepared ``Sam`` (module order; the collector
    keeps only the layers the forward pass actually calls)."""
    prefixes = tuple(p for g in graphs for p in GRAPH_PREFIXES[g])
    layers = []
    for name, m in model.named_modules():
        kind = _kind(m)
        if kind is None or not name.startswith(prefixes):
            continue
        graph = next(g for g in graphs if name.startswith(GRAPH_PREFIXES[g]))
        layers.append(
            QuantLayer(
                name=name,
                graph=graph,
                kind=kind,
                module=m,
                weight=m.weight,
                bias=m.bias,
                groups=int(getattr(m, "groups", 1)),
            )
        )
    return layers


def find_layers_generic(model: nn.Module, graph: str = "encoder", prefix: str = "") -> list[QuantLayer]:
    """Quantizable layers of any module (tests and small models): every Linear/Conv2d/ConvTranspose2d
    whose name starts with ``prefix``."""
    out = []
    for name, m in model.named_modules():
        kind = _kind(m)
        if kind is None or not name.startswith(prefix):
            continue
        out.append(QuantLayer(name=name, graph=graph, kind=kind, module=m, weight=m.weight, bias=m.bias,
                              groups=int(getattr(m, "groups", 1))))
    return out
