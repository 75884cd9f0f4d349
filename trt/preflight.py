"""ONNX pre-flight for TensorRT (``samdeploy doctor``): what TensorRT's ONNX parser rejects or handles
badly, found before anyone waits for a build on the device.

Each :class:`Finding` has a severity (``error`` = the build fails or the engine is wrong,
``warning`` = it builds but slower/less accurate or fragile, ``info``), a stable code, the node or
input concerned, and a fix hint. Sources: onnx-tensorrt ``docs/operators.md`` (TRT 10.x: opset 9..20
for 10.0, 9..24 for 10.15+), TensorRT's explicit-quantization rules (ptq.md §3a) and the SAM-family
failure catalogue (anchors T1/T2: ``orig_im_size`` shape tensor, OneHot/Tile from repeat_interleave,
decomposed LayerNorm in FP16), plus the TensorRT versions known to build a family's graph but compute
wrong results (:mod:`.known_issues`, e.g. the SAM2 mask decoder before TensorRT 10.9): warnings
decided from the file's contract.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Iterable, Optional

import numpy as np

ERROR, WARNING, INFO = "error", "warning", "info"

# onnx-tensorrt operator matrix, "N" rows (TensorRT 10.15 / 11.x).
UNSUPPORTED_OPS = frozenset(
    """AffineGrid Bernoulli BitShift BitwiseAnd BitwiseNot BitwiseOr BitwiseXor Col2Im CenterCropPad Compress
    ConcatFromSequence ConvInteger DFT Det DynamicQuantizeLinear ImageDecoder MatMulInteger MaxRoiPool MaxUnpool
    MelWeightMatrix Multinomial NegativeLogLikelihoodLoss Optional OptionalGetElement OptionalHasElement
    QLinearConv QLinearMatMul RegexFullMatch SequenceAt SequenceConstruct SequenceEmpty SequenceErase
    SequenceInsert SequenceLength SequenceMap SoftmaxCrossEntropyLoss SplitToSequence StringConcat
    StringNormalizer StringSplit TfIdfVectorizer Unique""".split()
)
# Highest opset TensorRT's parser understands, by TensorRT major.minor (onnx-tensorrt docs).
MAX_OPSET = {(10, 0): 20, (10, 15): 24, (11, 0): 24}
# Ops that only exist in opsets newer than what TRT 10.3 parses.
NEW_IN_OPSET_23 = frozenset({"Attention", "RMSNormalization", "RotaryEmbedding"})

# (op_type, input index) pairs whose value TensorRT needs as a *shape tensor*.
SHAPE_INPUTS = {
    "Reshape": (1,), "Expand": (1,), "Tile": (1,), "ConstantOfShape": (0,), "Slice": (1, 2, 3, 4),
    "Resize": (1, 2, 3), "Upsample": (1,), "Range": (0, 1, 2), "OneHot": (1,), "TopK": (1,), "Pad": (1, 3),
    "Squeeze": (1,), "Unsqueeze": (1,), "ReduceMean": (1,), "ReduceSum": (1,), "Split": (1,), "CumSum": (1,),
}
# Expected per-channel axis of a weight DequantizeLinear, by consumer (ptq.md §3a table).
WEIGHT_AXIS = {"Conv": 0, "ConvTranspose": 1, "MatMul": 1}


@dataclass
class Finding:
    severity: str
    code: str
    message: str
    hint: str = ""
    where: str = ""

    def line(self) -> str:
        loc = f" [{self.where}]" if self.where else ""
        hint = f"\n      fix: {self.hint}" if self.hint else ""
        return f"{self.severity.upper():7s} {self.code}{loc}: {self.message}{hint}"

    def to_dict(self) -> dict:
        return asdict(self)


def _const_value(name: str, index) -> Optional[np.ndarray]:
    """Value of an initializer or Constant output (``index``: :class:`~samdeploy.onnx_graph.GraphIndex`)."""
    from onnx import numpy_helper  # noqa: PLC0415

    t = index.constant_tensor(name)
    return numpy_helper.to_array(t) if t is not None else None


def _ancestors_inputs(tensor: str, producers: dict, graph_inputs: set[str], seen: set[str]) -> set[str]:
    """Graph inputs that ``tensor`` depends on."""
    found: set[str] = set()
    stack = [tensor]
    while stack:
        t = stack.pop()
        if t in seen:
            continue
        seen.add(t)
        if t in graph_inputs:
            found.add(t)
            continue
        node = producers.get(t)
        if node is not None and node.op_type not in ("Shape", "Size"):  # dims, not values, flow through these
            stack.extend(i for i in node.input if i)
    return found


def _max_opset(trt_version: Optional[tuple[int, int]]) -> int:
    if trt_version is None:
        return 20  # the oldest we support (10.x with x < 15, e.g. JetPack 6's 10.3)
    best = 20
    for (maj, mnr), op in sorted(MAX_OPSET.items()):
        if trt_version >= (maj, mnr):
            best = op
    return best


def check_model(model, trt_version: Optional[tuple[int, int]] = None) -> list[Finding]:
    """All findings for one ONNX model (weights need not be loaded). ``trt_version`` = the target
    TensorRT (major, minor); ``None`` checks against the oldest supported, TensorRT 10.3."""
    from onnx import TensorProto  # noqa: PLC0415

    g = model.graph
    findings: list[Finding] = []
    from ..onnx_graph import GraphIndex  # noqa: PLC0415

    index = GraphIndex(g)
    inits, producers, graph_inputs = index.initializers, index.producer, set(index.inputs)
    in_types = {i.name: i.type.tensor_type.elem_type for i in g.input if i.name not in inits}

    # -- opset
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    limit = _max_opset(trt_version)
    target = "TensorRT %d.%d" % trt_version if trt_version else "TensorRT 10.3 (JetPack 6)"
    if opset < 17:
        findings.append(Finding(WARNING, "opset-below-17",
            f"opset {opset}: LayerNorm is exported decomposed (ReduceMean/Pow/Sqrt), which overflows in FP16 "
            "unless pinned to FP32",
            "re-export with opset 17 (`samdeploy export` default) so LayerNormalization maps to INormalizationLayer"))
    if opset > limit:
        findings.append(Finding(ERROR, "opset-too-new", f"opset {opset} is newer than {target} parses (<= {limit})",
                                "export with --opset 17"))

    # nodes whose outputs end up in a shape-tensor slot (values flow, Shape/Size cut the flow)
    shape_nodes: set[str] = set()
    stack = [node.input[i] for node in g.node for i in SHAPE_INPUTS.get(node.op_type, ()) if i < len(node.input) and node.input[i]]
    seen_t: set[str] = set()
    while stack:
        t = stack.pop()
        if t in seen_t:
            continue
        seen_t.add(t)
        prod = producers.get(t)
        if prod is not None and prod.op_type not in ("Shape", "Size"):
            shape_nodes.add(prod.name)
            stack.extend(i for i in prod.input if i)

    # -- operators
    seen_ops: set[str] = set()
    for node in g.node:
        where = node.name or node.op_type
        if node.domain not in ("", "ai.onnx"):
            findings.append(Finding(ERROR, "custom-domain-op",
                f"{node.op_type} from domain '{node.domain}' is not an ONNX standard op (TensorRT has no parser for it)",
                "export without ONNX Runtime graph optimizations (no com.microsoft fused ops)", where))
            continue
        if node.op_type in UNSUPPORTED_OPS and node.op_type not in seen_ops:
            findings.append(Finding(ERROR, "unsupported-op", f"{node.op_type} is not supported by TensorRT's ONNX parser",
                                    "rewrite the model without it and re-export", where))
        if node.op_type in NEW_IN_OPSET_23 and (trt_version is None or trt_version < (10, 15)):
            findings.append(Finding(ERROR, "unsupported-op", f"{node.op_type} needs TensorRT >= 10.15 (opset 23)",
                                    "export with opset 17", where))
        seen_ops.add(node.op_type)
        if node.op_type == "OneHot":
            feeds_shape = node.name in shape_nodes
            findings.append(Finding(ERROR if feeds_shape else WARNING, "onehot",
                "OneHot (torch repeat_interleave / one-hot label embedding)"
                + (" feeds a shape computation: TensorRT fails with 'IOneHotLayer cannot be used to compute a shape "
                   "tensor' (nanosam #16)" if feeds_shape else "; TensorRT needs its depth to be a build-time constant"),
                "export the decoder for one image (broadcast instead of repeat_interleave) and embed labels with "
                "comparisons (label == k), as `samdeploy export` does", where))
        if node.op_type == "Tile":
            findings.append(Finding(WARNING, "tile",
                "Tile (usually torch repeat_interleave of the image embedding over prompts): a data-dependent "
                "shape computation TensorRT handles badly",
                "broadcast the single image embedding instead (samdeploy's decoder contract)", where))

    # -- inputs used as shapes (orig_im_size) and integer inputs
    shape_users: dict[str, list[str]] = {}
    for node in g.node:
        for idx in SHAPE_INPUTS.get(node.op_type, ()):
            if idx < len(node.input) and node.input[idx]:
                for inp in _ancestors_inputs(node.input[idx], producers, graph_inputs, set()):
                    shape_users.setdefault(inp, []).append(node.name or node.op_type)
    for inp, users in sorted(shape_users.items()):
        t = in_types.get(inp)
        why = "" if t == TensorProto.INT32 else f" and is {TensorProto.DataType.Name(t) if t else 'untyped'}, not INT32"
        findings.append(Finding(ERROR, "shape-tensor-input",
            f"input '{inp}' is used to compute shapes ({', '.join(sorted(set(users))[:4])}{', ...' if len(set(users)) > 4 else ''})"
            f"{why}: TensorRT needs shape-tensor inputs as INT32 with a value profile (SAM #425, samexporter #31)",
            "drop it from the graph and upscale/crop masks outside (samdeploy's decoder has no orig_im_size); "
            "otherwise make it INT32 and set profile.set_shape_input(...)", inp))
    for inp in sorted(graph_inputs - set(shape_users)):
        if in_types.get(inp) == TensorProto.INT64:
            findings.append(Finding(WARNING, "int64-input",
                f"input '{inp}' is INT64; TensorRT runs INT64 only for some layers and casts index inputs to INT32",
                "make it INT32 (or float like samdeploy's point_labels)", inp))

    findings += check_qdq(model, index, opset)
    return findings


def check_qdq(model, index, opset: int) -> list[Finding]:
    """TensorRT explicit-quantization rules: symmetric, constant scales, per-channel axes."""
    out: list[Finding] = []
    consumers = index.uses  # tensor -> [(node, input position)]
    for node in model.graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        where = node.name or node.op_type
        scale_name = node.input[1] if len(node.input) > 1 else ""
        scale = _const_value(scale_name, index)
        if scale is None:
            out.append(Finding(ERROR, "qdq-scale-not-constant",
                f"{node.op_type} scale '{scale_name}' is computed at run time; TensorRT needs a build-time constant",
                "write scales as initializers (samdeploy calibrate does)", where))
        if len(node.input) > 2 and node.input[2]:
            zp = _const_value(node.input[2], index)
            if zp is None or np.any(zp != 0):
                out.append(Finding(ERROR, "qdq-asymmetric",
                    f"{node.op_type} has a non-zero (or non-constant) zero point; TensorRT supports symmetric "
                    "quantization only",
                    "re-calibrate with symmetric scales (zero point 0)", where))
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        per_channel = scale is not None and scale.ndim == 1 and scale.size > 1
        if per_channel and opset < 13:
            out.append(Finding(ERROR, "qdq-per-channel-opset", "per-channel Q/DQ needs opset >= 13", "export with opset 17", where))
        if node.op_type == "DequantizeLinear" and per_channel:
            x = _const_value(node.input[0], index)
            for cons, idx in consumers.get(node.output[0], []):
                if idx != 1:
                    continue
                want = WEIGHT_AXIS.get(cons.op_type)
                if cons.op_type == "Gemm":
                    want = 0 if any(a.name == "transB" and a.i == 1 for a in cons.attribute) else 1
                if want is None:
                    continue
                rank = x.ndim if x is not None else None
                got = axis + rank if (axis < 0 and rank) else axis
                if cons.op_type == "MatMul" and rank:
                    want = rank - 1  # weight [.., in, out]: one scale per output column
                if got != want:
                    out.append(Finding(ERROR, "qdq-weight-axis",
                        f"per-channel weight scale for {cons.op_type} '{cons.name}' uses axis {got}, expected {want} "
                        "(Conv: 0 = output channels, ConvTranspose: 1, MatMul [in,out]: 1)",
                        "re-run calibration; the weight scales are for the wrong dimension", where))
                elif x is not None and x.shape[got] != scale.size:
                    out.append(Finding(ERROR, "qdq-weight-axis",
                        f"{scale.size} scales for a weight with {x.shape[got]} channels on axis {got}", "re-run calibration", where))
    return out


def contract_findings(path: str, trt_version: Optional[tuple[int, int]] = None) -> tuple[list[Finding], Optional[str]]:
    """Whether the file carries the samdeploy contract, its I/O matches it, and the known TensorRT
    miscompiles of its family on ``trt_version`` (None: TensorRT 10.3, JetPack 6)."""
    from ..contract import read_onnx_contract  # noqa: PLC0415
    from ..errors import ContractError  # noqa: PLC0415

    try:
        contract, role = read_onnx_contract(path)
    except ContractError as exc:
        return [Finding(WARNING, "no-contract", str(exc).splitlines()[0],
                        "samdeploy build/runtime need graphs from `samdeploy export`/`calibrate`")], None
    import onnx  # noqa: PLC0415

    m = onnx.load(path, load_external_data=False)
    from ..onnx_graph import GraphIndex  # noqa: PLC0415

    ins = tuple(GraphIndex(m.graph).inputs)
    outs = tuple(o.name for o in m.graph.output)
    try:  # encoder, decoder and (for a --video export) the three video graphs
        want = contract.graph_io(role)
    except ValueError:
        return [Finding(ERROR, "contract-role", f"the file calls itself a {role!r} graph, which its contract does not have",
                        "re-export with `samdeploy export` (and --video for the SAM2 video graphs)")], role
    if want and (set(ins) != set(want[0]) or set(outs) != set(want[1])):
        return [Finding(ERROR, "contract-io", f"{role} I/O {ins} -> {outs} differ from the contract {want[0]} -> {want[1]}",
                        "re-export with `samdeploy export`")], role
    return known_issue_findings(contract, role, trt_version), role


def known_issue_findings(contract, role: str, trt_version: Optional[tuple[int, ...]]) -> list[Finding]:
    """TensorRT miscompiles known for this contract's graph on the target (:mod:`.known_issues`):
    warnings, since the engine builds; ``None`` = the default target, TensorRT 10.3 (JetPack 6)."""
    from .known_issues import ASSUMED_TARGET, known_issues  # noqa: PLC0415

    return [Finding(WARNING, i.code, i.message, i.remedy, role)
            for i in known_issues(contract, role, trt_version if trt_version is not None else ASSUMED_TARGET)]


def check_file(path: str, trt_version: Optional[tuple[int, int]] = None) -> list[Finding]:
    import onnx  # noqa: PLC0415

    from ..errors import InputError, MissingFileError  # noqa: PLC0415

    import os  # noqa: PLC0415

    if not os.path.exists(path):
        raise MissingFileError(f"ONNX file not found: {path}", hint="pass the path of encoder.onnx / decoder.onnx")
    try:
        model = onnx.load(path, load_external_data=False)
    except Exception as exc:
        raise InputError(f"{path} is not a readable ONNX file ({type(exc).__name__})") from None
    found, _ = contract_findings(path, trt_version)
    return found + check_model(model, trt_version)


def has_errors(findings: Iterable[Finding]) -> bool:
    return any(f.severity == ERROR for f in findings)
