"""Fixtures for the TensorRT-area tests (trt/, doctor, docker/jetson). No GPU needed.

* ``trt_our_decoder``      -- our MobileSAM decoder.onnx (random weights) from ``samdeploy.export``
* ``trt_official_decoder`` -- the official segment_anything ``SamOnnxModel`` decoder (test-only oracle),
                              with ``orig_im_size`` and OneHot/Tile, exported at opset 17
"""

from __future__ import annotations

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
        "image_embeddings": torch.randn(1, 256, 64, 64),
        "point_coords": torch.randint(0, 1024, (1, 5, 2)).float(),
        "point_labels": torch.randint(0, 4, (1, 5)).float(),
        "mask_input": torch.randn(1, 1, 256, 256),
        "has_mask_input": torch.tensor([1.0]),
        "orig_im_size": torch.tensor([1500.0, 2250.0]),
    }
    path = tmp_path_factory.mktemp("trt_official") / "official_decoder.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, tuple(dummy.values()), str(path), input_names=list(dummy),
                          output_names=["masks", "iou_predictions", "low_res_masks"],
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
