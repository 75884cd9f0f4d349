#!/usr/bin/env python3
"""Parity of TensorRT engines vs ONNX Runtime CPU on real photographs and prompts (run on the device).

For every photograph (scikit-image samples unless --image is given) and prompt (one click, two
clicks, a box, a box + click):

* encoder: EVERY encoder output the decoder consumes (SAM-1: ``image_embeddings``; SAM2: also
  ``high_res_feats_0`` / ``high_res_feats_1``; HQ-SAM: ``hq_features``) vs ONNX Runtime CPU
  (cosine, relative L2, max abs), each gated by ``embedding_cosine``;
* decoder: both decoders get the *reference* encoder outputs, so decoder error is measured on its
  own: mask IoU of the thresholded low-res logits of the multimask tokens AND of the single-mask
  answer, IoU-prediction max abs difference, and every extra decoder output of the contract
  (SAM2: ``object_score_logits``, gated by ``extra_output_max_abs``; the object-present sign is
  reported too).

Known TensorRT miscompiles recorded in the engine manifests (``known_issues``, e.g. the SAM2 mask
decoder on TensorRT < 10.9 / JetPack 6) are printed first and copied into the report: a failing
gate next to such an entry is that bug, not noise. The comparison itself
(:func:`compare_features`, :func:`compare_decoder`, :func:`verify`) needs no GPU.

Metrics come from ``samdeploy.check.metrics`` and their limits from ``samdeploy.check.thresholds``
(the same registry ``samdeploy check`` and the calibration gate read; ``--threshold NAME=VALUE``
overrides one). Exit 1 if any gate fails, 2 on a bad argument. Usage::

    python jetson/verify.py --onnx-dir export/ --engine-dir export/engines-fp16 [--json report.json]

``--candidate-backend onnxruntime`` compares two ONNX directories instead (used by the CPU tests).

``--video`` (an ``export --video`` directory and ``samdeploy build --graphs all`` engines) also runs
the SAM2 ``Tracker`` on both: a camera pan over a photograph with an object prompted by a box on frame
0 and one by a click later, per-frame mask IoU of every object gated by ``mask_iou_mean`` /
``mask_iou_min`` (the object-score difference is reported); :func:`verify_tracking` needs no GPU.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from samdeploy.check.thresholds import PRECISIONS, select_thresholds
from samdeploy.contract import ENCODER_OUTPUT, SAM2_OBJECT_SCORE

# What this script gates, by registry name (check/thresholds.py holds the limits; None = not gated):
# min cosine of every encoder output, min mean mask IoU, min worst mask IoU, max IoU-prediction
# difference, max difference of the decoder's extra outputs (SAM2 object-score logits).
GATED = ("embedding_cosine", "mask_iou_mean", "mask_iou_min", "iou_pred_max_abs", "extra_output_max_abs")


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


# ---- the comparison (no GPU, no TensorRT) ------------------------------------------------------------
def compare_features(ref: dict, cand: dict, limits: dict, where: str = "") -> tuple[dict, list[str]]:
    """Every encoder output by name: ``{name: embedding_metrics}`` and the failures of the
    ``embedding_cosine`` gate. A missing or differently shaped candidate output is a failure."""
    from samdeploy.check import metrics

    cos_min = limits.get("embedding_cosine")
    out: dict = {}
    failures: list[str] = []
    for name, r in ref.items():
        c = cand.get(name)
        if c is None or np.shape(c) != np.shape(r):
            failures.append(f"{where}encoder output {name}: candidate has {None if c is None else np.shape(c)}, "
                            f"reference {np.shape(r)}")
            continue
        m = metrics.embedding_metrics(np.asarray(r), np.asarray(c))
        out[name] = m
        if cos_min is not None and not m["cosine"] >= cos_min:  # `not >=`: a NaN cosine fails
            failures.append(f"{where}{name}: cosine {m['cosine']:.5f} < {cos_min}")
    return out, failures


def decoder_outputs(pred, prompt: dict) -> dict:
    """What a user gets for ``prompt``: the multimask answer, the single-mask answer (SAM2: dynamic
    stability selection) and the contract's extra decoder outputs of the call."""
    kw = {k: v for k, v in prompt.items() if k != "name"}
    _, s_multi, low_multi = pred.predict(multimask_output=True, **kw)
    extra = {k: np.asarray(v).copy() for k, v in getattr(pred, "extra_outputs", {}).items()}
    _, s_single, low_single = pred.predict(multimask_output=False, **kw)
    return {"scores": np.concatenate([s_multi, s_single]), "low_res": np.concatenate([low_multi, low_single]),
            "extra": extra, "tokens": ["multi"] * len(s_multi) + ["single"] * len(s_single)}


