"""Quantizer conventions, candidate grid and the baseline calibrators (hand-computed references)."""

from __future__ import annotations

import numpy as np
import torch

from samdeploy.calibration import baselines, quant


def test_candidate_grid_is_ptq4vit_tinysam():
    # (0.01 + k * 1.19/100) * delta0, k = 0..99, delta0 = max|x| / 127.5
    c = quant.candidates(np.float32(12.75))
    assert c.dtype == np.float32 and c.shape == (100,)
    d0 = 12.75 / 127.5
    np.testing.assert_allclose(c[0], 0.01 * d0, rtol=1e-6)
    np.testing.assert_allclose(c[99], (0.01 + 99 * 1.19 / 100) * d0, rtol=1e-6)
    assert np.all(np.diff(c) > 0)
    per_channel = quant.candidates(np.array([1.0, 2.0], np.float32), n=10)
    assert per_channel.shape == (10, 2)
    np.testing.assert_allclose(per_channel[:, 1], 2 * per_channel[:, 0], rtol=1e-6)


def test_zero_tensors_get_a_positive_scale():
    assert quant.delta0(0.0) > 0
    assert np.all(quant.minmax_weight_scale(np.zeros(3)) > 0)


def test_quantize_rounds_half_to_even_and_saturates():
    x = np.array([0.5, 1.5, 2.5, -0.5, -2.5, 200.0, -200.0], np.float32)
    assert quant.quantize_np(x, 1.0, -128, 127).tolist() == [0, 2, 2, 0, -2, 127, -128]
    # weights use the narrow range [-127, 127] (TensorRT's convention)
    w = np.array([[-300.0, 0.4], [1.0, 2.0]], np.float32)
    q = quant.quantize_weight_np(w, np.array([1.0, 1.0], np.float32), axis=0)
    assert q.min() == -127 and q.dtype == np.int8


def test_torch_fake_quant_matches_numpy():
    x = np.random.default_rng(0).normal(scale=3, size=1000).astype(np.float32)
    s = np.float32(0.037)
    ref = quant.quantize_np(x, s, -128, 127).astype(np.float32) * s
    out = quant.fake_quant_act(torch.from_numpy(x), torch.tensor(s)).numpy()
    np.testing.assert_array_equal(out, ref)


def test_percentile_ignores_rare_outliers_and_minmax_does_not():
    rng = np.random.default_rng(0)
    x = np.abs(rng.normal(size=200_000))
    x[:3] = 50.0  # three outliers
    hist, _ = np.histogram(x, bins=2048, range=(0, 50.0))
    t = baselines.percentile_threshold(hist, 50.0, 99.99)
    assert 3.0 < t < 5.0  # ~ the 99.99th percentile of |N(0,1)| (3.9)
    assert baselines.entropy_threshold(hist, 50.0) < 10.0


def test_entropy_keeps_the_range_of_a_uniform_distribution():
    hist = np.ones(2048)
    assert baselines.entropy_threshold(hist, 4.0) > 3.5
