"""FP16 graphs with the overflow-prone parts kept in FP32 (for TensorRT 11 strong typing).

TensorRT 11 has no ``BuilderFlag.FP16`` and no per-layer precision constraints: a strongly typed
network runs every layer in the type its ONNX tensors have. So for ``--precision fp16`` on TRT 11 we
write the precision into the graph: every float computation becomes FP16 except the nodes chosen
by :func:`fp32_nodes`, with ``Cast`` nodes at every FP16<->FP32 boundary and the graph's inputs and
outputs left FP32 (the runtime contract stays float32). The same node list drives the TRT 10 path
(layer precision constraints), so both TensorRT versions keep the same layers in FP32.

What stays FP32 and why (anchors T2, ptq.md §3a "Precision pitfalls"):

* ``LayerNormalization`` and the decomposed LayerNorm pattern (``ReduceMean -> Sub -> Pow ->
  ReduceMean -> Add(eps) -> Sqrt -> Div``, the ``LayerNorm2d`` of SAM's neck and mask upscaler):
  the variance of large activations overflows FP16 (EfficientViT-SAM: 0.0 mIoU in FP16).
* ``Softmax``: attention logits; exp() of large values overflows.
* ``Sin``/``Cos`` and the point-coordinate arithmetic feeding them (the prompt encoder's random
  Fourier features): FP16 has 0.5-pixel resolution at x=1024, and the Fourier projection amplifies it.

``onnxconverter-common``'s ``convert_float_to_float16(keep_io_types=True, node_block_list=...)`` was
tried first on our decoder and produced a graph ONNX Runtime rejects (a ``Cast(to=FLOAT)`` whose
output it had typed FP16), so this module implements the pass itself.

Graphs with Q/DQ nodes (INT8 from ``samdeploy calibrate``) are upgraded to opset 19 first, where
QuantizeLinear/DequantizeLinear accept FP16 scales, so dequantized tensors come out FP16 and stay
fusable with the following Conv/MatMul.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Iterable, Optional

import numpy as np

from ..errors import InputError

FLOAT = 1  # onnx.TensorProto.FLOAT
FLOAT16 = 10  # onnx.TensorProto.FLOAT16

KEEP_FP32_OPS = frozenset({"LayerNormalization", "Softmax", "Sin", "Cos"})
# Ops through which the coordinate arithmetic of a Sin/Cos input is followed backwards.
_FOURIER_INPUT_OPS = frozenset(
    {"Add", "Sub", "Mul", "Div", "MatMul", "Concat", "Unsqueeze", "Reshape", "Slice", "Gather", "Where",
     "Expand", "Transpose", "Squeeze", "Neg"}
)
# Float inputs that must stay float32 whatever the node's precision (input index per op type).
_FP32_ONLY_INPUTS = {"Resize": {2}}
QDQ_OPS = frozenset({"QuantizeLinear", "DequantizeLinear"})


@dataclass
class MixedPrecisionReport:
    fp32_nodes: list[str] = field(default_factory=list)  # node names kept in FP32 (float compute)
    fp16_nodes: int = 0
    casts_added: int = 0
    opset: int = 0


def _consumers(graph) -> dict[str, list]:
    """tensor -> [(node, input position)] (:class:`~samdeploy.onnx_graph.GraphIndex`)."""
    from ..onnx_graph import GraphIndex  # noqa: PLC0415

    return GraphIndex(graph).uses


def _producers(graph) -> dict[str, object]:
    from ..onnx_graph import GraphIndex  # noqa: PLC0415

    return GraphIndex(graph).producer


def decomposed_layernorm_nodes(graph) -> list[str]:
    """Node names of every ``ReduceMean -> Sub -> Pow -> ReduceMean -> Add -> Sqrt -> Div`` LayerNorm."""
    cons = _consumers(graph)

    def only(name: str, op: str) -> list:
        return [n for n, _ in cons.get(name, []) if n.op_type == op]

    found: list[str] = []
    for r1 in graph.node:
        if r1.op_type != "ReduceMean" or not r1.input:
            continue
        x = r1.input[0]
        for sub in only(r1.output[0], "Sub"):
            if list(sub.input[:2]) != [x, r1.output[0]]:
                continue
            for pw in only(sub.output[0], "Pow"):
                for r2 in only(pw.output[0], "ReduceMean"):
                    for add in only(r2.output[0], "Add"):
                        for sq in only(add.output[0], "Sqrt"):
                            for div in only(sq.output[0], "Div"):
                                if list(div.input[:2]) == [sub.output[0], sq.output[0]]:
                                    found += [r1.name, sub.name, pw.name, r2.name, add.name, sq.name, div.name]
    return list(dict.fromkeys(found))


def _fourier_input_nodes(graph, starts: Iterable) -> list[str]:
    prod = _producers(graph)
    seen: dict[str, None] = {}
    stack = [i for n in starts for i in n.input if i]
    while stack:
        t = stack.pop()
        node = prod.get(t)
        if node is None or node.name in seen or node.op_type not in _FOURIER_INPUT_OPS:
            continue
        seen[node.name] = None
        stack.extend(i for i in node.input if i)
    return list(seen)


def fp32_nodes(model, extra: Iterable[str] = (), keep_ops: Iterable[str] = KEEP_FP32_OPS) -> list[str]:
    """Names of the nodes to keep in FP32 (in graph order). Used by both TensorRT paths."""
    graph = model.graph
    keep_ops = set(keep_ops)
    keep = {n.name for n in graph.node if n.op_type in keep_ops}
    keep.update(decomposed_layernorm_nodes(graph))
    fourier = [n for n in graph.node if n.op_type in ({"Sin", "Cos"} & keep_ops)]
    keep.update(_fourier_input_nodes(graph, fourier))
    keep.update(extra)
    return [n.name for n in graph.node if n.name in keep]


def _ensure_node_names(graph) -> None:
    used = {n.name for n in graph.node if n.name}
    for i, n in enumerate(graph.node):
        if not n.name:
            name = f"{n.op_type}_{i}"
            while name in used:
                name += "_"
            n.name = name
            used.add(name)


def _float_types(model) -> dict[str, int]:
    import onnx  # noqa: PLC0415

    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False, data_prop=False)
    g = inferred.graph
    types: dict[str, int] = {}
    for vi in list(g.input) + list(g.output) + list(g.value_info):
        types[vi.name] = vi.type.tensor_type.elem_type
    for init in g.initializer:
        types[init.name] = init.data_type
    for node in g.node:
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value":
                    types[node.output[0]] = a.t.data_type
    return types


def _to_fp16_tensor(t):
    from onnx import numpy_helper  # noqa: PLC0415

    arr = numpy_helper.to_array(t).astype(np.float16)
    out = numpy_helper.from_array(arr, t.name)
    return out


def convert_to_mixed_precision(
    model, keep_nodes: Optional[Iterable[str]] = None, extra_keep: Iterable[str] = ()
) -> tuple["object", MixedPrecisionReport]:
    """Return ``(fp16_model, report)``. ``keep_nodes`` defaults to :func:`fp32_nodes`.

    Inputs/outputs keep their FP32 types; every FP32 tensor computed by a converted node becomes
    FP16; casts are inserted where an FP16 tensor meets an FP32 consumer and vice versa."""
    import onnx  # noqa: PLC0415
    from onnx import helper  # noqa: PLC0415

    model = copy.deepcopy(model)
    if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for n in model.graph.node for a in n.attribute):
        raise InputError(
            "this graph has control flow (If/Loop/Scan) which the FP16 pass does not handle",
            hint="samdeploy graphs have none: re-export with `samdeploy export`",
        )
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if any(n.op_type in QDQ_OPS for n in model.graph.node) and opset < 19:
        from onnx import version_converter  # noqa: PLC0415

        model = version_converter.convert_version(model, 19)
        opset = 19
    graph = model.graph
    _ensure_node_names(graph)
    keep = set(fp32_nodes(model, extra_keep) if keep_nodes is None else keep_nodes)
    types = _float_types(model)
    is_float = {name for name, t in types.items() if t == FLOAT}
    graph_inputs = {i.name for i in graph.input}
    graph_outputs = [o.name for o in graph.output]
    inits = {i.name: i for i in graph.initializer}
    cons = _consumers(graph)

    def node_fp16(node) -> bool:
        return node.name not in keep

    # -- which float tensors become FP16: outputs of converted nodes; initializers/constants that only
    #    feed converted nodes (at slots that follow the node's precision).
    def slot_fp16(node, idx: int) -> bool:
        return node_fp16(node) and idx not in _FP32_ONLY_INPUTS.get(node.op_type, set())

    new_type: dict[str, int] = {}
    for name in is_float:
        if name in graph_inputs:
            new_type[name] = FLOAT
    for init_name in inits:
        if init_name in is_float:
            users = cons.get(init_name, [])
            new_type[init_name] = FLOAT16 if users and all(slot_fp16(n, i) for n, i in users) else FLOAT
    report = MixedPrecisionReport(opset=opset)
    for node in graph.node:
        if node.op_type == "Constant" and node.output[0] in is_float:
            users = cons.get(node.output[0], [])
            new_type[node.output[0]] = FLOAT16 if users and all(slot_fp16(n, i) for n, i in users) else FLOAT
            continue
        for o in node.output:
            if o in is_float:
                new_type[o] = FLOAT16 if node_fp16(node) else FLOAT

    # -- rewrite tensors and type-carrying attributes
    for init in list(graph.initializer):
        if new_type.get(init.name) == FLOAT16:
            init.CopyFrom(_to_fp16_tensor(init))
    fp16_count = 0
    for node in graph.node:
        if node.op_type == "Constant" and new_type.get(node.output[0]) == FLOAT16:
            for a in node.attribute:
                if a.name == "value":
                    a.t.CopyFrom(_to_fp16_tensor(a.t))
            continue
        if not node_fp16(node):
            continue
        touches_float = any(o in is_float for o in node.output) or any(i in is_float for i in node.input)
        fp16_count += int(touches_float)
        for a in node.attribute:
            if node.op_type == "Cast" and a.name == "to" and a.i == FLOAT:
                a.i = FLOAT16
            elif node.op_type == "ConstantOfShape" and a.name == "value" and a.t.data_type == FLOAT:
                a.t.CopyFrom(_to_fp16_tensor(a.t))
    report.fp16_nodes = fp16_count
    report.fp32_nodes = [n.name for n in graph.node if n.name in keep]

    # -- casts at every precision boundary
    cast_cache: dict[tuple[str, int], str] = {}
    new_nodes = []

    def cast_of(tensor: str, to: int) -> str:
        key = (tensor, to)
        if key not in cast_cache:
            suffix = "fp16" if to == FLOAT16 else "fp32"
            out = f"{tensor}__{suffix}"
            new_nodes.append(helper.make_node("Cast", [tensor], [out], name=f"{tensor}__cast_{suffix}", to=to))
            cast_cache[key] = out
            report.casts_added += 1
        return cast_cache[key]

    ordered = []
    for node in graph.node:
        for idx, name in enumerate(node.input):
            if not name or name not in new_type:
                continue
            want = FLOAT16 if slot_fp16(node, idx) else FLOAT
            if node.op_type == "Cast":  # a Cast takes any input type
                continue
            if new_type[name] != want:
                node.input[idx] = cast_of(name, want)
        ordered.extend(new_nodes)
        new_nodes.clear()
        ordered.append(node)
    # graph outputs stay FP32
    for name in graph_outputs:
        if new_type.get(name) == FLOAT16:
            internal = f"{name}__fp16"
            for node in ordered:
                for i, o in enumerate(node.output):
                    if o == name:
                        node.output[i] = internal
                for i, inp in enumerate(node.input):
                    if inp == name:
                        node.input[i] = internal
            ordered.append(helper.make_node("Cast", [internal], [name], name=f"{name}__cast_fp32", to=FLOAT))
            report.casts_added += 1
    # Cast inputs were left untouched above: a Cast(to=FLOAT16) of an FP16 tensor is harmless.
    del graph.node[:]
    graph.node.extend(ordered)
    del graph.value_info[:]
    onnx.checker.check_model(model)
    model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    return model, report
