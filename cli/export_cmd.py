"""``samdeploy export``: checkpoint (or seeded random weights) -> encoder.onnx, decoder.onnx, manifest.json."""

from __future__ import annotations

import argparse
import dataclasses
import os

HELP = "export encoder/decoder ONNX + manifest from a checkpoint (or --random-weights)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ..models.variants import variant_names  # torch-free table

    src = p.add_argument_group("model (one of: --checkpoint, a registry name as --model, --random-weights)")
    src.add_argument("--model", default="auto", metavar="NAME",
                     help=f"variant ({', '.join(variant_names())}), 'auto' to detect "
                          "it from --checkpoint, or a registry name to download (see `samdeploy models list`)")
    src.add_argument("--checkpoint", metavar="PATH", help="checkpoint file (.pth/.pt state_dict)")
    src.add_argument("--trust-pickle", action="store_true",
                     help="allow checkpoints that are pickled Python objects (runs code from the file; only for files you trust)")
    src.add_argument("--random-weights", action="store_true", help="seeded random weights (self-tests, CI); needs --model VARIANT")
    src.add_argument("--seed", type=int, default=0, help="seed for --random-weights (default 0)")
    out = p.add_argument_group("output")
    out.add_argument("--out", required=True, metavar="DIR", help="output directory (created; existing files are replaced)")
    out.add_argument("--graphs", default="encoder,decoder", help="which graphs to export (default encoder,decoder)")
    out.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17; < 17 is refused)")
    out.add_argument("--encoder-batch", default="1", metavar="N|dynamic",
                     help="static encoder batch size (default 1) or 'dynamic'")
    out.add_argument("--external-data", choices=("auto", "always", "never"), default="auto",
                     help="store weights in <file>.onnx.data: auto = only above ~1.8 GB (ViT-H), always, never")
    sam2 = p.add_argument_group("SAM2 / SAM2.1")
    sam2.add_argument("--video", action="store_true",
                      help="also export the video-tracking graphs (memory_attention, memory_encoder, track_decoder "
                           ".onnx) and video_constants.npz for `samdeploy track`")
    sam2.add_argument("--image-size", type=int, default=None, metavar="S",
                      help="encoder input S x S (multiple of 32; default 1024): prompt frame S, low-res masks S/4")


def run(args: argparse.Namespace) -> int:
    from ..errors import InputError
    from ..export.exporter import ExportOptions, export_model
    from ..export.source import check_image_size, load_source, resolve_source, resolved

    graphs = tuple(g.strip() for g in args.graphs.split(",") if g.strip())
    if str(args.encoder_batch).lower() == "dynamic":
        encoder_batch = None
    else:
        try:
            encoder_batch = int(args.encoder_batch)
        except ValueError:
            raise InputError(f"--encoder-batch must be a number or 'dynamic', not {args.encoder_batch!r}") from None
    options = ExportOptions(graphs=graphs, opset=args.opset, encoder_batch=encoder_batch,
                            external_data=args.external_data, video=bool(args.video))
    options.validate()  # before the (slow) model load
    if args.image_size is not None:
        check_image_size(args.image_size, args.model)
    if args.video and args.model not in (None, "", "auto"):
        _check_video_model(args.model)
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        raise InputError(f"--out {args.out} is a file, not a directory", hint="pass a directory path")
    src = resolve_source(args.model, args.checkpoint, args.random_weights, args.seed, args.trust_pickle)
    if args.video:
        _check_video_model(src.variant)
    if args.image_size is not None:
        src = dataclasses.replace(src, image_size=int(args.image_size))
    print(f"samdeploy export: loading {src.describe()} ...", flush=True)
    notes: list[str] = []
    sam = load_source(src, notes)
    src = resolved(src, sam)
    for note in notes:
        print(f"samdeploy export: note: {note}", flush=True)
    result = export_model(sam, args.out, src, options, log=lambda s: print(f"samdeploy export: {s}", flush=True))
    for line in result.summary_lines():
        print(line)
    return 0


def _check_video_model(variant: str) -> None:
    """--video with a variant that is known not to be SAM2: refused before anything is loaded."""
    from ..errors import InputError
    from ..models.variants import VARIANTS

    v = VARIANTS.get(variant)
    if v is not None and not v.sam2:
        raise InputError(f"--video is only for SAM2 / SAM2.1 models, not {variant} ({v.family})",
                         hint="use --model sam2.1_hiera_t (or another sam2*_hiera_* variant), or drop --video")
