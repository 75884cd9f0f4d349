"""Parity metrics between a reference output and a candidate output (NumPy only, no torch).

Used by ``samdeploy check`` (PyTorch vs ONNX Runtime), by calibration's accuracy gate (FP32 vs INT8)
and by the Jetson verify script (ONNX vs TensorRT). Every function takes ``(reference, candidate)``.
"""

from __future__ import annotations

import numpy as np

_EPS = 1e-12


def _f64(a: np.ndarray) -> np.ndarray:
    return np.asarray(a, dtype=np.float64)


def max_abs_error(ref: np.ndarray, out: np.ndarray) -> float:
    ref, out = _f64(ref), _f64(out)
    _same_shape(ref, out)
    return float(np.max(np.abs(out - ref))) if ref.size else 0.0


def rel_l2_error(ref: np.ndarray, out: np.ndarray) -> float:
    """||out - ref||_2 / ||ref||_2 over the whole array."""
    ref, out = _f64(ref), _f64(out)
    _same_shape(ref, out)
    return float(np.linalg.norm(out - ref) / max(np.linalg.norm(ref), _EPS))


def cosine_similarity(ref: np.ndarray, out: np.ndarray) -> float:
    """Cosine of the angle between the two arrays flattened."""
    ref, out = _f64(ref).ravel(), _f64(out).ravel()
    _same_shape(ref, out)
    denom = max(np.linalg.norm(ref) * np.linalg.norm(out), _EPS)
    return float(np.dot(ref, out) / denom)


def mask_iou(ref_mask: np.ndarray, out_mask: np.ndarray) -> np.ndarray:
    """IoU of boolean masks over the last two axes -> array of shape ``ref_mask.shape[:-2]``.

    Two empty masks agree perfectly (IoU 1)."""
    a, b = np.asarray(ref_mask, bool), np.asarray(out_mask, bool)
    _same_shape(a, b)
    inter = np.logical_and(a, b).sum(axis=(-2, -1))
    union = np.logical_or(a, b).sum(axis=(-2, -1))
    return np.where(union == 0, 1.0, inter / np.maximum(union, 1))


def logits_iou(ref_logits: np.ndarray, out_logits: np.ndarray, threshold: float = 0.0) -> np.ndarray:
    """IoU of ``logits > threshold`` masks, per leading index (e.g. [B, tokens])."""
    return mask_iou(np.asarray(ref_logits) > threshold, np.asarray(out_logits) > threshold)


def near_threshold_fraction(logits: np.ndarray, threshold: float = 0.0, band: float = 0.5) -> float:
    """Fraction of pixels whose logit lies within ``band`` of the threshold. A high value (random
    weights give about +-0.4 logits) means thresholded IoU is dominated by float noise."""
    logits = np.asarray(logits)
    return float(np.mean(np.abs(logits - threshold) < band)) if logits.size else 0.0


def embedding_metrics(ref: np.ndarray, out: np.ndarray) -> dict[str, float]:
    return {
        "max_abs": max_abs_error(ref, out),
        "rel_l2": rel_l2_error(ref, out),
        "cosine": cosine_similarity(ref, out),
    }


def decoder_metrics(
    ref_iou: np.ndarray,
    ref_masks: np.ndarray,
    out_iou: np.ndarray,
    out_masks: np.ndarray,
    threshold: float = 0.0,
) -> dict[str, object]:
    """Metrics of one decoder call: iou_predictions [B,T], low_res_masks [B,T,H,W] (T mask tokens).

    Returns mask-logit relative L2 (whole call and per token), thresholded-mask IoU per [B,T], and
    the IoU-prediction max abs difference."""
    ref_masks, out_masks = np.asarray(ref_masks), np.asarray(out_masks)
    tokens = ref_masks.shape[1]
    return {
        "mask_logit_rel_l2": rel_l2_error(ref_masks, out_masks),
        "mask_logit_rel_l2_per_token": [rel_l2_error(ref_masks[:, t], out_masks[:, t]) for t in range(tokens)],
        "mask_iou": logits_iou(ref_masks, out_masks, threshold),  # [B, T]
        "iou_pred_max_abs": max_abs_error(ref_iou, out_iou),
        "near_threshold_fraction": near_threshold_fraction(ref_masks, threshold),
    }


def _same_shape(a: np.ndarray, b: np.ndarray) -> None:
    if a.shape != b.shape:
        raise ValueError(f"shape mismatch: reference {a.shape} vs candidate {b.shape}")
