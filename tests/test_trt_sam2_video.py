"""TensorRT readiness of the SAM2.1 video graphs (issue 11), all without a GPU or TensorRT.

On the session's seeded SAM2.1 Hiera-T ``export --video`` (S = 256, ``fixtures_video``):

1. ``samdeploy doctor`` passes memory_attention / memory_encoder / track_decoder (exit 0); the tracking
   decoder carries the SAM2 mask-decoder warning for TensorRT < 10.9 like decoder.onnx;
2. the optimization profiles for 1..K objects come from the contract: the memory-bank axes follow
   SAM2's ``num_maskmem = 7`` and ``max_obj_ptrs_in_encoder = 16`` (the numbers of the official config,
   typed here, not read from our code), agree with the ONNX files, and ONNX Runtime runs each graph at
   the profile's min, opt and max shapes (so a profile never names a shape the graph cannot take);
3. the FP16 plan keeps every LayerNorm / Softmax of the video graphs in FP32 on both TensorRT paths,
   and ``build_engine``'s own flow (a FAKE tensorrt module, never real TensorRT) writes engine
   manifests the TensorRT backend reads: limits, video engine lookup, contract checks;
4. the Tracker on engines: each engine simulated by ONNX Runtime on its source ONNX, refusing every
   shape outside its profile exactly as ``TensorRTBackend`` does. With ``--max-objects 2`` and three
   objects the tracker splits every graph call and its masks equal the unlimited ONNX Runtime run;
   a prompt beyond ``--max-cond-frames`` is refused up front with a typed error.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest

from fixtures_trt import fake_trt
from samdeploy import contract as C
from samdeploy.cli.main import main as cli
from samdeploy.errors import ContractError, InputError, MissingFileError
from samdeploy.trt.build import BuildOptions, build_engine, plan_build
from samdeploy.trt.environment import Environment
from samdeploy.trt.mixed_precision import decomposed_layernorm_nodes
from samdeploy.trt.preflight import WARNING, check_file
from samdeploy.trt.profiles import onnx_input_dims, video_ranges

pytest.importorskip("torch")

CODE = "trt-sam2-decoder-miscompile"
# SAM2.1's official config / SAM2Base defaults (sam2/configs/sam2.1/*.yaml, sam2/modeling/sam2_base.py)
NUM_MASKMEM, MAX_OBJ_PTRS, MEM_DIM, HIDDEN = 7, 16, 64, 256
S = 256  # fixtures_video.VIDEO_IMAGE_SIZE
H, LOW, T = S // 16, S // 4, (S // 16) ** 2


@pytest.fixture(scope="module")
def export_dir(sam2_video_model) -> Path:
    return sam2_video_model[1]


@pytest.fixture(scope="module")
def present_dir(tmp_path_factory) -> Path:
    """The same model with its object-score head shifted up: every object is present on every frame,
    so the tracker comparisons below compare real masks (not two empty ones)."""
    from fixtures_video import make_video_model_files

    return make_video_model_files(tmp_path_factory.mktemp("present"), object_score_shift=10.0)[1]


def _graph(export_dir: Path, role: str) -> str:
    return str(export_dir / f"{role}.onnx")


def _ort(path: str):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    so.log_severity_level = 3
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


# ---- 1. doctor ------------------------------------------------------------------------------------------
def test_doctor_passes_the_video_graphs(export_dir, capsys):
    for role in ("memory_attention", "memory_encoder"):
        assert check_file(_graph(export_dir, role)) == []
    found = check_file(_graph(export_dir, "track_decoder"))  # default target TensorRT 10.3 (JetPack 6)
    assert [(f.severity, f.code) for f in found] == [(WARNING, CODE)]
    assert "--backend onnxruntime" in found[0].hint and "10.9" in found[0].hint
    assert check_file(_graph(export_dir, "track_decoder"), (10, 16)) == []
    assert cli(["doctor", str(export_dir)]) == 0  # five graphs, warnings only
    out = capsys.readouterr().out
    for role in ("memory_attention", "memory_encoder"):
        assert f"{role}.onnx: 0 error(s), 0 warning(s)" in out
    assert "track_decoder.onnx: 0 error(s), 1 warning(s)" in out and f"WARNING {CODE} [track_decoder]" in out


def test_doctor_flags_a_video_graph_whose_io_left_the_contract(export_dir, tmp_path):
    m = onnx.load(_graph(export_dir, "memory_encoder"), load_external_data=False)
    m.graph.input[1].name = "renamed_mask"
    for n in m.graph.node:
        n.input[:] = ["renamed_mask" if x == C.VIDEO_MASK_LOGITS else x for x in n.input]
    bad = tmp_path / "memory_encoder.onnx"
    onnx.save(m, str(bad))
    assert [f.code for f in check_file(str(bad))][:1] == ["contract-io"]


# ---- 2. profiles --------------------------------------------------------------------------------------
def test_video_profiles_follow_sam2_memory_settings(export_dir, tmp_path):
    opts = BuildOptions(precision="fp16", max_objects=3, max_cond_frames=2, max_points=5)
    plans = {r: plan_build(_graph(export_dir, r), str(tmp_path), opts, 10, (10, 16)) for r in C.VIDEO_GRAPHS}
    r_max, p_max = NUM_MASKMEM - 1 + 2, MAX_OBJ_PTRS - 1 + 2
    attn = plans["memory_attention"].profile.shapes
    assert attn[C.VIDEO_MEMORY] == ((1, 1, T, MEM_DIM), (1, NUM_MASKMEM, T, MEM_DIM), (3, r_max, T, MEM_DIM))
    assert attn[C.VIDEO_MEMORY_TIME] == ((1, 1, NUM_MASKMEM), (1, NUM_MASKMEM, NUM_MASKMEM), (3, r_max, NUM_MASKMEM))
    assert attn[C.VIDEO_MEMORY_VALID] == ((1, 1), (1, NUM_MASKMEM), (3, r_max))
    assert attn[C.VIDEO_OBJ_PTRS] == ((1, 1, HIDDEN), (1, MAX_OBJ_PTRS, HIDDEN), (3, p_max, HIDDEN))
    assert attn[C.VIDEO_OBJ_PTR_TPOS][2] == attn[C.VIDEO_OBJ_PTR_VALID][2] == (3, p_max)
    assert attn[C.ENCODER_OUTPUT] == ((1, HIDDEN, H, H),) * 3  # one frame per call, shared by the objects
    menc = plans["memory_encoder"].profile.shapes
    assert menc[C.VIDEO_MASK_LOGITS] == ((1, 1, LOW, LOW), (1, 1, LOW, LOW), (3, 1, LOW, LOW))
    assert menc[C.SAM2_OBJECT_SCORE][2] == (3, 1) and menc[C.VIDEO_BINARIZE][2] == (3,)
    track = plans["track_decoder"].profile.shapes
    assert track[C.VIDEO_CONDITIONED] == ((1, HIDDEN, H, H), (1, HIDDEN, H, H), (3, HIDDEN, H, H))
    assert track["high_res_feats_0"] == ((1, 32, 4 * H, 4 * H),) * 3 and track["high_res_feats_1"] == ((1, 64, 2 * H, 2 * H),) * 3
    assert track[C.DECODER_POINT_COORDS] == ((1, 1, 2), (1, 2, 2), (3, 5, 2))
    assert track[C.DECODER_POINT_LABELS][2] == (3, 5) and track[C.DECODER_HAS_MASK_INPUT][2] == (3,)
    for role, plan in plans.items():  # names and fixed dims agree with the file
        dims = onnx_input_dims(_graph(export_dir, role))
        assert set(plan.profile.shapes) == set(dims)
        for name, (mn, _, mx) in plan.profile.shapes.items():
            assert all(d is None or isinstance(d, str) or d == a == b for d, a, b in zip(dims[name], mn, mx)), name
        assert f"--maxShapes={C.ENCODER_OUTPUT if role != 'track_decoder' else C.VIDEO_CONDITIONED}" in plan.trtexec
    with pytest.raises(InputError, match="max-cond-frames"):
        video_ranges(C.read_onnx_contract(_graph(export_dir, "memory_attention"))[0], max_cond_frames=0)


def _feeds(shapes: dict, which: int, seed: int = 0) -> dict:
    """Feeds of one profile corner; validity flags 1, memory time one-hot, points in the frame."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, corners in shapes.items():
        shape = corners[which]
        if name in (C.VIDEO_MEMORY_VALID, C.VIDEO_OBJ_PTR_VALID):
            a = np.ones(shape, np.float32)
        elif name == C.VIDEO_MEMORY_TIME:
            a = np.zeros(shape, np.float32)
            a[..., -1] = 1.0
        elif name == C.DECODER_POINT_COORDS:
            a = (rng.random(shape) * S).astype(np.float32)
        elif name == C.DECODER_POINT_LABELS:
            a = np.ones(shape, np.float32)
        elif name in (C.DECODER_HAS_MASK_INPUT, C.VIDEO_BINARIZE):
            a = np.ones(shape, np.float32)
        else:
            a = rng.standard_normal(shape).astype(np.float32)
        out[name] = a
    return out


