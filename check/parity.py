"""PyTorch (``Sam.encode``/``Sam.decode``) vs the exported graphs on real photographs.

For every image: the embedding of both encoders is compared; then the prompt suite
(:mod:`.prompts`) runs through the PyTorch decoder and the ONNX decoder twice: fed with the PyTorch
embedding ("decoder": the decoder graph alone) and with the ONNX embedding ("end_to_end": what a
user of the exported files gets). Metrics (:mod:`.metrics`) are aggregated and judged against the
thresholds of the precision (:mod:`.thresholds`).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from ..contract import ENCODER_INPUT, ModelContract, decoder_feeds, decoder_results, ensure_same_model
from ..errors import ContractError, InputError
from ..export.manifest import export_dir_of, graph_path, manifest_contract, read_manifest, verify_files
from ..export.source import ModelSource, load_source
from ..runtime.transforms import preprocess_image, prompt_frame_shape
from . import metrics
from .prompts import DecoderCall, mask_feedback, prompt_suite
from .report import CheckReport, Gate
from .thresholds import THRESHOLDS, resolve_thresholds

# Median |logit| below this: thresholded IoU is dominated by float noise (random, unscaled weights).
NOISY_LOGITS_MEDIAN = 1.0


@dataclass
class CheckOptions:
    precision: str | None = None  # None: the manifest's precision (fp32 for plain exports)
    thresholds: Sequence[str] | Mapping[str, float | None] | None = None
    seed: int = 0
    max_images: int | None = None
    backend: str = "onnxruntime"
    provider: str | None = "cpu"
    threads: int | None = None
    encoder: str | None = None  # override the manifest's file
    decoder: str | None = None


def load_reference(manifest: Mapping[str, Any], checkpoint: str | None = None, random_seed: int | None = None, trust_pickle: bool = False):
    """The PyTorch model to compare against: ``checkpoint`` / ``random_seed`` if given, else what the
    manifest recorded. Refuses a model whose weights differ from the export's."""
    contract = manifest_contract(manifest)
    recorded = ModelSource.from_dict(manifest.get("source", {"kind": "unknown", "variant": contract.variant}))
    if checkpoint is not None and random_seed is not None:
        raise InputError("--checkpoint and --random-weights are mutually exclusive", hint="pass one of them")
    if checkpoint is not None:
        from ..export.source import checkpoint_source

        src = checkpoint_source(checkpoint, contract.variant, trust_pickle or recorded.trust_pickle)
    elif random_seed is not None:
        realistic = recorded.realistic if recorded.kind == "random" else True
        src = ModelSource(kind="random", variant=contract.variant, seed=int(random_seed), realistic=realistic)
    else:
        src = recorded
        if src.kind in ("checkpoint", "registry") and not (src.checkpoint and os.path.isfile(src.checkpoint)):
            raise ContractError(
                f"the checkpoint this model was exported from is not at {src.checkpoint} any more",
                hint="pass --checkpoint PATH (the same file: its SHA-256 must match the export)",
            )
    sam = load_source(src)
    ensure_weights_match(sam, contract)
    return sam, src


def ensure_weights_match(sam, contract: ModelContract) -> None:
    got = getattr(sam, "weights_sha256", "")
    if got != contract.weights_sha256 or sam.variant != contract.variant:
        raise ContractError(
            f"the PyTorch model ({sam.variant} @ {got}) is not the one these graphs were exported from "
            f"({contract.variant} @ {contract.weights_sha256})",
            hint="pass the checkpoint (or --random-weights --seed) used for `samdeploy export`",
        )


def _open_graph(backend: str, path: Path, role: str, provider: str | None, threads: int | None):
    from ..runtime.backends import backend_module

    mod = backend_module(backend)
    kwargs: dict[str, Any] = {"threads": threads}
    if provider is not None:  # a priority list, like predict's --providers
        kwargs["providers"] = [x.strip() for x in str(provider).split(",") if x.strip()]
    return mod.open_graph(str(path), role, **kwargs), mod


