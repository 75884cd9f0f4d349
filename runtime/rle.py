"""COCO run-length encoding of binary masks, the one implementation of the package (no torch).

Encoding, decoding and areas are pycocotools' (a base dependency); this module adds what it lacks:

* JSON-able output: ``{"size": [h, w], "counts": str}`` (pycocotools returns ``bytes``);
* SAM's *uncompressed* RLE ``{"size": [h, w], "counts": [int, ...]}`` (``output_mode="uncompressed_rle"``
  of the mask generator), turned into the compressed form with ``pycocotools.mask.frPyObjects``;
* validation of untrusted RLEs. pycocotools' ``decode`` does not check that the runs cover exactly
  ``h*w`` pixels: short runs come back as uninitialised memory, and older releases write past the
  buffer when the runs are too long. So every RLE is checked here first, and a bad one raises
  :class:`~samdeploy.errors.InputError` instead of crashing inside pycocotools.

Runs are over the column-major (Fortran) pixel order and start with a (possibly empty) run of zeros,
as COCO defines them.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from ..errors import InputError

__all__ = ["mask_to_rle", "mask_to_uncompressed_rle", "compress_rle", "rle_to_mask", "rle_area"]

_HINT = "an RLE is {'size': [h, w], 'counts': <COCO string> or [run lengths summing to h*w]}"


def _mask_utils():
    from pycocotools import mask as mask_utils

    return mask_utils


class _quiet(warnings.catch_warnings):
    """pycocotools' NumPy-2 ``copy`` keyword DeprecationWarning is noise for our callers."""

    def __enter__(self):
        out = super().__enter__()
        warnings.simplefilter("ignore", DeprecationWarning)
        return out


# ---- encoding ---------------------------------------------------------------------------------------------