def test_onnx_runtime_runs_every_video_graph_at_every_profile_corner(export_dir, tmp_path):
    opts = BuildOptions(precision="fp16", max_objects=3, max_cond_frames=2, max_points=5)
    for role in C.VIDEO_GRAPHS:
        path = _graph(export_dir, role)
        shapes = plan_build(path, str(tmp_path), opts, 10, (10, 16)).profile.shapes
        sess = _ort(path)
        for which in (0, 1, 2):
            feeds = _feeds(shapes, which)
            outs = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds)))
            b = shapes[next(n for n in shapes if n not in (C.ENCODER_OUTPUT, "high_res_feats_0", "high_res_feats_1"))][which][0]
            assert all(v.shape[0] == b and np.isfinite(v).all() for v in outs.values()), (role, which)


# ---- 3. FP16 plan, fake-TensorRT build, engine manifests -----------------------------------------------------
@pytest.mark.parametrize("major", [10, 11])
def test_fp16_plan_keeps_layernorm_and_softmax_of_the_video_graphs(export_dir, tmp_path, major):
    for role in C.VIDEO_GRAPHS:
        model = onnx.load(_graph(export_dir, role), load_external_data=False)
        ops = {n.name: n.op_type for n in model.graph.node}
        keep = set(plan_build(_graph(export_dir, role), str(tmp_path), BuildOptions(precision="fp16"), major).fp32_layers)
        must = {n for n, op in ops.items() if op in ("LayerNormalization", "Softmax")} | set(
            decomposed_layernorm_nodes(model.graph))
        if role == "memory_attention":  # 4 layers x (3 LN + 2 attentions, chunked queries) + the final LN
            assert sum(op == "LayerNormalization" for op in ops.values()) == 13
            assert sum(op == "Softmax" for op in ops.values()) >= 8
        assert must <= keep, role
        assert not [n for n in keep if ops[n] in ("Conv", "ConvTranspose", "Gemm")], role


