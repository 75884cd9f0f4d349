"""Argument groups shared by several subcommands."""

from __future__ import annotations

import argparse
import os
from pathlib import Path


def add_reference_model_arguments(p: argparse.ArgumentParser) -> None:
    """How to rebuild the PyTorch model an export came from (check, calibrate)."""
    ref = p.add_argument_group("PyTorch model (default: what the export's manifest recorded)")
    ref.add_argument("--checkpoint", metavar="PATH", help="the checkpoint the graphs were exported from")
    ref.add_argument("--trust-pickle", action="store_true", help="allow pickled-object checkpoints (only files you trust)")
    ref.add_argument("--random-weights", action="store_true", help="seeded random weights (with --seed)")
    ref.add_argument("--seed", type=int, default=None, help="seed of --random-weights (default: the manifest's)")


def default_out_dir(image: str, suffix: str) -> Path:
    """``photo.jpg`` -> ``photo<suffix>`` beside it; ``sample:astronaut`` -> ``./astronaut<suffix>``."""
    from samdeploy.images import SAMPLE_PREFIX

    if str(image).startswith(SAMPLE_PREFIX):
        return Path(str(image)[len(SAMPLE_PREFIX):] + suffix)
    return Path(image).with_name(Path(image).stem + suffix)


def image_source(image: str) -> str:
    """What masks.json records as the image: a sample name as given, a file as an absolute path."""
    from samdeploy.images import SAMPLE_PREFIX

    return str(image) if str(image).startswith(SAMPLE_PREFIX) else os.path.abspath(image)


# What a random-weight run means, per command (said once per run, never per frame).
_RANDOM_WEIGHTS_NOTES = {
    "predict": "the masks are meaningless; the pipeline is real",
    "everything": "the decoder's IoU and stability scores are noise, so few or no masks pass the filters; "
                  "the pipeline is real",
    "stream": "masks are meaningless and box tracking may grow to the whole frame; the pipeline is real",
    "track": "masks and object scores are meaningless; the pipeline is real",
}


def run_identity(info: dict) -> dict:
    """Model, precision, backend and providers of a run, from ``Predictor.describe()``."""
    dec = info.get("decoder", {}) or {}
    return {
        "model": info.get("model_id"),
        "precision": info.get("precision", "FP32"),
        "backend": info.get("backend"),
        "providers": dec.get("providers") or [],
        "random_weights": bool(info.get("random_weights", False)),
        "score": info.get("score", "iou_head"),
    }


def identity_lines(identity: dict, command: str) -> list[str]:
    """``model ... [FP32 | onnxruntime CPUExecutionProvider]`` plus the random-weights note."""
    providers = ",".join(identity["providers"])
    lines = [f"model    {identity['model']}  [{identity['precision']} | {identity['backend']}"
             + (f" {providers}" if providers else "") + "]"
             + ("" if identity.get("score", "iou_head") == "iou_head" else f"  scores: {identity['score']}")]
    if identity["random_weights"]:
        lines.append(f"note     random weights (--random-weights export): {_RANDOM_WEIGHTS_NOTES[command]}")
    return lines
