#!/usr/bin/env python
"""SAM 2.1 on ONNX Runtime CPU: our decoder vs SAM2's own mask decoder per prompt, and the Hiera-T
encoder vs MobileSAM's TinyViT (NOT product code; one run, rerunnable).

    python scripts/bench_sam2_decoder.py                       # B = 1,16,64; 1 and 2 threads; 5 rounds
    python scripts/bench_sam2_decoder.py --rounds 7 --json /tmp/sam2_bench.json
    python scripts/bench_sam2_decoder.py --skip-encoder --model-dir out/sam2.1_hiera_t

Decoder (cost per prompt, B prompts on one image):

* ours: ``decoder.onnx`` of ``samdeploy export`` for ``sam2.1_hiera_t`` (seeded random weights,
  ``random_model``), i.e. ``models/factored_decoder.py``: prompt-independent work once per call;
* SAM2's own: the same weights saved in the official layout and loaded by the ``sam2`` package
  (``build_sam2``, its own strict key check), then its ``SAM2Base.sam_prompt_encoder`` and
  ``sam_mask_decoder`` exported to ONNX as they are, with a prompt-batch axis -- what the official
  ``SAM2ImagePredictor`` does for K boxes and the peer exporters do for batched prompts: the image
  embedding is repeated per prompt (``predict_masks(repeat_image=True)``, ``repeat_interleave``),
  the high-resolution features broadcast from batch 1. Points are embedded by the package's own
  ``PromptEncoder._embed_points`` (the padding point is part of the input, as in our contract); the
  mask input is blended with ``no_mask_embed`` by ``has_mask_input`` as the official ONNX exports
  do. Both graphs have the same I/O, get the same feeds, and are checked to agree before timing.

Timing: ONNX Runtime CPU provider, one session per graph and thread count (1 and 2 intra-op
threads), 1 warm-up call per (graph, B), then ``--rounds`` interleaved rounds: in each round every B
is run once by each graph (graph order alternating per round), so load from other processes hits
both alike. Reported per B: median wall ms per prompt, median CPU ms per prompt (process time, all
threads; steadier on a shared machine) and ours/official ratios (of the medians, and the median of
the per-round pairs).

Encoder: ``encoder.onnx`` of sam2.1_hiera_t vs mobile_sam (TinyViT), both 1024x1024, timed by
``bench_families.encoder_latency`` (round robin, 1 warm-up, ``--encoder-runs`` runs) at 1 and 2
threads; ratio = Hiera-T / TinyViT.

The CPU model and the load average (start and end) are printed: absolute numbers move with the load,
ratios are what compares across runs. Needs torch, sam2==1.1.0 (+ hydra) -- test extras.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_families as BF  # noqa: E402  (host_info, encoder_latency, summarize_latency)

from samdeploy import contract as C  # noqa: E402

VARIANT = "sam2.1_hiera_t"
ENCODER_BASELINE = "mobile_sam"
THREADS = (1, 2)


def say(msg: str) -> None:
    print(f"[bench_sam2_decoder] {msg}", file=sys.stderr, flush=True)


# ---- the graphs ---------------------------------------------------------------------------------------
def export_ours(name: str, seed: int, out: Path, graphs=("encoder", "decoder")) -> Path:
    from samdeploy.export.exporter import ExportOptions, export_model
    from samdeploy.export.source import random_source
    from samdeploy.models.build import random_model

    export_model(random_model(name, seed=seed), out, random_source(name, seed), ExportOptions(graphs=tuple(graphs)))
    return out


def official_sam2(name: str, seed: int, work: Path):
    """The sam2 package's SAM2Base with exactly our seeded random weights (official checkpoint layout)."""
    import torch
    from sam2.build_sam import build_sam2

    from samdeploy.models.build import random_model

    ckpt = work / f"{name}.pt"
    torch.save({"model": random_model(name, seed=seed).state_dict()}, ckpt)
    config = ("configs/sam2.1/" if name.startswith("sam2.1") else "configs/sam2/") + name + ".yaml"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return build_sam2(config, str(ckpt), device="cpu").eval()