def _build_all(export_dir: Path, out: Path, monkeypatch, **opts) -> dict:
    import samdeploy.trt.build as B

    seen: list = []
    monkeypatch.setattr(B, "import_tensorrt", lambda: fake_trt(seen))
    options = BuildOptions(precision="fp16", **opts)
    env = Environment(tensorrt="10.3.0", gpu_name="Orin", compute_capability="8.7")
    manifests = {}
    for role in ("encoder", "decoder", *C.VIDEO_GRAPHS):
        plan = plan_build(_graph(export_dir, role), str(out), options, 10, (10, 3))
        manifests[role] = build_engine(plan, options, env, log=lambda _: None)
    return manifests


def test_fake_trt_build_writes_video_engine_manifests_the_backend_reads(export_dir, tmp_path, monkeypatch):
    from samdeploy.runtime.backends import tensorrt as TB

    engines = tmp_path / "engines-fp16"
    manifests = _build_all(export_dir, engines, monkeypatch, max_objects=2, max_cond_frames=1, max_points=4)
    assert manifests["track_decoder"].known_issues[0]["code"] == CODE
    assert manifests["memory_attention"].known_issues == manifests["memory_encoder"].known_issues == []
    assert any(n.endswith("Softmax") for n in manifests["memory_attention"].fp32_layers)
    found = TB.find_video_graphs(str(engines / "encoder.engine"))
    assert found == {r: str(engines / f"{r}.engine") for r in C.VIDEO_GRAPHS}
    ours, _ = C.read_onnx_contract(_graph(export_dir, "encoder"))
    for role, path in found.items():
        contract, got_role = TB.read_contract(path)
        assert got_role == role and contract.model_id == ours.model_id and contract.video == ours.video
        lim = TB.profile_limits(contract, role, manifests[role].profile)
        assert lim["max_batch"] == 2
        if role == "memory_attention":
            assert lim["input_limits"][C.VIDEO_MEMORY] == ((1, 1, T, MEM_DIM), (2, NUM_MASKMEM, T, MEM_DIM))
            assert lim["input_limits"][C.VIDEO_OBJ_PTRS][1] == (2, MAX_OBJ_PTRS, HIDDEN)
        assert (lim["max_points"], lim["min_points"]) == ((4, 1) if role == "track_decoder" else (None, 0))
    (engines / "memory_encoder.engine").unlink()
    with pytest.raises(MissingFileError, match="memory_encoder.engine") as e:
        TB.find_video_graphs(str(engines / "encoder.engine"))
    assert "--graphs encoder,decoder,video" in e.value.hint


