"""Accuracy gate: FP32 vs INT8 graphs, both through ONNX Runtime, on held-out images and prompts.

For every image: the cosine of every encoder output (the contract's ``encoder.outputs``: SAM-1 one
embedding, HQ-SAM two, SAM2 three; FP32 encoder vs INT8 encoder), then for a deterministic prompt set
(a grid of single clicks + seeded boxes) the FP32 decoder on the FP32 encoder's outputs vs the (FP32
or INT8) decoder on the INT8 encoder's outputs -- every output ``decoder.embedding_inputs`` names
comes from the INT8 encoder: thresholded mask IoU for every mask token the contract uses (over the
low-res mask's image area; empty vs empty counts as 1), |IoU-prediction difference| and the largest
change of the decoder's extra outputs (SAM2's object-score logit; reported, not gated).

The gate passes when mean IoU >= ``mean_iou`` and the 5th percentile >= ``p5_iou``.

Note on random weights: an untrained decoder's mask logits are about +-0.4, so thresholded IoU flips
on float noise and says nothing. ``samdeploy.models.random_model`` therefore rescales the decoder's
output layers so logits span about +-20 like a trained SAM (``realistic``); on such a model the gate
measures how much INT8 perturbs a *random* network's features on real photographs -- a stress test
of the quantizer and the graph, not a statement about a trained checkpoint's task accuracy.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import onnx

from ..check.metrics import cosine_similarity, mask_iou
from ..check.thresholds import select_thresholds
from ..contract import DECODER_OUTPUTS, ENCODER_INPUT, ModelContract, decoder_feeds
from ..runtime.transforms import preprocess_image, prompt_frame_shape
from .prompts import grid_prompts, low_res_valid

@dataclass(frozen=True)
class Gate:
    """Minimum mean and 5th-percentile mask IoU, FP32 vs INT8. The defaults are the threshold
    registry's (``check/thresholds.py``) ``mask_iou_mean`` / ``mask_iou_p5`` for precision int8."""

    mean_iou: float = select_thresholds("int8", ("mask_iou_mean",))["mask_iou_mean"]  # type: ignore[assignment]
    p5_iou: float = select_thresholds("int8", ("mask_iou_p5",))["mask_iou_p5"]  # type: ignore[assignment]

    @classmethod
    def from_thresholds(cls, precision: str = "int8", overrides=None) -> "Gate":
        """The registry's limits for ``precision`` with ``overrides`` (``["mask_iou_p5=0.85"]`` or a
        mapping, as :func:`~samdeploy.check.thresholds.resolve_thresholds` takes); ``off`` = 0 (not gated)."""
        t = select_thresholds(precision, ("mask_iou_mean", "mask_iou_p5"), overrides)
        return cls(mean_iou=0.0 if t["mask_iou_mean"] is None else t["mask_iou_mean"],
                   p5_iou=0.0 if t["mask_iou_p5"] is None else t["mask_iou_p5"])

    def check(self, r: "EvalResult") -> list[str]:
        bad = []
        if not r.mean_iou >= self.mean_iou:
            bad.append(f"mean mask IoU {r.mean_iou:.4f} < {self.mean_iou}")
        if not r.p5_iou >= self.p5_iou:
            bad.append(f"5th-percentile mask IoU {r.p5_iou:.4f} < {self.p5_iou}")
        return bad


@dataclass
class EvalResult:
    mean_iou: float
    p5_iou: float
    min_iou: float
    emb_cosine_mean: float
    emb_cosine_min: float
    iou_pred_abs_err_mean: float
    iou_pred_abs_err_max: float
    masks: int
    images: int
    per_image: dict[str, dict[str, float]] = field(default_factory=dict)
    mask_logit_rel_err: float = 0.0  # ||logits_int8 - logits_fp32|| / ||logits_fp32|| over the image area
    # encoder output name -> {"mean": cosine mean over images, "min": ...}; emb_cosine_mean/min above
    # are the worst output's (for one output: that output's)
    output_cosine: dict[str, dict[str, float]] = field(default_factory=dict)
    extra_output_max_abs: dict[str, float] = field(default_factory=dict)  # decoder extra outputs (not gated)

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items()}

    def line(self) -> str:
        if len(self.output_cosine) > 1:
            emb = "cosine " + ", ".join(f"{n} {c['mean']:.5f}" for n, c in self.output_cosine.items())
        else:
            emb = f"emb cosine {self.emb_cosine_mean:.5f} (min {self.emb_cosine_min:.5f})"
        extra = "".join(f" | {n} max |d| {v:.3f}" for n, v in self.extra_output_max_abs.items())
        return (f"mask IoU mean {self.mean_iou:.4f} p5 {self.p5_iou:.4f} min {self.min_iou:.4f} | "
                f"mask logits rel err {self.mask_logit_rel_err:.4f} | {emb} | "
                f"|dIoU-pred| mean {self.iou_pred_abs_err_mean:.4f} max {self.iou_pred_abs_err_max:.4f}{extra}")


