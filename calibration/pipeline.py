"""``samdeploy calibrate``: exported FP32 graphs + the PyTorch model -> INT8 QDQ ONNX + report.

    statistics  (collect.py)   forward/backward per calibration image, cached per image on disk
    scales      (search.py / baselines.py)  per layer, cached per layer on disk
    QDQ graphs  (qdq.py)       encoder.int8.onnx (and decoder.int8.onnx with --graphs encoder,decoder)
    gate        (evaluate.py)  FP32 vs INT8 through ONNX Runtime on held-out images and prompts
    [mixed precision (mixed.py): keep the most sensitive layers in float until the gate passes]
    outputs     written only when the gate passes: INT8 graphs, calibration.json, report, manifest

This module holds the settings, the result types and the stages; report.py builds calibration.json and the
report, outputs.py writes the directory. Entry point: :func:`calibrate`.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import hashlib
import json
import os
import resource
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from .._io import write_text_atomic
from ..contract import ENCODER_INPUT, ModelContract
from ..errors import ContractError, GateFailedError, InputError
from .errors import CalibrationError
from .evaluate import EvalResult, Evaluator, Gate, ort_session
from .outputs import write_outputs
from .report import calibration_json, report_md, results_table

METHODS = ("hessian", "minmax", "percentile", "entropy")
#: What each deployment target quantizes. TensorRT fuses Q/DQ into INT8 kernels for every weighted op
#: with only its *inputs* quantized. ONNX Runtime's CPU provider runs Linear layers as
#: MatMulIntegerToFloat (float output), but a Conv only in INT8 as QLinearConv, i.e. with its
#: *output* quantized too, and the float GELU/LayerNorm after it then needs a DequantizeLinear pass
#: over that output, a Q pass over its input and (QLinearConv runs NHWC) two transposes. Measured on
#: one thread (MobileSAM encoder, ORT 1.31): the neck's 3x3 256->256 conv goes from 31 to 6 ms, but
#: the stride-2 3x3 32->64 patch-embedding conv (15.7 ms float -> 5.5 ms + ~10 ms of Q/DQ/transposes)
#: and the 1x1 convs of the MBConv stage (14 ms -> 4.5 ms + 21 ms) lose. The break-even is near 100
#: multiply-adds per activation element read or written (``QuantLayer.macs_per_activation``; those
#: three have 1152, 96 and 51), so "ort-cpu" quantizes Linear layers plus the Convs above
#: ORT_CPU_CONV_MIN_MACS_PER_ACTIVATION, with their outputs quantized.
#: "openvino" (ONNX Runtime's OpenVINO execution provider on the CPU) takes the same placement as
#: TensorRT: its low-precision transformations fuse input-only Q/DQ into INT8 Conv/MatMul kernels.
TARGETS = {"tensorrt": ("linear", "conv", "conv_transpose"), "ort-cpu": ("linear", "conv"),
           "openvino": ("linear", "conv", "conv_transpose")}
ORT_CPU_CONV_MIN_MACS_PER_ACTIVATION = 200


def target_quantizes(layer, target: str) -> bool:
    """Does ``target`` run ``layer`` in INT8 (see TARGETS)?"""
    if layer.kind not in TARGETS[target]:
        return False
    if target == "ort-cpu" and layer.kind == "conv":
        return layer.macs_per_activation >= ORT_CPU_CONV_MIN_MACS_PER_ACTIVATION
    return True


def output_quantized(layer, settings: "CalibrationSettings") -> bool:
    """Does the layer's output get its own Q/DQ (ORT CPU QLinearConv, or --conv-output-quant)?"""
    return layer.kind == "conv" and (settings.conv_output_quant or settings.target == "ort-cpu")


#: bump when statistics or search change meaning (invalidates the on-disk caches)
CACHE_VERSION = 2  # 2: layer graphs by call, encoder-output gradients (multi-output encoders)


