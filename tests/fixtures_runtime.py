"""Fixtures for the runtime tests.

* ``fake_model_dir`` / :func:`write_fake_model`: a TINY encoder/decoder pair that follows the graph
  I/O of contract v1 (names, shapes, dynamic B/N) with the contract in its metadata. It computes
  something simple but prompt-dependent, so backend/CLI/error tests run in milliseconds without
  waiting for a real export. Never used for accuracy claims.
* Accuracy tests use the export engineer's session fixtures (``tests/fixtures_export.py``) and the
  official ``SamPredictor`` built by ``tests/fixtures_models.py``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from samdeploy.contract import (
    DECODER_HAS_MASK_INPUT, DECODER_IOU, DECODER_LOW_RES_MASKS, DECODER_MASK_INPUT, DECODER_POINT_COORDS,
    DECODER_POINT_LABELS, ENCODER_INPUT, ENCODER_OUTPUT,
)


def _fake_graphs(contract, size: int = 1024):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from samdeploy.contract import metadata_props

    rng = np.random.default_rng(0)
    f = TensorProto.FLOAT
    # encoder: image [1,3,S,S] -> AveragePool 16 -> 1x1 conv 3->256 -> [1,256,S/16,S/16]
    w = numpy_helper.from_array((rng.standard_normal((256, 3, 1, 1)) * 0.01).astype(np.float32), "w")
    enc = helper.make_graph(
        [
            helper.make_node("AveragePool", [ENCODER_INPUT], ["pooled"], kernel_shape=[16, 16], strides=[16, 16]),
            helper.make_node("Conv", ["pooled", "w"], [ENCODER_OUTPUT]),
        ],
        "fake_encoder",
        [helper.make_tensor_value_info("image", f, [1, 3, size, size])],
        [helper.make_tensor_value_info(ENCODER_OUTPUT, f, [1, 256, size // 16, size // 16])],
        [w],
    )
    # decoder: low_res[b,t] = upsample4(mean_c(emb)) + 0.01 * sum(coords[b]) * (t+1) + has[b] * mask_input[b]
    #          iou[b,t]    = mean over the 256x256 map of low_res[b,t]
    c = lambda name, arr: numpy_helper.from_array(np.asarray(arr), name)  # noqa: E731
    nodes = [
        helper.make_node("ReduceMean", [ENCODER_OUTPUT], ["emb_mean"], axes=[1], keepdims=1),
        helper.make_node("Resize", ["emb_mean", "", "scales"], ["base"], mode="nearest"),
        helper.make_node("ReduceSum", [DECODER_POINT_COORDS, "axes12"], ["csum"], keepdims=0),  # [B]
        helper.make_node("Mul", ["csum", "k001"], ["cs"]),
        helper.make_node("Reshape", ["cs", "shape_b111"], ["cs4"]),  # [B,1,1,1]
        helper.make_node("Mul", ["cs4", "tok"], ["per_tok"]),  # [B,4,1,1]
        helper.make_node("Reshape", [DECODER_HAS_MASK_INPUT, "shape_b111"], ["has4"]),
        helper.make_node("Mul", ["has4", DECODER_MASK_INPUT], ["mask_term"]),  # [B,1,256,256]
        helper.make_node("Add", ["base", "per_tok"], ["t1"]),
        helper.make_node("Add", ["t1", "mask_term"], [DECODER_LOW_RES_MASKS]),
        helper.make_node("ReduceMean", [DECODER_LOW_RES_MASKS], [DECODER_IOU], axes=[2, 3], keepdims=0),
        # point_labels must be consumed so it stays a graph input
        helper.make_node("ReduceSum", [DECODER_POINT_LABELS], ["lsum"], keepdims=0),
        helper.make_node("Mul", ["lsum", "zero"], ["lzero"]),
    ]
    dec = helper.make_graph(
        nodes,
        "fake_decoder",
        [
            helper.make_tensor_value_info(ENCODER_OUTPUT, f, [1, 256, 64, 64]),
            helper.make_tensor_value_info(DECODER_POINT_COORDS, f, ["B", "N", 2]),
            helper.make_tensor_value_info(DECODER_POINT_LABELS, f, ["B", "N"]),
            helper.make_tensor_value_info(DECODER_MASK_INPUT, f, ["B", 1, 256, 256]),
            helper.make_tensor_value_info(DECODER_HAS_MASK_INPUT, f, ["B"]),
        ],
        [
            helper.make_tensor_value_info(DECODER_IOU, f, ["B", 4]),
            helper.make_tensor_value_info(DECODER_LOW_RES_MASKS, f, ["B", 4, 256, 256]),
            helper.make_tensor_value_info("lzero", f, []),
        ],
        [
            c("scales", np.array([1, 1, 4, 4], np.float32)),
            c("axes12", np.array([1, 2], np.int64)),
            c("k001", np.array(0.01, np.float32)),
            c("shape_b111", np.array([-1, 1, 1, 1], np.int64)),
            c("tok", np.arange(1, 5, dtype=np.float32).reshape(1, 4, 1, 1)),
            c("zero", np.array(0.0, np.float32)),
        ],
    )
    out = []
    for g, role in ((enc, "encoder"), (dec, "decoder")):
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
        m.ir_version = 8
        for k, v in metadata_props(contract, role).items():
            p = m.metadata_props.add()
            p.key, p.value = k, v
        onnx.checker.check_model(m)
        out.append(m)
    return out


def fake_contract(weights: str = "fake:0", **kw):
    from samdeploy.contract import ModelContract

    return ModelContract(family=kw.pop("family", "mobile_sam"), variant=kw.pop("variant", "vit_t"),
                         weights_sha256=weights, **kw)


def write_fake_model(folder: str | Path, contract=None) -> Path:
    """Write encoder.onnx + decoder.onnx (tiny fake graphs, contract v1 I/O) into ``folder``."""
    import onnx

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    enc, dec = _fake_graphs(contract or fake_contract())
    onnx.save(enc, folder / "encoder.onnx")
    onnx.save(dec, folder / "decoder.onnx")
    write_fake_manifest(folder)
    return folder


def write_fake_manifest(folder: str | Path) -> Path:
    """A manifest.json naming encoder.onnx / decoder.onnx with their sizes and SHA-256 (what the
    runtime verifies); call it again after changing a graph on purpose."""
    import hashlib
    import json

    folder = Path(folder)
    files = {}
    for role in ("encoder", "decoder"):
        p = folder / f"{role}.onnx"
        files[role] = {"path": p.name, "size": p.stat().st_size, "sha256": hashlib.sha256(p.read_bytes()).hexdigest()}
    (folder / "manifest.json").write_text(json.dumps({"files": files}))
    return folder


@pytest.fixture(scope="session")
def fake_model_dir(tmp_path_factory) -> Path:
    return write_fake_model(tmp_path_factory.mktemp("fake_model"))


# Runs python with `import torch` (and the oracles) made impossible, to prove the runtime needs none.
NO_TORCH_PRELUDE = r"""
import sys, importlib.abc
class _Block(importlib.abc.MetaPathFinder):
    BLOCKED = ("torch", "torchvision", "segment_anything", "mobile_sam", "timm")
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in self.BLOCKED:
            raise ImportError(f"blocked for this test: {name}")
        return None
sys.meta_path.insert(0, _Block())
"""


def run_without_torch(code: str, timeout: float = 600) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-c", NO_TORCH_PRELUDE + code], capture_output=True, text=True,
                          timeout=timeout, env=env)
