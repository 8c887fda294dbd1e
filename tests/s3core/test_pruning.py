"""Stage 3's prune scopes (s3core/pruning.py, stages.embed_splits).

- 'threshold': a sample's embedding is bit-identical alone and inside any batch;
- both scopes: p = 1 is the unpruned model exactly (no pair-selection code runs);
- 'batch': batches of the trial's batch size in an order drawn from the seed, reproducible.
"""
from __future__ import annotations

import pytest
import torch

from s3core import moe as moe_mod
from s3core import pruning
from s3core.config import ConfigError, S3Config
from s3core.data import SyntheticConfig, make_synthetic
from s3core.pipeline import build_model
from s3core.stages import embed_splits, sparsify
from s3core.tensors import embed, eval_order, to_tensors

CFG = S3Config(d_model=32, n_layers=2, n_heads=2, d_ff=64, chi=4, rho=2, proj_dim=8, batch_size=16,
               epoch_probe=False, keep_ratios=(1.0, 0.4), probe_l2=(1e-2,))


@pytest.fixture(scope="module")
def data():
    return to_tensors(make_synthetic(SyntheticConfig(n_train=80, n_valid=40, n_test=40, seq_len=5, dims=(6, 7),
                                                     pad_fraction=0.4, seed=5)))


def _model(data, cfg=CFG):
    model = build_model(data, cfg, "s3")
    # routers with real preferences, so the pruned set is not decided by near-ties
    for layer in pruning.moe_layers(model).values():
        torch.nn.init.normal_(layer.router.weight, std=1.0)
    return model.eval()


def test_threshold_scope_embedding_is_bit_identical_alone_and_in_any_batch(data):
    model = _model(data)
    thresholds = pruning.fit_thresholds(model, data, 0.4, CFG.eval_rows)
    assert set(thresholds) == set(pruning.moe_layers(model)) and len(thresholds) == 4  # 2 modalities x 2 layers
    n = len(data["test"])
    with pruning.thresholds_applied(model, thresholds):
        in_order = embed(model, data, "test", 1.0, CFG.eval_rows, pad=True)[0]
        shuffled = embed(model, data, "test", 1.0, CFG.eval_rows, pad=True, order=torch.randperm(n))[0]
        assert torch.equal(in_order, shuffled)
        for i in (0, 7, n - 1):
            alone = embed(model, data, "test", 1.0, CFG.eval_rows, pad=True, order=torch.tensor([i]))[0]
            assert torch.equal(alone[i], in_order[i])
    # the paper's per-batch scope at the same p is not batch-free: the same sample, another batch
    batch_a = embed(model, data, "test", 0.4, CFG.eval_rows)[0]
    batch_b = embed(model, data, "test", 0.4, CFG.eval_rows, order=torch.randperm(n))[0]
    assert not torch.allclose(batch_a, batch_b, atol=1e-4)


def test_threshold_keeps_p_of_the_train_pairs_in_every_layer(data):
    model = _model(data)
    thresholds = pruning.fit_thresholds(model, data, 0.4, CFG.eval_rows)
    with pruning.thresholds_applied(model, thresholds):
        _, _, kept = embed(model, data, "train", 1.0, CFG.eval_rows, pad=True)
    # train's kept fraction, averaged over layers and batches (padding rows included): about p
    assert kept == pytest.approx(0.4, abs=0.05)
    for name, layer in pruning.moe_layers(model).items():
        assert layer.prune_threshold is None and layer.gate_recorder is None  # state restored


@pytest.mark.parametrize("scope", ["batch", "threshold"])
def test_keep_ratio_one_is_the_unpruned_model_in_both_scopes(data, scope, monkeypatch):
    cfg = CFG.replace(prune_scope=scope)
    model = _model(data, cfg)
    unpruned = {"batch": lambda s: embed(model, data, s, 1.0, cfg.eval_rows, order=eval_order(len(data[s]), 0, s)),
                "threshold": lambda s: embed(model, data, s, 1.0, cfg.eval_rows, pad=True)}[scope]
    expected = {s: unpruned(s)[0] for s in ("train", "valid", "test")}

    def no_pruning(*a, **k):
        raise AssertionError("a pair selection ran at p = 1")
    monkeypatch.setattr(moe_mod, "top_pairs", no_pruning)
    monkeypatch.setattr("s3core.stages.fit_thresholds", no_pruning)
    out, extra = embed_splits(model, data, cfg, 1.0)
    for s in expected:
        assert torch.equal(out[s][0], expected[s]) and out[s][2] == 1.0


def test_batch_scope_uses_the_trial_batch_size_in_a_seeded_order(data, monkeypatch):
    seen = []
    real = moe_mod.MoEFFN.forward

    def spy(self, x, token_mask=None, keep_ratio=1.0):
        seen.append(x.shape[0])
        return real(self, x, token_mask, keep_ratio)
    monkeypatch.setattr(moe_mod.MoEFFN, "forward", spy)
    model = _model(data)
    embed_splits(model, data, CFG.replace(batch_size=32), 0.4)
    # 80/40/40 samples in batches of 32 (not a fixed 256): 3 + 2 + 2 batches, 4 MoE layers each
    assert sorted(set(seen)) == [8, 16, 32] and len(seen) == 7 * 4
    monkeypatch.undo()
    a = embed_splits(model, data, CFG, 0.4)[0]
    b = embed_splits(model, data, CFG, 0.4)[0]
    c = embed_splits(model, data, CFG.replace(seed=1), 0.4)[0]
    for s in ("train", "valid", "test"):
        assert torch.equal(a[s][0], b[s][0])                       # reproducible from the seed
    assert not torch.equal(a["test"][0], c["test"][0])             # the order is the seed's
    assert not torch.equal(eval_order(40, 0, "test"), torch.arange(40))


def test_sparsify_records_scope_thresholds_and_probe_convergence(data):
    model = _model(data)
    rows = sparsify(model, data, CFG.replace(prune_scope="threshold"), progress=False)
    assert [r["keep_ratio"] for r in rows] == [1.0, 0.4]
    assert rows[0]["thresholds"] == {} and len(rows[1]["thresholds"]) == 4
    assert all(isinstance(r["probe_converged"], bool) and r["probe_iters"] >= 1 for r in rows)
    assert rows[1]["kept_fraction"] < 0.8


def test_bad_scope_is_refused():
    with pytest.raises(ConfigError, match="prune_scope"):
        CFG.replace(prune_scope="global").validate()
    with pytest.raises(ConfigError, match="eval_batch_size"):
        CFG.replace(eval_batch_size=0).validate()
    layer = moe_mod.MoEFFN(CFG.moe())
    layer.prune_threshold = 0.1
    with pytest.raises(ValueError, match="both"):
        layer(torch.randn(1, 2, CFG.d_model), keep_ratio=0.5)
