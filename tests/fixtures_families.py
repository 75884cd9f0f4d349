"""Helpers shared by the per-family oracle tests (``test_family_*.py``, ``test_sam2_models.py``)."""

from __future__ import annotations

import numpy as np


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Mask IoU; two empty masks agree (1.0)."""
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def rel_l2(got, ref) -> float:
    got, ref = np.asarray(got, np.float64), np.asarray(ref, np.float64)
    return float(np.linalg.norm(got - ref) / np.linalg.norm(ref))


def prompt_suite(h: int, w: int, zero_token: bool = False) -> dict[str, dict]:
    """Predictor keyword arguments per case, placed relative to an h x w image (inside it at any
    aspect ratio, 1xN and Nx1 included). ``zero_token``: add EdgeSAM's label -2 case."""
    def pt(fx, fy):
        return [min(w - 1, fx * w), min(h - 1, fy * h)]

    box = np.array([0.1 * w, 0.15 * h, 0.75 * w, 0.9 * h])
    suite = {
        "click": {"point_coords": np.array([pt(0.45, 0.5)]), "point_labels": np.array([1])},
        "clicks_neg": {"point_coords": np.array([pt(0.3, 0.4), pt(0.7, 0.6), pt(0.5, 0.2)]),
                       "point_labels": np.array([1, 0, 1])},
        "box": {"box": box},
        "box_click": {"box": box, "point_coords": np.array([pt(0.6, 0.3)]), "point_labels": np.array([0])},
    }
    if zero_token:
        suite["label-2"] = {"point_coords": np.array([pt(0.45, 0.5), pt(0.2, 0.8)]), "point_labels": np.array([1, -2])}
    return suite


def sam2_config(name: str) -> str:
    """The sam2 package's hydra config of variant ``name`` (sam2.1_hiera_t -> configs/sam2.1/sam2.1_hiera_t.yaml)."""
    return ("configs/sam2.1/" if name.startswith("sam2.1") else "configs/sam2/") + name + ".yaml"


def sam2_oracle_on_meta(name: str):
    """The official SAM2Base of ``name`` on the meta device (hydra instantiate of its config)."""
    import torch

    import sam2.build_sam  # noqa: F401  (initialises hydra's config module)
    from hydra import compose
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    cfg = compose(config_name=sam2_config(name))
    OmegaConf.resolve(cfg)
    linspace = torch.linspace  # Hiera calls .item() on its drop-path schedule: keep that on the CPU
    torch.linspace = lambda *a, **k: linspace(*a, **{**k, "device": "cpu"})
    try:
        with torch.device("meta"):
            return instantiate(cfg.model, _recursive_=True)
    finally:
        torch.linspace = linspace
