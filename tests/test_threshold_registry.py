"""check/thresholds.py is the one threshold registry: `samdeploy check`, the calibration gate and
jetson/verify.py read the same limits from it, and overrides through resolve_thresholds reach them."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from samdeploy.check import thresholds as T
from samdeploy.errors import InputError

ROOT = Path(__file__).resolve().parents[1]


def _verify():
    spec = importlib.util.spec_from_file_location("jetson_verify", ROOT / "jetson" / "verify.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_registry_is_complete_and_sane():
    for p in T.PRECISIONS:
        assert set(T.DEFAULTS[p]) == set(T.THRESHOLDS), p
    t = T.THRESHOLDS["mask_iou_p5"]
    assert t.op == ">=" and "5th percentile" in t.help
    for p in T.PRECISIONS:
        d = T.DEFAULTS[p]
        # a percentile bound between the worst-mask and the mean bound
        assert d["mask_iou_min"] <= d["mask_iou_p5"] <= d["mask_iou_mean"], p
    # looser as precision drops
    for name in ("mask_iou_mean", "mask_iou_min", "mask_iou_p5", "embedding_cosine"):
        assert T.DEFAULTS["fp32"][name] >= T.DEFAULTS["fp16"][name] >= T.DEFAULTS["int8"][name], name
    # the calibration gate's historical INT8 values are the registry's
    assert T.DEFAULTS["int8"]["mask_iou_mean"] == 0.97 and T.DEFAULTS["int8"]["mask_iou_p5"] == 0.90


def test_three_consumers_share_the_registry_limits():
    from samdeploy.calibration.evaluate import Gate
    from samdeploy.calibration.pipeline import CalibrationSettings
    from samdeploy.check import parity

    # samdeploy check resolves its limits through the registry
    assert parity.resolve_thresholds is T.resolve_thresholds
    check_int8 = T.resolve_thresholds("int8")
    # the calibration gate (int8) and its pipeline default
    g = Gate()
    assert (g.mean_iou, g.p5_iou) == (check_int8["mask_iou_mean"], check_int8["mask_iou_p5"])
    assert Gate.from_thresholds() == g
    assert CalibrationSettings.__dataclass_fields__["gate"].default == g
    # jetson/verify.py, per precision
    verify = _verify()
    assert set(verify.GATES) == set(T.PRECISIONS)
    for p in T.PRECISIONS:
        check = T.resolve_thresholds(p)
        assert verify.GATES[p] == {k: check[k] for k in verify.GATED}, p
        assert verify.gates(p) == verify.GATES[p]
        gp = Gate.from_thresholds(p)
        assert (gp.mean_iou, gp.p5_iou) == (check["mask_iou_mean"], check["mask_iou_p5"])
    # the limits both downstream tools share are equal numbers, not just equal names
    for p in T.PRECISIONS:
        assert verify.GATES[p]["mask_iou_mean"] == Gate.from_thresholds(p).mean_iou == T.DEFAULTS[p]["mask_iou_mean"]


def test_overrides_reach_the_consumers():
    from samdeploy.calibration.evaluate import Gate

    over = ["mask_iou_mean=0.5", "mask_iou_p5=off", "embedding_cosine=0.1"]
    assert T.resolve_thresholds("int8", over)["mask_iou_mean"] == 0.5
    g = Gate.from_thresholds("int8", over)
    assert g.mean_iou == 0.5 and g.p5_iou == 0.0  # off -> not gated (IoU >= 0 always holds)
    assert Gate.from_thresholds("int8", {"mask_iou_p5": 0.8}).p5_iou == 0.8
    verify = _verify()
    v = verify.gates("int8", over)
    assert v["mask_iou_mean"] == 0.5 and v["embedding_cosine"] == 0.1
    assert v["mask_iou_min"] == T.DEFAULTS["int8"]["mask_iou_min"]
    # the defaults are untouched by an override
    assert verify.GATES["int8"]["mask_iou_mean"] == T.DEFAULTS["int8"]["mask_iou_mean"] == Gate().mean_iou
    with pytest.raises(InputError, match="unknown threshold"):
        Gate.from_thresholds("int8", ["mask_iou_p50=0.9"])
    with pytest.raises(InputError, match="unknown threshold"):
        verify.gates("int8", ["cosine=0.9"])


def test_verify_cli_applies_registry_and_overrides(fake_model_dir, tmp_path):
    """verify.py end to end with ONNX Runtime on both sides (identical graphs: every metric perfect);
    an impossible override makes it fail, a typo is a usage error."""
    base = [sys.executable, str(ROOT / "jetson" / "verify.py"), "--onnx-dir", str(fake_model_dir),
            "--engine-dir", str(fake_model_dir), "--candidate-backend", "onnxruntime", "--max-images", "1",
            "--precision", "int8"]
    ok = subprocess.run(base + ["--json", str(tmp_path / "ok.json")], capture_output=True, text=True, timeout=600)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    rep = json.loads((tmp_path / "ok.json").read_text())
    assert rep["thresholds"] == {k: T.DEFAULTS["int8"][k] for k in _verify().GATED}
    bad = subprocess.run(base + ["--threshold", "mask_iou_mean=1.5", "--json", str(tmp_path / "bad.json")],
                         capture_output=True, text=True, timeout=600)
    assert bad.returncode == 1 and "mean mask IoU" in bad.stdout
    assert json.loads((tmp_path / "bad.json").read_text())["thresholds"]["mask_iou_mean"] == 1.5
    typo = subprocess.run(base + ["--threshold", "mask_iou=0.5"], capture_output=True, text=True, timeout=600)
    assert typo.returncode == 2 and "unknown threshold" in typo.stderr
