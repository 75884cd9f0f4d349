"""`samdeploy import`: a foreign (NanoSAM-style) encoder ONNX wrapped in the samdeploy contract, and
the signatures it refuses (exit 2, one typed line naming the signature, nothing written)."""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from fixtures_export import ort_session
from samdeploy.cli.main import main
from samdeploy.contract import (DECODER_INPUTS, DECODER_IOU, DECODER_LOW_RES_MASKS, ENCODER_INPUT, ENCODER_OUTPUT,
                                SAM_PIXEL_MEAN, SAM_PIXEL_STD, decoder_feeds, read_onnx_contract)


def _normalise(x: np.ndarray) -> np.ndarray:
    mean = np.asarray(SAM_PIXEL_MEAN, np.float32).reshape(1, 3, 1, 1)
    std = np.asarray(SAM_PIXEL_STD, np.float32).reshape(1, 3, 1, 1)
    return (x - mean) / std


def _rel(a, b) -> float:
    return float(np.linalg.norm(np.asarray(a) - np.asarray(b)) / max(np.linalg.norm(np.asarray(b)), 1e-12))


@pytest.fixture(scope="module")
def nanosam_onnx(tmp_path_factory) -> Path:
    """What NanoSAM publishes: resnet18_image_encoder.onnx, normalised input, opset 16."""
    from samdeploy.models.build import random_model

    enc = random_model("nanosam", seed=3).image_encoder.eval()
    path = tmp_path_factory.mktemp("upstream") / "resnet18_image_encoder.onnx"
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(enc, (torch.zeros(1, 3, 1024, 1024),), str(path), dynamo=False, opset_version=16,
                          input_names=[ENCODER_INPUT], output_names=[ENCODER_OUTPUT])
    return path


def _save(graph: onnx.GraphProto, path: Path, opset: int = 16, **kw) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.save(model, str(path), **kw)
    return path


def _meta_style_encoder(path: Path, external: bool = False) -> Path:
    """A tiny Meta-style encoder: image [1,3,1024,1024] (normalised) -> [1,256,64,64] (16x16 patch conv)."""
    w = (np.random.default_rng(0).normal(size=(256, 3, 16, 16)) * 0.02).astype(np.float32)
    g = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], kernel_shape=[16, 16], strides=[16, 16])], "patch",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 1024, 1024])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 256, 64, 64])], [numpy_helper.from_array(w, "w")])
    kw = dict(save_as_external_data=True, location=path.name + ".data", size_threshold=0) if external else {}
    return _save(g, path, **kw)


def _hwc_encoder(path: Path) -> Path:
    """samexporter --use-preprocess style: input_image [H,W,3] uint8 -> image_embeddings."""
    shape = numpy_helper.from_array(np.array([1, 256, 64, 64], np.int64), "shape")
    g = helper.make_graph(
        [helper.make_node("Cast", ["input_image"], ["f"], to=TensorProto.FLOAT),
         helper.make_node("ReduceMean", ["f"], ["m"], keepdims=0),
         helper.make_node("Expand", ["m", "shape"], [ENCODER_OUTPUT])], "hwc",
        [helper.make_tensor_value_info("input_image", TensorProto.UINT8, ["H", "W", 3])],
        [helper.make_tensor_value_info(ENCODER_OUTPUT, TensorProto.FLOAT, [1, 256, 64, 64])], [shape])
    return _save(g, path)


