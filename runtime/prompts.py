"""Prompt validation and packing for decoder.onnx (NumPy only).

User-facing prompts follow ``segment_anything.SamPredictor``: points ``(x, y)`` in original-image
pixels with labels 1 (foreground), 0 (background) or -1 (ignore); boxes ``(x0, y0, x1, y1)``;
``mask_input`` = previous low-res logits ``[1, 256, 256]``. Everything is checked here so that bad
input becomes an :class:`~samdeploy.errors.InputError` that says what to fix, never a traceback
from inside ONNX Runtime.

Packing (contract v1, as SAM's prompt encoder does): per prompt, the clicks come first, then the
box as two corner points with labels 2 and 3; when no prompt has a box, a padding point
``(0, 0, -1)`` is appended. A prompt with no clicks and no box (``predict()`` with nothing, or
with only ``mask_input``) has no sparse tokens at all, as in SamPredictor; empty ``(0, 2)`` clicks
get the padding point, as in SamPredictor. Decoders that cannot run with N = 0 (contract-v1
exports, engines whose profile starts at N = 1) get that single padding point instead
(``no_points_ok=False``), which is close to but not exactly SAM's answer.

Value checks (done in float32, the dtype the decoder sees, so values that overflow to inf are
caught): coordinates must lie in the original image frame ``x in [0, W]``, ``y in [0, H]`` unless
``allow_outside=True`` (SAM itself accepts outside points); even then they must stay within
``OUTSIDE_MARGIN`` image sizes of the frame. ``mask_input`` logits must satisfy
``|v| <= PromptLimits.max_abs_mask_logit``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from ..errors import InputError

USER_LABELS = (-1, 0, 1)
# With allow_outside=True, coordinates may lie up to this many image widths/heights outside the frame.
OUTSIDE_MARGIN = 10.0


@dataclass(frozen=True)
class PromptLimits:
    """Upper bounds that protect the device from runaway requests (configurable on the Predictor)."""

    max_points: int = 64  # clicks per prompt (box corners and the padding point not counted)
    max_prompts: int = 4096  # prompts per predict_batch() call (decoded in chunks of max_batch)
    max_abs_mask_logit: float = 1e4  # |mask_input| bound (SAM's low-res logits are about +-50)


def _as_float_array(x: Any, what: str) -> np.ndarray:
    """``x`` as float64, checked finite *after* the cast to float32 (what the decoder receives)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", getattr(np, "exceptions", np).ComplexWarning)
            arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError, OverflowError, getattr(np, "exceptions", np).ComplexWarning):
        raise InputError(f"{what} must be numeric, real numbers (got {type(x).__name__})", hint=f"pass {what} as a NumPy array of numbers") from None
    with np.errstate(over="ignore", invalid="ignore"):
        finite = np.isfinite(arr.astype(np.float32)).all()
    if not finite:
        raise InputError(
            f"{what} contains NaN or inf (or values too large for float32)",
            hint=f"remove non-finite or out-of-range values from {what}",
        )
    return arr


def _frame_bounds(image_size: tuple[int, int], allow_outside: bool) -> tuple[float, float, float, float]:
    h, w = float(image_size[0]), float(image_size[1])
    if not allow_outside:
        return 0.0, 0.0, w, h
    return -OUTSIDE_MARGIN * w, -OUTSIDE_MARGIN * h, (1 + OUTSIDE_MARGIN) * w, (1 + OUTSIDE_MARGIN) * h


def _check_in_frame(xy: np.ndarray, image_size: Optional[tuple[int, int]], allow_outside: bool, what: str) -> None:
    """``xy [..., 2]`` (x, y) pixels inside the image frame (closed edges)."""
    if image_size is None or xy.size == 0:
        return
    x0, y0, x1, y1 = _frame_bounds(image_size, allow_outside)
    x, y = xy[..., 0], xy[..., 1]
    bad = (x < x0) | (x > x1) | (y < y0) | (y > y1)
    if bad.any():
        first = xy[np.unravel_index(int(np.flatnonzero(bad)[0]), bad.shape)].tolist()
        h, w = image_size
        if allow_outside:
            raise InputError(
                f"{what} has a coordinate {first} more than {OUTSIDE_MARGIN:g} image sizes outside the "
                f"{w}x{h} (WxH) image",
                hint="coordinates are (x, y) pixels of the original image",
            )
        raise InputError(
            f"{what} has a coordinate {first} outside the {w}x{h} (WxH) image (x must be in [0, {w}], y in [0, {h}])",
            hint="coordinates are (x, y) pixels of the original image; pass allow_outside_points=True to the "
            "Predictor to accept points outside the image as SAM does",
        )