def export_official_decoder(sam, path: Path, opset: int = 17) -> Path:
    """SAM2's prompt encoder + mask decoder as they are, batched over prompts (see module docstring)."""
    import torch

    class OfficialSam2Decoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.pe = sam.sam_prompt_encoder
            self.dec = sam.sam_mask_decoder

        def forward(self, image_embeddings, high_res_feats_0, high_res_feats_1, point_coords, point_labels,
                    mask_input, has_mask_input):
            sparse = self.pe._embed_points(point_coords, point_labels, pad=False)  # the package's own code
            h = has_mask_input.view(-1, 1, 1, 1)
            dense = h * self.pe._embed_masks(mask_input) + (1 - h) * self.pe.no_mask_embed.weight.reshape(1, -1, 1, 1)
            masks, iou, _, obj = self.dec.predict_masks(
                image_embeddings, self.pe.get_dense_pe(), sparse, dense, repeat_image=True,
                high_res_features=[high_res_feats_0, high_res_feats_1])
            return iou, masks, obj

    b, n = 2, 3
    args = (torch.randn(1, 256, 64, 64), torch.randn(1, 32, 256, 256), torch.randn(1, 64, 128, 128),
            torch.rand(b, n, 2) * 1024, torch.ones(b, n), torch.zeros(b, 1, 256, 256), torch.zeros(b))
    ins = list(C.SAM2_ENCODER_OUTPUTS) + list(C.PROMPT_INPUTS)
    outs = list(C.DECODER_OUTPUTS) + [C.SAM2_OBJECT_SCORE]
    dyn = {C.DECODER_POINT_COORDS: {0: "B", 1: "N"}, C.DECODER_POINT_LABELS: {0: "B", 1: "N"},
           C.DECODER_MASK_INPUT: {0: "B"}, C.DECODER_HAS_MASK_INPUT: {0: "B"}, **{o: {0: "B"} for o in outs}}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(OfficialSam2Decoder().eval(), args, str(path), opset_version=opset, dynamo=False,
                          input_names=ins, output_names=outs, dynamic_axes=dyn)
    return path


def session(path: Path, threads: int):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def feeds_for(feats: dict[str, np.ndarray], b: int, seed: int = 0) -> dict[str, np.ndarray]:
    """B prompts of one click + SAM's padding point, no mask input."""
    rng = np.random.default_rng(seed + b)
    return C.decoder_feeds(feats, (rng.random((b, 2, 2)) * 1024).astype(np.float32),
                           np.tile(np.array([[1.0, -1.0]], np.float32), (b, 1)),
                           np.zeros((b, 1, 256, 256), np.float32), np.zeros((b,), np.float32))


def image_features(encoder_path: Path, seed: int) -> dict[str, np.ndarray]:
    """Realistic decoder inputs: our encoder on a photograph (not random noise)."""
    from samdeploy.images import default_photographs
    from samdeploy.runtime.transforms import preprocess_image

    contract, _ = C.read_onnx_contract(str(encoder_path))
    img = next(iter(default_photographs().values()))
    x, _ = preprocess_image(img, contract.preprocess)
    names = list(contract.encoder.output_names)
    return dict(zip(names, session(encoder_path, 2).run(names, {C.ENCODER_INPUT: x})))


def agreement(ours, official, feats) -> dict[str, float]:
    """Same function? Max abs differences of every output at B = 4 (2 clicks + pad, one with a mask)."""
    rng = np.random.default_rng(7)
    b = 4
    f = C.decoder_feeds(feats, (rng.random((b, 3, 2)) * 1024).astype(np.float32),
                        np.tile(np.array([[1.0, 0.0, -1.0]], np.float32), (b, 1)),
                        (rng.standard_normal((b, 1, 256, 256)) * 5).astype(np.float32),
                        np.array([0, 1, 0, 1], np.float32))
    names = list(C.DECODER_OUTPUTS) + [C.SAM2_OBJECT_SCORE]
    a = dict(zip(names, ours.run(names, f)))
    o = dict(zip(names, official.run(names, f)))
    out = {n: float(np.abs(a[n] - o[n]).max()) for n in names}
    out["mask_scale"] = float(np.abs(o[C.DECODER_LOW_RES_MASKS]).max())
    return out


def time_decoders(paths: dict[str, Path], feats, batch_sizes, rounds: int, threads: int) -> dict[str, Any]:
    """{graph: {B: {"wall": [s per round], "cpu": [...]}}}, interleaved as the docstring says."""
    sessions = {k: session(p, threads) for k, p in paths.items()}
    feeds = {b: feeds_for(feats, b) for b in batch_sizes}
    names = list(sessions)
    for k in names:  # warm-up
        for b in batch_sizes:
            sessions[k].run(None, feeds[b])
    res: dict[str, Any] = {k: {str(b): {"wall": [], "cpu": []} for b in batch_sizes} for k in names}
    for r in range(rounds):
        for b in batch_sizes:
            for k in (names if r % 2 == 0 else names[::-1]):
                c0, t0 = time.process_time(), time.perf_counter()
                sessions[k].run(None, feeds[b])
                res[k][str(b)]["wall"].append(time.perf_counter() - t0)
                res[k][str(b)]["cpu"].append(time.process_time() - c0)
        say(f"  {threads} thread(s): round {r + 1}/{rounds} done")
    return res


