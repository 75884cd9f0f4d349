"""Fixtures for the calibration tests.

    mini_sam()            a small SAM (TinyViT at 256 px: 16x16 embedding, SAM's mask decoder) with
                          seeded random weights and the realistic (+-20 logit) decoder scale; cheap
                          enough for forward+backward in CI. Not a registry variant: tests drive the
                          calibration modules directly.
    mini_calibration      session-scoped: mini SAM + exported encoder/decoder ONNX + statistics with
                          task-loss gradients on two photographs (2 prompts each) + Hessian scales
                          (12 candidates x 2 rounds: CI only; the CLI uses 100 x 3).
    tiny_net / tiny_net_onnx   a few layers of every kind (Conv+BN, depthwise, Linear, ConvTranspose).

Helpers: ``export_onnx(module, args, ...)``, ``torch_fake_quant_forward(...)`` (the PyTorch
simulation of given scales), ``rel_err``.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import pytest

MINI_SIZE = 256


def mini_sam(seed: int = 0):
    import torch

    from samdeploy.models.init import make_realistic_, randomize_
    from samdeploy.models.mask_decoder import MaskDecoder
    from samdeploy.models.prompt_encoder import PromptEncoder
    from samdeploy.models.sam import Sam
    from samdeploy.models.tiny_vit import TinyViT
    from samdeploy.models.transformer import TwoWayTransformer

    torch.manual_seed(seed)
    enc = TinyViT(img_size=MINI_SIZE, num_classes=10, embed_dims=(16, 32, 48, 64), depths=(1, 1, 2, 1),
                  num_heads=(1, 2, 3, 4), window_sizes=(7, 7, 14, 7))
    grid = MINI_SIZE // 16
    pe = PromptEncoder(embed_dim=256, image_embedding_size=(grid, grid), input_image_size=(MINI_SIZE, MINI_SIZE), mask_in_chans=16)
    dec = MaskDecoder(transformer_dim=256, transformer=TwoWayTransformer(depth=2, embedding_dim=256, num_heads=8, mlp_dim=256),
                      num_multimask_outputs=3, iou_head_depth=3, iou_head_hidden_dim=64)
    sam = Sam(enc, pe, dec, variant="mobile_sam", weights_sha256="random:mini")
    randomize_(sam, seed)
    make_realistic_(sam)
    return sam.eval()


def export_onnx(module, args: tuple, input_names: list[str], output_names: list[str], dynamic_axes=None):
    """TorchScript export to an in-memory ModelProto (opset 17, constant folding, like `samdeploy export`)."""
    import onnx
    import torch

    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, args, buf, dynamo=False, opset_version=17, do_constant_folding=True,
                          input_names=input_names, output_names=output_names, dynamic_axes=dynamic_axes)
    model = onnx.load_from_string(buf.getvalue())
    return onnx.shape_inference.infer_shapes(model)


def rel_err(ref: np.ndarray, out: np.ndarray) -> float:
    ref, out = np.asarray(ref, np.float64), np.asarray(out, np.float64)
    return float(np.linalg.norm(out - ref) / max(np.linalg.norm(ref), 1e-30))


def minmax_qdq(net, x, fp_onnx):
    """``fp_onnx`` with min-max scales for every Conv/ConvTranspose/Linear of ``net`` (input ``x``):
    the TensorRT placement, written by the QDQ writer."""
    from samdeploy.calibration import collect as C
    from samdeploy.calibration import layers as L
    from samdeploy.calibration import qdq
    from samdeploy.calibration.baselines import baseline_scales

    model = L.prepare_model(net)
    layers = L.find_layers_generic(model)
    collector = C.StatsCollector(layers, tokens=64, seed=0, need_grad=False)
    stats = collector.run(lambda: model(x), 0)
    layers = sorted(layers, key=lambda l: collector.order.index(l.name))
    match = qdq.match_layers(fp_onnx, layers)
    assert len(match) == len(layers)
    return qdq.quantize_model(fp_onnx, {n: baseline_scales(l, stats[l.name], "minmax") for l in layers
                                        for n in match[l.name]})


def ort_run(model, feeds: dict[str, np.ndarray], threads: int = 1) -> list[np.ndarray]:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"]).run(None, feeds)


def ort_optimized_ops(model) -> list[str]:
    """Op types of ONNX Runtime's optimized graph (default session options, CPU)."""
    import os
    import tempfile

    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as d:
        so = ort.SessionOptions()
        so.log_severity_level = 3
        so.optimized_model_filepath = os.path.join(d, "opt.onnx")
        ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
        return [n.op_type for n in onnx.load(so.optimized_model_filepath).graph.node]


