"""Fixtures for the export and check tests, shared with the runtime / calibration / TensorRT tests.

Session-scoped factories (each export runs at most once per test session):

    exported_model_dir(variant="mobile_sam", seed=0, realistic=True, graphs=("encoder", "decoder"),
                       encoder_batch=1) -> Path
        `samdeploy export` of ``random_model(variant, seed, realistic)``: the zoo's seeded weights.
        ``realistic=True`` (the zoo default) rescales the decoder output layers so mask logits span
        about +-20 like a trained SAM -- use it whenever thresholded masks / IoU are judged.
        The directory holds encoder.onnx, decoder.onnx, manifest.json; treat it as read-only
        (copy it with ``copy_export`` before modifying anything).
    raw_exported_model_dir(variant="mobile_sam", seed=0) -> Path
        the same with raw random weights (mask logits about +-0.4; IoU is noise-dominated there).
    checkpoint_export_dir(variant="mobile_sam") -> (Path export dir, Path checkpoint, official model)
        the OFFICIAL model (oracle package) with seeded weights saved as an official checkpoint
        (fixtures_models.official_checkpoint_factory) and exported through ``--checkpoint``.
    reference_model(variant="mobile_sam", seed=0, realistic=True) -> samdeploy Sam (eval), cached.

Helpers: ``ort_session(path)``, ``copy_export(src, dst)``, ``export_random(variant, out, ...)``.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable

import numpy as np
import pytest


def export_random(variant: str, out: str | Path, seed: int = 0, realistic: bool = True, **options) -> Path:
    """Export a seeded random model into ``out`` (not cached)."""
    from samdeploy.export.exporter import ExportOptions, export_model
    from samdeploy.export.source import load_source, random_source

    src = random_source(variant, seed, realistic=realistic)
    export_model(load_source(src), out, src, ExportOptions(**options))
    return Path(out)


def copy_export(src: str | Path, dst: str | Path) -> Path:
    """A writable copy of an export directory."""
    shutil.copytree(src, dst)
    return Path(dst)


def ort_session(path: str | Path, threads: int = 2):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


@pytest.fixture(scope="session")
def reference_model() -> Callable[..., object]:
    from samdeploy.models.build import random_model

    cache: dict[tuple, object] = {}

    def make(variant: str = "mobile_sam", seed: int = 0, realistic: bool = True):
        key = (variant, seed, realistic)
        if key not in cache:
            cache[key] = random_model(variant, seed=seed, realistic=realistic)
        return cache[key]

    return make


@pytest.fixture(scope="session")
def exported_model_dir(tmp_path_factory, reference_model) -> Callable[..., Path]:
    from samdeploy.export.exporter import ExportOptions, export_model
    from samdeploy.export.source import random_source

    cache: dict[tuple, Path] = {}

    def make(
        variant: str = "mobile_sam",
        seed: int = 0,
        realistic: bool = True,
        graphs: tuple[str, ...] = ("encoder", "decoder"),
        encoder_batch: int | None = 1,
    ) -> Path:
        key = (variant, seed, realistic, tuple(graphs), encoder_batch)
        if key not in cache:
            name = f"{variant}-s{seed}{'' if realistic else '-raw'}-{'+'.join(graphs)}-b{encoder_batch or 'dyn'}"
            out = tmp_path_factory.mktemp("exports") / name
            src = random_source(variant, seed, realistic=realistic)
            export_model(reference_model(variant, seed, realistic), out, src,
                         ExportOptions(graphs=tuple(graphs), encoder_batch=encoder_batch))
            cache[key] = out
        return cache[key]

    return make


@pytest.fixture(scope="session")
def raw_exported_model_dir(exported_model_dir) -> Callable[..., Path]:
    def make(variant: str = "mobile_sam", seed: int = 0) -> Path:
        return exported_model_dir(variant, seed, realistic=False)

    return make


@pytest.fixture(scope="session")
def checkpoint_export_dir(tmp_path_factory, official_checkpoint_factory) -> Callable[..., tuple]:
    from samdeploy.export.exporter import ExportOptions, export_model
    from samdeploy.export.source import checkpoint_source, load_source, resolved

    cache: dict[tuple, tuple] = {}

    def make(variant: str = "mobile_sam", graphs: tuple[str, ...] = ("encoder", "decoder")):
        key = (variant, tuple(graphs))
        if key not in cache:
            ckpt, official = official_checkpoint_factory(variant)
            out = tmp_path_factory.mktemp("ckpt_exports") / f"{variant}-{'+'.join(graphs)}"
            src = checkpoint_source(ckpt, variant if variant == "tinysam" else "auto")
            sam = load_source(src)
            export_model(sam, out, resolved(src, sam), ExportOptions(graphs=tuple(graphs)))
            cache[key] = (out, Path(ckpt), official)
        return cache[key]

    return make


def decoder_feeds(rng: np.random.Generator, embedding: np.ndarray, b: int, n: int, with_mask: bool, size: float = 1024.0) -> dict[str, np.ndarray]:
    """Random but valid decoder inputs: B prompts of N points (labels -1..3), optional mask input."""
    from samdeploy import contract

    return contract.decoder_feeds(
        np.ascontiguousarray(embedding, np.float32),
        (rng.random((b, n, 2)) * size).astype(np.float32),
        rng.integers(-1, 4, size=(b, n)).astype(np.float32),
        (rng.normal(size=(b, 1, 256, 256)) * 8.0).astype(np.float32) if with_mask else np.zeros((b, 1, 256, 256), np.float32),
        np.full(b, 1.0 if with_mask else 0.0, np.float32),
    )
