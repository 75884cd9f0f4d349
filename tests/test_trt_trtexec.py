"""Build planning without TensorRT: code path per TensorRT major, FP32 layers, trtexec command line."""

import shlex

import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
import numpy as np

from samdeploy.contract import DECODER_POINT_COORDS, ENCODER_OUTPUT, ModelContract, metadata_props
from samdeploy.errors import BackendUnavailableError, InputError
from samdeploy.trt.build import BuildOptions, find_onnx_graphs, plan_build, write_parse_onnx
from samdeploy.trt.profiles import decoder_ranges, make_profile
from samdeploy.trt.trtexec import TrtexecPlan, trtexec_args


def _flags(cmd: str) -> dict:
    out = {}
    for a in shlex.split(cmd)[1:]:
        k, _, v = a.partition("=")
        out[k] = v
    return out


def test_trtexec_trt10_weak_fp16():
    C = ModelContract(family="sam", variant="vit_b", weights_sha256="x")
    prof = make_profile(C, "decoder", decoder_ranges(max_prompts=4, max_points=5), None)
    args = trtexec_args(TrtexecPlan("d.onnx", "d.engine", prof, 10, "fp16", False, workspace_mb=1024,
                                    timing_cache="t.cache", fp32_layers=["/a/LayerNorm", "/b/Softmax"], dla_core=0))
    assert args[0] == "trtexec"
    assert "--fp16" in args and "--stronglyTyped" not in args and "--int8" not in args
    assert "--maxShapes=image_embeddings:1x256x64x64,point_coords:4x5x2,point_labels:4x5,mask_input:4x1x256x256,has_mask_input:4" in args
    assert "--minShapes=image_embeddings:1x256x64x64,point_coords:1x1x2,point_labels:1x1,mask_input:1x1x256x256,has_mask_input:1" in args
    assert "--memPoolSize=workspace:1024M" in args and "--timingCacheFile=t.cache" in args
    assert "--precisionConstraints=obey" in args
    assert "--layerPrecisions=/a/LayerNorm:fp32,/b/Softmax:fp32" in args
    assert "--layerOutputTypes=/a/LayerNorm:fp32,/b/Softmax:fp32" in args
    assert "--useDLACore=0" in args and "--allowGPUFallback" in args


def test_trtexec_refuses_weak_typing_on_trt11():
    C = ModelContract(family="sam", variant="vit_b", weights_sha256="x")
    prof = make_profile(C, "decoder", decoder_ranges(), None)
    with pytest.raises(ValueError):
        trtexec_args(TrtexecPlan("d.onnx", "d.engine", prof, 11, "fp16", False))


@pytest.mark.parametrize("major", [10, 11])
def test_plan_build_for_our_decoder(trt_our_decoder, tmp_path, major):
    plan = plan_build(str(trt_our_decoder), str(tmp_path), BuildOptions(precision="fp16", max_prompts=8), major)
    flags = _flags(plan.trtexec)
    assert plan.role == "decoder" and plan.engine_path == str(tmp_path / "decoder.engine")
    assert flags["--maxShapes"].split(",")[1] == "point_coords:8x8x2"
    m = onnx.load(str(trt_our_decoder), load_external_data=False)
    ln = [n.name for n in m.graph.node if n.op_type in ("LayerNormalization", "Softmax")]
    assert ln and set(ln) <= set(plan.fp32_layers)
    if major == 10:
        assert plan.build_path == "trt10-weak" and not plan.strongly_typed
        assert "--fp16" in flags and "--stronglyTyped" not in flags
        assert flags["--onnx"] == str(trt_our_decoder)
        assert set(flags["--layerPrecisions"].split(",")) == {f"{n}:fp32" for n in plan.fp32_layers}
    else:
        assert plan.build_path == "trt11-strong" and plan.strongly_typed
        assert "--fp16" not in flags and "--layerPrecisions" not in flags and "--stronglyTyped" in flags
        assert flags["--onnx"] == str(tmp_path / "decoder.fp16.mixed.onnx")
        assert write_parse_onnx(plan) == plan.parse_onnx
        mixed = onnx.load(plan.parse_onnx)
        assert {i.name: i.type.tensor_type.elem_type for i in mixed.graph.input}[DECODER_POINT_COORDS] == TensorProto.FLOAT
        assert any(i.data_type == TensorProto.FLOAT16 for i in mixed.graph.initializer)
        # the contract travels with the rewritten graph
        assert any(p.key == "samdeploy.contract" for p in mixed.metadata_props)


