"""check.metrics, check.thresholds and check.report (judging) on hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from samdeploy.check import metrics
from samdeploy.check.parity import _judge
from samdeploy.check.report import CheckReport
from samdeploy.check.thresholds import DEFAULTS, resolve_thresholds
from samdeploy.contract import ModelContract
from samdeploy.errors import GateFailedError, InputError


# ---- metrics ---------------------------------------------------------------------------------------
def test_rel_l2_and_max_abs_by_hand():
    ref = np.array([3.0, 4.0])  # |ref| = 5
    out = np.array([3.0, 4.5])
    assert metrics.rel_l2_error(ref, out) == pytest.approx(0.1)
    assert metrics.max_abs_error(ref, out) == pytest.approx(0.5)
    assert metrics.rel_l2_error(ref, ref) == 0.0


def test_cosine_by_hand():
    assert metrics.cosine_similarity(np.array([1.0, 0.0]), np.array([1.0, 1.0])) == pytest.approx(1 / math.sqrt(2))
    assert metrics.cosine_similarity(np.array([1.0, 2.0]), np.array([-1.0, -2.0])) == pytest.approx(-1.0)


def test_mask_iou_by_hand():
    a = np.zeros((2, 4, 4), bool)
    b = np.zeros((2, 4, 4), bool)
    a[0, :2, :2] = True  # 4 pixels
    b[0, :2, :3] = True  # 6 pixels, 4 shared -> IoU 4/6
    # index 1: both empty -> perfect agreement
    np.testing.assert_allclose(metrics.mask_iou(a, b), [4 / 6, 1.0])
    logits = np.where(a, 5.0, -5.0)
    np.testing.assert_allclose(metrics.logits_iou(logits, np.where(b, 1.0, -1.0)), [4 / 6, 1.0])


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="shape mismatch"):
        metrics.rel_l2_error(np.zeros(3), np.zeros(4))


def test_decoder_metrics_per_token():
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(2, 4, 8, 8)) * 10
    out = ref.copy()
    out[:, 2] *= -1  # token 2 flipped: IoU of a sign flip is 0 wherever anything is positive
    m = metrics.decoder_metrics(np.zeros((2, 4)), ref, np.full((2, 4), 0.25), out)
    assert m["iou_pred_max_abs"] == pytest.approx(0.25)
    assert m["mask_logit_rel_l2_per_token"][0] == 0.0 and m["mask_logit_rel_l2_per_token"][2] == pytest.approx(2.0)
    np.testing.assert_allclose(m["mask_iou"][:, [0, 1, 3]], 1.0)
    np.testing.assert_allclose(m["mask_iou"][:, 2], 0.0)


def test_near_threshold_fraction():
    assert metrics.near_threshold_fraction(np.array([0.1, -0.2, 3.0, -4.0])) == 0.5


# ---- thresholds -------------------------------------------------------------------------------------
def test_fp32_defaults_follow_the_issue():
    t = resolve_thresholds("fp32")
    assert t["embedding_rel_l2"] == 1e-5
    assert t["mask_iou_mean"] >= 0.999
    assert resolve_thresholds("int8")["mask_iou_mean"] < t["mask_iou_mean"]


def test_threshold_overrides():
    t = resolve_thresholds("fp16", ["mask_iou_min=0.5", "embedding_rel_l2=off"])
    assert t["mask_iou_min"] == 0.5 and t["embedding_rel_l2"] is None
    assert t["mask_iou_mean"] == DEFAULTS["fp16"]["mask_iou_mean"]
    with pytest.raises(InputError, match="unknown threshold"):
        resolve_thresholds("fp32", ["mask_iou=0.5"])
    with pytest.raises(InputError, match="NAME=VALUE"):
        resolve_thresholds("fp32", ["mask_iou_min"])
    with pytest.raises(InputError, match="number"):
        resolve_thresholds("fp32", ["mask_iou_min=high"])
    with pytest.raises(InputError, match="precision"):
        resolve_thresholds("fp8")


# ---- judging ----------------------------------------------------------------------------------------
def _report(precision="fp32", median=10.0, **values):
    r = CheckReport(export_dir="x", model_id="m", precision=precision, thresholds=resolve_thresholds(precision))
    r.metrics["encoder"] = {"embedding_rel_l2": values.get("emb", 1e-6), "embedding_cosine": 1.0, "embedding_max_abs": 1e-5}
    for section in ("decoder", "end_to_end"):
        r.metrics[section] = {"mask_logit_rel_l2": values.get("logits", 1e-6), "mask_iou_mean": values.get("iou", 1.0),
                              "mask_iou_min": values.get("iou", 1.0), "iou_pred_max_abs": 1e-6}
    r.reference_logit_median_abs = median
    _judge(r, ModelContract(family="sam", variant="vit_b", weights_sha256="x"))
    return r


def test_judge_pass_and_fail():
    assert _report().passed
    bad = _report(emb=2e-5)
    assert not bad.passed
    assert [(g.section, g.name) for g in bad.failures] == [("encoder", "embedding_rel_l2")]
    with pytest.raises(GateFailedError) as exc:
        bad.raise_if_failed()
    assert exc.value.exit_code == 1 and "embedding_rel_l2" in str(exc.value)
    assert "FAIL" in bad.table() and "PASS" in _report().table()


def test_nan_fails():
    assert not _report(logits=float("nan")).passed
    assert '"nan"' in _report(logits=float("nan")).to_json()


def test_noisy_logits_make_iou_advisory_but_logits_still_gate():
    r = _report(median=0.2, iou=0.9)  # random unscaled weights: IoU flips on float noise
    assert r.passed and any("advisory" in n for n in r.notes)
    assert not _report(median=0.2, iou=0.9, logits=1e-2).passed
    assert not _report(median=10.0, iou=0.9).passed