def torch_fake_quant_forward(fn: Callable[[], Any], layers, scales: dict[str, Any]):
    """Run ``fn`` with every layer in ``scales`` fake-quantized in PyTorch: the input per tensor
    ([-128,127]) and the weight per output channel ([-127,127]) with exactly the given scales."""
    import torch

    from samdeploy.calibration import quant

    handles, saved = [], {}
    try:
        for l in layers:
            if l.name not in scales:
                continue
            sc = scales[l.name]
            a = torch.tensor(np.float32(sc.act))

            def pre(mod, inp, a=a):
                return (quant.fake_quant_act(inp[0], a),) + tuple(inp[1:])

            handles.append(l.module.register_forward_pre_hook(pre))
            saved[l.name] = l.module.weight.data.clone()
            s = torch.from_numpy(np.asarray(sc.weight, np.float32)).reshape(l.weight_channel_shape())
            l.module.weight.data = quant.fake_quant_weight(l.module.weight.data, s)
        with torch.no_grad():
            return fn()
    finally:
        for h in handles:
            h.remove()
        for l in layers:
            if l.name in saved:
                l.module.weight.data = saved[l.name]


def per_layer_agreement(qmodel, node_map: dict[str, list[str]], layers, scales: dict[str, Any],
                        feeds: dict[str, np.ndarray]) -> dict[str, float]:
    """Relative error, per quantized ONNX node, between ONNX Runtime's output of the node and the
    PyTorch fake-quant computation of the same layer with the same scales on the *same* FP input
    (ORT's). Comparing per layer isolates "ORT executes these scales" from the compounding of
    rounding flips through a deep chain of quantizers."""
    import onnx
    import torch
    import torch.nn.functional as F

    from samdeploy.calibration import quant

    m = onnx.ModelProto()
    m.CopyFrom(qmodel)
    nodes = {n.name: n for n in m.graph.node}
    producer = {o: n for n in m.graph.node for o in n.output}
    wanted = {}
    for l in layers:
        for name in node_map.get(l.name, []):
            node = nodes[name]
            q_in = producer[producer[node.input[0]].input[0]]  # DQ <- Q <- FP input
            wanted[name] = (l, q_in.input[0], node.output[0])
    existing = {o.name for o in m.graph.output}
    for _, x_name, y_name in wanted.values():
        for t in (x_name, y_name):
            if t not in existing:
                m.graph.output.append(onnx.helper.make_empty_tensor_value_info(t))
                m.graph.output[-1].type.tensor_type.elem_type = onnx.TensorProto.FLOAT
                existing.add(t)
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    outs = dict(zip(names, sess.run(None, feeds)))
    errs = {}
    with torch.no_grad():
        for name, (l, x_name, y_name) in wanted.items():
            sc = scales[l.name]
            x = quant.fake_quant_act(torch.from_numpy(outs[x_name]), torch.tensor(np.float32(sc.act)))
            s = torch.from_numpy(np.asarray(sc.weight, np.float32)).reshape(l.weight_channel_shape())
            w = quant.fake_quant_weight(l.weight.detach().float(), s)
            mod = l.module
            if l.kind == "linear":
                y = x @ w.t()  # ONNX MatMul output (the bias is a separate Add)
            elif l.kind == "conv":
                y = F.conv2d(x, w, mod.bias, mod.stride, mod.padding, mod.dilation, mod.groups)
            else:
                y = F.conv_transpose2d(x, w, mod.bias, mod.stride, mod.padding, mod.output_padding, mod.groups, mod.dilation)
            errs[name] = rel_err(y.numpy(), outs[y_name])
    return errs


# ---- a tiny network with every layer kind ------------------------------------------------------------
def _tiny_net():
    import torch
    from torch import nn

    class ConvBN(nn.Sequential):
        def __init__(self, a: int, b: int, k: int, stride: int = 1, groups: int = 1):
            super().__init__()
            self.c = nn.Conv2d(a, b, k, stride, k // 2, groups=groups, bias=False)
            self.bn = nn.BatchNorm2d(b)

    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = ConvBN(3, 16, 3, 2)
            self.dw = ConvBN(16, 16, 3, 1, groups=16)
            self.norm = nn.LayerNorm(16)
            self.fc1 = nn.Linear(16, 64)
            self.fc2 = nn.Linear(64, 16)
            self.up = nn.ConvTranspose2d(16, 8, 2, 2)
            self.head = nn.Conv2d(8, 4, 1)

        def forward(self, x):
            x = nn.functional.gelu(self.stem(x))
            x = x + self.dw(x)
            t = x.permute(0, 2, 3, 1)
            t = t + self.fc2(nn.functional.gelu(self.fc1(self.norm(t))))
            x = t.permute(0, 3, 1, 2)
            return self.head(nn.functional.gelu(self.up(x)))

    torch.manual_seed(0)
    m = Tiny().eval()
    g = torch.Generator().manual_seed(1)
    for mod in m.modules():
        if isinstance(mod, nn.BatchNorm2d):
            mod.running_mean.copy_(torch.randn(mod.num_features, generator=g) * 0.1)
            mod.running_var.copy_(torch.rand(mod.num_features, generator=g) + 0.5)
            mod.weight.data.copy_(torch.rand(mod.num_features, generator=g) + 0.5)
            mod.bias.data.copy_(torch.randn(mod.num_features, generator=g) * 0.1)
    return m


@pytest.fixture(scope="session")
def tiny_net():
    return _tiny_net()


@pytest.fixture(scope="session")
def tiny_input():
    import torch

    return torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))