def run_check(
    export_dir: str | os.PathLike,
    sam: torch.nn.Module | None = None,
    images: Mapping[str, np.ndarray] | None = None,
    options: CheckOptions = CheckOptions(),
    checkpoint: str | None = None,
    random_seed: int | None = None,
    trust_pickle: bool = False,
    log: Callable[[str], None] | None = None,
) -> CheckReport:
    """Compare the graphs in ``export_dir`` with the PyTorch model. ``sam`` (eval mode) skips
    rebuilding the model; otherwise it comes from ``checkpoint`` / ``random_seed`` / the manifest."""
    t0 = time.perf_counter()
    say = log or (lambda s: None)
    export_dir = export_dir_of(export_dir)
    manifest = read_manifest(export_dir)
    contract = manifest_contract(manifest)
    precision = options.precision or manifest.get("precision", "fp32")
    limits = resolve_thresholds(precision, options.thresholds)
    report = CheckReport(
        export_dir=str(export_dir), model_id=contract.model_id, precision=precision, thresholds=limits,
        backend=options.backend, provider=options.provider or "default",
    )
    # A graph that differs from its manifest is not the export being checked: refuse it (exit 2)
    # instead of reporting a parity failure. Graphs named by --encoder/--decoder are the user's.
    overridden = {r for r, o in (("encoder", options.encoder), ("decoder", options.decoder)) if o}
    problems = [p for p in verify_files(export_dir, manifest) if p.split(":", 1)[0] not in overridden]
    if problems:
        raise ContractError(
            f"the files in {export_dir} do not match its manifest.json:\n    " + "\n    ".join(problems),
            hint="re-run `samdeploy export --out DIR` (an interrupted export or files copied over it leave a "
                 "mismatch), or name the graph to check with --encoder/--decoder",
        )

    paths = {}
    for role, override in (("encoder", options.encoder), ("decoder", options.decoder)):
        if override:
            paths[role] = Path(override)
        elif role in manifest["files"]:
            paths[role] = graph_path(export_dir, manifest, role)
    if not paths:
        raise ContractError(f"{export_dir} lists no graphs", hint="re-run `samdeploy export`")

    graphs = {}
    try:
        for role, path in paths.items():
            g, mod = _open_graph(options.backend, path, role, options.provider, options.threads)
            graphs[role] = g
            used = (g.describe() or {}).get("providers") if hasattr(g, "describe") else None
            if used:  # what the session really runs on (after ORT's fallbacks)
                report.provider = ",".join(used)
            c, stored_role = mod.read_contract(str(path))
            if stored_role and stored_role != role:
                raise ContractError(f"{path} is a {stored_role} graph, not a {role}", hint="check --encoder/--decoder")
            ensure_same_model(contract, c, "manifest", role)
        if sam is None:
            say("loading the PyTorch model ...")
            sam, _src = load_reference(manifest, checkpoint, random_seed, trust_pickle)
        else:
            ensure_weights_match(sam, contract)
        if sam.training:
            raise InputError("the PyTorch reference model is in training mode", hint="call model.eval() first")

        if images is None:
            from ..images import load_images

            images = load_images(None, options.max_images)
        elif options.max_images is not None:
            images = dict(list(images.items())[: options.max_images])
        if not images:
            raise InputError("no images to check on", hint="pass image files or folders, or omit them for the defaults")
        _run_images(sam, graphs, contract, images, options.seed, report, say)
    finally:
        for g in graphs.values():
            g.close()
    _judge(report, contract)
    report.seconds = time.perf_counter() - t0
    return report


