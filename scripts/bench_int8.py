#!/usr/bin/env python
"""INT8 MobileSAM encoder on ONNX Runtime CPU: calibration cost, accuracy vs FP32, speed, and where the
INT8 time goes. One run produces every number of the calibration report.

    python scripts/bench_int8.py --out bench_int8/            # export seeded MobileSAM, calibrate, bench
    python scripts/bench_int8.py --model-dir exp/ --out b/    # an existing export (your checkpoint)

Steps
  1. export MobileSAM (seeded random weights, realistic decoder scale) unless --model-dir is given;
  2. calibrate with the full TinySAM search (100 candidates x 3 rounds) on 8 real photographs
     (--compare-methods: hessian / minmax / percentile / entropy on the same statistics), for each
     --targets entry (tensorrt = every Conv/Linear, ort-cpu = Linear layers only); time and peak RSS of
     the statistics + search stages are those of the first target (later targets reuse the cache);
  3. accuracy on held-out photographs (FP32 vs INT8, both ONNX Runtime): mask IoU mean/p5, embedding
     cosine, IoU-prediction error;
  4. speed: median encoder latency FP32 vs INT8, interleaved runs, 1 and 2 threads, ORT optimisation
     levels; which INT8 kernels ORT actually fused;
  5. ORT profile per op type, FP32 vs INT8 (what stands between us and 3x).

Results: <out>/bench_int8.json and <out>/bench_int8.md. Numbers on random weights measure how much INT8
perturbs a random network; see the report's note. Run on a quiet machine: latencies on a shared host
are noisy (the script interleaves FP32/INT8 runs so both see the same load).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from samdeploy.contract import ENCODER_INPUT


def extra_photographs() -> dict[str, np.ndarray]:
    """Bundled photographs beyond the default set, so calibration gets TinySAM's 8 images offline."""
    from samdeploy.images import default_photographs

    return default_photographs(("clock",))


def held_out() -> dict[str, np.ndarray]:
    from samdeploy.images import held_out_photographs

    return held_out_photographs()


def calibration_images(n: int) -> dict[str, np.ndarray]:
    from samdeploy.calibration.pipeline import image_sha256
    from samdeploy.images import default_photographs

    held = {image_sha256(v) for v in held_out().values()}
    imgs = {k: v for k, v in default_photographs().items() if image_sha256(v) not in held}
    imgs.update(extra_photographs())
    return dict(list(imgs.items())[:n])


def latency(sessions: dict[str, object], x: np.ndarray, runs: int) -> dict[str, float]:
    """Median ms per session; runs interleaved so every session sees the same machine load."""
    for s in sessions.values():
        s.run(None, {ENCODER_INPUT: x})
    ts: dict[str, list[float]] = collections.defaultdict(list)
    for _ in range(runs):
        for k, s in sessions.items():
            t = time.perf_counter()
            s.run(None, {ENCODER_INPUT: x})
            ts[k].append(time.perf_counter() - t)
    return {k: float(np.median(v) * 1e3) for k, v in ts.items()}


def fused_ops(path: str) -> dict[str, int]:
    """Kernels in ORT's optimized graph, after samdeploy's CPU lowering (as the runtime opens it)."""
    import onnx
    import onnxruntime as ort

    from samdeploy.runtime.backends.ort_lowering import lower_file_for_cpu

    lowered = lower_file_for_cpu(path)
    with tempfile.TemporaryDirectory() as d:
        so = ort.SessionOptions()
        so.log_severity_level = 3
        so.optimized_model_filepath = os.path.join(d, "opt.onnx")
        ort.InferenceSession(lowered[0] if lowered else path, so, providers=["CPUExecutionProvider"])
        ops = collections.Counter(n.op_type for n in onnx.load(so.optimized_model_filepath).graph.node)
    keys = ("MatMulIntegerToFloat", "QLinearConv", "QLinearMatMul", "QGemm", "Gemm", "FusedMatMul", "MatMul",
            "Conv", "FusedConv", "QuantizeLinear", "DequantizeLinear", "Gelu", "BiasGelu", "Add")
    return {k: ops[k] for k in keys if ops[k]}


