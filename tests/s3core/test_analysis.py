"""s3core.analysis: the raw-feature reference, the expert analysis (on hand-built routers with
known answers, and on a tiny real model against its own routing statistics), and expert FLOPs."""
from __future__ import annotations

import itertools
import math
import os

import numpy as np
import pytest
import torch
from torch import nn

from s3core.analysis import (ExpertAnalysis, ExpertUsageAccumulator, analyse_experts, dense_ffn_flops_per_sample,
                             expert_flops_at_keep_ratio, expert_flops_per_pair, expert_flops_per_sample,
                             generalised_js, js_divergence, kept_pairs_per_layer, min_cost_assignment,
                             raw_feature_embeddings, raw_feature_probe, routed_tokens)
from s3core.config import S3Config
from s3core.data import Split, SyntheticConfig, make_synthetic
from s3core.pipeline import build_model
from s3core.tensors import ordered_batches, standardise, to_tensors

# ----------------------------------------------------------------------------------------------
# raw-feature reference


def test_raw_feature_embeddings_mean_over_real_steps_numpy_and_torch():
    x1 = np.array([[[0, 0], [1, 2], [3, 4]], [[1, 1], [1, 1], [4, 1]], [[0, 0], [0, 0], [0, 0]]], dtype=np.float32)
    x2 = np.arange(3 * 2 * 1, dtype=np.float32).reshape(3, 2, 1) + 1
    m1 = np.array([[False, True, True], [True, True, True], [False, False, False]])
    m2 = np.ones((3, 2), dtype=bool)
    split = Split(features={"a": x1, "b": x2}, masks={"a": m1, "b": m2}, labels=np.zeros(3, dtype=np.int64))
    emb = raw_feature_embeddings(split)
    expect = np.array([[2, 3, 1.5], [2, 1, 3.5], [0, 0, 5.5]], dtype=np.float32)  # empty sample -> zeros
    np.testing.assert_allclose(emb, expect)
    assert emb.dtype == np.float32 and emb.shape == (3, 3)
    np.testing.assert_allclose(raw_feature_embeddings(split, modalities=["b", "a"]), expect[:, [2, 0, 1]])
    tensors = to_tensors(make_synthetic(SyntheticConfig(n_train=20, n_valid=5, n_test=5, seq_len=4, dims=(3, 2),
                                                        pad_fraction=0.5)))
    bench = make_synthetic(SyntheticConfig(n_train=20, n_valid=5, n_test=5, seq_len=4, dims=(3, 2), pad_fraction=0.5))
    res = raw_feature_probe(bench, l2_grid=(1e-2,), backend="torch", max_iter=50)
    assert 0.0 <= res.test_acc <= 1.0 and res.l2 == 1e-2
    t = raw_feature_embeddings(tensors["train"])
    assert isinstance(t, torch.Tensor) and t.shape == (20, 5)
    np.testing.assert_allclose(t.numpy(), raw_feature_embeddings(bench["train"]), rtol=1e-6)


# ----------------------------------------------------------------------------------------------
# divergences and matching


def test_js_divergence_known_values():
    assert js_divergence([0.25, 0.25, 0.5], [0.25, 0.25, 0.5]) == 0.0     # DSC = 0 for identical usage
    assert js_divergence([1, 0, 0, 0], [0, 0, 1, 0]) == pytest.approx(1.0)  # disjoint experts: 1 bit
    # by hand: 1/2 * log2(4/3) + 1/2 * (1/2 log2(2/3) + 1/2 log2(2)) = 0.311278
    assert js_divergence([1, 0], [0.5, 0.5]) == pytest.approx(0.311278, abs=1e-6)
    assert js_divergence([2, 2], [1, 1]) == pytest.approx(0.0)             # normalised first
    assert 0 < js_divergence([0.3, 0.7], [0.31, 0.69]) < 1e-3
    np.testing.assert_allclose(js_divergence(np.eye(3), np.eye(3)[[1, 2, 0]]), [1, 1, 1])
    assert np.isnan(js_divergence([np.nan, np.nan], [0.5, 0.5]))
    assert generalised_js(np.eye(4)) == pytest.approx(2.0)                 # 4 disjoint classes: log2 4
    assert generalised_js(np.full((3, 5), 0.2)) == pytest.approx(0.0)