# ---- sessions ----------------------------------------------------------------------------------------
def ort_session(model: str | os.PathLike | onnx.ModelProto, threads: int = 0, optimization: str = "all",
                disabled_optimizers: tuple[str, ...] = (), workdir: str | None = None, profile_prefix: str | None = None,
                int8_lowering: bool = True):
    """An ONNX Runtime CPU session from a file or an in-memory ModelProto, opened the way the
    runtime's ORT backend opens it (default session options; INT8 QDQ Linear layers lowered with
    their bias, see ``runtime.backends.ort_lowering``)."""
    import onnxruntime as ort

    from ..runtime.backends.ort_lowering import is_qdq_graph, lower_file_for_cpu, lower_for_cpu

    source: str | bytes
    if isinstance(model, onnx.ModelProto):
        if int8_lowering and is_qdq_graph(model):
            model = lower_for_cpu(model)[0]
        source = _temp_model_path(model, workdir)
    else:
        lowered = lower_file_for_cpu(str(model)) if int8_lowering else None
        source = lowered[0] if lowered is not None else str(model)
    so = ort.SessionOptions()
    so.log_severity_level = 3
    if threads:
        so.intra_op_num_threads = int(threads)
    so.graph_optimization_level = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[optimization]
    if profile_prefix:
        so.enable_profiling = True
        so.profile_file_prefix = profile_prefix
    kwargs = {"disabled_optimizers": list(disabled_optimizers)} if disabled_optimizers else {}
    return ort.InferenceSession(source, so, providers=["CPUExecutionProvider"], **kwargs)


def _temp_model_path(model: onnx.ModelProto, workdir: str | None) -> str:
    """Serialize to a private temp file (sessions from paths also work above 2 GB)."""
    d = Path(workdir or tempfile.mkdtemp(prefix="samdeploy-calib-"))
    d.mkdir(parents=True, exist_ok=True)
    fd, path = tempfile.mkstemp(suffix=".onnx", dir=d)
    os.close(fd)
    size = model.ByteSize()
    if size > 1_800_000_000:
        onnx.save(model, path, save_as_external_data=True, location=Path(path).name + ".data")
    else:
        Path(path).write_bytes(model.SerializeToString())
    return path


# ---- evaluation ---------------------------------------------------------------------------------------
@dataclass
class _Reference:
    feats: dict[str, np.ndarray]  # every encoder output, by the contract's names
    hw: tuple[int, int]
    x: np.ndarray
    outs: list[tuple[np.ndarray, np.ndarray, list[np.ndarray]]]  # per prompt batch: (iou [B,T], masks [B,T,H,W], extras)

    @property
    def emb(self) -> np.ndarray:  # the first (SAM-1: only) encoder output
        return next(iter(self.feats.values()))


def encoder_outputs(session, x: np.ndarray, contract: ModelContract) -> dict[str, np.ndarray]:
    """Run an encoder session; its outputs by the contract's names (``encoder.outputs``)."""
    names = list(contract.encoder.output_names)
    return dict(zip(names, session.run(names, {ENCODER_INPUT: x})))