def test_fp32_plan_keeps_nothing(trt_our_decoder, tmp_path):
    plan = plan_build(str(trt_our_decoder), str(tmp_path), BuildOptions(precision="fp32"), 11)
    assert plan.fp32_layers == [] and not plan.needs_mixed_precision_onnx and "--fp16" not in plan.trtexec
    plan10 = plan_build(str(trt_our_decoder), str(tmp_path), BuildOptions(precision="fp32"), 10)
    assert "--fp16" not in plan10.trtexec and "--layerPrecisions" not in plan10.trtexec


def test_int8_without_qdq_builds_fp16_with_a_note(trt_our_decoder, tmp_path):
    plan = plan_build(str(trt_our_decoder), str(tmp_path), BuildOptions(precision="int8"), 10)
    assert plan.precision == "fp16" and "--int8" not in plan.trtexec and any("Q/DQ" in n for n in plan.notes)


def _qdq_decoder_like(path, contract):
    """A contract-carrying graph with one Q/DQ pair (for the precision/QDQ checks)."""
    x = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["B", 3, 1024, 1024])
    y = helper.make_tensor_value_info(ENCODER_OUTPUT, TensorProto.FLOAT, ["B", 3, 1024, 1024])
    s = numpy_helper.from_array(np.array(0.1, np.float32), "s")
    z = numpy_helper.from_array(np.array(0, np.int8), "z")
    nodes = [helper.make_node("QuantizeLinear", ["image", "s", "z"], ["q"], name="q"),
             helper.make_node("DequantizeLinear", ["q", "s", "z"], [ENCODER_OUTPUT], name="dq")]
    g = helper.make_graph(nodes, "g", [x], [y], [s, z])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    for k, v in metadata_props(contract, "encoder").items():
        m.metadata_props.add(key=k, value=v)
    onnx.save(m, str(path))


def test_qdq_file_needs_int8_and_int8_uses_it(tmp_path):
    c = ModelContract(family="sam", variant="vit_b", weights_sha256="x")
    _qdq_decoder_like(tmp_path / "encoder.int8.onnx", c)
    with pytest.raises(InputError, match="int8"):
        plan_build(str(tmp_path / "encoder.int8.onnx"), str(tmp_path), BuildOptions(precision="fp16"), 10)
    p10 = plan_build(str(tmp_path / "encoder.int8.onnx"), str(tmp_path), BuildOptions(precision="int8"), 10)
    assert p10.precision == "int8" and "--int8" in p10.trtexec and "--fp16" in p10.trtexec
    p11 = plan_build(str(tmp_path / "encoder.int8.onnx"), str(tmp_path), BuildOptions(precision="int8"), 11)
    assert "--int8" not in p11.trtexec and p11.needs_mixed_precision_onnx
    # directory discovery prefers the QDQ file for int8
    assert find_onnx_graphs([str(tmp_path)], "int8")["encoder"].endswith("encoder.int8.onnx")


def test_unsupported_trt_major_and_bad_options(trt_our_decoder, tmp_path):
    with pytest.raises(BackendUnavailableError):
        plan_build(str(trt_our_decoder), str(tmp_path), BuildOptions(), 8)
    with pytest.raises(InputError):
        plan_build(str(trt_our_decoder), str(tmp_path), BuildOptions(precision="bf16"), 10)
    with pytest.raises(InputError, match="keep-fp32"):
        plan_build(str(trt_our_decoder), str(tmp_path), BuildOptions(keep_fp32=("/no/such/node",)), 10)


def test_cli_build_dry_run_and_clean_failure(trt_our_decoder, tmp_path, capsys):
    from samdeploy.cli.main import main

    rc = main(["build", str(trt_our_decoder.parent), "--graphs", "decoder", "--dry-run", "--trt-major", "10",
               "--out", str(tmp_path), "--max-prompts", "4"])
    out = capsys.readouterr().out
    assert rc == 0 and "trtexec --onnx=" in out and "point_coords:4x8x2" in out
    rc = main(["build", str(trt_our_decoder.parent), "--graphs", "decoder", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 2 and "TensorRT is not usable here" in err and "--dry-run" in err
