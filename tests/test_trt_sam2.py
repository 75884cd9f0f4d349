"""TensorRT readiness of the SAM 2.1 graphs (issue 10), all without a GPU or TensorRT.

On one seeded SAM2.1 Hiera-T export (three encoder outputs, decoder with ``object_score_logits``):

1. ``samdeploy doctor`` finds nothing the parser rejects in either graph, and WARNS (exit 0) that
   TensorRT < 10.9 is reported to miscompile the SAM2 mask decoder -- decided from the contract (not
   the file name), with the threshold in one place (``trt.known_issues.SAM2_DECODER_FIXED_IN``);
   ``samdeploy build`` prints the same warning and the engine manifest records it;
2. the FP16 plan keeps every LayerNorm (ONNX and decomposed LayerNorm2d), Softmax and the Fourier
   prompt features in FP32 on both TensorRT paths: TRT 10 weak typing (layer constraints, here
   driven through a FAKE TensorRT module that only exercises our Python flow, never TensorRT) and
   TRT 11 strong typing (the written mixed-precision ONNX carries the casts; run in ONNX Runtime);
3. ``jetson/verify.py`` compares the three encoder outputs and ``object_score_logits`` and fails on a
   decoder whose k/v projections compute wrong values (the reported miscompile, simulated in ONNX).
"""

from __future__ import annotations

import importlib.util
import json
import shlex
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, numpy_helper

from fixtures_trt import fake_trt
from samdeploy import contract as C
from samdeploy.cli.main import main as cli
from samdeploy.trt import known_issues as KI
from samdeploy.trt.build import BuildOptions, build_engine, kept_layer, plan_build, write_parse_onnx
from samdeploy.trt.environment import Environment
from samdeploy.trt.manifest import EngineManifest, read_manifest
from samdeploy.trt.mixed_precision import decomposed_layernorm_nodes
from samdeploy.trt.preflight import WARNING, check_file

ROOT = Path(__file__).resolve().parents[1]
VARIANT = "sam2.1_hiera_t"
CODE = "trt-sam2-decoder-miscompile"


@pytest.fixture(scope="module")
def sam2_dir(exported_model_dir) -> Path:
    return exported_model_dir(VARIANT, seed=5)  # one Hiera-T export per session (test_family_sam2_amg, calibration)