def test_build_cli_plans_the_video_graphs(export_dir, tmp_path, capsys):
    assert cli(["build", str(export_dir), "--dry-run", "--trt-major", "10", "--graphs", "video", "--max-objects", "3",
                "--max-cond-frames", "2", "--out", str(tmp_path / "e")]) == 0
    out = capsys.readouterr().out
    for role in C.VIDEO_GRAPHS:
        assert f"\n{role}: " in out and f"{role}.engine" in out
    assert f"profile {C.VIDEO_MEMORY:17s} min [1, 1, {T}, {MEM_DIM}]  opt [1, 7, {T}, {MEM_DIM}]  max [3, 8, {T}, {MEM_DIM}]" in out
    assert "\nencoder: " not in out and out.count("warning: track_decoder:") == 1
    assert cli(["build", str(export_dir), "--dry-run", "--trt-major", "11", "--graphs", "all", "--out", str(tmp_path / "a")]) == 0
    out = capsys.readouterr().out
    assert all(f"\n{r}: " in out for r in ("encoder", "decoder", *C.VIDEO_GRAPHS))
    assert cli(["build", str(export_dir), "--dry-run", "--trt-major", "10", "--graphs", "memory_bank"]) == 2
    assert "unknown graph 'memory_bank'" in capsys.readouterr().err
    image_only = tmp_path / "image_only"
    image_only.mkdir()
    for f in export_dir.iterdir():
        if f.name.startswith(("encoder.", "decoder.")):
            shutil.copy(f, image_only / f.name)
    assert cli(["build", str(image_only), "--dry-run", "--trt-major", "10", "--graphs", "video"]) == 2
    assert "--video" in capsys.readouterr().err


# ---- 4. the Tracker on (simulated) engines ------------------------------------------------------------------
class _SimulatedEngine:
    """An engine of ``samdeploy build``, run by ONNX Runtime on its source ONNX, with the engine's
    profile limits and shape checks (``TensorRTBackend``'s own ``_check_shapes``)."""

    def __init__(self, path: str, role: str, **_):
        from samdeploy.runtime.backends import tensorrt as TB
        from samdeploy.runtime.backends.onnxruntime import OrtBackend
        from samdeploy.trt.manifest import read_manifest

        self.manifest = read_manifest(path)
        self.role, self.path, self.name = role, path, "tensorrt"
        self._ort = OrtBackend(self.manifest.source_onnx, role, threads=2)
        self.input_names, self.output_names = self._ort.input_names, self._ort.output_names
        lim = TB.profile_limits(self.manifest.model_contract, role, self.manifest.profile)
        self.max_batch, self.max_points, self.min_points = lim["max_batch"], lim["max_points"], lim["min_points"]
        self.input_limits = lim["input_limits"]
        self.calls: list[dict] = []

    def run(self, feeds):
        from samdeploy.runtime.backends.tensorrt import TensorRTBackend

        TensorRTBackend._check_shapes(self, feeds)  # InputError outside the profile, as on the device
        self.calls.append({n: a.shape for n, a in feeds.items()})
        return self._ort.run(feeds)

    def describe(self):
        return {"backend": "tensorrt", "precision": self.manifest.precision, "role": self.role}

    def close(self):
        self._ort.close()


