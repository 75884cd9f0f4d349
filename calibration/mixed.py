"""Automatic mixed precision: keep the most sensitive layers in float until the gate passes.

1. Sensitivity, "remove one at a time": starting from the all-INT8 graph, each layer in turn is left
   in float and the accuracy metric is measured through ONNX Runtime on a small sensitivity set
   (calibration images, not the held-out gate images). A layer's sensitivity is how much the score
   (mean mask IoU minus the mask logits' relative error) improves when it alone stays float.
2. Layers are ranked by sensitivity; the k most sensitive stay float, with k found by doubling and
   then bisection on the held-out gate (O(log n) gate evaluations).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

from .evaluate import EvalResult, Gate


def score(r: EvalResult) -> float:
    """Higher is better: mean mask IoU minus the relative error of the mask logits (continuous, so
    single layers whose effect on a few dozen thresholded masks is below one pixel still rank)."""
    return r.mean_iou - r.mask_logit_rel_err


def layer_sensitivity(layers: Sequence[str], build: Callable[[set[str]], Any], measure: Callable[[Any], EvalResult],
                      progress: bool = True) -> tuple[dict[str, float], EvalResult]:
    from tqdm import tqdm

    base = measure(build(set()))
    sens = {}
    for name in tqdm(list(layers), desc="layer sensitivity", unit="layer", disable=not progress):
        sens[name] = score(measure(build({name}))) - score(base)
    return sens, base


def auto_mixed_precision(
    layers: Sequence[str],
    build: Callable[[set[str]], Any],
    measure_sensitivity: Callable[[Any], EvalResult],
    measure_gate: Callable[[Any], EvalResult],
    gate: Gate,
    progress: bool = True,
    say: Callable[[str], None] = lambda s: None,
) -> dict[str, Any]:
    sens, base = layer_sensitivity(layers, build, measure_sensitivity, progress)
    ranked = sorted(layers, key=lambda n: -sens[n])
    say("most sensitive layers: " + ", ".join(f"{n} (+{sens[n]:.4f})" for n in ranked[:5]))
    tried: dict[int, EvalResult] = {}

    def passes(k: int) -> bool:
        if k not in tried:
            tried[k] = measure_gate(build(set(ranked[:k])))
            say(f"  {k:3d} layer(s) in float: {tried[k].line()}")
        return not gate.check(tried[k])

    lo, hi = 0, 1
    while not passes(hi):
        lo = hi
        if hi >= len(ranked):
            break
        hi = min(2 * hi, len(ranked))
    if passes(hi):
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if passes(mid):
                hi = mid
            else:
                lo = mid
    return {
        "kept_float": ranked[:hi],
        "metrics": tried[hi],
        "sensitivity": {n: sens[n] for n in ranked},
        "sensitivity_baseline": base.to_json(),
        "gate_evaluations": {str(k): v.to_json() for k, v in sorted(tried.items())},
    }


def summarize(mixed: Mapping[str, Any]) -> str:
    return f"{len(mixed['kept_float'])} layer(s) kept in float: " + ", ".join(mixed["kept_float"])