class Evaluator:
    """Computes the FP32 reference once per image and compares any number of INT8 candidates."""

    def __init__(self, fp_encoder, fp_decoder, images: Mapping[str, np.ndarray], contract: ModelContract,
                 grid: int = 4, boxes: int = 4, seed: int = 0):
        self.fp_encoder, self.fp_decoder = fp_encoder, fp_decoder
        self.contract = contract
        self.images = dict(images)
        self.grid, self.boxes, self.seed = grid, boxes, seed
        dec = contract.decoder
        self.tokens = list(dec.multimask_tokens) if dec.always_multimask else list(range(dec.num_mask_tokens))
        self._ref: dict[str, _Reference] = {}

    def _decode(self, session, feats: Mapping[str, np.ndarray], hw: tuple[int, int]):
        dec = self.contract.decoder
        side = dec.low_res_size
        consumed = {n: np.ascontiguousarray(feats[n], np.float32) for n in dec.embedding_inputs}
        fetch = list(DECODER_OUTPUTS) + list(dec.extra_outputs)
        outs = []
        for pb in grid_prompts(hw, self.grid, self.boxes, self.seed):
            feeds = decoder_feeds(consumed, pb.coords, pb.labels,
                                  np.zeros((pb.size, 1, side, side), np.float32), np.zeros(pb.size, np.float32))
            iou, masks, *extra = session.run(fetch, feeds)
            # HQ-SAM: the HQ mask token has no IoU prediction of its own
            outs.append((iou[:, [t for t in self.tokens if t < iou.shape[1]]], masks[:, self.tokens], extra))
        return outs

    def reference(self, name: str) -> _Reference:
        if name not in self._ref:
            x, _ = preprocess_image(self.images[name], self.contract.preprocess)
            hw = prompt_frame_shape(self.images[name].shape[:2], self.contract)
            feats = encoder_outputs(self.fp_encoder, x, self.contract)
            self._ref[name] = _Reference(feats, hw, x, self._decode(self.fp_decoder, feats, hw))
        return self._ref[name]

    def evaluate(self, q_encoder, q_decoder=None) -> EvalResult:
        q_decoder = q_decoder or self.fp_decoder
        dec = self.contract.decoder
        ious, dpred, per_image = [], [], {}
        cos: dict[str, list[float]] = {n: [] for n in self.contract.encoder.output_names}
        extra_abs = {n: 0.0 for n in dec.extra_outputs}
        err_sq, ref_sq = 0.0, 0.0
        for name in self.images:
            ref = self.reference(name)
            feats = encoder_outputs(q_encoder, ref.x, self.contract)
            img_cos = {n: cosine_similarity(ref.feats[n], feats[n]) for n in cos}
            for n, c in img_cos.items():
                cos[n].append(c)
            h, w = low_res_valid(ref.hw, self.contract.frame_size, dec.low_res_size)
            img_ious = []
            for (iou_r, m_r, x_r), (iou_q, m_q, x_q) in zip(ref.outs, self._decode(q_decoder, feats, ref.hw)):
                thr = dec.mask_threshold
                img_ious.append(mask_iou(m_r[..., :h, :w] > thr, m_q[..., :h, :w] > thr).ravel())
                d = m_q[..., :h, :w].astype(np.float64) - m_r[..., :h, :w]
                err_sq += float((d * d).sum())
                ref_sq += float((m_r[..., :h, :w].astype(np.float64) ** 2).sum())
                dpred.append(np.abs(iou_r - iou_q).ravel())
                for n, a, b in zip(dec.extra_outputs, x_r, x_q):
                    extra_abs[n] = max(extra_abs[n], float(np.abs(np.asarray(a, np.float64) - b).max()))
            img_ious = np.concatenate(img_ious)
            ious.append(img_ious)
            per_image[name] = {"mean_iou": float(img_ious.mean()), "min_iou": float(img_ious.min()),
                               "emb_cosine": float(min(img_cos.values())),
                               **({f"cosine:{n}": float(c) for n, c in img_cos.items()} if len(img_cos) > 1 else {})}
        allv = np.concatenate(ious)
        dp = np.concatenate(dpred)
        per_output = {n: {"mean": float(np.mean(v)), "min": float(np.min(v))} for n, v in cos.items()}
        return EvalResult(
            mean_iou=float(allv.mean()),
            p5_iou=float(np.percentile(allv, 5)),
            min_iou=float(allv.min()),
            emb_cosine_mean=min(c["mean"] for c in per_output.values()),
            emb_cosine_min=min(c["min"] for c in per_output.values()),
            iou_pred_abs_err_mean=float(dp.mean()),
            iou_pred_abs_err_max=float(dp.max()),
            masks=int(allv.size),
            images=len(self.images),
            per_image=per_image,
            mask_logit_rel_err=float(np.sqrt(err_sq / max(ref_sq, 1e-30))),
            output_cosine=per_output,
            extra_output_max_abs=extra_abs,
        )
