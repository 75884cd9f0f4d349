"""`samdeploy predict` refuses bad prompts before any model is opened (exit 2, nothing written), reads
negative coordinates, and says which precision and weights produced its result."""

from __future__ import annotations

import json

import cv2
import pytest

from samdeploy.cli.main import _join_negative_values, main
from samdeploy.cli._args import default_out_dir, image_source


@pytest.fixture(scope="module")
def photo_file(tmp_path_factory, photos):
    path = tmp_path_factory.mktemp("img") / "cat.png"
    cv2.imwrite(str(path), cv2.cvtColor(photos["chelsea"], cv2.COLOR_RGB2BGR))  # 451 x 300
    return path


@pytest.mark.parametrize("prompt, says", [
    (["--point", "200,150,7"], "label 7 is not 0, 1 or -2"),
    (["--box", "400,20,50,280"], "inverted"),
    (["--point", "1e39,5"], "finite float32"),
    (["--point", "-5,180"], "outside the 451x300 image"),      # a negative value parses (no argparse error)
    (["--point", "200,301"], "outside the 451x300 image"),
    (["--box", "0,0,452,100"], "outside the 451x300 image"),
])
def test_bad_prompts_fail_before_the_model_is_opened(prompt, says, photo_file, tmp_path, capsys):
    empty_dir = tmp_path / "no_model_here"  # opening a model here would fail with another message
    empty_dir.mkdir()
    out = tmp_path / "out"
    rc = main(["predict", str(photo_file), "--model-dir", str(empty_dir), *prompt, "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2
    assert says in err and prompt[0] in err  # the message names the CLI flag, not a Python keyword
    assert not out.exists()


def test_negative_values_are_joined_only_after_coordinate_flags():
    assert _join_negative_values(["predict", "x.png", "--point", "-5,180", "--box", "-1,-2,3,4", "--threads", "2"]) == [
        "predict", "x.png", "--point=-5,180", "--box=-1,-2,3,4", "--threads", "2"]
    assert _join_negative_values(["--point", "--json"]) == ["--point", "--json"]


def test_sample_sources_make_plain_output_names():
    assert str(default_out_dir("sample:astronaut", "_samdeploy")) == "astronaut_samdeploy"
    assert str(default_out_dir("/data/photo.jpg", "_samdeploy")) == "/data/photo_samdeploy"
    assert image_source("sample:astronaut") == "sample:astronaut"


def test_out_pointing_at_a_file_is_refused_before_inference(fake_model_dir, photo_file, tmp_path, capsys):
    target = tmp_path / "taken"
    target.write_text("x")
    rc = main(["predict", str(photo_file), "--model-dir", str(fake_model_dir), "--point", "200,150", "--out", str(target)])
    assert rc == 2 and "existing file" in capsys.readouterr().err
    assert target.read_text() == "x"


def test_summary_names_precision_and_sample_source(fake_model_dir, tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(["predict", "sample:astronaut", "--model-dir", str(fake_model_dir), "--point", "250,180",
               "--out", str(out), "--json"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["precision"] == "FP32" and summary["backend"] == "onnxruntime" and summary["providers"]
    assert json.loads((out / "masks.json").read_text())["image"] == "sample:astronaut"
