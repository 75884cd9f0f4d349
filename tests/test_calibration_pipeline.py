"""`samdeploy calibrate` end to end on the exported MobileSAM (seeded weights, realistic decoder scale):
outputs, contract metadata, scales in the file == calibration.json, per-layer ORT == fake-quant on the
real encoder graph, TensorRT pre-flight, restart from the statistics cache, and the accuracy gate
(failing gate: exit 1 and nothing written; a deliberately bad scale fails it)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from fixtures_calibration import per_layer_agreement

from samdeploy.calibration import qdq
from samdeploy.calibration.evaluate import Evaluator, Gate, ort_session
from samdeploy.calibration.pipeline import CalibrationSettings, calibrate
from samdeploy.calibration.search import LayerScales
from samdeploy.cli.main import main as cli_main
from samdeploy.contract import read_onnx_contract

FAST = ["--method", "minmax", "--num-images", "2", "--tokens-per-image", "32", "--prompts-per-image", "2", "--no-progress"]


@pytest.fixture(scope="module")
def export_dir(exported_model_dir) -> Path:
    return exported_model_dir("mobile_sam")


@pytest.fixture(scope="module")
def cli_run(export_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("calib")
    out, cache = root / "int8", root / "cache"
    code = cli_main(["calibrate", "--model-dir", str(export_dir), "--out", str(out), "--cache-dir", str(cache),
                     "--gate-mean-iou", "0", "--gate-p5-iou", "0", *FAST])
    return code, out, cache


def test_cli_writes_a_complete_int8_model_dir(cli_run, export_dir):
    code, out, _ = cli_run
    assert code == 0
    names = {p.name for p in out.iterdir()}
    assert {"encoder.int8.onnx", "decoder.onnx", "calibration.json", "calibration_report.md", "manifest.json"} <= names
    fp, _ = read_onnx_contract(str(export_dir / "encoder.onnx"))
    q, role = read_onnx_contract(str(out / "encoder.int8.onnx"))
    assert role == "encoder" and q.model_id == fp.model_id  # same model: pairs with the FP32 decoder
    assert q.provenance["precision"] == "int8" and q.provenance["calibration"]["method"] == "minmax"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["precision"] == "int8" and manifest["files"]["encoder"]["path"] == "encoder.int8.onnx"
    from samdeploy.runtime.backends.onnxruntime import find_graphs

    enc, dec = find_graphs(str(out))
    assert Path(enc).name == "encoder.int8.onnx" and Path(dec).name == "decoder.onnx"
    doc = json.loads((out / "calibration.json").read_text())
    assert len(doc["calibration_images"]) == 2 and all(len(i["sha256"]) == 64 for i in doc["calibration_images"])
    assert doc["random_weights"] is True and "random weights" in (out / "calibration_report.md").read_text()


def test_file_scales_equal_calibration_json_bit_for_bit(cli_run):
    _, out, _ = cli_run
    doc = json.loads((out / "calibration.json").read_text())
    model = onnx.load(str(out / "encoder.int8.onnx"))
    info = qdq.inspect_qdq(model)
    assert qdq.zero_point_problems(model) == []
    n = 0
    for name, entry in doc["layers"].items():
        for node in entry["onnx_nodes"]:
            i = info[node]
            assert np.array_equal(i.weight_scale, np.asarray(entry["weight_scale"], np.float32))
            assert i.input_scale == np.float32(entry["input_scale"])
            assert i.q_consumers == [1] and i.weight_int8.min() >= -127
            n += 1
    assert n == len(info) == 69  # every Conv/Linear of TinyViT-5M that runs (the classifier head does not)


def test_int8_encoder_passes_tensorrt_preflight(cli_run):
    from samdeploy.trt.preflight import check_file, has_errors

    _, out, _ = cli_run
    for trt in (None, (10, 15), (11, 0)):  # TRT 10.3 (JetPack 6), 10.15, 11
        findings = check_file(str(out / "encoder.int8.onnx"), trt)
        assert not has_errors(findings), [f.line() for f in findings]


def test_real_encoder_graph_ort_matches_fake_quant_per_layer(cli_run, reference_model, photos):
    from samdeploy.calibration import layers as L
    from samdeploy.contract import Preprocess
    from samdeploy.runtime.transforms import preprocess_image

    _, out, _ = cli_run
    doc = json.loads((out / "calibration.json").read_text())
    model = L.prepare_model(reference_model("mobile_sam"))
    layers = [l for l in L.find_layers(model, ("encoder",)) if l.name in doc["layers"]]
    scales = {n: LayerScales(n, np.asarray(e["weight_scale"], np.float32), np.float32(e["input_scale"])) for n, e in doc["layers"].items()}
    node_map = {n: e["onnx_nodes"] for n, e in doc["layers"].items()}
    x, _ = preprocess_image(photos["rocket"], Preprocess())
    errs = per_layer_agreement(onnx.load(str(out / "encoder.int8.onnx")), node_map, layers, scales, {"image": x})
    assert len(errs) == 69
    assert max(errs.values()) <= 1e-3, max(errs.items(), key=lambda kv: kv[1])


def test_restart_reuses_cached_statistics(cli_run, export_dir, tmp_path):
    _, out, cache = cli_run
    logs: list[str] = []
    s = CalibrationSettings(method="minmax", num_images=2, tokens_per_image=32, prompts_per_image=2, gate=Gate(0, 0),
                            eval_grid=2, eval_boxes=1)
    r = calibrate(export_dir, None, s, cache_dir=cache, progress=False, log=logs.append)
    assert any("2 of 2 images reused" in line for line in logs), logs
    first = json.loads((out / "calibration.json").read_text())["layers"]
    for name, sc in r.methods["minmax"].scales.items():
        assert np.array_equal(np.asarray(first[name]["weight_scale"], np.float32), sc.weight)
        assert np.float32(first[name]["input_scale"]) == np.float32(sc.act)


def test_failing_gate_exits_1_and_writes_nothing(cli_run, export_dir, tmp_path, capsys):
    out = tmp_path / "int8"
    code = cli_main(["calibrate", "--model-dir", str(export_dir), "--out", str(out), "--cache-dir", str(cli_run[2]),
                     "--gate-mean-iou", "1.0", "--gate-p5-iou", "1.0", *FAST])
    assert code == 1
    assert not out.exists()
    err = capsys.readouterr().err
    assert "gate failed" in err and "nothing was written" in err


def test_deliberately_bad_scale_fails_the_gate(cli_run, export_dir, photos):
    from samdeploy.images import held_out_photographs

    _, out, _ = cli_run
    doc = json.loads((out / "calibration.json").read_text())
    fp = onnx.load(str(export_dir / "encoder.onnx"))
    good = {n: LayerScales(k, np.asarray(e["weight_scale"], np.float32), np.float32(e["input_scale"]))
            for k, e in doc["layers"].items() for n in e["onnx_nodes"]}
    target = doc["layers"]["image_encoder.layers.2.blocks.3.mlp.fc1"]["onnx_nodes"][0]
    bad = dict(good)
    bad[target] = LayerScales("bad", good[target].weight, np.float32(good[target].act / 50))  # clips 98% of the range
    ev = Evaluator(ort_session(str(export_dir / "encoder.onnx")), ort_session(str(export_dir / "decoder.onnx")),
                   dict(list(held_out_photographs().items())[:1]), read_onnx_contract(str(export_dir / "encoder.onnx"))[0], grid=3, boxes=2)
    r_good = ev.evaluate(ort_session(qdq.quantize_model(fp, good)))
    r_bad = ev.evaluate(ort_session(qdq.quantize_model(fp, bad)))
    gate = Gate(mean_iou=r_good.mean_iou - 0.02, p5_iou=0.0)
    assert gate.check(r_good) == []
    assert gate.check(r_bad), (r_good.line(), r_bad.line())
    assert r_bad.emb_cosine_mean < r_good.emb_cosine_mean


def test_ort_cpu_target_quantizes_linear_layers_and_compute_bound_convs(cli_run, export_dir, tmp_path):
    """--target ort-cpu: every Linear layer, plus the Convs above the compute-bound threshold with their
    outputs quantized; opened like the runtime opens it, ORT runs them as MatMulIntegerToFloat (bias
    folded) and QLinearConv."""
    from fixtures_calibration import ort_optimized_ops

    from samdeploy.calibration import layers as L
    from samdeploy.calibration.pipeline import ORT_CPU_CONV_MIN_MACS_PER_ACTIVATION
    from samdeploy.runtime.backends.ort_lowering import lower_file_for_cpu

    from samdeploy.models.build import random_model

    s = CalibrationSettings(method="minmax", num_images=2, tokens_per_image=32, prompts_per_image=2, gate=Gate(0, 0),
                            eval_grid=2, eval_boxes=1, target="ort-cpu")
    out = tmp_path / "int8-ort"
    r = calibrate(export_dir, out, s, cache_dir=cli_run[2], progress=False)
    doc = json.loads((out / "calibration.json").read_text())
    layers = {l.name: l for l in L.find_layers(L.prepare_model(random_model("mobile_sam", 0)), ("encoder",))}
    ran = set(doc["layers"])  # every encoder layer that ran (TinyViT's classifier head does not)
    heavy = {n for n in ran if layers[n].kind == "conv" and layers[n].macs_per_activation >= ORT_CPU_CONV_MIN_MACS_PER_ACTIVATION}
    linear = {n for n in ran if layers[n].kind == "linear"}
    assert heavy == {"image_encoder.neck.2"}  # 3x3 256->256; the stride-2 patch-embedding conv is below it
    assert len(linear) == 40 and set(r.layers) == linear | heavy
    model = onnx.load(str(out / "encoder.int8.onnx"))
    info = qdq.inspect_qdq(model)
    neck = doc["layers"]["image_encoder.neck.2"]
    assert info[neck["onnx_nodes"][0]].output_scale == np.float32(neck["output_scale"])
    assert all(info[doc["layers"][n]["onnx_nodes"][0]].output_scale is None for n in linear)
    assert qdq.zero_point_problems(model) == []  # the file itself stays portable symmetric int8 QDQ
    lowered, report = lower_file_for_cpu(str(out / "encoder.int8.onnx"))
    assert report.lowered == report.with_bias == len(linear)
    ops = ort_optimized_ops(onnx.load_from_string(lowered))
    assert ops.count("MatMulIntegerToFloat") == len(linear) and ops.count("QLinearConv") == 1
    assert "Gemm" not in ops