def summarize_decoders(raw: dict[str, Any], batch_sizes) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for b in map(str, batch_sizes):
        n = int(b)
        row: dict[str, Any] = {}
        for k in raw:
            w, c = np.asarray(raw[k][b]["wall"]), np.asarray(raw[k][b]["cpu"])
            row[k] = {"wall_ms_per_prompt": float(np.median(w)) * 1e3 / n, "cpu_ms_per_prompt": float(np.median(c)) * 1e3 / n,
                      "wall_ms_per_call_runs": [float(x * 1e3) for x in w]}
        ow, uw = np.asarray(raw["official"][b]["wall"]), np.asarray(raw["ours"][b]["wall"])
        oc, uc = np.asarray(raw["official"][b]["cpu"]), np.asarray(raw["ours"][b]["cpu"])
        row["ratio_wall"] = row["ours"]["wall_ms_per_prompt"] / row["official"]["wall_ms_per_prompt"]
        row["ratio_cpu"] = row["ours"]["cpu_ms_per_prompt"] / row["official"]["cpu_ms_per_prompt"]
        row["ratio_wall_paired_median"] = float(np.median(uw / ow))
        row["ratio_cpu_paired_median"] = float(np.median(uc / np.maximum(oc, 1e-9)))
        out[b] = row
    return out


