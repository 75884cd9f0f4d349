"""`samdeploy check` end to end: a good export passes (exit 0); deliberately broken exports fail
(exit 1); a reference model with other weights is refused (exit 2)."""

from __future__ import annotations

import copy
import json

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from fixtures_export import copy_export
from samdeploy.cli.main import main
from samdeploy.contract import read_onnx_contract
from samdeploy.export import exporter, onnx_io
from samdeploy.export.wrappers import EncoderGraph, encoder_example, encoder_io


def _check(tmp_path, export_dir, *extra):
    out = tmp_path / "report.json"
    code = main(["check", str(export_dir), "--max-images", "1", "--threads", "2", "--json", str(out), *extra])
    return code, (json.loads(out.read_text()) if out.exists() else None)


def test_good_checkpoint_export_passes(checkpoint_export_dir, tmp_path, capsys):
    """The reference is rebuilt from the checkpoint path recorded in the manifest."""
    export_dir, _ckpt, _official = checkpoint_export_dir("mobile_sam")
    code, report = _check(tmp_path, export_dir)
    assert code == 0, capsys.readouterr()
    assert report["passed"] is True and report["precision"] == "fp32"
    assert report["images"] == ["astronaut"]
    m = report["metrics"]
    assert m["encoder"]["embedding_rel_l2"] <= 1e-5
    for section in ("decoder", "end_to_end"):
        assert m[section]["mask_iou_min"] >= 0.99
        assert set(m[section]["per_case"]) == {"point", "multi_point", "box", "box_point", "mask_input", "batch5"}
        assert m[section]["masks_compared"] == 4 * (5 + 5)  # 5 single-prompt calls + 1 call of 5, 4 tokens
    assert report["reference_logit_median_abs"] > 1.0  # realistic decoder: IoU is meaningful
    assert not any(g["advisory"] and g["limit"] is not None for g in report["gates"])
    assert "PASS" in capsys.readouterr().out


def _perturbed_copy(src, dst):
    """One decoder weight scaled by 1.01 (the kind of damage a bad conversion does)."""
    d = copy_export(src, dst)
    path = d / "decoder.onnx"
    model = onnx.load(str(path))
    target = next(t for t in model.graph.initializer if t.name.endswith("output_hypernetworks_mlps.1.layers.0.weight"))
    arr = numpy_helper.to_array(target) * np.float32(1.01)
    target.CopyFrom(numpy_helper.from_array(arr.astype(np.float32), target.name))
    path.write_bytes(model.SerializeToString())
    return d


def test_perturbed_weights_fail(exported_model_dir, tmp_path):
    broken = _perturbed_copy(exported_model_dir("mobile_sam"), tmp_path / "perturbed")
    # the user's own images: a folder holding one real photograph (RGBA PNG, to exercise conversion)
    import cv2
    from samdeploy.images import default_photographs

    photos = tmp_path / "photos"
    photos.mkdir()
    rgb = default_photographs(("chelsea",))["chelsea"]
    rgba = np.dstack([rgb[..., ::-1], np.full(rgb.shape[:2], 255, np.uint8)])
    cv2.imwrite(str(photos / "cat.png"), rgba)
    # In place, the damaged decoder no longer matches the manifest: refused before any parity run.
    code, _ = _check(tmp_path, broken, "--images", str(photos))
    assert code == 2
    # Named explicitly (how a converted or calibrated graph is checked), parity catches the damage.
    code, report = _check(tmp_path, exported_model_dir("mobile_sam"), "--images", str(photos),
                          "--decoder", str(broken / "decoder.onnx"))
    assert code == 1
    assert report["images"] == ["cat.png"] and report["per_image"]["cat.png"]["size"] == [300, 451]
    failed = {(g["section"], g["name"]) for g in report["gates"] if not g["passed"]}
    assert ("decoder", "mask_logit_rel_l2") in failed and ("end_to_end", "mask_logit_rel_l2") in failed
    assert not any(s == "encoder" for s, _ in failed)  # the encoder was not touched


def test_export_from_training_mode_model_fails(exported_model_dir, reference_model, tmp_path):
    """A peer bug: exporting while the model is in training mode (TinyViT's BatchNorms then use
    batch statistics). The exporter refuses it; here it is forced to show that check catches it."""
    broken = exported_model_dir("mobile_sam")
    # a copy: a train-mode forward updates BatchNorm running stats, which would corrupt the
    # session-cached reference model for every later test
    sam = copy.deepcopy(reference_model("mobile_sam"))
    contract, _ = read_onnx_contract(str(broken / "encoder.onnx"))
    sam.train()
    try:
        with torch.no_grad():
            model = exporter.trace_graph(
                EncoderGraph(sam), encoder_example(1024), *encoder_io(contract, False), 17, tmp_path,
                training=torch.onnx.TrainingMode.PRESERVE,
            )
    finally:
        sam.eval()
    exporter.finish_graph(model, "encoder", contract)
    # next to the good export, checked through --encoder (how calibrated encoders are checked too)
    onnx_io.save_model(model, tmp_path / "train_mode_encoder.onnx", external_data=False)
    code, report = _check(tmp_path, broken, "--encoder", str(tmp_path / "train_mode_encoder.onnx"))
    assert code == 1
    assert report["warnings"] == []  # the export directory itself is untouched
    failed = {(g["section"], g["name"]) for g in report["gates"] if not g["passed"]}
    assert ("encoder", "embedding_rel_l2") in failed
    assert ("end_to_end", "mask_logit_rel_l2") in failed
    assert ("decoder", "mask_logit_rel_l2") not in failed  # the decoder graph itself is fine


def test_reference_with_other_weights_is_refused(exported_model_dir, tmp_path, capsys):
    code, report = _check(tmp_path, exported_model_dir("mobile_sam"), "--random-weights", "--seed", "1")
    assert code == 2 and report is None
    err = capsys.readouterr().err
    assert "not the one these graphs were exported from" in err and "random:mobile_sam:seed=1" in err


@pytest.mark.parametrize(
    "args, code, message",
    [
        (["--threshold", "bogus=1"], 2, "unknown threshold"),
        (["--precision", "fp64"], 2, "invalid choice"),
        (["--seed", "3"], 2, "--seed only applies with --random-weights"),
    ],
)
def test_usage_errors(exported_model_dir, tmp_path, capsys, args, code, message):
    with pytest.raises(SystemExit) if "invalid choice" in message else _nullcontext():
        got = main(["check", str(exported_model_dir("mobile_sam")), *args])
        assert got == code
    assert message in capsys.readouterr().err


def test_missing_dir_and_missing_manifest(tmp_path, capsys):
    assert main(["check", str(tmp_path / "nope")]) == 2
    assert "not found" in capsys.readouterr().err
    (tmp_path / "partial").mkdir()
    (tmp_path / "partial" / "encoder.onnx").write_bytes(b"")
    assert main(["check", str(tmp_path / "partial")]) == 2
    assert "no manifest.json" in capsys.readouterr().err


class _nullcontext:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False