def check_points(
    point_coords: Any,
    point_labels: Any,
    *,
    batched: bool,
    limits: PromptLimits = PromptLimits(),
    image_size: Optional[tuple[int, int]] = None,
    allow_outside: bool = False,
    labels_allowed: tuple[int, ...] = USER_LABELS,
) -> tuple[Optional[np.ndarray], Optional[np.ndarray]]:
    """Validate clicks. Returns ``(coords [K,N,2] float64, labels [K,N] float32)`` or ``(None, None)``.

    ``batched=False`` expects ``[N,2]`` / ``[N]`` (K = 1); ``batched=True`` expects ``[K,N,2]`` / ``[K,N]``
    (K = 0 and N = 0 are returned as empty arrays, also unbatched: SamPredictor pads empty clicks).
    ``labels_allowed``: the model's click labels (``contract.prompts.user_labels``).
    ``image_size`` = original (H, W): coordinates must lie in ``[0, W] x [0, H]`` unless ``allow_outside``."""
    if point_coords is None and point_labels is None:
        return None, None
    if point_coords is None or point_labels is None:
        raise InputError(
            "point_coords and point_labels must be given together",
            hint="pass one label per point: 1 = foreground, 0 = background",
        )
    coords = _as_float_array(point_coords, "point_coords")
    labels = _as_float_array(point_labels, "point_labels")
    want_c, want_l = ("[K, N, 2]", "[K, N]") if batched else ("[N, 2]", "[N]")
    if not batched:
        if coords.ndim != 2 or coords.shape[-1] != 2:
            raise InputError(f"point_coords has shape {coords.shape}; expected {want_c} (x, y) pixels",
                             hint="use predict_batch() for several prompts at once")
        coords, labels = coords[None], labels[None] if labels.ndim == 1 else labels
    if coords.ndim != 3 or coords.shape[-1] != 2:
        raise InputError(f"point_coords has shape {np.shape(point_coords)}; expected {want_c} (x, y) pixels")
    if labels.shape != coords.shape[:2]:
        raise InputError(
            f"point_labels has shape {np.shape(point_labels)} but point_coords has shape {np.shape(point_coords)}; "
            f"expected {want_l}",
            hint="give exactly one label per point",
        )
    bad = ~np.isin(labels, labels_allowed)
    if bad.any():
        extra = " or -2 (zero token)" if -2 in labels_allowed else ""
        raise InputError(
            f"point_labels must be 1 (foreground), 0 (background), -1 (ignore){extra}; got {np.unique(labels[bad]).tolist()}",
            hint="boxes are passed with box=..., not as labels 2/3",
        )
    if coords.shape[1] > limits.max_points:
        raise InputError(
            f"{coords.shape[1]} points per prompt exceeds the limit of {limits.max_points}",
            hint="raise the Predictor's max_points, or pass fewer clicks",
        )
    _check_in_frame(coords, image_size, allow_outside, "point_coords")
    return coords, labels.astype(np.float32)


def check_boxes(
    box: Any, *, batched: bool, image_size: Optional[tuple[int, int]] = None, allow_outside: bool = False
) -> Optional[np.ndarray]:
    """Validate boxes ``(x0, y0, x1, y1)``. Returns ``[K, 4]`` float64 (K may be 0 when batched) or ``None``.

    ``image_size`` = original (H, W): corners must lie in ``[0, W] x [0, H]`` unless ``allow_outside``."""
    if box is None:
        return None
    arr = _as_float_array(box, "box")
    if not batched:
        if arr.shape not in ((4,), (1, 4)):
            raise InputError(
                f"box has shape {arr.shape}; expected [4] = (x0, y0, x1, y1)",
                hint="use predict_batch(boxes=[K, 4]) for several boxes",
            )
        arr = arr.reshape(1, 4)
    elif arr.ndim != 2 or arr.shape[1] != 4:
        raise InputError(f"boxes have shape {arr.shape}; expected [K, 4] = (x0, y0, x1, y1) per box")
    if arr.shape[0] == 0:
        return arr
    flipped = (arr[:, 2] < arr[:, 0]) | (arr[:, 3] < arr[:, 1])
    if flipped.any():
        i = int(np.flatnonzero(flipped)[0])
        raise InputError(
            f"box {i} = {arr[i].tolist()} has x1 < x0 or y1 < y0",
            hint="boxes are (x0, y0, x1, y1) with the top-left corner first",
        )
    _check_in_frame(arr.reshape(-1, 2, 2), image_size, allow_outside, "box")
    return arr


