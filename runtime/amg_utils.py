"""NumPy/OpenCV building blocks of segment-everything (no torch).

Each function reproduces one step of SAM's automatic mask generator (``segment_anything/utils/amg.py``)
with the same semantics, written for NumPy: point grids, crop boxes, stability score, mask boxes,
box NMS (torchvision ``batched_nms`` semantics), crop-edge filtering and small-region removal
(SAM's on the final masks; SAM2's in the low-res logits, ``fill_low_res_regions``), and SAM2's prompt
coordinate normalisation (``normalized_prompt_coords``).
Run-length encoding of the output masks is :mod:`samdeploy.runtime.rle` (pycocotools).
"""

from __future__ import annotations

import math
from itertools import product
from typing import Sequence

import numpy as np

# ---- prompts and crops --------------------------------------------------------------------------


def build_point_grid(n_per_side: int) -> np.ndarray:
    """``n*n`` points at the cell centres of [0,1]^2, as (x, y); row-major (y outer, x inner)."""
    if n_per_side < 1:
        from ..errors import InputError

        raise InputError(f"points per side must be >= 1 (got {n_per_side})")
    side = (np.arange(n_per_side, dtype=np.float64) + 0.5) / n_per_side
    xs = np.tile(side[None, :], (n_per_side, 1))
    ys = np.tile(side[:, None], (1, n_per_side))
    return np.stack([xs, ys], axis=-1).reshape(-1, 2)


def normalized_prompt_coords(coords: np.ndarray, original_hw: tuple[int, int], frame_hw: tuple[int, int]) -> np.ndarray:
    """(x, y) pixels of an ``original_hw`` image -> the stretched ``frame_hw`` prompt frame, with SAM2's
    arithmetic (``SAM2Transforms.transform_coords(normalize=True)``): float32 ``x / W`` and ``y / H``
    first, then times the frame size. Bit-identical to SAM2; multiplying by ``frame / W`` (SAM's
    ``apply_coords`` order) differs in the last bit for about half of all points."""
    c = np.array(coords, dtype=np.float32)  # a copy
    h, w = original_hw
    c[..., 0] = c[..., 0] / np.float32(w)
    c[..., 1] = c[..., 1] / np.float32(h)
    return c * np.asarray([frame_hw[1], frame_hw[0]], dtype=np.float32)


def build_all_layer_point_grids(n_per_side: int, n_layers: int, scale_per_layer: int) -> list[np.ndarray]:
    """One grid per crop layer; layer i has ``int(n / scale**i)`` points per side."""
    return [build_point_grid(int(n_per_side / (scale_per_layer**i))) for i in range(n_layers + 1)]


def generate_crop_boxes(im_hw: tuple[int, int], n_layers: int, overlap_ratio: float) -> tuple[list[list[int]], list[int]]:
    """Crop boxes (XYXY, ints) and their layer index: layer 0 is the whole image, layer i has
    (2^i)^2 overlapping crops whose overlap shrinks with the number of crops per side."""
    im_h, im_w = im_hw
    short_side = min(im_h, im_w)
    boxes: list[list[int]] = [[0, 0, im_w, im_h]]
    layers = [0]
    for i_layer in range(n_layers):
        n_side = 2 ** (i_layer + 1)
        overlap = int(overlap_ratio * short_side * (2 / n_side))
        crop_w = int(math.ceil((overlap * (n_side - 1) + im_w) / n_side))
        crop_h = int(math.ceil((overlap * (n_side - 1) + im_h) / n_side))
        x0s = [int((crop_w - overlap) * i) for i in range(n_side)]
        y0s = [int((crop_h - overlap) * i) for i in range(n_side)]
        for x0, y0 in product(x0s, y0s):  # x outer, like SAM
            boxes.append([x0, y0, min(x0 + crop_w, im_w), min(y0 + crop_h, im_h)])
            layers.append(i_layer + 1)
    return boxes, layers


# ---- per-mask measurements ------------------------------------------------------------------------


