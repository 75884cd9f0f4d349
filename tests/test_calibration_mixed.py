"""Automatic mixed precision: ranking by measured sensitivity and the smallest float set that passes."""

from __future__ import annotations

from samdeploy.calibration.evaluate import EvalResult, Gate
from samdeploy.calibration.mixed import auto_mixed_precision, score

# Per-layer damage to the mean IoU when quantized (the "truth" the fake measurements follow).
DAMAGE = {"a": 0.001, "b": 0.02, "c": 0.0, "d": 0.015, "e": 0.004, "f": 0.002}


def _result(excluded: frozenset[str]) -> EvalResult:
    iou = 1.0 - sum(v for k, v in DAMAGE.items() if k not in excluded)
    return EvalResult(mean_iou=iou, p5_iou=iou - 0.01, min_iou=iou - 0.02, emb_cosine_mean=1.0, emb_cosine_min=1.0,
                      iou_pred_abs_err_mean=0.0, iou_pred_abs_err_max=0.0, masks=10, images=1,
                      mask_logit_rel_err=0.1 * (1.0 - iou))


def test_keeps_the_most_sensitive_layers_until_the_gate_passes():
    built: list[frozenset[str]] = []

    def build(excluded):
        built.append(frozenset(excluded))
        return frozenset(excluded)

    gate_calls = []

    def measure_gate(models):
        gate_calls.append(models)
        return _result(models)

    out = auto_mixed_precision(list(DAMAGE), build, _result, measure_gate, Gate(mean_iou=0.975, p5_iou=0.0), progress=False)
    # sensitivity = one layer at a time; ranking follows the damage
    assert list(out["sensitivity"])[:3] == ["b", "d", "e"]
    # total damage 0.042 (IoU 0.958); with b in float 0.022 remains: IoU 0.978 >= 0.975
    assert out["kept_float"] == ["b"]
    assert out["metrics"].mean_iou >= 0.975
    # O(log n) gate evaluations, not one per layer
    assert len(gate_calls) <= 4


def test_needs_more_layers_for_a_stricter_gate():
    out = auto_mixed_precision(list(DAMAGE), lambda ex: frozenset(ex), _result, _result, Gate(mean_iou=0.995, p5_iou=0.0),
                               progress=False)
    assert out["kept_float"] == ["b", "d", "e"]  # 1 - (0.001 + 0.002) = 0.997; with two only 0.993


def test_score_prefers_smaller_logit_error_at_equal_iou():
    a, b = _result(frozenset()), _result(frozenset())
    b.mask_logit_rel_err = a.mask_logit_rel_err / 2
    assert score(b) > score(a)
