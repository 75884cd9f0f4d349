"""What a calibration run reports: the calibration.json document, the Markdown report and the methods
table the CLI prints. Built for every finished run, before the gate decides (a failed gate's error carries
the table); outputs.py writes the two files when the gate passes.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from .. import __version__
from .evaluate import EvalResult
from .outputs import FORMAT, graph_precisions

if TYPE_CHECKING:  # annotations only: pipeline.py imports this module
    from .collect import LayerStats
    from .layers import QuantLayer
    from .pipeline import CalibrationResult, _Run


def calibration_json(run: _Run, result: CalibrationResult, layers: Sequence[QuantLayer],
                     stats: Mapping[str, LayerStats], node_map: Mapping[str, list[str]],
                     grad_rms: Mapping[str, float], image_info: list[dict[str, Any]],
                     held_out: Mapping[str, np.ndarray], excluded: set[str]) -> dict[str, Any]:
    """The calibration.json document (outputs.py adds ``files``)."""
    import onnxruntime
    import torch

    # at call time: pipeline.py imports this module, so a module-level import would be a cycle
    from .pipeline import ORT_CPU_CONV_MIN_MACS_PER_ACTIVATION, image_sha256

    chosen = result.methods[result.method]
    lay = {}
    for l in layers:
        sc = chosen.scales[l.name]
        entry = {
            "graph": l.graph,
            "kind": l.kind,
            "onnx_nodes": node_map[l.name],
            "quantized": l.name not in excluded,
            "channel_axis_of_torch_weight": l.onnx_axis,
            **sc.to_json(),
            "act_absmax": float(stats[l.name].act_absmax),
            "out_absmax": float(stats[l.name].out_absmax),
        }
        if l.name in grad_rms:
            entry["grad_rms"] = grad_rms[l.name]
        lay[l.name] = entry
    contract = run.contract
    consumed = set(contract.decoder.embedding_inputs)
    cos = result.metrics.output_cosine if result.metrics is not None else {}
    outputs = [{"name": o.name, "shape": list(o.shape), "consumed_by_decoder": o.name in consumed,
                **result.feature_gradients.get(o.name, {}),
                **({"cosine_mean": cos[o.name]["mean"], "cosine_min": cos[o.name]["min"]} if o.name in cos else {})}
               for o in contract.encoder.outputs]
    precision = graph_precisions(result.int8_graphs)
    return {
        "format": FORMAT,
        "model_id": run.contract.model_id,
        "source": run.manifest.get("source", {}),
        "random_weights": run.random_weights,
        "method": result.method,
        "settings": run.settings.to_json(),
        "calibration_images": image_info,
        "held_out_images": [{"name": n, "sha256": image_sha256(v), "shape": list(v.shape)} for n, v in held_out.items()],
        "quantization": {
            "weights": "int8 symmetric per output channel, narrow range [-127, 127], zero point 0",
            "activations": "int8 symmetric per tensor [-128, 127], zero point 0",
            "target": run.settings.target,
            "placement": "inputs of " + ("Conv/ConvTranspose/MatMul/Gemm" if run.settings.target != "ort-cpu"
                                         else "MatMul/Gemm and of Convs with >= "
                                         f"{ORT_CPU_CONV_MIN_MACS_PER_ACTIVATION} MACs per activation element")
            + " (dedicated Q/DQ per consumer)"
            + (", Conv outputs" if run.settings.conv_output_quant or run.settings.target == "ort-cpu" else ""),
            "precision": precision,
            "float_ops": "LayerNormalization, Softmax, GELU (Erf), attention MatMuls (activation x activation), "
                         "MaxPool, residual Adds, Resize/Reshape/Transpose run in float",
        },
        "encoder_outputs": outputs,
        "loss": {"name": run.settings.loss, "at": "decoder outputs (mask logits of the calibrated tokens + IoU predictions), "
                 "back-propagated through the FP32 decoder into every encoder output it consumes",
                 "decoder_extra_outputs_in_loss": False},
        "layers": lay,
        "kept_float": result.kept_float,
        "metrics": {m: (r.metrics.to_json() if r.metrics else None) for m, r in result.methods.items()},
        "hessian_error": {m: r.hessian_err for m, r in result.methods.items()},
        "final_metrics": result.metrics.to_json(),
        "gate": dataclasses.asdict(run.settings.gate),
        "gate_problems": result.gate_problems,
        "mixed_precision": _jsonable(result.mixed),
        "timings_s": {k: round(v, 2) for k, v in result.timings.items()},
        "peak_rss_mb": round(result.peak_rss_mb, 1),
        "versions": {"samdeploy": __version__, "torch": torch.__version__, "onnxruntime": onnxruntime.__version__},
    }


def _jsonable(x):
    if x is None:
        return None
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, EvalResult):
        return x.to_json()
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    return x


def results_table(result: CalibrationResult) -> str:
    """Markdown table: the gate metrics, Hessian error and search time of every method evaluated."""
    multi = len(result.metrics.output_cosine) > 1 if result.metrics is not None else False
    emb = "emb cosine (worst output)" if multi else "emb cosine"
    lines = [f"| method | mean IoU | p5 IoU | min IoU | mask logit rel err | {emb} | |dIoU-pred| mean | Hessian err | search s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for m, r in result.methods.items():
        e = r.metrics
        if e is None:
            continue
        star = " (chosen)" if m == result.method else ""
        secs = f"{r.seconds:.1f}" + (f" ({r.cached_layers} layers cached)" if r.cached_layers else "")
        lines.append(f"| {m}{star} | {e.mean_iou:.4f} | {e.p5_iou:.4f} | {e.min_iou:.4f} | {e.mask_logit_rel_err:.4f} | {e.emb_cosine_mean:.5f} | "
                     f"{e.iou_pred_abs_err_mean:.4f} | {r.hessian_err:.4g} | {secs} |")
    return "\n".join(lines)


def report_md(run: _Run, result: CalibrationResult, doc: dict[str, Any]) -> str:
    """calibration_report.md, from the run and its calibration.json document ``doc``."""
    s = run.settings
    c = run.contract
    lines = [
        f"# INT8 calibration report: {c.family}/{c.variant}",
        "",
        f"- model_id: `{c.model_id}`",
        f"- method: **{result.method}** ({s.candidates} candidates x {s.rounds} rounds, loss `{s.loss}`), "
        f"graphs: {', '.join(s.graphs)}",
        f"- calibration images: {len(doc['calibration_images'])} ({', '.join(i['name'] for i in doc['calibration_images'])}), "
        f"{s.prompts_per_image} prompts and {s.tokens_per_image} sampled positions per layer per image",
        f"- held-out gate images: {', '.join(i['name'] for i in doc['held_out_images'])} "
        f"({s.eval_grid}x{s.eval_grid} clicks + {s.eval_boxes} boxes each)",
        f"- gate: mean IoU >= {s.gate.mean_iou}, p5 IoU >= {s.gate.p5_iou} -> "
        + ("**PASSED**" if not result.gate_problems else "**FAILED**: " + "; ".join(result.gate_problems)),
        "- graphs: " + ", ".join(f"{role} **{prec.upper()}**" for role, prec in doc["quantization"]["precision"].items())
        + ("" if "decoder" in result.int8_graphs else
           " (the decoder is not quantized: the INT8 directory ships the FP32 decoder.onnx, and the gate runs it "
           "on the INT8 encoder's outputs)"),
        f"- quantized layers: {len(result.layers)}; kept in float: {len(result.kept_float)}"
        + (f" ({', '.join(result.kept_float[:8])}{' ...' if len(result.kept_float) > 8 else ''})" if result.kept_float else ""),
        "- time: " + ", ".join(f"{k} {v:.1f} s" for k, v in result.timings.items()) + f"; peak RSS {result.peak_rss_mb:.0f} MB",
        "",
        "## FP32 vs INT8 (ONNX Runtime, held-out images)",
        "",
        results_table(result),
        "",
        "Mask IoU: thresholded low-res masks (all mask tokens the contract uses) of the FP32 decoder on the FP32 "
        "encoder's outputs vs the decoder on the INT8 encoder's outputs (every output the decoder consumes comes from "
        "the INT8 encoder). Hessian err: sum over layers of the Hessian-weighted output "
        "error sum (g * (O - O_hat))^2 on the calibration samples (lower is better; what the search minimises).",
    ]
    lines += ["", "## Encoder outputs", "",
              "| output | shape | decoder input | share of the task-loss gradient (sum g^2) | rms dL/d feature | cosine FP32 vs INT8 mean | min |",
              "|---|---|---|---|---|---|---|"]
    for o in doc["encoder_outputs"]:
        share = f"{o['grad_sq_share']:.3f}" if "grad_sq_share" in o else "-"
        rms = f"{o['grad_rms']:.3g}" if "grad_rms" in o else "-"
        cm = f"{o['cosine_mean']:.5f}" if "cosine_mean" in o else "-"
        cn = f"{o['cosine_min']:.5f}" if "cosine_min" in o else "-"
        lines.append(f"| `{o['name']}` | {'x'.join(map(str, o['shape']))} | {'yes' if o['consumed_by_decoder'] else 'no'} | "
                     f"{share} | {rms} | {cm} | {cn} |")
    lines += ["",
              "The Hessian weights g = dL/dO come from one task loss on the decoder outputs (`" + s.loss + "`), "
              "back-propagated through the FP32 decoder into every encoder output it consumes: each output is weighted "
              "by how much the masks and IoU predictions depend on it, and a layer feeding several outputs gets the "
              "sum of their contributions (the chain rule), with no hand-set per-output weights."]
    extra = result.metrics.extra_output_max_abs if result.metrics is not None else {}
    if extra:
        lines.append("Decoder extra outputs (not in the loss, not gated): " + ", ".join(
            f"`{n}` max |FP32 - INT8| {v:.3f}" for n, v in extra.items()) + ".")
    if result.mixed:
        mx = result.mixed
        lines += ["", "## Mixed precision", "",
                  f"Layers kept in float to pass the gate ({len(mx['kept_float'])}): "
                  + ", ".join(f"`{n}`" for n in mx["kept_float"])]
        if mx.get("speed"):
            sp = mx["speed"]
            lines.append(f"Encoder latency (ONNX Runtime's default CPU provider, median): FP32 {sp['fp32_ms']:.0f} ms, "
                         f"all-INT8 {sp['int8_ms']:.0f} ms, mixed {sp['mixed_ms']:.0f} ms"
                         + ("" if run.settings.target == "ort-cpu" else
                            f". Not the {run.settings.target} speed: that provider runs the file's INT8 Convs in FP32 "
                            "(measure on the target: `samdeploy bench`, scripts/bench_ort_providers.py)"))
    if run.random_weights:
        lines += ["", "## About these numbers (random weights)", "",
                  "This model has seeded random weights (decoder output layers rescaled so mask logits span about "
                  "+-20, like a trained SAM). The gate therefore measures how much INT8 perturbs a *random* network's "
                  "features on real photographs: it validates the quantizer, the scales and the QDQ graph, but it is "
                  "NOT the task accuracy of a trained checkpoint (random features have no semantic structure, and the "
                  "mask boundaries move differently). To measure your model: export your checkpoint "
                  "(`samdeploy export --checkpoint ckpt.pth --out exp`), then `samdeploy calibrate --model-dir exp "
                  "--images <your calibration photos> --eval-images <your held-out photos> --compare-methods`."]
    return "\n".join(lines) + "\n"
