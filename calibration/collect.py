"""Statistics for the scale search, collected with forward hooks and tensor gradient hooks.

Per calibration image the FP model runs once forward (encoder, then the mask decoder on sampled
prompts) and once backward from the task loss (``losses.py``). For every quantized layer we keep

* ``x``: the layer's FP input at ``tokens`` sampled output positions, in the matrix form of
  ``layers.QuantLayer`` (rows for Linear, im2col patches for Conv2d, input pixels for
  ConvTranspose2d) -- [T, G, Kg]. The sample is stratified (``_pick``): the positions with the
  largest |input| plus a uniform sample of the rest;
* ``g``: dL/dO at the same positions, times sqrt(sample weight) so that sum (g * dO)^2 over the
  sample estimates the sum over all positions -- [T, G*Ng];
* over the *whole* tensors: max|input|, max|output|, histograms of |input| and |output| (for the
  min-max / percentile / entropy baselines and the search's initial step), and sum(g^2).

Sampling a few hundred positions per layer per image (instead of storing full activations) is what
keeps MobileSAM's calibration on 8 images within a few GB; many layers are captured in the same
forward/backward pass. Per-image results are cached on disk (``StatsCache``) so an interrupted run
resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .._io import atomic_path
from .errors import CalibrationError
from .layers import QuantLayer

HIST_BINS = 2048


# ---- per-layer statistics ------------------------------------------------------------------------
@dataclass
class LayerStats:
    x: torch.Tensor  # [T, G, Kg] sampled FP inputs
    g: torch.Tensor | None  # [T, N] dL/dO at the same positions (None: forward-only collection)
    act_absmax: float
    out_absmax: float
    act_hist: torch.Tensor  # float64 [bins] of |input| over [0, act_absmax]
    out_hist: torch.Tensor  # float64 [bins] of |output| over [0, out_absmax]
    g_sq: float = 0.0  # sum of g^2 over the whole output tensors
    g_numel: int = 0
    rows: int = 0  # output positions per image (summed over calls)
    calls: int = 0

    @property
    def g_rms(self) -> float:
        return float(np.sqrt(self.g_sq / self.g_numel)) if self.g_numel else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "LayerStats":
        return cls(**d)


def _rebin(hist: torch.Tensor, src_max: float, dst_max: float) -> torch.Tensor:
    """Move a histogram over [0, src_max] onto [0, dst_max] (same bin count) by bin centres."""
    bins = hist.numel()
    if src_max <= 0 or dst_max <= 0:
        out = torch.zeros(bins, dtype=torch.float64)
        out[0] = hist.sum()
        return out
    centres = (torch.arange(bins, dtype=torch.float64) + 0.5) * (src_max / bins)
    idx = torch.clamp((centres / dst_max * bins).long(), 0, bins - 1)
    return torch.zeros(bins, dtype=torch.float64).index_add_(0, idx, hist.double())


def merge_stats(parts: list[LayerStats]) -> LayerStats:
    """Concatenate samples and combine the whole-tensor statistics of several images."""
    act_max = max(p.act_absmax for p in parts)
    out_max = max(p.out_absmax for p in parts)
    gs = [p.g for p in parts]
    return LayerStats(
        x=torch.cat([p.x for p in parts]),
        g=None if any(g is None for g in gs) else torch.cat(gs),
        act_absmax=act_max,
        out_absmax=out_max,
        act_hist=sum(_rebin(p.act_hist, p.act_absmax, act_max) for p in parts),
        out_hist=sum(_rebin(p.out_hist, p.out_absmax, out_max) for p in parts),
        g_sq=sum(p.g_sq for p in parts),
        g_numel=sum(p.g_numel for p in parts),
        rows=max(p.rows for p in parts),
        calls=max(p.calls for p in parts),
    )


#: histograms of big tensors are built from this many randomly chosen elements (the max is exact)
HIST_SAMPLE = 1 << 20


def _hist(t: torch.Tensor, bins: int, gen: torch.Generator) -> tuple[float, torch.Tensor]:
    flat = t.detach().reshape(-1)
    m = float(flat.abs().max()) if flat.numel() else 0.0
    if not np.isfinite(m):
        raise CalibrationError("a layer produced NaN/inf activations during calibration",
                               hint="check the checkpoint and the calibration images")
    if flat.numel() > HIST_SAMPLE:
        flat = flat[torch.randint(flat.numel(), (HIST_SAMPLE,), generator=gen)]
    h = torch.histc(flat.abs().float(), bins=bins, min=0.0, max=m if m > 0 else 1.0).double()
    return m, h


# ---- position sampling / patch extraction -------------------------------------------------------
#: share of the sampled positions taken deterministically at the largest |input| (outliers); the rest
#: is uniform over the remaining positions and weighted so sums over samples estimate sums over all
TOP_FRACTION = 0.25


def _pick(score: torch.Tensor, k: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Stratified sample of ``k`` of ``score.numel()`` positions -> (sorted indices, weights).

    The ``TOP_FRACTION * k`` positions with the largest input magnitude are always kept (weight 1):
    rare activation outliers decide how much a small scale clips, and a uniform sample misses them.
    The others are drawn uniformly from the rest with weight (n - k_top) / (k - k_top), so weighted
    sums over the sample are unbiased estimates of sums over all positions."""
    n = score.numel()
    if n <= k:
        return torch.arange(n), torch.ones(n)
    k_top = int(k * TOP_FRACTION)
    top = torch.topk(score, k_top).indices if k_top else torch.empty(0, dtype=torch.long)
    rest_mask = torch.ones(n, dtype=torch.bool)
    rest_mask[top] = False
    rest = torch.nonzero(rest_mask).squeeze(1)
    pick = rest[torch.randperm(rest.numel(), generator=gen)[: k - k_top]]
    idx = torch.cat([top, pick])
    w = torch.cat([torch.ones(k_top), torch.full((k - k_top,), (n - k_top) / (k - k_top))])
    order = torch.argsort(idx)
    return idx[order], w[order]


