#!/usr/bin/env python
"""INT8 SAM2.1 Hiera encoders (issue 10): gate figures at the default `samdeploy calibrate` settings,
INT8 vs FP32 encoder speed on ONNX Runtime's CPU provider (MLAS) and OpenVINO execution provider, and
the peak memory of every command -- one run, every number of the issue note.

    python scripts/bench_int8_sam2.py --out bench_sam2/                   # Hiera-T and Hiera-S (~40 min on 2 cores)
    python scripts/bench_int8_sam2.py --out b/ --variants sam2.1_hiera_t  # Hiera-T only

Steps, per --variants entry (seeded random weights, realistic decoder scale, saved as an
OFFICIAL-layout checkpoint ``{"model": state_dict}`` like tests/test_family_sam2.py does, so every
command takes the ``--checkpoint`` path a real user takes):

  1. ``samdeploy export --checkpoint``, ``samdeploy check``, ``samdeploy calibrate`` (default settings:
     Hessian search 100 x 3, the 7 bundled photographs, default gate) for ``--target tensorrt`` with
     an empty statistics cache, then ``--target ort-cpu`` reusing the statistics. Every command runs
     as a child of a small wrapper process, so ``getrusage(RUSAGE_CHILDREN).ru_maxrss`` is that
     command's peak RSS. When a calibration fails the gate (exit 1, nothing written) its figures are
     read from the error table and the INT8 file for the speed runs is written by a re-run with the
     gate off (statistics and scales cached, same file).
  2. Predictor RSS: a fresh process opens the FP32 / INT8 directory (``Predictor(dir, threads=2)``),
     ``set_image`` on a photograph and one click ``predict``; its peak RSS.
  3. Speed (--speed-variants, default Hiera-T): one worker process per provider (CPU: the installed
     onnxruntime; OpenVINO: the ``onnxruntime-openvino`` build from --openvino-site first on
     PYTHONPATH, as tests/test_runtime_openvino.py does) holds the FP32, INT8-tensorrt and
     INT8-ort-cpu encoders at 1 and 2 threads, opened the way the runtime opens them
     (``OrtBackend``: INT8 lowering on the CPU provider). Rounds alternate between the workers and
     every round runs every session once: all configurations see the same machine load. Median ms and
     FP32/INT8 ratios; cosine of each INT8 output to the same provider's FP32 output.

CPU model and load average are printed at the start and the end. Results: <out>/bench_int8_sam2.json
and <out>/bench_int8_sam2.md; command logs in <out>/logs/. Random weights: the gate measures how much
INT8 perturbs a random network (see calibration/README.md), not task accuracy.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OV_SITE = REPO / ".cache" / "ort-openvino"
SAMDEPLOY = [sys.executable, "-m", "samdeploy.cli.main"]

# A wrapper process per command: its RUSAGE_CHILDREN peak is exactly the command's peak RSS.
_WRAP = r"""
import json, resource, subprocess, sys, time
out, log, cmd = sys.argv[1], sys.argv[2], sys.argv[3:]
t = time.perf_counter()
with open(log, "w") as f:
    rc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT).returncode
