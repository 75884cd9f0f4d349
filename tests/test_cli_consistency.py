"""CLI consistency: flag spellings shared across subcommands, help text that states the true
defaults, `models list/download` output, strict JSON from `everything`, and `stream` on sources that
yield no frames (exit 2, never an absurd FPS)."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from samdeploy.cli.main import build_parser, main


def _help(command: str, capsys, *extra: str) -> str:
    with pytest.raises(SystemExit):
        main([command, *extra, "--help"])
    return capsys.readouterr().out


def _strict_json(text: str):
    def refuse(name):
        raise AssertionError(f"non-standard JSON constant {name}")

    return json.loads(text, parse_constant=refuse)


# ---- check --providers ----------------------------------------------------------------------------
def test_check_accepts_providers_and_hidden_provider_alias(capsys):
    p = build_parser("check")
    assert p.parse_args(["check", "exp", "--providers", "cuda"]).provider == "cuda"
    assert p.parse_args(["check", "exp", "--provider", "cuda"]).provider == "cuda"  # old spelling still works
    assert p.parse_args(["check", "exp"]).provider == "cpu"
    text = _help("check", capsys)
    assert "--providers" in text and not re.search(r"--provider\b(?!s)", text)
    # the same spelling as predict / bench / stream
    for cmd in ("predict", "bench", "stream", "everything", "track"):
        assert "--providers" in _help(cmd, capsys)


def test_check_providers_bad_value_is_exit_2(tmp_path, capsys):
    code = main(["check", str(tmp_path / "missing_export"), "--providers", ","])
    assert code == 2


# ---- calibrate help -------------------------------------------------------------------------------
def test_calibrate_help_states_the_true_image_count(capsys):
    from samdeploy.calibration.pipeline import CalibrationSettings
    from samdeploy.images import _DEFAULT_PHOTOS, _HELD_OUT_PHOTOS

    bundled = len([n for n in _DEFAULT_PHOTOS if n not in _HELD_OUT_PHOTOS and n != "chelsea"])
    text = " ".join(_help("calibrate", capsys).split())
    assert f"default {CalibrationSettings().num_images}" in text
    assert f"{len(_DEFAULT_PHOTOS)} photographs" in text or f"{bundled} photographs" in text


# ---- models ---------------------------------------------------------------------------------------
def test_models_list_has_url_column(capsys):
    from samdeploy.models.registry import REGISTRY

    assert main(["models", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    header = lines[0].split()
    for col in ("NAME", "FAMILY", "SIZE", "HASH", "LICENSE", "URL"):
        assert col in header
    out = "\n".join(lines)
    for c in REGISTRY.values():
        if c.url:
            assert c.url in out
        else:
            assert c.page in out


def test_models_download_offline_prints_the_cache_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SAMDEPLOY_OFFLINE", "1")
    cache = tmp_path / "my_cache"
    assert main(["models", "download", "mobile_sam", "--cache-dir", str(cache), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert str(cache) in err and "--checkpoint" in err


def test_models_download_unknown_name_exit_2(tmp_path, capsys):
    assert main(["models", "download", "no_such_model", "--cache-dir", str(tmp_path)]) == 2


# ---- everything: strict JSON, sample names, bad thresholds -----------------------------------------
def test_everything_thresh_zero_writes_strict_json(fake_model_dir, tmp_path, capsys):
    out = tmp_path / "ev"
    code = main(["everything", "sample:astronaut", "--model-dir", str(fake_model_dir), "--points-per-side", "4",
                 "--pred-iou-thresh", "0", "--stability-score-thresh", "0", "--box-nms-thresh", "1.0",
                 "--out", str(out), "--no-progress"])
    assert code == 0, capsys.readouterr()
    doc = _strict_json((out / "masks.json").read_text())
    assert doc["image"] == "sample:astronaut"
    for a in doc["annotations"]:
        s = a["stability_score"]
        assert s is None or 0.0 <= s <= 1.0


def test_everything_non_finite_values_become_null():
    from samdeploy.cli.everything_cmd import _finite_or_none

    obj, n = _finite_or_none([{"stability_score": np.float32("nan"), "iou": 0.5, "b": [1.0, float("inf")]}])
    assert n == 2 and obj == [{"stability_score": None, "iou": 0.5, "b": [1.0, None]}]
    json.dumps(obj, allow_nan=False)


def test_everything_sample_default_out_dir(fake_model_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code = main(["everything", "sample:astronaut", "--model-dir", str(fake_model_dir), "--points-per-side", "2",
                 "--no-progress"])
    assert code == 0, capsys.readouterr()
    assert (tmp_path / "astronaut_everything" / "masks.json").exists()
    assert not any(":" in p.name for p in tmp_path.iterdir())
    doc = _strict_json((tmp_path / "astronaut_everything" / "masks.json").read_text())
    assert doc["image"] == "sample:astronaut"


@pytest.mark.parametrize("flags", [["--stability-score-thresh", "1.5"], ["--stability-score-thresh", "-0.1"],
                                   ["--stability-score-thresh", "nan"], ["--stability-score-offset", "-1"]])
def test_everything_bad_stability_values_exit_2(fake_model_dir, tmp_path, capsys, flags):
    code = main(["everything", "sample:astronaut", "--model-dir", str(fake_model_dir), "--out", str(tmp_path / "o"),
                 *flags])
    assert code == 2 and "stability-score" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


# ---- stream: sources without frames ----------------------------------------------------------------
def _zero_frame_avi(path):
    import cv2

    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (64, 48))
    assert vw.isOpened()
    vw.release()  # no frame written
    return path


def test_stream_zero_frame_video_exit_2(fake_model_dir, tmp_path, capsys):
    video = _zero_frame_avi(tmp_path / "zero.avi")
    code = main(["stream", str(video), "--model-dir", str(fake_model_dir), "--point", "5,5",
                 "--json", str(tmp_path / "f.jsonl")])
    cap = capsys.readouterr()
    assert code == 2 and "yielded no frames" in cap.err and str(video) in cap.err
    assert "FPS" not in cap.out
    assert not (tmp_path / "f.jsonl").exists() and not list(tmp_path.glob(".*partial*"))


@pytest.mark.parametrize("content", [b"", b"not a video" * 50])
def test_stream_empty_or_invalid_file_exit_2(fake_model_dir, tmp_path, capsys, content):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(content)
    code = main(["stream", str(bad), "--model-dir", str(fake_model_dir), "--point", "5,5"])
    cap = capsys.readouterr()
    assert code == 2 and str(bad) in cap.err and "FPS" not in cap.out


def test_run_stream_empty_iterable_is_typed_error():
    from samdeploy.errors import InputError
    from samdeploy.runtime.stream import StreamPrompts, run_stream

    with pytest.raises(InputError, match="yielded no frames"):
        run_stream(None, [], StreamPrompts(points=[[1, 1]]))


def test_stream_fps_is_never_absurd(fake_model_dir, tmp_path, capsys):
    from test_runtime_stream import write_video

    video = write_video(tmp_path / "clip.avi", 3)
    assert main(["stream", str(video), "--model-dir", str(fake_model_dir), "--point", "5,5"]) == 0
    out = capsys.readouterr().out
    speed = next(line for line in out.splitlines() if line.startswith("speed"))
    fps = [float(x) for x in re.findall(r"([0-9.]+) FPS", speed)]
    assert fps and all(0 < v < 1e6 for v in fps), speed
