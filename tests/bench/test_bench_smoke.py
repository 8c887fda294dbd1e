"""Smoke test of the benchmark suite at a tiny size: every section runs and is written.

No timing is asserted (the figures of a tiny run on a shared machine mean nothing).
"""
import os

import pytest

from bench import SECTIONS, main, run_benchmarks
from bench.report import TITLES


def test_tiny_profile_writes_every_section(tmp_path):
    out = tmp_path / "RESULTS.md"
    res = run_benchmarks("tiny", out=str(out), command="pytest smoke", tmp_root=str(tmp_path), log=lambda *_: None)
    text = out.read_text()
    for sec in SECTIONS:
        assert f"## {TITLES[sec]}" in text
    assert "Command: `pytest smoke`" in text and "Date:" in text and "torch" in text and "cpu:" in text
    assert "not measured: no GPU" in text or "GPU rows" in text
    # section 1: every dispatch and the dense reference were timed, memory was probed in a subprocess
    row = res["moe"][0]
    assert set(row["stats"]) == {"dense", "fused", "grouped_mm", "loop"}
    assert any(r["memory"] for r in res["moe"])
    assert all(r["memory"][k]["peak_mib"] > 0 for r in res["moe"] if r["memory"] for k in r["memory"])
    # section 2: one ratio per keep-ratio, p = 1.0 is the reference
    assert res["pruning"]["encoder"][1.0]["ratio"] == pytest.approx(1.0)
    assert set(res["pruning"]["encoder"]) == set(res["pruning"]["keep_ratios"])
    # section 3: all loads measured, and the temp dir with the pickle and the cache is gone
    assert set(res["data"]["loads"]) == {"safe_load", "pickle_load", "safe_load_touch", "cache_load", "cache_load_touch"}
    assert res["data"]["write"]["bytes"] > 0 and res["data"]["cache_bytes"] > 0
    assert not [n for n in os.listdir(tmp_path) if n.startswith("s3bench-data-")]
    assert "tiny profile" in res["orchestration"]["pending"]   # it starts Ray several times: --quick runs it
    # section 5: both probe backends timed on the same data
    assert res["probe"]["rows"] and {"torch_s", "sklearn_s", "ratio"} <= set(res["probe"]["rows"][0])


def test_only_runs_the_named_section_and_still_writes_every_heading(tmp_path):
    out = tmp_path / "R.md"
    assert main(["--profile", "tiny", "--only", "orchestration", "--out", str(out)]) == 0
    text = out.read_text()
    for sec in SECTIONS:
        assert f"## {TITLES[sec]}" in text
    assert text.count("Not run in this invocation") == len(SECTIONS) - 1
    assert "python -m bench --profile tiny --only orchestration" in text
