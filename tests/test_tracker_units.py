"""Pieces of the tracker that need no model: bfloat16 storage and SAM2's hole filling."""

from __future__ import annotations

import numpy as np
import pytest

from samdeploy.runtime.tracker import fill_holes, from_bfloat16_bits, to_bfloat16_bits


def test_bfloat16_bits_round_like_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    x = np.concatenate([
        rng.standard_normal(100_000).astype(np.float32) * np.float32(3.0),
        rng.standard_normal(1000).astype(np.float32) * np.float32(1e-39),  # subnormals
        np.array([0.0, -0.0, 1.0, -1.0, 65504.0, 3.0e38, -3.0e38, np.inf, -np.inf], np.float32),
        # exact ties between two bfloat16 values: round half to even
        (np.arange(1, 200, dtype=np.uint32) << np.uint32(16) | np.uint32(0x8000)).view(np.float32),
    ])
    ours = from_bfloat16_bits(to_bfloat16_bits(x))
    ref = torch.from_numpy(x).to(torch.bfloat16).to(torch.float32).numpy()
    assert np.array_equal(ours.view(np.uint32), ref.view(np.uint32))
    assert to_bfloat16_bits(x).dtype == np.uint16 and to_bfloat16_bits(x).nbytes == x.nbytes // 2


def test_fill_holes_fills_only_small_background_components():
    low = np.full((1, 32, 32), 5.0, np.float32)
    low[0, 4:6, 4:6] = -3.0  # hole of 4 pixels
    low[0, 10:15, 10:15] = -3.0  # hole of 25 pixels
    low[0, 20, 20] = 0.0  # logit 0 counts as background (mask <= 0)
    low[0, 25, 25] = -1.0
    low[0, 26, 26] = -1.0  # diagonal neighbours: one 8-connected component of 2 pixels
    out = fill_holes(low, max_area=8)
    assert np.all(out[0, 4:6, 4:6] == np.float32(0.1))
    assert np.all(out[0, 10:15, 10:15] == -3.0)
    assert out[0, 20, 20] == np.float32(0.1)
    assert out[0, 25, 25] == out[0, 26, 26] == np.float32(0.1)
    untouched = np.ones_like(low, bool)
    untouched[0, 4:6, 4:6] = untouched[0, 20, 20] = untouched[0, 25, 25] = untouched[0, 26, 26] = False
    assert np.array_equal(out[untouched], low[untouched])
    assert np.array_equal(fill_holes(low, max_area=1)[0, 4:6, 4:6], low[0, 4:6, 4:6])
