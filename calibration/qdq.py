"""Write searched scales into an FP32 ONNX graph as QuantizeLinear/DequantizeLinear (QDQ) nodes.

Placement follows TensorRT's explicit-quantization recommendations (ptq.md §3a) and what fuses in
ONNX Runtime on x86 (§3b):

* every quantized Conv / ConvTranspose / MatMul / Gemm gets a **dedicated** Q->DQ pair on its
  activation input (one consumer per Q: ORT's S8->U8 rewrite, which x86 needs to fuse, only fires
  for single-consumer Q nodes -- ``DedicatedQDQPair``) and an int8 weight initializer behind a
  per-channel DequantizeLinear (Conv axis 0, ConvTranspose axis 1, MatMul [in,out] axis 1, Gemm
  transB=1 axis 0 / transB=0 axis 1);
* weights are stored pre-quantized, clamped to [-127, 127] (narrow range, what TensorRT assumes);
* every zero point is an explicit int8 0 (TensorRT requires symmetric; ORT needs the explicit zp
  for the S8->U8 rewrite); scales are float32 initializers holding exactly the searched values;
* outputs of weighted ops, LayerNorm, Softmax, GELU and residual adds stay FP32, except that a layer
  may be given an *output* scale (``LayerScales.out``): ORT's CPU provider only runs Conv in INT8
  (QLinearConv) when the Conv output is quantized too.

The same rules cover multi-output encoders (SAM2's Hiera + FPN neck, HQ-SAM): Hiera's Linear layers
(qkv, attention proj, MLP, the stage-transition ``proj`` on the shortcut) are MatMuls on 4-D
channels-last windows with an [in, out] weight (axis 1); where one LayerNorm output feeds two Linear
layers (qkv and the shortcut ``proj`` of the first block of a stage) each gets its own Q/DQ pair. The
patch embedding, the FPN neck's 1x1 convs and SAM2's ``conv_s0``/``conv_s1`` are Convs (axis 0); a neck
conv whose only consumer is ``conv_s0``/``conv_s1`` therefore ends in that conv's input Q (a valid
Conv -> Q -> DQ -> Conv chain both runtimes fuse). Everything else stays float, as ptq.md §3 advises
for TensorRT (ModelOpt leaves MHA cores and LayerNorm unquantized) and as ORT's CPU provider has no
INT8 kernel for: LayerNormalization, Softmax, GELU (Erf), the attention MatMuls (activation x
activation, also the q-pooled ones), the q-pooling MaxPool (a data-movement op both runtimes
propagate Q/DQ across; its input is a float Linear output here), the residual Adds, the nearest-x2
top-down fusion and the constant positional-embedding product (a MatMul with a constant weight that
belongs to no layer, so it is never matched).

PyTorch modules are matched to ONNX nodes **by weight value** (node names change between exporters
and the TorchScript exporter renames transposed MatMul weights ``onnx::MatMul_NNN``): a node belongs
to a layer when its weight, brought to the PyTorch layout, equals the layer's (BN-folded) weight to
``MATCH_RTOL`` of its max |w|. Identical weights are paired in call order / graph order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ..onnx_graph import GraphIndex

from . import quant
from .errors import CalibrationError

WEIGHTED_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm")
MATCH_RTOL = 1e-4
_KIND_OPS = {"linear": ("MatMul", "Gemm"), "conv": ("Conv",), "conv_transpose": ("ConvTranspose",)}


@dataclass
class WeightedNode:
    """A weighted ONNX node whose weight is a constant."""

    index: int  # position in graph.node
    name: str
    op_type: str
    act_input: str
    weight_input: str
    weight: np.ndarray = field(repr=False)  # as the node consumes it
    axis: int  # per-channel axis in ``weight``

    def torch_layout(self) -> np.ndarray:
        """The weight as the PyTorch module holds it (Linear: [out, in])."""
        if self.op_type == "MatMul" or (self.op_type == "Gemm" and self.axis == 1):
            return self.weight.T
        return self.weight


def _attr(node: onnx.NodeProto, name: str, default):
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def weighted_nodes(model: onnx.ModelProto) -> list[WeightedNode]:
    """Conv/ConvTranspose/MatMul/Gemm nodes with a constant float weight, in graph order."""
    gr = GraphIndex(model.graph)
    out = []
    for idx, n in enumerate(model.graph.node):
        if n.op_type not in WEIGHTED_OPS or n.domain not in ("", "ai.onnx") or len(n.input) < 2:
            continue
        w = gr.const(n.input[1])
        if w is None or w.dtype != np.float32:
            continue
        if n.op_type == "MatMul":
            if w.ndim != 2:
                continue
            axis = 1
        elif n.op_type == "Gemm":
            if _attr(n, "transA", 0) or float(_attr(n, "alpha", 1.0)) != 1.0 or w.ndim != 2:
                continue
            axis = 0 if _attr(n, "transB", 0) else 1
        elif n.op_type == "ConvTranspose":
            if int(_attr(n, "group", 1)) != 1:
                continue
            axis = 1
        else:
            axis = 0
        out.append(WeightedNode(idx, n.name or f"{n.op_type}_{idx}", n.op_type, n.input[0], n.input[1], w, axis))
    return out


def match_layers(model: onnx.ModelProto, layers: Iterable, calls: dict[str, int] | None = None,
                 strict: bool = True) -> dict[str, list[str]]:
    """PyTorch layer name -> ONNX node names holding its weights (see the module docstring).

    ``layers`` are ``QuantLayer`` objects in call order; ``calls`` says how many nodes each layer
    should match (a module called twice appears twice in the graph). With ``strict=False`` layers
    without a node (their weights only enter the graph re-associated, e.g. the factored mask
    decoder) are left out of the result instead of raising."""
    nodes = weighted_nodes(model)
    taken: set[str] = set()
    result: dict[str, list[str]] = {}
    for layer in layers:
        w = layer.weight.detach().float().cpu().numpy()
        scale = float(np.abs(w).max()) or 1.0
        ok = []
        for n in nodes:
            if n.name in taken or n.op_type not in _KIND_OPS[layer.kind]:
                continue
            tw = n.torch_layout()
            if tw.shape != w.shape:
                continue
            if float(np.abs(tw - w).max()) <= MATCH_RTOL * scale:
                ok.append(n)
        want = (calls or {}).get(layer.name, 1)
        if not strict and len(ok) < want:
            continue
        if len(ok) < want:
            raise CalibrationError(
                f"no ONNX node holds the weights of {layer.name} ({layer.kind}, weight {list(w.shape)}); "
                f"found {len(ok)} of {want}",
                hint="the ONNX file was not exported from this checkpoint (check --checkpoint / the manifest)",
            )
        for n in ok[:want]:
            taken.add(n.name)
        result[layer.name] = [n.name for n in ok[:want]]
    return result


# ---- writing --------------------------------------------------------------------------------------
def _scalar(name: str, value: float) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(value, dtype=np.float32).reshape(()), name)


def _zp(name: str, shape: tuple[int, ...] = ()) -> onnx.TensorProto:
    return numpy_helper.from_array(np.zeros(shape, dtype=np.int8), name)


def quantize_model(
    model: onnx.ModelProto,
    node_scales: dict[str, "object"],
    prune: bool = True,
) -> onnx.ModelProto:
    """A copy of ``model`` with Q/DQ for every node in ``node_scales`` (ONNX node name ->
    ``search.LayerScales``). The FP32 model is not modified."""
    q = onnx.ModelProto()
    q.CopyFrom(model)
    nodes = {n.name: n for n in weighted_nodes(q)}
    missing = [k for k in node_scales if k not in nodes]
    if missing:
        raise CalibrationError(f"ONNX node(s) not found or not quantizable: {missing[:3]}")
    g = q.graph
    graph_outputs = {o.name for o in g.output}
    before: dict[int, list[onnx.NodeProto]] = {}
    after: dict[int, list[onnx.NodeProto]] = {}
    rename_consumers: dict[str, str] = {}
    new_inits: list[onnx.TensorProto] = []

    for name, sc in node_scales.items():
        wn = nodes[name]
        node = g.node[wn.index]
        base = name
        w_scale = np.asarray(sc.weight, dtype=np.float32).reshape(-1)
        if w_scale.size != wn.weight.shape[wn.axis]:
            raise CalibrationError(
                f"{name}: {w_scale.size} weight scales for {wn.weight.shape[wn.axis]} output channels"
            )
        # activation input: a dedicated Q -> DQ pair
        a_scale, a_zp = f"{base}/input_scale", f"{base}/input_zero_point"
        a_q, a_dq = f"{base}/input_quantized", f"{base}/input_dequantized"
        new_inits += [_scalar(a_scale, np.float32(sc.act)), _zp(a_zp)]
        before.setdefault(wn.index, []).extend([
            helper.make_node("QuantizeLinear", [wn.act_input, a_scale, a_zp], [a_q], name=f"{base}/input_Q"),
            helper.make_node("DequantizeLinear", [a_q, a_scale, a_zp], [a_dq], name=f"{base}/input_DQ"),
        ])
        node.input[0] = a_dq
        # weight: int8 initializer (narrow range) + per-channel DQ
        w_q, w_s, w_zp, w_dq = f"{base}/weight_quantized", f"{base}/weight_scale", f"{base}/weight_zero_point", f"{base}/weight_dequantized"
        new_inits += [
            numpy_helper.from_array(quant.quantize_weight_np(wn.weight, w_scale, wn.axis), w_q),
            numpy_helper.from_array(w_scale, w_s),
            _zp(w_zp, (w_scale.size,)),
        ]
        before[wn.index].append(
            helper.make_node("DequantizeLinear", [w_q, w_s, w_zp], [w_dq], name=f"{base}/weight_DQ", axis=wn.axis)
        )
        node.input[1] = w_dq
        # optional output Q -> DQ (single DQ after the Q; its float output fans out)
        out_scale = getattr(sc, "out", None)
        if out_scale is not None:
            y = node.output[0]
            o_scale, o_zp = f"{base}/output_scale", f"{base}/output_zero_point"
            pre, o_q = f"{base}/output_float", f"{base}/output_quantized"
            new_inits += [_scalar(o_scale, np.float32(out_scale)), _zp(o_zp)]
            if y in graph_outputs:  # keep the graph output's name: the DQ produces it
                node.output[0] = pre
                src, dst = pre, y
            else:
                src, dst = y, f"{base}/output_dequantized"
                rename_consumers[y] = dst
            after.setdefault(wn.index, []).extend([
                helper.make_node("QuantizeLinear", [src, o_scale, o_zp], [o_q], name=f"{base}/output_Q"),
                helper.make_node("DequantizeLinear", [o_q, o_scale, o_zp], [dst], name=f"{base}/output_DQ"),
            ])

    new_inits += _lift_bias_ranks(q, [nodes[n] for n in node_scales])

    ordered: list[onnx.NodeProto] = []
    for i, node in enumerate(g.node):
        ordered.extend(before.get(i, []))
        ordered.append(node)
        ordered.extend(after.get(i, []))
    own_q = {n.name for lst in after.values() for n in lst if n.op_type == "QuantizeLinear"}
    for node in ordered:
        if node.name in own_q:
            continue
        for k, inp in enumerate(node.input):
            if inp in rename_consumers:
                node.input[k] = rename_consumers[inp]
    del g.node[:]
    g.node.extend(ordered)
    g.initializer.extend(new_inits)
    if prune:
        prune_dead(q)
    return q


def _ranks(model: onnx.ModelProto) -> dict[str, int]:
    g = model.graph
    out = {}
    for v in list(g.value_info) + list(g.input) + list(g.output):
        t = v.type.tensor_type
        if t.HasField("shape"):
            out[v.name] = len(t.shape.dim)
    return out


def _lift_bias_ranks(model: onnx.ModelProto, quantized: list[WeightedNode]) -> list[onnx.TensorProto]:
    """Give the bias of every quantized >=3-D MatMul a rank-3+ shape [1,..,1,N] (same broadcast).

    ONNX Runtime's MatMulAddFusion (graph level 1) turns MatMul+Add into Gemm before the QDQ fusions
    run, and a Gemm whose bias is float cannot become an INT8 kernel -- the Linear layers would run in
    FP32 behind Q/DQ. The fusion only accepts a 1-D bias for >=3-D inputs, so a [1,1,N] bias keeps
    the MatMul for ``MatMulIntegerToFloat``. Semantics are unchanged (TensorRT does not care)."""
    g = model.graph
    ranks = _ranks(model)
    gr = GraphIndex(model.graph)
    added: dict[tuple[str, int], str] = {}
    new = []
    for wn in quantized:
        if wn.op_type != "MatMul":
            continue
        node = next((n for n in g.node if n.name == wn.name), None)
        rank = ranks.get(wn.act_input)
        if node is None or rank is None or rank < 3:
            continue
        users = gr.consumers.get(node.output[0], [])
        if len(users) != 1 or users[0].op_type != "Add":
            continue
        add = users[0]
        k = 1 if add.input[0] == node.output[0] else 0
        bias = gr.const(add.input[k]) if add.input[k] in gr.initializers else None
        if bias is None or bias.ndim != 1:
            continue
        key = (add.input[k], rank)
        if key not in added:
            name = f"{add.input[k]}/rank{rank}"
            new.append(numpy_helper.from_array(bias.reshape((1,) * (rank - 1) + (-1,)), name))
            added[key] = name
        add.input[k] = added[key]
    return new


def prune_dead(model: onnx.ModelProto) -> None:
    """Remove nodes whose outputs nobody uses and initializers nobody reads (the replaced FP32
    weights and their Transpose/Identity chains)."""
    g = model.graph
    outputs = {o.name for o in g.output}
    while True:
        used = {i for n in g.node for i in n.input if i} | outputs
        keep = [n for n in g.node if any(o in used for o in n.output if o)]
        if len(keep) == len(g.node):
            break
        del g.node[:]
        g.node.extend(keep)
    used = {i for n in g.node for i in n.input if i} | outputs
    inits = [t for t in g.initializer if t.name in used]
    if len(inits) != len(g.initializer):
        del g.initializer[:]
        g.initializer.extend(inits)
    vis = [v for v in g.value_info if v.name in used or v.name in {o for n in g.node for o in n.output}]
    del g.value_info[:]
    g.value_info.extend(vis)


# ---- inspection (tests, reports, self-checks) ------------------------------------------------------
@dataclass
class QdqNodeInfo:
    node: str
    op_type: str
    input_scale: np.float32 | None
    weight_scale: np.ndarray | None
    weight_axis: int | None
    weight_int8: np.ndarray | None
    output_scale: np.float32 | None
    zero_points: list[np.ndarray]
    q_consumers: list[int]  # consumers of every Q feeding this node (input + output)


def inspect_qdq(model: onnx.ModelProto) -> dict[str, QdqNodeInfo]:
    """What each quantized weighted node looks like: scales, axes, zero points, Q fan-out."""
    gr = GraphIndex(model.graph)

    def dq_of(tensor: str):
        n = gr.producer.get(tensor)
        return n if n is not None and n.op_type == "DequantizeLinear" else None

    info: dict[str, QdqNodeInfo] = {}
    for n in model.graph.node:
        if n.op_type not in WEIGHTED_OPS:
            continue
        a_dq, w_dq = dq_of(n.input[0]), dq_of(n.input[1]) if len(n.input) > 1 else None
        if a_dq is None and w_dq is None:
            continue
        zps, fan = [], []
        in_scale = w_scale = w_int8 = axis = out_scale = None
        if a_dq is not None:
            in_scale = np.float32(gr.const(a_dq.input[1]))
            zps.append(gr.const(a_dq.input[2]) if len(a_dq.input) > 2 else None)
            q = gr.producer.get(a_dq.input[0])
            if q is not None and q.op_type == "QuantizeLinear":
                zps.append(gr.const(q.input[2]) if len(q.input) > 2 else None)
                fan.append(len(gr.consumers.get(q.output[0], [])))
        if w_dq is not None:
            w_int8 = gr.const(w_dq.input[0])
            w_scale = gr.const(w_dq.input[1])
            zps.append(gr.const(w_dq.input[2]) if len(w_dq.input) > 2 else None)
            axis = int(_attr(w_dq, "axis", 1))
        outs = gr.consumers.get(n.output[0], [])
        if len(outs) == 1 and outs[0].op_type == "QuantizeLinear":
            oq = outs[0]
            out_scale = np.float32(gr.const(oq.input[1]))
            zps.append(gr.const(oq.input[2]) if len(oq.input) > 2 else None)
            fan.append(len(gr.consumers.get(oq.output[0], [])))
        info[n.name] = QdqNodeInfo(n.name, n.op_type, in_scale, w_scale, axis, w_int8, out_scale, zps, fan)
    return info


def count_qdq(model: onnx.ModelProto) -> dict[str, int]:
    ops = [n.op_type for n in model.graph.node]
    return {"QuantizeLinear": ops.count("QuantizeLinear"), "DequantizeLinear": ops.count("DequantizeLinear")}


def zero_point_problems(model: onnx.ModelProto) -> list[str]:
    """Every Q/DQ must have an explicit int8 zero point that is all zeros."""
    gr = GraphIndex(model.graph)
    bad = []
    for n in model.graph.node:
        if n.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        if len(n.input) < 3 or not n.input[2]:
            bad.append(f"{n.name}: no explicit zero point")
            continue
        zp = gr.const(n.input[2])
        if zp is None or zp.dtype != np.int8 or np.any(zp != 0):
            bad.append(f"{n.name}: zero point {zp!r} (need int8 0)")
    return bad

