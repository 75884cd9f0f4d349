"""``samdeploy check``: parity of exported graphs vs the PyTorch model; exit 1 when a gate fails."""

from __future__ import annotations

import argparse

from ._args import add_reference_model_arguments

HELP = "parity of exported ONNX vs the PyTorch model on real photographs; exit 1 on failure"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ..check.thresholds import THRESHOLDS

    p.add_argument("dir", metavar="DIR", help="export directory (with manifest.json)")
    add_reference_model_arguments(p)
    data = p.add_argument_group("data")
    data.add_argument("--images", nargs="+", metavar="PATH",
                      help="image files and/or folders (default: the bundled sample photographs)")
    data.add_argument("--max-images", type=int, default=None, metavar="N", help="use at most N images")
    data.add_argument("--prompt-seed", type=int, default=0, help="seed of the prompt placement (default 0)")
    gate = p.add_argument_group("gate")
    gate.add_argument("--precision", choices=("fp32", "fp16", "int8"), default=None,
                      help="threshold set (default: the manifest's precision, fp32 for plain exports)")
    gate.add_argument("--threshold", action="extend", nargs="+", default=[], metavar="NAME=VALUE",
                      help="override a threshold (VALUE 'off' disables it), e.g. mask_iou_min=0.98; names: "
                           + ", ".join(THRESHOLDS))
    gate.add_argument("--json", metavar="OUT", help="write the full report as JSON")
    rt = p.add_argument_group("runtime")
    rt.add_argument("--backend", default="onnxruntime", choices=("onnxruntime", "tensorrt"),
                    help="runtime backend of samdeploy.runtime (tensorrt: pass engine files as --encoder/--decoder)")
    rt.add_argument("--providers", dest="provider", default="cpu", metavar="PROVIDERS",
                    help="ONNX Runtime execution providers in priority order, comma-separated: cpu (default), cuda, tensorrt "
                         "(same flag as predict/bench)")
    rt.add_argument("--provider", dest="provider", default=argparse.SUPPRESS, help=argparse.SUPPRESS)  # old spelling
    rt.add_argument("--threads", type=int, default=None, help="ONNX Runtime intra-op threads (default: ORT's)")
    rt.add_argument("--encoder", metavar="PATH", help="check this encoder file instead of the manifest's")
    rt.add_argument("--decoder", metavar="PATH", help="check this decoder file instead of the manifest's")


def run(args: argparse.Namespace) -> int:
    from .._io import write_text_atomic
    from ..check.parity import CheckOptions, run_check
    from ..errors import InputError
    from ..export.manifest import read_manifest
    from ..images import load_images

    if args.max_images is not None and args.max_images < 1:
        raise InputError("--max-images must be >= 1")
    random_seed = None
    if args.random_weights:
        if args.checkpoint:
            raise InputError("--random-weights and --checkpoint are mutually exclusive", hint="pass one of them")
        source = read_manifest(args.dir).get("source", {})
        random_seed = args.seed if args.seed is not None else int(source.get("seed", 0))
    elif args.seed is not None:
        raise InputError("--seed only applies with --random-weights", hint="use --prompt-seed to move the prompts")
    provider = args.provider
    if isinstance(provider, str) and not [x for x in provider.split(",") if x.strip()]:
        raise InputError(f"--providers {provider!r} names no provider", hint="e.g. --providers cpu or --providers cuda")
    options = CheckOptions(
        precision=args.precision, thresholds=args.threshold, seed=args.prompt_seed, max_images=args.max_images,
        backend=args.backend, provider=provider if args.backend == "onnxruntime" else None,
        threads=args.threads, encoder=args.encoder, decoder=args.decoder,
    )
    from ..check.thresholds import resolve_thresholds

    resolve_thresholds(args.precision or "fp32", args.threshold)  # fail fast on typos
    images = load_images(args.images, args.max_images) if args.images else None
    report = run_check(
        args.dir, images=images, options=options, checkpoint=args.checkpoint, random_seed=random_seed,
        trust_pickle=args.trust_pickle, log=lambda s: print(f"samdeploy check: {s}", flush=True),
    )
    print(report.table())
    if args.json:
        write_text_atomic(args.json, report.to_json())
        print(f"  report: {args.json}")
    report.raise_if_failed()
    return 0
