"""``samdeploy calibrate``: INT8 post-training quantization (Hessian-guided scale search) -> QDQ ONNX.

    samdeploy calibrate --model-dir exp --out exp/int8                       # Hessian, encoder, the 7 bundled photos
    samdeploy calibrate --model-dir exp --out int8 --images calib/ --eval-images holdout/ --compare-methods
    samdeploy calibrate --model-dir exp --out int8 --auto-mixed-precision --gate-mean-iou 0.98

Exit codes: 0 written, 1 accuracy gate failed (nothing written), 2 bad input.
"""

from __future__ import annotations

import argparse

from ._args import add_reference_model_arguments

HELP = "INT8 post-training quantization (Hessian-guided scale search) to QDQ ONNX + report"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model-dir", required=True, metavar="DIR", help="export directory (encoder.onnx, decoder.onnx, manifest.json)")
    p.add_argument("--out", metavar="DIR", default=None, help="output directory (default: MODEL_DIR/int8)")
    add_reference_model_arguments(p)
    data = p.add_argument_group("data")
    data.add_argument("--images", nargs="+", metavar="PATH",
                      help="calibration image files and/or folders, any size (default: bundled photographs)")
    data.add_argument("--num-images", type=int, default=8, metavar="N",
                      help="calibration images to use, at most (default 8, as TinySAM). Without --images the "
                           "bundled set has 7 photographs, so the default calibrates on those 7")
    data.add_argument("--eval-images", nargs="+", metavar="PATH",
                      help="held-out images for the accuracy gate (default: bundled held-out photographs)")
    data.add_argument("--prompts-per-image", type=int, default=8, metavar="N",
                      help="decoder prompts per calibration image for the task-loss gradient (default 8)")
    data.add_argument("--tokens-per-image", type=int, default=256, metavar="N",
                      help="sampled positions per layer per image kept for the search (default 256)")
    q = p.add_argument_group("quantization")
    q.add_argument("--method", choices=("hessian", "minmax", "percentile", "entropy"), default="hessian",
                   help="scale selection (default: hessian = TinySAM/PTQ4ViT Hessian-guided search)")
    q.add_argument("--graphs", default="encoder", help="encoder (default) or encoder,decoder")
    q.add_argument("--exclude", action="append", default=[], metavar="PATTERN",
                   help="keep layers matching this fnmatch pattern in float (repeatable), e.g. 'image_encoder.neck.*'")
    q.add_argument("--target", choices=("tensorrt", "ort-cpu", "openvino"), default="tensorrt",
                   help="tensorrt (default): quantize every Conv/Linear (TensorRT fuses Q/DQ into INT8 kernels); "
                   "ort-cpu: Linear layers, plus compute-bound Convs with their outputs quantized too "
                   "(ONNX Runtime CPU runs a QDQ Conv in INT8 only that way, and it pays off only for heavy convs); "
                   "openvino: the TensorRT placement, for ONNX Runtime's OpenVINO execution provider on the CPU")
    q.add_argument("--conv-output-quant", action="store_true",
                   help="also quantize Conv outputs (lets ONNX Runtime CPU run Conv as QLinearConv)")
    q.add_argument("--auto-mixed-precision", action="store_true",
                   help="keep the most sensitive layers in float until the gate passes; report the speed cost")
    q.add_argument("--compare-methods", action="store_true", help="evaluate all four methods side by side (one table)")
    gate = p.add_argument_group("accuracy gate (FP32 vs INT8 through ONNX Runtime on held-out images)")
    from ..check.thresholds import DEFAULTS  # the one threshold registry (torch-free)

    mean, p5 = DEFAULTS["int8"]["mask_iou_mean"], DEFAULTS["int8"]["mask_iou_p5"]
    gate.add_argument("--gate-mean-iou", type=float, default=mean, help=f"minimum mean mask IoU (default {mean})")
    gate.add_argument("--gate-p5-iou", type=float, default=p5, help=f"minimum 5th-percentile mask IoU (default {p5})")
    rt = p.add_argument_group("run")
    rt.add_argument("--cache-dir", metavar="DIR", default=None,
                    help="statistics cache (default ~/.cache/samdeploy/calibration; a re-run skips finished images/layers)")
    rt.add_argument("--no-cache", action="store_true", help="do not read or write the statistics cache")
    rt.add_argument("--threads", type=int, default=0, help="torch / ONNX Runtime threads (default: library defaults)")
    rt.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    import time
    from pathlib import Path

    from ..calibration.evaluate import Gate
    from ..calibration.pipeline import CalibrationSettings, calibrate, peak_rss_mb
    from ..errors import InputError
    from ..export.manifest import read_manifest
    from ..images import load_images

    t0 = time.perf_counter()
    graphs = tuple(g.strip() for g in args.graphs.split(",") if g.strip())
    settings = CalibrationSettings(
        method=args.method,
        graphs=graphs,
        num_images=args.num_images,
        tokens_per_image=args.tokens_per_image,
        prompts_per_image=args.prompts_per_image,
        target=args.target,
        conv_output_quant=args.conv_output_quant,
        exclude=tuple(args.exclude),
        gate=Gate(mean_iou=args.gate_mean_iou, p5_iou=args.gate_p5_iou),
        threads=args.threads,
    )
    settings.validate()
    random_seed = None
    if args.random_weights:
        if args.checkpoint:
            raise InputError("--random-weights and --checkpoint are mutually exclusive", hint="pass one of them")
        random_seed = args.seed if args.seed is not None else int(read_manifest(args.model_dir).get("source", {}).get("seed", 0))
    elif args.seed is not None:
        raise InputError("--seed only applies with --random-weights")
    images = load_images(args.images, args.num_images) if args.images else None
    eval_images = load_images(args.eval_images) if args.eval_images else None
    out = args.out or str(Path(args.model_dir) / "int8")
    cache = None if args.no_cache else (args.cache_dir or "default")

    def say(s: str) -> None:
        print(f"samdeploy calibrate: {s}", flush=True)

    if settings.target != "ort-cpu":
        say(f"target {settings.target}: every Conv/Linear input is quantized (TensorRT's placement); on ONNX "
            "Runtime's default CPU provider such a file can run slower than FP32 (MobileSAM's quantized convs do), "
            "so use --target ort-cpu for that provider; the gate runs it there anyway (same scales and integer "
            "arithmetic) and the report's speed line says how this model fares")

    try:
        result = calibrate(
            args.model_dir, out, settings, images=images, eval_images=eval_images, checkpoint=args.checkpoint,
            random_seed=random_seed, trust_pickle=args.trust_pickle, compare_methods=args.compare_methods,
            auto_mixed_precision=args.auto_mixed_precision, cache_dir=cache, progress=not args.no_progress, log=say,
        )
    finally:
        say(f"time {time.perf_counter() - t0:.1f} s, peak RSS {peak_rss_mb():.0f} MB")
    from ..calibration.report import results_table

    print(results_table(result))
    if result.mixed:
        from ..calibration.mixed import summarize

        say(summarize(result.mixed))
    say(f"gate passed: {result.metrics.line()}")
    for f in result.files:
        say(f"wrote {f}")
    return 0