def _conv_patches(x: torch.Tensor, m: torch.nn.Conv2d, b: torch.Tensor, oy: torch.Tensor, ox: torch.Tensor) -> torch.Tensor:
    """im2col of ``x`` at output pixels (b, oy, ox): [T, G, Cin/G * kh * kw] (weight flatten order)."""
    kh, kw = m.kernel_size
    sh, sw = m.stride
    ph, pw = m.padding
    dh, dw = m.dilation
    xp = F.pad(x, (pw, pw, ph, ph)) if (ph or pw) else x
    iy = oy[:, None] * sh + torch.arange(kh)[None, :] * dh  # [T, kh]
    ix = ox[:, None] * sw + torch.arange(kw)[None, :] * dw  # [T, kw]
    p = xp[b[:, None, None], :, iy[:, :, None], ix[:, None, :]]  # [T, kh, kw, C]
    t, c = p.shape[0], p.shape[-1]
    g = m.groups
    return p.permute(0, 3, 1, 2).reshape(t, g, (c // g) * kh * kw)


class _Recorder:
    """Forward hook of one layer: samples positions, keeps inputs, hooks the output's gradient."""

    def __init__(self, layer: QuantLayer, tokens: int, gen: torch.Generator, bins: int, need_grad: bool):
        self.layer, self.tokens, self.gen, self.bins, self.need_grad = layer, tokens, gen, bins, need_grad
        self.reset()

    def reset(self) -> None:
        self.xs: list[torch.Tensor] = []
        self.gs: list[torch.Tensor | None] = []
        self.act_absmax = 0.0
        self.out_absmax = 0.0
        self.act_hist = torch.zeros(self.bins, dtype=torch.float64)
        self.out_hist = torch.zeros(self.bins, dtype=torch.float64)
        self.g_sq = 0.0
        self.g_numel = 0
        self.rows = 0
        self.calls = 0

    def _add_hist(self, which: str, t: torch.Tensor) -> None:
        m, h = _hist(t, self.bins, self.gen)
        old_max = getattr(self, f"{which}_absmax")
        old = getattr(self, f"{which}_hist")
        new_max = max(old_max, m)
        merged = _rebin(old, old_max, new_max) + _rebin(h, m, new_max)
        setattr(self, f"{which}_absmax", new_max)
        setattr(self, f"{which}_hist", merged)

    def __call__(self, module: torch.nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        x = inputs[0].detach()
        y = output
        self._add_hist("act", x)
        self._add_hist("out", y)
        kind = self.layer.kind
        if kind == "linear":
            k, n = x.shape[-1], y.shape[-1]
            rows = x.numel() // k
            x2 = x.reshape(rows, k)
            idx, w = _pick(x2.abs().amax(1), self.tokens, self.gen)
            self.xs.append(x2[idx].unsqueeze(1).float().clone())
            select = lambda g: g.reshape(rows, n)[idx]  # noqa: E731
        elif kind == "conv":
            bsz, _, ho, wo = y.shape
            rows = bsz * ho * wo
            # largest |input| under each output pixel's receptive field
            amax = F.max_pool2d(x.abs().amax(1, keepdim=True), module.kernel_size, module.stride,
                                module.padding, module.dilation)
            idx, w = _pick(amax.reshape(-1)[:rows], self.tokens, self.gen)
            b, rem = idx // (ho * wo), idx % (ho * wo)
            oy, ox = rem // wo, rem % wo
            self.xs.append(_conv_patches(x, module, b, oy, ox).float().clone())
            select = lambda g: g[b, :, oy, ox]  # noqa: E731
        else:  # conv_transpose, kernel == stride
            bsz, _, hi, wi = x.shape
            kh, kw = module.kernel_size
            rows = bsz * hi * wi
            idx, w = _pick(x.abs().amax(1).reshape(-1), self.tokens, self.gen)
            b, rem = idx // (hi * wi), idx % (hi * wi)
            iy, ix = rem // wi, rem % wi
            self.xs.append(x[b, :, iy, ix].unsqueeze(1).float().clone())
            ry = iy[:, None] * kh + torch.arange(kh)[None, :]
            rx = ix[:, None] * kw + torch.arange(kw)[None, :]
            select = lambda g: g[b[:, None, None], :, ry[:, :, None], rx[:, None, :]].permute(0, 3, 1, 2).reshape(len(b), -1)  # noqa: E731
        root_w = w.sqrt().unsqueeze(1)  # the metric is quadratic in g: weights enter as sqrt
        self.rows += rows
        self.calls += 1
        slot = len(self.gs)
        self.gs.append(None)
        if self.need_grad and y.requires_grad:
            def grad_hook(grad: torch.Tensor, slot: int = slot, select: Callable = select, root_w=root_w) -> None:
                grad = grad.detach()
                self.g_sq += float(grad.double().pow(2).sum())
                self.g_numel += grad.numel()
                self.gs[slot] = (select(grad).float() * root_w).contiguous()

            y.register_hook(grad_hook)

    def result(self) -> LayerStats:
        g = None
        if self.need_grad:
            # a call whose output does not reach the loss has dL/dO = 0 (the factored mask decoder
            # computes some projections it only partly uses); layers with no gradient at all are
            # caught by check_gradients
            n = int(self.layer.col_channel().numel())
            g = torch.cat([t if t is not None else torch.zeros(x.shape[0], n) for t, x in zip(self.gs, self.xs)])
        return LayerStats(
            x=torch.cat(self.xs),
            g=g,
            act_absmax=self.act_absmax,
            out_absmax=self.out_absmax,
            act_hist=self.act_hist,
            out_hist=self.out_hist,
            g_sq=self.g_sq,
            g_numel=self.g_numel,
            rows=self.rows,
            calls=self.calls,
        )


class StatsCollector:
    """Attach recorders to ``layers``; ``run(fn)`` executes one image's forward/backward and returns
    the statistics of the layers that ran.

    ``phase`` says which exported graph the code running now belongs to (``collect_image`` sets
    "encoder" around ``model.encode`` and "decoder" around ``model.decode``). A layer's graph is the
    phase it ran in (``graph_of``), not its module path: SAM2's ``sam_mask_decoder.conv_s0/conv_s1``
    live in the decoder module but run in the encoder graph. With ``phases`` given, layers are only
    recorded while one of those phases runs (the others are not calibrated)."""

    def __init__(self, layers: list[QuantLayer], tokens: int, seed: int, bins: int = HIST_BINS, need_grad: bool = True,
                 phases: Iterable[str] | None = None):
        self.layers = layers
        self.gen = torch.Generator().manual_seed(seed)
        self.recorders = {l.name: _Recorder(l, tokens, self.gen, bins, need_grad) for l in layers}
        self.order: list[str] = []
        self.phases = None if phases is None else tuple(phases)
        self.phase: str | None = None
        self.graph_of: dict[str, str] = {}

    def run(self, fn: Callable[[], None], seed: int) -> dict[str, LayerStats]:
        self.gen.manual_seed(seed)
        self.order = []
        self.graph_of = {}
        self.phase = None
        handles = []
        for layer in self.layers:
            rec = self.recorders[layer.name]
            rec.reset()

            def hook(module, inputs, output, rec=rec, name=layer.name):
                if self.phases is not None and self.phase not in self.phases:
                    return
                phase = self.phase or rec.layer.graph
                if self.graph_of.setdefault(name, phase) != phase:
                    raise CalibrationError(
                        f"{name} runs in both the {self.graph_of[name]} and the {phase} graph",
                        hint="exclude it (--exclude) or calibrate one graph only (--graphs encoder)",
                    )
                if name not in self.order:
                    self.order.append(name)
                rec(module, inputs, output)

            handles.append(layer.module.register_forward_hook(hook))
        try:
            fn()
        finally:
            for h in handles:
                h.remove()
        return {name: self.recorders[name].result() for name in self.order}


# ---- one image ------------------------------------------------------------------------------------
@dataclass
class ImageStats:
    layers: dict[str, LayerStats]
    order: list[str]  # layer call order
    loss: float
    out_grad_rms: float  # rms of dL/d(mask logits) * (#masks), see check_gradients
    prompts: int
    graphs: dict[str, str] = field(default_factory=dict)  # layer -> graph it ran in ("encoder" | "decoder")
    # encoder output name -> (sum of (dL/d feature)^2, number of elements): how much of the task-loss
    # gradient enters the encoder through each feature the decoder consumes
    feature_grad: dict[str, tuple[float, int]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "layers": {k: v.to_dict() for k, v in self.layers.items()},
            "order": self.order,
            "loss": self.loss,
            "out_grad_rms": self.out_grad_rms,
            "prompts": self.prompts,
            "graphs": dict(self.graphs),
            "feature_grad": {k: [float(v[0]), int(v[1])] for k, v in self.feature_grad.items()},
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ImageStats":
        return cls(
            layers={k: LayerStats.from_dict(v) for k, v in d["layers"].items()},
            order=list(d["order"]),
            loss=float(d["loss"]),
            out_grad_rms=float(d["out_grad_rms"]),
            prompts=int(d["prompts"]),
            graphs={str(k): str(v) for k, v in d.get("graphs", {}).items()},
            feature_grad={str(k): (float(v[0]), int(v[1])) for k, v in d.get("feature_grad", {}).items()},
        )


def _as_tuple(out: Any) -> tuple[torch.Tensor, ...]:
    return tuple(out) if isinstance(out, (tuple, list)) else (out,)


def collect_image(
    model: torch.nn.Module,
    collector: StatsCollector,
    image_input: np.ndarray,
    prompt_batches: list,
    valid_hw: tuple[int, int],
    tokens: tuple[int, ...],
    loss_fn: Callable | None,
    seed: int,
    output_names: Sequence[str] | None = None,
    decoder_inputs: Sequence[str] | None = None,
    mask_side: int | None = None,
) -> ImageStats:
    """Run ``model.encode`` (+ ``model.decode`` on every prompt batch and backward from ``loss_fn``
    when it is given) under the collector.

    ``model.encode`` may return several features (HQ-SAM: 2, SAM2: 3): ``output_names`` names them in
    order (the contract's ``encoder.outputs``) and ``decoder_inputs`` says which ones ``model.decode``
    takes, in its argument order (``decoder.embedding_inputs``); both default to "the one output".
    ``mask_side`` is the decoder's mask-input side (default: the model's prompt encoder's). The task
    loss is taken at the decoder outputs and back-propagated through the decoder, so every feature the
    decoder consumes gets dL/d(feature) -- each feature is weighted by how much the masks and IoU
    predictions actually depend on it (``ImageStats.feature_grad`` records the split)."""
    out: dict[str, Any] = {"loss": 0.0, "out_grad_sq": 0.0, "out_numel": 0, "masks": 0}
    feature_grad: dict[str, list[float]] = {}
    gen = torch.Generator().manual_seed(seed + 1)

    def step() -> None:
        with torch.enable_grad():
            img = torch.from_numpy(np.ascontiguousarray(image_input)).float()
            if loss_fn is None:
                collector.phase = "encoder"
                with torch.no_grad():
                    model.encode(img)
                return
            img.requires_grad_(True)  # parameters are frozen: make the graph reach the layers
            collector.phase = "encoder"
            feats = _as_tuple(model.encode(img))
            names = list(output_names) if output_names is not None else [f"output_{i}" for i in range(len(feats))]
            if len(names) != len(feats):
                raise CalibrationError(f"the model's encoder returns {len(feats)} tensors, the contract names {len(names)}",
                                       hint="re-export the model with this samdeploy version")
            by_name = dict(zip(names, feats))
            consumed = list(decoder_inputs) if decoder_inputs is not None else names[:1]
            for n in consumed:
                if n not in by_name:
                    raise CalibrationError(f"the decoder consumes {n!r}, which the encoder does not return ({names})")
                acc = feature_grad.setdefault(n, [0.0, 0])

                def fhook(g: torch.Tensor, acc=acc) -> None:
                    acc[0] += float(g.double().pow(2).sum())
                    acc[1] += g.numel()

                if by_name[n].requires_grad:
                    by_name[n].register_hook(fhook)
            if mask_side is not None:
                side = int(mask_side)
            else:
                pe = getattr(model, "prompt_encoder", None) or getattr(model, "sam_prompt_encoder")
                side = int(pe.mask_input_size[0])
            collector.phase = "decoder"
            total = 0.0
            for pb in prompt_batches:
                coords = torch.from_numpy(pb.coords)
                labels = torch.from_numpy(pb.labels)
                b = coords.shape[0]
                mask_in = torch.zeros(b, 1, side, side)
                has = torch.zeros(b)
                # extra outputs (SAM2's object score) are not in the loss: the image predictor does not
                # use them for masks; the gate reports how they move
                iou, masks, *_ = model.decode(*(by_name[n] for n in consumed), coords, labels, mask_in, has)
                # HQ-SAM: the HQ mask token (4) has no IoU prediction of its own
                iou, masks = iou[:, [t for t in tokens if t < iou.shape[1]]], masks[:, list(tokens)]

                def mhook(g: torch.Tensor, n: int = masks.shape[0] * masks.shape[1]) -> None:
                    # scale-free: a unit per-mask loss gives per-pixel gradients of order 1/(#masks)
                    out["out_grad_sq"] += float((g.double() * n).pow(2).sum())
                    out["out_numel"] += g.numel()

                masks.register_hook(mhook)
                loss = loss_fn(iou, masks, valid_hw, gen)
                total = total + loss
                out["masks"] += masks.shape[0]
            total.backward()
            out["loss"] = float(total.detach())

    try:
        stats = collector.run(step, seed)
    finally:
        collector.phase = None
    rms = float(np.sqrt(out["out_grad_sq"] / out["out_numel"])) if out["out_numel"] else 0.0
    return ImageStats(layers=stats, order=list(collector.order), loss=out["loss"], out_grad_rms=rms, prompts=out["masks"],
                      graphs=dict(collector.graph_of),
                      feature_grad={k: (float(v[0]), int(v[1])) for k, v in feature_grad.items()})


def feature_gradients(images: list[ImageStats]) -> dict[str, dict[str, float]]:
    """Per consumed encoder output: rms of dL/d(feature) and its share of the total sum of squares
    (the share of the Fisher weight that enters the encoder through that feature). Raises when one
    the decoder consumes gets no gradient at all (its layers would be calibrated on noise)."""
    sq: dict[str, float] = {}
    n: dict[str, int] = {}
    for im in images:
        for k, (s, c) in im.feature_grad.items():
            sq[k] = sq.get(k, 0.0) + s
            n[k] = n.get(k, 0) + c
    total = sum(sq.values())
    dead = [k for k, v in sq.items() if not (np.isfinite(v) and v > 0.0)]
    if dead:
        raise CalibrationError(
            f"the task-loss gradient at the encoder output(s) {', '.join(dead)} is zero/non-finite",
            hint="the decoder does not depend on these features; check the model and the contract's decoder.embedding_inputs",
        )
    return {k: {"grad_rms": float(np.sqrt(sq[k] / max(n[k], 1))), "grad_sq_share": float(sq[k] / total) if total else 0.0,
                "elements_per_image": int(n[k] // max(len(images), 1))} for k in sq}


# ---- gradient sanity --------------------------------------------------------------------------------
#: dL/d(logit) of a sampled-label loss is (sigmoid(z) - y) / #masks; its rms over the valid pixels of a
#: real model is >= 1e-3 even with saturated (+-20) logits. A KL between identical outputs gives ~0.
MIN_OUTPUT_GRAD_RMS = 1e-6
#: a layer whose gradient is this much weaker than the strongest layer's is numerically disconnected
MIN_LAYER_GRAD_RATIO = 1e-10


def check_gradients(images: list[ImageStats], layer_names: Iterable[str]) -> dict[str, float]:
    """Fail loudly if the task-loss gradient is degenerate; returns the per-layer gradient rms."""
    out_rms = max((im.out_grad_rms for im in images), default=0.0)
    if not np.isfinite(out_rms) or out_rms < MIN_OUTPUT_GRAD_RMS:
        raise CalibrationError(
            f"the task-loss gradient at the mask-decoder outputs is ~0 (rms {out_rms:.3g}): the Hessian-guided "
            "metric would be numerical noise (the KL-between-identical-outputs pitfall, PTQ4ViT issue #23)",
            hint="use a loss with a real gradient (the default 'fisher' sampled-label loss)",
        )
    rms: dict[str, float] = {}
    for name in layer_names:
        sq = sum(im.layers[name].g_sq for im in images if name in im.layers)
        n = sum(im.layers[name].g_numel for im in images if name in im.layers)
        rms[name] = float(np.sqrt(sq / n)) if n else 0.0
    bad_nan = [n for n, v in rms.items() if not np.isfinite(v)]
    top = max((v for v in rms.values() if np.isfinite(v)), default=0.0)
    dead = [n for n, v in rms.items() if np.isfinite(v) and (v == 0.0 or v < MIN_LAYER_GRAD_RATIO * top)]
    if bad_nan or dead or top == 0.0:
        names = (bad_nan + dead)[:5]
        raise CalibrationError(
            f"{len(bad_nan) + len(dead)} layer(s) have a zero/non-finite task-loss gradient: {', '.join(names)}",
            hint="these layers do not influence the masks/IoU predictions; check the model or exclude them",
        )
    return rms


# ---- on-disk cache ---------------------------------------------------------------------------------
def settings_key(**settings: Any) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:20]


@dataclass
class StatsCache:
    """``<dir>/<settings key>/<image sha256>.pt`` -- one file per finished image (written atomically)."""

    root: Path | None
    key: str
    hits: int = 0
    writes: int = 0
    files: list[Path] = field(default_factory=list)

    @property
    def dir(self) -> Path | None:
        return None if self.root is None else Path(self.root) / self.key

    def _path(self, image_sha: str) -> Path | None:
        return None if self.dir is None else self.dir / f"{image_sha}.pt"

    def get(self, image_sha: str) -> ImageStats | None:
        p = self._path(image_sha)
        if p is None or not p.exists():
            return None
        try:
            d = torch.load(p, map_location="cpu", weights_only=True)
            st = ImageStats.from_dict(d)
        except Exception:  # a damaged cache entry is recomputed
            return None
        self.hits += 1
        self.files.append(p)
        return st

    def put(self, image_sha: str, stats: ImageStats) -> None:
        p = self._path(image_sha)
        if p is None:
            return
        with atomic_path(p, suffix=".pt") as tmp:
            torch.save(stats.to_dict(), tmp)
        self.writes += 1
        self.files.append(p)

    def size_bytes(self) -> int:
        return sum(f.stat().st_size for f in set(self.files) if f.exists())


def default_cache_root() -> Path:
    base = os.environ.get("SAMDEPLOY_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "samdeploy")
    return Path(base) / "calibration"