json.dump({"rc": rc, "wall_s": time.perf_counter() - t,
           "peak_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0}, open(out, "w"))
"""

_CHECKPOINT = r"""
import sys, torch
from samdeploy.models.build import random_model
torch.save({"model": random_model(sys.argv[1], seed=0).state_dict()}, sys.argv[2])
"""

_PREDICTOR = r"""
import json, resource, sys, time
import numpy as np
from samdeploy.images import held_out_photographs
from samdeploy.runtime import Predictor
t = time.perf_counter()
p = Predictor(sys.argv[1], threads=2)
img = held_out_photographs()["camera"]
p.set_image(img)
masks, scores, _ = p.predict(np.array([[img.shape[1] / 2, img.shape[0] / 2]], np.float32), np.array([1.0], np.float32))
assert np.isfinite(scores).all()
print(json.dumps({"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
                  "wall_s": time.perf_counter() - t, "torch_imported": "torch" in sys.modules}))
"""

# Speed worker: holds sessions, answers "round" with one timing per session (JSON lines protocol).
_WORKER = r"""
import json, sys, time
import numpy as np
from samdeploy.contract import ENCODER_INPUT
from samdeploy.runtime.backends.onnxruntime import OrtBackend
import onnxruntime as ort
provider, specs = sys.argv[1], json.loads(sys.argv[2])
sessions = {}
for key, path, threads in specs:
    sessions[key] = OrtBackend(path, "encoder", providers=provider, threads=threads)
x = np.random.default_rng(0).uniform(0, 255, (1, 3, 1024, 1024)).astype(np.float32)
first = {k: s.run({ENCODER_INPUT: x}) for k, s in sessions.items()}  # warm-up + outputs for the cosine
ref = {}
for k, outs in first.items():
    ref.setdefault(k.split("|")[1], outs)  # keyed by threads: the FP32 session comes first
def cos(a, b):
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))
info = {"ort": ort.__version__, "providers": {k: s.providers[0] for k, s in sessions.items()},
        "cosine_to_fp32": {k: {n: cos(first[k][n], ref[k.split("|")[1]][n]) for n in first[k]} for k in sessions}}
print(json.dumps(info), flush=True)
for line in sys.stdin:
    if line.strip() != "round":
        break
    times = {}
    for k, s in sessions.items():
        t = time.perf_counter()
        s.run({ENCODER_INPUT: x})
        times[k] = time.perf_counter() - t
    print(json.dumps(times), flush=True)
