"""bench always measures a real B=1 decoder call: "decode(1 prompt)" in the report is never a per-prompt
figure of a larger batch (tiny fake graphs, seconds)."""

from __future__ import annotations

import pytest

from samdeploy.runtime import Predictor
from samdeploy.runtime.bench import format_table, run_bench


@pytest.mark.parametrize("batch_sizes,keys", [((4,), ["1", "4"]), ((4, 1), ["4", "1"])])
def test_decode1_is_a_measured_b1_call(fake_model_dir, monkeypatch, batch_sizes, keys):
    import samdeploy.runtime.bench as bench

    monkeypatch.setattr(bench, "gemm_rate_gflops", lambda threads=None: (100.0, 50.0))  # fixed, fast floor
    with Predictor(fake_model_dir, threads=1) as pred:
        res = run_bench(pred, batch_sizes=batch_sizes, runs=2, warmup=0, encoder_runs=1, progress=False)
    dec = res["decoder"]
    assert list(dec) == keys  # 1 added in front when missing; the caller's order otherwise kept
    b1 = dec["1"]
    assert b1["call"]["n"] == 2 and b1["per_prompt_p50"] == b1["call"]["p50"]
    d1 = b1["call"]["p50"]
    r, f = res["ratios"], res["floors"]
    assert r["prepost_single_vs_decode1"] == pytest.approx((res["prompt_pre"]["p50"] + res["postprocess_single"]["p50"]) / d1)
    assert r["prepost_multimask_vs_decode1"] == pytest.approx(
        (res["prompt_pre"]["p50"] + res["postprocess_multimask"]["p50"]) / d1)
    assert r["decoder_b1_vs_floor"] == pytest.approx(d1 / f["decoder_floor_ms_per_prompt"])
    # the B=4 call is still reported per prompt, and is not what the ratios use
    assert dec["4"]["per_prompt_p50"] == pytest.approx(dec["4"]["call"]["p50"] / 4)
    table = format_table(res)
    assert "decoder call, batch 1" in table and "decoder call, batch 4" in table
    assert "pre+post / decode(1 prompt)" in table
