"""Each Stage 3 curve point's cost: the expert FLOPs per test sample its forwards computed
(s3core.flops.count_expert_pairs via stages.embed_splits), against a hand count."""
from __future__ import annotations

import pytest

from s3core.config import S3Config
from s3core.data import SyntheticConfig, make_synthetic
from s3core.flops import count_expert_pairs
from s3core.pipeline import build_model
from s3core.stages import embed_splits
from s3core.tensors import embed, to_tensors

# d_model 8, d_ff 16, chi 2 -> top_k 2 experts of hidden width 8 each: one kept pair costs
# 2 matmuls x 8 x 8 multiply-adds x 2 FLOPs = 256 FLOPs.
CFG = S3Config(d_model=8, n_heads=2, d_ff=16, chi=2, rho=2, proj_dim=4, n_layers=1, batch_size=4,
               eval_batch_size=4, seed=0)
PER_PAIR = 256


@pytest.fixture(scope="module")
def tiny():
    # 6 test samples of 4 steps in each of 2 modalities, every step real
    bench = make_synthetic(SyntheticConfig(n_train=8, n_valid=4, n_test=6, seq_len=4, dims=(3, 5)))
    data = to_tensors(bench)
    return build_model(data, CFG, "s3").eval(), data


# Hand count, per modality and layer: batches of 4 and 2 samples, 4 tokens each, 2 pairs per token.
#   p = 1:   (32 + 16) pairs kept                                  -> 2 modalities: 96 pairs
#   p = 0.5: ceil(0.5 * 32) + ceil(0.5 * 16) = 16 + 8              -> 48 pairs
#   p = 0.3: ceil(9.6) + ceil(4.8) = 10 + 5                         -> 30 pairs
@pytest.mark.parametrize("p, kept_pairs", [(1.0, 96), (0.5, 48), (0.3, 30)])
def test_curve_point_flops_match_a_hand_count(tiny, p, kept_pairs):
    model, data = tiny
    _, extra = embed_splits(model, data, CFG, p)
    assert extra["expert_flops"] == kept_pairs * PER_PAIR / 6


def test_two_layers_count_twice_and_padding_steps_are_not_routed():
    cfg = CFG.replace(n_layers=2)
    bench = make_synthetic(SyntheticConfig(n_train=8, n_valid=4, n_test=6, seq_len=4, dims=(3, 5),
                                           pad_fraction=0.5))
    data = to_tensors(bench)
    model = build_model(data, cfg, "s3").eval()
    # every real step routes 2 pairs in each of 2 layers; a sample with no real step routes its first
    tokens = sum(data["test"].masks[m].sum(1).clamp_min(1).sum().item() for m in data.modalities)
    with count_expert_pairs(model) as count:
        embed(model, data, "test", 1.0, 4)
    assert count.chosen == count.kept == tokens * 2 * 2
    assert count.flops == tokens * 2 * 2 * PER_PAIR
    assert len(count.per_layer) == 4      # 2 modalities x 2 layers


def test_the_threshold_scope_counts_what_it_computes(tiny):
    model, data = tiny
    _, extra = embed_splits(model, data, CFG.replace(prune_scope="threshold"), 1.0)
    # p = 1 prunes nothing; the last batch (2 samples) is padded with 2 empty samples, which
    # route their first step (1 token x 2 pairs x 2 modalities each): 96 + 8 pairs computed
    assert extra["expert_flops"] == 104 * PER_PAIR / 6
    _, extra = embed_splits(model, data, CFG.replace(prune_scope="threshold"), 0.5)
    assert 0 < extra["expert_flops"] < 104 * PER_PAIR / 6
