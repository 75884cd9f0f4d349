"""Structural checks on exported graphs (no torch).

These catch, at export time, the graph features that break TensorRT builds or the runtime contract
(see ARCHITECTURE.md): ``OneHot``/``Tile`` (from ``repeat_interleave``), graph inputs that are used as
shapes (like the official decoder's ``orig_im_size``), non-float32 inputs, and wrong I/O names.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import onnx

from ..contract import DECODER_INPUTS, DECODER_OUTPUTS, ENCODER_INPUT, ENCODER_OUTPUT, VIDEO_GRAPHS
from ..onnx_graph import GraphIndex

FORBIDDEN_OPS = ("OneHot", "Tile")

# Operand positions that ONNX interprets as shapes / sizes / indices of the output's geometry.
# A graph input whose *values* reach one of these makes the output shape data-dependent on that
# input, i.e. TensorRT treats it as a shape tensor.
SHAPE_OPERANDS: dict[str, tuple[int, ...]] = {
    "Reshape": (1,),
    "Expand": (1,),
    "Tile": (1,),
    "ConstantOfShape": (0,),
    "Resize": (1, 2, 3),
    "Upsample": (1,),
    "Slice": (1, 2, 3, 4),
    "Range": (0, 1, 2),
    "Pad": (1,),
    "TopK": (1,),
    "Squeeze": (1,),
    "Unsqueeze": (1,),
    "ReduceSum": (1,),
    "ReduceMean": (1,),
    "ReduceMax": (1,),
    "ReduceMin": (1,),
    "Split": (1,),
    "OneHot": (1,),
    "NonZero": (0,),
}
# Ops whose output depends only on the *shape* of their input, not its values.
SHAPE_ONLY_OPS = ("Shape", "Size")

# The SAM-1 layout; a contract passed to check_graph gives the family's own names.
EXPECTED_IO = {
    "encoder": ((ENCODER_INPUT,), (ENCODER_OUTPUT,)),
    "decoder": (DECODER_INPUTS, DECODER_OUTPUTS),
}


@dataclass
class GraphReport:
    role: str
    problems: list[str] = field(default_factory=list)
    op_counts: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems


def _iter_nodes(graph: onnx.GraphProto):
    """All nodes, including those inside If/Loop/Scan bodies."""
    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _iter_nodes(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for g in attr.graphs:
                    yield from _iter_nodes(g)


def op_counts(model: onnx.ModelProto) -> dict[str, int]:
    counts: dict[str, int] = {}
    for node in _iter_nodes(model.graph):
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return dict(sorted(counts.items()))


def inputs_used_as_shapes(model: onnx.ModelProto) -> dict[str, list[str]]:
    """Graph input -> the nodes where its values (not just its shape) feed a shape operand."""
    index = GraphIndex(model.graph)
    consumers = index.uses  # tensor -> [(node, input position)]
    result: dict[str, list[str]] = {}
    for name in index.inputs:
        tainted = {name}
        frontier = [name]
        hits: list[str] = []
        while frontier:
            value = frontier.pop()
            for node, pos in consumers.get(value, []):
                if node.op_type in SHAPE_ONLY_OPS:
                    continue
                if pos in SHAPE_OPERANDS.get(node.op_type, ()):
                    hits.append(f"{node.op_type} {node.name or '?'} (input {pos})")
                for out in node.output:
                    if out and out not in tainted:
                        tainted.add(out)
                        frontier.append(out)
        if hits:
            result[name] = hits
    return result


def check_graph(model: onnx.ModelProto, role: str, contract=None) -> GraphReport:
    """Return every contract violation found in ``model`` (exported as ``role``)."""
    report = GraphReport(role=role, op_counts=op_counts(model))
    graph = model.graph
    for op in FORBIDDEN_OPS:
        if report.op_counts.get(op):
            report.problems.append(f"{report.op_counts[op]} {op} node(s) (TensorRT cannot use them on shapes)")
    initializers = {t.name for t in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initializers]
    for inp in inputs:
        elem = inp.type.tensor_type.elem_type
        if elem != onnx.TensorProto.FLOAT:
            report.problems.append(
                f"input {inp.name!r} is {onnx.TensorProto.DataType.Name(elem)}, the contract requires FLOAT"
            )
    for name, hits in inputs_used_as_shapes(model).items():
        report.problems.append(f"input {name!r} is used as a shape tensor: {', '.join(hits[:3])}")
    video = getattr(contract, "video", None)
    if role in EXPECTED_IO or (video is not None and role in VIDEO_GRAPHS):
        want_in, want_out = contract.graph_io(role) if contract is not None else EXPECTED_IO[role]
        got_in = tuple(i.name for i in inputs)
        got_out = tuple(o.name for o in graph.output)
        if got_in != tuple(want_in):
            report.problems.append(f"inputs are {got_in}, the contract requires {tuple(want_in)}")
        if got_out != tuple(want_out):
            report.problems.append(f"outputs are {got_out}, the contract requires {tuple(want_out)}")
    if model.opset_import:
        default = [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")]
        if default and default[0] < 17:
            report.problems.append(f"opset {default[0]} < 17 (LayerNormalization needs opset 17)")
    return report


def value_info_summary(values) -> list[dict]:
    """[{name, dtype, shape}] for graph inputs/outputs; dynamic dims are their symbolic names."""
    out = []
    for v in values:
        t = v.type.tensor_type
        shape = []
        for d in t.shape.dim:
            if d.HasField("dim_value"):
                shape.append(int(d.dim_value))
            elif d.HasField("dim_param"):
                shape.append(d.dim_param)
            else:
                shape.append(None)
        out.append(
            {"name": v.name, "dtype": onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name, "shape": shape}
        )
    return out