@dataclass(frozen=True)
class CalibrationSettings:
    """Everything that changes the scales (all of it goes into calibration.json)."""

    method: str = "hessian"
    graphs: tuple[str, ...] = ("encoder",)
    num_images: int = 8  # TinySAM calibrates on 8 images
    tokens_per_image: int = 256  # sampled output positions per layer per image
    prompts_per_image: int = 8  # decoder prompts per image for the task-loss gradient
    candidates: int = 100  # grid size (TinySAM/PTQ4ViT: 100)
    rounds: int = 3  # alternating weight/activation rounds (TinySAM/PTQ4ViT: 3)
    seed: int = 0
    loss: str = "fisher"  # see losses.py
    target: str = "tensorrt"  # "tensorrt"/"openvino": all weighted ops; "ort-cpu": Linear + heavy Convs (TARGETS)
    conv_output_quant: bool = False  # also quantize Conv outputs (ORT CPU needs it for INT8 Conv)
    exclude: tuple[str, ...] = ()  # fnmatch patterns of layer names kept in float
    min_rows_per_prompt: int = 64  # decoder: GEMV-like layers (few token rows per prompt) stay float
    gate: Gate = Gate()
    eval_grid: int = 4  # held-out prompts: grid x grid clicks ...
    eval_boxes: int = 4  # ... + boxes, per image
    threads: int = 0  # ONNX Runtime / torch threads (0: default)

    def validate(self) -> None:
        if self.method not in METHODS:
            raise InputError(f"unknown --method {self.method!r}", hint=f"choose one of {', '.join(METHODS)}")
        if self.target not in TARGETS:
            raise InputError(f"unknown --target {self.target!r}", hint=f"choose one of {', '.join(TARGETS)}")
        bad = [g for g in self.graphs if g not in ("encoder", "decoder")]
        if bad or not self.graphs or "encoder" not in self.graphs:
            raise InputError(f"--graphs must be 'encoder' or 'encoder,decoder' (got {','.join(self.graphs)})")
        for name in ("num_images", "tokens_per_image", "prompts_per_image", "candidates", "rounds"):
            if int(getattr(self, name)) < 1:
                raise InputError(f"{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        from .losses import LOSSES

        if self.loss not in LOSSES:
            raise InputError(f"unknown loss {self.loss!r}", hint=f"choose one of {', '.join(LOSSES)}")
        if not (0 <= self.gate.p5_iou <= 1 and 0 <= self.gate.mean_iou <= 1):
            raise InputError("gate thresholds are IoUs in [0, 1]")

    def to_json(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["graphs"] = list(self.graphs)
        d["exclude"] = list(self.exclude)
        return d


@dataclass
class MethodResult:
    method: str
    scales: dict[str, Any]  # layer -> LayerScales
    metrics: EvalResult | None = None
    hessian_err: float = 0.0  # sum over layers of the Hessian-weighted output error
    seconds: float = 0.0
    cached_layers: int = 0  # layers whose search result came from the cache (restart)


@dataclass
class CalibrationResult:
    out_dir: Path | None
    method: str
    metrics: EvalResult
    methods: dict[str, MethodResult]
    layers: list[str]  # quantized layers (after mixed precision)
    kept_float: list[str]  # layers left in float by --exclude / mixed precision
    files: list[Path] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    peak_rss_mb: float = 0.0
    report: str = ""
    gate_problems: list[str] = field(default_factory=list)
    mixed: dict[str, Any] | None = None
    # consumed encoder output -> rms of dL/d(feature) and share of the task-loss gradient's sum of squares
    feature_gradients: dict[str, dict[str, float]] = field(default_factory=dict)
    int8_graphs: tuple[str, ...] = ("encoder",)  # graphs written as INT8 (the others stay the FP32 files)


def peak_rss_mb() -> float:
    """Peak resident memory of this process (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def image_sha256(img: np.ndarray) -> str:
    h = hashlib.sha256()
    h.update(str(img.shape).encode())
    h.update(np.ascontiguousarray(img).tobytes())
    return h.hexdigest()


# ---- the pipeline ---------------------------------------------------------------------------------------
class _Run:
    """State of one calibration run (kept small: methods share the statistics)."""

    def __init__(self, model_dir: str | os.PathLike, settings: CalibrationSettings, checkpoint: str | None,
                 random_seed: int | None, trust_pickle: bool, say: Callable[[str], None], progress: bool):
        from ..check.parity import load_reference
        from ..export.manifest import graph_path, manifest_contract, read_manifest

        self.settings = settings
        self.say = say
        self.progress = progress
        self.model_dir = Path(model_dir)
        self.manifest = read_manifest(self.model_dir)
        self.contract: ModelContract = manifest_contract(self.manifest)
        self.paths = {}
        for role in ("encoder", "decoder"):
            if role in self.manifest.get("files", {}):
                self.paths[role] = graph_path(self.model_dir, self.manifest, role)
        if "encoder" not in self.paths:
            raise ContractError(f"{self.model_dir} has no encoder graph", hint="export with --graphs encoder,decoder")
        if "decoder" not in self.paths:
            raise ContractError(
                f"{self.model_dir} has no decoder graph: the accuracy gate needs it",
                hint="re-export with --graphs encoder,decoder",
            )
        self.cache_dir: Path | None = None  # set by _collect
        self.cache_key = ""
        t = time.perf_counter()
        self.sam, self.source = load_reference(self.manifest, checkpoint, random_seed, trust_pickle)
        self.timings = {"load_model": time.perf_counter() - t}

    @property
    def random_weights(self) -> bool:
        return getattr(self.source, "kind", "") == "random"


def calibrate(
    model_dir: str | os.PathLike,
    out_dir: str | os.PathLike | None,
    settings: CalibrationSettings = CalibrationSettings(),
    images: Mapping[str, np.ndarray] | None = None,
    eval_images: Mapping[str, np.ndarray] | None = None,
    checkpoint: str | None = None,
    random_seed: int | None = None,
    trust_pickle: bool = False,
    compare_methods: bool = False,
    auto_mixed_precision: bool = False,
    cache_dir: str | os.PathLike | None = "default",
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> CalibrationResult:
    """Calibrate the export in ``model_dir`` and write INT8 graphs + report to ``out_dir``.

    ``images`` (name -> HxWx3 uint8) default to the bundled photographs, ``eval_images`` to the
    held-out ones. Raises :class:`GateFailedError` (nothing written) when the gate fails.
    ``out_dir=None`` runs everything and writes nothing (tests, benchmarks)."""
    import torch

    from ..images import default_photographs, held_out_photographs
    from . import collect as C
    from . import layers as L

    settings.validate()
    say = log or (lambda s: None)
    t_start = time.perf_counter()
    if settings.threads:
        torch.set_num_threads(int(settings.threads))
    run = _Run(model_dir, settings, checkpoint, random_seed, trust_pickle, say, progress)
    contract = run.contract
    missing = [n for n in contract.decoder.embedding_inputs if n not in contract.encoder.output_names]
    if missing:
        raise ContractError(
            f"{contract.family}/{contract.variant}: the decoder consumes {missing}, which the encoder does not output "
            f"({list(contract.encoder.output_names)})",
            hint="re-export the model with `samdeploy export`",
        )
    if run.random_weights:
        say("note: random weights -- accuracy numbers measure INT8 perturbation of a random network, "
            "not task accuracy (see the report)")

    held_out = dict(eval_images) if eval_images else held_out_photographs()
    held_sha = {image_sha256(v) for v in held_out.values()}
    if images:
        calib_images = dict(images)
    else:  # the bundled sets share a photograph (skimage's "cat" is "chelsea"): keep the gate held out
        calib_images = {k: v for k, v in default_photographs().items() if image_sha256(v) not in held_sha}
    calib_images = dict(list(calib_images.items())[: settings.num_images])
    overlap = {image_sha256(v) for v in calib_images.values()} & held_sha
    if overlap:
        raise InputError("the held-out (gate) images overlap with the calibration images",
                         hint="pass different --eval-images, or leave them at the default held-out photographs")

    # ---- statistics -------------------------------------------------------------------------------------
    model = L.prepare_model(run.sam)
    # every weighted layer of the encoder and decoder modules; the collector records the ones that run
    # in the graphs being calibrated and tells which graph each ran in (SAM2's conv_s0/conv_s1 are
    # decoder modules that the encoder graph runs)
    all_layers = L.find_layers(model, tuple(L.GRAPH_PREFIXES))
    need_grad = settings.method == "hessian" or compare_methods or auto_mixed_precision
    t0 = time.perf_counter()
    stats, order, image_info, per_image = _collect(run, model, all_layers, calib_images, need_grad, cache_dir)
    run.timings["collect"] = time.perf_counter() - t0
    by_name = {l.name: l for l in all_layers}
    ran = [by_name[n] for n in order]
    for i, l in enumerate(ran):
        l.order = i
        l.graph = per_image[0].graphs.get(l.name, l.graph)
    grad_rms: dict[str, float] = {}
    feature_grads: dict[str, dict[str, float]] = {}
    if need_grad:
        feature_grads = C.feature_gradients(per_image)
        # decoder layers that never reach the mask/IoU outputs (dead branches) simply stay float
        dead = [n for n in order if by_name[n].graph == "decoder" and sum(im.layers[n].g_sq for im in per_image) == 0.0]
        if dead:
            say(f"{len(dead)} decoder layer(s) do not influence the outputs and stay float")
            ran = [l for l in ran if l.name not in dead]
        grad_rms = C.check_gradients(per_image, [l.name for l in ran])

    quant_layers, kept = _select_layers(ran, stats, settings, len_prompts=max(settings.prompts_per_image, 1))
    say(f"{len(quant_layers)} layers to quantize ({len(kept)} kept in float by rule/--exclude)")

    # ---- ONNX graphs and layer -> node matching -----------------------------------------------------------
    import onnx

    from ..export.onnx_io import load_model
    from . import qdq

    fp_models = {role: load_model(run.paths[role]) for role in ("encoder", "decoder")}
    node_map: dict[str, list[str]] = {}
    calls = {l.name: stats[l.name].calls for l in quant_layers}
    for role in settings.graphs:
        role_layers = [l for l in quant_layers if l.graph == role]
        # the encoder must map completely; the (factored) decoder uses some weights re-associated
        node_map.update(qdq.match_layers(fp_models[role], role_layers, calls, strict=role == "encoder"))
    unmapped = [l.name for l in quant_layers if l.name not in node_map]
    if unmapped:
        say(f"{len(unmapped)} decoder layer(s) have no ONNX node of their own and stay float")
        kept = kept + unmapped
        quant_layers = [l for l in quant_layers if l.name in node_map]

    # ---- scales per method ------------------------------------------------------------------------------------
    methods = list(METHODS) if compare_methods else [settings.method]
    if settings.method in methods:
        methods.remove(settings.method)
    methods.insert(0, settings.method)
    workdir = tempfile.mkdtemp(prefix="samdeploy-calib-")
    try:
        results: dict[str, MethodResult] = {}
        for m in methods:
            t0 = time.perf_counter()
            scales = _scales(run, m, quant_layers, stats, image_info, cache_dir)
            cached = sum(1 for sc in scales.values() if sc.info.get("cached"))
            results[m] = MethodResult(m, scales, seconds=time.perf_counter() - t0, cached_layers=cached)
        run.timings["search"] = sum(r.seconds for r in results.values())

        # ---- gate -------------------------------------------------------------------------------------------
        threads = settings.threads or 0
        fp_enc = ort_session(run.paths["encoder"], threads)
        fp_dec = ort_session(run.paths["decoder"], threads)
        evaluator = Evaluator(fp_enc, fp_dec, held_out, contract, settings.eval_grid, settings.eval_boxes, settings.seed)

        def build(method_scales: Mapping[str, Any], excluded: set[str]) -> dict[str, onnx.ModelProto]:
            out = {}
            for role in settings.graphs:
                ns = {n: method_scales[l.name] for l in quant_layers if l.graph == role and l.name not in excluded
                      for n in node_map[l.name]}
                if ns or role == "encoder":  # a graph without quantized layers stays the FP32 file
                    out[role] = qdq.quantize_model(fp_models[role], ns)
            return out

        if "decoder" in settings.graphs and not any(l.graph == "decoder" for l in quant_layers):
            say("decoder: no layer left to quantize (token-side layers are GEMV-like and the exported decoder "
                "does its image-side work in low-rank form); it stays FP32")

        def measure(models: Mapping[str, onnx.ModelProto], ev: Evaluator = evaluator) -> EvalResult:
            enc = ort_session((models["encoder"]), threads, workdir=workdir)
            dec = ort_session((models["decoder"]), threads, workdir=workdir) if "decoder" in models else None
            return ev.evaluate(enc, dec)

        t0 = time.perf_counter()
        for m, r in results.items():
            r.metrics = measure(build(r.scales, set()))
            r.hessian_err = _hessian_total(quant_layers, stats, r.scales) if need_grad else float("nan")
            say(f"{m:10s} {r.metrics.line()}")
        run.timings["evaluate"] = time.perf_counter() - t0

        chosen = results[settings.method]
        excluded: set[str] = set()
        mixed_info = None
        problems = settings.gate.check(chosen.metrics)
        final_metrics = chosen.metrics
        if problems and auto_mixed_precision:
            from .mixed import auto_mixed_precision as amp

            t0 = time.perf_counter()
            sens_images = dict(list(calib_images.items())[:1])
            sens_eval = Evaluator(fp_enc, fp_dec, sens_images, contract, 3, 2, settings.seed)
            mixed_info = amp(
                layers=[l.name for l in quant_layers],
                build=lambda ex: build(chosen.scales, ex),
                measure_sensitivity=lambda models: measure(models, sens_eval),
                measure_gate=measure,
                gate=settings.gate,
                progress=progress,
                say=say,
            )
            excluded = set(mixed_info["kept_float"])
            final_metrics = mixed_info["metrics"]
            problems = settings.gate.check(final_metrics)
            run.timings["mixed_precision"] = time.perf_counter() - t0
        final_models = build(chosen.scales, excluded)
        if mixed_info is not None:
            mixed_info["speed"] = _speed(run.paths["encoder"], fp_models["encoder"], build(chosen.scales, set())["encoder"],
                                         final_models["encoder"], calib_images, contract, workdir, threads)

        result = CalibrationResult(
            out_dir=Path(out_dir) if out_dir is not None else None,
            method=settings.method,
            metrics=final_metrics,
            methods=results,
            layers=[l.name for l in quant_layers if l.name not in excluded],
            kept_float=sorted(kept) + sorted(excluded),
            timings=run.timings,
            gate_problems=problems,
            mixed=mixed_info,
            feature_gradients=feature_grads,
            int8_graphs=tuple(final_models),
        )
        run.timings["total"] = time.perf_counter() - t_start
        result.peak_rss_mb = peak_rss_mb()
        doc = calibration_json(run, result, quant_layers, stats, node_map, grad_rms, image_info, held_out, excluded)
        result.report = report_md(run, result, doc)
        if problems:
            raise GateFailedError(
                "INT8 accuracy gate failed (" + "; ".join(problems) + "); nothing was written.\n" + results_table(result),
                hint="try --auto-mixed-precision (keeps the most sensitive layers in float), more/other "
                "--images, or relax --gate-mean-iou/--gate-p5-iou if the use case allows",
            )
        if out_dir is not None:
            result.files = write_outputs(run, Path(out_dir), final_models, doc, result)
        return result
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


# ---- stages ------------------------------------------------------------------------------------------------
def _collect(run: _Run, model, layers, images: Mapping[str, np.ndarray], need_grad: bool, cache_dir):
    from tqdm import tqdm

    from ..runtime.transforms import preprocess_image, prompt_frame_shape
    from . import collect as C
    from . import losses
    from . import prompts as P

    s = run.settings
    contract = run.contract
    dec = contract.decoder
    tokens = tuple(dec.multimask_tokens) if dec.always_multimask else tuple(range(dec.num_mask_tokens))
    key = C.settings_key(
        v=CACHE_VERSION, model=contract.model_id, graphs=s.graphs, tokens=s.tokens_per_image,
        prompts=s.prompts_per_image, seed=s.seed, loss=s.loss if need_grad else None, bins=C.HIST_BINS,
        layers=[l.name for l in layers],
    )
    root = None if cache_dir is None else (C.default_cache_root() if cache_dir == "default" else Path(cache_dir))
    cache = C.StatsCache(root, key)
    collector = C.StatsCollector(layers, s.tokens_per_image, s.seed, need_grad=need_grad, phases=s.graphs)
    loss_fn = losses.LOSSES[s.loss] if need_grad else None
    per_image: list[C.ImageStats] = []
    info = []
    bar = tqdm(list(images.items()), desc="calibration statistics", unit="img", disable=not run.progress)
    for i, (name, img) in enumerate(bar):
        sha = image_sha256(img)
        info.append({"name": name, "sha256": sha, "shape": list(img.shape)})
        st = cache.get(sha)
        if st is None:
            x, _ = preprocess_image(img, contract.preprocess)
            hw = prompt_frame_shape(img.shape[:2], contract)  # prompts live in the prompt frame
            seed = int(sha[:8], 16) ^ s.seed
            rng = np.random.default_rng(seed)
            batches = P.sample_prompts(rng, hw, s.prompts_per_image)
            valid = P.low_res_valid(hw, contract.frame_size, dec.low_res_size)
            st = C.collect_image(model, collector, x, batches, valid, tokens, loss_fn, seed,
                                 output_names=contract.encoder.output_names, decoder_inputs=dec.embedding_inputs)
            cache.put(sha, st)
        per_image.append(st)
        bar.set_postfix_str(f"cached {cache.hits}" if cache.hits else "")
    if cache.dir is not None:
        run.say(f"statistics cache: {cache.dir} ({cache.size_bytes() / 1e6:.0f} MB; {cache.hits} of {len(images)} images reused)")
    run.cache_dir = cache.dir
    run.cache_key = key
    order = list(per_image[0].order)
    for st in per_image[1:]:
        if list(st.order) != order or st.graphs != per_image[0].graphs:
            raise CalibrationError("the model called its layers in a different order on different images",
                                   hint="data-dependent control flow is not supported by calibration")
    merged = {name: C.merge_stats([st.layers[name] for st in per_image]) for name in order}
    return merged, order, info, per_image


def _select_layers(ran, stats, s: CalibrationSettings, len_prompts: int):
    keep_float = []
    out = []
    for l in ran:
        if any(fnmatch.fnmatchcase(l.name, pat) for pat in s.exclude) or not target_quantizes(l, s.target):
            keep_float.append(l.name)
            continue
        if l.graph == "decoder":
            rows_per_prompt = stats[l.name].rows / max(len_prompts, 1)
            if rows_per_prompt < s.min_rows_per_prompt:
                keep_float.append(l.name)
                continue
        out.append(l)
    if not out:
        raise InputError("no layer is left to quantize", hint="check --exclude")
    return out, keep_float


def _scales(run: _Run, method: str, layers, stats, image_info, cache_dir) -> dict[str, Any]:
    """Scales of every layer by ``method``; Hessian results are cached per layer (restartable)."""
    from tqdm import tqdm

    from .baselines import baseline_scales
    from .search import LayerScales, hessian_search

    s = run.settings
    out: dict[str, Any] = {}
    cache_file = None
    done: dict[str, Any] = {}
    if method == "hessian" and run.cache_dir is not None:
        key = hashlib.sha256(json.dumps([run.cache_key, [i["sha256"] for i in image_info], s.candidates, s.rounds,
                                         CACHE_VERSION]).encode()).hexdigest()[:16]
        cache_file = Path(run.cache_dir) / f"scales-{key}.json"
        if cache_file.exists():
            try:
                done = json.loads(cache_file.read_text())
            except ValueError:
                done = {}
    bar = tqdm(layers, desc=f"{method} scales", unit="layer", disable=not run.progress or method != "hessian")
    for l in bar:
        oq = output_quantized(l, s)
        if method == "hessian":
            d = done.get(l.name)
            if d is not None and (d["o"] is not None) == oq:  # same layer, same output quantization
                out[l.name] = LayerScales(l.name, np.asarray(d["w"], np.float32), np.float32(d["a"]),
                                          None if d["o"] is None else np.float32(d["o"]), "hessian", {**d["info"], "cached": True})
                continue
            sc = hessian_search(l, stats[l.name], s.candidates, s.rounds, output_quant=oq)
            out[l.name] = sc
            if cache_file is not None:
                done[l.name] = {"w": sc.weight.tolist(), "a": float(sc.act), "o": None if sc.out is None else float(sc.out),
                                "info": sc.info}
                write_text_atomic(cache_file, json.dumps(done))
        else:
            out[l.name] = baseline_scales(l, stats[l.name], method, output_quant=oq)
    return out


def _hessian_total(layers, stats, scales) -> float:
    from .search import hessian_error

    return float(sum(hessian_error(l, stats[l.name], scales[l.name]) for l in layers))


def _speed(fp_path, fp_model, int8_model, mixed_model, images, contract, workdir, threads, runs: int = 3) -> dict[str, float]:
    """Median encoder latency (ms) of FP32, full INT8 and the mixed-precision INT8 graph."""
    from ..runtime.transforms import preprocess_image

    x, _ = preprocess_image(next(iter(images.values())), contract.preprocess)
    out = {}
    for name, model in (("fp32", fp_path), ("int8", (int8_model)), ("mixed", (mixed_model))):
        sess = ort_session(model, threads, workdir=workdir)
        sess.run(None, {ENCODER_INPUT: x})
        ts = []
        for _ in range(runs):
            t = time.perf_counter()
            sess.run(None, {ENCODER_INPUT: x})
            ts.append(time.perf_counter() - t)
        out[f"{name}_ms"] = float(np.median(ts) * 1e3)
    return out
