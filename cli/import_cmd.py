"""``samdeploy import``: a foreign encoder ONNX (NanoSAM, EdgeSAM, Meta-style) -> a samdeploy model directory.

    samdeploy import resnet18_image_encoder.onnx --decoder-from exports/mobile_sam --out exports/nanosam
    samdeploy import encoder.onnx --decoder decoder.onnx --family edge_sam --out exports/edge_sam_onnx
"""

from __future__ import annotations

import argparse

HELP = "wrap a foreign encoder ONNX (NanoSAM, EdgeSAM, Meta-style) + a decoder in the samdeploy contract"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("encoder", metavar="ENCODER.onnx",
                   help="encoder graph: one float32 input [1,3,1024,1024] taking the NORMALISED image -> one "
                        "[1,256,64,64] embedding (e.g. NanoSAM's resnet18_image_encoder.onnx)")
    dec = p.add_mutually_exclusive_group()
    dec.add_argument("--decoder-from", metavar="EXPORT_DIR",
                     help="a samdeploy export whose decoder contract matches the family's (NanoSAM: a mobile_sam "
                          "export); its decoder.onnx is copied and re-labelled")
    dec.add_argument("--decoder", metavar="DECODER.onnx",
                     help="a decoder that already has samdeploy's 5-input / 2-output signature "
                          "(dynamic prompt batch and point count)")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory (created; existing graphs are replaced)")
    p.add_argument("--family", default="nanosam", metavar="NAME",
                   help="variant of the table the graphs belong to (default nanosam; see `samdeploy models list`)")
    p.add_argument("--no-verify", action="store_true",
                   help="skip running the imported vs the original encoder on a probe image")


def run(args: argparse.Namespace) -> int:
    from ..export.importer import import_onnx

    result = import_onnx(args.encoder, args.out, decoder=args.decoder, decoder_from=args.decoder_from,
                         family=args.family, verify=not args.no_verify,
                         log=lambda s: print(f"samdeploy import: {s}", flush=True))
    for line in result.summary_lines():
        print(line)
    if "decoder" not in result.files:
        print("note      no decoder: import again with --decoder-from EXPORT_DIR (or --decoder FILE) to predict with it")
    return 0
