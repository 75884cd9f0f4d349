"""`samdeploy export` command line: a second process reproduces the bytes; usage errors exit 2."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from samdeploy.cli.main import main


def test_cli_export_in_another_process_is_byte_identical(exported_model_dir, tmp_path):
    out = tmp_path / "cli"
    env = dict(os.environ, OMP_NUM_THREADS="2")
    proc = subprocess.run(
        [sys.executable, "-m", "samdeploy.cli.main", "export", "--model", "mobile_sam", "--random-weights",
         "--seed", "0", "--out", str(out)],
        capture_output=True, text=True, env=env, timeout=900,
    )
    assert proc.returncode == 0, proc.stderr
    # it says what it did: files with sizes, the contract, the time
    assert "encoder.onnx" in proc.stdout and "decoder.onnx" in proc.stdout and "MB" in proc.stdout
    assert "mobile_sam/mobile_sam" in proc.stdout and "done in" in proc.stdout
    reference = exported_model_dir("mobile_sam")
    for name in ("encoder.onnx", "decoder.onnx"):
        data = (out / name).read_bytes()
        assert data == (reference / name).read_bytes(), f"{name} differs between two exports"
        assert str(tmp_path).encode() not in data and b".samdeploy-export-" not in data
    assert sorted(p.name for p in out.iterdir()) == ["decoder.onnx", "encoder.onnx", "manifest.json"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--model", "mobile_sam", "--random-weights", "--opset", "16"], "opset 16 is too old"),
        (["--random-weights"], "needs an explicit --model"),
        (["--model", "sam_vit_q", "--random-weights"], "unknown model variant"),
        (["--checkpoint", "/nonexistent/sam.pth"], "checkpoint not found"),
        (["--checkpoint", "x.pth", "--random-weights", "--model", "vit_b"], "mutually exclusive"),
        (["--model", "mobile_sam", "--random-weights", "--graphs", "encoder,prompt"], "unknown graph"),
        (["--model", "mobile_sam", "--random-weights", "--encoder-batch", "many"], "encoder-batch"),
        (["--model", "not_a_model"], "neither a variant nor a registry checkpoint"),
        ([], "no model given"),
    ],
)
def test_usage_errors_exit_2(tmp_path, capsys, args, message):
    assert main(["export", *args, "--out", str(tmp_path / "o")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o" / "manifest.json").exists()


def test_registry_download_offline_says_pass_checkpoint(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SAMDEPLOY_OFFLINE", "1")
    monkeypatch.setenv("SAMDEPLOY_CACHE", str(tmp_path / "cache"))
    assert main(["export", "--model", "mobile_sam", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "--checkpoint PATH" in err and "mobile_sam.pt" in err


def test_out_is_a_file(tmp_path, capsys):
    (tmp_path / "o").write_text("x")
    assert main(["export", "--model", "mobile_sam", "--random-weights", "--graphs", "decoder", "--out", str(tmp_path / "o")]) == 2
    assert "is a file" in capsys.readouterr().err


def test_checkpoint_that_is_not_a_checkpoint(tmp_path, capsys):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"this is not a checkpoint")
    assert main(["export", "--checkpoint", str(bad), "--out", str(tmp_path / "o")]) == 2
    assert "bad.pth" in capsys.readouterr().err
