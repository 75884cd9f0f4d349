"""The FP16 graph for TensorRT 11 runs in ONNX Runtime, keeps exactly the intended nodes in FP32,
keeps FP32 I/O, and stays close to the FP32 graph."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from samdeploy.trt.mixed_precision import (
    KEEP_FP32_OPS, convert_to_mixed_precision, decomposed_layernorm_nodes, fp32_nodes,
)

from fixtures_trt import decoder_feeds
from samdeploy.contract import DECODER_IOU, DECODER_LOW_RES_MASKS


def _session(model):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def _output_types(model):
    """node name -> set of elem types of its outputs, read from the converted graph's own type inference."""
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    t = {v.name: v.type.tensor_type.elem_type for v in list(inferred.graph.value_info) + list(inferred.graph.output)}
    return {n.name: {t.get(o) for o in n.output if o in t} for n in inferred.graph.node}


@pytest.fixture(scope="module")
def converted(trt_our_decoder):
    model = onnx.load(str(trt_our_decoder))
    mixed, report = convert_to_mixed_precision(model)
    return model, mixed, report


def test_our_decoder_fp16_runs_in_ort_and_stays_close(converted):
    model, mixed, _ = converted
    feeds = decoder_feeds(batch=3, points=4)
    ref = dict(zip([DECODER_IOU, DECODER_LOW_RES_MASKS], _session(model).run(None, feeds)))
    got = dict(zip([DECODER_IOU, DECODER_LOW_RES_MASKS], _session(mixed).run(None, feeds)))
    assert all(v.dtype == np.float32 for v in got.values())  # I/O stays FP32
    assert {i.name: i.type.tensor_type.elem_type for i in mixed.graph.input} == {
        i.name: i.type.tensor_type.elem_type for i in model.graph.input}
    m_ref, m_got = ref[DECODER_LOW_RES_MASKS], got[DECODER_LOW_RES_MASKS]
    scale = np.abs(m_ref).max()
    assert scale > 5  # realistic logits, so the tolerance below means something
    assert np.abs(m_got - m_ref).max() < 0.01 * scale
    assert ((m_got > 0) == (m_ref > 0)).mean() > 0.995
    assert np.abs(got[DECODER_IOU] - ref[DECODER_IOU]).max() < 0.01


def test_exactly_the_intended_nodes_stay_fp32(converted):
    model, mixed, report = converted
    nodes = {n.name: n for n in model.graph.node}
    types = _output_types(mixed)
    originally_float = _output_types(model)
    kept, halved = set(), set()
    for name, ts in originally_float.items():
        if TensorProto.FLOAT in ts and nodes[name].op_type not in ("Constant",):
            (kept if TensorProto.FLOAT in types[name] else halved).add(name)
    assert kept == set(report.fp32_nodes) - {n for n in report.fp32_nodes if TensorProto.FLOAT not in originally_float[n]}
    assert all(TensorProto.FLOAT16 in types[n] for n in halved)
    # what we intended: every LayerNormalization / Softmax / Sin / Cos and every decomposed LayerNorm
    by_op = {n.name for n in model.graph.node if n.op_type in KEEP_FP32_OPS}
    assert by_op and by_op <= kept
    ln2d = set(decomposed_layernorm_nodes(model.graph))
    assert len(ln2d) % 7 == 0 and ln2d and ln2d <= kept
    # and nothing heavy: no Conv/ConvTranspose and almost all MatMuls run in FP16
    heavy = [n for n in kept if nodes[n].op_type in ("Conv", "ConvTranspose", "Gemm")]
    assert heavy == []
    mm = [n for n in nodes if nodes[n].op_type == "MatMul"]
    assert sum(n in halved for n in mm) >= len(mm) - 2  # the 2 kept ones: prompt-encoder Fourier projection


def _ln2d_graph():
    """x -> LayerNorm2d written out by hand (the 7 nodes) -> Mul(w) -> Conv -> y."""
    n = helper.make_node
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(np.array([1], np.int64), "ax"), numpy_helper.from_array(np.array(2.0, np.float32), "two"),
             numpy_helper.from_array(np.array(1e-6, np.float32), "eps"),
             numpy_helper.from_array(rng.standard_normal((4, 1, 1)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.standard_normal((4, 4, 1, 1)).astype(np.float32), "k")]
    nodes = [n("ReduceMean", ["x", "ax"], ["u"], name="mean1", keepdims=1), n("Sub", ["x", "u"], ["d"], name="sub"),
             n("Pow", ["d", "two"], ["p"], name="pow"), n("ReduceMean", ["p", "ax"], ["s"], name="mean2", keepdims=1),
             n("Add", ["s", "eps"], ["se"], name="add"), n("Sqrt", ["se"], ["r"], name="sqrt"),
             n("Div", ["d", "r"], ["nrm"], name="div"), n("Mul", ["nrm", "w"], ["sc"], name="scale"),
             n("Conv", ["sc", "k"], ["y"], name="conv")]
    g = helper.make_graph(nodes, "ln2d", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)


def test_decomposed_layernorm_found_by_hand_built_graph():
    m = _ln2d_graph()
    assert set(fp32_nodes(m)) == {"mean1", "sub", "pow", "mean2", "add", "sqrt", "div"}
    mixed, rep = convert_to_mixed_precision(m)
    x = (np.random.default_rng(1).standard_normal((1, 4, 8, 8)) * 300).astype(np.float32)  # FP16-hostile scale
    ref = _session(m).run(None, {"x": x})[0]
    got = _session(mixed).run(None, {"x": x})[0]
    assert np.abs(got - ref).max() < 0.02 * np.abs(ref).max()
    types = _output_types(mixed)
    assert types["conv"] == {TensorProto.FLOAT16} and types["scale"] == {TensorProto.FLOAT16}
    assert types["pow"] == {TensorProto.FLOAT}


def test_qdq_graph_goes_to_opset19_with_fp16_scales():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((8, 4, 3, 3)).astype(np.float32)
    ws = (np.abs(w).reshape(8, -1).max(1) / 127).astype(np.float32)
    wq = np.clip(np.round(w / ws[:, None, None, None]), -127, 127).astype(np.int8)
    n = helper.make_node
    inits = [numpy_helper.from_array(wq, "wq"), numpy_helper.from_array(ws, "ws"),
             numpy_helper.from_array(np.zeros(8, np.int8), "wz"), numpy_helper.from_array(np.array(0.05, np.float32), "xs"),
             numpy_helper.from_array(np.array(0, np.int8), "xz")]
    nodes = [n("QuantizeLinear", ["x", "xs", "xz"], ["xq"], name="qx"), n("DequantizeLinear", ["xq", "xs", "xz"], ["xd"], name="dqx"),
             n("DequantizeLinear", ["wq", "ws", "wz"], ["wd"], name="dqw", axis=0), n("Conv", ["xd", "wd"], ["y"], name="conv")]
    g = helper.make_graph(nodes, "qdq", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 16, 16])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 14, 14])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    mixed, rep = convert_to_mixed_precision(m)
    assert rep.opset == 19
    scales = {i.name: i.data_type for i in mixed.graph.initializer}
    assert scales["ws"] == TensorProto.FLOAT16 and scales["xs"] == TensorProto.FLOAT16 and scales["wq"] == TensorProto.INT8
    x = rng.standard_normal((1, 4, 16, 16)).astype(np.float32)
    ref = _session(m).run(None, {"x": x})[0]
    got = _session(mixed).run(None, {"x": x})[0]
    assert got.dtype == np.float32 and np.abs(got - ref).max() < 0.02 * np.abs(ref).max()