def _decoder_like(path: Path, inputs: list[tuple[str, list]], outputs: list[tuple[str, list]]) -> Path:
    """A graph with the given float I/O (each output an Identity of the first input): only its signature matters."""
    nodes = [helper.make_node("Identity", [inputs[0][0]], [name]) for name, _ in outputs]
    g = helper.make_graph(nodes, "decoder", [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
                          [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in outputs])
    return _save(g, path)


def _meta_decoder(path: Path) -> Path:
    ins = [(DECODER_INPUTS[0], [1, 256, 64, 64]), (DECODER_INPUTS[1], [1, "N", 2]), (DECODER_INPUTS[2], [1, "N"]),
           (DECODER_INPUTS[3], [1, 1, 256, 256]), (DECODER_INPUTS[4], [1]), ("orig_im_size", [2])]
    outs = [("masks", [1, 4, "H", "W"]), (DECODER_IOU, [1, 4]), (DECODER_LOW_RES_MASKS, [1, 4, 256, 256])]
    return _decoder_like(path, ins, outs)


def _batch1_decoder(path: Path) -> Path:
    """NanoSAM's published mobile_sam_mask_decoder.onnx layout: our names, but the prompt batch fixed at 1."""
    ins = [(DECODER_INPUTS[0], [1, 256, 64, 64]), (DECODER_INPUTS[1], [1, "N", 2]), (DECODER_INPUTS[2], [1, "N"]),
           (DECODER_INPUTS[3], [1, 1, 256, 256]), (DECODER_INPUTS[4], [1])]
    return _decoder_like(path, ins, [(DECODER_IOU, [1, 4]), (DECODER_LOW_RES_MASKS, [1, 4, 256, 256])])


def _edge_sam_decoder(path: Path) -> Path:
    ins = [(DECODER_INPUTS[0], [1, 256, 64, 64]), (DECODER_INPUTS[1], [1, "N", 2]), (DECODER_INPUTS[2], [1, "N"])]
    return _decoder_like(path, ins, [("scores", [1, 4]), ("masks", [1, 4, 256, 256])])


def _run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    try:
        rc = main([str(a) for a in argv])
    except SystemExit as exc:
        rc = exc.code
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


@pytest.fixture(scope="module")
def imported(nanosam_onnx, exported_model_dir, tmp_path_factory):
    decoder_dir = exported_model_dir("mobile_sam")
    out = tmp_path_factory.mktemp("imported") / "nanosam"
    rc = main(["import", str(nanosam_onnx), "--decoder-from", str(decoder_dir), "--out", str(out)])
    assert rc == 0
    return out, decoder_dir


def test_import_writes_a_contract_directory(imported, nanosam_onnx):
    from samdeploy.export.manifest import read_manifest, verify_files

    out, decoder_dir = imported
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == ["decoder.onnx", "encoder.onnx", "manifest.json"]
    manifest = read_manifest(out)
    assert verify_files(out, manifest) == []
    enc_c, enc_role = read_onnx_contract(str(out / "encoder.onnx"))
    dec_c, dec_role = read_onnx_contract(str(out / "decoder.onnx"))
    sha = hashlib.sha256(nanosam_onnx.read_bytes()).hexdigest()
    assert (enc_role, dec_role) == ("encoder", "decoder")
    assert enc_c.model_id == dec_c.model_id == manifest["model_id"] == f"nanosam/nanosam@{sha}"
    assert enc_c.opset == 17 and enc_c.decoder.accepts_no_points  # the mobile_sam export's decoder
    prov = enc_c.provenance
    assert prov["imported_encoder"]["file"] == nanosam_onnx.name and prov["imported_encoder"]["opset"] == 16
    assert f"{ENCODER_INPUT}[1,3,1024,1024]:float32" in prov["imported_encoder"]["signature"]
    assert "BICUBIC" in prov["upstream_preprocess"]["resize"] and "int()" in prov["upstream_preprocess"]["resize"]
    src_id = json.loads((decoder_dir / "manifest.json").read_text())["model_id"]
    assert prov["imported_decoder"]["model_id"] == src_id
    enc = onnx.load(str(out / "encoder.onnx"), load_external_data=False)
    assert [i.name for i in enc.graph.input] == [ENCODER_INPUT] and [o.name for o in enc.graph.output] == [ENCODER_OUTPUT]
    assert [o.version for o in enc.opset_import if o.domain in ("", "ai.onnx")] == [17]
    assert [n.op_type for n in enc.graph.node[:2]] == ["Sub", "Div"]


def test_predictor_on_the_import_matches_the_original_graphs(imported, nanosam_onnx, photos):
    from samdeploy.runtime import Predictor
    from samdeploy.runtime.transforms import preprocess_image

    out, decoder_dir = imported
    image = photos["chelsea"]
    with Predictor(out, threads=2) as p:
        p.set_image(image)
        emb = p.get_image_embedding()
        x, _ = preprocess_image(image, p.contract.preprocess)
        ref = ort_session(nanosam_onnx).run(None, {ENCODER_INPUT: _normalise(x)})[0]
        assert emb.shape == ref.shape == (1, 256, 64, 64)
        assert _rel(emb, ref) <= 1e-5
        pc = np.array([[[120.0, 200.0], [0.0, 0.0]], [[300.0, 100.0], [0.0, 0.0]]], np.float32)
        pl = np.array([[1.0, -1.0], [1.0, -1.0]], np.float32)
        iou, low = p.decode(pc, pl)
    dec = ort_session(decoder_dir / "decoder.onnx")
    names = [o.name for o in dec.get_outputs()]
    want = dict(zip(names, dec.run(None, decoder_feeds(ref, pc, pl, np.zeros((2, 1, 256, 256), np.float32), np.zeros(2, np.float32)))))
    assert _rel(low, want[DECODER_LOW_RES_MASKS]) <= 1e-4 and np.abs(iou - want[DECODER_IOU]).max() <= 1e-4


def test_a_foreign_decoder_with_the_contract_signature_is_accepted(tmp_path, exported_model_dir, capsys):
    """An external-data Meta-style encoder + a decoder with our I/O but no samdeploy metadata."""
    enc = _meta_style_encoder(tmp_path / "sam_encoder.onnx", external=True)
    dec = onnx.load(str(exported_model_dir("mobile_sam") / "decoder.onnx"))
    del dec.metadata_props[:]
    onnx.save(dec, str(tmp_path / "plain_decoder.onnx"))
    out = tmp_path / "out"
    rc, stdout, err = _run_cli(["import", enc, "--decoder", tmp_path / "plain_decoder.onnx", "--family", "vit_b",
                                "--out", out], capsys)
    assert rc == 0, err
    c, _ = read_onnx_contract(str(out / "decoder.onnx"))
    assert c.model_id.startswith("sam/vit_b@") and not c.decoder.accepts_no_points  # unknown: the runtime pads
    assert len(c.provenance["imported_encoder"]["external_data"]) == 1
    from samdeploy.runtime import Predictor

    with Predictor(out, threads=2) as p:
        p.set_image(np.full((64, 80, 3), 128, np.uint8))
        masks, scores, _ = p.predict(point_coords=[[10, 20]], point_labels=[1])
    assert masks.shape[1:] == (64, 80) and np.isfinite(scores).all()


REFUSALS = [
    # (id, how to build the offending file, role, text the error must contain)
    ("samexporter-hwc-encoder", _hwc_encoder, "encoder", "input_image[H,W,3]:uint8"),
    ("meta-decoder-orig-im-size", _meta_decoder, "decoder", "orig_im_size"),
    ("edge-sam-3-input-decoder", _edge_sam_decoder, "decoder", "3-input"),
    ("batch-1-decoder", _batch1_decoder, "decoder", "fixed at 1"),
    ("text-file", lambda p: (p.write_text("not a model\n"), p)[1], "encoder", "not an ONNX model"),
    ("empty-file", lambda p: (p.write_bytes(b""), p)[1], "encoder", "empty"),
    ("pickle", lambda p: (p.write_bytes(b"\x80\x02garbage" * 50), p)[1], "encoder", "PyTorch checkpoint"),
    ("random-graph", lambda p: _decoder_like(p, [("x", [1, 10])], [("y", [1, 10])]), "encoder", "x[1,10]:float32"),
    ("missing-external-data", lambda p: (_meta_style_encoder(p, external=True),
                                         Path(f"{p}.data").unlink(), p)[2], "encoder", "missing"),
]


@pytest.mark.parametrize("build, role, says", [pytest.param(b, r, s, id=i) for i, b, r, s in REFUSALS])
def test_unsupported_files_are_refused_with_exit_2(build, role, says, tmp_path, nanosam_onnx, exported_model_dir, capsys):
    bad = build(tmp_path / f"bad_{role}.onnx")
    out = tmp_path / "out"
    argv = ["import", bad, "--out", out] if role == "encoder" else ["import", nanosam_onnx, "--decoder", bad, "--out", out]
    before = sorted(p.name for p in tmp_path.iterdir())
    rc, _, err = _run_cli(argv, capsys)
    assert rc == 2, err
    assert "Traceback" not in err and "internal error" not in err
    assert "error" in err and says.lower() in err.lower(), err
    assert len(err.strip().splitlines()) <= 3, err
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == before


def test_a_decoder_export_of_another_contract_is_refused(tmp_path, nanosam_onnx, exported_model_dir, capsys):
    rc, _, err = _run_cli(["import", nanosam_onnx, "--decoder-from", exported_model_dir("mobile_sam"),
                           "--family", "edge_sam", "--out", tmp_path / "out"], capsys)
    assert rc == 2 and "differs from edge_sam" in err and "score" in err, err
    assert not (tmp_path / "out").exists()


def test_a_failed_import_keeps_the_previous_directory(imported, tmp_path, capsys):
    import shutil

    out = Path(shutil.copytree(imported[0], tmp_path / "kept"))
    before = {p.name: p.read_bytes()[:64] for p in out.iterdir() if p.is_file()}
    bad = _meta_decoder(tmp_path / "meta.onnx")
    rc, _, err = _run_cli(["import", _meta_style_encoder(tmp_path / "e.onnx"), "--decoder", bad, "--out", out], capsys)
    assert rc == 2 and "orig_im_size" in err
    assert {p.name: p.read_bytes()[:64] for p in out.iterdir() if p.is_file()} == before


def test_check_on_an_import_says_there_is_no_pytorch_reference(imported, capsys):
    """`samdeploy check` compares with PyTorch; an imported (ONNX-only) model has none: exit 2, said so."""
    code, _, err = _run_cli(["check", str(imported[0])], capsys)
    assert code == 2
    assert "imported from a foreign ONNX file" in err and "no PyTorch model" in err and "samdeploy import" in err