def compare_decoder(ref: dict, cand: dict, limits: dict, where: str = "") -> tuple[dict, list[str]]:
    """One prompt's :func:`decoder_outputs`, reference vs candidate: mask IoU per returned mask,
    IoU-prediction and extra-output max abs differences; the failures of the per-prompt gates
    (``iou_pred_max_abs``, ``extra_output_max_abs``; the IoU gates apply over all prompts)."""
    from samdeploy.check import metrics

    dm = metrics.decoder_metrics(ref["scores"][None], ref["low_res"][None], cand["scores"][None], cand["low_res"][None])
    row = {"mask_iou": np.asarray(dm["mask_iou"]).ravel().tolist(), "iou_pred_max_abs": float(dm["iou_pred_max_abs"]),
           "mask_logit_rel_l2": float(dm["mask_logit_rel_l2"]), "extra": {}}
    failures: list[str] = []
    iou_pred_max = limits.get("iou_pred_max_abs")
    if iou_pred_max is not None and not row["iou_pred_max_abs"] <= iou_pred_max:
        failures.append(f"{where}IoU-prediction diff {row['iou_pred_max_abs']:.4f} > {iou_pred_max}")
    extra_max = limits.get("extra_output_max_abs")
    for name, r in ref["extra"].items():
        c = cand["extra"].get(name)
        if c is None or np.shape(c) != np.shape(r):
            failures.append(f"{where}{name}: candidate has {None if c is None else np.shape(c)}, reference {np.shape(r)}")
            continue
        diff = metrics.max_abs_error(np.asarray(r), np.asarray(c))
        entry = {"max_abs": float(diff), "ref": np.asarray(r).ravel().tolist(), "cand": np.asarray(c).ravel().tolist()}
        if name == SAM2_OBJECT_SCORE:  # > 0: object present (SAM2); report whether the decision agrees
            entry["object_present_agree"] = bool(np.array_equal(np.asarray(r) > 0, np.asarray(c) > 0))
        row["extra"][name] = entry
        if extra_max is not None and not diff <= extra_max:
            failures.append(f"{where}{name} diff {diff:.4f} > {extra_max}")
    return row, failures


def verify(ref, cand, photos: dict, limits: dict, log=print) -> dict:
    """Run both predictors (any backends) over ``photos`` x :func:`prompts_for` and gate them.
    Returns the report (``passed``, ``failures``, ``rows``, ``encoder``)."""
    rows, ious, failures, encoder = [], [], [], {}
    iou_mean_min, iou_worst_min = limits.get("mask_iou_mean"), limits.get("mask_iou_min")
    for name, img in photos.items():
        ref.set_image(img)
        cand.set_image(img)
        ref_feats = ref.get_image_features()
        feats, fails = compare_features(ref_feats, cand.get_image_features(), limits, where=f"{name}: ")
        encoder[name] = feats
        failures += fails
        cand.set_image_embedding(ref_feats, img.shape[:2])  # decoder measured on its own
        for pr in prompts_for(*img.shape[:2]):
            row, fails = compare_decoder(decoder_outputs(ref, pr), decoder_outputs(cand, pr), limits,
                                         where=f"{name} / {pr['name']}: ")
            failures += fails
            ious.extend(row["mask_iou"])
            rows.append({"image": name, "prompt": pr["name"], "embedding": feats.get(ENCODER_OUTPUT, {}), **row})
            cos = min((m["cosine"] for m in feats.values()), default=float("nan"))
            extra = "".join(f"  {k} diff {v['max_abs']:.4f}" for k, v in row["extra"].items())
            log(f"{name:18s} {pr['name']:12s} min cos {cos:.5f}  mask IoU min {min(row['mask_iou']):.4f}  "
                f"iou-pred diff {row['iou_pred_max_abs']:.4f}{extra}")
    mean_iou = float(np.mean(ious)) if ious else float("nan")
    worst = float(np.min(ious)) if ious else float("nan")
    if iou_mean_min is not None and not mean_iou >= iou_mean_min:
        failures.append(f"mean mask IoU {mean_iou:.4f} < {iou_mean_min}")
    if iou_worst_min is not None and not worst >= iou_worst_min:
        failures.append(f"worst mask IoU {worst:.4f} < {iou_worst_min}")
    return {"mean_mask_iou": mean_iou, "worst_mask_iou": worst, "encoder": encoder, "rows": rows,
            "failures": failures, "passed": not failures}


