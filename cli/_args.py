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