@pytest.fixture(scope="session")
def tiny_net_onnx(tiny_net, tiny_input):
    return export_onnx(tiny_net, (tiny_input,), ["x"], ["y"])


# ---- the mini SAM, end to end -----------------------------------------------------------------------
@dataclass
class MiniCalibration:
    sam: Any  # original
    model: Any  # prepared (BN folded, frozen)
    layers: list  # encoder QuantLayers that ran, call order
    images: dict[str, np.ndarray]  # name -> encoder input [1,3,256,256] (0..255, mean-padded)
    image_stats: list  # collect.ImageStats per image
    stats: dict[str, Any]  # merged LayerStats per layer
    scales: dict[str, Any]  # Hessian LayerScales per layer
    encoder_onnx: Any
    decoder_onnx: Any  # Sam.decode_reference exported (the product exports the factored decoder)
    extra: dict[str, Any] = field(default_factory=dict)


def mini_inputs(photos: dict[str, np.ndarray], names=("astronaut", "coffee")) -> dict[str, tuple[np.ndarray, tuple[int, int]]]:
    from samdeploy.contract import Preprocess
    from samdeploy.runtime.transforms import preprocess_image

    pre = Preprocess(input_size=MINI_SIZE)
    return {n: preprocess_image(photos[n], pre) for n in names}


class _ReferenceDecoder:
    """Sam.decode_reference as an nn.Module: the plain mask decoder (ConvTranspose upscaling)."""

    def __new__(cls, sam):
        from torch import nn

        class Dec(nn.Module):
            def __init__(self, sam):
                super().__init__()
                self.sam = sam

            def forward(self, *args):
                return self.sam.decode_reference(*args)

        return Dec(sam)


@pytest.fixture(scope="session")
def mini_calibration(photos) -> MiniCalibration:
    import torch

    from samdeploy.calibration import collect as C
    from samdeploy.calibration import layers as L
    from samdeploy.calibration import losses
    from samdeploy.calibration import prompts as P
    from samdeploy.calibration.search import hessian_search
    from samdeploy.export.wrappers import EncoderGraph, decoder_example

    torch.set_num_threads(2)
    sam = mini_sam()
    model = L.prepare_model(sam)
    layers = L.find_layers(model, ("encoder",))
    collector = C.StatsCollector(layers, tokens=64, seed=0)
    inputs = mini_inputs(photos)
    per_image = []
    for i, (name, (x, hw)) in enumerate(inputs.items()):
        batches = P.sample_prompts(np.random.default_rng(i), hw, 2)
        valid = P.low_res_valid(hw, MINI_SIZE, 4 * (MINI_SIZE // 16))
        per_image.append(C.collect_image(model, collector, x, batches, valid, (0, 1, 2, 3), losses.fisher_loss, i))
    order = per_image[0].order
    by_name = {l.name: l for l in layers}
    ran = [by_name[n] for n in order]
    for i, l in enumerate(ran):
        l.order = i
    stats = {n: C.merge_stats([im.layers[n] for im in per_image]) for n in order}
    scales = {l.name: hessian_search(l, stats[l.name], n_candidates=12, rounds=2) for l in ran}
    x0 = next(iter(inputs.values()))[0]
    from samdeploy import contract as C_

    enc = export_onnx(EncoderGraph(sam), (torch.from_numpy(x0),), [C_.ENCODER_INPUT], [C_.ENCODER_OUTPUT])
    import dataclasses

    g = MINI_SIZE // 16
    mini_contract = dataclasses.replace(
        C_.ModelContract("sam", "mini", "random:mini"),
        encoder=C_.Encoder(outputs=(C_.TensorSpec(C_.ENCODER_OUTPUT, (256, g, g)),)),
        decoder=C_.Decoder(embedding_shape=(256, g, g), low_res_size=4 * g),
    )
    dec = export_onnx(_ReferenceDecoder(sam), decoder_example(mini_contract),
                      list(C_.DECODER_INPUTS), list(C_.DECODER_OUTPUTS),
                      {C_.DECODER_POINT_COORDS: {0: "b", 1: "n"}, C_.DECODER_POINT_LABELS: {0: "b", 1: "n"},
                       C_.DECODER_MASK_INPUT: {0: "b"}, C_.DECODER_HAS_MASK_INPUT: {0: "b"}})
    return MiniCalibration(sam, model, ran, {n: v[0] for n, v in inputs.items()}, per_image, stats, scales, enc, dec,
                           extra={"hw": {n: v[1] for n, v in inputs.items()}})
