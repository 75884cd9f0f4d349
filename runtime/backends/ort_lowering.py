"""Lower a portable QDQ INT8 graph to the form ONNX Runtime's CPU provider runs fastest.

The calibrated ``encoder.int8.onnx`` is standard QDQ so that TensorRT and every other runtime can
build it. ONNX Runtime fuses ``Q -> DQ -> MatMul(DQ weight)`` into ``MatMulIntegerToFloat`` by
itself, but leaves the Linear layer's bias as a separate ``Add`` over the whole float output
(measured: 40 bias adds = ~9 % of the INT8 MobileSAM encoder's time on one thread). Its bias
fusion only matches the older ``MatMulInteger -> Cast -> Mul -> Add`` form, and only when the
scales are dynamic. So, in memory and only for sessions on the CPU provider, we write each
quantized Linear the way ORT would after its own rewrites, plus the bias:

    QuantizeLinear(x, s_a, uint8 128) -> com.microsoft.MatMulIntegerToFloat(q, W_int8, s_a, s_w, 128, 0, bias)

The arithmetic is unchanged: symmetric int8 ``clip(round(x/s), -128, 127)`` equals uint8 with zero
point 128 minus 128 (ORT's own S8->U8 rewrite does the same for the x86 u8*s8 kernels), and the
bias is added to the same dequantized accumulator. The file on disk is never modified.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ...onnx_graph import GraphIndex

MS_DOMAIN = "com.microsoft"


@dataclass
class LoweringReport:
    lowered: int  # MatMuls now MatMulIntegerToFloat
    with_bias: int  # of which absorbed their bias Add
    skipped: int  # QDQ MatMuls left alone (shape or fan-out did not fit)
    uint8_pairs: int = 0  # other activation Q/DQ pairs rewritten int8 zp 0 -> uint8 zp 128


def _const(inits: dict[str, onnx.TensorProto], name: str) -> np.ndarray | None:
    t = inits.get(name)
    return numpy_helper.to_array(t) if t is not None else None


def _is_zero_int8(arr: np.ndarray | None) -> bool:
    return arr is not None and arr.dtype == np.int8 and not np.any(arr)


def _index(g: onnx.GraphProto):
    """(initializers, producer, consumers, graph output names) of a graph (:class:`GraphIndex`)."""
    ix = GraphIndex(g)
    return ix.initializers, ix.producer, ix.consumers, ix.outputs


_U8_ZP = "samdeploy/ort_lowering/u8_zero_point_128"


def _u8_zero_point(g: onnx.GraphProto, inits: dict[str, onnx.TensorProto]) -> str:
    """Name of a shared uint8 128 initializer (added on first use)."""
    if _U8_ZP not in inits:
        t = numpy_helper.from_array(np.array(128, dtype=np.uint8), _U8_ZP)
        inits[_U8_ZP] = t
        g.initializer.append(t)
    return _U8_ZP


def lower_for_cpu(model: onnx.ModelProto) -> tuple[onnx.ModelProto, LoweringReport]:
    """A copy of ``model`` with every symmetric-INT8 QDQ MatMul (constant per-column weight) replaced
    by ``MatMulIntegerToFloat`` with its bias folded in, and the remaining symmetric-int8 activation
    Q/DQ pairs moved to uint8 (see the module docstring). Other nodes are untouched."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    inits, producer, consumers, graph_outputs = _index(g)

    # nodes are keyed by their first output: tensor names are unique in a valid graph
    remove: set[str] = set()
    replace: dict[str, list[onnx.NodeProto]] = {}  # MatMul -> its replacement
    new_inits: list[onnx.TensorProto] = []
    lowered = with_bias = skipped = 0

    for node in g.node:
        if node.op_type != "MatMul" or node.domain not in ("", "ai.onnx"):
            continue
        a_dq, w_dq = producer.get(node.input[0]), producer.get(node.input[1])
        if a_dq is None or w_dq is None or a_dq.op_type != "DequantizeLinear" or w_dq.op_type != "DequantizeLinear":
            continue
        a_q = producer.get(a_dq.input[0])
        w_int8 = _const(inits, w_dq.input[0])
        a_scale = _const(inits, a_dq.input[1])
        w_scale = _const(inits, w_dq.input[1])
        w_axis = int(next((a.i for a in w_dq.attribute if a.name == "axis"), 1))
        fits = (
            a_q is not None and a_q.op_type == "QuantizeLinear"
            and len(consumers.get(a_q.output[0], [])) == 1 and len(consumers.get(a_dq.output[0], [])) == 1
            and list(a_q.input[1:3]) == list(a_dq.input[1:3])
            and a_scale is not None and a_scale.size == 1
            and len(a_dq.input) > 2 and _is_zero_int8(_const(inits, a_dq.input[2]))
            and w_int8 is not None and w_int8.dtype == np.int8 and w_int8.ndim == 2
            and len(w_dq.input) > 2 and _is_zero_int8(_const(inits, w_dq.input[2]))
            and w_scale is not None
            and (w_scale.size == 1 or (w_scale.size == w_int8.shape[1] and w_axis in (1, -1)))
        )
        if not fits:
            skipped += 1
            continue
        # an Add of a constant [1,..,1,N] bias directly after the MatMul is absorbed
        out = node.output[0]
        bias_name, add = "", None
        users = consumers.get(out, [])
        if len(users) == 1 and users[0].op_type == "Add" and out not in graph_outputs:
            cand = users[0]
            other = cand.input[1] if cand.input[0] == out else cand.input[0]
            b = _const(inits, other)
            if b is not None and b.dtype == np.float32 and b.shape[-1:] == (w_int8.shape[1],) and b.size == w_int8.shape[1]:
                bias_name = f"{other}/1d"
                if bias_name not in inits:
                    t = numpy_helper.from_array(b.reshape(-1), bias_name)
                    inits[bias_name] = t
                    new_inits.append(t)
                add, out = cand, cand.output[0]
        u8_zp = _u8_zero_point(g, inits)
        q_u8 = f"{a_q.output[0]}/u8"
        new_q = helper.make_node("QuantizeLinear", [a_q.input[0], a_q.input[1], u8_zp], [q_u8], name=f"{a_q.name}/u8")
        inputs = [q_u8, w_dq.input[0], a_q.input[1], w_dq.input[1], u8_zp, w_dq.input[2]]
        if bias_name:
            inputs.append(bias_name)
        mm = helper.make_node("MatMulIntegerToFloat", inputs, [out], name=f"{node.name}/int8", domain=MS_DOMAIN)
        replace[node.output[0]] = [new_q, mm]
        remove.update({a_q.output[0], a_dq.output[0]})
        if len(consumers.get(w_dq.output[0], [])) == 1:
            remove.add(w_dq.output[0])
        if add is not None:
            remove.add(add.output[0])
        lowered += 1
        with_bias += bool(bias_name)

    nodes: list[onnx.NodeProto] = []
    for n in g.node:
        if n.output[0] in replace:
            nodes.extend(replace[n.output[0]])
        elif n.output[0] not in remove:
            nodes.append(n)
    del g.node[:]
    g.node.extend(nodes)
    g.initializer.extend(new_inits)
    # drop initializers and value_info of removed tensors (the weight DQ outputs etc.)
    used = {i for n in g.node for i in n.input if i} | graph_outputs
    keep = [t for t in g.initializer if t.name in used]
    del g.initializer[:]
    g.initializer.extend(keep)
    produced = {o for n in g.node for o in n.output}
    vis = [v for v in g.value_info if v.name in produced]
    del g.value_info[:]
    g.value_info.extend(vis)
    if lowered and not any(o.domain == MS_DOMAIN for o in m.opset_import):
        m.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))
    pairs = _activation_pairs_to_uint8(m)
    return m, LoweringReport(lowered, with_bias, skipped, pairs)


