"""Fixtures for the TensorRT-area tests (trt/, doctor, docker/jetson). No GPU needed.

* ``trt_our_decoder``      -- our MobileSAM decoder.onnx (random weights) from ``samdeploy.export``
* ``fake_trt(seen)``       -- a FAKE tensorrt module for build_engine's Python flow (not a fixture)
* ``trt_official_decoder`` -- the official segment_anything ``SamOnnxModel`` decoder (test-only oracle),
                              with ``orig_im_size`` and OneHot/Tile, exported at opset 17
"""

from __future__ import annotations

import types
import warnings
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def trt_our_decoder(tmp_path_factory) -> Path:
    import torch

    from samdeploy.export.exporter import ExportOptions, export_model
    from samdeploy.export.source import ModelSource
    from samdeploy.models.build import random_model

    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("trt_ours")
    sam = random_model("mobile_sam", seed=0)
    export_model(sam, out, ModelSource(kind="random", variant="mobile_sam", seed=0), ExportOptions(graphs=("decoder",)))
    return out / "decoder.onnx"


@pytest.fixture(scope="session")
def trt_official_decoder(tmp_path_factory) -> Path:
    import torch
    from segment_anything.modeling import MaskDecoder, PromptEncoder, Sam, TwoWayTransformer
    from segment_anything.utils.onnx import SamOnnxModel

    class _NoEncoder(torch.nn.Module):  # SamOnnxModel only reads image_encoder.img_size
        img_size = 1024

    torch.manual_seed(0)
    sam = Sam(
        image_encoder=_NoEncoder(),
        prompt_encoder=PromptEncoder(embed_dim=256, image_embedding_size=(64, 64), input_image_size=(1024, 1024),
                                     mask_in_chans=16),
        mask_decoder=MaskDecoder(num_multimask_outputs=3,
                                 transformer=TwoWayTransformer(depth=2, embedding_dim=256, mlp_dim=2048, num_heads=8),
                                 transformer_dim=256, iou_head_depth=3, iou_head_hidden_dim=256),
    ).eval()
    model = SamOnnxModel(sam, return_single_mask=False)
    dummy = {
        "image_embeddings": torch.randn(1, 256, 64, 64),  # the official export's names (SamOnnxModel), not ours
        "point_coords": torch.randint(0, 1024, (1, 5, 2)).float(),
        "point_labels": torch.randint(0, 4, (1, 5)).float(),
        "mask_input": torch.randn(1, 1, 256, 256),
        "has_mask_input": torch.tensor([1.0]),  # the official export's names
        "orig_im_size": torch.tensor([1500.0, 2250.0]),
    }
    path = tmp_path_factory.mktemp("trt_official") / "official_decoder.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, tuple(dummy.values()), str(path), input_names=list(dummy),
                          output_names=["masks", "iou_predictions", "low_res_masks"],  # the official export's names
                          dynamic_axes={"point_coords": {1: "num_points"}, "point_labels": {1: "num_points"}},
                          opset_version=17, do_constant_folding=True, dynamo=False)
    return path


