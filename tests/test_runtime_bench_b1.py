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


def test_compare_runs_both_models_interleaved_and_reports_ratios(fake_model_dir, tmp_path, capsys, monkeypatch):
    """`bench --compare DIR`: both models in one run, order rotated each round, ours / theirs per stage.
    Checked with a decoder made slower on purpose (a sleep in the other model's decoder run)."""
    import json
    import time

    import samdeploy.runtime.bench as bench
    from samdeploy.cli.main import main
    from samdeploy.runtime.backends import onnxruntime as ortb

    calls: list[str] = []
    real_run = ortb.OrtBackend._run

    def spy(self, feeds):  # which model ran, in order; the other model's decoder takes 20 ms longer
        calls.append(("other" if "other" in self.path else "ours") + ":" + self.role)
        if "other" in self.path and self.role == "decoder":
            time.sleep(0.02)
        return real_run(self, feeds)

    import shutil

    other = tmp_path / "other"
    shutil.copytree(fake_model_dir, other)
    monkeypatch.setattr(ortb.OrtBackend, "_run", spy)
    monkeypatch.setattr(bench, "gemm_rate_gflops", lambda threads=None: (100.0, 50.0))
    out = tmp_path / "b.json"
    assert main(["bench", "--model-dir", str(fake_model_dir), "--compare", str(other), "--rounds", "3",
                 "--batch-sizes", "1", "--runs", "3", "--warmup", "0", "--encoder-runs", "1", "--quiet",
                 "--json", str(out)]) == 0
    cmp = json.loads(out.read_text())["compare"]
    assert cmp["rounds"] == 3 and cmp["ours"]["model_id"] and cmp["theirs"]["backend"] == "onnxruntime"
    dec = cmp["stages"]["decoder per prompt, batch 1"]
    assert dec["theirs_ms"] > dec["ours_ms"] + 15 and dec["ratio"] < 0.8 and len(dec["ratio_per_round"]) == 3
    # rounds alternate: ours, theirs | theirs, ours | ours, theirs (first encoder call of each bench)
    firsts = [c.split(":")[0] for i, c in enumerate(calls) if c.endswith(":encoder")
              and (i == 0 or not calls[i - 1].endswith(":encoder"))]
    assert firsts[:6] == ["ours", "other", "other", "ours", "ours", "other"]
    printed = capsys.readouterr().out
    assert "ratio = ours / theirs" in printed and "decoder per prompt, batch 1" in printed


def test_compare_refuses_a_bad_directory_before_timing(fake_model_dir, tmp_path, capsys):
    from samdeploy.cli.main import main

    assert main(["bench", "--model-dir", str(fake_model_dir), "--compare", str(tmp_path / "missing"), "--quiet"]) == 2
    assert main(["bench", "--model-dir", str(fake_model_dir), "--rounds", "2", "--quiet"]) == 2
    assert "--compare" in capsys.readouterr().err
