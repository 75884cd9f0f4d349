#!/usr/bin/env python
"""Model families side by side: export, FP32 parity and ONNX Runtime CPU encoder latency, one run.

    python scripts/bench_families.py                                   # mobile_sam, efficientvit_sam_l0, edge_sam, repvit_sam
    python scripts/bench_families.py --models mobile_sam,edge_sam --runs 9 --json /tmp/families.json

For every variant (seeded random weights, ``samdeploy.models.build.random_model``):

  1. export encoder.onnx + decoder.onnx (``export_model``, default ``ExportOptions``): wall time, file
     sizes, the contract's encoder input size and prompt frame;
  2. the FP32 parity gate (``run_check``) on 2 default photographs: embedding rel L2, worst mask IoU
     (isolated decoder and end to end), PASS/FAIL;
  3. encoder latency on ONNX Runtime's CPU provider, opened as the runtime opens it (``OrtBackend``), at
     intra-op threads 1 and 2: 1 warm-up run per session, then ``--runs`` repetitions; in each
     repetition every model runs once (round robin, starting model rotated per repetition) so load
     from other processes hits all models alike. Reported: median ms and its ratio to the baseline's
     (``--baseline``, default mobile_sam) median at the same thread count (>1 = slower than baseline).
     The absolute numbers move with the machine's load; the ratios are what compares across runs.

Random weights: parity and latency are meaningful (same graphs as trained checkpoints), mask quality is not.
Exit status: 0 when every parity check passes, 1 when any fails (named on stderr), 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_MODELS = ("mobile_sam", "efficientvit_sam_l0", "edge_sam", "repvit_sam")
THREADS = (1, 2)
PARITY_IMAGES = 2


def say(msg: str) -> None:
    print(f"[bench_families] {msg}", file=sys.stderr, flush=True)


# ---- host -----------------------------------------------------------------------------------------
def host_info() -> dict[str, Any]:
    import onnxruntime
    import torch

    from samdeploy import __version__
    from samdeploy.runtime.bench import cpu_summary

    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count()
    return {
        "cpu": cpu_summary(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": usable,
        "machine": platform.machine(),
        "python": platform.python_version(),
        "onnxruntime": onnxruntime.__version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "samdeploy": __version__,
        "load_avg_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


# ---- export + parity --------------------------------------------------------------------------------
def export_and_check(name: str, seed: int, out_dir: Path) -> dict[str, Any]:
    """Export ``name`` with seeded random weights into ``out_dir`` and run the FP32 parity check."""
    from samdeploy.check.parity import CheckOptions, run_check
    from samdeploy.export.exporter import ExportOptions, export_model
    from samdeploy.export.source import random_source
    from samdeploy.models.build import random_model
    from samdeploy.models.variants import get_variant

    v = get_variant(name)
    row: dict[str, Any] = {"model": name, "family": v.family, "params": v.params, "heavy": v.heavy, "dir": str(out_dir)}
    t0 = time.perf_counter()
    sam = random_model(name, seed=seed)
    row["build_s"] = time.perf_counter() - t0
    try:
        t0 = time.perf_counter()
        res = export_model(sam, out_dir, random_source(name, seed), ExportOptions())
        row["export_s"] = time.perf_counter() - t0
        for role, g in res.graphs.items():
            nbytes = sum(f.size for f in g.files)  # .onnx plus external data, if any
            row[f"{role}_bytes"] = nbytes
            row[f"{role}_mb"] = nbytes / 1e6
            row[f"{role}_nodes"] = sum(g.op_counts.values())
        row["encoder_input"] = int(res.contract.preprocess.input_size)
        row["prompt_frame"] = int(res.contract.frame_size)
        row["model_id"] = res.contract.model_id
    except Exception as exc:  # keep going: the other models are still worth measuring
        row.update(export_error=f"{type(exc).__name__}: {exc}", parity="FAIL", parity_failures=["export failed"])
        return row
    try:
        rep = run_check(out_dir, sam=sam, options=CheckOptions(max_images=PARITY_IMAGES))
    except Exception as exc:
        row.update(check_error=f"{type(exc).__name__}: {exc}", parity="FAIL", parity_failures=["check raised"])
        return row
    finally:
        del sam
        gc.collect()
    m = rep.metrics
    worst = [(m[s]["mask_iou_min"], s) for s in ("decoder", "end_to_end") if "mask_iou_min" in m.get(s, {})]
    row.update(
        parity="PASS" if rep.passed else "FAIL",
        parity_failures=[f"{g.section}.{g.name}={g.value:.3g} (limit {g.op} {g.limit:g})" for g in rep.failures],
        parity_images=rep.images,
        parity_s=rep.seconds,
        embedding_rel_l2=m.get("encoder", {}).get("embedding_rel_l2"),
        embedding_cosine=m.get("encoder", {}).get("embedding_cosine"),
        mask_logit_rel_l2=max((m[s]["mask_logit_rel_l2"] for s in ("decoder", "end_to_end") if s in m), default=None),
        worst_mask_iou=min(worst)[0] if worst else None,
        worst_mask_iou_section=min(worst)[1] if worst else None,
        iou_gates_advisory=any(g.advisory and g.name.startswith("mask_iou") for g in rep.gates),
        check_report=rep.to_dict(),
    )
    return row


# ---- latency ------------------------------------------------------------------------------------------
def encoder_latency(rows: list[dict[str, Any]], threads: int, runs: int, seed: int) -> dict[str, list[float]]:
    """Seconds per encoder call of every exported model at ``threads``; round robin per repetition."""
    from samdeploy.contract import ENCODER_INPUT
    from samdeploy.runtime.backends.onnxruntime import OrtBackend

    rng = np.random.default_rng(seed)
    sessions, feeds = {}, {}
    try:
        for r in rows:
            sessions[r["model"]] = OrtBackend(str(Path(r["dir"]) / "encoder.onnx"), "encoder", threads=threads)
            s = r["encoder_input"]
            feeds[r["model"]] = {ENCODER_INPUT: rng.uniform(0, 255, (1, 3, s, s)).astype(np.float32)}
        for k, g in sessions.items():  # warm-up: 1 run each
            g.run(feeds[k])
        names = list(sessions)
        times: dict[str, list[float]] = {k: [] for k in names}
        for i in range(runs):
            for k in names[i % len(names):] + names[: i % len(names)]:
                t0 = time.perf_counter()
                sessions[k].run(feeds[k])
                times[k].append(time.perf_counter() - t0)
        return times
    finally:
        for g in sessions.values():
            g.close()


def summarize_latency(times: dict[str, list[float]], baseline: str) -> dict[str, dict[str, Any]]:
    base = np.asarray(times[baseline])
    out = {}
    for k, t in times.items():
        a = np.asarray(t)
        out[k] = {
            "median_ms": float(np.median(a) * 1e3),
            "min_ms": float(a.min() * 1e3),
            "max_ms": float(a.max() * 1e3),
            "runs_ms": [float(x * 1e3) for x in a],
            "ratio_to_baseline": float(np.median(a) / np.median(base)),
            # same-repetition pairs: each repetition's load hits both models
            "paired_ratio_median": float(np.median(a / base)),
        }
    return out


# ---- presentation ---------------------------------------------------------------------------------------
def _f(v: Any, fmt: str, missing: str = "-") -> str:
    return missing if v is None else format(v, fmt)


def _load(la: Any) -> str:
    return "?" if not la else "/".join(f"{x:.1f}" for x in la)


def format_report(res: dict[str, Any]) -> str:
    h = res["host"]
    base = res["baseline"]
    lines = [
        f"host   {h['cpu']}, {h['cpu_count']} cores ({h['cpus_usable']} usable), {h['machine']}",
        f"       onnxruntime {h['onnxruntime']}, torch {h['torch']}, python {h['python']}, samdeploy {h['samdeploy']}",
        f"       load average {_load(h.get('load_avg_start'))} at start, {_load(h.get('load_avg_end'))} at end",
        f"weights seeded random (seed {res['seed']}); parity fp32 on {PARITY_IMAGES} photographs; "
        f"latency: ORT CPU encoder, 1 warm-up + {res['runs']} round-robin runs, median",
        "",
        f"{'model':<21}{'family':<18}{'params':>7}{'input':>7}{'frame':>7}{'export':>8}{'enc MB':>8}{'dec MB':>8}"
        f"{'emb relL2':>11}{'worst IoU':>11}  parity",
    ]
    for r in res["models"]:
        parity = r["parity"] + (" (IoU advisory)" if r.get("iou_gates_advisory") else "")
        lines.append(
            f"{r['model']:<21}{r['family']:<18}{r.get('params', ''):>7}{_f(r.get('encoder_input'), 'd'):>7}"
            f"{_f(r.get('prompt_frame'), 'd'):>7}{_f(r.get('export_s'), '.1f') + 's':>8}{_f(r.get('encoder_mb'), '.1f'):>8}"
            f"{_f(r.get('decoder_mb'), '.1f'):>8}{_f(r.get('embedding_rel_l2'), '.2e'):>11}"
            f"{_f(r.get('worst_mask_iou'), '.4f'):>11}  {parity}"
        )
    lat = res["latency"]
    if lat:
        lines += ["", f"encoder latency, ORT CPU: median ms, and ratio = median / {base}'s median at the same "
                      "thread count (>1 = slower)"]
        head = f"{'model':<21}"
        for t in THREADS:
            head += f"{f'{t} thread ms':>14}{'ratio':>8}"
        lines.append(head)
        names = [r["model"] for r in res["models"] if r["model"] in lat[str(THREADS[0])]]
        for name in names:
            row = f"{name:<21}"
            for t in THREADS:
                s = lat[str(t)][name]
                row += f"{s['median_ms']:>14.0f}{s['ratio_to_baseline']:>8.2f}"
            lines.append(row)
        if all(base in lat[str(t)] for t in THREADS):
            sp = ", ".join(f"{k} {lat['1'][k]['median_ms'] / lat['2'][k]['median_ms']:.2f}x" for k in names)
            lines.append(f"2-thread speed-up over 1 thread: {sp}")
    failed = [r for r in res["models"] if r["parity"] != "PASS"]
    lines.append("")
    if failed:
        for r in failed:
            why = r.get("export_error") or r.get("check_error") or "; ".join(r["parity_failures"])
            lines.append(f"PARITY FAIL {r['model']}: {why}")
    else:
        lines.append(f"all {len(res['models'])} parity checks PASS")
    lines.append(f"wall time {res['wall_s']:.0f} s (export+parity {res['export_check_s']:.0f} s, latency {res['latency_s']:.0f} s)")
    return "\n".join(lines)


# ---- main -------------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default=",".join(DEFAULT_MODELS), help="comma-separated variants (default: %(default)s)")
    p.add_argument("--baseline", default="mobile_sam", help="latency ratios are to this model (added if missing)")
    p.add_argument("--out", help="work directory for the exports (default: a temporary directory, removed at the end)")
    p.add_argument("--json", help="write every number here (default: OUT/bench_families.json, or ./bench_families.json "
                                  "when OUT is temporary)")
    p.add_argument("--runs", type=int, default=5, help="timed encoder runs per model and thread count (default 5)")
    p.add_argument("--seed", type=int, default=0, help="weight seed")
    p.add_argument("--torch-threads", type=int, default=2, help="torch threads for export and the PyTorch reference")
    args = p.parse_args(argv)

    from samdeploy.models.variants import VARIANTS

    models = list(dict.fromkeys(m.strip() for m in args.models.split(",") if m.strip()))
    if args.baseline not in models:
        models.insert(0, args.baseline)
        say(f"added the baseline {args.baseline} to the models")
    bad = [m for m in models if m not in VARIANTS]
    if bad or args.runs < 1:
        print(f"error: {'unknown variant(s) ' + ', '.join(bad) if bad else '--runs must be >= 1'}"
              f" (variants: {', '.join(VARIANTS)})", file=sys.stderr)
        return 2

    import torch

    from samdeploy._io import write_json_atomic

    torch.set_num_threads(args.torch_threads)
    t_start = time.perf_counter()
    temp = args.out is None
    work = Path(tempfile.mkdtemp(prefix="bench_families-")) if temp else Path(args.out)
    work.mkdir(parents=True, exist_ok=True)
    json_path = Path(args.json) if args.json else (Path("bench_families.json") if temp else work / "bench_families.json")
    res: dict[str, Any] = {"host": host_info(), "models_requested": models, "baseline": args.baseline,
                           "runs": args.runs, "warmup": 1, "threads": list(THREADS), "seed": args.seed,
                           "parity_images": PARITY_IMAGES, "work_dir": str(work), "models": [], "latency": {}}
    try:
        for name in models:
            say(f"{name}: export + fp32 parity ...")
            row = export_and_check(name, args.seed, work / name)
            say(f"{name}: export {_f(row.get('export_s'), '.1f')} s, parity {row['parity']}"
                + (f" ({row.get('export_error') or row.get('check_error')})" if "export_error" in row or "check_error" in row else ""))
            res["models"].append(row)
        res["export_check_s"] = time.perf_counter() - t_start

        t_lat = time.perf_counter()
        exported = [r for r in res["models"] if "encoder_input" in r and "export_error" not in r]
        if not any(r["model"] == args.baseline for r in exported):
            say(f"the baseline {args.baseline} did not export: no latency comparison")
        else:
            for t in THREADS:
                say(f"encoder latency, {t} thread(s), {args.runs} round-robin runs over {len(exported)} models ...")
                res["latency"][str(t)] = summarize_latency(encoder_latency(exported, t, args.runs, args.seed), args.baseline)
        res["latency_s"] = time.perf_counter() - t_lat
        res["host"]["load_avg_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
        res["wall_s"] = time.perf_counter() - t_start
        write_json_atomic(json_path, res)
    finally:
        if temp:
            shutil.rmtree(work, ignore_errors=True)

    print(format_report(res))
    print(f"json   {json_path}")
    failed = [r["model"] for r in res["models"] if r["parity"] != "PASS"]
    if failed:
        print(f"error: parity check failed for {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
