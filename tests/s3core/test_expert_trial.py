"""The per-trial expert analysis (s3core.expert_trial): Stage 3's batches, the kept pairs of the
curve point at p*, the factors from the benchmark's meta, and none for a dense model."""
from __future__ import annotations

import numpy as np
import pytest

from s3core.analysis import ExpertAnalysis, analyse_experts
from s3core.config import S3Config
from s3core.data import SyntheticConfig, make_synthetic
from s3core.expert_trial import trial_expert_analysis
from s3core.flops import count_expert_pairs
from s3core.pipeline import build_model, run_trial
from s3core.pruning import layer_depth
from s3core.tensors import embed, eval_order, to_tensors

CFG = S3Config(d_model=8, n_heads=2, d_ff=16, chi=2, rho=2, proj_dim=4, n_layers=2, batch_size=8,
               eval_batch_size=8, seed=3, epochs_special=1, epochs_select=1, keep_ratios=(1.0, 0.3),
               probe_l2=(1e-2,), epoch_probe=False)


@pytest.fixture(scope="module")
def tiny():
    # padded steps: batches of different token counts, so the kept count depends on the order
    bench = make_synthetic(SyntheticConfig(variant="localized", n_train=24, n_valid=8, n_test=20, seq_len=6,
                                           dims=(3, 5), event_steps=2, pad_fraction=0.5))
    data = to_tensors(bench)
    return bench, data, build_model(data, CFG, "s3").eval()


def _kept_by_layer(res: ExpertAnalysis) -> dict:
    kept = res.kept_counts.sum((2, 3))          # (M, L)
    return {(m, layer): int(kept[mi, layer]) for mi, m in enumerate(res.modalities) for layer in range(kept.shape[1])}


def test_the_kept_pairs_are_those_of_the_curve_point(tiny):
    bench, data, model = tiny
    res = trial_expert_analysis(model, data, CFG, 0.3, bench.meta)
    with count_expert_pairs(model) as count:   # Stage 3's test-split forwards at p = 0.3
        embed(model, data, "test", 0.3, CFG.eval_rows, order=eval_order(len(data["test"]), CFG.seed, "test"))
    stage3 = {(name.split(".")[1], layer_depth(name)): kept for name, kept in count.per_layer.items()}
    assert _kept_by_layer(res) == stage3
    # file order batches other samples together: another kept count (what the order fixes)
    file_order = analyse_experts(model, data, "test", keep_ratio=0.3, batch_size=CFG.eval_rows)
    assert _kept_by_layer(file_order) != stage3
    # the factors and the event mask came from the benchmark's meta
    assert set(res.factor_names) == {"label"} | set(bench.meta["factors"]["test"])
    assert np.isfinite(res.event_share).all()
    assert res.keep_ratio == 0.3


def test_the_threshold_scope_is_analysed_at_p_1(tiny):
    bench, data, model = tiny
    res = trial_expert_analysis(model, data, CFG.replace(prune_scope="threshold"), 0.5, bench.meta)
    assert res.keep_ratio == 1.0
    np.testing.assert_array_equal(res.kept_counts, res.pair_counts)


@pytest.mark.slow   # three small trials: about a minute on a loaded 2-core machine
def test_run_trial_returns_the_analysis_and_a_dense_model_none(tiny):
    bench = tiny[0]
    result = run_trial(bench, CFG, "s3", progress=False)
    assert isinstance(result.experts, ExpertAnalysis)
    assert result.experts.keep_ratio == result.summary["best_keep_ratio"]
    back = ExpertAnalysis.from_bytes(result.experts.to_bytes())
    np.testing.assert_array_equal(back.usage, result.experts.usage)
    assert all(np.isfinite(v) for v in result.experts.to_metrics().values())
    assert run_trial(bench, CFG, "clip", progress=False).experts is None
    assert run_trial(bench, CFG, "raw_probe", progress=False).experts is None