def _activation_pairs_to_uint8(m: onnx.ModelProto) -> int:
    """Rewrite every symmetric int8 activation Q whose consumers are all matching DQs to uint8 with
    zero point 128 (identical values). ORT does this itself (QDQS8ToU8) but only for a Q with a
    single DQ consumer; its own DQ duplication (one DQ per consumer of a fanned-out output) then
    leaves a Conv's quantized output in int8 and QLinearConv unfused on x86. Returns the count."""
    g = m.graph
    inits, _, consumers, graph_outputs = _index(g)
    count = 0
    for q in g.node:
        if q.op_type != "QuantizeLinear" or len(q.input) < 3 or q.output[0] in graph_outputs:
            continue
        zp, scale = _const(inits, q.input[2]), _const(inits, q.input[1])
        if not _is_zero_int8(zp) or zp.size != 1 or scale is None or scale.size != 1:
            continue
        users = consumers.get(q.output[0], [])
        if not users or any(u.op_type != "DequantizeLinear" or list(u.input[1:3]) != list(q.input[1:3]) for u in users):
            continue
        zp_u8 = _u8_zero_point(g, inits)
        q.input[2] = zp_u8
        for u in users:
            u.input[2] = zp_u8
        count += 1
    return count


def lower_file_for_cpu(path: str) -> tuple[bytes, LoweringReport] | None:
    """Serialized lowered model for an INT8 QDQ file, or ``None`` when there is nothing to lower
    (FP32 graphs, external-data files, unreadable files -- ORT then opens ``path`` itself)."""
    import mmap
    import os

    try:
        if os.path.getsize(path) >= 2**31 - 2**20:
            return None
        with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            if mm.find(b"QuantizeLinear") < 0:  # FP32 graph: skip parsing it twice
                return None
        model = onnx.load(path, load_external_data=False)
    except Exception:  # let ONNX Runtime report the real problem with the file
        return None
    if any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer):
        return None
    if not is_qdq_graph(model):
        return None
    lowered, report = lower_for_cpu(model)
    if not (report.lowered or report.uint8_pairs):
        return None
    return lowered.SerializeToString(), report


def is_qdq_graph(model: onnx.ModelProto) -> bool:
    """Cheap pre-check: any QuantizeLinear at all (QDQ graph)."""
    return any(n.op_type == "QuantizeLinear" for n in model.graph.node)
