"""Hessian-guided scale search (PTQ4ViT / TinySAM), restricted to what deploys.

For one layer with sampled FP inputs X, FP outputs O = X W^T and task-loss gradients g = dL/dO:

    minimise over (s_w, s_a):  sum_t sum_n ( g[t,n] * (O[t,n] - Q(X; s_a) Q(W; s_w)^T [t,n]) )^2

* s_w: one scale per output channel, [-127, 127]; s_a: one scale per tensor, [-128, 127];
* candidates (0.01 + k * 1.19/100) * delta0, k = 0..99, delta0 = min-max step (``quant.candidates``);
* 3 alternating rounds: weights with the activation scale fixed (channels are independent, so all
  channels pick their best candidate from one batched evaluation), then the activation scale with
  the weights fixed. Initial point: delta0 for both (PTQ4ViT).
* "parallel" calibration: X is the FP input (earlier layers are not quantized when O is recorded).

Optionally the layer's *output* gets a per-tensor scale too (ONNX Runtime needs it to run Conv in
INT8, see ``qdq.py``); it is searched as a third step on the same metric.

All candidates of one step are evaluated in chunks as one batched matmul (``chunk_bytes`` bounds the
temporary [chunk, T, N] tensors).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from . import quant
from .collect import LayerStats
from .layers import QuantLayer


@dataclass
class LayerScales:
    """The scales of one layer: what goes into the Q/DQ nodes (float32, bit for bit)."""

    name: str
    weight: np.ndarray  # [C] float32, per output channel
    act: np.float32  # input activation, per tensor
    out: np.float32 | None = None  # output activation (only with output quantization)
    method: str = ""
    info: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        d = {
            "weight_scale": [float(v) for v in np.asarray(self.weight, np.float32)],
            "input_scale": float(np.float32(self.act)),
            "method": self.method,
            **{k: v for k, v in self.info.items()},
        }
        if self.out is not None:
            d["output_scale"] = float(np.float32(self.out))
        return d


def _q(x: torch.Tensor, scale: torch.Tensor, qmin: int, qmax: int) -> torch.Tensor:
    """Integer codes (int8) with ONNX QuantizeLinear semantics (float32 division, ties to even)."""
    t = torch.div(x, scale)
    return t.round_().clamp_(qmin, qmax).to(torch.int8)


class _Problem:
    """The layer's matrix problem on the sampled data.

    Candidates are evaluated with exact integer arithmetic: the int8 codes of X and W are multiplied
    with ``torch._int_mm`` (one GEMM for a whole chunk of candidates; grouped/depthwise convolutions
    use a float bmm on the integer codes, also exact) and the int32 result is scaled by s_a * s_w --
    the same numbers ONNX Runtime and TensorRT compute."""

    def __init__(self, layer: QuantLayer, stats: LayerStats, with_bias: bool):
        if stats.g is None:
            raise ValueError(f"{layer.name}: the Hessian search needs gradients (collect with a loss)")
        self.x = stats.x.float().contiguous()  # [T, G, Kg]
        self.w = layer.matrix().contiguous()  # [G, Ng, Kg]
        self.t, self.groups, self.kg = self.x.shape
        self.ng = self.w.shape[1]
        self.n = self.groups * self.ng
        self.col = layer.col_channel()  # [N]
        self.channels = layer.out_channels
        self.gw = stats.g.float().contiguous()  # [T, N]
        self.bias = layer.bias_cols() if with_bias else None
        if self.groups == 1:
            o = self.x[:, 0] @ self.w[0].t()
        else:
            o = torch.bmm(self.x.transpose(0, 1), self.w.transpose(1, 2)).transpose(0, 1).reshape(self.t, self.n)
        self.o = o if self.bias is None else o + self.bias  # [T, N]

    # integer products -------------------------------------------------------------------------
    def acc_weight_candidates(self, xq: torch.Tensor, wq: torch.Tensor) -> torch.Tensor:
        """xq [T,G,Kg] int8, wq [c,G,Ng,Kg] int8 -> accumulators [T, c, N] float."""
        c = wq.shape[0]
        if self.groups == 1:
            b = wq[:, 0].reshape(c * self.ng, self.kg).t().contiguous()
            return torch._int_mm(xq[:, 0].contiguous(), b).float().view(self.t, c, self.n)
        a = xq.transpose(0, 1).float()  # [G, T, Kg]
        b = wq.permute(1, 3, 0, 2).reshape(self.groups, self.kg, c * self.ng).float()
        acc = torch.bmm(a, b).view(self.groups, self.t, c, self.ng)
        return acc.permute(1, 2, 0, 3).reshape(self.t, c, self.n)

    def acc_act_candidates(self, xq: torch.Tensor, wq: torch.Tensor) -> torch.Tensor:
        """xq [c,T,G,Kg] int8, wq [G,Ng,Kg] int8 -> accumulators [c, T, N] float."""
        c = xq.shape[0]
        if self.groups == 1:
            return torch._int_mm(xq.reshape(c * self.t, self.kg), wq[0].t().contiguous()).float().view(c, self.t, self.n)
        a = xq.permute(2, 0, 1, 3).reshape(self.groups, c * self.t, self.kg).float()
        acc = torch.bmm(a, wq.transpose(1, 2).float()).view(self.groups, c, self.t, self.ng)
        return acc.permute(1, 2, 0, 3).reshape(c, self.t, self.n)

    def chunk(self, chunk_bytes: int, per_candidate_elems: int) -> int:
        return max(1, int(chunk_bytes // max(per_candidate_elems * 4, 1)))


def _weight_cols(p: _Problem, scales: torch.Tensor) -> torch.Tensor:
    """[..., C] channel scales -> [..., G, Ng, 1] broadcastable against W."""
    return scales[..., p.col].reshape(*scales.shape[:-1], p.groups, p.ng, 1)


def _sq_err(o: torch.Tensor, o_hat: torch.Tensor, gw: torch.Tensor) -> torch.Tensor:
    """(g * (O - O_hat))^2, in place on o_hat."""
    return o_hat.neg_().add_(o).mul_(gw).pow_(2)


def hessian_search(
    layer: QuantLayer,
    stats: LayerStats,
    n_candidates: int = quant.GRID_N,
    rounds: int = 3,
    output_quant: bool = False,
    chunk_bytes: int = 256 << 20,
) -> LayerScales:
    """Search the layer's scales on the Hessian-weighted output error (see the module docstring)."""
    p = _Problem(layer, stats, with_bias=output_quant)
    w_absmax = layer.weight_absmax().numpy()
    cand_w = torch.from_numpy(quant.candidates(w_absmax, n_candidates))  # [n, C]
    cand_a = torch.from_numpy(quant.candidates(stats.act_absmax, n_candidates))  # [n]
    cand_o = torch.from_numpy(quant.candidates(stats.out_absmax, n_candidates)) if output_quant else None
    s_w = torch.from_numpy(quant.delta0(w_absmax))
    s_a = torch.tensor(quant.delta0(stats.act_absmax))
    s_o = torch.tensor(quant.delta0(stats.out_absmax)) if output_quant else None
    o_t = p.o.unsqueeze(1)  # [T, 1, N]
    g_t = p.gw.unsqueeze(1)

    def finish(o_hat: torch.Tensor, so: torch.Tensor | None) -> torch.Tensor:
        if p.bias is not None:
            o_hat = o_hat.add_(p.bias)
        return o_hat if so is None else quant.fake_quant_act(o_hat, so)

    with torch.no_grad():
        err_minmax = _total_err(p, torch.from_numpy(quant.minmax_weight_scale(w_absmax)),
                                torch.tensor(quant.minmax_act_scale(stats.act_absmax)),
                                torch.tensor(quant.minmax_act_scale(stats.out_absmax)) if output_quant else None)
        err_init = _total_err(p, s_w, s_a, s_o)
        for _ in range(rounds):
            # (a) weights: every channel picks its candidate; one evaluation serves all channels
            xq = _q(p.x, s_a, quant.ACT_QMIN, quant.ACT_QMAX)
            step = p.chunk(chunk_bytes, 2 * p.t * p.n)
            err = torch.empty(n_candidates, p.channels, dtype=torch.float64)
            for c0 in range(0, n_candidates, step):
                sc = cand_w[c0 : c0 + step]  # [c, C]
                wq = _q(p.w.unsqueeze(0), _weight_cols(p, sc), quant.W_QMIN, quant.W_QMAX)
                o_hat = p.acc_weight_candidates(xq, wq).mul_(s_a * sc[:, p.col])  # [T, c, N]
                e = _sq_err(o_t, finish(o_hat, s_o), g_t).sum(0).double()  # [c, N]
                err[c0 : c0 + step] = torch.zeros(e.shape[0], p.channels, dtype=torch.float64).index_add_(1, p.col, e)
            s_w = cand_w[err.argmin(0), torch.arange(p.channels)]

            # (b) activation scale, weights fixed
            wq = _q(p.w, _weight_cols(p, s_w), quant.W_QMIN, quant.W_QMAX)
            step = p.chunk(chunk_bytes, 2 * p.t * (p.n + p.groups * p.kg))
            err_a = torch.empty(n_candidates, dtype=torch.float64)
            for c0 in range(0, n_candidates, step):
                sa = cand_a[c0 : c0 + step]
                xq = _q(p.x.unsqueeze(0), sa.reshape(-1, 1, 1, 1), quant.ACT_QMIN, quant.ACT_QMAX)
                o_hat = p.acc_act_candidates(xq, wq).mul_(sa.reshape(-1, 1, 1) * s_w[p.col])  # [c, T, N]
                err_a[c0 : c0 + step] = _sq_err(p.o, finish(o_hat, s_o), p.gw).sum((1, 2)).double()
            s_a = cand_a[err_a.argmin()]

            # (c) output scale (optional), input and weights fixed
            if cand_o is not None:
                xq = _q(p.x.unsqueeze(0), s_a, quant.ACT_QMIN, quant.ACT_QMAX)
                base = p.acc_act_candidates(xq, wq)[0].mul_(s_a * s_w[p.col]).add_(p.bias)  # [T, N]
                step = p.chunk(chunk_bytes, 2 * p.t * p.n)
                err_o = torch.empty(n_candidates, dtype=torch.float64)
                for c0 in range(0, n_candidates, step):
                    so = cand_o[c0 : c0 + step].reshape(-1, 1, 1)
                    err_o[c0 : c0 + step] = _sq_err(p.o, quant.fake_quant_act(base.unsqueeze(0), so), p.gw).sum((1, 2)).double()
                s_o = cand_o[err_o.argmin()]
        err_final = _total_err(p, s_w, s_a, s_o)

    return LayerScales(
        name=layer.name,
        weight=s_w.numpy().astype(np.float32),
        act=np.float32(s_a.item()),
        out=None if s_o is None else np.float32(s_o.item()),
        method="hessian",
        info={
            "hessian_err_minmax": err_minmax,
            "hessian_err_init": err_init,
            "hessian_err": err_final,
            "act_absmax": float(stats.act_absmax),
            "act_ratio_to_delta0": float(s_a.item() / quant.delta0(stats.act_absmax)),
            "samples": int(p.t),
        },
    )


def _total_err(p: _Problem, s_w: torch.Tensor, s_a: torch.Tensor, s_o: torch.Tensor | None) -> float:
    wq = _q(p.w, _weight_cols(p, s_w), quant.W_QMIN, quant.W_QMAX)
    xq = _q(p.x.unsqueeze(0), s_a, quant.ACT_QMIN, quant.ACT_QMAX)
    o_hat = p.acc_act_candidates(xq, wq)[0].mul_(s_a * s_w[p.col])
    if p.bias is not None:
        o_hat = o_hat.add_(p.bias)
    if s_o is not None:
        o_hat = quant.fake_quant_act(o_hat, s_o)
    return float(_sq_err(p.o, o_hat, p.gw).sum())


def hessian_error(layer: QuantLayer, stats: LayerStats, scales: LayerScales) -> float:
    """The Hessian-weighted output error of given scales on the sampled data (any method's scales)."""
    p = _Problem(layer, stats, with_bias=scales.out is not None)
    with torch.no_grad():
        return _total_err(
            p,
            torch.from_numpy(np.asarray(scales.weight, np.float32)),
            torch.tensor(np.float32(scales.act)),
            None if scales.out is None else torch.tensor(np.float32(scales.out)),
        )
