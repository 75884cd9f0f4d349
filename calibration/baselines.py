"""Baseline calibrators on the same collected statistics: min-max, percentile, entropy (KL).

Weights are per-channel min-max (``max|w| / 127``, narrow range) for every baseline; only the
activation (and optional output) scale differs. Activation thresholds T become scales T / 127.5,
ONNX Runtime's symmetric convention (``2 T / 255``).

* ``minmax``: T = max |x| over all calibration data.
* ``percentile``: T = the 99.99th percentile of |x| (from the |x| histogram).
* ``entropy``: TensorRT's KL-divergence calibrator on the |x| histogram (2048 bins, 128 levels):
  the threshold whose clipped-and-quantized distribution is closest in KL to the original.
"""

from __future__ import annotations

import numpy as np

from . import quant
from .collect import LayerStats
from .layers import QuantLayer
from .search import LayerScales

PERCENTILE = 99.99
ENTROPY_LEVELS = 128


def percentile_threshold(hist: np.ndarray, absmax: float, pct: float = PERCENTILE) -> float:
    hist = np.asarray(hist, np.float64)
    total = hist.sum()
    if total <= 0 or absmax <= 0:
        return float(absmax)
    cdf = np.cumsum(hist) / total
    i = int(np.searchsorted(cdf, pct / 100.0))
    return float(min(absmax, (i + 1) * absmax / hist.size))


def entropy_threshold(hist: np.ndarray, absmax: float, levels: int = ENTROPY_LEVELS) -> float:
    """TensorRT-style KL calibration on a histogram of |x| over [0, absmax]: for every candidate
    threshold bin i, P = hist[:i] with the outliers added to the last bin, Q = hist[:i] merged into
    ``levels`` groups and spread back over each group's non-empty bins; pick argmin KL(P || Q)."""
    hist = np.asarray(hist, np.float64)
    bins = hist.size
    if hist.sum() <= 0 or absmax <= 0 or bins <= levels:
        return float(absmax)
    best_kl, best_i = np.inf, bins
    for i in range(levels, bins + 1, max(1, bins // 512)):
        src = hist[:i]
        ref = src.copy()
        ref[-1] += hist[i:].sum()
        edges = np.linspace(0, i, levels + 1).astype(int)
        starts, lengths = edges[:-1], np.diff(edges)
        nonzero = src > 0
        sums = np.add.reduceat(src, starts)
        counts = np.add.reduceat(nonzero.astype(np.float64), starts)
        q = np.repeat(np.divide(sums, counts, out=np.zeros_like(sums), where=counts > 0), lengths) * nonzero
        p = ref / ref.sum()
        q = q / q.sum()
        m = p > 0
        kl = float(np.sum(p[m] * np.log(p[m] / np.maximum(q[m], 1e-12))))
        if kl < best_kl:
            best_kl, best_i = kl, i
    return float((best_i + 0.5) * absmax / bins) if best_i < bins else float(absmax)


def _act_scale(threshold: float) -> np.float32:
    return np.float32(max(threshold / quant.DELTA0_DIVISOR, quant.MIN_SCALE))


def baseline_scales(layer: QuantLayer, stats: LayerStats, method: str, output_quant: bool = False) -> LayerScales:
    """Scales of one layer by a baseline ``method`` ("minmax" | "percentile" | "entropy")."""
    w = quant.minmax_weight_scale(layer.weight_absmax().numpy())

    def threshold(hist, absmax: float) -> float:
        if method == "minmax":
            return float(absmax)
        if method == "percentile":
            return percentile_threshold(hist.numpy(), absmax)
        if method == "entropy":
            return entropy_threshold(hist.numpy(), absmax)
        raise ValueError(f"unknown calibration method {method!r}")

    t_in = threshold(stats.act_hist, stats.act_absmax)
    out = _act_scale(threshold(stats.out_hist, stats.out_absmax)) if output_quant else None
    return LayerScales(
        name=layer.name,
        weight=w,
        act=_act_scale(t_in),
        out=out,
        method=method,
        info={"act_absmax": float(stats.act_absmax), "act_threshold": float(t_in)},
    )