def check_mask_input(
    mask_input: Any, *, batched: bool, k: int, size: int = 256, limits: PromptLimits = PromptLimits()
) -> Optional[np.ndarray]:
    """Validate previous low-res logits. Returns ``[K, 1, size, size]`` float32 or ``None``."""
    if mask_input is None:
        return None
    arr = _as_float_array(mask_input, "mask_input").astype(np.float32)
    if arr.size and float(np.abs(arr).max()) > limits.max_abs_mask_logit:
        raise InputError(
            f"mask_input has values up to {float(np.abs(arr).max()):.3g}; low-res logits must satisfy "
            f"|v| <= {limits.max_abs_mask_logit:g}",
            hint="pass low_res_logits from an earlier predict() call (not a scaled binary mask)",
        )
    if not batched:
        if arr.shape in ((size, size), (1, size, size), (1, 1, size, size)):
            return np.ascontiguousarray(arr.reshape(1, 1, size, size))
        raise InputError(
            f"mask_input has shape {arr.shape}; expected [1, {size}, {size}] (low-res logits from a previous predict)",
            hint="pass low_res_logits[i][None] from an earlier predict() call",
        )
    if arr.shape in ((k, size, size), (k, 1, size, size)):
        return np.ascontiguousarray(arr.reshape(k, 1, size, size))
    raise InputError(f"mask_input has shape {arr.shape}; expected [{k}, 1, {size}, {size}] (one per prompt)")


def pack_prompts(
    coords: Optional[np.ndarray],
    labels: Optional[np.ndarray],
    box_corners: Optional[np.ndarray],
    k: int,
    pad_point_when_no_box: bool = True,
    no_points_ok: bool = True,
    box_first: bool = False,
    pad_point_always: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Build decoder ``point_coords [K, N', 2]`` and ``point_labels [K, N']`` (float32).

    ``coords``: clicks already in the encoder-input frame ``[K, N, 2]``; ``box_corners``: ``[K, 2, 2]``
    in the same frame. Order and padding follow SAM's prompt encoder (clicks, box TL=2, box BR=3;
    a ``(0, 0, -1)`` padding point when there is no box, also after empty ``[K, 0, 2]`` clicks).
    ``coords=None`` and no box (mask only, or nothing) gives N = 0 like SAM; ``no_points_ok=False``
    (a decoder that needs N >= 1) gives the single padding point instead. SAM2 (``box_first``,
    ``pad_point_always``): box corners, then clicks, then the padding point whenever there is any point."""
    parts_c: list[np.ndarray] = []
    parts_l: list[np.ndarray] = []
    box = None if box_corners is None else (np.asarray(box_corners, np.float32).reshape(k, 2, 2),
                                            np.broadcast_to(np.array([2.0, 3.0], np.float32), (k, 2)))
    if box is not None and box_first:
        parts_c.append(box[0])
        parts_l.append(box[1])
    if coords is not None:
        parts_c.append(np.asarray(coords, np.float32))
        parts_l.append(np.asarray(labels, np.float32))
    if box is not None and not box_first:
        parts_c.append(box[0])
        parts_l.append(box[1])
    if pad_point_always and (coords is not None or box is not None):
        parts_c.append(np.zeros((k, 1, 2), np.float32))
        parts_l.append(np.full((k, 1), -1.0, np.float32))
    elif box is None and pad_point_when_no_box and coords is not None:
        parts_c.append(np.zeros((k, 1, 2), np.float32))
        parts_l.append(np.full((k, 1), -1.0, np.float32))
    if not no_points_ok and sum(c.shape[1] for c in parts_c) == 0:
        parts_c = [np.zeros((k, 1, 2), np.float32)]
        parts_l = [np.full((k, 1), -1.0, np.float32)]
    if not parts_c:
        return np.zeros((k, 0, 2), np.float32), np.zeros((k, 0), np.float32)
    return (
        np.ascontiguousarray(np.concatenate(parts_c, axis=1)),
        np.ascontiguousarray(np.concatenate(parts_l, axis=1)),
    )


def check_decoder_points(contract: Any, n: int) -> None:
    """Refuse a packed prompt of ``n`` decoder points (clicks + box corners) that the decoder would
    truncate (contract ``prompts.max_decoder_points``; EfficientSAM reads exactly 6 and drops the rest,
    which would silently lose clicks or a box corner)."""
    limit = getattr(contract.prompts, "max_decoder_points", None)
    if limit is not None and n > int(limit):
        raise InputError(
            f"{n} decoder points per prompt (the clicks, plus 2 corners for a box) exceed the {int(limit)} "
            f"this {contract.family} decoder reads (it would drop the rest)",
            hint=f"pass at most {int(limit)} clicks, or {int(limit) - 2} clicks with a box",
        )


def pack_for(contract: Any, coords: Optional[np.ndarray], labels: Optional[np.ndarray], box_corners: Optional[np.ndarray],
             k: int, no_points_ok: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """:func:`pack_prompts` with the packing rules of ``contract.prompts`` (SAM: clicks, box, pad when
    no box; SAM2: box, clicks, pad always). The one packer of runtime, check and calibration."""
    p = contract.prompts
    return pack_prompts(coords, labels, box_corners, k, p.pad_point_when_no_box, no_points_ok,
                        box_first=p.box_first, pad_point_always=p.pad_point_always)
