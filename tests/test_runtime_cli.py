"""`samdeploy predict` and `samdeploy bench` end to end (tiny fake graphs for speed; the real-model
accuracy is covered by test_runtime_vs_official.py)."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from samdeploy.cli.main import main
from samdeploy.runtime.rle import rle_to_mask


@pytest.fixture(scope="module")
def photo_file(tmp_path_factory, photos):
    path = tmp_path_factory.mktemp("img") / "cat.png"
    cv2.imwrite(str(path), cv2.cvtColor(photos["chelsea"], cv2.COLOR_RGB2BGR))
    return path


def test_predict_writes_overlay_masks_and_rle(fake_model_dir, photo_file, tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(["predict", str(photo_file), "--model-dir", str(fake_model_dir), "--point", "200,150",
               "--point", "300,100,0", "--box", "50,20,400,280", "--multimask", "--out", str(out), "--threads", "1"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "prompt 0: score" in text and "decoder" in text and "overlay.png" in text
    overlay = cv2.imread(str(out / "overlay.png"))
    assert overlay.shape == (300, 451, 3)
    data = json.loads((out / "masks.json").read_text())
    anns = data["annotations"]
    assert len(anns) == 3 and data["height"] == 300 and sum(a["best"] for a in anns) == 1
    for a in anns:
        png = cv2.imread(str(out / a["file"]), cv2.IMREAD_GRAYSCALE) > 127
        rle = rle_to_mask(a["segmentation"])
        assert np.array_equal(png, rle)  # PNG and COCO RLE hold the same mask
        assert a["area"] == int(rle.sum())
    # masks and prompts are drawn on top of the photo
    photo = cv2.imread(str(photo_file))
    assert (overlay != photo).any()


def test_predict_several_boxes_is_batched(fake_model_dir, photo_file, tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(["predict", str(photo_file), "--model-dir", str(fake_model_dir), "--box", "10,10,100,100",
               "--box", "150,50,400,250", "--box", "0,0,450,299", "--out", str(out), "--json"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["prompts"] == 3 and summary["masks_per_prompt"] == 1 and len(summary["scores"]) == 3
    assert sorted(p.name for p in out.glob("mask_*.png")) == ["mask_0.png", "mask_1.png", "mask_2.png"]


@pytest.mark.parametrize(
    "extra, msg",
    [
        ([], "no prompt given"),
        (["--point", "1,2,3,4"], "expected 2 or 3"),
        (["--point", "a,b"], "cannot parse"),
        (["--box", "10,10,5,5"], "--box '10,10,5,5' is inverted"),
        (["--point", "5,5", "--box", "0,0,9,9", "--box", "1,1,8,8"], "cannot be combined"),
        (["--point", "5,5", "--providers", "cuda"], "CUDAExecutionProvider"),
    ],
)
def test_predict_errors_exit_2_with_message(fake_model_dir, photo_file, tmp_path, capsys, extra, msg):
    rc = main(["predict", str(photo_file), "--model-dir", str(fake_model_dir), "--out", str(tmp_path / "o"), *extra])
    assert rc == 2
    assert msg in capsys.readouterr().err


def test_predict_missing_inputs(fake_model_dir, tmp_path, capsys):
    assert main(["predict", str(tmp_path / "none.png"), "--model-dir", str(fake_model_dir), "--point", "1,1"]) == 2
    assert "image not found" in capsys.readouterr().err
    img = tmp_path / "x.png"
    cv2.imwrite(str(img), np.zeros((8, 8, 3), np.uint8))
    assert main(["predict", str(img), "--model-dir", str(tmp_path / "nomodel"), "--point", "1,1"]) == 2
    assert "model directory not found" in capsys.readouterr().err


def test_bench_json_and_plot(fake_model_dir, tmp_path, capsys):
    js, png = tmp_path / "bench.json", tmp_path / "bench.png"
    rc = main(["bench", "--model-dir", str(fake_model_dir), "--batch-sizes", "1,3", "--runs", "2", "--warmup", "1",
               "--threads", "1", "--json", str(js), "--plot", str(png), "--quiet"])
    assert rc == 0
    table = capsys.readouterr().out
    assert "decoder call, batch 3" in table and "GEMM" in table
    res = json.loads(js.read_text())
    for key in ("image_preprocess", "encoder", "prompt_pre", "postprocess_single", "postprocess_multimask"):
        assert {"p50", "p90", "p99"} <= set(res[key])
    assert set(res["decoder"]) == {"1", "3"}
    assert res["decoder"]["3"]["per_prompt_p50"] == pytest.approx(res["decoder"]["3"]["call"]["p50"] / 3)
    assert res["floors"]["gemm_gflops"] > 0 and res["peak_rss_mb"] > 0
    assert res["image_hw"] == [1080, 1920]
    assert res["environment"]["encoder"]["version"]
    # the fake encoder is 1 conv of 3->256 at 64x64 + a pool: counted from the graph
    assert res["floors"]["encoder_gflop"] == pytest.approx(2 * 256 * 3 * 64 * 64 / 1e9)
    assert cv2.imread(str(png)).shape == (560, 1100, 3)