def mask_to_rle(mask: np.ndarray) -> dict[str, Any]:
    """Binary HxW mask -> compressed COCO RLE ``{"size": [h, w], "counts": str}`` (pycocotools'
    ``encode``, with ``counts`` as text so it serialises to JSON)."""
    m = np.asarray(mask)
    if m.ndim != 2:
        raise InputError(f"a mask to run-length encode must be 2-D (HxW), got shape {m.shape}")
    with _quiet():
        rle = _mask_utils().encode(np.asfortranarray(m.astype(bool).astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def mask_to_uncompressed_rle(mask: np.ndarray) -> dict[str, Any]:
    """Binary HxW mask -> uncompressed COCO RLE ``{"size": [h, w], "counts": [int, ...]}``
    (what SAM's ``mask_to_rle_pytorch`` returns; pycocotools has no encoder for this form)."""
    m = np.asarray(mask)
    if m.ndim != 2:
        raise InputError(f"a mask to run-length encode must be 2-D (HxW), got shape {m.shape}")
    h, w = m.shape
    flat = m.astype(bool).T.reshape(-1)
    if flat.size == 0:  # one empty run of zeros, as pycocotools encodes a 0-pixel mask
        return {"size": [h, w], "counts": [0]}
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    counts = np.diff(np.concatenate([[0], change, [flat.size]])).tolist()
    if flat[0]:
        counts.insert(0, 0)
    return {"size": [h, w], "counts": counts}


def compress_rle(rle: dict[str, Any]) -> dict[str, Any]:
    """Any valid RLE (uncompressed counts list, or compressed ``str``/``bytes``) -> compressed
    JSON-able ``{"size": [h, w], "counts": str}``; uncompressed ones go through ``frPyObjects``."""
    return _as_str(_validated(rle))


# ---- decoding ---------------------------------------------------------------------------------------------


def rle_to_mask(rle: dict[str, Any]) -> np.ndarray:
    """Compressed or uncompressed COCO RLE -> boolean HxW mask (pycocotools' ``decode``)."""
    coco = _validated(rle)
    with _quiet():
        return _mask_utils().decode(coco).astype(bool)


def rle_area(rle: dict[str, Any]) -> int:
    """Number of mask pixels of a compressed or uncompressed COCO RLE (pycocotools' ``area``)."""
    coco = _validated(rle)
    with _quiet():
        return int(_mask_utils().area(coco))


# ---- validation -------------------------------------------------------------------------------------------


def _as_str(coco: dict[str, Any]) -> dict[str, Any]:
    return {"size": list(coco["size"]), "counts": coco["counts"].decode("ascii")}


def _validated(rle: Any) -> dict[str, Any]:
    """Check ``rle`` and return it in pycocotools' compressed form ``{"size": [h, w], "counts": bytes}``."""
    if not isinstance(rle, dict) or "size" not in rle or "counts" not in rle:
        raise InputError(f"not a COCO RLE: expected a dict with 'size' and 'counts', got {_preview(rle)}", hint=_HINT)
    size = rle["size"]
    try:
        h, w = (int(v) for v in size)
        ok = all(float(v) == int(v) for v in size)
    except (TypeError, ValueError, OverflowError):
        ok = False
    if not ok or h < 0 or w < 0 or h * w >= 2**32:
        raise InputError(f"RLE size must be [h, w] with non-negative integers below 2^32 pixels, got {_preview(size)}",
                         hint=_HINT)
    counts = rle["counts"]
    if isinstance(counts, str):
        try:
            counts = counts.encode("ascii")
        except UnicodeEncodeError:
            raise InputError("RLE counts string is not ASCII (not a COCO compressed RLE)", hint=_HINT) from None
    if isinstance(counts, (bytes, bytearray)):
        total = _string_total(bytes(counts))
        coco = {"size": [h, w], "counts": bytes(counts)}
    else:
        try:
            arr = np.asarray(counts)
        except Exception:
            arr = np.asarray([None], dtype=object)
        if arr.ndim != 1 or (arr.size and (arr.dtype.kind not in "iu" and not _integral(arr))):
            raise InputError(f"RLE counts must be a COCO string or a list of integers, got {_preview(counts)}", hint=_HINT)
        if arr.size and (arr.astype(np.float64).min() < 0 or arr.astype(np.float64).max() >= 2**32):
            raise InputError("RLE counts must be non-negative run lengths below 2^32", hint=_HINT)
        arr = arr.astype(np.int64) if arr.size else np.zeros(0, np.int64)
        total = int(arr.sum())
        coco = None
    if total != h * w:
        raise InputError(f"RLE counts sum to {total}, expected {h * w} for size {h}x{w}", hint=_HINT)
    if coco is None:
        with _quiet():
            coco = _mask_utils().frPyObjects({"size": [h, w], "counts": arr.tolist()}, h, w)
        coco = {"size": [h, w], "counts": coco["counts"]}
    return coco


def _integral(arr: np.ndarray) -> bool:
    try:
        f = arr.astype(np.float64)
    except (TypeError, ValueError):
        return False
    return bool(np.all(np.isfinite(f)) and np.all(f == np.round(f)))


def _string_total(s: bytes) -> int:
    """Sum of the runs of a COCO compressed counts string, without decoding the mask.

    COCO's code: each run is a little-endian sequence of 5-bit groups, one character each
    (``chr(48 + group)``, bit 0x20 = "more follows", bit 0x10 of the last group = negative); from
    the fourth run on the value is a difference to the run two places back. Raises InputError on
    anything pycocotools could not have written."""
    b = np.frombuffer(s, dtype=np.uint8).astype(np.int64) - 48
    if b.size == 0:
        return 0
    if b.min() < 0 or b.max() > 63:
        raise InputError("RLE counts string has characters outside COCO's alphabet ('0'..'o'): not a COCO RLE",
                         hint=_HINT)
    last = (b & 0x20) == 0  # the last character of each run
    if not last[-1]:
        raise InputError("RLE counts string is truncated (its last run is unfinished)", hint=_HINT)
    run = np.concatenate([[0], np.cumsum(last)[:-1]])  # run index of every character
    starts = np.flatnonzero(np.concatenate([[True], last[:-1]]))
    k = np.arange(b.size) - starts[run]  # position of the character within its run
    if k.max() > 6:  # 7 groups = 35 bits already exceed any 32-bit run length
        raise InputError("RLE counts string holds a run length too large for COCO (more than 32 bits)", hint=_HINT)
    vals = np.bincount(run, weights=(b & 0x1F) << (5 * k)).astype(np.int64)  # exact: < 2^35
    neg = (b[last] & 0x10) != 0
    vals[neg] -= np.int64(1) << (5 * (k[last][neg] + 1))
    counts = vals.copy()
    # runs 3, 5, ... add run 1, 3, ...; runs 4, 6, ... add run 2, 4, ... (index > 2 is a difference)
    if counts.size > 3:
        counts[1::2] = np.cumsum(vals[1::2])
        counts[2::2] = np.cumsum(vals[2::2])
    if counts.min() < 0 or counts.max() >= 2**32:
        raise InputError("RLE counts string decodes to negative or oversized run lengths: not a valid COCO RLE",
                         hint=_HINT)
    return int(counts.sum())


def _preview(x: Any, n: int = 60) -> str:
    r = repr(x)
    return r if len(r) <= n else r[: n - 3] + "..."
