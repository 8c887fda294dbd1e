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
    assert "--gpus-per-trial 0.125" in text


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
