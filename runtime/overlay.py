"""Drawing and writing results: coloured mask overlays, prompt markers, mask PNGs, COCO RLE JSON (no torch).

The run-length encoding itself is :mod:`samdeploy.runtime.rle`."""

from __future__ import annotations

import os
from typing import Any, Optional, Sequence

import numpy as np

from .._io import write_bytes_atomic, write_json_atomic
from ..errors import InputError
from .rle import mask_to_rle

# Distinct, saturated colours (RGB); cycled for more masks.
_PALETTE = np.array(
    [
        (30, 144, 255), (255, 99, 71), (50, 205, 50), (255, 215, 0), (186, 85, 211), (0, 206, 209),
        (255, 140, 0), (220, 20, 60), (154, 205, 50), (65, 105, 225), (255, 105, 180), (0, 128, 128),
    ],
    dtype=np.uint8,
)
POSITIVE = (0, 230, 0)
NEGATIVE = (230, 0, 0)


def palette(n: int) -> np.ndarray:
    """``[n, 3]`` uint8 RGB colours."""
    return _PALETTE[np.arange(n) % len(_PALETTE)]


def id_colours(ids: Sequence[int]) -> np.ndarray:
    """``[len(ids), 3]`` uint8 RGB: a fixed colour per (object) id, the same on every frame."""
    return _PALETTE[np.asarray(list(ids), dtype=np.int64).reshape(-1) % len(_PALETTE)]


def draw_overlay(
    image: np.ndarray,
    masks: Optional[np.ndarray] = None,
    points: Optional[np.ndarray] = None,
    labels: Optional[np.ndarray] = None,
    boxes: Optional[np.ndarray] = None,
    captions: Optional[Sequence[str]] = None,
    alpha: float = 0.5,
    caption_at: Optional[Sequence[tuple[float, float]]] = None,
    colours: Optional[np.ndarray] = None,
) -> np.ndarray:
    """HxWx3 uint8 RGB image with masks ``[K,H,W]`` tinted and outlined, clicks (green = foreground,
    red = background) and boxes drawn. ``captions[k]`` is written at ``caption_at[k]`` (x, y), or
    at mask k's top-left corner. ``colours``: ``[K, 3]`` RGB per mask (default ``palette(K)``), e.g. one
    colour per tracked object id so an object keeps its colour from frame to frame."""
    import cv2

    out = np.array(image, dtype=np.uint8, copy=True)
    h, w = out.shape[:2]
    thick = max(1, round(max(h, w) / 400))
    if masks is not None and len(masks):
        masks = np.asarray(masks, dtype=bool).reshape(-1, h, w)
        cols = palette(len(masks)) if colours is None else np.asarray(colours, dtype=np.uint8).reshape(-1, 3)
        if len(cols) != len(masks):
            raise InputError(f"colours has {len(cols)} rows for {len(masks)} masks")
        # Paint larger masks first so small ones stay visible on top.
        order = np.argsort([-int(m.sum()) for m in masks])
        for i in order:
            m = masks[i]
            if not m.any():
                continue
            c = cols[i].astype(np.float32)
            out[m] = (out[m].astype(np.float32) * (1 - alpha) + c * alpha).astype(np.uint8)
            contours, _ = cv2.findContours(m.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            cv2.drawContours(out, contours, -1, tuple(int(v) for v in cols[i]), thick, cv2.LINE_AA)
        if captions:
            for i, text in enumerate(captions[: len(masks)]):
                if caption_at is not None and i < len(caption_at):
                    org = (int(caption_at[i][0]), int(caption_at[i][1]))
                else:
                    ys, xs = np.nonzero(masks[i])
                    if not len(xs):
                        continue
                    org = (int(xs.min()), int(ys.min()))
                _label(out, text, org, tuple(int(v) for v in cols[i]))
    if boxes is not None:
        for b in np.asarray(boxes, dtype=np.float64).reshape(-1, 4):
            p0 = (int(round(b[0])), int(round(b[1])))
            p1 = (int(round(b[2])), int(round(b[3])))
            cv2.rectangle(out, p0, p1, (0, 0, 0), thick + 2, cv2.LINE_AA)
            cv2.rectangle(out, p0, p1, (255, 255, 255), thick, cv2.LINE_AA)
    if points is not None:
        pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        lab = np.ones(len(pts)) if labels is None else np.asarray(labels).reshape(-1)
        r = max(3, thick * 4)
        for (x, y), l in zip(pts, lab):
            if l < 0:
                continue
            c = POSITIVE if l > 0 else NEGATIVE
            centre = (int(round(x)), int(round(y)))
            cv2.circle(out, centre, r + thick, (255, 255, 255), -1, cv2.LINE_AA)
            cv2.circle(out, centre, r, c, -1, cv2.LINE_AA)
    return out


def _label(img: np.ndarray, text: str, org: tuple[int, int], colour: tuple[int, int, int]) -> None:
    import cv2

    scale = max(0.4, max(img.shape[:2]) / 1600)
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    x = min(max(0, org[0]), max(0, img.shape[1] - tw - 4))
    y = max(th + 4, org[1])
    cv2.rectangle(img, (x, y - th - 4), (x + tw + 4, y + base), colour, -1)
    cv2.putText(img, text, (x + 2, y - 2), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 1, cv2.LINE_AA)


def write_png(path: str | os.PathLike, image: np.ndarray) -> None:
    """Write an RGB (HxWx3) or single-channel (HxW, bool/uint8) image as PNG, atomically."""
    import cv2

    arr = np.asarray(image)
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8) * 255
    if arr.ndim == 3 and arr.shape[2] == 3:
        arr = cv2.cvtColor(arr, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".png", arr)
    if not ok:
        raise InputError(f"could not encode {path} as PNG (shape {arr.shape}, dtype {arr.dtype})")
    write_bytes_atomic(path, buf.tobytes())


def mask_bbox_xywh(mask: np.ndarray) -> list[int]:
    ys, xs = np.nonzero(mask)
    if not len(xs):
        return [0, 0, 0, 0]
    return [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]


def write_rle_json(path: str | os.PathLike, records: list[dict[str, Any]], **info: Any) -> None:
    """``records``: dicts with a ``mask`` (HxW bool) plus any JSON-able fields; masks become COCO RLE."""
    anns = []
    for i, r in enumerate(records):
        m = np.asarray(r["mask"], dtype=bool)
        rec = {k: v for k, v in r.items() if k != "mask"}
        rec.setdefault("id", i)
        rec["segmentation"] = mask_to_rle(m)
        rec["area"] = int(m.sum())
        rec["bbox"] = mask_bbox_xywh(m)
        anns.append(rec)
    write_json_atomic(path, dict(info, annotations=anns))
