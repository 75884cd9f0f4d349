"""``samdeploy everything IMAGE --model-dir DIR [--hierarchical] [--boxes FILE.json] [--points-per-side N] --out DIR``

Segment everything in one image on the exported runtime (never imports torch):

* default: SAM's automatic mask generator (point grid, IoU/stability filters, box NMS, optional crops);
  SAM2 / SAM2.1 models get SAM2AutomaticMaskGenerator's defaults and options (``--use-m2m``,
  ``--no-multimask``, ``--mask-threshold``);
* ``--hierarchical``: TinySAM's two-round strategy (sparse grid first, dense round skips covered points);
* ``--boxes FILE.json``: MobileSAMv2 style, one mask per detector box.

Writes ``overlay.png`` (all masks tinted), ``masks.json`` (SAM-style records, segmentation as COCO
RLE, plus the run's parameters and statistics) and with ``--mask-pngs`` one PNG per mask. Prints
mask counts, decoder prompts issued and timings.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

HELP = "segment everything (grid or TinySAM hierarchical); overlay PNG + COCO RLE JSON"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from .predict_cmd import add_model_arguments

    p.add_argument("image", help="image file (JPEG/PNG/...)")
    add_model_arguments(p)
    g = p.add_argument_group("prompts (SAM automatic mask generator parameters)")
    g.add_argument("--points-per-side", type=int, default=32, help="grid points per side (default 32 = 1024 prompts)")
    g.add_argument("--points-per-batch", type=int, default=64, help="prompts per generator batch (default 64)")
    g.add_argument("--max-batch", type=int, default=None,
                   help="most prompts per decoder graph run (default: the Predictor's; raise it on a GPU)")
    g.add_argument("--pred-iou-thresh", type=float, default=None,
                   help="keep masks with predicted IoU > this (default: the model family's, 0.88; SAM2 0.8)")
    g.add_argument("--stability-score-thresh", type=float, default=0.95,
                   help="keep masks with stability >= this, in [0, 1]; 0 = no stability filter (0.95)")
    g.add_argument("--stability-score-offset", type=float, default=1.0,
                   help="logit offset of the stability score, >= 0 (1.0)")
    g.add_argument("--mask-threshold", type=float, default=None,
                   help="logit threshold of the masks and of the stability score (default: the model's, 0.0)")
    g.add_argument("--no-multimask", dest="multimask_output", action="store_false",
                   help="one mask per grid point instead of three (SAM2's multimask_output=False; SAM2 models "
                        "answer with the dynamic single mask)")
    g.add_argument("--use-m2m", action="store_true",
                   help="SAM2's mask-to-mask refinement: decode every mask once more with its point and its "
                        "low-res logits as mask input (about 4x the decoder prompts)")
    g.add_argument("--box-nms-thresh", type=float, default=0.7, help="box IoU above which duplicates are dropped (0.7)")
    g.add_argument("--crop-n-layers", type=int, default=0, help="extra crop layers; layer i has (2^i)^2 crops (0)")
    g.add_argument("--crop-nms-thresh", type=float, default=0.7, help="box NMS threshold across crops (0.7)")
    g.add_argument("--crop-overlap-ratio", type=float, default=512 / 1500, help="crop overlap ratio (512/1500)")
    g.add_argument("--crop-n-points-downscale-factor", type=int, default=1,
                   help="points per side in crop layer i = points_per_side / factor^i (1)")
    g.add_argument("--min-mask-region-area", type=int, default=0,
                   help="fill holes / drop islands smaller than this many pixels (0 = off); SAM2 models do it "
                        "as SAM2 does, in the 256x256 low-res logits (see --small-region-mode)")
    g.add_argument("--small-region-mode", choices=("sam", "sam2"), default=None,
                   help="how --min-mask-region-area cleans masks: 'sam' (final masks, then NMS) or 'sam2' "
                        "(low-res logits before upscaling); default: the model family's")
    g.add_argument("--hierarchical", action="store_true",
                   help="TinySAM hierarchical mode: sparse points_per_side//4 grid first, then dense points "
                        "outside confidently segmented areas (about half the prompts)")
    g.add_argument("--high-score-thresh", type=float, default=8.5,
                   help="hierarchical: mask logit above which an area counts as done (TinySAM's 8.5)")
    g.add_argument("--boxes", metavar="FILE.json",
                   help="box prompts from a detector: JSON list of [x0,y0,x1,y1], or of objects with "
                        "'box' (XYXY) or 'bbox' (COCO XYWH); one mask per box, no filtering")
    g.add_argument("--box-batch", type=int, default=320, help="boxes per decoder call (MobileSAMv2: 320)")
    g.add_argument("--border-snap", type=float, default=20.0,
                   help="snap box edges within this many px of the image border onto it (20; 0 = off)")
    o = p.add_argument_group("output")
    o.add_argument("--out", default=None, help="output directory (default: <image-stem>_everything next to the image; "
                   "sample:NAME -> ./NAME_everything)")
    o.add_argument("--mask-pngs", action="store_true", help="also write masks/mask_<i>.png for every mask")
    o.add_argument("--json", action="store_true", help="print the summary as JSON")
    o.add_argument("--no-progress", action="store_true", help="no progress bar")


def load_boxes(path: str) -> np.ndarray:
    """Read detector boxes (see ``--boxes``) as [K, 4] XYXY float32."""
    from samdeploy.errors import InputError, MissingFileError

    p = Path(path)
    if not p.exists():
        raise MissingFileError(f"boxes file not found: {p}")
    try:
        data: Any = json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{p} is not valid JSON ({exc})", hint="write a JSON list of [x0, y0, x1, y1] boxes") from None
    if isinstance(data, dict):
        data = data.get("boxes", data.get("annotations"))
    if not isinstance(data, list):
        raise InputError(f"{p}: expected a list of boxes", hint='e.g. [[10, 20, 200, 180], {"bbox": [x, y, w, h]}]')
    out = []
    for i, item in enumerate(data):
        if isinstance(item, dict):
            if "box" in item:
                box = item["box"]
            elif "bbox" in item:  # COCO: x, y, width, height
                b = item["bbox"]
                box = [b[0], b[1], b[0] + b[2], b[1] + b[3]] if isinstance(b, list) and len(b) == 4 else b
            else:
                raise InputError(f"{p}: box {i} has neither 'box' (XYXY) nor 'bbox' (XYWH)")
        else:
            box = item
        if not isinstance(box, list) or len(box) != 4 or not all(isinstance(v, (int, float)) for v in box):
            raise InputError(f"{p}: box {i} is {box!r}; expected 4 numbers")
        out.append(box)
    arr = np.asarray(out, dtype=np.float64).reshape(-1, 4)
    # Finite in float32 (what the graphs see): 1e39 would become inf after the cast.
    bad = np.flatnonzero(~(np.abs(arr) <= np.finfo(np.float32).max).all(axis=1))
    if bad.size:
        raise InputError(f"{p}: box {int(bad[0])} is {arr[bad[0]].tolist()}; coordinates must be finite float32 pixels")
    return arr.astype(np.float32)


def _finite_or_none(obj: Any) -> tuple[Any, int]:
    """Replace NaN/Inf floats (at any depth) by None so the JSON is strict; returns (obj, count)."""
    if isinstance(obj, (float, np.floating)):
        return (None, 1) if not np.isfinite(obj) else (obj, 0)
    if isinstance(obj, dict):
        n = 0
        out = {}
        for k, v in obj.items():
            out[k], c = _finite_or_none(v)
            n += c
        return out, n
    if isinstance(obj, (list, tuple)):
        n = 0
        items = []
        for v in obj:
            v2, c = _finite_or_none(v)
            items.append(v2)
            n += c
        return items, n
    return obj, 0


def _check_params(args: argparse.Namespace) -> None:
    from samdeploy.errors import InputError
    from samdeploy.runtime.amg import MAX_CROP_LAYERS, MAX_POINTS_PER_SIDE

    # Checked here with the flags' names (the generator checks the same limits for API callers).
    for flag, value, lo, hi in (
        ("--points-per-side", args.points_per_side, 4 if args.hierarchical else 1, MAX_POINTS_PER_SIDE),
        ("--points-per-batch", args.points_per_batch, 1, None),
        ("--box-batch", args.box_batch, 1, None),
        ("--crop-n-layers", args.crop_n_layers, 0, MAX_CROP_LAYERS),
        ("--crop-n-points-downscale-factor", args.crop_n_points_downscale_factor, 1, None),
        ("--max-batch", args.max_batch, 1, None),
        ("--min-mask-region-area", args.min_mask_region_area, 0, None),
    ):
        if value is not None and (value < lo or (hi is not None and value > hi)):
            raise InputError(f"{flag} must be {'in ' + str(lo) + '..' + str(hi) if hi is not None else '>= ' + str(lo)} "
                             f"(got {value})")
    for flag, value in (("--pred-iou-thresh", args.pred_iou_thresh), ("--box-nms-thresh", args.box_nms_thresh),
                        ("--crop-nms-thresh", args.crop_nms_thresh), ("--crop-overlap-ratio", args.crop_overlap_ratio)):
        if value is None:  # the model family's default
            continue
        if not np.isfinite(value) or not 0.0 <= value <= 1.0:
            raise InputError(f"{flag} must be in [0, 1] (got {value})",
                             hint="IoU thresholds and ratios are fractions; a threshold above 1 keeps no mask")

    t = args.stability_score_thresh
    if not np.isfinite(t) or not 0.0 <= t <= 1.0:
        raise InputError(f"--stability-score-thresh must be in [0, 1] (got {t})",
                         hint="the stability score is an IoU; 0 disables the stability filter")
    off = args.stability_score_offset
    if not np.isfinite(off) or off < 0.0:
        raise InputError(f"--stability-score-offset must be >= 0 (got {off})",
                         hint="it is the logit margin around the mask threshold (SAM's default 1.0)")
    for name in ("high_score_thresh", "border_snap", "mask_threshold"):  # the fractions were range-checked above
        v = getattr(args, name)
        if v is not None and not np.isfinite(v):
            raise InputError(f"--{name.replace('_', '-')} must be a finite number (got {v})")


def _progress_bar(enabled: bool):
    if not enabled:
        return None, lambda: None
    from tqdm import tqdm

    bar = tqdm(total=0, unit="prompt", desc="decoding", file=sys.stderr, leave=False, dynamic_ncols=True)

    def update(done: int, total: int) -> None:
        if bar.total != total:
            bar.total = total
        bar.n = done
        bar.refresh()

    return update, bar.close


def run(args: argparse.Namespace) -> int:
    from samdeploy.cli._args import default_out_dir, identity_lines, image_source, run_identity
    from samdeploy._io import write_text_atomic
    from samdeploy.images import load_image
    from samdeploy.runtime import Predictor
    from samdeploy.runtime.amg import MaskGenerator
    from samdeploy.runtime.rle import rle_to_mask
    from samdeploy.runtime.overlay import draw_overlay, write_png

    _check_params(args)
    image = load_image(args.image)
    boxes = load_boxes(args.boxes) if args.boxes else None
    out_dir = Path(args.out) if args.out else default_out_dir(args.image, "_everything")
    params = dict(
        points_per_side=args.points_per_side,
        points_per_batch=args.points_per_batch,
        pred_iou_thresh=args.pred_iou_thresh,
        stability_score_thresh=args.stability_score_thresh,
        stability_score_offset=args.stability_score_offset,
        mask_threshold=args.mask_threshold,
        multimask_output=args.multimask_output,
        use_m2m=args.use_m2m,
        small_region_mode=args.small_region_mode,
        box_nms_thresh=args.box_nms_thresh,
        crop_n_layers=args.crop_n_layers,
        crop_nms_thresh=args.crop_nms_thresh,
        crop_overlap_ratio=args.crop_overlap_ratio,
        crop_n_points_downscale_factor=args.crop_n_points_downscale_factor,
        min_mask_region_area=args.min_mask_region_area,
        hierarchical=args.hierarchical,
        high_score_thresh=args.high_score_thresh,
        box_batch=args.box_batch,
        border_snap=args.border_snap,
    )

    t0 = time.perf_counter()
    # The Predictor splits each generator batch into graph runs of at most --max-batch prompts
    # (decoder activations grow with it: about 1 GB per 64 prompts on ONNX Runtime CPU).
    extra = {} if args.max_batch is None else {"max_batch": args.max_batch}
    pred = Predictor(args.model_dir, encoder=args.encoder, decoder=args.decoder, backend=args.backend,
                     providers=args.providers, threads=args.threads, **extra)
    load_ms = (time.perf_counter() - t0) * 1e3
    show_bar = not args.no_progress and not args.json and sys.stderr.isatty()
    progress, close_bar = _progress_bar(show_bar)
    try:
        gen = MaskGenerator(pred, output_mode="coco_rle", **params)
        # masks.json records the values in effect (family defaults resolved), not the unset flags.
        params.update({k: v for k, v in gen.options.items() if k in params})
        if boxes is not None:
            records = gen.generate_from_boxes(image, boxes, progress=progress)
        else:
            records = gen.generate(image, progress=progress)
        info = pred.describe()
        identity = run_identity(info)
    finally:
        close_bar()
        pred.close()
    stats = gen.stats.to_dict()

    # Overlay: decode the RLEs one at a time into a label-free stack only as large as needed.
    masks = np.zeros((len(records), *image.shape[:2]), dtype=bool)
    for i, r in enumerate(records):
        masks[i] = rle_to_mask(r["segmentation"])
    write_png(out_dir / "overlay.png", draw_overlay(image, masks, boxes=boxes))
    files = ["overlay.png", "masks.json"]
    if args.mask_pngs:
        for i in range(len(records)):
            name = f"masks/mask_{i:04d}.png"
            write_png(out_dir / name, masks[i])
            records[i]["file"] = name
            files.append(name)
    for i, r in enumerate(records):
        r["id"] = i
    mode = stats["mode"]
    # A mask whose low (threshold - offset) mask is empty has stability 0/0 = NaN (SAM keeps it when
    # the stability filter is off, --stability-score-thresh 0): undefined, written as null (strict JSON).
    records, n_undefined = _finite_or_none(records)
    stats, n_stats = _finite_or_none(stats)
    n_undefined += n_stats
    if n_undefined:
        stats["non_finite_values_as_null"] = n_undefined
    write_text_atomic(
        out_dir / "masks.json",
        json.dumps({
            "image": image_source(args.image),
            "height": int(image.shape[0]),
            "width": int(image.shape[1]),
            "model": identity["model"],
            "produced_by": {k: identity[k] for k in ("precision", "backend", "providers", "random_weights")},
            "mode": mode,
            "params": {k: params[k] for k in ("box_batch", "border_snap")} if boxes is not None else params,
            "stats": stats,
            "annotations": records,
        }, indent=2, sort_keys=True, allow_nan=False) + "\n",
    )

    summary = {
        "image": args.image,
        "size_hw": [int(image.shape[0]), int(image.shape[1])],
        **identity,
        "mode": mode,
        "masks": len(records),
        "prompts": stats["prompts"],
        "decoder_calls": stats["decoder_calls"],
        "encoder_calls": stats["encoder_calls"],
        "masks_after_filters": stats["masks_after_filters"],
        "rounds": stats["rounds"],
        "timings_ms": dict(stats["timings_ms"], load=round(load_ms, 1)),
        "out": str(out_dir),
        "files": files,
    }
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    t = summary["timings_ms"]
    print("\n".join(identity_lines(identity, "everything")))
    print(f"image    {args.image}  {image.shape[1]}x{image.shape[0]}")
    print(f"mode     {mode}" + (f" ({len(boxes)} boxes from {args.boxes})" if boxes is not None else ""))
    if boxes is None:
        flags = [f for f, on in (("single mask", not params["multimask_output"]), ("m2m", params["use_m2m"])) if on]
        print(f"filters  predicted IoU > {params['pred_iou_thresh']:g}, stability >= {params['stability_score_thresh']:g}, "
              f"mask threshold {params['mask_threshold']:g}" + (f" ({', '.join(flags)})" if flags else ""))
    print(f"prompts  {stats['prompts']} decoder prompts in {stats['decoder_calls']} call(s), "
          f"{stats['encoder_calls']} encoder call(s)")
    for i, rd in enumerate(stats["rounds"]):
        extra = f", {rd['skipped_covered']} of {rd['candidates']} candidates skipped (covered)" if "candidates" in rd else ""
        print(f"  round {i + 1}: {rd['prompts']} prompts ({rd['points_per_side']}/side){extra}, {rd['masks']} masks kept")
    print(f"masks    {len(records)} (of {stats['candidate_masks']} decoded, {stats['masks_after_filters']} after filters)")
    print(f"timings  load {t['load']:.0f} ms | encoder {t['encode']:.0f} ms | decoder {t['decode']:.0f} ms | "
          f"postprocess {t['postprocess']:.0f} ms | nms {t['nms']:.1f} ms | total {t['total']:.0f} ms")
    print(f"wrote    {out_dir}/overlay.png, masks.json" + (f", {len(records)} mask PNGs" if args.mask_pngs else ""))
    return 0
