"""Fold constant *shape arithmetic* left behind by the TorchScript exporter (no torch).

torch's constant folding leaves chains such as ``ConstantOfShape -> Concat -> Reshape -> Slice ->
Cast`` (how ``F.pad`` computes its pads) and ``Shape`` of tensors whose shape is static. Those make
shape inference give up (the encoder output gets a symbolic batch dim, TensorRT sees shape
computations). This pass evaluates nodes whose inputs are all constant and whose outputs are
integer/bool tensors, and ``Shape``/``Size`` of statically shaped values. Float computations are
never folded, so the graph computes the same function (measured: ONNX Runtime may pick other
kernels once shapes are static, a rounding-level 1e-6 relative change, equally close to PyTorch).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

_MAX_ELEMENTS = 1 << 16
_INT_TYPES = {
    onnx.TensorProto.INT64, onnx.TensorProto.INT32, onnx.TensorProto.INT16, onnx.TensorProto.INT8,
    onnx.TensorProto.UINT8, onnx.TensorProto.BOOL,
}
_NEVER = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial", "Bernoulli"}


def _constants(graph: onnx.GraphProto) -> dict[str, np.ndarray]:
    values = {}
    for t in graph.initializer:
        if t.data_type in _INT_TYPES:
            values[t.name] = numpy_helper.to_array(t)
    for node in graph.node:
        if node.op_type == "Constant" and len(node.attribute) == 1 and node.attribute[0].name == "value":
            t = node.attribute[0].t
            if t.data_type in _INT_TYPES:
                values[node.output[0]] = numpy_helper.to_array(t)
    return values


def _static_shapes(model: onnx.ModelProto) -> dict[str, list[int]]:
    shapes = {}
    for v in list(model.graph.value_info) + list(model.graph.input) + list(model.graph.output):
        t = v.type.tensor_type
        if t.HasField("shape") and all(d.HasField("dim_value") for d in t.shape.dim):
            shapes[v.name] = [int(d.dim_value) for d in t.shape.dim]
    for t in model.graph.initializer:
        shapes[t.name] = list(t.dims)
    return shapes


def _eval(node: onnx.NodeProto, inputs: list[np.ndarray], opset: int) -> list[np.ndarray] | None:
    from onnx.reference import ReferenceEvaluator

    try:
        names = [f"in{i}" for i in range(len(inputs))]
        n = onnx.NodeProto()
        n.CopyFrom(node)
        real = [i for i in node.input]
        k = 0
        for i, name in enumerate(real):
            if name:
                n.input[i] = names[k]
                k += 1
        del n.output[:]
        n.output.extend([f"out{i}" for i in range(len(node.output))])
        graph = onnx.helper.make_graph(
            [n], "fold",
            [onnx.helper.make_tensor_value_info(nm, onnx.helper.np_dtype_to_tensor_dtype(a.dtype), a.shape) for nm, a in zip(names, inputs)],
            [onnx.helper.make_empty_tensor_value_info(o) for o in n.output],
        )
        model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", opset)])
        return [np.asarray(o) for o in ReferenceEvaluator(model).run(None, dict(zip(names, inputs)))]
    except Exception:
        return None


def _shape_value(node: onnx.NodeProto, shape: list[int]) -> np.ndarray:
    if node.op_type == "Size":
        return np.array(int(np.prod(shape)), np.int64)
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    start, end = attrs.get("start", 0), attrs.get("end", len(shape))
    return np.array(shape[slice(start, end)], np.int64)


def fold_shape_constants(model: onnx.ModelProto, static_shapes: dict[str, list[int]] | None = None) -> int:
    """One folding sweep over ``model`` (in place). Returns the number of nodes folded."""
    graph = model.graph
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 17)
    values = _constants(graph)
    shapes = static_shapes if static_shapes is not None else _static_shapes(model)
    outputs = {o.name for o in graph.output}
    folded: list[onnx.TensorProto] = []
    keep: list[onnx.NodeProto] = []
    for node in graph.node:
        result = None
        if node.op_type in ("Shape", "Size") and node.input[0] in shapes:
            result = [_shape_value(node, shapes[node.input[0]])]
        elif (
            node.op_type not in _NEVER
            and node.op_type != "Constant"
            and node.domain in ("", "ai.onnx")
            and node.input
            and all((not i) or i in values for i in node.input)
            and not any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute)
        ):
            result = _eval(node, [values[i] for i in node.input if i], opset)
            if result is not None and not all(
                r.dtype.kind in "iub" and r.size <= _MAX_ELEMENTS for r in result
            ):
                result = None
        if result is None or any(o in outputs for o in node.output):
            keep.append(node)
            continue
        for name, value in zip(node.output, result):
            values[name] = value
            folded.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
    n = len(graph.node) - len(keep)
    if n:
        del graph.node[:]
        graph.node.extend(keep)
        graph.initializer.extend(folded)
        _drop_dead(model)
    return n


def _drop_dead(model: onnx.ModelProto) -> None:
    """Remove nodes and initializers nothing uses any more (walking back from the outputs)."""
    graph = model.graph
    needed = {o.name for o in graph.output}
    needed |= _subgraph_inputs(graph)  # outer-scope values used inside If/Loop bodies
    live = []
    for node in reversed(graph.node):
        if any(o in needed for o in node.output):
            live.append(node)
            needed.update(i for i in node.input if i)
    live.reverse()
    if len(live) != len(graph.node):
        del graph.node[:]
        graph.node.extend(live)
    inits = [t for t in graph.initializer if t.name in needed]
    if len(inits) != len(graph.initializer):
        del graph.initializer[:]
        graph.initializer.extend(inits)


def _subgraph_inputs(graph: onnx.GraphProto) -> set[str]:
    names: set[str] = set()
    for node in graph.node:
        for a in node.attribute:
            subs = [a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs) if a.type == onnx.AttributeProto.GRAPHS else []
            for g in subs:
                names.update(i for n in g.node for i in n.input if i)
                names |= _subgraph_inputs(g)
    return names