def stability_score(logits: np.ndarray, mask_threshold: float, offset: float) -> np.ndarray:
    """IoU between the masks thresholded at ``t+offset`` and ``t-offset`` over the last two axes.

    The high mask is contained in the low one, so IoU = |high| / |low|. Counts are exact integers
    and the ratio is a float32 division, as in SAM (a mask with an empty low mask gets NaN, which
    fails every threshold)."""
    high = np.count_nonzero(logits > (mask_threshold + offset), axis=(-2, -1))
    low = np.count_nonzero(logits > (mask_threshold - offset), axis=(-2, -1))
    with np.errstate(divide="ignore", invalid="ignore"):
        return high.astype(np.float32) / low.astype(np.float32)


def masks_to_boxes(masks: np.ndarray) -> np.ndarray:
    """Boolean masks [..., H, W] -> boxes [..., 4] XYXY of the outermost set pixels (inclusive
    indices, so a one-pixel mask at (x, y) is [x, y, x, y]); [0, 0, 0, 0] for empty masks."""
    masks = np.asarray(masks, dtype=bool)
    lead = masks.shape[:-2]
    h, w = masks.shape[-2:]
    m = masks.reshape(-1, h, w)
    out = np.zeros((m.shape[0], 4), dtype=np.int64)
    if m.size:
        rows = m.any(axis=2)  # [N, H]
        cols = m.any(axis=1)  # [N, W]
        nonempty = rows.any(axis=1)
        top = rows.argmax(axis=1)
        bottom = h - 1 - rows[:, ::-1].argmax(axis=1)
        left = cols.argmax(axis=1)
        right = w - 1 - cols[:, ::-1].argmax(axis=1)
        out[:] = np.stack([left, top, right, bottom], axis=1)
        out[~nonempty] = 0
    return out.reshape(*lead, 4)


def is_box_near_crop_edge(
    boxes_in_crop: np.ndarray, crop_box: Sequence[int], orig_box: Sequence[int], atol: float = 20.0
) -> np.ndarray:
    """True for boxes (XYXY, crop frame) within ``atol`` px of a crop edge that is not also an
    image edge: such masks are probably cut by the crop, the neighbouring crop sees them whole."""
    x0, y0 = crop_box[0], crop_box[1]
    boxes = np.asarray(boxes_in_crop, dtype=np.float32) + np.asarray([x0, y0, x0, y0], dtype=np.float32)
    crop = np.asarray(crop_box, dtype=np.float32)[None]
    orig = np.asarray(orig_box, dtype=np.float32)[None]
    near_crop = np.abs(boxes - crop) <= atol
    near_image = np.abs(boxes - orig) <= atol
    return np.any(near_crop & ~near_image, axis=1)


def box_xyxy_to_xywh(box: Sequence[float]) -> list[float]:
    x0, y0, x1, y1 = (float(v) for v in box)
    return [x0, y0, x1 - x0, y1 - y0]


# ---- non-maximum suppression -------------------------------------------------------------------------


