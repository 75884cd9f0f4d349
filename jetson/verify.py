#!/usr/bin/env python3
"""Parity of TensorRT engines vs ONNX Runtime CPU on real photographs and prompts (run on the device).

For every photograph (scikit-image samples unless --image is given) and prompt (one click, two
clicks, a box, a box + click):

* encoder: the engine's image embedding vs ONNX Runtime CPU (cosine, relative L2, max abs);
* decoder: both decoders get the *reference* embedding, so decoder error is measured on its own:
  mask IoU of the thresholded low-res logits per token, IoU-prediction max abs difference.

Metrics come from ``samdeploy.check.metrics`` and their limits from ``samdeploy.check.thresholds``
(the same registry ``samdeploy check`` and the calibration gate read; ``--threshold NAME=VALUE``
overrides one). Exit 1 if any gate fails, 2 on a bad argument. Usage::

    python jetson/verify.py --onnx-dir export/ --engine-dir export/engines-fp16 [--json report.json]

``--candidate-backend onnxruntime`` compares two ONNX directories instead (used by the CPU tests).
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from samdeploy.check.thresholds import PRECISIONS, select_thresholds

# What this script gates, by registry name (check/thresholds.py holds the limits; None = not gated):
# min embedding cosine, min mean mask IoU, min worst mask IoU, max IoU-prediction difference.
GATED = ("embedding_cosine", "mask_iou_mean", "mask_iou_min", "iou_pred_max_abs")


def gates(precision: str, overrides=None) -> dict:
    """The limits for ``precision`` from the registry, with ``--threshold`` style ``overrides``."""
    return select_thresholds(precision, GATED, overrides)


GATES = {p: gates(p) for p in PRECISIONS}


def prompts_for(h: int, w: int) -> list[dict]:
    cx, cy = w / 2, h / 2
    return [
        {"name": "one click", "point_coords": np.array([[cx, cy]]), "point_labels": np.array([1])},
        {"name": "two clicks", "point_coords": np.array([[cx, cy], [w * 0.3, h * 0.3]]), "point_labels": np.array([1, 0])},
        {"name": "box", "box": np.array([w * 0.25, h * 0.25, w * 0.75, h * 0.75])},
        {"name": "box + click", "box": np.array([w * 0.2, h * 0.2, w * 0.8, h * 0.8]),
         "point_coords": np.array([[cx, cy]]), "point_labels": np.array([1])},
    ]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--onnx-dir", required=True, help="samdeploy export directory (reference, ONNX Runtime CPU)")
    ap.add_argument("--engine-dir", required=True, help="engine directory from `samdeploy build` (or ONNX dir)")
    ap.add_argument("--candidate-backend", default="tensorrt", choices=("tensorrt", "onnxruntime"))
    ap.add_argument("--precision", default=None, choices=sorted(GATES), help="gate to apply (default: from the manifest)")
    ap.add_argument("--image", action="append", default=[], help="photograph(s) to use (default: scikit-image samples)")
    ap.add_argument("--max-images", type=int, default=3)
    ap.add_argument("--json", default=None, help="write the report here")
    ap.add_argument("--threshold", action="extend", nargs="+", default=[], metavar="NAME=VALUE",
                    help="override a limit of the registry (VALUE 'off' disables it); gated here: " + ", ".join(GATED))
    args = ap.parse_args(argv)

    from samdeploy.errors import InputError

    try:
        gates(args.precision or "fp32", args.threshold)  # fail fast on a typo, before loading models
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    from samdeploy.check import metrics
    from samdeploy.images import default_photographs, load_image
    from samdeploy.runtime.predictor import Predictor

    ref = Predictor(args.onnx_dir, backend="onnxruntime")
    cand = Predictor(args.engine_dir, backend=args.candidate_backend)
    precision = args.precision
    if precision is None:
        desc = cand.model.describe().get("decoder", {})
        precision = str(desc.get("precision", "fp32")).lower()
    try:
        limits = gates(precision, args.threshold)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    cos_min, iou_mean_min, iou_worst_min, iou_pred_max = (limits[k] for k in GATED)
    photos = {p: load_image(p) for p in args.image} if args.image else dict(list(default_photographs().items())[: args.max_images])

    rows, ious, failures = [], [], []
    for name, img in photos.items():
        ref.set_image(img)
        cand.set_image(img)
        emb = metrics.embedding_metrics(ref.get_image_embedding(), cand.get_image_embedding())
        if cos_min is not None and emb["cosine"] < cos_min:
            failures.append(f"{name}: embedding cosine {emb['cosine']:.5f} < {cos_min}")
        cand.set_image_embedding(ref.get_image_embedding(), img.shape[:2])  # decoder measured on its own
        for pr in prompts_for(*img.shape[:2]):
            kw = {k: v for k, v in pr.items() if k != "name"}
            _, s_ref, low_ref = ref.predict(multimask_output=True, **kw)
            _, s_out, low_out = cand.predict(multimask_output=True, **kw)
            dm = metrics.decoder_metrics(s_ref[None], low_ref[None], s_out[None], low_out[None])
            iou = np.asarray(dm["mask_iou"]).ravel()
            ious.extend(iou.tolist())
            if iou_pred_max is not None and dm["iou_pred_max_abs"] > iou_pred_max:
                failures.append(f"{name} / {pr['name']}: IoU-prediction diff {dm['iou_pred_max_abs']:.4f} > {iou_pred_max}")
            rows.append({"image": name, "prompt": pr["name"], "embedding": emb, "mask_iou": iou.tolist(),
                         "iou_pred_max_abs": dm["iou_pred_max_abs"]})
            print(f"{name:18s} {pr['name']:12s} cos {emb['cosine']:.5f}  mask IoU min {iou.min():.4f}  "
                  f"iou-pred diff {dm['iou_pred_max_abs']:.4f}")
    mean_iou, worst = float(np.mean(ious)), float(np.min(ious))
    if iou_mean_min is not None and mean_iou < iou_mean_min:
        failures.append(f"mean mask IoU {mean_iou:.4f} < {iou_mean_min}")
    if iou_worst_min is not None and worst < iou_worst_min:
        failures.append(f"worst mask IoU {worst:.4f} < {iou_worst_min}")
    report = {"precision": precision, "thresholds": limits, "mean_mask_iou": mean_iou, "worst_mask_iou": worst, "rows": rows,
              "failures": failures, "candidate": cand.model.describe(), "passed": not failures}
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(report, fh, indent=2, default=float)
    print(f"\n{precision}: mean mask IoU {mean_iou:.4f}, worst {worst:.4f} -> {'PASS' if not failures else 'FAIL'}")
    for f in failures:
        print("  " + f)
    ref.close() if hasattr(ref, "close") else None
    cand.close() if hasattr(cand, "close") else None
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
