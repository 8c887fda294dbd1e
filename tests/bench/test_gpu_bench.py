"""bench/gpu.py (issue 12.4): its correctness part runs on the CPU here; on CUDA (the `gpu` marker,
skipped without CUDA) every dispatch must match the loop reference in fp32 and bf16."""
import pytest
import torch

from bench.gpu import check_correctness, gpu_report, run_gpu_bench


def test_the_correctness_part_runs_and_agrees_on_the_cpu():
    rows = check_correctness("cpu", chis=(2,), keep_ratios=(1.0, 0.3), B=4, T=6, d_model=16, d_ff=32)
    assert {r["dispatch"] for r in rows} == {"fused", "grouped_mm", "auto"} and all(r["ok"] for r in rows), rows
    assert all(r["dtype"] == "fp32" for r in rows)          # bf16 autocast: CUDA only


def test_the_report_says_what_was_skipped_without_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    import bench.gpu as g
    monkeypatch.setattr(g, "check_correctness", lambda device: [
        {"device": device, "dtype": "fp32", "chi": 2, "keep_ratio": 1.0, "dispatch": "fused", "max_abs_out": 0.0,
         "max_abs_grad": 0.0, "ok": True}])
    res = run_gpu_bench(log=lambda *a: None)
    text = "\n".join(gpu_report(res))
    assert "cpu (no CUDA)" in text and "no CUDA on this machine" in text
    assert "Packing (trials per hour at --gpus-per-trial 1, 0.5, 0.25, 0.125): CUDA only, not run" in text


def test_the_packing_workload_and_the_extrapolation_by_passes():
    from bench.gpu import PACK_SEEDS, pack_args, pack_settings, paper_preset_hours
    from orchestrator.cli import build_parser, overrides_from_args
    from orchestrator.plan import make_plan
    from orchestrator.schedule import longest_first, marginal_passes
    from search_spaces import load_preset
    args = pack_args("/data", "/work", 0.25)
    parsed = build_parser().parse_args(args)
    assert parsed.gpus_per_trial == 0.25 and parsed.no_stage_cache and parsed.benchmark == ["mosei"]
    plan = make_plan(load_preset(parsed.preset), overrides_from_args(parsed))
    trials = plan.trials()
    assert len(trials) == 2 * len(PACK_SEEDS) and {t.method for t in trials} == {"s3", "clip"}
    cfg = next(t for t in trials if t.method == "s3").s3_config()
    assert (cfg.chi, cfg.batch_size, cfg.d_model, cfg.n_layers, cfg.epochs_special) == (8, 256, 128, 2, 1)
    assert pack_settings()["epochs_select"] == 1
    # 3600 trials/h of a workload with P passes = 3600 * P / 8 passes/h at `scale` of the data
    rows = [{"gpus_per_trial": 1.0, "trials_per_hour": 1200.0}, {"gpus_per_trial": 0.25, "trials_per_hour": 3600.0}]
    out = paper_preset_hours(rows, scale=0.25)
    paper = sum(marginal_passes(longest_first(make_plan(load_preset("paper")).trials())))
    pack = sum(marginal_passes(trials))
    assert out["gpus_per_trial"] == 0.25 and out["paper_passes"] == paper and out["pack_passes"] == pack
    assert out["hours"] == pytest.approx(paper / (3600.0 / len(trials) * pack * 0.25))


def test_the_report_renders_packing_rows():
    res = {"device": "NVIDIA H200", "seconds": 1.0, "correctness": [], "skipped": "x",
           "packing": {"scale": 0.25, "rows": [{"gpus_per_trial": 0.5, "trials": 8, "wall_s": 100.0, "fixed_s": 20.0,
                                                 "trials_per_hour": 360.0, "gpu_util": 41.5},
                                                {"gpus_per_trial": 1.0, "skipped": "the 390 s budget was spent"}],
                       "paper": {"gpus_per_trial": 0.5, "hours": 0.4, "paper_passes": 100, "pack_passes": 10}}}
    text = "\n".join(gpu_report(res))
    assert "| 0.5 | 2 | 100 | 20 | 360 | 42 |" in text
    assert "| 1 | 1 | – | – | not measured: the 390 s budget was spent | – |" in text
    assert "**extrapolated** (not measured)" in text and "**24 minutes** (goal: under 30)" in text


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_every_dispatch_matches_the_loop_reference_on_cuda():
    rows = check_correctness("cuda")
    assert {r["dtype"] for r in rows} == {"fp32", "bf16"}
    bad = [r for r in rows if not r["ok"]]
    assert not bad, bad


def test_the_timing_part_runs_on_the_cpu_without_compile():
    from bench.gpu import time_moe_vs_dense
    rows = time_moe_vs_dense("cpu", chis=(2,), tokens=200, seq=10, d_model=16, d_ff=32, rounds=1, compile_=False)
    assert rows[0]["chi"] == 2 and rows[0]["moe/dense"] > 0 and rows[0]["p0.3/p1"] > 0
