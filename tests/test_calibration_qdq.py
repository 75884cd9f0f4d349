"""The QDQ writer on a small network (every layer kind) and on hand-built Gemm graphs: scales bit for bit,
zero points, per-channel axes, narrow-range weights, one consumer per Q, matching by value, BN
folding, ORT fusion, and ORT vs a PyTorch fake-quant simulation of the same scales."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from fixtures_calibration import ort_optimized_ops, ort_run, rel_err, torch_fake_quant_forward
from onnx import TensorProto, helper, numpy_helper

from samdeploy.calibration import collect as C
from samdeploy.calibration import layers as L
from samdeploy.calibration import qdq
from samdeploy.calibration.search import LayerScales, hessian_search


@pytest.fixture(scope="module")
def tiny_setup(tiny_net, tiny_input, tiny_net_onnx):
    model = L.prepare_model(tiny_net)
    layers = L.find_layers_generic(model)
    collector = C.StatsCollector(layers, tokens=64, seed=0)

    def step():
        with torch.enable_grad():
            x = tiny_input.clone().requires_grad_(True)
            (model(x) ** 2).sum().backward()

    stats = collector.run(step, 0)
    order = collector.order
    layers = sorted(layers, key=lambda l: order.index(l.name))
    scales = {l.name: hessian_search(l, stats[l.name], n_candidates=16, rounds=2) for l in layers}
    match = qdq.match_layers(tiny_net_onnx, layers)
    node_scales = {n: scales[name] for name, nodes in match.items() for n in nodes}
    qmodel = qdq.quantize_model(tiny_net_onnx, node_scales)
    return model, layers, stats, scales, match, qmodel


def test_bn_is_folded_like_the_exporter(tiny_setup, tiny_net_onnx):
    model, layers, *_ = tiny_setup
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    # the ONNX file holds the folded weights: matching by value succeeded for the Conv+BN layers
    nodes = {n.name: n for n in qdq.weighted_nodes(tiny_net_onnx)}
    stem = next(l for l in layers if l.name == "stem.c")
    onnx_w = nodes["/stem/c/Conv"].weight
    np.testing.assert_allclose(onnx_w, stem.weight.numpy(), rtol=1e-5, atol=1e-6)


def test_every_layer_kind_is_matched(tiny_setup):
    _, layers, _, _, match, _ = tiny_setup
    assert {l.kind for l in layers} == {"conv", "linear", "conv_transpose"}
    assert match == {
        "stem.c": ["/stem/c/Conv"], "dw.c": ["/dw/c/Conv"], "fc1": ["/fc1/MatMul"], "fc2": ["/fc2/MatMul"],
        "up": ["/up/ConvTranspose"], "head": ["/head/Conv"],
    }


def test_scales_are_the_searched_ones_bit_for_bit(tiny_setup):
    _, _, _, scales, match, qmodel = tiny_setup
    info = qdq.inspect_qdq(qmodel)
    for name, nodes in match.items():
        for n in nodes:
            got = info[n]
            assert got.weight_scale.dtype == np.float32 and got.input_scale.dtype == np.float32
            assert np.array_equal(got.weight_scale.view(np.uint32), scales[name].weight.astype(np.float32).view(np.uint32))
            assert np.float32(got.input_scale).view(np.uint32) == np.float32(scales[name].act).view(np.uint32)


def test_zero_points_are_explicit_int8_zero(tiny_setup):
    *_, qmodel = tiny_setup
    assert qdq.zero_point_problems(qmodel) == []
    qs = [n for n in qmodel.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert len(qs) == 6 * 3  # per layer: input Q + DQ, weight DQ
    onnx.checker.check_model(qmodel, full_check=True)


def test_per_channel_axes(tiny_setup):
    *_, qmodel = tiny_setup
    info = qdq.inspect_qdq(qmodel)
    axes = {n: i.weight_axis for n, i in info.items()}
    assert axes == {"/stem/c/Conv": 0, "/dw/c/Conv": 0, "/fc1/MatMul": 1, "/fc2/MatMul": 1, "/up/ConvTranspose": 1, "/head/Conv": 0}
    # the scale vector has one entry per OUTPUT channel along that axis
    assert info["/up/ConvTranspose"].weight_scale.shape == (8,)  # ConvTranspose [in=16, out=8, 2, 2]
    assert info["/fc1/MatMul"].weight_scale.shape == (64,)  # MatMul weight [in=16, out=64]


def test_weights_are_narrow_range_and_dequantize_to_the_weights(tiny_setup, tiny_net_onnx):
    _, _, _, scales, match, qmodel = tiny_setup
    info = qdq.inspect_qdq(qmodel)
    fp = {n.name: n for n in qdq.weighted_nodes(tiny_net_onnx)}
    for name, nodes in match.items():
        for n in nodes:
            i = info[n]
            assert i.weight_int8.dtype == np.int8 and i.weight_int8.min() >= -127
            shape = [1] * i.weight_int8.ndim
            shape[i.weight_axis] = -1
            deq = i.weight_int8.astype(np.float32) * i.weight_scale.reshape(shape)
            w = fp[n].weight
            # within half a step wherever the weight is not clipped
            step = np.broadcast_to(i.weight_scale.reshape(shape), w.shape)
            inside = np.abs(w) <= 127 * step
            assert np.all(np.abs(deq - w)[inside] <= 0.5 * step[inside] * (1 + 1e-5))


def test_clipping_scale_clamps_weights_to_minus_127(tiny_net_onnx, tiny_setup):
    _, layers, _, scales, match, _ = tiny_setup
    bad = {n: LayerScales(name, scales[name].weight * np.float32(0.05), scales[name].act)
           for name, nodes in match.items() for n in nodes}
    info = qdq.inspect_qdq(qdq.quantize_model(tiny_net_onnx, bad))
    mins = [i.weight_int8.min() for i in info.values()]
    maxs = [i.weight_int8.max() for i in info.values()]
    assert min(mins) == -127 and max(maxs) == 127  # saturated, never -128


def test_one_consumer_per_q_and_graph_is_clean(tiny_setup):
    *_, qmodel = tiny_setup
    for i in qdq.inspect_qdq(qmodel).values():
        assert i.q_consumers == [1]
    names = [t.name for t in qmodel.graph.initializer]
    assert len(names) == len(set(names))
    # the FP32 weights are gone (replaced by int8 initializers)
    assert not any(t.data_type == TensorProto.FLOAT and len(t.dims) == 4 and t.dims[0] * t.dims[1] > 8
                   for t in qmodel.graph.initializer)


def test_ort_matches_pytorch_fake_quant_simulation(tiny_setup, tiny_input, tiny_net_onnx):
    model, layers, _, scales, _, qmodel = tiny_setup
    (y_ort,) = ort_run(qmodel, {"x": tiny_input.numpy()})
    y_sim = torch_fake_quant_forward(lambda: model(tiny_input), layers, scales).numpy()
    (y_fp,) = ort_run(tiny_net_onnx, {"x": tiny_input.numpy()})
    assert rel_err(y_sim, y_ort) <= 1e-3
    # and quantization did change the output (the comparison is not trivially FP32 vs FP32)
    assert rel_err(y_fp, y_ort) > 20 * rel_err(y_sim, y_ort)


def test_ort_runs_the_matmuls_in_int8(tiny_setup):
    """x86 needs single-consumer S8 Q/DQ (S8->U8 rewrite) and no MatMul+Add->Gemm fusion first."""
    *_, qmodel = tiny_setup
    ops = ort_optimized_ops(qmodel)
    assert ops.count("MatMulIntegerToFloat") == 2
    assert "Gemm" not in ops


def test_matching_is_by_value_not_by_name(tiny_setup, tiny_net_onnx):
    _, layers, *_ = tiny_setup
    scrambled = onnx.ModelProto()
    scrambled.CopyFrom(tiny_net_onnx)
    rename = {}
    for i, t in enumerate(scrambled.graph.initializer):
        rename[t.name] = f"onnx::W_{1000 - i}"
        t.name = rename[t.name]
    for i, n in enumerate(reversed(scrambled.graph.node)):
        n.name = f"node_{i}"
        for k, inp in enumerate(n.input):
            n.input[k] = rename.get(inp, inp)
    match = qdq.match_layers(scrambled, layers)
    by_node = {n.name: n for n in scrambled.graph.node}
    assert by_node[match["fc1"][0]].op_type == "MatMul"
    assert by_node[match["up"][0]].op_type == "ConvTranspose"
    w = {n.name: n.torch_layout() for n in qdq.weighted_nodes(scrambled)}
    for l in layers:
        np.testing.assert_allclose(w[match[l.name][0]], l.weight.numpy(), rtol=1e-5, atol=1e-6)


def test_unmatched_weights_raise(tiny_setup, tiny_net_onnx):
    _, layers, *_ = tiny_setup
    other = [L.QuantLayer(l.name, l.graph, l.kind, l.module, l.weight + 1.0, l.bias, l.groups) for l in layers[:1]]
    from samdeploy.calibration.errors import CalibrationError

    with pytest.raises(CalibrationError, match="no ONNX node holds the weights"):
        qdq.match_layers(tiny_net_onnx, other)


def _gemm_model(trans_b: int, w: np.ndarray, b: np.ndarray, second_consumer: bool = False) -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 8])
    outs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 6])]
    nodes = [helper.make_node("Gemm", ["x", "W", "B"], ["y"], name="gemm", transB=trans_b)]
    if second_consumer:  # a second weighted op reading the same activation
        outs.append(helper.make_tensor_value_info("z", TensorProto.FLOAT, [4, 6]))
        nodes.append(helper.make_node("MatMul", ["x", "W2"], ["z"], name="mm"))
    inits = [numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "B"),
             numpy_helper.from_array(np.random.default_rng(5).normal(size=(8, 6)).astype(np.float32), "W2")]
    m = helper.make_model(helper.make_graph(nodes, "g", [x], outs, inits), opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


@pytest.mark.parametrize("trans_b,axis", [(1, 0), (0, 1)])
def test_gemm_axes(trans_b, axis):
    rng = np.random.default_rng(3)
    w_torch = rng.normal(size=(6, 8)).astype(np.float32)  # nn.Linear layout [out, in]
    w = w_torch if trans_b else np.ascontiguousarray(w_torch.T)
    model = _gemm_model(trans_b, w, rng.normal(size=6).astype(np.float32))
    node = qdq.weighted_nodes(model)[0]
    assert node.axis == axis
    np.testing.assert_array_equal(node.torch_layout(), w_torch)
    ws = (np.abs(w_torch).max(1) / 127).astype(np.float32)
    q = qdq.quantize_model(model, {"gemm": LayerScales("l", ws, np.float32(0.02))})
    i = qdq.inspect_qdq(q)["gemm"]
    assert i.weight_axis == axis and np.array_equal(i.weight_scale, ws)
    x = rng.normal(size=(4, 8)).astype(np.float32)
    xq = np.clip(np.rint(x / np.float32(0.02)), -128, 127) * np.float32(0.02)
    wq = np.clip(np.rint(w_torch / ws[:, None]), -127, 127) * ws[:, None]
    ref = xq @ wq.T + numpy_helper.to_array(model.graph.initializer[1])
    (y,) = ort_run(q, {"x": x})
    np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-4)


def test_shared_activation_gets_dedicated_q_per_consumer():
    rng = np.random.default_rng(4)
    model = _gemm_model(1, rng.normal(size=(6, 8)).astype(np.float32), np.zeros(6, np.float32), second_consumer=True)
    ws = np.full(6, 0.02, np.float32)
    q = qdq.quantize_model(model, {"gemm": LayerScales("a", ws, np.float32(0.03)), "mm": LayerScales("b", ws, np.float32(0.05))})
    qnodes = [n for n in q.graph.node if n.op_type == "QuantizeLinear"]
    assert len(qnodes) == 2 and all(n.input[0] == "x" for n in qnodes)
    info = qdq.inspect_qdq(q)
    assert info["gemm"].q_consumers == [1] and info["mm"].q_consumers == [1]
    assert info["gemm"].input_scale == np.float32(0.03) and info["mm"].input_scale == np.float32(0.05)
