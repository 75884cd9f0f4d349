"""samdeploy.runtime.rle (the one COCO RLE of the package) vs pycocotools as the independent reference:
round trips on random and edge-case masks, and hostile RLEs rejected with InputError."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from samdeploy.errors import InputError
from samdeploy.runtime import rle as R

SHAPES = [(37, 53), (1, 1), (1, 29), (29, 1), (64, 64), (300, 411), (0, 5), (5, 0), (0, 0)]


def _masks():
    rng = np.random.default_rng(42)
    for shape in SHAPES:
        yield f"{shape} empty", np.zeros(shape, bool)
        yield f"{shape} full", np.ones(shape, bool)
        for p in (0.02, 0.5, 0.98):
            yield f"{shape} random p={p}", rng.random(shape) < p
        blob = np.zeros(shape, bool)
        blob[shape[0] // 4: 3 * shape[0] // 4 + 1, shape[1] // 3:] = True
        yield f"{shape} blob", blob
        if shape[0] and shape[1]:
            first = np.zeros(shape, bool)
            first[0, 0] = True  # the RLE starts with an empty run of zeros
            yield f"{shape} first pixel", first
            last = np.zeros(shape, bool)
            last[-1, -1] = True
            yield f"{shape} last pixel", last


def _ref():
    from pycocotools import mask as mask_utils

    return mask_utils


def _quiet_decode(coco):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return _ref().decode(coco)


@pytest.mark.parametrize("name,m", list(_masks()), ids=[n for n, _ in _masks()])
def test_round_trip_matches_pycocotools(name, m):
    mask_utils = _ref()
    ref = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
    ours = R.mask_to_rle(m)
    # encode: byte-identical to pycocotools, JSON-able
    assert ours == {"size": [int(v) for v in ref["size"]], "counts": ref["counts"].decode("ascii")}
    assert isinstance(ours["counts"], str) and all(isinstance(v, int) for v in ours["size"])
    # decode: ours and pycocotools give the mask back
    back = R.rle_to_mask(ours)
    assert back.dtype == np.bool_ and back.shape == m.shape
    np.testing.assert_array_equal(back, m)
    np.testing.assert_array_equal(_quiet_decode({"size": ours["size"], "counts": ours["counts"].encode()}), m)
    np.testing.assert_array_equal(R.rle_to_mask({"size": ours["size"], "counts": ours["counts"].encode()}), m)  # bytes too
    # uncompressed form: pycocotools' frPyObjects compresses it to the same string
    unc = R.mask_to_uncompressed_rle(m)
    assert sum(unc["counts"]) == m.size and unc["size"] == list(m.shape)
    assert R.compress_rle(unc) == ours
    assert mask_utils.frPyObjects(unc, *unc["size"])["counts"].decode() == ours["counts"]
    np.testing.assert_array_equal(R.rle_to_mask(unc), m)
    # area
    assert R.rle_area(ours) == R.rle_area(unc) == int(m.sum()) == int(mask_utils.area(ref))
    assert R.compress_rle(ours) == ours


def test_no_numpy2_deprecation_warning_leaks():
    m = np.random.default_rng(0).random((20, 30)) > 0.5
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = R.mask_to_rle(m)
        R.rle_to_mask(r)
        R.rle_area(r)
        R.compress_rle(R.mask_to_uncompressed_rle(m))


def test_accepts_bool_uint8_and_non_contiguous_masks():
    m = np.random.default_rng(1).random((40, 60)) > 0.5
    want = R.mask_to_rle(m)
    assert R.mask_to_rle(m.astype(np.uint8) * 255) == want
    assert R.mask_to_rle(np.ascontiguousarray(m.T).T) == want  # Fortran-ordered view
    big = np.zeros((80, 120), bool)
    big[::2, ::2] = m
    assert R.mask_to_rle(big[::2, ::2]) == want  # strided view
    with pytest.raises(InputError, match="2-D"):
        R.mask_to_rle(np.zeros((2, 3, 4), bool))


def _valid():
    m = np.zeros((4, 5), bool)
    m[1:3, 1:4] = True
    return R.mask_to_rle(m)  # {"size": [4, 5], "counts": "5220003"}-like


@pytest.mark.parametrize("rle,match", [
    ({"size": [40, 50], "counts": None}, "COCO string or a list"),
    ("not a dict", "not a COCO RLE"),
    ({"counts": "0"}, "not a COCO RLE"),
    ({"size": [4], "counts": "0"}, "RLE size"),
    ({"size": [-1, 5], "counts": ""}, "RLE size"),
    ({"size": [2.5, 2], "counts": ""}, "RLE size"),
    ({"size": "ab", "counts": ""}, "RLE size"),
    ({"size": [4, 5], "counts": [1, 2]}, "sum to 3, expected 20"),
    ({"size": [4, 5], "counts": [10, 11]}, "sum to 21, expected 20"),
    ({"size": [4, 5], "counts": [-1, 21]}, "non-negative"),
    ({"size": [4, 5], "counts": [2 ** 70]}, "non-negative"),
    ({"size": [4, 5], "counts": [1.5, 18.5]}, "list of integers"),
    ({"size": [4, 5], "counts": ["a"]}, "list of integers"),
    ({"size": [4, 5], "counts": [[20]]}, "list of integers"),
    ({"size": [4, 5], "counts": "\x01\xff!!"}, "not ASCII|alphabet"),
    ({"size": [4, 5], "counts": "hello world"}, "alphabet"),
    ({"size": [4, 5], "counts": "ü"}, "not ASCII"),
    ({"size": [2, 2], "counts": "4\\"}, "truncated"),
    ({"size": [2, 2], "counts": "ooooooooooo0"}, "too large"),
    ({"size": [4, 5], "counts": "0:0"}, "negative|expected 20"),
])
def test_hostile_rles_raise_input_error(rle, match):
    for fn in (R.rle_to_mask, R.rle_area, R.compress_rle):
        with pytest.raises(InputError, match=match):
            fn(rle)


def test_counts_total_mismatch_in_compressed_strings():
    """pycocotools' decode alone would return uninitialised memory for short runs (and raise or, in
    older releases, overflow for long ones); we raise InputError naming both sums."""
    good = _valid()
    assert R.rle_to_mask(good).sum() == 6
    with pytest.raises(InputError, match="sum to 20, expected 2000 for size 40x50"):
        R.rle_to_mask({"size": [40, 50], "counts": good["counts"]})
    with pytest.raises(InputError, match="sum to 20, expected 12 for size 3x4"):
        R.rle_to_mask({"size": [3, 4], "counts": good["counts"]})
    # a string pycocotools itself writes for counts whose sum is off by one
    mask_utils = _ref()
    for counts in ([5, 6, 10], [5, 6, 8]):
        s = mask_utils.frPyObjects({"size": [4, 5], "counts": counts}, 4, 5)["counts"]
        with pytest.raises(InputError, match=f"sum to {sum(counts)}, expected 20"):
            R.rle_to_mask({"size": [4, 5], "counts": s})


def test_string_total_agrees_with_pycocotools_on_long_runs():
    """The validator's reading of COCO strings (multi-character runs, negative differences) agrees
    with what pycocotools wrote, on masks with very long and very short runs."""
    rng = np.random.default_rng(7)
    for _ in range(30):
        h, w = int(rng.integers(1, 400)), int(rng.integers(1, 400))
        m = np.zeros(h * w, bool)
        cuts = np.sort(rng.choice(h * w, size=min(h * w, int(rng.integers(0, 40))), replace=False))
        for a, b in zip(cuts[::2], cuts[1::2]):
            m[a:b] = True
        m = m.reshape(w, h).T
        r = R.mask_to_rle(m)
        np.testing.assert_array_equal(R.rle_to_mask(r), m)
        assert R.rle_area(r) == int(m.sum())
