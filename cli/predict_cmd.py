"""``samdeploy predict IMAGE --model-dir DIR --point x,y[,label] --box x0,y0,x1,y1 [--multimask] [--out DIR]``

Clicks and at most one box form ONE prompt; several ``--box`` form a batch (one mask per box,
decoded in one decoder call). Writes ``overlay.png``, ``mask_<k>[_<c>].png`` and ``masks.json``
(COCO RLE) and prints scores and timings. Never imports torch.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

HELP = "segment an image from point/box prompts; writes overlay PNG + masks"


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    """--model-dir / --encoder / --decoder / --backend / --providers / --threads (shared with bench)."""
    g = p.add_argument_group("model")
    g.add_argument("--model-dir", help="directory written by `samdeploy export` (or `build` for --backend tensorrt)")
    g.add_argument("--encoder", help="encoder file (overrides the one in --model-dir)")
    g.add_argument("--decoder", help="decoder file (overrides the one in --model-dir)")
    g.add_argument("--backend", default="onnxruntime", choices=["onnxruntime", "tensorrt"], help="inference backend")
    g.add_argument(
        "--providers", default=None,
        help="ONNX Runtime execution providers, comma-separated: cpu (default), cuda, tensorrt",
    )
    g.add_argument("--threads", type=int, default=None, help="intra-op threads (default: backend default)")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("image", help="image file (JPEG/PNG/...)")
    add_model_arguments(p)
    g = p.add_argument_group("prompts")
    g.add_argument("--point", action="append", default=[], metavar="X,Y[,LABEL]",
                   help="a click in image pixels; LABEL 1 = foreground (default), 0 = background, -2 = EdgeSAM zero token. Repeatable")
    g.add_argument("--box", action="append", default=[], metavar="X0,Y0,X1,Y1",
                   help="a box in image pixels. Repeatable: several boxes = batched prompts, one mask each")
    g.add_argument("--score", default=None, choices=["iou_head", "stability", "sigmoid"],
                   help="how masks are scored (default: the model's own, e.g. stability for EdgeSAM)")
    g.add_argument("--multimask", action="store_true",
                   help="return SAM's 3 candidate masks per prompt (overlay shows the best-scoring one)")
    p.add_argument("--out", default=None, help="output directory (default: <image-stem>_samdeploy next to the image)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")


def parse_floats(text: str, n: tuple[int, ...], what: str) -> list[float]:
    from samdeploy.errors import InputError

    try:
        vals = [float(v) for v in text.replace(" ", "").split(",") if v != ""]
    except ValueError:
        raise InputError(f"cannot parse {what} {text!r}", hint=f"use comma-separated numbers, e.g. {'100,200' if what == '--point' else '10,20,300,400'}") from None
    if len(vals) not in n:
        raise InputError(f"{what} {text!r} has {len(vals)} values; expected {' or '.join(map(str, n))}")
    return vals


def build_prompts(points: list[str], boxes: list[str]):
    """-> (coords [N,2] | None, labels [N] | None, boxes [K,4] | None).

    Everything that can be checked without the image is checked here, before any model is opened,
    so a typo costs milliseconds, not an encoder run; messages name the CLI flags."""
    from samdeploy.errors import InputError

    coords, labels = [], []
    for s in points:
        v = parse_floats(s, (2, 3), "--point")
        # -2 is EdgeSAM's "zero token" label; the Predictor refuses it for models whose contract lacks it
        if len(v) == 3 and v[2] not in (0.0, 1.0, -2.0):
            raise InputError(f"--point {s!r}: label {v[2]:g} is not 0, 1 or -2",
                             hint="write --point X,Y,1 for foreground (the default), --point X,Y,0 for background, "
                             "or --point X,Y,-2 for EdgeSAM's zero-token label")
        coords.append(v[:2])
        labels.append(v[2] if len(v) == 3 else 1.0)
    bxs = [parse_floats(s, (4,), "--box") for s in boxes]
    for s, b in zip(boxes, bxs):
        if b[0] > b[2] or b[1] > b[3]:
            raise InputError(f"--box {s!r} is inverted (x0 > x1 or y0 > y1)",
                             hint="write --box X0,Y0,X1,Y1 with the top-left corner first")
    if not coords and not bxs:
        raise InputError("no prompt given", hint="add --point X,Y (a click) and/or --box X0,Y0,X1,Y1")
    if coords and len(bxs) > 1:
        raise InputError(
            "--point cannot be combined with several --box prompts",
            hint="use one --box with clicks, or several boxes without clicks",
        )
    for what, vals in (("--point", coords), ("--box", bxs)):
        with np.errstate(over="ignore"):
            arr = np.asarray(vals, np.float32)
        if arr.size and not np.isfinite(arr).all():  # 1e39 is finite in float64 but not in float32
            raise InputError(f"{what} has a value that is not a finite float32 number",
                             hint=f"give {what} in image pixels")
    return (
        np.array(coords, np.float64) if coords else None,
        np.array(labels, np.float64) if coords else None,
        np.array(bxs, np.float64) if bxs else None,
    )


def check_in_frame(coords, boxes, hw: tuple[int, int]) -> None:
    """Prompts must lie inside the image (edges included); checked before the encoder runs."""
    from samdeploy.errors import InputError

    h, w = hw
    for what, arr in (("--point", coords), ("--box", boxes)):
        if arr is None:
            continue
        xy = np.asarray(arr, np.float64).reshape(-1, 2)
        bad = (xy[:, 0] < 0) | (xy[:, 0] > w) | (xy[:, 1] < 0) | (xy[:, 1] > h)
        if bad.any():
            x, y = xy[bad][0]
            raise InputError(f"{what} coordinate ({x:g}, {y:g}) is outside the {w}x{h} image",
                             hint=f"give {what} in image pixels: x in 0..{w}, y in 0..{h}")


def run(args: argparse.Namespace) -> int:
    from samdeploy.cli._args import default_out_dir, identity_lines, image_source, run_identity
    from samdeploy.images import load_image
    from samdeploy.runtime import Predictor
    from samdeploy.runtime.overlay import draw_overlay, write_png, write_rle_json

    coords, labels, boxes = build_prompts(args.point, args.box)
    image = load_image(args.image)
    check_in_frame(coords, boxes, image.shape[:2])
    out_dir = Path(args.out) if args.out else default_out_dir(args.image, "_samdeploy")
    if out_dir.exists() and not out_dir.is_dir():
        from samdeploy.errors import InputError

        raise InputError(f"--out {out_dir} is an existing file, not a directory", hint="pass a directory path to --out")

    t0 = time.perf_counter()
    pred = Predictor(args.model_dir, encoder=args.encoder, decoder=args.decoder, backend=args.backend,
                     providers=args.providers, threads=args.threads, score=args.score)
    load_ms = (time.perf_counter() - t0) * 1e3
    try:
        pred.set_image(image)
        t_img = dict(pred.timings)
        if boxes is not None and len(boxes) > 1:
            masks, scores, _ = pred.predict_batch(boxes=boxes, multimask_output=args.multimask)
        else:
            m, s, _ = pred.predict(coords, labels, None if boxes is None else boxes[0], multimask_output=args.multimask)
            masks, scores = m[None], s[None]
        t_pred = dict(pred.timings)
        info = pred.describe()
        identity = run_identity(info)
    finally:
        pred.close()

    k, c = scores.shape
    best = scores.argmax(axis=1)
    shown = masks[np.arange(k), best]  # [K,H,W]: the best candidate of each prompt
    captions = [f"{scores[i, best[i]]:.2f}" for i in range(k)]
    if boxes is not None:  # caption each mask at its box, else at the first click
        at = [(b[0], b[1]) for b in boxes]
    else:
        at = [tuple(coords[0])]
    overlay = draw_overlay(image, shown, coords, labels, boxes, captions, caption_at=at)
    write_png(out_dir / "overlay.png", overlay)
    records = []
    for i in range(k):
        for j in range(c):
            name = f"mask_{i}.png" if c == 1 else f"mask_{i}_{j}.png"
            write_png(out_dir / name, masks[i, j])
            records.append({"prompt": i, "candidate": j, "score": float(scores[i, j]), "best": bool(j == best[i]),
                            "file": name, "mask": masks[i, j]})
    write_rle_json(out_dir / "masks.json", records, image=image_source(args.image),
                   height=int(image.shape[0]), width=int(image.shape[1]), model=identity["model"],
                   produced_by={k: identity[k] for k in ("precision", "backend", "providers", "random_weights")})

    summary = {
        "image": args.image,
        "size_hw": [int(image.shape[0]), int(image.shape[1])],
        **identity,
        "prompts": k,
        "masks_per_prompt": c,
        "scores": [[round(float(v), 4) for v in row] for row in scores],
        "timings_ms": {
            "load": round(load_ms, 1),
            "preprocess": round(t_img["preprocess_ms"], 2),
            "encoder": round(t_img["encoder_ms"], 2),
            "prompt": round(t_pred["prompt_ms"], 3),
            "decoder": round(t_pred["decoder_ms"], 2),
            "postprocess": round(t_pred["postprocess_ms"], 2),
        },
        "out": str(out_dir),
        "files": ["overlay.png", "masks.json"] + [r["file"] for r in records],
    }
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    t = summary["timings_ms"]
    print("\n".join(identity_lines(identity, "predict")))
    print(f"image    {args.image}  {image.shape[1]}x{image.shape[0]}")
    print(f"prompts  {k} ({'batched boxes' if k > 1 else 'one prompt'}), {c} mask(s) each")
    for i in range(k):
        cand = "  ".join(f"{'*' if j == best[i] else ' '}{scores[i, j]:.3f}" for j in range(c))
        print(f"  prompt {i}: score {cand}  area {int(shown[i].sum())} px")
    print(f"timings  load {t['load']:.0f} ms | preprocess {t['preprocess']:.1f} ms | encoder {t['encoder']:.1f} ms | "
          f"prompt {t['prompt']:.2f} ms | decoder {t['decoder']:.1f} ms | postprocess {t['postprocess']:.1f} ms")
    print(f"wrote    {out_dir}/overlay.png, masks.json, {len(records)} mask PNG(s)")
    return 0
