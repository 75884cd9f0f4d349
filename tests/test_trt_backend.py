"""The TensorRT runtime backend fails cleanly without TensorRT/pycuda/GPU, and checks the engine
manifest before deserialising (exercised with stand-in modules; nothing runs on a GPU here)."""

import types

import numpy as np
import pytest

from samdeploy.errors import BackendUnavailableError, ContractError, EngineMismatchError, MissingFileError
from samdeploy.runtime.backends import tensorrt as trt_backend

from test_trt_manifest import ORIN, fake_engine
from samdeploy.contract import DECODER_OUTPUTS, DECODER_POINT_COORDS, ENCODER_OUTPUT, decoder_feeds


def test_backend_tensorrt_fails_cleanly_here(tmp_path):
    from samdeploy.runtime.backends import load_model

    enc, _ = fake_engine(tmp_path, role="encoder")
    dec, _ = fake_engine(tmp_path, role="decoder")
    with pytest.raises(BackendUnavailableError) as ei:
        load_model(str(tmp_path), backend="tensorrt")
    text = str(ei.value)
    assert "tensorrt" in text and "pycuda" in text and "GPU" in text and "--backend onnxruntime" in text


def test_read_contract_and_find_graphs_need_no_gpu(tmp_path):
    with pytest.raises(MissingFileError, match="samdeploy build"):
        trt_backend.find_graphs(str(tmp_path))
    enc, _ = fake_engine(tmp_path, role="encoder")
    dec, m = fake_engine(tmp_path, role="decoder")
    assert trt_backend.find_graphs(str(tmp_path)) == (str(enc), str(dec))
    contract, role = trt_backend.read_contract(str(dec))
    assert role == "decoder" and contract.model_id == m.model_contract.model_id


class _Boom:
    def __init__(self, *a, **k):
        raise AssertionError("the engine must not be deserialised")


def _fake_stack(monkeypatch, trt_version, gpu):
    fake_trt = types.SimpleNamespace(Runtime=_Boom, Logger=_Boom)
    fake_cuda = types.SimpleNamespace()
    monkeypatch.setattr(trt_backend, "_import_gpu_stack", lambda: (fake_trt, fake_cuda))
    import samdeploy.trt.environment as envmod
    monkeypatch.setattr(envmod, "tensorrt_version", lambda: trt_version)
    monkeypatch.setattr(envmod, "gpu_info", lambda: gpu)


def test_mismatch_refused_before_deserialising(tmp_path, monkeypatch):
    dec, _ = fake_engine(tmp_path, role="decoder")
    _fake_stack(monkeypatch, "10.16.1.11", ("NVIDIA RTX A2000", "8.6", 6000, "2025.1"))
    with pytest.raises(EngineMismatchError, match="rebuild on this device"):
        trt_backend.open_graph(str(dec), "decoder")


def test_matching_engine_opens_lazily_with_profile_limits(tmp_path, monkeypatch):
    dec, _ = fake_engine(tmp_path, role="decoder")
    _fake_stack(monkeypatch, "10.3.0", (ORIN.gpu_name, ORIN.compute_capability, 7600, "2025.1"))
    b = trt_backend.open_graph(str(dec), "decoder", threads=2, providers=None)
    assert (b.max_batch, b.max_points) == (4, 6)  # from the manifest profile, nothing loaded yet
    assert b.input_names[:2] == (ENCODER_OUTPUT, DECODER_POINT_COORDS) and b.output_names == DECODER_OUTPUTS
    feeds = decoder_feeds(np.zeros((1, 256, 64, 64), np.float32), np.zeros((5, 2, 2), np.float32),
                          np.zeros((5, 2), np.float32), np.zeros((5, 1, 256, 256), np.float32), np.zeros(5, np.float32))
    from samdeploy.errors import InputError
    with pytest.raises(InputError, match="outside the engine profile"):
        b.run(feeds)  # checked before any GPU work
    assert b.describe()["precision"] == "fp16"
    b.close()
    b.close()  # idempotent


def test_role_mismatch(tmp_path, monkeypatch):
    enc, _ = fake_engine(tmp_path, role="encoder")
    with pytest.raises(ContractError, match="encoder engine"):
        trt_backend.open_graph(str(enc), "decoder")