@dataclass
class _Acc:
    """Accumulates decoder metrics of one comparison (isolated decoder or end to end)."""

    rel_l2: list[float] = field(default_factory=list)
    iou_pred: list[float] = field(default_factory=list)
    ious: list[np.ndarray] = field(default_factory=list)  # [B, T] per call
    extra: list[float] = field(default_factory=list)  # max |difference| of extra outputs (SAM2 object score)
    per_case: dict[str, dict[str, list[float]]] = field(default_factory=dict)

    def add(self, case: str, m: Mapping[str, Any]) -> None:
        self.rel_l2.append(m["mask_logit_rel_l2"])
        self.iou_pred.append(m["iou_pred_max_abs"])
        self.ious.append(np.asarray(m["mask_iou"]))
        if "extra_output_max_abs" in m:
            self.extra.append(m["extra_output_max_abs"])
        c = self.per_case.setdefault(case, {"mask_logit_rel_l2": [], "mask_iou_min": [], "iou_pred_max_abs": []})
        c["mask_logit_rel_l2"].append(m["mask_logit_rel_l2"])
        c["mask_iou_min"].append(float(np.min(m["mask_iou"])))
        c["iou_pred_max_abs"].append(m["iou_pred_max_abs"])

    def summary(self, tokens: Sequence[int]) -> dict[str, Any]:
        if not self.ious:
            return {}
        ious = np.concatenate(self.ious, axis=0)[:, list(tokens)]  # [calls*B, T]
        per_token = {str(t): {"mean": float(ious[:, i].mean()), "min": float(ious[:, i].min())} for i, t in enumerate(tokens)}
        extra = {"extra_output_max_abs": float(max(self.extra))} if self.extra else {}
        return {
            **extra,
            "mask_logit_rel_l2": float(max(self.rel_l2)),
            "mask_iou_mean": float(min(v["mean"] for v in per_token.values())),
            "mask_iou_min": float(ious.min()),
            "iou_pred_max_abs": float(max(self.iou_pred)),
            "mask_iou_per_token": per_token,
            "per_case": {
                case: {
                    "mask_logit_rel_l2": float(max(v["mask_logit_rel_l2"])),
                    "mask_iou_min": float(min(v["mask_iou_min"])),
                    "iou_pred_max_abs": float(max(v["iou_pred_max_abs"])),
                }
                for case, v in self.per_case.items()
            },
            "masks_compared": int(ious.size),
        }


def _encoder_outputs(contract: ModelContract, out: Any) -> dict[str, np.ndarray]:
    """``Sam.encode``'s tensor (or tuple, for several outputs) by the contract's output names."""
    outs = out if isinstance(out, (tuple, list)) else (out,)
    return {n: t.numpy() for n, t in zip(contract.encoder.output_names, outs)}


def _torch_decode(sam, emb: dict[str, np.ndarray], call: DecoderCall, mask_input: np.ndarray, has_mask: np.ndarray):
    with torch.no_grad():
        iou, masks, *extra = sam.decode(
            *(torch.from_numpy(e) for e in emb.values()),
            torch.from_numpy(call.point_coords),
            torch.from_numpy(call.point_labels),
            torch.from_numpy(mask_input),
            torch.from_numpy(has_mask),
        )
    return iou.numpy(), masks.numpy(), [e.numpy() for e in extra]


def _graph_decode(decoder, emb: dict[str, np.ndarray], call: DecoderCall, mask_input: np.ndarray, has_mask: np.ndarray,
                  extra_names: Sequence[str] = ()):
    feats = {n: np.ascontiguousarray(e, np.float32) for n, e in emb.items()}
    out = decoder.run(decoder_feeds(feats, call.point_coords, call.point_labels, mask_input, has_mask))
    iou, masks = decoder_results(out)
    return iou, masks, [np.asarray(out[n]) for n in extra_names]


