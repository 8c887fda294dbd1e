"""s3core.diagnostics on models whose answers are known by hand (issue 20)."""
import math

import numpy as np
import pytest
import torch

from s3core.config import S3Config
from s3core.control import control_benchmark, control_config, control_model
from s3core.diagnostics import auc, cannot_act, diagnostics_batch, masking_headroom, routing_diagnostics
from s3core.encoder import S3Model
from s3core.tensors import to_tensors


def test_auc_by_hand():
    assert auc(torch.tensor([0.1, 0.4, 0.35, 0.8]), torch.tensor([0, 0, 1, 1])) == 0.75
    assert auc(torch.tensor([0.5, 0.5, 0.5]), torch.tensor([1, 0, 0])) == 0.5       # ties count half
    assert auc(torch.tensor([0.9, 0.1]), torch.tensor([1, 0])) == 1.0
    assert math.isnan(auc(torch.tensor([0.2, 0.3]), torch.tensor([1, 1])))


@torch.no_grad()
def test_a_hand_built_router_has_the_entropy_and_moe_share_computed_by_hand():
    """Every token the same vector v in the residual, a router with logits (a, 0), experts that
    output b2 = u whatever their input: gate sigmoid(a), entropy H(sigmoid(a)) / log 2 for every
    token and for the batch mean, MoE share gate * |u| / |v|."""
    cfg = S3Config(d_model=8, n_layers=1, n_heads=2, d_ff=4, chi=1, rho=2, proj_dim=4)
    model = S3Model({"x1": 3}, {"x1": 5}, cfg)
    enc = model.encoders["x1"]
    for p in enc.parameters():
        p.zero_()
    for ln in (enc.blocks[0].ln1, enc.blocks[0].ln2, enc.ln_f):
        ln.weight.fill_(1.0)
    v = torch.tensor([3.0, -1.0, 2.0, 0.0, 1.0, -2.0, -3.0, 0.0])            # mean 0
    enc.input_proj.bias.copy_(v)
    ffn = enc.blocks[0].ffn
    ln_v = torch.nn.functional.layer_norm(v, (8,))
    a = 1.5
    ffn.router.weight[0] = a * ln_v / (ln_v @ ln_v)                          # logit 0 = a, logit 1 = 0
    u = torch.tensor([0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]) * 2.0
    ffn.b2.copy_(u.expand(2, 8))
    x, mask = torch.randn(6, 5, 3), torch.ones(6, 5, dtype=torch.bool)
    mask[0, :2] = False
    out = routing_diagnostics(model, {"x1": (x, mask)})
    g = 1 / (1 + math.exp(-a))
    h = -(g * math.log(g) + (1 - g) * math.log(1 - g)) / math.log(2)
    assert out["diag/local_entropy/x1/L0"] == pytest.approx(h, abs=1e-5)
    assert out["diag/global_entropy/x1/L0"] == pytest.approx(h, abs=1e-5)
    assert out["diag/moe_share/x1/L0"] == pytest.approx(g * 2.0 / float(v.norm()), rel=1e-5)
    assert out["diag/moe_share"] == out["diag/moe_share/x1/L0"]
    assert cannot_act(out) == []                                            # share 0.31, entropy 0.69
    assert cannot_act({**out, "diag/moe_share": 0.1, "diag/local_entropy": 0.95}) == [
        "MoE share 0.10 < 0.2", "local entropy 0.95 > 0.9"]


def test_the_positive_control_ranks_every_event_pair_first_and_has_headroom():
    bench = control_benchmark(0, n_train=400, n_valid=200, n_test=200)
    data = to_tensors(bench)
    cfg = control_config(keep_ratios=(1.0,))
    model = control_model(data, cfg)
    out = routing_diagnostics(model, *diagnostics_batch(data, bench.meta))
    assert out["diag/gate_auc"] == 1.0                 # every event-step gate above every noise-step gate
    assert out["diag/gate_auc/x1/L0"] == out["diag/gate_auc/x2/L0"] == 1.0
    assert out["diag/local_entropy"] > 0.5             # noise steps: gates (0.5, 0.5), entropy 1
    from s3core.stages import sparsify

    full = sparsify(model, data, cfg, progress=False)[0]["test_acc"]
    room = masking_headroom(model, data, cfg, bench.meta, full)
    assert room["diag/headroom"] > 0.05 and room["diag/masked_test_acc"] == pytest.approx(full + room["diag/headroom"])
    assert masking_headroom(model, data, cfg, {}, full) == {}


def test_the_curve_says_how_far_pruning_moved_the_embedding():
    from s3core.control import control_curve

    curve = control_curve(0, "batch", keep_ratios=(1.0, 0.2), n_train=300, n_valid=100, n_test=100)
    assert curve[0]["embed_cos_dist"] == pytest.approx(0.0, abs=1e-6)
    assert 0.0 < curve[1]["embed_cos_dist"] <= 2.0


def test_a_trial_logs_diagnostics_every_epoch_and_in_its_summary():
    from s3core.data import SyntheticConfig, make_synthetic
    from s3core.pipeline import run_trial

    bench = make_synthetic(SyntheticConfig(variant="localized", n_train=64, n_valid=32, n_test=32, seq_len=6,
                                           event_steps=2, dims=(4, 5)))
    cfg = S3Config(d_model=8, n_heads=2, d_ff=16, chi=2, rho=2, proj_dim=4, batch_size=32, epochs_special=1,
                   epochs_select=1, keep_ratios=(1.0, 0.5), probe_l2=(1e-2,), epoch_probe=False)
    res = run_trial(bench, cfg, "s3", progress=False)
    for row in res.history:
        assert {"diag/local_entropy/x1/L0", "diag/moe_share/x2/L0", "diag/gate_auc"} <= set(row)
        assert 0 <= row["diag/local_entropy"] <= 1 and 0 <= row["diag/gate_auc"] <= 1
    assert "diag/headroom" in res.summary and "diag/moe_share" in res.summary
    assert np.isfinite(res.curve[1]["embed_cos_dist"])
    off = run_trial(bench, cfg.replace(diagnostics=False), "s3", progress=False)
    assert not any(k.startswith("diag/") for k in off.summary)
