"""``samdeploy bench --model-dir DIR [--image IMG] [--batch-sizes 1,4,16,64] [--runs N] [--json PATH] [--plot PNG]``

Encoder latency, decoder latency per prompt across batch sizes, pre-/post-processing latency for a
1920x1080 image (p50/p90/p99 after warm-up), peak RSS, backend versions, and the ratios against
this machine's measured GEMM floor. Never imports torch."""

from __future__ import annotations

import argparse
import json

HELP = "latency benchmark: encoder, decoder per prompt across batch sizes, pre/post"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from .predict_cmd import add_model_arguments

    add_model_arguments(p)
    p.add_argument("--image", default=None, help="image to benchmark on (resized to 1920x1080; default: a sample photograph)")
    p.add_argument("--batch-sizes", default="1,4,16,64", help="decoder prompt batch sizes (comma-separated)")
    p.add_argument("--runs", type=int, default=20, help="timed runs per measurement (after warm-up)")
    p.add_argument("--warmup", type=int, default=3, help="warm-up runs per measurement")
    p.add_argument("--encoder-runs", type=int, default=None, help="timed encoder runs (default: min(runs, 10))")
    p.add_argument("--no-gemm", action="store_true", help="skip the GEMM-rate measurement and floors")
    p.add_argument("--profile", default=None, metavar="DIR",
                   help="also profile the decoder with ONNX Runtime (batch 1 and the largest batch); traces go to DIR")
    p.add_argument("--json", default=None, metavar="PATH", help="write all results as JSON ('-' = stdout)")
    p.add_argument("--plot", default=None, metavar="PNG", help="write a chart of the results")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--compare", default=None, metavar="DIR",
                   help="also benchmark this model directory (another export, its INT8 output, an import) in the "
                   "same run, interleaved, and report ours / theirs per stage")
    p.add_argument("--rounds", type=int, default=None,
                   help="with --compare: interleaved rounds, order rotated each round (default 3)")


def parse_batch_sizes(text: str) -> list[int]:
    from samdeploy.errors import InputError

    try:
        bs = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise InputError(f"--batch-sizes {text!r} is not a list of integers", hint="e.g. --batch-sizes 1,4,16,64") from None
    if not bs or min(bs) < 1:
        raise InputError("--batch-sizes must be positive integers")
    return bs


def run(args: argparse.Namespace) -> int:
    from samdeploy._io import write_json_atomic
    from samdeploy.images import load_image
    from samdeploy.runtime import Predictor
    from samdeploy.runtime.bench import compare_rounds, format_comparison, format_table, plot, run_bench

    from samdeploy.errors import InputError

    bs = parse_batch_sizes(args.batch_sizes)
    if args.rounds is not None and (args.compare is None or args.rounds < 1):
        raise InputError("--rounds needs --compare DIR and a value >= 1", hint="e.g. --compare other_export --rounds 3")
    image = load_image(args.image) if args.image else None
    opts = dict(backend=args.backend, providers=args.providers, threads=args.threads, max_batch=max(bs))
    pred = Predictor(args.model_dir, encoder=args.encoder, decoder=args.decoder, **opts)
    other = None
    try:
        if args.compare is not None:
            other = Predictor(args.compare, **opts)  # opened up front: a bad directory fails before any timing

        def bench(p, gemm: bool):
            return run_bench(p, image=image, batch_sizes=bs, runs=args.runs, warmup=args.warmup,
                             encoder_runs=args.encoder_runs, gemm=gemm and not args.no_gemm,
                             profile_dir=args.profile if p is pred else None, progress=not args.quiet)

        res = bench(pred, True)
        cmp = None
        if other is not None:
            ours, theirs = [res], [bench(other, False)]  # round 0: ours (above), then theirs
            for i in range(1, args.rounds or 3):  # then the order alternates: theirs first, ours first, ...
                for p, sink in ([(other, theirs), (pred, ours)] if i % 2 else [(pred, ours), (other, theirs)]):
                    sink.append(bench(p, False))
            cmp = compare_rounds(ours, theirs)
            res["compare"] = cmp
    finally:
        pred.close()
        if other is not None:
            other.close()
    if args.json == "-":
        print(json.dumps(res, indent=2))
    else:
        print(format_table(res))
        if cmp is not None:
            print()
            print(format_comparison(cmp))
        if args.json:
            write_json_atomic(args.json, res)
            print(f"wrote {args.json}")
    if args.plot:
        plot(res, args.plot)
        if args.json != "-":
            print(f"wrote {args.plot}")
    return 0