# ---- report ---------------------------------------------------------------------------------------------
def format_report(res: dict[str, Any]) -> str:
    h = res["host"]
    lines = [
        f"host   {h['cpu']}, {h['cpu_count']} cores ({h['cpus_usable']} usable), {h['machine']}",
        f"       onnxruntime {h['onnxruntime']}, torch {h['torch']}, sam2 {res.get('sam2_version', '?')}, "
        f"samdeploy {h['samdeploy']}",
        f"       load average {BF._load(h.get('load_avg_start'))} at start, {BF._load(h.get('load_avg_end'))} at end",
        f"weights seeded random (seed {res['seed']}); {VARIANT}; decoder: 1 warm-up + {res['rounds']} interleaved "
        "rounds, 1 click + pad point per prompt, no mask input",
        "agreement ours vs SAM2's decoder (B=4, max abs): "
        + ", ".join(f"{k} {v:.2e}" for k, v in res["agreement"].items() if k != "mask_scale")
        + f" (mask logits up to {res['agreement']['mask_scale']:.1f})",
    ]
    for t, rows in res["decoder"].items():
        lines += ["", f"decoder, ORT CPU, {t} thread(s): ms per prompt (median), ours/official",
                  f"{'B':>4}{'official wall':>15}{'ours wall':>11}{'ratio':>7}{'paired':>8}"
                  f"{'official cpu':>14}{'ours cpu':>10}{'ratio':>7}{'paired':>8}"]
        for b, r in rows.items():
            lines.append(f"{b:>4}{r['official']['wall_ms_per_prompt']:>15.2f}{r['ours']['wall_ms_per_prompt']:>11.2f}"
                         f"{r['ratio_wall']:>7.2f}{r['ratio_wall_paired_median']:>8.2f}"
                         f"{r['official']['cpu_ms_per_prompt']:>14.2f}{r['ours']['cpu_ms_per_prompt']:>10.2f}"
                         f"{r['ratio_cpu']:>7.2f}{r['ratio_cpu_paired_median']:>8.2f}")
    enc = res.get("encoder") or {}
    if enc:
        lines += ["", f"encoder, ORT CPU, 1024x1024, 1 warm-up + {res['encoder_runs']} round-robin runs: median ms, "
                      f"ratio = {VARIANT} / {ENCODER_BASELINE} (TinyViT)"]
        lines.append(f"{'threads':>8}{ENCODER_BASELINE + ' ms':>16}{VARIANT + ' ms':>20}{'ratio':>8}{'paired':>8}")
        for t, s in enc.items():
            lines.append(f"{t:>8}{s[ENCODER_BASELINE]['median_ms']:>16.0f}{s[VARIANT]['median_ms']:>20.0f}"
                         f"{s[VARIANT]['ratio_to_baseline']:>8.2f}{s[VARIANT]['paired_ratio_median']:>8.2f}")
    lines.append(f"wall time {res['wall_s']:.0f} s")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-dir", help=f"our {VARIANT} export (default: export seeded random weights)")
    p.add_argument("--batch-sizes", default="1,16,64")
    p.add_argument("--threads", default=",".join(map(str, THREADS)))
    p.add_argument("--rounds", type=int, default=5, help="interleaved decoder rounds (default 5)")
    p.add_argument("--encoder-runs", type=int, default=5, help="timed encoder runs per model and thread count")
    p.add_argument("--skip-encoder", action="store_true", help="decoder comparison only")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--torch-threads", type=int, default=2)
    p.add_argument("--work", help="work directory (default: temporary, removed)")
    p.add_argument("--json", help="write every number here")
    args = p.parse_args(argv)
    try:
        bs = [int(x) for x in args.batch_sizes.split(",") if x.strip()]
        threads = [int(x) for x in args.threads.split(",") if x.strip()]
    except ValueError:
        print("error: --batch-sizes/--threads take comma-separated integers", file=sys.stderr)
        return 2
    if not bs or not threads or min(bs + threads) < 1 or args.rounds < 1 or args.encoder_runs < 1:
        print("error: batch sizes, threads, --rounds and --encoder-runs must be >= 1", file=sys.stderr)
        return 2

    import torch

    from samdeploy._io import write_json_atomic

    torch.set_num_threads(args.torch_threads)
    t_start = time.perf_counter()
    temp = args.work is None
    work = Path(tempfile.mkdtemp(prefix="bench_sam2-")) if temp else Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    res: dict[str, Any] = {"host": BF.host_info(), "seed": args.seed, "rounds": args.rounds,
                           "batch_sizes": bs, "threads": threads, "encoder_runs": args.encoder_runs}
    try:
        import sam2

        res["sam2_version"] = getattr(sam2, "__version__", None) or _dist_version("sam2")
        ours_dir = Path(args.model_dir) if args.model_dir else None
        if ours_dir is None:
            say(f"exporting our {VARIANT} (seed {args.seed}) ...")
            ours_dir = export_ours(VARIANT, args.seed, work / VARIANT)
        say("building SAM2's own model with the same weights and exporting its decoder as is ...")
        official_path = export_official_decoder(official_sam2(VARIANT, args.seed, work), work / "official_sam2_decoder.onnx")
        paths = {"official": official_path, "ours": ours_dir / "decoder.onnx"}
        res["paths"] = {k: str(v) for k, v in paths.items()}
        feats = image_features(ours_dir / "encoder.onnx", args.seed)
        res["agreement"] = agreement(session(paths["ours"], 2), session(paths["official"], 2), feats)
        say(f"agreement: {res['agreement']}")
        res["decoder"], res["decoder_raw"] = {}, {}
        for t in threads:
            say(f"decoder timing, {t} thread(s), B={bs}, {args.rounds} rounds ...")
            raw = time_decoders(paths, feats, bs, args.rounds, t)
            res["decoder_raw"][str(t)] = raw
            res["decoder"][str(t)] = summarize_decoders(raw, bs)
        if not args.skip_encoder:
            say(f"exporting {ENCODER_BASELINE}'s encoder (seed {args.seed}) ...")
            base_dir = export_ours(ENCODER_BASELINE, args.seed, work / ENCODER_BASELINE, graphs=("encoder",))
            rows = [{"model": ENCODER_BASELINE, "dir": str(base_dir), "encoder_input": 1024},
                    {"model": VARIANT, "dir": str(ours_dir), "encoder_input": 1024}]
            res["encoder"] = {}
            for t in threads:
                say(f"encoder timing, {t} thread(s), {args.encoder_runs} runs ...")
                res["encoder"][str(t)] = BF.summarize_latency(BF.encoder_latency(rows, t, args.encoder_runs, args.seed),
                                                              ENCODER_BASELINE)
        res["host"]["load_avg_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
        res["wall_s"] = time.perf_counter() - t_start
        if args.json:
            write_json_atomic(args.json, res)
    finally:
        if temp:
            shutil.rmtree(work, ignore_errors=True)
    print(format_report(res))
    if args.json:
        print(f"json   {args.json}")
    return 0


def _dist_version(name: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


if __name__ == "__main__":
    sys.exit(main())