def _run_images(sam, graphs, contract: ModelContract, images, seed: int, report: CheckReport, say) -> None:
    tokens = contract.decoder.multimask_tokens if contract.decoder.always_multimask else tuple(range(contract.decoder.num_mask_tokens))
    low = contract.decoder.low_res_size
    thr = contract.decoder.mask_threshold
    emb_rows: list[dict[str, float]] = []
    acc = {"decoder": _Acc(), "end_to_end": _Acc()}
    abs_logits: list[np.ndarray] = []
    for name, image in images.items():
        t0 = time.perf_counter()
        x, _ = preprocess_image(image, contract.preprocess)
        resized_hw = prompt_frame_shape(image.shape[:2], contract)  # prompts live in the prompt frame
        consumed = contract.decoder.embedding_inputs
        with torch.no_grad():
            all_ref = _encoder_outputs(contract, sam.encode(torch.from_numpy(x)))
        emb_ref = {n: all_ref[n] for n in consumed}
        emb_out = None
        if "encoder" in graphs:
            outputs = graphs["encoder"].run({ENCODER_INPUT: x})
            emb_out = {n: outputs[n] for n in consumed}
            # every encoder output is judged; the worst one is reported
            rows = [metrics.embedding_metrics(all_ref[n], outputs[n]) for n in contract.encoder.output_names]
            row = {"max_abs": max(r["max_abs"] for r in rows), "rel_l2": max(r["rel_l2"] for r in rows),
                   "cosine": min(r["cosine"] for r in rows)}
            emb_rows.append(row)
            report.per_image[name] = {"size": list(image.shape[:2]), **{f"embedding_{k}": v for k, v in row.items()}}
        else:
            report.per_image[name] = {"size": list(image.shape[:2])}
        if "decoder" in graphs:
            feeds = {"decoder": emb_ref} if emb_out is None else {"decoder": emb_ref, "end_to_end": emb_out}
            previous: dict[str, dict[str, np.ndarray]] = {"reference": {}, **{k: {} for k in feeds}}
            for call in prompt_suite(name, image.shape[:2], resized_hw, contract, seed):
                b = call.batch
                zeros = np.zeros((b, 1, low, low), np.float32)
                if call.mask_from:
                    token = _feedback_token(previous["reference"][call.mask_from + ":iou"], contract)
                    has = np.ones(b, np.float32)
                    mask_ref = mask_feedback(previous["reference"][call.mask_from], token)
                else:
                    has, mask_ref = np.zeros(b, np.float32), zeros
                iou_ref, masks_ref, extra_ref = _torch_decode(sam, emb_ref, call, mask_ref, has)
                previous["reference"][call.case], previous["reference"][call.case + ":iou"] = masks_ref, iou_ref
                abs_logits.append(np.abs(masks_ref[:, list(tokens)]).ravel()[::97])  # subsample for the median
                for kind, emb in feeds.items():
                    mask_in = mask_feedback(previous[kind][call.mask_from], token) if call.mask_from else zeros
                    iou_out, masks_out, extra_out = _graph_decode(graphs["decoder"], emb, call, mask_in, has,
                                                                  contract.decoder.extra_outputs)
                    previous[kind][call.case] = masks_out
                    m = metrics.decoder_metrics(iou_ref, masks_ref, iou_out, masks_out, thr)
                    if extra_ref:
                        m["extra_output_max_abs"] = max(float(np.abs(a - b).max()) for a, b in zip(extra_ref, extra_out))
                    acc[kind].add(call.case, m)
        say(f"  {name} {image.shape[1]}x{image.shape[0]}: {time.perf_counter() - t0:.1f} s")
    report.images = list(images)
    if emb_rows:
        report.metrics["encoder"] = {
            "embedding_max_abs": max(r["max_abs"] for r in emb_rows),
            "embedding_rel_l2": max(r["rel_l2"] for r in emb_rows),
            "embedding_cosine": min(r["cosine"] for r in emb_rows),
        }
    for kind, a in acc.items():
        s = a.summary(tokens)
        if s:
            report.metrics[kind] = s
    if abs_logits:
        report.reference_logit_median_abs = float(np.median(np.concatenate(abs_logits)))


def _feedback_token(iou: np.ndarray, contract: ModelContract) -> int:
    """The token SamPredictor users feed back: the best multimask output by the reference's IoU
    prediction. Chosen from the reference so both sides feed the same token."""
    multi = list(contract.decoder.multimask_tokens)
    return int(multi[int(np.argmax(iou[0, multi]))])


def _judge(report: CheckReport, contract: ModelContract) -> None:
    noisy = report.reference_logit_median_abs is not None and report.reference_logit_median_abs < NOISY_LOGITS_MEDIAN
    if noisy:
        report.notes.append(
            f"the reference mask logits are close to 0 (median |logit| {report.reference_logit_median_abs:.2f}; "
            "random unscaled weights?): thresholded-mask IoU is dominated by float noise, so the IoU thresholds "
            "are advisory here and masks are judged on mask_logit_rel_l2"
        )
    for name, limit in report.thresholds.items():
        t = THRESHOLDS[name]
        sections = ["encoder"] if t.scope == "encoder" else ["decoder", "end_to_end"]
        for section in sections:
            value = report.metrics.get(section, {}).get(name)
            if value is None:
                continue
            advisory = noisy and name.startswith("mask_iou")
            report.gates.append(
                Gate(name=name, section=section, value=float(value), limit=limit, op=t.op,
                     passed=True if limit is None else t.passes(float(value), limit),
                     advisory=advisory or limit is None)
            )
    if not report.gates:
        report.notes.append("nothing was compared")
