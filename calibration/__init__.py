"""INT8 post-training quantization: TinySAM / PTQ4ViT Hessian-guided scale search -> deployable QDQ ONNX.

    from samdeploy.calibration import calibrate, CalibrationSettings

    result = calibrate("export_dir", "int8_dir", CalibrationSettings(method="hessian"))
    print(result.metrics.line())

Modules (torch unless noted):

    quant.py      symmetric INT8 conventions, candidate grid (numpy; torch on use)
    layers.py     BN folding, quantizable layers in matrix form
    prompts.py    calibration / evaluation prompts (numpy)
    losses.py     task losses on the decoder outputs (sampled-label Fisher; the KL pitfall)
    collect.py    hooks: sampled inputs + gradients, histograms; per-image disk cache; gradient check
    search.py     Hessian-guided alternating grid search (exact integer evaluation)
    baselines.py  min-max / percentile / entropy on the same statistics
    qdq.py        layer -> ONNX node matching by value, QDQ writer, inspection (onnx + numpy)
    evaluate.py   FP32 vs INT8 through ONNX Runtime, the accuracy gate (numpy + ORT)
    mixed.py      per-layer sensitivity, automatic mixed precision
    pipeline.py   the `samdeploy calibrate` pipeline: settings, stages, gate, result
    report.py     calibration.json document, Markdown report, methods table
    outputs.py    writes the INT8 directory: graphs, calibration.json, report, manifest
"""

from __future__ import annotations

from .._lazy import lazy_getattr

_LAZY = {
    "calibrate": "pipeline",
    "CalibrationSettings": "pipeline",
    "CalibrationResult": "pipeline",
    "METHODS": "pipeline",
    "Gate": "evaluate",
    "EvalResult": "evaluate",
    "CalibrationError": "errors",
    "LayerScales": "search",
    "hessian_search": "search",
    "quantize_model": "qdq",
    "match_layers": "qdq",
    "inspect_qdq": "qdq",
}

__all__ = list(_LAZY)


__getattr__ = lazy_getattr(__name__, _LAZY)
