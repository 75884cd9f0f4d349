"""Latency benchmark of the runtime (no torch): encoder, decoder per prompt across batch sizes,
image pre-processing, prompt packing and mask post-processing, plus the compute floors they are
measured against -- all in ONE run on THIS machine.

Reported (milliseconds, p50/p90/p99 after warm-up):

* ``image_preprocess``  -- resize + pad of a 1920x1080 image (once per image);
* ``encoder``           -- one encoder call;
* ``decoder[B]``        -- one decoder call with B prompts (1 click + SAM's padding point each) and
                           the per-prompt cost (call / B);
* ``prompt_pre``        -- validation + coordinate transform + packing for one prompt;
* ``postprocess_single`` / ``postprocess_multimask`` -- token selection + upscale + threshold of
                           1 / 3 masks to 1920x1080.

Ratios: (prompt_pre + postprocess) / decoder[1] (target <= 0.2); decoder per prompt / GEMM floor
(3.64 GFLOP per prompt, perf.md §6.3, divided by this machine's fp32 GEMM rate measured with an ORT
MatMul in the same run at the same thread count); encoder / its floor (graph FLOPs counted from the
ONNX file / the same GEMM rate).
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from collections import defaultdict
from typing import Any, Callable, Optional, Sequence

import numpy as np

from ..contract import ENCODER_INPUT, decoder_feeds
from ..errors import InputError

DECODER_GFLOP_PER_PROMPT = 3.64  # perf.md §6.3: SAM-1 prompt encoder + mask decoder, 1 prompt, multimask
BENCH_IMAGE_HW = (1080, 1920)


# ---- statistics -----------------------------------------------------------------------------------
def stats_ms(seconds: Sequence[float], cpu_seconds: Optional[Sequence[float]] = None) -> dict[str, float]:
    """Wall-clock percentiles in ms; ``cpu_p50`` = median process CPU time per run (all threads
    summed), which stays meaningful on a shared, oversubscribed machine."""
    t = np.asarray(seconds, dtype=np.float64) * 1e3
    out = {
        "p50": float(np.percentile(t, 50)),
        "p90": float(np.percentile(t, 90)),
        "p99": float(np.percentile(t, 99)),
        "mean": float(t.mean()),
        "min": float(t.min()),
        "n": int(t.size),
    }
    if cpu_seconds is not None:
        out["cpu_p50"] = float(np.median(np.asarray(cpu_seconds, dtype=np.float64) * 1e3))
    return out


def time_fn(fn: Callable[[], Any], runs: int, warmup: int, bar=None) -> dict[str, float]:
    for _ in range(warmup):
        fn()
    ts, cpu = [], []
    for _ in range(runs):
        c0 = time.process_time()
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
        if bar is not None:
            bar.update(1)
    return stats_ms(ts, cpu)


def peak_rss_mb() -> float:
    import resource  # POSIX only (Linux, Jetson, macOS)

    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / 1024.0 if sys.platform != "darwin" else r / (1024.0 * 1024.0)


# ---- compute floors ---------------------------------------------------------------------------------
def gemm_rate_gflops(threads: Optional[int] = None, n: int = 2048, runs: int = 5) -> tuple[float, float]:
    """This machine's fp32 GEMM rate: best of ``runs`` ORT MatMul calls of n x n x n.

    Returns ``(GFLOP per wall second, GFLOP per CPU second)``; the second is the rate a core
    delivers while it runs, which stays meaningful when other processes share the machine."""
    import onnxruntime as ort
    from onnx import TensorProto, helper


    g = helper.make_graph(
        [helper.make_node("MatMul", ["a", "b"], ["c"])],
        "gemm",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, [n, n]),
         helper.make_tensor_value_info("b", TensorProto.FLOAT, [n, n])],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, [n, n])],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = min(m.ir_version, 9)
    so = ort.SessionOptions()
    if threads:
        so.intra_op_num_threads = int(threads)
    sess = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    sess.run(None, {"a": a, "b": b})
    walls, cpus = [], []
    for _ in range(runs):
        c0, t0 = time.process_time(), time.perf_counter()
        sess.run(None, {"a": a, "b": b})
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    flop = 2.0 * n**3
    return flop / min(walls) / 1e9, flop / max(min(cpus), 1e-9) / 1e9


def count_graph_flops(path: str, fixed_shapes: dict[str, Sequence[int]]) -> Optional[float]:
    """FLOPs (2 x MACs) of Conv/ConvTranspose/MatMul/Gemm in an ONNX graph at the given input shapes.

    Same convention as perf.md (elementwise ops not counted). ``None`` if shapes cannot be inferred."""
    import onnx
    from onnx import shape_inference

    try:
        m = onnx.load(path, load_external_data=False)
        for inp in m.graph.input:
            if inp.name in fixed_shapes:
                dims = inp.type.tensor_type.shape.dim
                for d, v in zip(dims, fixed_shapes[inp.name]):
                    d.ClearField("dim_param")
                    d.dim_value = int(v)
        m = shape_inference.infer_shapes(m, data_prop=True)
    except Exception:
        return None
    shapes: dict[str, list[Optional[int]]] = {}
    for vi in list(m.graph.input) + list(m.graph.value_info) + list(m.graph.output):
        shapes[vi.name] = [d.dim_value if d.HasField("dim_value") else None for d in vi.type.tensor_type.shape.dim]
    for init in m.graph.initializer:
        shapes[init.name] = list(init.dims)

    def known(name):
        s = shapes.get(name)
        return s if s is not None and all(v is not None for v in s) else None

    total = 0.0
    unknown = 0
    for node in m.graph.node:
        op = node.op_type
        if op not in ("Conv", "ConvTranspose", "MatMul", "Gemm"):
            continue
        if op == "Conv":
            out, w = known(node.output[0]), known(node.input[1])
            if out is None or w is None:
                unknown += 1
                continue
            total += 2.0 * np.prod(out, dtype=np.float64) * np.prod(w[1:], dtype=np.float64)
        elif op == "ConvTranspose":
            x, w = known(node.input[0]), known(node.input[1])
            if x is None or w is None:
                unknown += 1
                continue
            total += 2.0 * np.prod(x, dtype=np.float64) * np.prod(w[1:], dtype=np.float64)
        elif op == "MatMul":
            a, out = known(node.input[0]), known(node.output[0])
            if a is None or out is None:
                unknown += 1
                continue
            total += 2.0 * np.prod(out, dtype=np.float64) * a[-1]
        else:  # Gemm
            a, out = known(node.input[0]), known(node.output[0])
            if a is None or out is None:
                unknown += 1
                continue
            trans_a = any(at.name == "transA" and at.i for at in node.attribute)
            k = a[0] if trans_a else a[-1]
            total += 2.0 * np.prod(out, dtype=np.float64) * k
    if unknown:
        return None
    return total


# ---- ORT profiling ------------------------------------------------------------------------------------
def profile_decoder(decoder_path: str, feeds: dict[str, np.ndarray], runs: int, threads: Optional[int], out_dir: str) -> dict[str, Any]:
    """Run the decoder with ORT profiling; return time per op type (share of node time) and top nodes."""
    from .backends.onnxruntime import OrtBackend

    os.makedirs(out_dir, exist_ok=True)
    be = OrtBackend(decoder_path, "decoder", threads=threads, profile=True,
                    profile_prefix=os.path.join(out_dir, "decoder_profile"))
    for _ in range(runs):
        be.run(feeds)
    trace = be.end_profiling()
    be.close()
    return summarize_ort_profile(trace, runs) if trace else {}


def summarize_ort_profile(trace_path: str, runs: int) -> dict[str, Any]:
    with open(trace_path, encoding="utf-8") as fh:
        events = json.load(fh)
    by_op: dict[str, float] = defaultdict(float)
    by_node: dict[str, float] = defaultdict(float)
    node_op: dict[str, str] = {}
    for e in events:
        if e.get("cat") != "Node" or not str(e.get("name", "")).endswith("_kernel_time"):
            continue
        op = e.get("args", {}).get("op_name", "?")
        name = e["name"][: -len("_kernel_time")]
        by_op[op] += e.get("dur", 0)
        by_node[name] += e.get("dur", 0)
        node_op[name] = op
    total = sum(by_op.values()) or 1.0
    ops = sorted(by_op.items(), key=lambda kv: -kv[1])
    nodes = sorted(by_node.items(), key=lambda kv: -kv[1])[:12]
    return {
        "trace": trace_path,
        "node_time_ms_per_run": total / 1e3 / max(1, runs),
        "by_op_type": [{"op": k, "ms_per_run": v / 1e3 / max(1, runs), "share": v / total} for k, v in ops],
        "top_nodes": [{"node": k, "op": node_op[k], "ms_per_run": v / 1e3 / max(1, runs), "share": v / total} for k, v in nodes],
    }


# ---- the benchmark --------------------------------------------------------------------------------------
def bench_image(image: Optional[np.ndarray]) -> np.ndarray:
    """The 1920x1080 benchmark image: ``image`` resized, or a real photograph resized."""
    import cv2

    if image is None:
        from ..images import default_photographs

        image = default_photographs(("astronaut",))["astronaut"]
    H, W = BENCH_IMAGE_HW
    if image.shape[:2] != (H, W):
        image = cv2.resize(image, (W, H), interpolation=cv2.INTER_LINEAR)
    return np.ascontiguousarray(image)


def run_bench(
    predictor,
    image: Optional[np.ndarray] = None,
    batch_sizes: Sequence[int] = (1, 4, 16, 64),
    runs: int = 20,
    warmup: int = 3,
    encoder_runs: Optional[int] = None,
    gemm: bool = True,
    profile_dir: Optional[str] = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Benchmark a :class:`~samdeploy.runtime.Predictor` (any backend). Returns a JSON-able dict."""
    from tqdm import tqdm

    from .prompts import check_points, pack_prompts
    from .transforms import apply_coords, preprocess_image

    if runs < 1 or warmup < 0 or not batch_sizes or min(batch_sizes) < 1:
        raise InputError("runs must be >= 1, warmup >= 0 and batch sizes >= 1")
    # B=1 is always measured: the pre+post ratio and decoder_b1_vs_floor are against decode(1 prompt).
    sizes = list(batch_sizes) if 1 in batch_sizes else [1, *batch_sizes]
    contract = predictor.contract
    img = bench_image(image)
    H, W = img.shape[:2]
    enc_runs = encoder_runs or max(3, min(runs, 10))
    threads = predictor.model.options.get("threads")
    total_steps = (
        enc_runs + warmup + runs  # encoder + image preprocess
        + sum(runs for _ in sizes)
        + 4 * runs
    )
    bar = tqdm(total=total_steps, desc="bench", unit="run", disable=not progress, file=sys.stderr, leave=False)

    res: dict[str, Any] = {"image_hw": [H, W], "runs": runs, "warmup": warmup}
    # Image pre-processing (per image).
    res["image_preprocess"] = time_fn(lambda: preprocess_image(img, contract.preprocess), runs, warmup, bar)
    # Encoder (per image).
    x, _ = preprocess_image(img, contract.preprocess)
    res["encoder"] = time_fn(lambda: predictor.model.encoder.run({ENCODER_INPUT: x}), enc_runs, min(warmup, 1), bar)
    predictor.set_image(img)

    # Decoder across batch sizes: 1 foreground click per prompt (+ SAM's padding point).
    rng = np.random.default_rng(0)
    dec: dict[str, Any] = {}
    feeds_for_profile = None
    for b in sizes:
        pts = rng.uniform([0, 0], [W, H], size=(b, 1, 2))
        coords, labels = check_points(pts, np.ones((b, 1)), batched=True, limits=predictor.limits)
        pc, pl = pack_prompts(apply_coords(coords, (H, W), predictor.input_size), labels, None, b)
        st = time_fn(lambda: predictor.decode(pc, pl), runs, warmup, bar)
        dec[str(b)] = {"call": st, "per_prompt_p50": st["p50"] / b, "per_prompt_p90": st["p90"] / b}
        if b == 1:
            feeds_for_profile = (pc, pl)
    res["decoder"] = dec

    # Prompt packing and post-processing for one prompt at 1920x1080.
    pt = np.array([[W * 0.5, H * 0.5]])

    def prompt_pre():
        c, l = check_points(pt, np.ones(1), batched=False, limits=predictor.limits)
        return pack_prompts(apply_coords(c, (H, W), predictor.input_size), l, None, 1)

    res["prompt_pre"] = time_fn(prompt_pre, runs, warmup, bar)
    pc1, pl1 = prompt_pre()
    iou, low = predictor.decode(pc1, pl1)
    thr = contract.decoder.mask_threshold

    def post(multi: bool):
        _, lr = predictor.select(iou, low, multi)
        return predictor.postprocess(lr, threshold=thr)

    res["postprocess_single"] = time_fn(lambda: post(False), runs, warmup, bar)
    res["postprocess_multimask"] = time_fn(lambda: post(True), runs, warmup, bar)
    fast = predictor.fast_postprocess
    predictor.fast_postprocess = True  # the fused single-resize variant, for comparison
    try:
        res["postprocess_multimask_fast"] = time_fn(lambda: post(True), runs, warmup, bar)
    finally:
        predictor.fast_postprocess = fast
    bar.close()

    # Floors and ratios.
    d1 = dec["1"]["call"]["p50"]  # a real B=1 call (measured even when 1 is not in batch_sizes)
    ratios: dict[str, Any] = {
        "prepost_single_vs_decode1": (res["prompt_pre"]["p50"] + res["postprocess_single"]["p50"]) / d1,
        "prepost_multimask_vs_decode1": (res["prompt_pre"]["p50"] + res["postprocess_multimask"]["p50"]) / d1,
    }
    floors: dict[str, Any] = {"decoder_gflop_per_prompt": DECODER_GFLOP_PER_PROMPT}
    if gemm and predictor.model.backend == "onnxruntime":
        rate, cpu_rate = gemm_rate_gflops(threads)
        floors["gemm_gflops"] = rate
        floors["gemm_gflops_per_cpu_s"] = cpu_rate
        floors["decoder_floor_ms_per_prompt"] = DECODER_GFLOP_PER_PROMPT / rate * 1e3
        floors["decoder_floor_cpu_ms_per_prompt"] = DECODER_GFLOP_PER_PROMPT / cpu_rate * 1e3
        best_pp = min(v["per_prompt_p50"] for v in dec.values())
        ratios["decoder_best_per_prompt_vs_floor"] = best_pp / floors["decoder_floor_ms_per_prompt"]
        ratios["decoder_b1_vs_floor"] = d1 / floors["decoder_floor_ms_per_prompt"]
        # the same ratios in CPU time (robust on a shared machine)
        best_cpu = min(v["call"]["cpu_p50"] / int(b) for b, v in dec.items())
        ratios["decoder_best_per_prompt_vs_floor_cpu"] = best_cpu / floors["decoder_floor_cpu_ms_per_prompt"]
        s = contract.preprocess.input_size
        enc_flops = count_graph_flops(predictor.model.encoder_path, {ENCODER_INPUT: (1, 3, s, s)})
        if enc_flops:
            floors["encoder_gflop"] = enc_flops / 1e9
            floors["encoder_floor_ms"] = enc_flops / 1e9 / rate * 1e3
            ratios["encoder_vs_floor"] = res["encoder"]["p50"] / floors["encoder_floor_ms"]
            ratios["encoder_vs_floor_cpu"] = res["encoder"]["cpu_p50"] / (enc_flops / 1e9 / cpu_rate * 1e3)
        dec_flops = count_graph_flops(
            predictor.model.decoder_path,
            decoder_feeds((1, *contract.decoder.embedding_shape), (1, 2, 2), (1, 2),
                          (1, 1, contract.decoder.low_res_size, contract.decoder.low_res_size), (1,)),
        )
        if dec_flops:
            floors["decoder_graph_gflop_b1"] = dec_flops / 1e9
    res["floors"] = floors
    res["ratios"] = ratios
    res["peak_rss_mb"] = peak_rss_mb()  # before profiling (which opens extra sessions)
    if profile_dir and predictor.model.backend == "onnxruntime" and feeds_for_profile is not None:
        profiles = {}
        for b in sorted({1, max(batch_sizes)}):
            pc = np.repeat(feeds_for_profile[0], b, axis=0)
            pl = np.repeat(feeds_for_profile[1], b, axis=0)
            s = contract.decoder.low_res_size
            feeds = decoder_feeds(predictor.get_image_embedding(), pc, pl, np.zeros((b, 1, s, s), np.float32),
                                  np.zeros((b,), np.float32))
            profiles[str(b)] = profile_decoder(predictor.model.decoder_path, feeds, max(3, runs // 2), threads,
                                               os.path.join(profile_dir, f"b{b}"))
        res["decoder_profile"] = profiles
    res["environment"] = environment(predictor)
    return res


def environment(predictor) -> dict[str, Any]:
    import cv2

    info = predictor.describe()
    return {
        "model_id": info.get("model_id"),
        "precision": info.get("precision", "FP32"),
        "random_weights": bool(info.get("random_weights", False)),
        "backend": info.get("backend"),
        "encoder": {k: v for k, v in info.get("encoder", {}).items() if k != "inputs"},
        "decoder": {k: v for k, v in info.get("decoder", {}).items() if k != "inputs"},
        "python": platform.python_version(),
        "numpy": np.__version__,
        "opencv": cv2.__version__,
        "machine": platform.machine(),
        "processor": _cpu_name(),
        "cpu_count": os.cpu_count(),
    }


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


#: CPU features that decide INT8/BF16 GEMM speed (shared hosts change CPU between sessions)
_SPEED_FLAGS = ("avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8", "amx_bf16")


def cpu_summary() -> str:
    """``"<model name> (<int8-relevant flags>)"``, e.g. for benchmark reports."""
    flags: set[str] = set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    have = [f for f in _SPEED_FLAGS if f in flags]
    return f"{_cpu_name()} ({', '.join(have) or 'no AVX-512/VNNI/AMX'})"


# ---- two models side by side (`samdeploy bench --compare DIR`) ---------------------------------------------
def _stage_values(res: dict[str, Any]) -> dict[str, float]:
    """stage name -> p50 ms of one run_bench result (decoder stages per prompt)."""
    out = {"encoder (per image)": res["encoder"]["p50"], "image preprocess": res["image_preprocess"]["p50"]}
    for b, d in res["decoder"].items():
        out[f"decoder per prompt, batch {b}"] = d["per_prompt_p50"]
    out["postprocess, 1 mask"] = res["postprocess_single"]["p50"]
    return out


def compare_rounds(ours: Sequence[dict[str, Any]], theirs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Median over rounds of each side's p50 per stage (stages both sides measured) and the ratio
    ours / theirs (< 1 = ours faster). The rounds were interleaved with the order rotated, so load from
    other processes hits both sides alike."""
    a = [_stage_values(r) for r in ours]
    b = [_stage_values(r) for r in theirs]
    stages = [k for k in a[0] if all(k in x for x in a + b)]
    rows = {}
    for k in stages:
        ma, mb = float(np.median([x[k] for x in a])), float(np.median([x[k] for x in b]))
        rows[k] = {"ours_ms": ma, "theirs_ms": mb, "ratio": ma / mb if mb > 0 else float("nan"),
                   "ratio_per_round": [x[k] / y[k] if y[k] > 0 else float("nan") for x, y in zip(a, b)]}
    return {"rounds": len(a), "stages": rows,
            "ours": ours[0]["environment"], "theirs": theirs[0]["environment"]}


def format_comparison(cmp: dict[str, Any]) -> str:
    o, t = cmp["ours"], cmp["theirs"]
    lines = [
        f"compare   ours   {o['model_id']} [{o.get('precision', 'FP32')}] {o['backend']}",
        f"          theirs {t['model_id']} [{t.get('precision', 'FP32')}] {t['backend']}",
        f"          {cmp['rounds']} interleaved rounds, order rotated each round; medians of the rounds' p50",
        f"{'stage':<36}{'ours ms':>10}{'theirs ms':>11}{'ratio':>8}   per round",
    ]
    for k, r in cmp["stages"].items():
        per = " ".join(f"{v:.2f}" for v in r["ratio_per_round"])
        lines.append(f"{k:<36}{r['ours_ms']:>10.2f}{r['theirs_ms']:>11.2f}{r['ratio']:>8.2f}   {per}")
    lines.append("ratio = ours / theirs (< 1: ours faster)")
    return "\n".join(lines)


# ---- presentation ----------------------------------------------------------------------------------------
def format_table(res: dict[str, Any]) -> str:
    env = res["environment"]
    lines = [
        f"model     {env['model_id']}  [{env.get('precision', 'FP32')}]",
        f"backend   {env['backend']} {env['encoder'].get('version', '')} {','.join(env['encoder'].get('providers', []) or [])}"
        f"  threads={env['encoder'].get('threads')}  cpu={env['processor']} x{env['cpu_count']}",
        f"image     {res['image_hw'][1]}x{res['image_hw'][0]}   runs={res['runs']} warmup={res['warmup']}",
        "",
        f"{'stage':<36}{'p50 ms':>10}{'p90 ms':>10}{'p99 ms':>10}{'cpu p50':>10}",
    ]

    def row(name, st):
        cpu = f"{st['cpu_p50']:>10.2f}" if "cpu_p50" in st else ""
        lines.append(f"{name:<36}{st['p50']:>10.2f}{st['p90']:>10.2f}{st['p99']:>10.2f}{cpu}")

    row("image preprocess (per image)", res["image_preprocess"])
    row("encoder (per image)", res["encoder"])
    for b, d in res["decoder"].items():
        row(f"decoder call, batch {b}", d["call"])
        lines.append(f"{'   per prompt':<36}{d['per_prompt_p50']:>10.2f}{d['per_prompt_p90']:>10.2f}")
    row("prompt pre (1 prompt)", res["prompt_pre"])
    row("postprocess, 1 mask", res["postprocess_single"])
    row("postprocess, 3 masks (multimask)", res["postprocess_multimask"])
    row("postprocess, 3 masks, fused resize", res["postprocess_multimask_fast"])
    lines.append("")
    f, r = res["floors"], res["ratios"]
    if "gemm_gflops" in f:
        lines.append(f"fp32 GEMM rate (ORT MatMul 2048^3, this run): {f['gemm_gflops']:.0f} GFLOP/s wall, "
                     f"{f['gemm_gflops_per_cpu_s']:.0f} GFLOP per CPU-second")
        lines.append(f"decoder floor: {f['decoder_gflop_per_prompt']} GFLOP/prompt -> {f['decoder_floor_ms_per_prompt']:.2f} ms/prompt"
                     + (f"  (graph count at B=1: {f['decoder_graph_gflop_b1']:.2f} GFLOP)" if "decoder_graph_gflop_b1" in f else ""))
        if "encoder_floor_ms" in f:
            lines.append(f"encoder floor: {f['encoder_gflop']:.1f} GFLOP -> {f['encoder_floor_ms']:.1f} ms")
    lines.append(f"pre+post / decode(1 prompt): single {r['prepost_single_vs_decode1']:.3f}, multimask {r['prepost_multimask_vs_decode1']:.3f}  (target <= 0.20)")
    for k in ("decoder_b1_vs_floor", "decoder_best_per_prompt_vs_floor", "decoder_best_per_prompt_vs_floor_cpu",
              "encoder_vs_floor", "encoder_vs_floor_cpu"):
        if k in r:
            lines.append(f"{k.replace('_', ' ')}: {r[k]:.2f}x")
    lines.append(f"peak RSS: {res['peak_rss_mb']:.0f} MB")
    for b, prof in (res.get("decoder_profile") or {}).items():
        if not prof:
            continue
        lines.append("")
        lines.append(f"decoder ORT profile, batch {b}: node time {prof['node_time_ms_per_run']:.2f} ms/run")
        for o in prof["by_op_type"][:10]:
            lines.append(f"   {o['op']:<28}{o['ms_per_run']:>9.2f} ms  {100 * o['share']:5.1f}%")
    return "\n".join(lines)


def plot(res: dict[str, Any], path: str) -> None:
    """PNG chart (OpenCV drawing): decoder ms/prompt vs batch size (p50 bars, p90 ticks), GEMM floor
    line, and a text panel with the encoder / pre / post numbers."""
    import cv2

    from .overlay import write_png

    Wd, Hd = 1100, 560
    img = np.full((Hd, Wd, 3), 255, np.uint8)
    x0, y0, x1, y1 = 80, 60, 640, 480  # plot area
    bs = list(res["decoder"].keys())
    p50 = np.array([res["decoder"][b]["per_prompt_p50"] for b in bs])
    p90 = np.array([res["decoder"][b]["per_prompt_p90"] for b in bs])
    floor = res["floors"].get("decoder_floor_ms_per_prompt")
    top = max(float(p90.max()), floor or 0.0) * 1.15 or 1.0
    font = cv2.FONT_HERSHEY_SIMPLEX
    black, grey, blue, red = (0, 0, 0), (200, 200, 200), (40, 110, 220), (220, 50, 50)

    def ypix(v):
        return int(y1 - (v / top) * (y1 - y0))

    for i in range(6):
        v = top * i / 5
        cv2.line(img, (x0, ypix(v)), (x1, ypix(v)), grey, 1)
        cv2.putText(img, f"{v:.1f}", (x0 - 60, ypix(v) + 5), font, 0.45, black, 1, cv2.LINE_AA)
    cv2.line(img, (x0, y0), (x0, y1), black, 2)
    cv2.line(img, (x0, y1), (x1, y1), black, 2)
    slot = (x1 - x0) / len(bs)
    for i, b in enumerate(bs):
        cx = int(x0 + slot * (i + 0.5))
        hw = int(slot * 0.3)
        cv2.rectangle(img, (cx - hw, ypix(p50[i])), (cx + hw, y1), blue, -1)
        cv2.line(img, (cx, ypix(p50[i])), (cx, ypix(p90[i])), black, 2)
        cv2.line(img, (cx - 8, ypix(p90[i])), (cx + 8, ypix(p90[i])), black, 2)
        cv2.putText(img, f"{p50[i]:.2f}", (cx - hw, ypix(p50[i]) - 6), font, 0.45, black, 1, cv2.LINE_AA)
        cv2.putText(img, f"B={b}", (cx - 22, y1 + 22), font, 0.55, black, 1, cv2.LINE_AA)
    if floor:
        cv2.line(img, (x0, ypix(floor)), (x1, ypix(floor)), red, 2)
        # legend above the plot area, so the label never hides a bar
        cv2.line(img, (x1 - 215, y0 - 12), (x1 - 190, y0 - 12), red, 2)
        cv2.putText(img, f"GEMM floor {floor:.2f} ms", (x1 - 184, y0 - 7), font, 0.5, red, 1, cv2.LINE_AA)
    cv2.putText(img, "decoder ms per prompt (p50 bar, p90 tick) vs prompt batch", (x0, 30), font, 0.6, black, 1, cv2.LINE_AA)
    env = res["environment"]
    text = [
        f"{env['model_id']}",
        f"{env['backend']} {env['encoder'].get('version', '')} threads={env['encoder'].get('threads')}",
        f"image {res['image_hw'][1]}x{res['image_hw'][0]}",
        "",
        "per image          p50 / p90 ms",
        f"  preprocess   {res['image_preprocess']['p50']:8.1f} / {res['image_preprocess']['p90']:.1f}",
        f"  encoder      {res['encoder']['p50']:8.1f} / {res['encoder']['p90']:.1f}",
        "per prompt",
        f"  prompt pre   {res['prompt_pre']['p50']:8.3f} / {res['prompt_pre']['p90']:.3f}",
        f"  post 1 mask  {res['postprocess_single']['p50']:8.2f} / {res['postprocess_single']['p90']:.2f}",
        f"  post 3 masks {res['postprocess_multimask']['p50']:8.2f} / {res['postprocess_multimask']['p90']:.2f}",
        "",
        f"pre+post/decode(1): {res['ratios']['prepost_multimask_vs_decode1']:.3f} (3 masks)",
    ]
    f = res["floors"]
    if "gemm_gflops" in f:
        text.append(f"GEMM {f['gemm_gflops']:.0f} GFLOP/s")
        text.append(f"decoder b1 / floor: {res['ratios']['decoder_b1_vs_floor']:.2f}x")
        if "encoder_vs_floor" in res["ratios"]:
            text.append(f"encoder / floor: {res['ratios']['encoder_vs_floor']:.2f}x")
    text.append(f"peak RSS {res['peak_rss_mb']:.0f} MB")
    for i, t in enumerate(text):
        cv2.putText(img, t, (680, 60 + 26 * i), font, 0.5, black, 1, cv2.LINE_AA)
    write_png(path, img)