def profile(path: str, x: np.ndarray, runs: int = 3) -> dict[str, float]:
    """ms per op type (mean over ``runs``), 1 thread."""
    from samdeploy.calibration.evaluate import ort_session

    with tempfile.TemporaryDirectory() as d:
        s = ort_session(path, threads=1, profile_prefix=os.path.join(d, "p"))
        for _ in range(runs + 1):
            s.run(None, {ENCODER_INPUT: x})
        f = s.end_profiling()
        events = json.load(open(f))
    per: dict[str, list[float]] = collections.defaultdict(list)
    nodes = sorted((e for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")),
                   key=lambda e: e["ts"])
    for e in nodes:
        per[e["args"]["op_name"]].append(e["dur"] / 1000.0)
    n_nodes = {k: len(v) // (runs + 1) for k, v in per.items()}
    # every run executes the same nodes in the same order: the first n_nodes events are the warm-up run's
    return {k: float(sum(v[n_nodes[k]:]) / runs) if n_nodes[k] else 0.0 for k, v in per.items()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="bench_int8", help="output directory")
    p.add_argument("--model-dir", help="an existing export (default: export seeded MobileSAM into OUT/export)")
    p.add_argument("--seed", type=int, default=0, help="weight seed of the exported MobileSAM (without --model-dir)")
    p.add_argument("--num-images", type=int, default=8)
    p.add_argument("--targets", default="tensorrt,ort-cpu", help="comma list of calibrate --target values")
    p.add_argument("--runs", type=int, default=7, help="timed runs per configuration")
    p.add_argument("--threads", default="1,2", help="ORT intra-op threads to time")
    p.add_argument("--cache-dir", default=None, help="statistics cache (default OUT/cache)")
    args = p.parse_args(argv)

    import torch

    from samdeploy.calibration.evaluate import Gate, ort_session
    from samdeploy.calibration.pipeline import CalibrationSettings, calibrate, peak_rss_mb
    from samdeploy.contract import read_onnx_contract
    from samdeploy.runtime.transforms import preprocess_image

    torch.set_num_threads(2)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cache = Path(args.cache_dir) if args.cache_dir else out / "cache"
    say = lambda s: print(f"[bench_int8] {s}", flush=True)  # noqa: E731
    report: dict = {"host": {"cpus": os.cpu_count(), "torch": torch.__version__}}
    import onnxruntime

    from samdeploy.runtime.bench import cpu_summary

    report["host"]["onnxruntime"] = onnxruntime.__version__
    report["host"]["cpu"] = cpu_summary()

    model_dir = Path(args.model_dir) if args.model_dir else out / "export"
    if not args.model_dir and not (model_dir / "manifest.json").exists():
        from samdeploy.export import ExportOptions, export_model, load_source, random_source

        say(f"exporting MobileSAM (random weights, seed {args.seed}, realistic decoder scale)")
        src = random_source("mobile_sam", args.seed)
        export_model(load_source(src), model_dir, src, ExportOptions())
    contract, _ = read_onnx_contract(str(model_dir / "encoder.onnx"))
    images = calibration_images(args.num_images)
    evals = held_out()
    report["calibration_images"] = list(images)
    report["held_out_images"] = list(evals)
    say(f"calibration images: {', '.join(images)}; held out: {', '.join(evals)}")

    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    results = {}
    for i, target in enumerate(targets):
        tout = out / f"int8-{target}"
        settings = CalibrationSettings(method="hessian", num_images=args.num_images, target=target, gate=Gate(0.0, 0.0),
                                       threads=2)
        t0 = time.perf_counter()
        r = calibrate(model_dir, tout, settings, images=images, eval_images=evals, compare_methods=True,
                      cache_dir=cache, progress=False, log=say)
        wall = time.perf_counter() - t0
        results[target] = {
            "dir": str(tout),
            "wall_s": wall,
            "timings_s": r.timings,
            "peak_rss_mb": r.peak_rss_mb,
            "quantized_layers": len(r.layers),
            "kept_float": len(r.kept_float),
            "methods": {m: {"metrics": mr.metrics.to_json(), "hessian_err": mr.hessian_err, "search_s": mr.seconds}
                        for m, mr in r.methods.items()},
        }
        say(f"{target}: {len(r.layers)} layers INT8, wall {wall:.0f} s, peak RSS {r.peak_rss_mb:.0f} MB")
    report["calibration"] = results
    first = results[targets[0]]
    report["calibration_cost"] = {
        "images": args.num_images, "candidates": 100, "rounds": 3,
        "collect_s": first["timings_s"].get("collect"), "search_s": first["timings_s"].get("search"),
        "total_s": first["timings_s"].get("total"), "peak_rss_mb": first["peak_rss_mb"],
        "note": "first target only (later ones reuse the statistics cache); search_s covers all methods",
    }

    # ---- speed -----------------------------------------------------------------------------------------
    x, _ = preprocess_image(next(iter(evals.values())), contract.preprocess)
    fp = str(model_dir / "encoder.onnx")
    paths = {"fp32": fp, **{f"int8-{t}": str(out / f"int8-{t}" / "encoder.int8.onnx") for t in targets}}
    speed = {}
    for th in [int(t) for t in args.threads.split(",")]:
        sess = {k: ort_session(v, threads=th) for k, v in paths.items()}
        lat = latency(sess, x, args.runs)
        speed[f"threads={th}"] = {k: {"ms": v, "speedup_vs_fp32": lat["fp32"] / v} for k, v in lat.items()}
        say(f"threads={th}: " + ", ".join(f"{k} {v:.0f} ms (x{lat['fp32'] / v:.2f})" for k, v in lat.items()))
    levels = {}
    for lvl in ("basic", "extended", "all"):
        sess = {k: ort_session(v, threads=1, optimization=lvl) for k, v in paths.items() if k in ("fp32", f"int8-{targets[0]}")}
        lat = latency(sess, x, max(3, args.runs // 2))
        levels[lvl] = lat
        say(f"optimization={lvl}: " + ", ".join(f"{k} {v:.0f} ms" for k, v in lat.items()))
    report["speed"] = speed
    report["optimization_levels_1thread"] = levels
    report["ort_fused_ops"] = {k: fused_ops(v) for k, v in paths.items()}

    # ---- where the time goes ------------------------------------------------------------------------------
    prof = {k: profile(v, x) for k, v in paths.items()}
    report["profile_ms_per_op_type_1thread"] = prof

    report["peak_rss_mb_script"] = peak_rss_mb()
    (out / "bench_int8.json").write_text(json.dumps(report, indent=2, default=float))
    (out / "bench_int8.md").write_text(markdown(report, targets))
    print(markdown(report, targets))
    return 0


def markdown(r: dict, targets: list[str]) -> str:
    lines = ["# INT8 MobileSAM encoder, ONNX Runtime CPU", "",
             f"Host: {r['host']['cpus']} CPUs, {r['host'].get('cpu', '?')}, onnxruntime {r['host']['onnxruntime']}, "
             f"torch {r['host']['torch']}.",
             f"Calibration: {', '.join(r['calibration_images'])}; held out: {', '.join(r['held_out_images'])}.", ""]
    c = r["calibration_cost"]
    lines += [f"Calibration cost ({c['images']} images, {c['candidates']} candidates x {c['rounds']} rounds): statistics "
              f"{c['collect_s']:.0f} s, scale search (all 4 methods) {c['search_s']:.0f} s, total {c['total_s']:.0f} s, "
              f"peak RSS {c['peak_rss_mb']:.0f} MB.", ""]
    for t in targets:
        res = r["calibration"][t]
        lines += [f"## Accuracy, target `{t}` ({res['quantized_layers']} layers INT8, {res['kept_float']} float)", "",
                  "| method | mean IoU | p5 IoU | min IoU | mask logit rel err | emb cosine | mean abs dIoU-pred | Hessian err |", "|---|---|---|---|---|---|---|---|"]
        for m, v in res["methods"].items():
            e = v["metrics"]
            lines.append(f"| {m} | {e['mean_iou']:.4f} | {e['p5_iou']:.4f} | {e['min_iou']:.4f} | {e['mask_logit_rel_err']:.4f} | {e['emb_cosine_mean']:.5f} | "
                         f"{e['iou_pred_abs_err_mean']:.4f} | {v['hessian_err']:.4g} |")
        lines.append("")
    lines += ["## Speed (median encoder latency, interleaved runs)", "", "| config | " + " | ".join(r["speed"]) + " |",
              "|---|" + "---|" * len(r["speed"])]
    keys = list(next(iter(r["speed"].values())))
    for k in keys:
        lines.append(f"| {k} | " + " | ".join(f"{v[k]['ms']:.0f} ms (x{v[k]['speedup_vs_fp32']:.2f})" for v in r["speed"].values()) + " |")
    lines += ["", "ORT optimisation levels (1 thread): " + "; ".join(
        f"{lvl}: " + ", ".join(f"{k} {ms:.0f} ms" for k, ms in v.items()) for lvl, v in r["optimization_levels_1thread"].items()), ""]
    lines += ["Kernels after ORT graph optimisation: "] + [f"- {k}: {v}" for k, v in r["ort_fused_ops"].items()] + [""]
    lines += ["## Where the time goes (ORT profile, ms per op type, 1 thread)", ""]
    prof = r["profile_ms_per_op_type_1thread"]
    ops = sorted({o for v in prof.values() for o in v}, key=lambda o: -max(v.get(o, 0) for v in prof.values()))[:16]
    lines += ["| op | " + " | ".join(prof) + " |", "|---|" + "---|" * len(prof)]
    for o in ops:
        lines.append(f"| {o} | " + " | ".join(f"{v.get(o, 0):.1f}" for v in prof.values()) + " |")
    lines.append("| **total** | " + " | ".join(f"{sum(v.values()):.0f}" for v in prof.values()) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