def pan_video(img: np.ndarray, n: int = 24, out_hw: tuple[int, int] = (240, 320)) -> list[np.ndarray]:
    """A camera pan with a slow zoom over one photograph: ``n`` frames of ``out_hw``."""
    from PIL import Image

    h, w = img.shape[:2]
    frames = []
    for i in range(n):
        t = i / max(n - 1, 1)
        ch, cw = h * (0.8 - 0.15 * t), w * (0.8 - 0.15 * t)  # zoom in while panning right and down
        y0, x0 = (h - ch) * (0.2 + 0.5 * t), (w - cw) * (0.1 + 0.8 * t)
        crop = Image.fromarray(img).crop((int(x0), int(y0), int(x0 + cw), int(y0 + ch)))
        frames.append(np.asarray(crop.convert("RGB").resize((out_hw[1], out_hw[0]), Image.BILINEAR)))
    return frames


def video_prompts(h: int, w: int, n: int) -> dict:
    """frame -> {object id: prompt}: a box on frame 0, a click on frame n // 3."""
    return {0: {1: {"box": [w * 0.3, h * 0.3, w * 0.7, h * 0.75]}},
            n // 3: {2: {"points": [[w * 0.2, h * 0.25]], "labels": [1]}}}


def verify_tracking(ref, cand, frames: list, prompts: dict, limits: dict, log=print) -> dict:
    """Track ``frames`` with both ``Tracker`` objects (any backends) and gate the per-frame mask IoU of
    every object. Returns ``{"mean_mask_iou", "worst_mask_iou", "object_score_max_abs", "frames",
    "failures", "passed"}``."""
    from samdeploy.check.metrics import mask_iou

    ious, score_diff, failures, per_frame = [], 0.0, [], []
    for r, c in zip(ref.track_video(frames, prompts), cand.track_video(frames, prompts)):
        a, b = ({o.obj_id: o for o in x.objects} for x in (r, c))
        if set(a) != set(b):
            failures.append(f"frame {r.frame_index}: objects {sorted(a)} (reference) vs {sorted(b)}")
            continue
        row = {}
        for oid in a:
            iou = float(mask_iou(a[oid].mask, b[oid].mask))
            ious.append(iou)
            row[oid] = iou
            score_diff = max(score_diff, abs(a[oid].score - b[oid].score))
        per_frame.append(row)
    mean_iou = float(np.mean(ious)) if ious else float("nan")
    worst = float(np.min(ious)) if ious else float("nan")
    iou_mean_min, iou_worst_min = limits.get("mask_iou_mean"), limits.get("mask_iou_min")
    if iou_mean_min is not None and not mean_iou >= iou_mean_min:
        failures.append(f"tracking: mean mask IoU {mean_iou:.4f} < {iou_mean_min}")
    if iou_worst_min is not None and not worst >= iou_worst_min:
        failures.append(f"tracking: worst mask IoU {worst:.4f} < {iou_worst_min}")
    log(f"tracking {len(frames)} frames, {len(ious)} object-frames: mask IoU mean {mean_iou:.4f}, worst {worst:.4f}, "
        f"object score max diff {score_diff:.4f}")
    return {"mean_mask_iou": mean_iou, "worst_mask_iou": worst, "object_score_max_abs": score_diff,
            "frames": per_frame, "failures": failures, "passed": not failures}


def manifest_known_issues(engine_dir: str) -> list[dict]:
    """``known_issues`` of every engine manifest (``*.engine.json``) in ``engine_dir``."""
    import glob
    import os

    found = []
    for path in sorted(glob.glob(os.path.join(engine_dir, "*.engine.json"))):
        try:
            with open(path, encoding="utf-8") as fh:
                data = json.load(fh)
        except (OSError, json.JSONDecodeError):
            continue
        for issue in data.get("known_issues") or []:
            found.append({**issue, "engine": os.path.basename(path)[: -len(".json")],
                          "built_with": (data.get("environment") or {}).get("tensorrt")})
    return found


def _add_tracking(report: dict, args, photos: dict, limits: dict) -> dict:
    """``--video``: the Tracker on the reference ONNX and on the candidate's graphs."""
    from samdeploy.runtime.tracker import Tracker

    frames = pan_video(next(iter(photos.values())), max(2, args.video_frames))
    prompts = video_prompts(*frames[0].shape[:2], len(frames))
    with Tracker(args.onnx_dir, backend="onnxruntime", num_frames=len(frames)) as ref_t, \
            Tracker(args.onnx_dir, backend=args.candidate_backend, graph_dir=args.engine_dir,
                    num_frames=len(frames)) as cand_t:
        tracking = verify_tracking(ref_t, cand_t, frames, prompts, limits)
        tracking["candidate"] = cand_t.describe()
    failures = report["failures"] + tracking["failures"]
    return {**report, "tracking": tracking, "failures": failures, "passed": not failures}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--onnx-dir", required=True, help="samdeploy export directory (reference, ONNX Runtime CPU)")
    ap.add_argument("--engine-dir", required=True, help="engine directory from `samdeploy build` (or ONNX dir)")
    ap.add_argument("--candidate-backend", default="tensorrt", choices=("tensorrt", "onnxruntime"))
    ap.add_argument("--precision", default=None, choices=sorted(GATES), help="gate to apply (default: from the manifest)")
    ap.add_argument("--image", action="append", default=[], help="photograph(s) to use (default: scikit-image samples)")
    ap.add_argument("--max-images", type=int, default=3)
    ap.add_argument("--video", action="store_true",
                    help="also compare the SAM2 Tracker (video engines of `build --graphs all`) with ONNX Runtime")
    ap.add_argument("--video-frames", type=int, default=24, help="frames of the --video check (default 24)")
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

    from samdeploy.images import default_photographs, load_image
    from samdeploy.runtime.predictor import Predictor

    issues = manifest_known_issues(args.engine_dir)
    for issue in issues:
        print(f"known issue ({issue['engine']}, TensorRT {issue.get('built_with') or '?'}): {issue['message']}\n"
              f"  remedy: {issue['remedy']}")
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
    photos = {p: load_image(p) for p in args.image} if args.image else dict(list(default_photographs().items())[: args.max_images])

    try:
        report = verify(ref, cand, photos, limits)
        report = {"precision": precision, "thresholds": limits, **report, "known_issues": issues,
                  "candidate": cand.model.describe()}
    finally:
        ref.close()
        cand.close()
    if args.video:
        from samdeploy.errors import SamDeployError
        try:
            report = _add_tracking(report, args, photos, limits)
        except SamDeployError as exc:
            print(f"error: {str(exc).splitlines()[0]}" + (f"\n  hint: {exc.hint}" if getattr(exc, "hint", None) else ""),
                  file=sys.stderr)
            return 2
    if args.json:  # atomically: a CI step never reads half a report
        from samdeploy._io import write_text_atomic

        write_text_atomic(args.json, json.dumps(report, indent=2, default=float))
    failures = report["failures"]
    print(f"\n{precision}: mean mask IoU {report['mean_mask_iou']:.4f}, worst {report['worst_mask_iou']:.4f} -> "
          f"{'PASS' if not failures else 'FAIL'}")
    for f in failures:
        print("  " + f)
    if failures and issues:
        print("  (the engine manifest names a known TensorRT miscompile above: see its remedy)")
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
