"""Pass/fail thresholds of ``samdeploy check`` per precision (no torch).

FP32 is held to float-rounding level (the issue demands embedding relative error <= 1e-5); FP16 and
INT8 are judged mainly on thresholded-mask IoU, since their logits legitimately move.
Every default can be overridden with ``--threshold NAME=VALUE`` (``VALUE`` = ``off`` disables it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

from ..errors import InputError

PRECISIONS = ("fp32", "fp16", "int8")


@dataclass(frozen=True)
class Threshold:
    name: str
    op: str  # "<=" (an error bound) or ">=" (an agreement bound)
    scope: str  # "encoder": embeddings; "decoder": decoder outputs (checked isolated and end to end)
    help: str

    def passes(self, value: float, limit: float) -> bool:
        return value <= limit if self.op == "<=" else value >= limit


THRESHOLDS: dict[str, Threshold] = {
    t.name: t
    for t in (
        Threshold("embedding_rel_l2", "<=", "encoder", "worst relative L2 error of the image embedding"),
        Threshold("embedding_cosine", ">=", "encoder", "worst cosine similarity of the image embedding"),
        Threshold("embedding_max_abs", "<=", "encoder", "largest absolute embedding difference"),
        Threshold("mask_logit_rel_l2", "<=", "decoder", "worst relative L2 error of the low-res mask logits (per call)"),
        Threshold("mask_iou_mean", ">=", "decoder", "lowest per-token mean IoU of the thresholded low-res masks"),
        Threshold("mask_iou_min", ">=", "decoder", "worst IoU of any single thresholded low-res mask"),
        Threshold("iou_pred_max_abs", "<=", "decoder", "largest absolute difference of the IoU predictions"),
    )
}

# None = reported, not gated.
DEFAULTS: dict[str, dict[str, float | None]] = {
    "fp32": {
        "embedding_rel_l2": 1e-5,
        "embedding_cosine": 0.99999,
        "embedding_max_abs": None,
        "mask_logit_rel_l2": 1e-4,
        "mask_iou_mean": 0.999,
        "mask_iou_min": 0.99,
        "iou_pred_max_abs": 1e-3,
    },
    "fp16": {
        "embedding_rel_l2": 1e-2,
        "embedding_cosine": 0.9995,
        "embedding_max_abs": None,
        "mask_logit_rel_l2": 3e-2,
        "mask_iou_mean": 0.99,
        "mask_iou_min": 0.95,
        "iou_pred_max_abs": 0.02,
    },
    "int8": {
        "embedding_rel_l2": 0.2,
        "embedding_cosine": 0.98,
        "embedding_max_abs": None,
        "mask_logit_rel_l2": 0.5,
        "mask_iou_mean": 0.95,
        "mask_iou_min": 0.7,
        "iou_pred_max_abs": 0.1,
    },
}


def resolve_thresholds(precision: str, overrides: Sequence[str] | Mapping[str, float | None] | None = None) -> dict[str, float | None]:
    """Defaults for ``precision`` with ``overrides`` applied (``["NAME=VALUE", ...]`` or a mapping)."""
    if precision not in DEFAULTS:
        raise InputError(f"unknown precision {precision!r}", hint=f"choose one of: {', '.join(PRECISIONS)}")
    limits = dict(DEFAULTS[precision])
    if not overrides:
        return limits
    items = overrides.items() if isinstance(overrides, Mapping) else (_split(o) for o in overrides)
    for name, value in items:
        if name not in THRESHOLDS:
            raise InputError(f"unknown threshold {name!r}", hint=f"known thresholds: {', '.join(THRESHOLDS)}")
        limits[name] = _value(name, value)
    return limits


def _split(text: str) -> tuple[str, str]:
    name, sep, value = str(text).partition("=")
    if not sep or not name.strip():
        raise InputError(f"--threshold expects NAME=VALUE, got {text!r}", hint="e.g. --threshold mask_iou_min=0.98")
    return name.strip(), value.strip()


def _value(name: str, value: object) -> float | None:
    if value is None or str(value).lower() in ("off", "none", ""):
        return None
    try:
        v = float(value)  # type: ignore[arg-type]
    except ValueError:
        raise InputError(f"threshold {name} needs a number or 'off', got {value!r}") from None
    if v != v:  # NaN
        raise InputError(f"threshold {name} must not be NaN")
    return v
