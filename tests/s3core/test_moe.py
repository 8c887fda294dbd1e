import math

import pytest
import torch

from s3core.config import ConfigError, MoEConfig, S3Config
from s3core.moe import DenseFFN, MoEFFN, num_kept, top_pairs


def _layer(seed=0, **kw):
    torch.manual_seed(seed)
    cfg = MoEConfig(**{"d_model": 16, "d_ff": 32, "chi": 4, "rho": 2, **kw})
    layer = MoEFFN(cfg)
    # a router with real preferences, so top-k and pruning are not decided by ties
    torch.nn.init.normal_(layer.router.weight, std=1.0)
    return layer


def test_chi_rho_topk_one_equals_dense_ffn():
    torch.manual_seed(0)
    dense = DenseFFN(16, 32)
    moe = MoEFFN(MoEConfig(d_model=16, d_ff=32, chi=1, rho=1, top_k=1))
    with torch.no_grad():
        moe.w1[0].copy_(dense.fc1.weight.T)
        moe.b1[0].copy_(dense.fc1.bias)
        moe.w2[0].copy_(dense.fc2.weight.T)
        moe.b2[0].copy_(dense.fc2.bias)
    x = torch.randn(3, 5, 16)
    torch.testing.assert_close(moe(x).output, dense(x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dispatch", ["fused", "grouped_mm", "loop"])
def test_keep_ratio_one_is_exactly_unpruned(dispatch):
    layer = _layer(dispatch=dispatch)
    x = torch.randn(4, 6, 16)
    default = layer(x).output
    assert torch.equal(layer(x, keep_ratio=1.0).output, default)
    # through the pruning code path with every pair kept: the same pairs, summed in another order
    almost_one = 1 - 1e-9
    assert num_kept(4 * 6 * layer.cfg.k, almost_one) == 4 * 6 * layer.cfg.k
    torch.testing.assert_close(layer(x, keep_ratio=almost_one).output, default, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dispatch", ["fused", "grouped_mm", "auto"])
@pytest.mark.parametrize("keep_ratio", [1.0, 0.5])
@pytest.mark.parametrize("loss", ["sum", "weighted"])
def test_dispatch_agrees_with_loop_forward_and_backward(dispatch, keep_ratio, loss):
    x = torch.randn(4, 6, 16)
    mask = torch.ones(4, 6, dtype=torch.bool)
    mask[0, :2] = False
    weight = torch.randn(4, 6, 16)
    outs, grads = [], []
    for d in (dispatch, "loop"):
        layer = _layer(dispatch=d)
        xi = x.clone().requires_grad_(True)
        out = layer(xi, token_mask=mask, keep_ratio=keep_ratio).output
        # .sum() gives a stride-0 grad: grouped_mm's CPU backward must cope
        (out.sum() if loss == "sum" else (out * weight).sum()).backward()
        outs.append(out.detach())
        grads.append((xi.grad, layer.w1.grad, layer.b1.grad, layer.w2.grad, layer.b2.grad,
                      layer.router.weight.grad))
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-5, atol=1e-5)
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("dispatch", ["fused", "grouped_mm", "loop"])
def test_every_dispatch_matches_the_per_pair_reference(dispatch):
    layer = _layer(seed=2, dispatch=dispatch)
    x = torch.randn(2, 5, 16)
    with torch.no_grad():
        res = layer(x, keep_ratio=0.3)
        ref, _ = _reference(layer, x, 0.3)
    torch.testing.assert_close(res.output, ref, rtol=1e-5, atol=1e-5)


def test_fused_dispatch_with_frozen_experts_trains_only_the_router():
    layer = _layer(dispatch="fused")
    for p in (layer.w1, layer.b1, layer.w2, layer.b2):
        p.requires_grad_(False)
    layer(torch.randn(2, 3, 16)).output.pow(2).sum().backward()
    assert layer.router.weight.grad is not None and layer.w1.grad is None


def test_auto_dispatch_is_fused_on_the_cpu():
    from s3core.moe import resolve_dispatch
    assert resolve_dispatch("auto", torch.device("cpu")) == "fused"
    assert resolve_dispatch("loop", torch.device("cpu")) == "loop"


def _reference(layer, x, keep_ratio):
    """Per-pair reference: keep the top fraction of (token, expert) pairs by router score."""
    D = x.shape[-1]
    tokens = x.reshape(-1, D)
    probs = layer.router(tokens).softmax(-1)
    gate, idx = probs.topk(layer.cfg.k, dim=-1)
    pairs = [(float(gate[t, j]), t, int(idx[t, j])) for t in range(tokens.shape[0]) for j in range(layer.cfg.k)]
    pairs.sort(key=lambda r: -r[0])
    pairs = pairs[:num_kept(len(pairs), keep_ratio)]
    out = torch.zeros_like(tokens)
    for g, t, e in pairs:
        h = torch.nn.functional.gelu(tokens[t] @ layer.w1[e] + layer.b1[e])
        out[t] += g * (h @ layer.w2[e] + layer.b2[e])
    return out.reshape(x.shape), len(pairs)


@pytest.mark.parametrize("keep_ratio", [1.0, 0.7, 0.3, 0.1])
def test_pruning_keeps_the_highest_scored_pairs(keep_ratio):
    layer = _layer(seed=1)
    x = torch.randn(2, 5, 16)
    with torch.no_grad():
        res = layer(x, keep_ratio=keep_ratio)
        ref, kept = _reference(layer, x, keep_ratio)
    torch.testing.assert_close(res.output, ref, rtol=1e-5, atol=1e-5)
    assert float(res.kept_fraction) == pytest.approx(kept / (2 * 5 * layer.cfg.k))


@pytest.mark.parametrize("n_keep", [0, 1, 400, 500, 501, 999, 1000])
def test_top_pairs_is_the_topk_set_on_both_paths(n_keep):
    # n_keep > n / 2 takes the drop-the-lowest path on the CPU, the rest plain topk
    scores = torch.rand(1000, generator=torch.Generator().manual_seed(n_keep))
    got = top_pairs(scores, n_keep)
    assert got.shape == (n_keep,) and got.unique().numel() == n_keep
    assert set(got.tolist()) == set(scores.topk(n_keep).indices.tolist())


def test_num_kept_rounds_up_and_keeps_at_least_one():
    assert num_kept(10, 0.3) == 3          # 0.3 * 10 is 3.0000000000000004 in floats
    assert num_kept(10, 0.25) == 3
    assert num_kept(10, 0.01) == 1
    assert num_kept(0, 0.5) == 0
    assert num_kept(7, 1.0) == 7


def test_padding_tokens_are_not_routed():
    layer = _layer()
    x = torch.randn(2, 4, 16)
    mask = torch.tensor([[False, False, True, True], [True, True, True, True]])
    res = layer(x, token_mask=mask)
    assert torch.equal(res.output[0, :2], torch.zeros(2, 16))
    # real tokens are unaffected by the padding next to them
    alone = layer(x[1:], token_mask=mask[1:]).output
    torch.testing.assert_close(res.output[1], alone[0])
    # the pruning pool holds real tokens only: 6 real tokens x k pairs
    res_p = layer(x, token_mask=mask, keep_ratio=0.5)
    assert float(res_p.kept_fraction) == pytest.approx(num_kept(6 * layer.cfg.k, 0.5) / (6 * layer.cfg.k))


def test_aux_parts_by_hand_for_a_uniform_router():
    torch.manual_seed(0)
    layer = MoEFFN(MoEConfig(d_model=8, d_ff=8, chi=2, rho=2, top_k=2))  # E = 4, k = 2
    torch.nn.init.zeros_(layer.router.weight)      # uniform probabilities 1/4
    res = layer(torch.randn(1, 6, 8))
    parts = res.aux_parts
    assert float(parts["local_entropy"]) == pytest.approx(1.0)   # normalised by log E
    assert float(parts["global_entropy"]) == pytest.approx(1.0)
    # E * sum_i f_i * P_i with P_i = 1/4 and sum_i f_i = 1 gives exactly 1 whatever the ties chose
    assert float(parts["load_balance"]) == pytest.approx(1.0)
    assert float(res.expert_load.sum()) == pytest.approx(1.0)
    expected = 1.0 * 1.0 + 0.1 * 1.0 - 0.1 * 1.0
    assert float(res.aux_loss) == pytest.approx(expected)


def test_aux_parts_by_hand_for_a_collapsed_router():
    layer = MoEFFN(MoEConfig(d_model=4, d_ff=4, chi=1, rho=4, top_k=1))  # E = 4, k = 1
    with torch.no_grad():
        layer.router.weight.zero_()
        layer.router.weight[0, 0] = 100.0          # every token (x[0] = 1) goes to expert 0
    x = torch.zeros(1, 3, 4)
    x[..., 0] = 1.0
    parts = layer(x).aux_parts
    assert float(parts["load_balance"]) == pytest.approx(4.0, rel=1e-4)  # E * 1 * 1
    assert float(parts["local_entropy"]) == pytest.approx(0.0, abs=1e-4)
    assert float(parts["global_entropy"]) == pytest.approx(0.0, abs=1e-4)


@pytest.mark.parametrize("kw, field", [
    (dict(chi=3), "chi"), (dict(chi=0), "chi"), (dict(rho=0), "rho"),
    (dict(chi=2, rho=2, top_k=5), "top_k"), (dict(d_ff=30, chi=4), "d_ff"), (dict(dispatch="magic"), "dispatch"),
])
def test_bad_moe_config_is_refused_with_the_field_named(kw, field):
    with pytest.raises(ConfigError, match=field) as err:
        MoEConfig(**{"d_model": 8, "d_ff": 32, **kw}).validate()
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("p", [0.0, -0.1, 1.5, math.nan])
def test_keep_ratio_outside_unit_interval_is_refused(p):
    with pytest.raises(ConfigError, match="keep-ratio"):
        _layer()(torch.randn(1, 2, 16), keep_ratio=p)
    with pytest.raises(ConfigError, match="keep-ratio"):
        S3Config(keep_ratios=(1.0, p)).validate()


def _two_layer_model_and_batch():
    from s3core.data import SyntheticConfig, make_synthetic
    from s3core.pipeline import build_model
    from s3core.tensors import standardise, to_tensors

    data = to_tensors(make_synthetic(SyntheticConfig(n_train=64, n_valid=16, n_test=16, seq_len=6, dims=(5, 7),
                                                     pad_fraction=0.3, seed=4)))
    cfg = S3Config(d_model=16, n_layers=2, n_heads=2, d_ff=32, chi=4, rho=2, proj_dim=8, keep_ratios=(1.0, 0.5))
    model = build_model(data, cfg, "s3").eval()
    # routers with real preferences, so pruning is not decided by near-ties of a fresh init
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("router.weight"):
                p.normal_(std=1.0)
    inputs, _ = data["train"].batch(torch.arange(64))
    return model, standardise(inputs, data), cfg


@pytest.mark.parametrize("p", [0.7, 0.3])
def test_every_block_of_a_two_layer_encoder_prunes(p):
    model, inputs, cfg = _two_layer_model_and_batch()
    with torch.no_grad():
        full, pruned = model(inputs), model(inputs, keep_ratio=p)
    for m, out in pruned.items():
        kept = [float(k) for k in out.intermediates["routing"]["kept_fraction"]]
        assert len(kept) == cfg.n_layers == 2
        assert kept == pytest.approx([p, p], abs=0.01), (m, kept)      # ceil(p * pairs) / pairs
        assert [float(k) for k in full[m].intermediates["routing"]["kept_fraction"]] == [1.0, 1.0]
        assert not torch.equal(out.z, full[m].z), f"{m}: pruning to p = {p} left z unchanged"


def _never_pruning(model):
    """A copy of `model` whose MoE layers ignore keep_ratio: the unpruned model, by construction."""
    import copy

    ref = copy.deepcopy(model)
    for module in ref.modules():
        if isinstance(module, MoEFFN):
            module.forward = lambda x, token_mask=None, keep_ratio=1.0, _f=module.forward: _f(x, token_mask=token_mask)
    return ref


def test_a_two_layer_model_at_p_one_is_bit_identical_to_the_unpruned_model():
    """Stage 3 at p = 1 scores exactly the unpruned model (MoE layers that cannot prune), which is
    also the forward Stages 1-2 train (no keep_ratio argument); p just below 1, which keeps every
    pair through the pruning path, gives the same z up to summation order."""
    model, inputs, _ = _two_layer_model_and_batch()
    with torch.no_grad():
        unpruned = _never_pruning(model)(inputs, keep_ratio=0.3)
        training_forward = model(inputs)
        at_one = model(inputs, keep_ratio=1.0)
        all_pairs = model(inputs, keep_ratio=1 - 1e-9)
    for m in unpruned:
        assert [float(k) for k in at_one[m].intermediates["routing"]["kept_fraction"]] == [1.0, 1.0]
        assert torch.equal(at_one[m].z, unpruned[m].z), m
        assert torch.equal(training_forward[m].z, unpruned[m].z), m
        torch.testing.assert_close(all_pairs[m].z, unpruned[m].z, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("keep_ratio", [1.0, 0.5])
def test_row_stable_path_computes_the_same_layer(keep_ratio):
    layer = _layer(seed=3)
    x = torch.randn(3, 7, 16)
    mask = torch.rand(3, 7) > 0.3
    with torch.no_grad():
        fused = layer(x, token_mask=mask, keep_ratio=keep_ratio).output
        layer.row_stable = True
        stable = layer(x, token_mask=mask, keep_ratio=keep_ratio).output
    torch.testing.assert_close(stable, fused, rtol=1e-5, atol=1e-6)


def test_row_stable_token_output_does_not_depend_on_the_other_tokens():
    """Without pruning every token is computed alone; on the row-stable path that holds to the
    last bit (a 1-token product and the same row in a 200-token one use other BLAS kernels)."""
    layer = _layer(seed=4)
    layer.row_stable = True
    x = torch.randn(1, 200, 16)
    with torch.no_grad():
        full = layer(x).output[0]
        for i in (0, 13, 199):
            assert torch.equal(layer(x[:, i:i + 1]).output[0, 0], full[i])
            assert torch.equal(layer(x[:, i:i + 5]).output[0, 0], full[i])


def test_prune_threshold_keeps_each_tokens_pairs_at_or_above_it():
    layer = _layer(seed=5)
    x = torch.randn(2, 6, 16)
    with torch.no_grad():
        probs = layer.router(x.reshape(-1, 16)).softmax(-1)
        gates = probs.topk(layer.cfg.k, dim=-1).values.reshape(-1)
        threshold = float(gates.median())
        layer.prune_threshold = threshold
        res = layer(x)
        kept = int((gates >= threshold).sum())
        assert float(res.kept_fraction) == pytest.approx(kept / gates.numel())
        # the reference: keep_ratio = kept / n picks the same pairs (the top ones) when no ties
        layer.prune_threshold = None
        ref = layer(x, keep_ratio=kept / gates.numel())
    torch.testing.assert_close(res.output, ref.output, rtol=1e-5, atol=1e-6)