def test_min_cost_assignment_is_optimal():
    rng = np.random.default_rng(0)
    for n in (1, 2, 3, 5, 6):
        for _ in range(5):
            cost = rng.random((n, n))
            col = min_cost_assignment(cost)
            assert sorted(col.tolist()) == list(range(n))
            best = min(sum(cost[i, p[i]] for i in range(n)) for p in itertools.permutations(range(n)))
            assert cost[np.arange(n), col].sum() == pytest.approx(best)
    perm = rng.permutation(12)
    cost = np.ones((12, 12))
    cost[np.arange(12), perm] = 0.0
    np.testing.assert_array_equal(min_cost_assignment(cost), perm)


# ----------------------------------------------------------------------------------------------
# the accumulator on hand-built routers


def _router(weight):
    r = nn.Linear(weight.shape[1], weight.shape[0], bias=False)
    with torch.no_grad():
        r.weight.copy_(torch.as_tensor(weight, dtype=torch.float32))
    return r


CONFIDENT, FLAT = [1.0, 0.5, 0.0, 0.0], [0.20, 0.19, 0.0, 0.0]  # x10 router: gates ~(0.993, 0.007) / (0.45, 0.41)


def _hand_built(keep_ratio, swap_x2=False, n=8, T=4):
    """E = 4, k = 2, two modalities, one layer, router = 10 * I. Class 0 tokens point at experts
    0 (strongly) and 1; class 1 tokens at experts 2 and 3. Steps 0-1 are 'event' steps with a
    confident router; steps 2-3 get flat logits. x2's router is x1's, or with the classes'
    experts swapped (experts 0, 1 <-> 2, 3)."""
    labels = np.array([0, 1] * (n // 2))
    event = np.zeros((n, T), dtype=bool)
    event[:, :2] = True
    acc = ExpertUsageAccumulator(("x1", "x2"), n_layers=1, num_experts=4, k=2, labels=labels, num_classes=2,
                                 keep_ratio=keep_ratio, event_mask={"x1": event, "x2": event})
    r1 = _router(10 * np.eye(4))
    r2 = _router(10 * np.eye(4)[[2, 3, 0, 1]] if swap_x2 else 10 * np.eye(4))
    tokens, sample, step = [], [], []
    for i, y in enumerate(labels):
        for t in range(T):
            v = np.array(CONFIDENT if t < 2 else FLAT)
            tokens.append(v if y == 0 else v[[2, 3, 0, 1]])
            sample.append(i)
            step.append(t)
    x = torch.tensor(np.array(tokens), dtype=torch.float32)
    sample, step = torch.tensor(sample), torch.tensor(step)
    for half in (slice(0, len(x) // 2), slice(len(x) // 2, None)):  # two batches, pruned separately
        for m, r in (("x1", r1), ("x2", r2)):
            if keep_ratio == 1.0:
                acc.add(m, 0, r(x[half]), sample[half], step[half], "both")
            else:
                acc.add(m, 0, r(x[half]), sample[half], step[half], "full")
                acc.add(m, 0, r(x[half]), sample[half], step[half], "pruned")
    return acc.result()


def test_usage_per_class_and_dsc_on_a_hand_built_router():
    res = _hand_built(1.0)
    assert res.pair_counts.shape == (2, 1, 2, 4)
    np.testing.assert_allclose(res.usage[0, 0], [[0.5, 0.5, 0, 0], [0, 0, 0.5, 0.5]])
    np.testing.assert_array_equal(res.pair_counts[0, 0], [[16, 16, 0, 0], [0, 0, 16, 16]])  # 4 samples x 4 steps
    g = torch.tensor([10.0, 5.0, 0, 0]).softmax(0)[:2]
    f = torch.tensor([2.0, 1.9, 0, 0]).softmax(0)[:2]
    expect_gate = (2 * g + 2 * f).numpy()
    np.testing.assert_allclose(res.gate_usage[0, 0, 0, :2], expect_gate / expect_gate.sum(), rtol=1e-5)
    np.testing.assert_array_equal(res.dsc, 0.0)                       # identical usage in both modalities
    assert res.class_js[0, 0] == pytest.approx(1.0)                    # classes use disjoint experts
    np.testing.assert_array_equal(res.survival, 1.0)
    assert res.event_share[0, 0] == pytest.approx(0.5) and res.event_share_at_p[0, 0] == pytest.approx(0.5)

    swapped = _hand_built(1.0, swap_x2=True)
    np.testing.assert_allclose(swapped.usage[1, 0], [[0, 0, 0.5, 0.5], [0.5, 0.5, 0, 0]])
    np.testing.assert_allclose(swapped.dsc, 1.0)                       # disjoint by index
    np.testing.assert_allclose(swapped.dsc_matched, 0.0, atol=1e-12)   # the same up to relabelling experts
    assert swapped.class_js[1, 0] == pytest.approx(1.0)


def test_pruning_keeps_the_confident_event_pairs_first():
    # per sample 8 pairs: 2 event x (0.993, 0.007), 2 flat x (0.45, 0.41). p = 0.25 keeps 2 per
    # sample on average, per batch: exactly the high-gate event pairs, all on experts 0 and 2.
    res = _hand_built(0.25)
    np.testing.assert_allclose(res.survival[0, 0], [0.5, 0.0, 0.5, 0.0])   # half of e0's pairs are event pairs
    np.testing.assert_allclose(res.kept_share[0, 0], [0.5, 0.0, 0.5, 0.0])
    np.testing.assert_allclose(res.usage_at_p[0, 0], [[1, 0, 0, 0], [0, 0, 1, 0]])
    assert res.event_share[0, 0] == pytest.approx(0.5)
    assert res.event_share_at_p[0, 0] == pytest.approx(1.0)
    assert res.kept_counts.sum() == 2 * 2 * math.ceil(0.25 * 32)         # 2 modalities x 2 batches
    # p = 0.5 keeps the event pairs' strong gate and the flat tokens' stronger gate: 1 per token
    half = _hand_built(0.5)
    np.testing.assert_allclose(half.survival[0, 0], [1.0, 0.0, 1.0, 0.0])
    assert half.event_share_at_p[0, 0] == pytest.approx(0.5)
    m = half.to_metrics(prefix="after/")
    assert m["after/survival_min/x1/L0"] == 0.0 and m["after/kept_fraction/x1/L0"] == pytest.approx(0.5)
    assert m["after/event_share_at_p/x2/L0"] == pytest.approx(0.5) and m["after/dsc/x1-x2/L0"] == 0.0


def test_factor_r2_finds_the_factor_an_expert_carries():
    """E = 2, k = 1: sample n sends q_n of its 10 tokens to expert 0 (logits (5, 0)) and the rest
    to expert 1 (logits (0, 5)), so expert 0's routing weight is q_n / 10 * sigmoid(5): exactly
    linear in the factor q; an independent factor explains nothing beyond chance."""
    rng = np.random.default_rng(1)
    n, T = 200, 10
    q = rng.integers(0, T + 1, size=n)
    noise_factor = rng.standard_normal((n, 3))
    labels = rng.integers(0, 2, size=n)
    acc = ExpertUsageAccumulator(("a", "b"), 1, 2, 1, labels, 2)
    logits, sample, step = [], [], []
    for i in range(n):
        for t in range(T):
            logits.append([5.0, 0.0] if t < q[i] else [0.0, 5.0])
            sample.append(i)
            step.append(t)
    logits, sample, step = torch.tensor(logits), torch.tensor(sample), torch.tensor(step)
    for m in ("a", "b"):
        acc.add(m, 0, logits, sample, step, "both")
    res = acc.result({"q": q, "other": noise_factor})
    assert res.factor_names == ("label", "q", "other")
    sig5 = 1 / (1 + math.exp(-5))
    np.testing.assert_allclose(res.routing_weight[0, 0], np.stack([q / T * sig5, (T - q) / T * sig5], 1), rtol=1e-6)
    r2 = res.factor_r2[0, 0]                                             # (E, F)
    assert r2[0, 1] == pytest.approx(1.0) and r2[1, 1] == pytest.approx(1.0)
    assert r2[0, 2] < 4 * res.r2_chance[2] and r2[0, 0] < 4 * res.r2_chance[0]
    assert res.r2_chance[2] == pytest.approx(6 / (n - 1))                # 3 dims, linear + squared
    m = res.to_metrics()
    assert m["r2/q/a/L0/max"] == pytest.approx(1.0) and m["r2/q/a/L0/used"] == pytest.approx(1.0)
    assert m["r2/other/b/L0/kept"] < 0.2


def test_save_load_roundtrip(tmp_path):
    res = _hand_built(0.25, swap_x2=True)
    path = res.save(tmp_path / "experts.npz")
    assert os.listdir(tmp_path) == ["experts.npz"]                       # no temp file left
    back = ExpertAnalysis.load(path)
    assert back.modalities == ("x1", "x2") and back.keep_ratio == 0.25 and back.factor_names == ("label",)
    for name in ("usage", "dsc", "dsc_matched", "survival", "event_share_at_p", "factor_r2", "kept_counts",
                 "routing_weight"):
        np.testing.assert_array_equal(getattr(back, name), getattr(res, name))
    assert back.to_metrics() == res.to_metrics()
    np.savez(tmp_path / "other.npz", a=np.zeros(2))
    with pytest.raises(ValueError, match="not an ExpertAnalysis file"):
        ExpertAnalysis.load(tmp_path / "other.npz")


# ----------------------------------------------------------------------------------------------
# a tiny real model: the hooks see what the model computes


TINY = S3Config(d_model=16, n_layers=2, n_heads=2, d_ff=32, chi=2, rho=2, proj_dim=8, batch_size=32,
                eval_batch_size=24, epoch_probe=False)


@pytest.fixture(scope="module")
def tiny():
    bench = make_synthetic(SyntheticConfig(variant="localized", n_train=40, n_valid=20, n_test=50, seq_len=12,
                                           dims=(6, 5), event_steps=4, pad_fraction=0.5, seed=2))
    bench["test"].masks["x2"][3] = False        # a sample with no real step in x2: the encoder routes step 0
    bench["test"].features["x2"][3] = 0.0
    data = to_tensors(bench)
    model = build_model(data, TINY, "s3")
    return bench, data, model


def _model_routing(model, data, p):
    """The model's own statistics: per (modality, layer) pairs-weighted expert load and kept pairs."""
    st = data["test"]
    load, kept = {}, {}
    with torch.no_grad():
        for idx in ordered_batches(len(st), TINY.eval_batch_size, "cpu"):
            inputs, _ = st.batch(idx)
            outs = model(standardise(inputs, data), keep_ratio=p)
            for m, o in outs.items():
                real = inputs[m][1].clone()
                real[~real.any(1), 0] = True
                pairs = int(real.sum()) * TINY.moe().k
                for layer, (el, kf) in enumerate(zip(o.intermediates["routing"]["expert_load"],
                                                     o.intermediates["routing"]["kept_fraction"])):
                    load[m, layer] = load.get((m, layer), 0) + el.double() * pairs
                    kept[m, layer] = kept.get((m, layer), 0) + float(kf) * pairs
    return load, kept


@pytest.mark.parametrize("p", [1.0, 0.3])
def test_analyse_experts_matches_the_models_own_routing(tiny, p):
    bench, data, model = tiny
    out_before = model(standardise(data["test"].batch(torch.arange(5))[0], data))["x1"].z
    res = analyse_experts(model, data, "test", keep_ratio=p, batch_size=TINY.eval_batch_size,
                          factors=bench.meta["factors"]["test"], event_mask=bench.meta["event_mask"]["test"])
    assert res.pair_counts.shape == (2, 2, 2, 4) and res.factor_r2.shape == (2, 2, 4, 1 + 6)
    tokens = {m: routed_tokens({m: bench["test"].masks[m]}).sum() for m in ("x1", "x2")}
    load, kept = _model_routing(model, data, p)
    full_load = _model_routing(model, data, 1.0)[0] if p < 1 else load
    for mi, m in enumerate(("x1", "x2")):
        for layer in range(2):
            assert res.pair_counts[mi, layer].sum() == 2 * tokens[m]      # k = chi = 2 pairs per routed token
            per_class = [2 * routed_tokens({m: bench["test"].masks[m][bench["test"].labels == c]}).sum() for c in (0, 1)]
            np.testing.assert_array_equal(res.pair_counts[mi, layer].sum(1), per_class)  # tokens -> the right samples
            pooled = res.pair_counts[mi, layer].sum(0)
            np.testing.assert_allclose(pooled, full_load[m, layer].numpy(), rtol=1e-6)
            assert res.kept_counts[mi, layer].sum() == pytest.approx(kept[m, layer], rel=1e-6)
            pruned = res.pruned_pass_counts[mi, layer].sum(0)
            np.testing.assert_allclose(pruned, load[m, layer].numpy(), rtol=1e-6)  # the forward at p, layer 2 too
    expected_kept = kept_pairs_per_layer({m: bench["test"].masks[m] for m in ("x1", "x2")}, 2, p, TINY.eval_batch_size)
    np.testing.assert_array_equal(res.kept_counts.sum((2, 3)), [[expected_kept["x1"]] * 2, [expected_kept["x2"]] * 2])
    assert 0.0 < res.event_share[0, 0] < 1.0
    assert all(not f._forward_pre_hooks and not f.router._forward_hooks
               for enc in model.encoders.values() for f in (b.ffn for b in enc.blocks))  # hooks removed
    assert torch.equal(out_before, model(standardise(data["test"].batch(torch.arange(5))[0], data))["x1"].z)
    assert all(np.isfinite(v) for v in res.to_metrics().values())


# ----------------------------------------------------------------------------------------------
# FLOPs


def test_flops_against_a_hand_count():
    cfg = S3Config(d_model=16, d_ff=32, chi=2, rho=2, n_layers=3, eval_batch_size=2)
    assert expert_flops_per_pair(16, 16) == 2 * 2 * 16 * 16 == 1024
    # masks: x1 has 3, 1, 0 (-> 1, step 0 is routed), 2 real steps; x2 has 2 each
    m1 = np.array([[1, 1, 1], [0, 0, 1], [0, 0, 0], [0, 1, 1]], dtype=bool)
    m2 = np.ones((4, 2), dtype=bool)
    np.testing.assert_array_equal(routed_tokens({"x1": m1, "x2": m2}), [5, 3, 3, 4])
    # p = 1: batches [0, 1] and [2, 3]; x1 has 4 and 3 tokens, k = 2 -> 8 + 6 pairs; x2 8 + 8
    assert kept_pairs_per_layer({"x1": m1, "x2": m2}, 2, 1.0, 2) == {"x1": 14, "x2": 16}
    # p = 0.3: ceil(0.3 * 8) = 3, ceil(0.3 * 6) = 2 -> x1 5; x2 3 + 3 = 6
    assert kept_pairs_per_layer({"x1": m1, "x2": m2}, 2, 0.3, 2) == {"x1": 5, "x2": 6}
    assert expert_flops_at_keep_ratio(cfg, {"x1": m1, "x2": m2}, 0.3) == pytest.approx((5 + 6) * 3 * 1024 / 4)
    assert expert_flops_per_sample(cfg, np.array([[5, 5, 5], [6, 6, 6]]), 4) == pytest.approx(33 * 1024 / 4)
    # the dense FFN: 15 tokens / 4 samples * 3 layers * 2 * 2 * 16 * 32
    dense = dense_ffn_flops_per_sample(cfg, routed_tokens({"x1": m1, "x2": m2}))
    assert dense == pytest.approx(15 / 4 * 3 * 4 * 16 * 32)
    # unpruned, top_k = chi: exactly the dense FFN's compute; chi = rho = 1 (the CLIP encoder) too
    assert expert_flops_at_keep_ratio(cfg, {"x1": m1, "x2": m2}, 1.0, batch_size=4) == pytest.approx(dense)
    clip = cfg.replace(chi=1, rho=1)
    assert expert_flops_at_keep_ratio(clip, {"x1": m1, "x2": m2}, 1.0) == pytest.approx(dense)
