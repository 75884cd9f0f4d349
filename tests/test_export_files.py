"""Export output files: byte-determinism, atomicity / interrupted exports, external data, refusals."""

from __future__ import annotations

import json
import os

import numpy as np
import onnx
import pytest
import torch

from fixtures_export import decoder_feeds, ort_session
from samdeploy._io import sha256_file
from samdeploy.errors import ExportError, InputError
from samdeploy.export import exporter, onnx_io
from samdeploy.export.exporter import ExportOptions, export_model
from samdeploy.export.manifest import read_manifest, verify_files
from samdeploy.export.source import random_source


def _files(d):
    return sorted(p.name for p in d.iterdir())


def test_interrupted_reexport_keeps_the_previous_export_complete(reference_model, tmp_path, monkeypatch):
    out = tmp_path / "out"
    sam = reference_model("mobile_sam")
    src = random_source("mobile_sam", 0)
    opts = ExportOptions(graphs=("decoder",), external_data="always")
    # a previous, complete export in the same directory
    export_model(sam, out, src, opts)
    assert _files(out) == ["decoder.onnx", "decoder.onnx.data", "manifest.json"]

    import samdeploy.export.exporter as ex

    def interrupted(*a, **k):  # decoder.onnx(.data) are written, then Ctrl-C before the manifest
        assert (out / "decoder.onnx").exists() and (out / "decoder.onnx.data").exists()
        raise KeyboardInterrupt("simulated Ctrl-C")

    monkeypatch.setattr(ex, "write_manifest", interrupted)
    with pytest.raises(KeyboardInterrupt):
        export_model(sam, out, src, opts)
    # the previous export is back in place, byte for byte, and its manifest still verifies;
    # no temporaries or staging dirs are left
    assert _files(out) == ["decoder.onnx", "decoder.onnx.data", "manifest.json"]
    assert verify_files(out, read_manifest(out)) == []


def test_failure_while_tracing_writes_nothing(reference_model, tmp_path, monkeypatch):
    out = tmp_path / "out"

    def boom(*a, **k):
        raise ExportError("simulated exporter failure")

    monkeypatch.setattr(exporter, "trace_graph", boom)
    with pytest.raises(ExportError):
        export_model(reference_model("mobile_sam"), out, random_source("mobile_sam", 0), ExportOptions())
    assert _files(out) == []


def test_failure_in_the_atomic_write_keeps_no_partial_file(tmp_path, monkeypatch):
    """A crash in the middle of writing one file leaves neither the file nor its temporary."""
    model = onnx.helper.make_model(
        onnx.helper.make_graph(
            [onnx.helper.make_node("Relu", ["x"], ["y"])], "g",
            [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
            [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])],
        ),
        opset_imports=[onnx.helper.make_opsetid("", 17)],
    )

    def bad_check(path):
        assert os.path.getsize(path) > 0  # the bytes were written to the temporary ...
        raise RuntimeError("simulated crash before the rename")  # ... and then we die

    monkeypatch.setattr(onnx_io, "check_model_file", bad_check)
    with pytest.raises(RuntimeError):
        onnx_io.save_model(model, tmp_path / "x.onnx", external_data=False)
    assert _files(tmp_path) == []


def test_external_data_roundtrip(exported_model_dir, reference_model, tmp_path):
    """Forced external data (what ViT-H gets automatically): same outputs, deterministic, movable."""
    inline = exported_model_dir("mobile_sam")
    sam = reference_model("mobile_sam")
    src = random_source("mobile_sam", 0)
    opts = ExportOptions(graphs=("decoder",), external_data="always")
    res = export_model(sam, tmp_path / "a", src, opts)
    export_model(sam, tmp_path / "b", src, opts)
    a = tmp_path / "a"
    assert _files(a) == ["decoder.onnx", "decoder.onnx.data", "manifest.json"]
    assert (a / "decoder.onnx").stat().st_size < 1_000_000 < (a / "decoder.onnx.data").stat().st_size
    for name in ("decoder.onnx", "decoder.onnx.data"):
        assert (a / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    m = onnx.load(str(a / "decoder.onnx"), load_external_data=False)
    locations = {e.value for t in m.graph.initializer for e in t.external_data if e.key == "location"}
    assert locations == {"decoder.onnx.data"}  # relative: the directory can be moved
    manifest = read_manifest(a)
    entry = manifest["files"]["decoder"]
    assert entry["external_data"] == [
        {"path": "decoder.onnx.data", "sha256": sha256_file(a / "decoder.onnx.data"), "size": (a / "decoder.onnx.data").stat().st_size}
    ]
    assert res.graphs["decoder"].external_data
    moved = tmp_path / "moved"
    a.rename(moved)
    onnx.checker.check_model(str(moved / "decoder.onnx"), full_check=True)
    assert verify_files(moved, manifest) == []
    feeds = decoder_feeds(np.random.default_rng(3), np.random.default_rng(4).normal(size=(1, 256, 64, 64)), 3, 4, True)
    got = ort_session(moved / "decoder.onnx").run(None, feeds)
    want = ort_session(inline / "decoder.onnx").run(None, feeds)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)


def test_auto_external_data_threshold(reference_model, tmp_path):
    """"auto" switches to external data above the threshold (lowered here so a small model crosses it)."""
    opts = ExportOptions(graphs=("decoder",), external_data="auto", external_data_threshold=1_000_000)
    export_model(reference_model("mobile_sam"), tmp_path, random_source("mobile_sam", 0), opts)
    assert (tmp_path / "decoder.onnx.data").exists()
    # re-export without external data removes the stale data file
    export_model(reference_model("mobile_sam"), tmp_path, random_source("mobile_sam", 0), ExportOptions(graphs=("decoder",)))
    assert _files(tmp_path) == ["decoder.onnx", "manifest.json"]


def test_refuses_training_mode_model(reference_model, tmp_path):
    sam = reference_model("mobile_sam")
    sam.train()
    try:
        with pytest.raises(ExportError, match="training mode"):
            export_model(sam, tmp_path, random_source("mobile_sam", 0), ExportOptions(graphs=("decoder",)))
    finally:
        sam.eval()
    assert not (tmp_path / "decoder.onnx").exists()


@pytest.mark.parametrize(
    "options, match",
    [
        (dict(opset=16), "opset 16"),
        (dict(graphs=("encoder", "mask")), "unknown graph"),
        (dict(external_data="sometimes"), "external-data"),
        (dict(encoder_batch=0), "encoder-batch"),
    ],
)
def test_bad_options_are_refused(options, match):
    with pytest.raises(InputError, match=match):
        ExportOptions(**options).validate()


def test_trace_refuses_grad_mode(reference_model, tmp_path):
    from samdeploy.export.wrappers import DecoderGraph, decoder_example, decoder_io

    with torch.enable_grad(), pytest.raises(ExportError, match="no_grad"):
        sam = reference_model("mobile_sam")
        exporter.trace_graph(DecoderGraph(sam), decoder_example(sam.contract), *decoder_io(sam.contract), 17, tmp_path)


def test_manifest_is_valid_json_with_versions(exported_model_dir):
    manifest = json.loads((exported_model_dir("mobile_sam") / "manifest.json").read_text())
    assert manifest["format"] == "samdeploy.manifest/1"
    assert set(manifest["versions"]) >= {"samdeploy", "torch", "onnx", "python"}
    assert manifest["options"]["opset"] == 17 and manifest["options"]["encoder_batch"] == 1
    assert manifest["precision"] == "fp32"
