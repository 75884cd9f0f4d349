"""Prompts for calibration (gradients of the task loss) and for the accuracy gate (no torch).

All coordinates are (x, y) pixels in the prompt frame (``contract.frame_size``, after the
longest-side resize, before padding), as the decoder contract expects; packing is the runtime's
``pack_prompts``. A prompt without a box gets SAM's padding point
``(0, 0, -1)`` appended (``contract.prompts.pad_point_when_no_box``). Prompts of one kind share a
point count, so each kind is one decoder batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..runtime.prompts import pack_prompts


@dataclass(frozen=True)
class PromptBatch:
    """B prompts of N points: coords [B,N,2] float32, labels [B,N] float32."""

    kind: str
    coords: np.ndarray
    labels: np.ndarray

    @property
    def size(self) -> int:
        return int(self.coords.shape[0])


def _pad(coords: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Clicks without a box -> the runtime's packing (SAM's padding point appended)."""
    return pack_prompts(coords, labels, None, coords.shape[0])


def _box_prompts(corners: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return pack_prompts(None, None, corners, corners.shape[0])


def _points(rng: np.random.Generator, n: int, hw: tuple[int, int]) -> np.ndarray:
    h, w = hw
    return np.stack([rng.uniform(0, w - 1, n), rng.uniform(0, h - 1, n)], axis=-1).astype(np.float32)


def _boxes(rng: np.random.Generator, n: int, hw: tuple[int, int]) -> np.ndarray:
    """[n, 2, 2] corners (x0,y0), (x1,y1): centres anywhere, sides 10-80 % of the image."""
    h, w = hw
    cx, cy = rng.uniform(0, w, n), rng.uniform(0, h, n)
    bw, bh = rng.uniform(0.1, 0.8, n) * w, rng.uniform(0.1, 0.8, n) * h
    x0, x1 = np.clip(cx - bw / 2, 0, w - 1), np.clip(cx + bw / 2, 0, w - 1)
    y0, y1 = np.clip(cy - bh / 2, 0, h - 1), np.clip(cy + bh / 2, 0, h - 1)
    return np.stack([np.stack([x0, y0], -1), np.stack([x1, y1], -1)], axis=1).astype(np.float32)


def sample_prompts(rng: np.random.Generator, hw: tuple[int, int], count: int) -> list[PromptBatch]:
    """``count`` random prompts inside the resized image ``hw``: about half single positive clicks,
    a quarter boxes, a quarter positive+negative click pairs (SAM's interactive use)."""
    count = max(int(count), 1)
    n_box = count // 4
    n_pair = count // 4
    n_click = count - n_box - n_pair
    out = []
    if n_click:
        c, lab = _pad(_points(rng, n_click, hw)[:, None, :], np.ones((n_click, 1), np.float32))
        out.append(PromptBatch("click", c, lab))
    if n_pair:
        pts = np.stack([_points(rng, n_pair, hw), _points(rng, n_pair, hw)], axis=1)
        c, lab = _pad(pts, np.tile(np.array([[1.0, 0.0]], np.float32), (n_pair, 1)))
        out.append(PromptBatch("click_pair", c, lab))
    if n_box:
        out.append(PromptBatch("box", *_box_prompts(_boxes(rng, n_box, hw))))
    return out


def grid_prompts(hw: tuple[int, int], per_side: int = 4, boxes: int = 4, seed: int = 0) -> list[PromptBatch]:
    """Deterministic evaluation prompts: a ``per_side`` x ``per_side`` grid of single clicks at cell
    centres, plus ``boxes`` seeded random boxes."""
    h, w = hw
    t = (np.arange(per_side) + 0.5) / per_side
    xs, ys = np.meshgrid(t * w, t * h)
    pts = np.stack([xs.ravel(), ys.ravel()], -1).astype(np.float32)
    c, lab = _pad(pts[:, None, :], np.ones((len(pts), 1), np.float32))
    out = [PromptBatch("grid_click", c, lab)]
    if boxes:
        rng = np.random.default_rng(seed)
        out.append(PromptBatch("box", *_box_prompts(_boxes(rng, boxes, hw))))
    return out


def low_res_valid(hw: tuple[int, int], frame_size: int, low_res: int) -> tuple[int, int]:
    """Rows/cols of the low-res mask that cover the image (the rest is padding); ``hw`` in the prompt frame."""
    f = low_res / frame_size
    return max(1, int(np.ceil(hw[0] * f))), max(1, int(np.ceil(hw[1] * f)))