"""


def cpu_model() -> str:
    try:
        for ln in open("/proc/cpuinfo", encoding="utf-8"):
            if ln.startswith("model name"):
                return ln.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or "?"


def machine() -> dict:
    return {"cpu": cpu_model(), "cpus": os.cpu_count(), "loadavg": [round(v, 2) for v in os.getloadavg()],
            "time": time.strftime("%Y-%m-%d %H:%M:%S")}


def say(s: str) -> None:
    print(s, flush=True)


def measured(cmd: list[str], logs: Path, name: str, env: dict | None = None) -> dict:
    """Run ``cmd`` under the RSS wrapper; {"rc", "wall_s", "peak_rss_mb", "log", "cmd"}."""
    logs.mkdir(parents=True, exist_ok=True)
    res, log = logs / f"{name}.json", logs / f"{name}.log"
    subprocess.run([sys.executable, "-c", _WRAP, str(res), str(log), *cmd], check=True, env=env)
    r = json.loads(res.read_text())
    r.update(log=str(log), cmd=" ".join(cmd))
    say(f"  {name}: exit {r['rc']}, {r['wall_s']:.0f} s, peak RSS {r['peak_rss_mb']:.0f} MB")
    return r


_TABLE_ROW = re.compile(r"^\|\s*(\w+) \(chosen\)\s*\|\s*([\d.]+)\s*\|\s*([\d.]+)\s*\|\s*([\d.]+)\s*\|")


def gate_figures(out_dir: Path, log: str) -> dict:
    """Gate figures from calibration.json (gate passed) or from the error table (gate failed)."""
    doc_path = out_dir / "calibration.json"
    if doc_path.exists():
        doc = json.loads(doc_path.read_text())
        m = doc["final_metrics"]
        return {"passed": not doc["gate_problems"], "mean_iou": m["mean_iou"], "p5_iou": m["p5_iou"],
                "min_iou": m["min_iou"], "masks": m["masks"], "images": m["images"],
                "mask_logit_rel_err": m["mask_logit_rel_err"], "output_cosine": m["output_cosine"],
                "extra_output_max_abs": m.get("extra_output_max_abs", {}), "gate": doc["gate"],
                "encoder_outputs": doc["encoder_outputs"], "quantized_layers": sum(1 for v in doc["layers"].values() if v["quantized"]),
                "timings_s": doc["timings_s"]}
    for ln in Path(log).read_text().splitlines():
        m = _TABLE_ROW.match(ln.strip())
        if m:
            return {"passed": False, "mean_iou": float(m.group(2)), "p5_iou": float(m.group(3)), "min_iou": float(m.group(4))}
    return {"passed": False, "error": f"no figures (see {log})"}


def calibrate_variant(v: str, root: Path, logs: Path, ckpt: Path) -> dict:
    fp32 = root / "fp32"
    out: dict = {}
    cache = root / "calib-cache"
    shutil.rmtree(cache, ignore_errors=True)  # the first calibration's RSS includes collecting statistics
    for target in ("tensorrt", "ort-cpu"):
        d = root / f"int8-{target}"
        shutil.rmtree(d, ignore_errors=True)
        cmd = [*SAMDEPLOY, "calibrate", "--model-dir", str(fp32), "--out", str(d), "--target", target,
               "--cache-dir", str(cache), "--no-progress", "--checkpoint", str(ckpt)]
        r = measured(cmd, logs, f"{v}-calibrate-{target}")
        r["statistics_cached"] = target != "tensorrt"
        r["gate"] = gate_figures(d, r["log"])
        g = r["gate"]
        say(f"  {v} {target}: gate {'PASSED' if g.get('passed') else 'FAILED'} mean IoU {g.get('mean_iou', float('nan')):.4f} "
            f"p5 {g.get('p5_iou', float('nan')):.4f}")
        if r["rc"] == 1:  # gate failed: write the same file with the gate off for the speed runs
            rr = measured([*cmd, "--gate-mean-iou", "0", "--gate-p5-iou", "0"], logs, f"{v}-calibrate-{target}-nogate")
            r["file_written_with_gate_off"] = rr["rc"] == 0
        out[target] = r
    return out


def predictor_rss(v: str, dirs: dict[str, Path], logs: Path) -> dict:
    out = {}
    for name, d in dirs.items():
        if not (d / "manifest.json").exists():
            continue
        p = subprocess.run([sys.executable, "-c", _PREDICTOR, str(d)], capture_output=True, text=True)
        if p.returncode != 0:
            (logs / f"{v}-predictor-{name}.log").write_text(p.stdout + p.stderr)
            out[name] = {"error": p.stderr.strip().splitlines()[-1] if p.stderr.strip() else "failed"}
            continue
        out[name] = json.loads(p.stdout.strip().splitlines()[-1])
        say(f"  {v} Predictor {name}: peak RSS {out[name]['peak_rss_mb']:.0f} MB (set_image + 1 predict)")
    return out


def speed(v: str, root: Path, threads: list[int], rounds: int, ov_site: Path | None) -> dict:
    files = {"fp32": root / "fp32" / "encoder.onnx", "int8-tensorrt": root / "int8-tensorrt" / "encoder.int8.onnx",
             "int8-ort-cpu": root / "int8-ort-cpu" / "encoder.int8.onnx"}
    files = {k: f for k, f in files.items() if f.exists()}
    specs = [[f"{k}|{t}", str(f), t] for t in threads for k, f in files.items()]
    workers = {}
    envs = {"cpu": dict(os.environ)}
    if ov_site is not None and (ov_site / "onnxruntime" / "__init__.py").exists():
        envs["openvino"] = {**os.environ, "PYTHONWARNINGS": "ignore",
                            "PYTHONPATH": os.pathsep.join([str(ov_site), *filter(None, [os.environ.get("PYTHONPATH")])])}
    else:
        say(f"  OpenVINO: onnxruntime-openvino not found in {ov_site}; CPU provider only")
    info = {}
    for prov, env in envs.items():
        w = subprocess.Popen([sys.executable, "-c", _WORKER, prov, json.dumps(specs)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True, env=env)
        workers[prov] = w
        info[prov] = json.loads(w.stdout.readline())
    times: dict[str, dict[str, list[float]]] = {p: {s[0]: [] for s in specs} for p in workers}
    for r in range(rounds):
        for prov, w in workers.items():
            w.stdin.write("round\n")
            w.stdin.flush()
            for k, t in json.loads(w.stdout.readline()).items():
                times[prov][k].append(t)
        say(f"  speed round {r + 1}/{rounds} (load {os.getloadavg()[0]:.2f})")
    for w in workers.values():
        w.stdin.write("stop\n")
        w.stdin.flush()
        w.wait()
    import statistics

    table = {}
    for prov, per in times.items():
        for key, ts in per.items():
            name, t = key.split("|")
            table.setdefault(prov, {}).setdefault(t, {})[name] = {"median_ms": statistics.median(ts) * 1e3,
                                                                  "min_ms": min(ts) * 1e3, "runs": len(ts)}
    for prov, per_t in table.items():
        for t, row in per_t.items():
            base = row["fp32"]["median_ms"]
            for name, cell in row.items():
                cell["speedup_vs_fp32"] = base / cell["median_ms"]
    return {"threads": threads, "rounds": rounds, "files": {k: str(f) for k, f in files.items()},
            "workers": info, "results": table}


def report_md(res: dict) -> str:
    L = ["# INT8 SAM2.1 encoders: gate, speed, memory", "",
         f"- CPU: {res['machine_start']['cpu']} ({res['machine_start']['cpus']} logical CPUs); load average at start "
         f"{res['machine_start']['loadavg']}, at end {res['machine_end']['loadavg']}",
         f"- started {res['machine_start']['time']}, finished {res['machine_end']['time']}; command: `{res['command']}`", ""]
    L += ["## Gate (default calibrate settings; held-out photographs; FP32 decoder on the INT8 encoder's outputs)", "",
          "| variant | target | gate | mean IoU | p5 IoU | min IoU | masks | cosine per output | quantized layers |",
          "|---|---|---|---|---|---|---|---|---|"]
    for v, r in res["variants"].items():
        for target, c in r.get("calibrate", {}).items():
            g = c["gate"]
            cos = ", ".join(f"{n} {x['mean']:.5f}" for n, x in g.get("output_cosine", {}).items())
            L.append(f"| {v} | {target} | {'PASSED' if g.get('passed') else 'FAILED'} | {g.get('mean_iou', float('nan')):.4f} | "
                     f"{g.get('p5_iou', float('nan')):.4f} | {g.get('min_iou', float('nan')):.4f} | {g.get('masks', '-')} | {cos} | "
                     f"{g.get('quantized_layers', '-')} |")
    L += ["", "## Peak RSS of the commands", "", "| variant | command | exit | wall s | peak RSS MB |", "|---|---|---|---|---|"]
    for v, r in res["variants"].items():
        for name, c in r.get("commands", {}).items():
            L.append(f"| {v} | {name} | {c['rc']} | {c['wall_s']:.0f} | {c['peak_rss_mb']:.0f} |")
        for target, c in r.get("calibrate", {}).items():
            tag = " (statistics cached)" if c.get("statistics_cached") else ""
            L.append(f"| {v} | calibrate --target {target}{tag} | {c['rc']} | {c['wall_s']:.0f} | {c['peak_rss_mb']:.0f} |")
        for name, c in r.get("predictor", {}).items():
            if "peak_rss_mb" in c:
                L.append(f"| {v} | Predictor({name}) + set_image + 1 predict | 0 | {c['wall_s']:.0f} | {c['peak_rss_mb']:.0f} |")
    for v, r in res["variants"].items():
        sp = r.get("speed")
        if not sp:
            continue
        L += ["", f"## Encoder speed, {v} (median ms of {sp['rounds']} interleaved rounds; x = FP32 / INT8)", "",
              "| provider | threads | FP32 | INT8 tensorrt placement | INT8 ort-cpu placement |", "|---|---|---|---|---|"]
        for prov, per_t in sp["results"].items():
            for t, row in per_t.items():
                cells = [f"{row['fp32']['median_ms']:.0f}"]
                for k in ("int8-tensorrt", "int8-ort-cpu"):
                    c = row.get(k)
                    cells.append(f"{c['median_ms']:.0f} (x{c['speedup_vs_fp32']:.2f})" if c else "-")
                L.append(f"| {prov} ({sp['workers'][prov]['ort']}) | {t} | " + " | ".join(cells) + " |")
        L += ["", "Cosine of each INT8 output to the same provider's FP32 output (random input): " + "; ".join(
            f"{prov} {k}: " + ", ".join(f"{n} {c:.4f}" for n, c in d.items())
            for prov, w in sp["workers"].items() for k, d in w["cosine_to_fp32"].items() if not k.startswith("fp32|"))]
    L += ["", "Random weights (realistic decoder scale): the gate measures INT8 perturbation of a random network, "
          "not task accuracy. The decoder is not quantized (FP32 decoder.onnx in every INT8 directory)."]
    return "\n".join(L) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="working and results directory")
    p.add_argument("--variants", nargs="+", default=["sam2.1_hiera_t", "sam2.1_hiera_s"])
    p.add_argument("--speed-variants", nargs="*", default=["sam2.1_hiera_t"])
    p.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    p.add_argument("--rounds", type=int, default=7, help="interleaved speed rounds (default 7)")
    p.add_argument("--openvino-site", default=str(DEFAULT_OV_SITE),
                   help="folder holding the onnxruntime-openvino build (pip install --no-deps --target ...)")
    p.add_argument("--skip-check", action="store_true", help="do not run `samdeploy check`")
    args = p.parse_args(argv)

    out = Path(args.out).resolve()
    logs = out / "logs"
    out.mkdir(parents=True, exist_ok=True)
    res = {"command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
           "machine_start": machine(), "variants": {}}
    say(f"CPU: {res['machine_start']['cpu']} x{res['machine_start']['cpus']}, load average {res['machine_start']['loadavg']}")
    for v in args.variants:
        say(f"== {v}")
        root = out / v
        root.mkdir(parents=True, exist_ok=True)
        ckpt = root / f"{v}-random-seed0.pt"
        if not ckpt.exists():
            subprocess.run([sys.executable, "-c", _CHECKPOINT, v, str(ckpt)], check=True)
        r: dict = {"checkpoint": str(ckpt), "commands": {}}
        shutil.rmtree(root / "fp32", ignore_errors=True)
        r["commands"]["export"] = measured([*SAMDEPLOY, "export", "--checkpoint", str(ckpt), "--out", str(root / "fp32")],
                                           logs, f"{v}-export")
        if r["commands"]["export"]["rc"] != 0:
            say(f"  export failed, see {r['commands']['export']['log']}")
            res["variants"][v] = r
            continue
        if not args.skip_check:
            r["commands"]["check"] = measured([*SAMDEPLOY, "check", str(root / "fp32"), "--json", str(root / "check.json")],
                                              logs, f"{v}-check")
        r["calibrate"] = calibrate_variant(v, root, logs, ckpt)
        r["predictor"] = predictor_rss(v, {"fp32": root / "fp32", "int8-tensorrt": root / "int8-tensorrt",
                                           "int8-ort-cpu": root / "int8-ort-cpu"}, logs)
        if v in args.speed_variants:
            r["speed"] = speed(v, root, args.threads, args.rounds, Path(args.openvino_site) if args.openvino_site else None)
        res["variants"][v] = r
        (out / "bench_int8_sam2.json").write_text(json.dumps(res, indent=1))  # partial results survive a crash
    res["machine_end"] = machine()
    say(f"load average at end {res['machine_end']['loadavg']}")
    (out / "bench_int8_sam2.json").write_text(json.dumps(res, indent=1))
    md = report_md(res)
    (out / "bench_int8_sam2.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
