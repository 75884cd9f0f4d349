"""INT8 lowering for ONNX Runtime CPU (runtime/backends/ort_lowering.py): QDQ Linear layers become
MatMulIntegerToFloat with the bias folded in. Checked against a NumPy reference of symmetric INT8
arithmetic, against ORT running the unlowered QDQ graph, and on ORT's optimized graph (no bias Add
left behind the integer GEMM)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from fixtures_calibration import minmax_qdq, ort_optimized_ops, ort_run
from onnx import TensorProto, helper, numpy_helper

from samdeploy.runtime.backends.ort_lowering import is_qdq_graph, lower_file_for_cpu, lower_for_cpu

RNG = np.random.default_rng(7)
K, N = 48, 24
W = RNG.standard_normal((K, N)).astype(np.float32)
W_SCALE = (np.abs(W).max(0) / 127).astype(np.float32)
W_Q = np.clip(np.round(W / W_SCALE), -127, 127).astype(np.int8)
BIAS = RNG.standard_normal(N).astype(np.float32)
A_SCALE = np.float32(0.021)


def _qdq_linear(bias_shape=(1, 1, N), a_zp=0, shared_q=False, bias_first=False) -> onnx.ModelProto:
    """x[2,5,K] -> Q/DQ -> MatMul(DQ int8 W, per column) -> Add(bias) -> Relu -> y; optionally the Q
    also feeds a second DQ consumer (the lowering must then leave it alone)."""
    inits = [
        numpy_helper.from_array(np.asarray(A_SCALE), "a_s"),
        numpy_helper.from_array(np.asarray(a_zp, np.int8), "a_z"),
        numpy_helper.from_array(W_Q, "w_q"),
        numpy_helper.from_array(W_SCALE, "w_s"),
        numpy_helper.from_array(np.zeros(N, np.int8), "w_z"),
        numpy_helper.from_array(BIAS.reshape(bias_shape), "b"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "a_s", "a_z"], ["xq"], name="q"),
        helper.make_node("DequantizeLinear", ["xq", "a_s", "a_z"], ["xdq"], name="dq"),
        helper.make_node("DequantizeLinear", ["w_q", "w_s", "w_z"], ["w"], name="wdq", axis=1),
        helper.make_node("MatMul", ["xdq", "w"], ["mm"], name="mm"),
        helper.make_node("Add", ["b", "mm"] if bias_first else ["mm", "b"], ["lin"], name="bias_add"),
        helper.make_node("Relu", ["lin"], ["y"], name="relu"),
    ]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 5, N])]
    if shared_q:
        nodes.append(helper.make_node("DequantizeLinear", ["xq", "a_s", "a_z"], ["y2"], name="dq2"))
        outputs.append(helper.make_tensor_value_info("y2", TensorProto.FLOAT, [2, 5, K]))
    g = helper.make_graph(nodes, "lin", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 5, K])], outputs, inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)


def _numpy_reference(x: np.ndarray) -> np.ndarray:
    """Symmetric INT8: q = clip(round_half_even(x / s_a), -128, 127); y = relu((q @ W_q) * s_a * s_w + b)."""
    q = np.clip(np.round(x / A_SCALE), -128, 127).astype(np.int64)
    acc = q @ W_Q.astype(np.int64)
    return np.maximum(acc.astype(np.float64) * (np.float64(A_SCALE) * W_SCALE.astype(np.float64)) + BIAS, 0)


X = (RNG.standard_normal((2, 5, K)) * 1.5).astype(np.float32)
X[0, 0, :4] = [A_SCALE * 0.5, -A_SCALE * 0.5, 10.0, -10.0]  # round-half-even ties and saturation


@pytest.mark.parametrize("bias_shape,bias_first", [((1, 1, N), False), ((N,), False), ((1, N), True)])
def test_lowered_graph_matches_int8_reference_and_qdq(bias_shape, bias_first):
    m = _qdq_linear(bias_shape, bias_first=bias_first)
    low, rep = lower_for_cpu(m)
    assert (rep.lowered, rep.with_bias) == (1, 1)
    onnx.checker.check_model(low)
    (y_low,) = ort_run(low, {"x": X})
    (y_qdq,) = ort_run(m, {"x": X})
    ref = _numpy_reference(X)
    assert np.abs(y_low - ref).max() <= 1e-5 * np.abs(ref).max()
    assert np.array_equal(y_low, y_qdq) or np.abs(y_low - y_qdq).max() <= 1e-6 * np.abs(ref).max()
    ops = [n.op_type for n in low.graph.node]
    assert ops == ["QuantizeLinear", "MatMulIntegerToFloat", "Relu"]
    assert low.graph.node[0].output[0] == low.graph.node[1].input[0]
    zp = numpy_helper.to_array(next(t for t in low.graph.initializer if t.name == low.graph.node[0].input[2]))
    assert zp.dtype == np.uint8 and int(zp) == 128  # x86 u8*s8 kernel, same arithmetic as int8 zp 0
    # ORT keeps it as one fused kernel: no float bias Add left behind the integer GEMM
    assert ort_optimized_ops(low).count("Add") == 0
    if bias_shape == (1, 1, N):  # what ORT alone makes of the writer's QDQ form: MatMulIntegerToFloat + Add
        assert ort_optimized_ops(m).count("Add") == 1


def test_the_input_model_is_not_modified():
    m = _qdq_linear()
    before = m.SerializeToString()
    lower_for_cpu(m)
    assert m.SerializeToString() == before


@pytest.mark.parametrize("kw", [{"a_zp": 3}, {"shared_q": True}])
def test_patterns_that_do_not_fit_are_left_alone(kw):
    m = _qdq_linear(**kw)
    low, rep = lower_for_cpu(m)
    assert rep.lowered == 0 and rep.skipped == 1
    assert [n.op_type for n in low.graph.node] == [n.op_type for n in m.graph.node]


def test_fp32_graph_is_not_touched(tmp_path, tiny_net_onnx):
    assert not is_qdq_graph(tiny_net_onnx)
    p = tmp_path / "fp32.onnx"
    onnx.save(tiny_net_onnx, p)
    assert lower_file_for_cpu(str(p)) is None


def test_calibrated_graph_lowers_bit_exactly(tmp_path, tiny_net, tiny_input, tiny_net_onnx):
    """The QDQ writer's output (Linear + Conv + ConvTranspose) through the backend: every MatMul is
    lowered with its bias, outputs equal ORT's own QDQ execution."""
    from samdeploy.runtime.backends.onnxruntime import OrtBackend

    qmodel = minmax_qdq(tiny_net, tiny_input, tiny_net_onnx)
    n_matmul = sum(1 for n in qmodel.graph.node if n.op_type == "MatMul")
    assert n_matmul >= 2
    p = tmp_path / "int8.onnx"
    onnx.save(qmodel, p)
    lowered = OrtBackend(str(p), "encoder", threads=1)
    plain = OrtBackend(str(p), "encoder", threads=1, int8_lowering=False)
    assert lowered.lowering is not None and lowered.lowering.lowered == n_matmul
    assert plain.lowering is None
    assert "MatMulIntegerToFloat" in lowered.describe()["int8_lowering"]
    x = tiny_input.numpy()
    (a,) = lowered.session.run(None, {"x": x})
    (b,) = plain.session.run(None, {"x": x})
    assert np.abs(a - b).max() <= 1e-6 * np.abs(b).max()


