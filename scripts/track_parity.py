#!/usr/bin/env python
"""The torch-free Tracker vs the official SAM2VideoPredictor, latency side by side, and flat memory.

    python scripts/track_parity.py                               # S = 1024, 64 frames, 1 and 3 objects
    python scripts/track_parity.py --image-size 512 --rss-frames 1000 --json /tmp/track.json
    python scripts/track_parity.py --image-size 256 --variant sam2.1_hiera_s --scenarios three_objects
    python scripts/track_parity.py --image-size 256 --model-dir /tmp/m --scenarios "" --rss-frames 1000  # twice:
        # the first run exports into /tmp/m, the second tracks in a process that never imports torch

What it does (one run, seeded random SAM2.1 Hiera-T (or ``--variant``) weights in the official ``{"model": ...}`` layout,
realistic decoder, object-score head shifted so objects vanish and come back; sam2==1.1.0 needed):

  1. export encoder/decoder + the video graphs (``--video``) at image size S;
  2. the video of ``tests/fixtures_video.py`` (real photographs: pan, zoom, an object leaving and
     re-entering the frame), tracked by SAM2VideoPredictor and by ``samdeploy.runtime.Tracker`` with the
     scenarios of ``tests/test_tracker_vs_sam2.py`` (1 object; 3 objects added on frames 0/7/20, one
     removed on frame 40): per-frame mask IoU (mean, worst) and per-frame latency (median seconds,
     oracle PyTorch CPU vs ours ONNX Runtime CPU, both at ``--threads``), ratio ours/oracle;
  3. ``--rss-frames N``: our tracker alone on the video looped to N frames with 3 objects, RSS at frame
     100 and frame N (flat = memory bounded) and ``Tracker.memory_footprint()``.

Prints the CPU model and load average. Exit 1 when the IoU targets (mean >= 0.98, worst >= 0.95) fail.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))


def cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--image-size", type=int, default=1024)
    ap.add_argument("--frames", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rss-frames", type=int, default=0, help="also run ours alone this many frames (3 objects)")
    ap.add_argument("--scenarios", default="one_object_box,three_objects")
    ap.add_argument("--variant", default="sam2.1_hiera_t", help="sam2.1_hiera_t or sam2.1_hiera_s (its own config)")
    ap.add_argument("--model-dir", default=None,
                    help="keep the checkpoint + export here and reuse them on the next run; with --scenarios '' the "
                    "run then never imports torch (the RSS of a device process)")
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    scenarios = [n for n in a.scenarios.split(",") if n]  # --scenarios "" = the RSS run alone

    from fixtures_video import SCENARIOS, VIDEO_HW, make_video, make_video_model_files

    from samdeploy.runtime.stream import rss_bytes
    from samdeploy.runtime.tracker import Tracker

    config = f"configs/sam2.1/{a.variant}.yaml"
    keep = Path(a.model_dir) if a.model_dir else None
    reuse = keep is not None and (keep / "export" / "manifest.json").exists()
    if scenarios or not reuse:
        import torch

        torch.set_num_threads(a.threads)
    print(f"cpu {cpu_name()}, {os.cpu_count()} cores, load {os.getloadavg()}, image size {a.image_size}, "
          f"threads {a.threads}, variant {a.variant}")
    report: dict = {"cpu": cpu_name(), "image_size": a.image_size, "threads": a.threads, "frames": a.frames,
                    "variant": a.variant}
    with tempfile.TemporaryDirectory() as tmp:
        root = keep or Path(tmp)
        t0 = time.perf_counter()
        if reuse:
            from samdeploy.contract import read_onnx_contract

            ckpt, export = root / f"{a.variant}.pt", root / "export"
            kept = read_onnx_contract(str(export / "encoder.onnx"))[0]
            if (kept.variant, int(kept.preprocess.input_size)) != (a.variant, a.image_size):
                sys.exit(f"{export} holds {kept.variant} at {kept.preprocess.input_size}, not {a.variant} at "
                         f"{a.image_size}: use another --model-dir")
        else:
            root.mkdir(parents=True, exist_ok=True)
            ckpt, export = make_video_model_files(root, a.image_size, a.variant)
        report["export_s"] = round(time.perf_counter() - t0, 1)
        frames = make_video(Path(tmp) / "video", a.frames, VIDEO_HW)
        ok = True
        for name in scenarios:
            from fixtures_video import run_sam2_video_oracle

            prompts, removals = SCENARIOS[name]
            ref_t: list[float] = []
            ref = run_sam2_video_oracle(ckpt, Path(tmp) / "video", prompts, removals, a.frames, a.image_size, ref_t,
                                        config=config)
            ours, our_t = {}, []
            with Tracker(export, threads=a.threads, num_frames=a.frames, fill_hole_area=0) as tr:
                for r in tr.track_video(frames, prompts, removals):
                    ours[r.frame_index] = {o.obj_id: o.mask for o in r.objects}
                    our_t.append(r.timings["total"] / 1e3)
            ious = []
            for f in range(a.frames):
                for oid, (m, _) in ref[f].items():
                    g = ours[f].get(oid, np.zeros_like(m))
                    u = np.logical_or(g, m).sum()
                    ious.append(1.0 if u == 0 else float(np.logical_and(g, m).sum() / u))
            ious = np.array(ious)
            row = {"object_frames": len(ious), "iou_mean": round(float(ious.mean()), 5),
                   "iou_worst": round(float(ious.min()), 5),
                   "oracle_s_per_frame": round(float(np.median(ref_t)), 4),
                   "ours_s_per_frame": round(float(np.median(our_t)), 4)}
            row["ratio_ours_over_oracle"] = round(row["ours_s_per_frame"] / row["oracle_s_per_frame"], 3)
            ok &= row["iou_mean"] >= 0.98 and row["iou_worst"] >= 0.95
            report[name] = row
            print(name, json.dumps(row))
        if a.rss_frames:
            prompts, removals = SCENARIOS["three_objects"]
            looped = (frames[i % len(frames)] for i in range(a.rss_frames))
            rss = {}
            with Tracker(export, threads=a.threads) as tr:
                for r in tr.track_video(looped, {k: v for k, v in prompts.items()}, {}):
                    n = r.frame_index + 1
                    if n % 100 == 0 or n == a.rss_frames:  # a series, so "flat" is seen, not two points
                        rss[n] = rss_bytes()
                        if n in (100, a.rss_frames):
                            rss[f"footprint@{n}"] = tr.memory_footprint()
            first, last = rss.get(100, 0), rss.get(a.rss_frames, 0)
            series = [v for k, v in rss.items() if isinstance(k, int) and k >= 100]
            report["rss"] = {"frame_100_mb": round(first / 2**20, 1), f"frame_{a.rss_frames}_mb": round(last / 2**20, 1),
                             "change_pct": round(100.0 * (last - first) / max(first, 1), 2),
                             "max_minus_min_pct_100_on": round(100.0 * (max(series) - min(series)) / max(first, 1), 2),
                             "series_mb": {k: round(v / 2**20, 1) for k, v in rss.items() if isinstance(k, int)},
                             "footprints": {k: v for k, v in rss.items() if isinstance(k, str)}}
            print("rss", json.dumps(report["rss"]))
    report["load_after"] = os.getloadavg()
    if a.json:
        Path(a.json).write_text(json.dumps(report, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