def _model_with_engines(src: Path, tmp_path: Path, monkeypatch, engine=None, engines_dir: Path | None = None,
                        **build) -> Path:
    """A copy of export ``src`` with fake-built engines in ``<copy>/engines-fp16`` (or ``engines_dir``) and
    the TensorRT backend module patched to run each engine as ``engine`` (default :class:`_SimulatedEngine`)."""
    from samdeploy.runtime.backends import tensorrt as TB

    model = tmp_path / "model"
    shutil.copytree(src, model)
    _build_all(model, engines_dir or model / "engines-fp16", monkeypatch, **build)
    cls = engine or _SimulatedEngine
    monkeypatch.setattr(TB, "available", lambda: None)
    monkeypatch.setattr(TB, "open_graph", lambda path, role, **o: cls(path, role))
    return model


def _prompts():
    return {0: {1: {"box": [20.0, 30.0, 120.0, 150.0]}, 2: {"points": [[250.0, 200.0]], "labels": [1]},
                3: {"points": [[60.0, 40.0], [90.0, 120.0]], "labels": [1, 0]}}}


def test_tracker_on_engines_splits_objects_and_matches_onnx_runtime(present_dir, tmp_path, monkeypatch):
    from fixtures_video import make_video

    from samdeploy.runtime.tracker import Tracker

    model = _model_with_engines(present_dir, tmp_path, monkeypatch, max_objects=2, max_cond_frames=1, max_points=4)
    frames = make_video(tmp_path / "video", 10, (250, 333))

    def run(backend):
        with Tracker(model, backend=backend, threads=2, num_frames=len(frames), fill_hole_area=0) as tr:
            res = [{o.obj_id: o.mask for o in r.objects} for r in tr.track_video(frames, _prompts(), {})]
            return res, tr
    ref, _ = run("onnxruntime")
    got, tr = run("tensorrt")
    d = tr.describe()  # what produced the result: backend, precision, the engines
    assert d["backend"] == "tensorrt" and d["precision"] == "FP16"
    assert d["video_graphs"]["memory_attention"] == "memory_attention.engine"
    assert all(m.any() for frame in ref for m in frame.values())  # every object present: real masks compared
    for f, (a, b) in enumerate(zip(ref, got)):
        assert set(a) == set(b) == {1, 2, 3}
        for oid in a:
            inter, union = np.logical_and(a[oid], b[oid]).sum(), np.logical_or(a[oid], b[oid]).sum()
            assert union == 0 or inter / union >= 0.999, (f, oid)
    calls = tr.graphs["memory_attention"].calls
    assert calls and all(c[C.VIDEO_MEMORY][0] <= 2 for c in calls)  # 3 objects -> chunks of 2 + 1
    assert sorted({c[C.VIDEO_MEMORY][0] for c in calls}) == [1, 2]
    assert max(c[C.VIDEO_MEMORY][1] for c in calls) == NUM_MASKMEM  # the full bank: 1 prompt + 6 recent
    assert {c[C.VIDEO_MASK_LOGITS][0] for c in tr.graphs["memory_encoder"].calls} == {1, 2}


def test_tracker_on_engines_refuses_more_prompted_frames_than_the_profile(export_dir, tmp_path, monkeypatch):
    from fixtures_video import make_video

    from samdeploy.runtime.tracker import Tracker

    model = _model_with_engines(export_dir, tmp_path, monkeypatch, max_objects=2, max_cond_frames=1, max_points=4)
    frames = make_video(tmp_path / "video", 3, (250, 333))
    with Tracker(model, backend="tensorrt", threads=2) as tr:
        tr.add_object(1, box=[20, 30, 120, 150], frame_size=(250, 333))
        tr.add_object(1, points=[[60, 70]], labels=[1])  # the same frame again: still one prompted frame
        tr.track(frames[0])
        with pytest.raises(InputError, match="max-cond-frames"):
            tr.add_object(1, points=[[60, 70]], labels=[1])  # a second prompted frame for object 1
        assert tr.track(frames[1]).objects[0].prompted is False  # state untouched: tracked from memory
        tr.add_object(2, points=[[250, 200]], labels=[1])  # another object has its own budget
        assert {o.obj_id for o in tr.track(frames[2]).objects} == {1, 2}
        with pytest.raises(InputError, match="max-points"):  # 4 clicks + SAM2's padding point > 4 rows
            tr.add_object(3, points=[[10, 10], [20, 20], [30, 30], [40, 40]], labels=[1, 1, 1, 1])
        assert tr.object_ids == [1, 2]