def box_nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float, categories: np.ndarray | None = None) -> np.ndarray:
    """Greedy box NMS with torchvision ``batched_nms`` semantics.

    Boxes are XYXY (areas are ``(x1-x0)*(y1-y0)``, no +1). Candidates are visited by decreasing
    score (ties: lower index first); a box is dropped when its IoU with an already kept box of the
    same category is **greater** than ``iou_threshold``. Arithmetic is float32 like torchvision's
    CPU kernel, the comparison is against the threshold as a double. Returns the kept indices in
    visiting order (decreasing score)."""
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    scores = np.asarray(scores, dtype=np.float32).reshape(-1)
    n = boxes.shape[0]
    if n == 0:
        return np.zeros((0,), dtype=np.int64)
    if categories is not None:
        # Same trick as torchvision: shift each category far away so categories never overlap.
        cats = np.asarray(categories).reshape(-1).astype(np.float32)
        boxes = boxes + (cats * (boxes.max() + np.float32(1)))[:, None]
    order = np.argsort(-scores, kind="stable")
    x0, y0, x1, y1 = (boxes[order, i] for i in range(4))
    areas = (x1 - x0) * (y1 - y0)
    suppressed = np.zeros(n, dtype=bool)
    keep = []
    for i in range(n):
        if suppressed[i]:
            continue
        keep.append(order[i])
        rest = np.arange(i + 1, n)[~suppressed[i + 1 :]]
        if rest.size == 0:
            break
        w = np.maximum(np.float32(0), np.minimum(x1[i], x1[rest]) - np.maximum(x0[i], x0[rest]))
        h = np.maximum(np.float32(0), np.minimum(y1[i], y1[rest]) - np.maximum(y0[i], y0[rest]))
        inter = w * h
        iou = inter / (areas[i] + areas[rest] - inter)
        suppressed[rest[iou.astype(np.float64) > iou_threshold]] = True
    return np.asarray(keep, dtype=np.int64)


# ---- small regions ------------------------------------------------------------------------------------


def remove_small_regions(mask: np.ndarray, area_thresh: float, mode: str) -> tuple[np.ndarray, bool]:
    """Fill holes (``mode="holes"``) or drop islands (``mode="islands"``) smaller than
    ``area_thresh`` pixels, with 8-connectivity. Returns (mask, changed). When every island is
    small the largest one is kept, so a mask never becomes empty."""
    import cv2

    if mode not in ("holes", "islands"):
        raise ValueError(f"mode must be 'holes' or 'islands', got {mode!r}")
    holes = mode == "holes"
    mask = np.asarray(mask, dtype=bool)
    working = (mask ^ holes).astype(np.uint8)  # holes: components of the background
    n_labels, labels, stats, _ = cv2.connectedComponentsWithStats(working, connectivity=8)
    sizes = stats[1:, cv2.CC_STAT_AREA]
    small = np.flatnonzero(sizes < area_thresh) + 1
    if small.size == 0:
        return mask, False
    if holes:
        # Pixels of label 0 (the mask itself) and of small background components become the mask.
        fill = np.zeros(n_labels, dtype=bool)
        fill[0] = True
        fill[small] = True
    else:
        fill = np.ones(n_labels, dtype=bool)
        fill[0] = False
        fill[small] = False
        if not fill.any():
            fill[int(np.argmax(sizes)) + 1] = True
    return fill[labels], True


def fill_low_res_regions(logits: np.ndarray, max_area: float, threshold: float = 0.0) -> np.ndarray:
    """SAM2's small-region clean-up (``SAM2ImagePredictor(max_hole_area=A, max_sprinkle_area=A)``), done
    in the low-res logits ``[..., h, w]`` before they are upscaled: 8-connected components of
    ``logit <= threshold`` with at most ``max_area`` pixels (holes) are set to ``threshold + 10``,
    components of ``logit > threshold`` with at most ``max_area`` pixels (sprinkles) to
    ``threshold - 10``. Both are found on the input logits. Areas are low-res pixels and the bound is
    inclusive (SAM's full-resolution :func:`remove_small_regions` uses ``< area``). Returns a new array."""
    import cv2

    src = np.asarray(logits, dtype=np.float32)
    out = np.array(src, copy=True)
    if max_area <= 0 or src.size == 0:
        return out
    flat_src = src.reshape(-1, *src.shape[-2:])
    flat_out = out.reshape(flat_src.shape)
    for i, m in enumerate(flat_src):
        fg = m > np.float32(threshold)
        for region, value in ((~fg, threshold + 10.0), (fg, threshold - 10.0)):
            n, labels, stats, _ = cv2.connectedComponentsWithStats(region.view(np.uint8), connectivity=8)
            small = stats[:, cv2.CC_STAT_AREA] <= max_area
            small[0] = False  # label 0: the pixels outside the region
            if small.any():
                flat_out[i][small[labels]] = np.float32(value)
    return out
