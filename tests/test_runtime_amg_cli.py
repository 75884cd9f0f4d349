"""``samdeploy everything`` on the tiny contract-v1 fake graphs (fast), and the no-torch guarantee of
the mask generator and the streaming module."""

from __future__ import annotations

import json

import numpy as np
import pytest


@pytest.fixture(scope="module")
def photo_file(tmp_path_factory):
    import cv2

    from samdeploy.images import default_photographs

    img = default_photographs(("coffee",))["coffee"][::2, ::2]
    path = tmp_path_factory.mktemp("img") / "coffee.png"
    cv2.imwrite(str(path), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    return path


def test_everything_cli_writes_overlay_and_rle(fake_model_dir, photo_file, tmp_path, capsys):
    from samdeploy.cli.main import main
    from samdeploy.images import load_image
    from samdeploy.runtime.rle import rle_to_mask

    out = tmp_path / "ev"
    code = main(["everything", str(photo_file), "--model-dir", str(fake_model_dir), "--points-per-side", "4",
                 "--pred-iou-thresh", "0", "--stability-score-thresh", "0", "--box-nms-thresh", "1.0",
                 "--mask-pngs", "--out", str(out)])
    text = capsys.readouterr().out
    assert code == 0 and "16 decoder prompts in 1 call(s)" in text and "timings" in text
    assert "[FP32 | onnxruntime CPUExecutionProvider]" in text and "random weights" not in text
    doc = json.loads((out / "masks.json").read_text())
    assert doc["produced_by"] == {"precision": "FP32", "backend": "onnxruntime",
                                  "providers": ["CPUExecutionProvider"], "random_weights": False}
    anns = doc["annotations"]
    assert doc["mode"] == "grid" and doc["stats"]["prompts"] == 16 and len(anns) > 0
    assert doc["params"]["points_per_side"] == 4
    for a in anns:
        m = rle_to_mask(a["segmentation"])  # pycocotools decodes our RLE
        assert m.shape == (200, 300) and int(m.sum()) == a["area"]
        png = load_image(out / a["file"])[:, :, 0] > 127
        np.testing.assert_array_equal(png, m)
    overlay = load_image(out / "overlay.png")
    assert overlay.shape == (200, 300, 3) and not np.array_equal(overlay, load_image(photo_file))


def test_everything_cli_boxes_and_hierarchical(fake_model_dir, photo_file, tmp_path, capsys):
    from samdeploy.cli.main import main

    boxes = tmp_path / "det.json"
    boxes.write_text(json.dumps([[10, 10, 100, 80], {"bbox": [150, 50, 100, 100], "score": 0.9}, {"box": [0, 0, 299, 199]}]))
    code = main(["everything", str(photo_file), "--model-dir", str(fake_model_dir), "--boxes", str(boxes),
                 "--out", str(tmp_path / "b"), "--json"])
    summary = json.loads(capsys.readouterr().out)
    assert code == 0 and summary["mode"] == "boxes" and summary["masks"] == 3 and summary["prompts"] == 3
    anns = json.loads((tmp_path / "b" / "masks.json").read_text())["annotations"]
    assert anns[1]["prompt_box"] == [150.0, 50.0, 250.0, 150.0] and anns[2]["prompt_box"] == [0.0, 0.0, 300.0, 200.0]

    code = main(["everything", str(photo_file), "--model-dir", str(fake_model_dir), "--hierarchical",
                 "--points-per-side", "8", "--pred-iou-thresh", "0", "--stability-score-thresh", "0",
                 "--high-score-thresh=-1e9", "--out", str(tmp_path / "h"), "--json"])
    summary = json.loads(capsys.readouterr().out)
    # tau = -inf marks every pixel covered by a kept round-1 mask: round 2 decodes nothing new there.
    assert code == 0 and summary["mode"] == "hierarchical" and len(summary["rounds"]) == 2
    assert summary["rounds"][0]["prompts"] == 4 and summary["prompts"] < 64


def test_everything_cli_errors(fake_model_dir, photo_file, tmp_path, capsys):
    from samdeploy.cli.main import main

    bad = tmp_path / "bad.json"
    bad.write_text("[[1, 2, 3]]")
    assert main(["everything", str(photo_file), "--model-dir", str(fake_model_dir), "--boxes", str(bad)]) == 2
    assert "expected 4 numbers" in capsys.readouterr().err
    bad.write_text("{not json")
    assert main(["everything", str(photo_file), "--model-dir", str(fake_model_dir), "--boxes", str(bad)]) == 2
    assert "not valid JSON" in capsys.readouterr().err
    assert main(["everything", str(tmp_path / "nope.png"), "--model-dir", str(fake_model_dir)]) == 2
    assert main(["everything", str(photo_file), "--model-dir", str(fake_model_dir), "--hierarchical", "--crop-n-layers", "1"]) == 2
    assert "whole image" in capsys.readouterr().err


def test_amg_and_stream_run_without_torch(fake_model_dir):
    from fixtures_runtime import run_without_torch

    code = f"""
import numpy as np
from samdeploy.runtime import Predictor
from samdeploy.runtime.amg import MaskGenerator
from samdeploy.runtime.stream import StreamPrompts, run_stream
p = Predictor({str(fake_model_dir)!r})
img = np.random.default_rng(0).integers(0, 255, (60, 80, 3), dtype=np.uint8)
recs = MaskGenerator(p, points_per_side=2, pred_iou_thresh=0, stability_score_thresh=0, output_mode="coco_rle").generate(img)
st = run_stream(p, [img] * 3, StreamPrompts(points=[[10, 10]]), drop=False)
import sys
assert "torch" not in sys.modules
print(len(recs), st.frames_processed)
"""
    res = run_without_torch(code, timeout=300)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split()[-1] == "3"
