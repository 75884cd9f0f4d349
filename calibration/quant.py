"""Symmetric INT8 quantizer primitives shared by the search, the baselines, the QDQ writer and the
fake-quant simulation -- one definition, so the scales we search are the scales ONNX Runtime and
TensorRT execute.

Conventions (ptq.md §3a / §6.4; what TensorRT explicit quantization accepts):

* zero point 0 everywhere (symmetric); ``q = clamp(round_half_even(x / s), qmin, qmax)``;
* activations per tensor, ``[-128, 127]``;
* weights per output channel, **narrow range** ``[-127, 127]``;
* scales are float32 and are written to the ONNX file unchanged (bit for bit).

The candidate grid is PTQ4ViT's / TinySAM's: ``(0.01 + k * 1.19 / 100) * delta0`` for ``k = 0..99``
with ``delta0 = max|x| / 127.5`` (min-max), i.e. from 1 % up to ~119 % of the min-max step.
"""

from __future__ import annotations

import numpy as np

ACT_QMIN, ACT_QMAX = -128, 127
W_QMIN, W_QMAX = -127, 127
#: PTQ4ViT's initial interval: max|x| / (2^(b-1) - 0.5)
DELTA0_DIVISOR = 127.5
GRID_LO, GRID_HI, GRID_N = 0.01, 1.2, 100
#: floor for scales of all-zero tensors/channels (any positive scale is exact for zeros)
MIN_SCALE = float(np.float32(1e-12))


def grid_factors(n: int = GRID_N, lo: float = GRID_LO, hi: float = GRID_HI) -> np.ndarray:
    """The ``n`` multipliers of ``delta0`` that the search evaluates (float64)."""
    k = np.arange(n, dtype=np.float64)
    return lo + k * (hi - lo) / n


def delta0(absmax: np.ndarray | float) -> np.ndarray:
    """Min-max initial step ``max|x| / 127.5`` (float32, never 0)."""
    d = np.asarray(absmax, dtype=np.float64) / DELTA0_DIVISOR
    return np.maximum(d, MIN_SCALE).astype(np.float32)


def candidates(absmax: np.ndarray | float, n: int = GRID_N, lo: float = GRID_LO, hi: float = GRID_HI) -> np.ndarray:
    """Candidate scales ``[n, *absmax.shape]`` (float32) around the min-max step."""
    d0 = delta0(absmax).astype(np.float64)
    f = grid_factors(n, lo, hi).reshape((n,) + (1,) * d0.ndim)
    return np.maximum(f * d0, MIN_SCALE).astype(np.float32)


def minmax_weight_scale(absmax: np.ndarray) -> np.ndarray:
    """Per-channel min-max scale that never clips in the narrow range: ``max|w| / 127``."""
    return np.maximum(np.asarray(absmax, np.float64) / W_QMAX, MIN_SCALE).astype(np.float32)


def minmax_act_scale(absmax: float) -> np.float32:
    """Per-tensor symmetric min-max activation scale (ONNX Runtime's: ``2 max|x| / 255``)."""
    return np.float32(max(float(absmax) / DELTA0_DIVISOR, MIN_SCALE))


def quantize_np(x: np.ndarray, scale: np.ndarray | float, qmin: int, qmax: int) -> np.ndarray:
    """``clip(rint(x / s), qmin, qmax)`` as int8 -- float32 division, round half to even (ONNX
    QuantizeLinear). ``scale`` must broadcast against ``x``."""
    q = np.rint(np.asarray(x, np.float32) / np.asarray(scale, np.float32))
    return np.clip(q, qmin, qmax).astype(np.int8)


def quantize_weight_np(w: np.ndarray, scale: np.ndarray, axis: int) -> np.ndarray:
    """Per-channel int8 weights (narrow range) along ``axis``."""
    shape = [1] * w.ndim
    shape[axis] = -1
    return quantize_np(w, np.asarray(scale, np.float32).reshape(shape), W_QMIN, W_QMAX)


# ---- torch versions (imported lazily so this module stays importable without torch) --------------
def fake_quant(x, scale, qmin: int, qmax: int):
    """Quantize-dequantize in torch with ONNX semantics (float32 division, ties to even)."""
    import torch

    return torch.clamp(torch.round(x / scale), qmin, qmax) * scale


def fake_quant_act(x, scale):
    return fake_quant(x, scale, ACT_QMIN, ACT_QMAX)


def fake_quant_weight(w, scale):
    return fake_quant(w, scale, W_QMIN, W_QMAX)