def _qdq_conv_fanout() -> onnx.ModelProto:
    """x -> Q/DQ -> Conv(DQ int8 W) -> Q/DQ -> {Relu, Sigmoid} -> Add: the quantized Conv output has
    two float consumers, which is where ORT's own S8->U8 rewrite gives up."""
    rng = np.random.default_rng(3)
    w = rng.standard_normal((16, 8, 3, 3)).astype(np.float32)
    ws = (np.abs(w).reshape(16, -1).max(1) / 127).astype(np.float32)
    wq = np.clip(np.round(w / ws[:, None, None, None]), -127, 127).astype(np.int8)
    inits = [
        numpy_helper.from_array(np.asarray(np.float32(0.02)), "a_s"),
        numpy_helper.from_array(np.asarray(np.float32(0.05)), "o_s"),
        numpy_helper.from_array(np.asarray(0, np.int8), "z"),
        numpy_helper.from_array(wq, "w_q"),
        numpy_helper.from_array(ws, "w_s"),
        numpy_helper.from_array(np.zeros(16, np.int8), "w_z"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "a_s", "z"], ["xq"]),
        helper.make_node("DequantizeLinear", ["xq", "a_s", "z"], ["xdq"]),
        helper.make_node("DequantizeLinear", ["w_q", "w_s", "w_z"], ["w"], axis=0),
        helper.make_node("Conv", ["xdq", "w"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("QuantizeLinear", ["c", "o_s", "z"], ["cq"]),
        helper.make_node("DequantizeLinear", ["cq", "o_s", "z"], ["cdq"]),
        helper.make_node("Relu", ["cdq"], ["r"]),
        helper.make_node("Sigmoid", ["cdq"], ["s"]),
        helper.make_node("Add", ["r", "s"], ["y"]),
    ]
    g = helper.make_graph(nodes, "conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 20, 20])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16, 20, 20])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)


def test_quantized_conv_output_with_fanout_runs_as_qlinearconv():
    m = _qdq_conv_fanout()
    low, rep = lower_for_cpu(m)
    assert rep.lowered == 0 and rep.uint8_pairs == 2
    assert "QLinearConv" not in ort_optimized_ops(m)  # ORT alone: Conv in float behind Q/DQ
    assert "QLinearConv" in ort_optimized_ops(low)
    x = np.random.default_rng(4).standard_normal((1, 8, 20, 20)).astype(np.float32)
    (a,) = ort_run(low, {"x": x})
    (b,) = ort_run(m, {"x": x})
    # same quantization grid; QLinearConv requantizes in one step, so at most one output step apart
    assert np.abs(a - b).max() <= 0.05 * 1.0001
    assert np.mean(a == b) > 0.95


def test_a_rejected_lowering_falls_back_to_the_file_with_a_warning(tmp_path, monkeypatch, tiny_net, tiny_input,
                                                                   tiny_net_onnx):
    from samdeploy.runtime.backends import onnxruntime as ob
    from samdeploy.runtime.backends.ort_lowering import LoweringReport

    p = tmp_path / "int8.onnx"
    onnx.save(minmax_qdq(tiny_net, tiny_input, tiny_net_onnx), p)
    want = ob.OrtBackend(str(p), "encoder", threads=1, int8_lowering=False).session.run(None, {"x": tiny_input.numpy()})[0]
    monkeypatch.setattr(ob, "lower_file_for_cpu", lambda path: (b"not an onnx model", LoweringReport(1, 1, 0)))
    with pytest.warns(RuntimeWarning, match="rejected samdeploy's INT8 CPU lowering"):
        backend = ob.OrtBackend(str(p), "encoder", threads=1)
    assert backend.lowering is None
    assert np.array_equal(backend.session.run(None, {"x": tiny_input.numpy()})[0], want)