def test_tracker_on_engines_without_video_engines_or_with_foreign_ones(export_dir, tmp_path, monkeypatch):
    from samdeploy.runtime.tracker import Tracker

    model = _model_with_engines(export_dir, tmp_path, monkeypatch, max_objects=2)
    (model / "engines-fp16" / "track_decoder.engine").rename(model / "track_decoder.engine.bak")
    with pytest.raises(MissingFileError, match="track_decoder.engine"):
        Tracker(model, backend="tensorrt")
    (model / "track_decoder.engine.bak").rename(model / "engines-fp16" / "track_decoder.engine")
    # an engine manifest of another model's graph under the video engine's name
    shutil.copy(model / "engines-fp16" / "decoder.engine.json", model / "engines-fp16" / "memory_encoder.engine.json")
    shutil.copy(model / "engines-fp16" / "decoder.engine", model / "engines-fp16" / "memory_encoder.engine")
    with pytest.raises(ContractError, match="memory_encoder"):
        Tracker(model, backend="tensorrt")


# ---- 5. jetson/verify.py --video -------------------------------------------------------------------------
def _verify_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("jetson_verify_video", Path(__file__).resolve().parents[1] / "jetson"
                                                  / "verify.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class _BrokenMemoryAttention(_SimulatedEngine):
    """A memory-attention engine that computes wrong values (a miscompile, simulated)."""

    def run(self, feeds):
        out = super().run(feeds)
        if self.role == "memory_attention":
            out = {k: v[:, ::-1].copy() for k, v in out.items()}  # channels reversed
        return out


@pytest.mark.parametrize("engine", [_SimulatedEngine, _BrokenMemoryAttention])
def test_verify_video_compares_the_tracker_on_engines(present_dir, tmp_path, monkeypatch, capsys, engine):
    verify = _verify_module()
    engines = tmp_path / "engines"  # outside the export directory: found through --engine-dir
    model = _model_with_engines(present_dir, tmp_path, monkeypatch, engine=engine, engines_dir=engines, max_objects=2)
    report = tmp_path / "report.json"
    rc = verify.main(["--onnx-dir", str(model), "--engine-dir", str(engines), "--max-images", "1", "--video",
                      "--video-frames", "8", "--json", str(report)])
    out = capsys.readouterr().out
    import json

    got = json.loads(report.read_text())
    t = got["tracking"]
    assert t["candidate"]["video_graphs"]["track_decoder"] == "track_decoder.engine" and got["precision"] == "fp16"
    assert sum(len(f) for f in t["frames"]) == 8 + 8 - 8 // 3  # object 1 from frame 0, object 2 from frame 2
    if engine is _SimulatedEngine:
        assert rc == 0 and t["passed"] and t["mean_mask_iou"] >= 0.999, out
    else:  # the image path is untouched, the tracking gate catches it
        assert rc == 1 and not t["passed"] and any(f.startswith("tracking: ") for f in got["failures"])
        assert not [f for f in got["failures"] if not f.startswith("tracking: ")]


def test_verify_video_on_an_image_only_export_is_a_clean_error(tmp_path, capsys, exported_model_dir):
    verify = _verify_module()
    d = exported_model_dir("mobile_sam")
    assert verify.main(["--onnx-dir", str(d), "--engine-dir", str(d), "--candidate-backend", "onnxruntime",
                        "--max-images", "1", "--video", "--video-frames", "2"]) == 2
    err = capsys.readouterr().err
    assert "no video graphs" in err and "--video" in err


def test_track_cli_on_engines_says_what_produced_the_result(present_dir, tmp_path, monkeypatch, capsys):
    import json

    from test_track_cli import write_video

    engines = tmp_path / "engines"
    model = _model_with_engines(present_dir, tmp_path, monkeypatch, engines_dir=engines, max_objects=2)
    video = write_video(tmp_path / "v.avi", n=4)
    base = ["track", str(video), "--model-dir", str(model), "--box", "1:10,10,80,70", "--point", "2:100,50"]
    assert cli([*base, "--backend", "tensorrt", "--engine-dir", str(engines), "--summary-json",
                "--json", str(tmp_path / "t.jsonl")]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["backend"] == "tensorrt" and summary["precision"] == "FP16", summary
    assert len((tmp_path / "t.jsonl").read_text().splitlines()) == 4
    assert cli([*base, "--engine-dir", str(engines)]) == 2  # engines need --backend tensorrt
    assert "--backend tensorrt" in capsys.readouterr().err