def _verify_module():
    spec = importlib.util.spec_from_file_location("jetson_verify_sam2", ROOT / "jetson" / "verify.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _ort(model_or_path, threads: int = 2):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.log_severity_level = 3
    src = model_or_path.SerializeToString() if isinstance(model_or_path, onnx.ModelProto) else str(model_or_path)
    return ort.InferenceSession(src, so, providers=["CPUExecutionProvider"])


# ---- 1. doctor / build / manifest ---------------------------------------------------------------------
def test_sam2_graphs_are_what_the_contract_says(sam2_dir):
    enc, _ = C.read_onnx_contract(str(sam2_dir / "encoder.onnx"))
    assert enc.family == "sam2" and enc.encoder.output_names == C.SAM2_ENCODER_OUTPUTS
    assert enc.decoder.extra_outputs == (C.SAM2_OBJECT_SCORE,)
    assert [o.name for o in onnx.load(str(sam2_dir / "encoder.onnx"), load_external_data=False).graph.output] == list(
        C.SAM2_ENCODER_OUTPUTS)


def test_doctor_passes_both_sam2_graphs_and_warns_on_the_decoder(sam2_dir, capsys):
    assert check_file(str(sam2_dir / "encoder.onnx")) == []
    found = check_file(str(sam2_dir / "decoder.onnx"))  # default target: TensorRT 10.3 (JetPack 6)
    assert [(f.severity, f.code) for f in found] == [(WARNING, CODE)]
    msg, fix = found[0].message, found[0].hint
    assert "10.9" in msg and "k/v projection MatMul" in msg and "cosine 0.62" in msg and "10.3" in msg
    assert "TensorRT >= 10.9" in fix and "ONNX Runtime" in fix and "--graphs encoder" in fix and "jetson/verify.py" in fix
    for fixed in ((10, 9), (10, 16), (11, 0)):
        assert check_file(str(sam2_dir / "decoder.onnx"), fixed) == []
    assert [f.code for f in check_file(str(sam2_dir / "decoder.onnx"), (10, 8))] == [CODE]

    assert cli(["doctor", str(sam2_dir)]) == 0  # a warning, not an error
    out = capsys.readouterr().out
    assert "decoder.onnx: 0 error(s), 1 warning(s)" in out and f"WARNING {CODE} [decoder]" in out
    assert "encoder.onnx: 0 error(s), 0 warning(s)" in out
    assert cli(["doctor", "--trt-version", "10.9", str(sam2_dir)]) == 0
    out = capsys.readouterr().out
    assert CODE not in out and out.count("OK: nothing TensorRT's ONNX parser is known to reject") == 2


def test_the_decision_comes_from_the_contract_not_the_file_name(sam2_dir, trt_our_decoder, tmp_path):
    disguised = tmp_path / "mobile_sam_decoder.onnx"
    shutil.copy(sam2_dir / "decoder.onnx", disguised)
    assert [f.code for f in check_file(str(disguised))] == [CODE]
    named_sam2 = tmp_path / "sam2.1_hiera_tiny_decoder.onnx"
    shutil.copy(trt_our_decoder, named_sam2)  # a MobileSAM decoder under a SAM2 name
    assert check_file(str(named_sam2)) == []
    # family, or the SAM2 decoder's object-score output (families derived from SAM 2 carry it)
    derived = C.ModelContract(family="some_sam2_derivative", variant="x", weights_sha256="random",
                              decoder=C.Decoder(extra_outputs=(C.SAM2_OBJECT_SCORE,)))
    assert KI.is_sam2_family_decoder(derived)
    assert not KI.is_sam2_family_decoder(C.ModelContract(family="mobile_sam", variant="mobile_sam", weights_sha256="r"))
    assert KI.known_issues(derived, "encoder", (10, 3)) == []


def test_the_threshold_lives_in_one_place(sam2_dir, monkeypatch):
    contract, _ = C.read_onnx_contract(str(sam2_dir / "decoder.onnx"))
    assert KI.SAM2_DECODER_FIXED_IN == (10, 9)
    assert [i.code for i in KI.known_issues(contract, "decoder", (10, 8))] == [CODE]
    assert KI.known_issues(contract, "decoder", (10, 9)) == []
    monkeypatch.setattr(KI, "SAM2_DECODER_FIXED_IN", (10, 12))
    issues = KI.known_issues(contract, "decoder", (10, 10))
    assert [i.fixed_in for i in issues] == ["10.12"] and "10.12" in issues[0].message and "10.12" in issues[0].remedy
    assert [f.code for f in check_file(str(sam2_dir / "decoder.onnx"), (10, 11))] == [CODE]
    # version parsing / partial targets
    assert KI.parse_trt_version("10.3.0.30") == (10, 3) and KI.parse_trt_version("10") == (10,)
    assert KI.parse_trt_version(None) is None and KI.parse_trt_version("dev") is None
    monkeypatch.setattr(KI, "SAM2_DECODER_FIXED_IN", (10, 9))
    assert [i.target for i in KI.known_issues(contract, "decoder", (10,))] == ["10.x"]  # minor unknown: warn
    assert KI.known_issues(contract, "decoder", (11,)) == []
    assert "assumed 10.3" in KI.known_issues(contract, "decoder", None)[0].target


def test_build_plan_and_cli_warn_for_the_sam2_decoder(sam2_dir, tmp_path, capsys):
    dec, enc = str(sam2_dir / "decoder.onnx"), str(sam2_dir / "encoder.onnx")
    opts = BuildOptions(precision="fp16")
    p = plan_build(dec, str(tmp_path), opts, 10, (10, 3))
    assert [i["code"] for i in p.known_issues] == [CODE] and p.known_issues[0]["target"] == "10.3"
    assert plan_build(dec, str(tmp_path), opts, 10).known_issues[0]["target"] == "10.x"
    assert plan_build(dec, str(tmp_path), opts, 10, (10, 9)).known_issues == []
    assert plan_build(dec, str(tmp_path), opts, 11).known_issues == []
    assert plan_build(enc, str(tmp_path), opts, 10, (10, 3)).known_issues == []

    assert cli(["build", str(sam2_dir), "--dry-run", "--trt-major", "10", "--out", str(tmp_path / "e10")]) == 0
    out = capsys.readouterr().out
    assert out.count("warning: decoder:") == 1 and "k/v projection MatMul" in out and "remedy: use TensorRT >= 10.9" in out
    assert cli(["build", str(sam2_dir), "--dry-run", "--trt-major", "10", "--graphs", "encoder",
                "--out", str(tmp_path / "e10e")]) == 0
    assert "warning" not in capsys.readouterr().out
    assert cli(["build", str(sam2_dir), "--dry-run", "--trt-major", "11", "--graphs", "decoder",
                "--out", str(tmp_path / "e11")]) == 0
    assert "warning" not in capsys.readouterr().out


def test_manifest_known_issues_roundtrip_and_old_manifests_load(tmp_path):
    from samdeploy.trt.manifest import write_manifest

    engine = tmp_path / "decoder.engine"
    engine.write_bytes(b"never deserialised")
    base = dict(role="decoder", precision="fp16", engine_file=engine.name, engine_sha256="", source_onnx="",
                source_onnx_sha256="", contract={}, environment={}, profiles=[], build_path="trt10-weak")
    issue = {"code": CODE, "message": "m", "remedy": "r"}
    write_manifest(engine, EngineManifest(**base, known_issues=[issue]))
    assert read_manifest(engine).known_issues == [issue]
    old = {k: v for k, v in EngineManifest(**base).to_dict().items() if k != "known_issues"}  # before issue 10
    (tmp_path / "decoder.engine.json").write_text(json.dumps(old))
    assert read_manifest(engine).known_issues == []


@pytest.mark.parametrize("role", ["encoder", "decoder"])
def test_build_engine_flow_pins_the_plan_and_records_the_issue_fake_trt(sam2_dir, tmp_path, monkeypatch, role):
    """build_engine's own Python (TRT 10 weak typing) with a fake TensorRT: every node of the FP16
    plan is pinned to FP32 (plus its parser helper layers), nothing heavy is, and the manifest
    records the known issue of the TensorRT that built it. Says nothing about real TensorRT."""
    import samdeploy.trt.build as B

    seen: list = []
    monkeypatch.setattr(B, "import_tensorrt", lambda: fake_trt(seen))
    onnx_path = str(sam2_dir / f"{role}.onnx")
    opts = BuildOptions(precision="fp16", max_prompts=4, max_points=4)
    plan = plan_build(onnx_path, str(tmp_path), opts, 10, (10, 3))
    logs: list[str] = []
    m = build_engine(plan, opts, Environment(tensorrt="10.3.0", gpu_name="Orin", compute_capability="8.7"), log=logs.append)
    assert seen == [onnx_path]  # TRT 10 weak typing parses the FP32 file itself
    pinned = set(m.fp32_layers)
    assert set(plan.fp32_layers) <= pinned
    model = onnx.load(onnx_path, load_external_data=False)
    ops = {n.name: n.op_type for n in model.graph.node}
    softmax = [n for n, op in ops.items() if op == "Softmax"]
    assert softmax and {s + "_1" for s in softmax} <= pinned  # "<node>_<n>" helper layers of kept nodes
    assert not [n for n in pinned if ops.get(n) in ("Conv", "ConvTranspose", "Gemm")]
    assert read_manifest(plan.engine_path).fp32_layers == m.fp32_layers
    if role == "decoder":
        assert [i["code"] for i in m.known_issues] == [CODE] and m.known_issues[0]["target"] == "10.3"
        assert any("warning: decoder engine" in line and "10.9" in line for line in logs)
    else:
        assert m.known_issues == []
    # the TensorRT that really builds decides: 10.16 has no such issue even if the plan said 10.x
    m2 = build_engine(plan_build(onnx_path, str(tmp_path / "b"), opts, 10), opts, Environment(tensorrt="10.16.1.11"),
                      log=logs.append)
    assert m2.known_issues == []


def test_kept_layer_names():
    keep = {"/a/Softmax", "/b/ReduceMean"}
    assert kept_layer("/a/Softmax", keep) and kept_layer("/a/Softmax_1", keep) and kept_layer("/a/Softmax_12", keep)
    assert not kept_layer("/a/Softmax_x", keep) and not kept_layer("/c/Add_1", keep) and not kept_layer("_1", keep)


# ---- 2. the FP16 plan on the real SAM2 graphs ------------------------------------------------------
def _must_keep(model) -> set[str]:
    """What landscape.md names as overflowing in FP16 (LayerNorm, Softmax/attention logits) plus the
    Fourier prompt features, found independently of fp32_nodes()."""
    ops = {n.name: n.op_type for n in model.graph.node}
    return {n for n, op in ops.items() if op in ("LayerNormalization", "Softmax", "Sin", "Cos")} | set(
        decomposed_layernorm_nodes(model.graph))


@pytest.mark.parametrize("major", [10, 11])
@pytest.mark.parametrize("role", ["encoder", "decoder"])
def test_fp16_plan_keeps_overflow_prone_nodes_fp32(sam2_dir, tmp_path, role, major):
    path = str(sam2_dir / f"{role}.onnx")
    model = onnx.load(path, load_external_data=False)
    ops = {n.name: n.op_type for n in model.graph.node}
    plan = plan_build(path, str(tmp_path), BuildOptions(precision="fp16"), major)
    keep = set(plan.fp32_layers)
    must = _must_keep(model)
    n_ln = sum(op == "LayerNormalization" for op in ops.values())
    n_sm = sum(op == "Softmax" for op in ops.values())
    if role == "encoder":  # Hiera-T: 12 blocks (2 LN + 1 attention each) ...
        assert (n_ln, n_sm) == (24, 12)
        assert keep == must  # nothing else needed FP32 in the encoder
    else:  # SAM2 decoder: two-way transformer LNs + LayerNorm2d of mask downscaling/upscaling, decomposed
        assert n_ln >= 9 and n_sm >= 7 and len(decomposed_layernorm_nodes(model.graph)) == 3 * 7
        assert must <= keep
    assert must <= keep
    heavy = [n for n in keep if ops[n] in ("Conv", "ConvTranspose", "Gemm")]
    assert heavy == []
    mm = [n for n, op in ops.items() if op == "MatMul"]
    assert sum(n not in keep for n in mm) >= len(mm) - 2  # only the prompt encoder's Fourier projection
    if major == 10:
        assert plan.build_path == "trt10-weak" and not plan.needs_mixed_precision_onnx
        spec = next(a for a in shlex.split(plan.trtexec) if a.startswith("--layerPrecisions="))
        assert {x.rsplit(":", 1)[0] for x in spec.split("=", 1)[1].split(",")} == keep
    else:
        assert plan.build_path == "trt11-strong" and plan.needs_mixed_precision_onnx
        assert "--layerPrecisions" not in plan.trtexec and "--stronglyTyped" in plan.trtexec


@pytest.fixture(scope="module")
def fp32_encoder_outputs(sam2_dir, photos):
    from samdeploy.runtime.transforms import preprocess_image

    contract, _ = C.read_onnx_contract(str(sam2_dir / "encoder.onnx"))
    x, _ = preprocess_image(photos["chelsea"], contract.preprocess)
    names = list(contract.encoder.output_names)
    return x, dict(zip(names, _ort(sam2_dir / "encoder.onnx").run(names, {C.ENCODER_INPUT: x})))


def _node_float_types(model) -> dict[str, set]:
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    t = {v.name: v.type.tensor_type.elem_type for v in list(inferred.graph.value_info) + list(inferred.graph.output)}
    return {n.name: {t.get(o) for o in n.output if o in t} for n in inferred.graph.node}


def _mixed(sam2_dir, tmp_path, role):
    """The TRT 11 plan's mixed-precision ONNX, as `samdeploy build` writes it."""
    plan = plan_build(str(sam2_dir / f"{role}.onnx"), str(tmp_path), BuildOptions(precision="fp16"), 11)
    assert write_parse_onnx(plan) == plan.parse_onnx
    return plan, onnx.load(plan.parse_onnx)


def _cos(a, b) -> float:
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_trt11_mixed_encoder_carries_the_casts_and_stays_close(sam2_dir, tmp_path, fp32_encoder_outputs):
    plan, mixed = _mixed(sam2_dir, tmp_path, "encoder")
    types_ = _node_float_types(mixed)
    keep = set(plan.fp32_layers)
    ops = {n.name: n.op_type for n in mixed.graph.node}
    assert all(types_[n] == {TensorProto.FLOAT} for n in keep)  # LN / Softmax compute in FP32
    assert all(TensorProto.FLOAT16 in types_[n] for n, op in ops.items() if op in ("MatMul", "Conv"))
    casts = [n for n in mixed.graph.node if n.op_type == "Cast"]
    assert len(casts) >= 2 * 24  # into and out of every LayerNorm at least
    assert {i.name: i.type.tensor_type.elem_type for i in mixed.graph.input} == {C.ENCODER_INPUT: TensorProto.FLOAT}
    assert {o.name: o.type.tensor_type.elem_type for o in mixed.graph.output} == {
        n: TensorProto.FLOAT for n in C.SAM2_ENCODER_OUTPUTS}
    x, ref = fp32_encoder_outputs
    got = dict(zip(ref, _ort(mixed).run(list(ref), {C.ENCODER_INPUT: x})))
    for name in C.SAM2_ENCODER_OUTPUTS:  # all three outputs
        assert got[name].dtype == np.float32 and np.isfinite(got[name]).all()
        assert _cos(got[name], ref[name]) > 0.9999, name


def test_trt11_mixed_decoder_carries_the_casts_and_stays_close(sam2_dir, tmp_path, fp32_encoder_outputs):
    plan, mixed = _mixed(sam2_dir, tmp_path, "decoder")
    types_ = _node_float_types(mixed)
    ops = {n.name: n.op_type for n in mixed.graph.node}
    float_keep = [n for n in plan.fp32_layers if types_[n] & {TensorProto.FLOAT, TensorProto.FLOAT16}]
    assert float_keep and all(types_[n] == {TensorProto.FLOAT} for n in float_keep)
    assert all(TensorProto.FLOAT16 in types_[n] for n, op in ops.items() if op in ("Gemm", "Conv", "ConvTranspose"))
    _, ref_feats = fp32_encoder_outputs  # realistic decoder inputs: the photograph's encoder outputs
    rng = np.random.default_rng(0)
    b = 4
    feeds = C.decoder_feeds(ref_feats, (rng.random((b, 3, 2)) * 1024).astype(np.float32),
                            np.tile(np.array([[1, 0, -1]], np.float32), (b, 1)),
                            np.zeros((b, 1, 256, 256), np.float32), np.zeros(b, np.float32))
    names = list(C.DECODER_OUTPUTS) + [C.SAM2_OBJECT_SCORE]
    ref = dict(zip(names, _ort(sam2_dir / "decoder.onnx").run(names, feeds)))
    got = dict(zip(names, _ort(mixed).run(names, feeds)))
    assert all(v.dtype == np.float32 for v in got.values())
    m_ref, m_got = ref[C.DECODER_LOW_RES_MASKS], got[C.DECODER_LOW_RES_MASKS]
    assert np.abs(m_ref).max() > 5
    assert ((m_got > 0) == (m_ref > 0)).mean() > 0.99 and _cos(m_got, m_ref) > 0.999
    assert np.abs(got[C.DECODER_IOU] - ref[C.DECODER_IOU]).max() < 0.02
    assert np.abs(got[C.SAM2_OBJECT_SCORE] - ref[C.SAM2_OBJECT_SCORE]).max() < 0.05


# ---- 3. jetson/verify.py: SAM2 outputs, and a miscompiled decoder must fail ---------------------------
def test_verify_comparison_flags_each_sam2_output():
    v = _verify_module()
    limits = v.gates("fp16")
    rng = np.random.default_rng(0)
    ref = {n: rng.standard_normal((1, *s)).astype(np.float32)
           for n, s in zip(C.SAM2_ENCODER_OUTPUTS, ((256, 64, 64), (32, 256, 256), (64, 128, 128)))}
    m, fails = v.compare_features(ref, dict(ref), limits)
    assert set(m) == set(C.SAM2_ENCODER_OUTPUTS) and fails == []
    bad = dict(ref)
    bad["high_res_feats_1"] = ref["high_res_feats_1"] + 1.27 * rng.standard_normal(ref["high_res_feats_1"].shape).astype(
        np.float32)  # cosine ~0.62
    m, fails = v.compare_features(ref, bad, limits)
    assert 0.55 < m["high_res_feats_1"]["cosine"] < 0.7
    assert len(fails) == 1 and "high_res_feats_1" in fails[0]
    _, fails = v.compare_features(ref, {k: x for k, x in ref.items() if k != "high_res_feats_0"}, limits)
    assert len(fails) == 1 and "high_res_feats_0" in fails[0]

    low = rng.standard_normal((4, 256, 256)).astype(np.float32) * 10
    out = {"scores": np.array([0.9, 0.8, 0.7, 0.9], np.float32), "low_res": low,
           "extra": {C.SAM2_OBJECT_SCORE: np.array([[2.5]], np.float32)}}
    row, fails = v.compare_decoder(out, out, limits)
    assert fails == [] and row["extra"][C.SAM2_OBJECT_SCORE]["object_present_agree"] and min(row["mask_iou"]) == 1.0
    flipped = {**out, "extra": {C.SAM2_OBJECT_SCORE: np.array([[-1.0]], np.float32)}}
    row, fails = v.compare_decoder(out, flipped, limits)
    assert not row["extra"][C.SAM2_OBJECT_SCORE]["object_present_agree"]
    assert len(fails) == 1 and C.SAM2_OBJECT_SCORE in fails[0]
    _, fails = v.compare_decoder(out, {**out, "extra": {}}, limits)
    assert len(fails) == 1 and C.SAM2_OBJECT_SCORE in fails[0]


def _miscompiled_copy(src: Path, dst: Path) -> Path:
    """An export whose decoder's cross-attention k/v projections compute wrong values (what TensorRT
    10.3 is reported to do), with the manifest's hashes updated so the runtime opens it."""
    from samdeploy._io import sha256_file

    dst.mkdir()
    shutil.copy(src / "encoder.onnx", dst / "encoder.onnx")
    model = onnx.load(str(src / "decoder.onnx"))
    inits = {i.name: i for i in model.graph.initializer}
    targets = {i for n in model.graph.node if n.op_type == "MatMul" and "self_attn" not in n.name
               and ("/k_proj" in n.name or "/v_proj" in n.name) for i in n.input if i in inits}
    assert len(targets) >= 2, "the SAM2 decoder graph has image-token k/v projection MatMuls"
    rng = np.random.default_rng(1)
    for name in sorted(targets):
        w = numpy_helper.to_array(inits[name])
        inits[name].CopyFrom(numpy_helper.from_array((rng.standard_normal(w.shape) * w.std()).astype(np.float32), name))
    onnx.save(model, str(dst / "decoder.onnx"))
    manifest = json.loads((src / "manifest.json").read_text())
    entry = manifest["files"]["decoder"]
    entry["sha256"], entry["size"] = sha256_file(dst / "decoder.onnx"), (dst / "decoder.onnx").stat().st_size
    (dst / "manifest.json").write_text(json.dumps(manifest))
    return dst


def test_verify_cli_on_sam2_passes_ort_vs_ort_and_fails_a_miscompiled_decoder(sam2_dir, tmp_path, capsys):
    v = _verify_module()
    args = ["--onnx-dir", str(sam2_dir), "--candidate-backend", "onnxruntime", "--max-images", "1"]
    assert v.main(args + ["--engine-dir", str(sam2_dir), "--json", str(tmp_path / "ok.json")]) == 0
    ok = json.loads((tmp_path / "ok.json").read_text())
    assert ok["passed"] and ok["failures"] == [] and ok["thresholds"]["extra_output_max_abs"] is not None
    (feats,) = ok["encoder"].values()
    assert set(feats) == set(C.SAM2_ENCODER_OUTPUTS) and all(f["cosine"] > 0.99999 for f in feats.values())
    assert len(ok["rows"]) == 4 and all(len(r["mask_iou"]) == 4 for r in ok["rows"])  # 3 multimask + single
    assert all(r["extra"][C.SAM2_OBJECT_SCORE]["max_abs"] == 0.0 for r in ok["rows"])
    capsys.readouterr()

    bad = _miscompiled_copy(sam2_dir, tmp_path / "miscompiled")
    assert v.main(args + ["--engine-dir", str(bad), "--precision", "fp16", "--json", str(tmp_path / "bad.json")]) == 1
    out = capsys.readouterr().out
    rep = json.loads((tmp_path / "bad.json").read_text())
    assert not rep["passed"] and "FAIL" in out
    assert all(f["cosine"] > 0.99999 for f in next(iter(rep["encoder"].values())).values())  # encoder is fine
    assert any(f.startswith("worst mask IoU") for f in rep["failures"])
    assert any(C.SAM2_OBJECT_SCORE in f for f in rep["failures"])


def test_verify_prints_known_issues_from_engine_manifests(tmp_path):
    v = _verify_module()
    issue = {"code": CODE, "message": "m", "remedy": "r"}
    (tmp_path / "decoder.engine.json").write_text(json.dumps({"known_issues": [issue], "environment": {"tensorrt": "10.3.0"}}))
    (tmp_path / "encoder.engine.json").write_text(json.dumps({"environment": {"tensorrt": "10.3.0"}}))
    (tmp_path / "broken.engine.json").write_text("{")
    assert v.manifest_known_issues(str(tmp_path)) == [{**issue, "engine": "decoder.engine", "built_with": "10.3.0"}]
