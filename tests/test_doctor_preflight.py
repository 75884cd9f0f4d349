"""``samdeploy doctor``: the official SAM decoder is flagged for what breaks TensorRT builds (anchors
T1), ours passes, and the Q/DQ rules of TensorRT explicit quantization are enforced."""

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from samdeploy.cli.main import main
from samdeploy.trt.preflight import ERROR, WARNING, check_file, check_model, has_errors


def _codes(findings, severity=None):
    return {f.code for f in findings if severity is None or f.severity == severity}


def test_official_decoder_is_flagged(trt_official_decoder):
    f = check_file(str(trt_official_decoder))
    shape = [x for x in f if x.code == "shape-tensor-input"]
    assert [x.where for x in shape] == ["orig_im_size"] and shape[0].severity == ERROR
    assert "INT32" in shape[0].message and "Resize" in shape[0].message
    assert "onehot" in _codes(f, ERROR) and "tile" in _codes(f, WARNING)
    assert all(x.hint for x in f if x.severity == ERROR)
    assert has_errors(f)


def test_our_decoder_passes(trt_our_decoder):
    assert check_file(str(trt_our_decoder)) == []


def test_doctor_cli_exit_codes_and_environment(trt_official_decoder, trt_our_decoder, capsys):
    assert main(["doctor", str(trt_our_decoder)]) == 0
    out = capsys.readouterr().out
    assert "TensorRT            not present" in out and "JetPack             not present" in out
    assert "OK: nothing TensorRT's ONNX parser is known to reject" in out
    assert main(["doctor", str(trt_official_decoder), str(trt_our_decoder)]) == 1
    out = capsys.readouterr().out
    assert "ERROR   shape-tensor-input [orig_im_size]" in out
    assert main(["doctor"]) == 0  # environment only


def _model(nodes, inputs, outputs, inits=(), opset=17):
    g = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def _qdq_conv(op="Conv", axis=0, zp=0, w_shape=(8, 4, 3, 3), scale_const=True):
    rng = np.random.default_rng(0)
    ch = w_shape[axis]
    inits = [numpy_helper.from_array(rng.integers(-127, 127, w_shape).astype(np.int8), "wq"),
             numpy_helper.from_array(np.full(ch, 0.01, np.float32), "ws"),
             numpy_helper.from_array(np.full(ch, zp, np.int8), "wz")]
    n = helper.make_node
    nodes = [n("DequantizeLinear", ["wq", "ws", "wz"], ["wd"], name="dqw", axis=axis), n(op, ["x", "wd"], ["y"], name="op")]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, None)
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    if not scale_const:
        nodes.insert(0, n("Identity", ["s_in"], ["ws2"], name="id"))
        nodes[1].input[1] = "ws2"
        return _model(nodes, [x, helper.make_tensor_value_info("s_in", TensorProto.FLOAT, [ch])], [y], inits)
    return _model(nodes, [x], [y], inits)


@pytest.mark.parametrize("op, axis, w_shape, ok", [
    ("Conv", 0, (8, 4, 3, 3), True), ("Conv", 1, (8, 4, 3, 3), False),
    ("ConvTranspose", 1, (4, 8, 2, 2), True), ("ConvTranspose", 0, (4, 8, 2, 2), False),
    ("MatMul", 1, (16, 32), True), ("MatMul", 0, (16, 32), False),
])
def test_qdq_per_channel_axis(op, axis, w_shape, ok):
    f = check_model(_qdq_conv(op, axis, w_shape=w_shape))
    assert ("qdq-weight-axis" in _codes(f, ERROR)) is (not ok)


def test_qdq_asymmetric_and_runtime_scale():
    assert "qdq-asymmetric" in _codes(check_model(_qdq_conv(zp=3)), ERROR)
    assert "qdq-scale-not-constant" in _codes(check_model(_qdq_conv(scale_const=False)), ERROR)
    assert not has_errors(check_model(_qdq_conv()))


def test_opset_int64_unsupported_and_custom_ops():
    n = helper.make_node
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])
    idx = helper.make_tensor_value_info("idx", TensorProto.INT64, [2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    old = _model([n("Gather", ["x", "idx"], ["y"], name="g")], [x, idx], [y], opset=13)
    f = check_model(old)
    assert "opset-below-17" in _codes(f, WARNING) and "int64-input" in _codes(f, WARNING) and not has_errors(f)
    uniq = _model([n("Unique", ["x"], ["y"], name="u")], [x], [y])
    assert "unsupported-op" in _codes(check_model(uniq), ERROR)
    custom = _model([n("FusedGemm", ["x", "x"], ["y"], name="fg", domain="com.microsoft")], [x], [y])
    assert "custom-domain-op" in _codes(check_model(custom), ERROR)
    new = _model([n("Relu", ["x"], ["y"], name="r")], [x], [y], opset=22)
    assert "opset-too-new" in _codes(check_model(new, (10, 3)), ERROR)
    assert "opset-too-new" not in _codes(check_model(new, (10, 15)))


def test_shape_of_an_input_is_not_a_shape_tensor_input():
    """Reshape(x, Shape(x)) uses x's dims, not its values: no finding."""
    n = helper.make_node
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["a", 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    m = _model([n("Shape", ["x"], ["s"], name="sh"), n("Reshape", ["x", "s"], ["y"], name="rs")], [x], [y])
    assert check_model(m) == []
    v = helper.make_tensor_value_info("v", TensorProto.INT64, [2])
    m2 = _model([n("Reshape", ["x", "v"], ["y"], name="rs")], [x, v], [y])
    assert [f.where for f in check_model(m2) if f.code == "shape-tensor-input"] == ["v"]


def test_cudnn_from_nvidia_pip_wheels_is_found():
    """torch's CUDA wheels bring cuDNN as `nvidia-cudnn-*` under site-packages/nvidia/cudnn/lib,
    off the loader path: doctor must still report it."""
    from samdeploy.trt.environment import _pip_nvidia_libs, cudnn_version

    libs = _pip_nvidia_libs("libcudnn.so*")
    if not libs:
        pytest.skip("no NVIDIA cuDNN pip wheel in this environment (CPU-only torch)")
    assert cudnn_version() is not None


def test_cuda_runtime_without_driver_says_no_gpu_can_run_it():
    from samdeploy.trt.environment import Environment

    assert "no CUDA driver" in "\n".join(Environment(cuda_runtime="13.0").lines())
    assert "no CUDA driver" not in "\n".join(Environment(cuda_runtime="13.0", cuda_driver="13.0").lines())
