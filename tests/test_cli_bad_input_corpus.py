"""A corpus of bad input through every CLI subcommand: each must exit 2 with a one-line typed error
(no traceback, no internal error), and leave nothing behind - no output directory, no stray file.

The cases run in-process through ``samdeploy.cli.main.main`` (argparse's own usage errors arrive as
SystemExit(2)). The model directory is the suite's shared MobileSAM export (random weights); cases
that damage a model work on a private copy.
"""

from __future__ import annotations

import json
import shutil
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from samdeploy.cli.main import main


def _png_header_bomb(path: Path, width: int, height: int) -> None:
    """A tiny, valid-looking PNG whose IHDR claims ``width`` x ``height`` (decompression bomb)."""
    ok, buf = cv2.imencode(".png", np.zeros((2, 2, 3), np.uint8))
    data = bytearray(buf.tobytes())
    ihdr = data[12:29]  # b"IHDR" + 13 bytes
    ihdr[4:12] = struct.pack(">II", width, height)
    data[12:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(ihdr)) & 0xFFFFFFFF)
    path.write_bytes(bytes(data))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, photos, exported_model_dir):
    """Input files and model directories, created once; the tests compare this tree before and after."""
    root = tmp_path_factory.mktemp("bad_inputs")
    inp = root / "inputs"
    inp.mkdir()
    good = inp / "cat.png"
    cv2.imwrite(str(good), cv2.cvtColor(photos["chelsea"], cv2.COLOR_RGB2BGR))  # 451 x 300
    (inp / "garbage.png").write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    (inp / "empty.png").write_bytes(b"")
    (inp / "truncated.png").write_bytes(good.read_bytes()[:600])
    (inp / "notes.jpg").write_text("this is not a picture\n")
    _png_header_bomb(inp / "bomb.png", 60000, 60000)
    (inp / "folder.png").mkdir()
    (inp / "garbage.pth").write_bytes(b"\x80\x02garbage" * 100)
    (inp / "empty.pth").write_bytes(b"")
    (inp / "empty.mp4").write_bytes(b"")
    (inp / "boxes_nan.json").write_text("[[10, 10, NaN, 50]]")
    (inp / "boxes_shape.json").write_text(json.dumps([[1, 2, 3]]))
    (inp / "boxes_broken.json").write_text("[[1, 2, 3, 4]")
    (inp / "boxes_huge.json").write_text(json.dumps([[0, 0, 1e39, 10]]))
    (inp / "taken").write_text("an existing file\n")
    vw = cv2.VideoWriter(str(inp / "clip.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (128, 96))  # 4 frames
    for i in range(4):
        vw.write(cv2.cvtColor(np.ascontiguousarray(photos["chelsea"][i * 4: i * 4 + 96, 100:228]), cv2.COLOR_RGB2BGR))
    vw.release()

    models = root / "models"
    models.mkdir()
    shared = exported_model_dir("mobile_sam")
    (models / "empty").mkdir()
    tampered = Path(shutil.copytree(shared, models / "tampered"))
    (tampered / ".samdeploy-verified.json").unlink(missing_ok=True)
    blob = bytearray((tampered / "encoder.onnx").read_bytes())
    blob[len(blob) // 2] ^= 0xFF  # one flipped byte in the weights; metadata intact
    (tampered / "encoder.onnx").write_bytes(bytes(blob))
    no_manifest = Path(shutil.copytree(shared, models / "no_manifest"))
    (no_manifest / "manifest.json").unlink()
    (no_manifest / ".samdeploy-verified.json").unlink(missing_ok=True)
    return {"root": root, "in": inp, "img": good, "model": shared, "models": models}


def _tree(root: Path) -> dict[str, int]:
    """Every path under ``root`` with its size, except the runtime's hash cache: it records the
    SHA-256 each file really has (a damaged file's too), which is not an output."""
    from samdeploy._io import VERIFIED_CACHE_NAME

    return {str(p.relative_to(root)): (p.stat().st_size if p.is_file() else -1) for p in sorted(root.rglob("*"))
            if p.name != VERIFIED_CACHE_NAME}


# (case id, argv template, text the error must contain). Templates: {img} a good photo, {in} the input
# folder, {model} the shared export, {models} damaged model dirs, {out} a path that must stay absent.
CASES = [
    # ---- predict: images
    ("predict-missing-image", "predict {in}/nope.png --model-dir {model} --point 5,5 --out {out}", "nope.png"),
    ("predict-directory-image", "predict {in}/folder.png --model-dir {model} --point 5,5 --out {out}", "folder.png"),
    ("predict-garbage-image", "predict {in}/garbage.png --model-dir {model} --point 5,5 --out {out}", "garbage.png"),
    ("predict-empty-image", "predict {in}/empty.png --model-dir {model} --point 5,5 --out {out}", "empty.png"),
    ("predict-truncated-image", "predict {in}/truncated.png --model-dir {model} --point 5,5 --out {out}", "truncated.png"),
    ("predict-text-as-image", "predict {in}/notes.jpg --model-dir {model} --point 5,5 --out {out}", "notes.jpg"),
    ("predict-header-bomb", "predict {in}/bomb.png --model-dir {model} --point 5,5 --out {out}", "pixel"),
    ("predict-unknown-sample", "predict sample:nothing --model-dir {model} --point 5,5 --out {out}", "nothing"),
    # ---- predict: prompts
    ("predict-no-prompt", "predict {img} --model-dir {model} --out {out}", "--point"),
    ("predict-point-text", "predict {img} --model-dir {model} --point a,b --out {out}", "--point"),
    ("predict-point-arity", "predict {img} --model-dir {model} --point 1,2,3,4 --out {out}", "--point"),
    ("predict-point-nan", "predict {img} --model-dir {model} --point nan,5 --out {out}", "--point"),
    ("predict-point-inf", "predict {img} --model-dir {model} --point inf,5 --out {out}", "--point"),
    ("predict-point-1e39", "predict {img} --model-dir {model} --point 1e39,5 --out {out}", "float32"),
    ("predict-point-outside", "predict {img} --model-dir {model} --point 452,5 --out {out}", "outside"),
    ("predict-point-negative", "predict {img} --model-dir {model} --point -5,180 --out {out}", "outside"),
    ("predict-label", "predict {img} --model-dir {model} --point 5,5,7 --out {out}", "label"),
    ("predict-box-inverted", "predict {img} --model-dir {model} --box 300,20,50,280 --out {out}", "inverted"),
    ("predict-box-arity", "predict {img} --model-dir {model} --box 1,2,3 --out {out}", "--box"),
    ("predict-box-outside", "predict {img} --model-dir {model} --box 0,0,452,100 --out {out}", "outside"),
    # ---- predict: model and runtime options
    ("predict-missing-model", "predict {img} --model-dir {in}/no_model --point 5,5 --out {out}", "no_model"),
    ("predict-empty-model-dir", "predict {img} --model-dir {models}/empty --point 5,5 --out {out}", "empty"),
    ("predict-tampered-model", "predict {img} --model-dir {models}/tampered --point 5,5 --out {out}", "encoder.onnx"),
    ("predict-no-manifest", "predict {img} --model-dir {models}/no_manifest --point 5,5 --out {out}", "manifest"),
    ("predict-threads-negative", "predict {img} --model-dir {model} --point 5,5 --threads -1 --out {out}", "threads"),
    ("predict-threads-text", "predict {img} --model-dir {model} --point 5,5 --threads two --out {out}", "threads"),
    ("predict-provider", "predict {img} --model-dir {model} --point 5,5 --providers quantum --out {out}", "quantum"),
    ("predict-backend", "predict {img} --model-dir {model} --point 5,5 --backend cuda --out {out}", "backend"),
    ("predict-out-is-file", "predict {img} --model-dir {model} --point 5,5 --out {in}/taken", "taken"),
    # ---- everything
    ("everything-iou-thresh", "everything {img} --model-dir {model} --pred-iou-thresh 2 --out {out}", "pred-iou-thresh"),
    ("everything-points-zero", "everything {img} --model-dir {model} --points-per-side 0 --out {out}", "points-per-side"),
    ("everything-points-huge", "everything {img} --model-dir {model} --points-per-side 100000 --out {out}", "points-per-side"),
    ("everything-offset-nan", "everything {img} --model-dir {model} --stability-score-offset nan --out {out}", "offset"),
    ("everything-boxes-missing", "everything {img} --model-dir {model} --boxes {in}/none.json --out {out}", "none.json"),
    ("everything-boxes-broken", "everything {img} --model-dir {model} --boxes {in}/boxes_broken.json --out {out}", "boxes_broken"),
    ("everything-boxes-shape", "everything {img} --model-dir {model} --boxes {in}/boxes_shape.json --out {out}", "boxes_shape"),
    ("everything-boxes-nan", "everything {img} --model-dir {model} --boxes {in}/boxes_nan.json --out {out}", "boxes_nan"),
    ("everything-boxes-huge", "everything {img} --model-dir {model} --boxes {in}/boxes_huge.json --out {out}", "boxes_huge"),
    ("everything-bomb", "everything {in}/bomb.png --model-dir {model} --out {out}", "pixel"),
    ("everything-tampered", "everything {img} --model-dir {models}/tampered --out {out}", "encoder.onnx"),
    # ---- stream
    ("stream-missing-source", "stream {in}/none.mp4 --model-dir {model} --box 1,1,9,9 --out {out}.mp4", "none.mp4"),
    ("stream-empty-video", "stream {in}/empty.mp4 --model-dir {model} --box 1,1,9,9 --out {out}.mp4", "empty.mp4"),
    ("stream-bad-box", "stream {in}/empty.mp4 --model-dir {model} --box 1,1,9 --out {out}.mp4", "--box"),
    # ---- track (the shared export has no video graphs: everything but that case fails before it is opened)
    ("track-missing-source", "track {in}/none.mp4 --model-dir {model} --box 1:1,1,9,9 --out {out}.mp4", "none.mp4"),
    ("track-empty-video", "track {in}/empty.mp4 --model-dir {model} --box 1:1,1,9,9 --out {out}.mp4", "empty.mp4"),
    ("track-box-no-id", "track {in}/clip.avi --model-dir {model} --box 1,1,9,9 --out {out}.mp4", "object id"),
    ("track-point-1e39", "track {in}/clip.avi --model-dir {model} --point 1:1e39,5 --out {out}.mp4", "float32"),
    ("track-point-outside", "track {in}/clip.avi --model-dir {model} --point 1:129,5 --out {out}.mp4", "outside"),
    ("track-remove-unknown", "track {in}/clip.avi --model-dir {model} --box 1:1,1,9,9 --at 2 --remove 7 --out {out}.mp4",
     "not tracked"),
    ("track-frame-beyond", "track {in}/clip.avi --model-dir {model} --at 9 --box 1:1,1,9,9 --out {out}.mp4", "4 frames"),
    ("track-prompts-missing", "track {in}/clip.avi --model-dir {model} --prompts {in}/none.json --out {out}.mp4", "none.json"),
    ("track-prompts-broken", "track {in}/clip.avi --model-dir {model} --prompts {in}/boxes_broken.json --out {out}.mp4",
     "boxes_broken"),
    ("track-prompts-schema", "track {in}/clip.avi --model-dir {model} --prompts {in}/boxes_shape.json --out {out}.mp4",
     "boxes_shape"),
    ("track-missing-model", "track {in}/clip.avi --model-dir {in}/no_model --box 1:1,1,9,9 --out {out}.mp4", "no_model"),
    ("track-tampered-model", "track {in}/clip.avi --model-dir {models}/tampered --box 1:1,1,9,9 --out {out}.mp4",
     "encoder.onnx"),
    ("track-no-video-graphs", "track {in}/clip.avi --model-dir {model} --box 1:1,1,9,9 --out {out}.mp4 --json {out}.jsonl",
     "no video graphs"),
    # ---- export
    ("export-unknown-model", "export --model vit_z --random-weights --out {out}", "vit_z"),
    ("import-missing-encoder", "import {in}/none.onnx --out {out}", "none.onnx"),
    ("import-not-onnx", "import {img} --out {out}", "cat.png"),
    ("import-pickle", "import {in}/garbage.pth --out {out}", "garbage.pth"),
    ("export-missing-checkpoint", "export --model mobile_sam --checkpoint {in}/none.pth --out {out}", "none.pth"),
    ("export-garbage-checkpoint", "export --model mobile_sam --checkpoint {in}/garbage.pth --out {out}", "garbage.pth"),
    ("export-empty-checkpoint", "export --model mobile_sam --checkpoint {in}/empty.pth --out {out}", "empty.pth"),
    ("export-image-as-checkpoint", "export --model mobile_sam --checkpoint {img} --out {out}", "cat.png"),
    ("export-opset", "export --model mobile_sam --random-weights --opset 11 --out {out}", "opset"),
    ("export-graphs", "export --model mobile_sam --random-weights --graphs encoder,prompts --out {out}", "prompts"),
    ("export-out-is-file", "export --model mobile_sam --random-weights --out {in}/taken", "taken"),
    # ---- check / calibrate / build / bench
    ("check-missing-dir", "check {in}/no_model", "no_model"),
    ("check-max-images", "check {model} --max-images 0", "max-images"),
    ("check-threshold-name", "check {model} --threshold mask_iou_mni=0.9", "mask_iou_mni"),
    ("check-threshold-value", "check {model} --threshold mask_iou_min=lots", "lots"),
    ("check-both-sources", "check {model} --random-weights --checkpoint {in}/garbage.pth", "mutually exclusive"),
    ("check-tampered", "check {models}/tampered --random-weights", "encoder.onnx"),
    ("check-bad-images", "check {model} --images {in}/garbage.png", "garbage.png"),
    ("calibrate-missing-dir", "calibrate --model-dir {in}/no_model --out {out}", "no_model"),
    ("calibrate-num-images", "calibrate --model-dir {model} --num-images 0 --out {out}", "num-images"),
    ("calibrate-bad-images", "calibrate --model-dir {model} --images {in}/garbage.png --out {out}", "garbage.png"),
    ("build-missing-onnx", "build {in}/none.onnx --out {out}", "none.onnx"),
    ("build-not-onnx", "build {img} --dry-run --out {out}", "cat.png"),
    ("bench-missing-model", "bench --model-dir {in}/no_model", "no_model"),
    ("bench-batch-sizes", "bench --model-dir {model} --batch-sizes 0,x", "batch-sizes"),
    ("models-unknown", "models download sam_vit_z", "sam_vit_z"),
]


@pytest.mark.parametrize("argv, says", [pytest.param(a, s, id=i) for i, a, s in CASES])
def test_bad_input_exits_2_with_a_typed_message_and_writes_nothing(argv, says, corpus, tmp_path, capsys):
    out = tmp_path / "out"
    args = argv.format(img=corpus["img"], model=corpus["model"], models=corpus["models"], out=out,
                       **{"in": corpus["in"]}).split()
    before = _tree(corpus["root"])
    try:
        rc = main(args)
    except SystemExit as exc:  # argparse usage errors
        rc = exc.code
    err = capsys.readouterr().err
    assert rc == 2, f"exit {rc}; stderr: {err}"
    assert "Traceback" not in err and "internal error" not in err
    assert "error" in err and says.lower() in err.lower(), err
    assert len(err.strip().splitlines()) <= 3, err  # a message, not a dump
    assert not out.exists() and not Path(f"{out}.mp4").exists()
    assert list(tmp_path.iterdir()) == []
    assert _tree(corpus["root"]) == before  # no stray or half-written file anywhere near the inputs


def test_every_subcommand_is_in_the_corpus():
    from samdeploy.cli.main import COMMANDS

    covered = {argv.split()[0] for _, argv, _ in CASES}
    assert set(COMMANDS) - covered <= {"doctor"}, set(COMMANDS) - covered  # doctor takes no input
