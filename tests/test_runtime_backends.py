"""Backends and load_model: pairing by contract, clean errors for missing files / providers / TensorRT."""

from __future__ import annotations

import shutil

import numpy as np
import onnx
import pytest
from fixtures_runtime import fake_contract, write_fake_model

from samdeploy.errors import BackendUnavailableError, ContractError, InputError, MissingFileError
from samdeploy.runtime import Backend, GraphPair, load_model
from samdeploy.contract import ENCODER_INPUT, ENCODER_OUTPUT


def test_load_model_from_dir_and_files(fake_model_dir):
    pair = load_model(fake_model_dir, threads=1)
    assert isinstance(pair, GraphPair)
    assert isinstance(pair.encoder, Backend) and isinstance(pair.decoder, Backend)
    assert pair.contract.model_id == "mobile_sam/vit_t@fake:0"
    d = pair.describe()
    assert d["encoder"]["providers"] == ["CPUExecutionProvider"] and d["encoder"]["threads"] == 1
    out = pair.encoder.run({ENCODER_INPUT: np.zeros((1, 3, 1024, 1024), np.float32)})
    assert out[ENCODER_OUTPUT].shape == (1, 256, 64, 64)
    pair.close()
    pair2 = load_model(encoder=fake_model_dir / "encoder.onnx", decoder=fake_model_dir / "decoder.onnx", backend="ort")
    assert pair2.backend == "onnxruntime"
    pair2.close()


def test_missing_files(tmp_path, fake_model_dir):
    with pytest.raises(MissingFileError, match="model directory not found"):
        load_model(tmp_path / "nope")
    d = tmp_path / "half"
    d.mkdir()
    shutil.copy(fake_model_dir / "encoder.onnx", d / "encoder.onnx")
    with pytest.raises(ContractError, match="no manifest.json"):  # loose graphs are not an export
        load_model(d)
    shutil.copy(fake_model_dir / "manifest.json", d / "manifest.json")
    with pytest.raises(MissingFileError, match="decoder file not found"):  # the manifest names both graphs
        load_model(d)
    assert load_model(encoder=d / "encoder.onnx", decoder=fake_model_dir / "decoder.onnx").contract is not None
    with pytest.raises(MissingFileError):
        load_model(encoder=fake_model_dir / "encoder.onnx", decoder=tmp_path / "missing.onnx")
    with pytest.raises(InputError, match="no model given"):
        load_model()


def test_encoder_and_decoder_from_different_models_are_refused(tmp_path, fake_model_dir):
    other = write_fake_model(tmp_path / "other", fake_contract(weights="fake:1"))
    with pytest.raises(ContractError, match="different models"):
        load_model(encoder=fake_model_dir / "encoder.onnx", decoder=other / "decoder.onnx")


def test_swapped_files_and_missing_contract(tmp_path, fake_model_dir):
    with pytest.raises(ContractError, match="swap"):
        load_model(encoder=fake_model_dir / "decoder.onnx", decoder=fake_model_dir / "encoder.onnx")
    m = onnx.load(fake_model_dir / "decoder.onnx")
    del m.metadata_props[:]
    onnx.save(m, tmp_path / "bare.onnx")
    with pytest.raises(ContractError, match="no samdeploy contract"):
        load_model(encoder=fake_model_dir / "encoder.onnx", decoder=tmp_path / "bare.onnx")


def test_unknown_backend_and_unavailable_providers(fake_model_dir):
    with pytest.raises(InputError, match="unknown backend"):
        load_model(fake_model_dir, backend="magic")
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        with pytest.raises(BackendUnavailableError, match="CUDAExecutionProvider"):
            load_model(fake_model_dir, providers=["cuda"])
    if "TensorrtExecutionProvider" not in ort.get_available_providers():
        with pytest.raises(BackendUnavailableError, match="TensorrtExecutionProvider"):
            load_model(fake_model_dir, providers="tensorrt")


def test_tensorrt_backend_fails_cleanly_without_gpu(fake_model_dir):
    try:
        import pycuda.driver  # noqa: F401
        import tensorrt  # noqa: F401

        pytest.skip("TensorRT + pycuda are installed here; this test is for machines without them")
    except ImportError:
        pass
    with pytest.raises(BackendUnavailableError) as exc:
        load_model(fake_model_dir, backend="tensorrt")
    assert "onnxruntime" in str(exc.value) or "install" in str(exc.value).lower()


def test_bad_feed_becomes_input_error(fake_model_dir):
    pair = load_model(fake_model_dir)
    with pytest.raises(InputError, match="rejected inputs"):
        pair.encoder.run({ENCODER_INPUT: np.zeros((1, 3, 512, 512), np.float32)})
    with pytest.raises(InputError, match="needs inputs"):
        pair.decoder.run({ENCODER_OUTPUT: np.zeros((1, 256, 64, 64), np.float32)})
    pair.close()