def decoder_feeds(batch: int = 3, points: int = 4, seed: int = 0):
    """Random but contract-shaped decoder inputs (float32)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    labels = np.tile(np.array([1, 0, 1, -1][:points] + [1] * max(0, points - 4), np.float32), (batch, 1))
    from samdeploy import contract

    return contract.decoder_feeds(
        rng.standard_normal((1, 256, 64, 64)).astype(np.float32),
        (rng.random((batch, points, 2)) * 1024).astype(np.float32),
        labels,
        np.zeros((batch, 1, 256, 256), np.float32),
        np.zeros(batch, np.float32),
    )


# ---- a FAKE TensorRT: enough of the Python API for build_engine's own logic (no TensorRT involved) ----
_LAYER_TYPES = {"LayerNormalization": "NORMALIZATION", "Softmax": "SOFTMAX", "MatMul": "MATRIX_MULTIPLY",
                "Gemm": "MATRIX_MULTIPLY", "Conv": "CONVOLUTION", "ConvTranspose": "DECONVOLUTION"}


def fake_trt(onnx_path_seen: list):
    """A FAKE ``tensorrt`` module: enough of the Python API for ``build_engine``'s own flow (parse ->
    layers named after ONNX nodes, flags, profile, serialize). Says nothing about real TensorRT."""
    import onnx

    ns = types.SimpleNamespace
    enum = lambda *names: ns(**{n: n for n in names})  # noqa: E731
    trt = ns(float32="float32", float16="float16",
             LayerType=enum("NORMALIZATION", "SOFTMAX", "MATRIX_MULTIPLY", "CONVOLUTION", "DECONVOLUTION", "ELEMENTWISE",
                            "SHUFFLE"),
             BuilderFlag=enum("FP16", "INT8", "TF32", "OBEY_PRECISION_CONSTRAINTS"),
             NetworkDefinitionCreationFlag=ns(STRONGLY_TYPED=0), MemoryPoolType=enum("WORKSPACE"))

    class Tensor:
        def __init__(self, name, dtype="float32"):
            self.name, self.dtype = name, dtype

    class Layer:
        def __init__(self, name, type_):
            self.name, self.type, self.precision, self._outs = name, type_, None, [Tensor(name + ":0")]
            self.num_outputs, self.output_types = 1, {}

        def get_output(self, j):
            return self._outs[j]

        def set_output_type(self, j, dtype):
            self.output_types[j] = dtype

    class Network:
        def __init__(self):
            self.layers, self.inputs, self.outputs = [], [], []
            self.num_layers = self.num_inputs = self.num_outputs = 0

        def get_layer(self, i):
            return self.layers[i]

        def get_input(self, i):
            return self.inputs[i]

        def get_output(self, i):
            return self.outputs[i]

    class Parser:
        num_errors = 0

        def __init__(self, network, logger):
            self.network = network

        def parse_from_file(self, path):  # one layer per ONNX node (+ a "<node>_1" helper for Softmax)
            onnx_path_seen.append(path)
            m = onnx.load(path, load_external_data=False)
            net = self.network
            for n in m.graph.node:
                if n.op_type == "Constant":
                    continue
                net.layers.append(Layer(n.name, _LAYER_TYPES.get(n.op_type, "ELEMENTWISE")))
                if n.op_type == "Softmax":
                    net.layers.append(Layer(n.name + "_1", "SHUFFLE"))
            inits = {i.name for i in m.graph.initializer}
            net.inputs = [Tensor(i.name) for i in m.graph.input if i.name not in inits]
            net.outputs = [Tensor(o.name) for o in m.graph.output]
            net.num_layers, net.num_inputs, net.num_outputs = len(net.layers), len(net.inputs), len(net.outputs)
            return True

    class Cache:
        def serialize(self):
            return b"timing"

    class Config:
        def __init__(self):
            self.flags, self.cleared = set(), set()

        def set_memory_pool_limit(self, pool, size):
            self.workspace = size

        def add_optimization_profile(self, profile):
            self.profile = profile

        def set_flag(self, f):
            self.flags.add(f)

        def clear_flag(self, f):
            self.cleared.add(f)

        def create_timing_cache(self, data):
            return Cache()

        def set_timing_cache(self, cache, ignore_mismatch):
            self.cache = cache

        def get_timing_cache(self):
            return Cache()

    class Profile:
        def __init__(self):
            self.shapes = {}

        def set_shape(self, name, mn, opt, mx):
            self.shapes[name] = (mn, opt, mx)

    class Builder:
        def __init__(self, logger):
            pass

        def create_network(self, flags):
            self.network = Network()
            return self.network

        def create_builder_config(self):
            self.config = Config()
            return self.config

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            return b"fake plan"

    trt.Logger = type("Logger", (), {"WARNING": 2, "__init__": lambda self, level: None})
    trt.Builder, trt.OnnxParser = Builder, Parser
    return trt
