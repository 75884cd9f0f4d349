"""INT8 calibration of encoders with several outputs (issue 10): SAM2.1 Hiera-T (image_embeddings,
high_res_feats_0, high_res_feats_1) and HQ-SAM light (image_embeddings, hq_features), seeded
random weights with the realistic decoder scale.

Small settings (1 calibration photograph, 2 prompts, 32 sampled positions, 12 candidates x 2 rounds;
one held-out photograph with 3x3 clicks + 2 boxes) so the file stays near two minutes on 2 cores. The
gate is on but set to mean 0.93 / p5 0.80: one calibration image leaves the random Hiera-T at ~0.96 mean,
under the default 0.97 (the default settings' figures: scripts/bench_int8_sam2.py). What is checked:
the pipeline writes a complete INT8 directory whose encoder runs in plain ONNX Runtime with all outputs, every
Hiera Linear/Conv (plus SAM2's conv_s0/conv_s1, decoder modules that run in the encoder graph) carries
Q/DQ and nothing else does, the file passes the TensorRT pre-flight, the gate report names every encoder
output with its gradient share and cosine and the gate figures; --target ort-cpu runs the Linear layers
as MatMulIntegerToFloat; a deliberately broken quantization fails the DEFAULT gate (GateFailedError,
nothing written); HQ-SAM through the same code path. Gate figures at the default settings:
scripts/bench_int8_sam2.py."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import onnx
import pytest

from samdeploy.calibration import qdq
from samdeploy.calibration.evaluate import Evaluator, Gate, ort_session
from samdeploy.calibration.pipeline import CalibrationSettings, calibrate
from samdeploy.calibration.search import LayerScales
from samdeploy.contract import ENCODER_INPUT, HQ_FEATURES, SAM2_ENCODER_OUTPUTS, ENCODER_OUTPUT, read_onnx_contract
from samdeploy.errors import GateFailedError

CALIB, HELD_OUT = "astronaut", "camera"  # camera is one of the bundled held-out photographs
TEST_GATE = Gate(mean_iou=0.93, p5_iou=0.80)


def _fast(**kw) -> CalibrationSettings:
    base = dict(num_images=1, tokens_per_image=32, prompts_per_image=2, candidates=12, rounds=2, eval_grid=3,
                eval_boxes=2, threads=2, gate=TEST_GATE)
    return CalibrationSettings(**{**base, **kw})


def _photos():
    from samdeploy.images import default_photographs

    return default_photographs((CALIB,))


def _held_out():
    from samdeploy.images import held_out_photographs

    return held_out_photographs()


def node_output(model, name: str) -> str:
    return next(n.output[0] for n in model.graph.node if n.name == name)


def _images(photos, name):
    return {name: photos[name]}


@pytest.fixture(scope="module")
def sam2_dir(exported_model_dir) -> Path:
    return exported_model_dir("sam2.1_hiera_t", seed=5)  # the session export test_family_sam2_amg and test_trt_sam2 use too


@pytest.fixture(scope="module")
def sam2_run(sam2_dir, tmp_path_factory):
    """The calibrate pipeline (Hessian search, TensorRT placement, gate on) on Hiera-T."""
    root = tmp_path_factory.mktemp("calib_sam2")
    out, cache = root / "int8", root / "cache"
    result = calibrate(sam2_dir, out, _fast(), images=_images(_photos(), CALIB), eval_images=_images(_held_out(), HELD_OUT),
                       cache_dir=cache, progress=False)
    return result, out, cache


def test_sam2_calibrate_writes_int8_encoder_that_runs_in_ort(sam2_run, sam2_dir):
    result, out, _ = sam2_run
    assert not result.gate_problems and [f.name for f in result.files if f.suffix == ".onnx"]
    assert {"encoder.int8.onnx", "decoder.onnx", "calibration.json", "calibration_report.md", "manifest.json"} <= {
        p.name for p in out.iterdir()}
    fp, _ = read_onnx_contract(str(sam2_dir / "encoder.onnx"))
    q, role = read_onnx_contract(str(out / "encoder.int8.onnx"))
    assert role == "encoder" and q.model_id == fp.model_id
    assert q.provenance["calibration"]["precision"] == {"encoder": "int8", "decoder": "fp32"}
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["files"]["decoder"]["precision"] == "fp32" and manifest["files"]["encoder"]["precision"] == "int8"
    assert manifest["calibration"]["precision"] == {"encoder": "int8", "decoder": "fp32"}

    import onnxruntime as ort

    from samdeploy.runtime.transforms import preprocess_image
    from samdeploy.images import held_out_photographs

    x, _ = preprocess_image(held_out_photographs()[HELD_OUT], fp.preprocess)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    so.log_severity_level = 3
    plain = ort.InferenceSession(str(out / "encoder.int8.onnx"), so, providers=["CPUExecutionProvider"])  # no lowering
    assert tuple(o.name for o in plain.get_outputs()) == SAM2_ENCODER_OUTPUTS
    got = dict(zip(SAM2_ENCODER_OUTPUTS, plain.run(list(SAM2_ENCODER_OUTPUTS), {ENCODER_INPUT: x})))
    ref = dict(zip(SAM2_ENCODER_OUTPUTS, ort_session(str(sam2_dir / "encoder.onnx"), 2).run(list(SAM2_ENCODER_OUTPUTS), {ENCODER_INPUT: x})))
    for spec in fp.encoder.outputs:
        a, b = got[spec.name], ref[spec.name]
        assert a.shape == (1, *spec.shape) and np.isfinite(a).all()
        cos = float((a * b).sum() / np.linalg.norm(a) / np.linalg.norm(b))
        assert cos > 0.99, (spec.name, cos)

    from samdeploy.runtime import Predictor  # the INT8 directory is a complete model for the runtime

    p = Predictor(str(out), threads=2)
    try:
        img = held_out_photographs()[HELD_OUT]
        p.set_image(img)
        masks, scores, _ = p.predict(np.array([[img.shape[1] / 2, img.shape[0] / 2]], np.float32), np.array([1.0], np.float32))
        assert masks.shape[1:] == img.shape[:2] and np.isfinite(scores).all()
    finally:
        p.close()


def test_sam2_qdq_placement_follows_the_hiera_rules(sam2_run):
    """Every Linear (qkv, proj, MLP, stage-transition proj) and Conv (patch embed, FPN neck, conv_s0/s1)
    has a dedicated input Q/DQ and int8 per-channel weights with zero point 0; LayerNorm, Softmax, the
    q-pooling MaxPool and the attention MatMuls (activation x activation) stay float."""
    _, out, _ = sam2_run
    doc = json.loads((out / "calibration.json").read_text())
    model = onnx.load(str(out / "encoder.int8.onnx"))
    info = qdq.inspect_qdq(model)
    assert qdq.zero_point_problems(model) == []
    layers = doc["layers"]
    assert len(layers) == len(info) == 58  # 51 Linear + 7 Conv
    assert {layers[n]["graph"] for n in layers} == {"encoder"}
    assert layers["sam_mask_decoder.conv_s0"]["kind"] == "conv" and layers["sam_mask_decoder.conv_s1"]["onnx_nodes"]
    for name, e in layers.items():
        for node in e["onnx_nodes"]:
            i = info[node]
            assert np.array_equal(i.weight_scale, np.asarray(e["weight_scale"], np.float32))
            assert i.input_scale == np.float32(e["input_scale"]) and i.q_consumers[0] == 1  # dedicated input Q
            assert i.weight_int8.min() >= -127 and "output_scale" not in e  # TensorRT placement: inputs only
            if i.output_scale is not None:  # only where the next op is a quantized layer (neck convs.2 -> conv_s1)
                q = next(c for c in model.graph.node if node_output(model, node) in c.input)
                assert q.op_type == "QuantizeLinear" and q.name.endswith("/input_Q"), q.name
    producer = {o: n for n in model.graph.node for o in n.output}
    for n in model.graph.node:
        if n.op_type in ("LayerNormalization", "Softmax", "MaxPool", "Erf"):
            assert all(producer.get(i) is None or producer[i].op_type != "DequantizeLinear" for i in n.input), n.name
        if n.op_type == "MatMul" and n.name not in info:  # attention BMMs / constant positional-embedding product
            assert all(producer.get(i) is None or producer[i].op_type != "DequantizeLinear" for i in n.input), n.name

    from samdeploy.trt.preflight import check_file, has_errors

    for trt in (None, (10, 15), (11, 0)):
        findings = check_file(str(out / "encoder.int8.onnx"), trt)
        assert not has_errors(findings), [f.line() for f in findings]


def test_sam2_gate_report_names_every_output_and_the_figures(sam2_run):
    _, out, _ = sam2_run
    doc = json.loads((out / "calibration.json").read_text())
    report = (out / "calibration_report.md").read_text()
    m = doc["final_metrics"]
    gate = TEST_GATE
    assert doc["gate"] == {"mean_iou": gate.mean_iou, "p5_iou": gate.p5_iou}
    assert m["mean_iou"] >= gate.mean_iou and m["p5_iou"] >= gate.p5_iou, m
    assert f"{m['mean_iou']:.4f}" in report and f"{m['p5_iou']:.4f}" in report and "**PASSED**" in report
    assert set(m["output_cosine"]) == set(SAM2_ENCODER_OUTPUTS)
    outs = {o["name"]: o for o in doc["encoder_outputs"]}
    assert list(outs) == list(SAM2_ENCODER_OUTPUTS)
    assert all(o["consumed_by_decoder"] and o["grad_rms"] > 0 for o in outs.values())
    assert sum(o["grad_sq_share"] for o in outs.values()) == pytest.approx(1.0)
    for name in SAM2_ENCODER_OUTPUTS:
        assert f"`{name}`" in report
    assert "decoder **FP32**" in report and doc["quantization"]["precision"]["decoder"] == "fp32"
    assert "object_score_logits" in report  # SAM2's extra decoder output is reported (not gated)


def test_sam2_ort_cpu_target_runs_linear_layers_in_int8(sam2_dir, sam2_run, tmp_path):
    from fixtures_calibration import ort_optimized_ops

    from samdeploy.runtime.backends.ort_lowering import lower_file_for_cpu

    out = tmp_path / "int8-ort"
    r = calibrate(sam2_dir, out, _fast(target="ort-cpu"), images=_images(_photos(), CALIB),
                  eval_images=_images(_held_out(), HELD_OUT), cache_dir=sam2_run[2], progress=False)
    assert not r.gate_problems and set(r.metrics.output_cosine) == set(SAM2_ENCODER_OUTPUTS)
    assert r.methods["hessian"].cached_layers == 51  # statistics and Linear-layer scales reused from the first run
    doc = json.loads((out / "calibration.json").read_text())
    linear = [n for n, e in doc["layers"].items() if e["kind"] == "linear"]
    assert len(linear) == 51 and set(r.layers) == set(linear)  # Hiera's 1x1 neck convs are below the MAC threshold
    lowered, report = lower_file_for_cpu(str(out / "encoder.int8.onnx"))
    assert report.lowered == report.with_bias == 51
    ops = ort_optimized_ops(onnx.load_from_string(lowered))
    assert ops.count("MatMulIntegerToFloat") == 51 and "Gemm" not in ops


def test_sam2_broken_quantization_fails_the_default_gate(sam2_dir, sam2_run, tmp_path, monkeypatch):
    """The same run with absurd activation scales written into the QDQ graph (1/1000 of the searched
    ones: nearly every activation clips): the gate fails with the DEFAULT thresholds, nothing is written."""
    from samdeploy.calibration import qdq as qdq_mod

    real = qdq_mod.quantize_model

    def absurd(model, node_scales, prune=True):
        bad = {n: LayerScales(sc.name, sc.weight, np.float32(sc.act / 1000), sc.out, "absurd") for n, sc in node_scales.items()}
        return real(model, bad, prune)

    monkeypatch.setattr(qdq_mod, "quantize_model", absurd)
    out = tmp_path / "int8"
    with pytest.raises(GateFailedError) as exc:
        calibrate(sam2_dir, out, _fast(gate=Gate()), images=_images(_photos(), CALIB),
                  eval_images=_images(_held_out(), HELD_OUT), cache_dir=sam2_run[2], progress=False)
    msg = str(exc.value)
    assert "gate failed" in msg and "nothing was written" in msg and f"< {Gate().mean_iou}" in msg
    assert not out.exists()


# ---- HQ-SAM (two encoder outputs) ------------------------------------------------------------------------
def test_hq_sam_tiny_calibrates_and_the_gate_can_fail(exported_model_dir, tmp_path):
    d = exported_model_dir("hq_vit_tiny")
    out = tmp_path / "int8"
    gate = Gate(mean_iou=0.85, p5_iou=0.6)  # random TinyViT at 1 image / 12x2 candidates: ~0.95 mean
    r = calibrate(d, out, _fast(gate=gate), images=_images(_photos(), CALIB), eval_images=_images(_held_out(), HELD_OUT),
                  cache_dir=tmp_path / "cache", progress=False)
    names = (ENCODER_OUTPUT, HQ_FEATURES)
    assert set(r.metrics.output_cosine) == set(names) and not r.gate_problems
    doc = json.loads((out / "calibration.json").read_text())
    assert [o["name"] for o in doc["encoder_outputs"]] == list(names)
    assert all(o["grad_sq_share"] > 0.05 for o in doc["encoder_outputs"])  # both features carry task-loss gradient
    report = (out / "calibration_report.md").read_text()
    assert all(f"`{n}`" in report for n in names) and f"{r.metrics.mean_iou:.4f}" in report
    # every Conv/Linear of TinyViT-5M that runs (69) + the 4 ConvTranspose of F_hq, which the encoder graph
    # computes; the HQ decoder stays FP32
    assert len(doc["layers"]) == 73
    assert sum(k.startswith("mask_decoder.") for k in doc["layers"]) == 4

    contract = read_onnx_contract(str(d / "encoder.onnx"))[0]
    ev = Evaluator(ort_session(str(d / "encoder.onnx"), 2), ort_session(str(d / "decoder.onnx"), 2),
                   _images(_held_out(), HELD_OUT), contract, grid=3, boxes=2)
    fp = onnx.load(str(d / "encoder.onnx"))
    bad = {n: LayerScales(k, np.asarray(e["weight_scale"], np.float32) * 300, np.float32(e["input_scale"]))
           for k, e in doc["layers"].items() for n in e["onnx_nodes"]}  # weights rounded to a few levels
    r_bad = ev.evaluate(ort_session(qdq.quantize_model(fp, bad), 2))
    assert Gate().check(r_bad) and gate.check(r_bad), r_bad.line()
    assert set(r_bad.output_cosine) == set(names)


# ---- opt-in: the default settings (minutes; not in the default suite) ---------------------------------
SLOW = os.environ.get("SAMDEPLOY_SLOW_CALIBRATION") == "1"


@pytest.mark.slow
@pytest.mark.skipif(not SLOW, reason="calibrates Hiera-T at the default settings (10-25 min on 2 shared cores); "
                    "run with SAMDEPLOY_SLOW_CALIBRATION=1")
@pytest.mark.parametrize("target", ["tensorrt", "ort-cpu"])
def test_sam2_default_settings_pass_the_default_gate(sam2_dir, tmp_path_factory, target):
    cache = tmp_path_factory.getbasetemp() / "calib_sam2_default_cache"  # shared by both targets
    r = calibrate(sam2_dir, None, CalibrationSettings(target=target, threads=2), cache_dir=cache, progress=False)
    assert not r.gate_problems, r.metrics.line()
    assert set(r.metrics.output_cosine) == set(SAM2_ENCODER_OUTPUTS)
