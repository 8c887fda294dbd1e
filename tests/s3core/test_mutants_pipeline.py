"""A trial's stages, resume, summary and saved model (s3core.stages, s3core.pipeline) on a tiny
model and data set, fast enough to run once per mutant. Written to kill the mutants that survived
scripts/mutation.sh (docs/RELIABILITY.md, "Mutation testing"): each test checks values a trial
produces, through the public functions."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from s3core.config import ConfigError, S3Config
from s3core.data import SyntheticConfig, make_synthetic
from s3core.data.base import DataError
from s3core.encoder import is_router_param
from s3core.pipeline import (TrialResult, build_model, check_fits, checkpoint_state, method_config, method_stages,
                             model_from_state, restore_rng, run_trial, summarize, trained_model_state)
from s3core.stages import (SELECTION, SPECIALIZATION, DivergenceError, EpochEnd, choose_on_valid, embed_splits,
                           epoch_generator, run_stage, select_loss, sparsify, special_loss, supervised_loss,
                           train_stage)
from s3core.tensors import standardise

MICRO = S3Config(d_model=8, n_layers=1, n_heads=2, d_ff=16, chi=2, rho=2, proj_dim=4, batch_size=16,
                 epochs_special=1, epochs_select=1, eval_batch_size=32, epoch_probe=False,
                 keep_ratios=(1.0, 0.5), probe_l2=(1e-2,), probe_max_iter=50)


@pytest.fixture(scope="module")
def data():
    from s3core.tensors import to_tensors
    return to_tensors(make_synthetic(SyntheticConfig(n_train=32, n_valid=16, n_test=16, seq_len=3, dims=(4, 3),
                                                     pad_fraction=0.3, seed=5)))


def untimed(rows):
    return [{k: v for k, v in r.items() if not (k.startswith("time") or k.endswith("_s"))} for r in rows]


# ------------------------------------------------------------------------------ pure functions

def test_choose_on_valid_takes_the_best_valid_and_the_larger_p_on_a_tie():
    curve = [{"keep_ratio": 0.2, "valid_acc": 0.8}, {"keep_ratio": 0.7, "valid_acc": 0.8},
             {"keep_ratio": 1.0, "valid_acc": 0.6}, {"keep_ratio": 0.5, "valid_acc": 0.79}]
    assert choose_on_valid(curve)["keep_ratio"] == 0.7
    assert choose_on_valid(curve[2:])["keep_ratio"] == 0.5


def test_summarize_reads_the_chosen_point_and_the_unpruned_one():
    curve = [{"keep_ratio": 1.0, "valid_acc": 0.5, "test_acc": 0.25, "test_f1": 0.2},
             {"keep_ratio": 0.4, "valid_acc": 0.75, "test_acc": 0.625, "test_f1": 0.6},
             {"keep_ratio": 0.3, "valid_acc": 0.75, "test_acc": 0.125, "test_f1": 0.1}]
    assert summarize(curve) == {"best_keep_ratio": 0.4, "best_valid_acc": 0.75, "test_acc_at_best": 0.625,
                                "test_f1_at_best": 0.6, "test_acc_no_prune": 0.25, "valid_acc_no_prune": 0.5}
    assert summarize(curve[1:]) == {"best_keep_ratio": 0.4, "best_valid_acc": 0.75, "test_acc_at_best": 0.625,
                                    "test_f1_at_best": 0.6}


def test_check_fits_bounds_the_batch_size(data):
    check_fits(data, MICRO.replace(batch_size=32))
    check_fits(data, MICRO.replace(batch_size=2))
    with pytest.raises(ConfigError, match="exceeds the train split"):
        check_fits(data, MICRO.replace(batch_size=33))
    with pytest.raises(ConfigError, match=">= 2"):
        check_fits(data, MICRO.replace(batch_size=1))


def test_method_stages_and_configs():
    cfg = MICRO.replace(epochs_special=3, epochs_select=2)
    assert method_stages("s3", cfg) == [("special", 3), ("select", 2)]
    assert method_stages("s3_no_select", cfg) == [("special", 3)]
    assert method_stages("clip", method_config(cfg, "clip")) == [("special", 5)]
    assert method_stages("supervised", method_config(cfg, "supervised")) == [("supervised", 5)]
    assert method_stages("raw_probe", cfg) == []
    assert method_config(cfg, "s3") == cfg


def test_trial_result_as_dict_leaves_the_model_out():
    res = TrialResult("s3", {"chi": 2}, [{"epoch": 0}], [{"keep_ratio": 1.0}], {"best_keep_ratio": 1.0}, 2.5,
                      model=torch.nn.Linear(1, 1))
    assert res.as_dict() == {"method": "s3", "config": {"chi": 2}, "history": [{"epoch": 0}],
                             "curve": [{"keep_ratio": 1.0}], "summary": {"best_keep_ratio": 1.0}, "seconds": 2.5}


def test_epoch_generator_depends_on_seed_stage_and_epoch_only():
    def draw(*args):
        return torch.rand(4, generator=epoch_generator(*args, "cpu"))
    assert torch.equal(draw(0, "special", 1), draw(0, "special", 1))
    for other in [(1, "special", 1), (0, "select", 1), (0, "special", 2)]:
        assert not torch.equal(draw(0, "special", 1), draw(*other)), other


# --------------------------------------------------------------------------------- the losses

def test_stage_losses_are_the_weighted_sums_of_their_parts(data):
    model = build_model(data, MICRO, "s3")
    idx = torch.arange(16)
    cfg = MICRO.replace(lambda_rep=0.5, lambda_dsc=2.0, lambda_aux=3.0, lambda_suff=0.25, lambda_min=4.0)
    total, parts = special_loss(model, data, cfg, idx, torch.Generator().manual_seed(0))
    assert set(parts) == {"rep", "dsc", "aux", "load_balance", "local_entropy", "global_entropy"}
    assert float(total) == pytest.approx(float(0.5 * parts["rep"] + 2.0 * parts["dsc"] + 3.0 * parts["aux"]),
                                         rel=1e-6)
    # the routing means are means over the encoders' layers of the MoE's own statistics
    outs = model(standardise(data["train"].batch(idx)[0], data))
    for name in ("load_balance", "local_entropy", "global_entropy"):
        assert 0.0 < float(parts[name]) < 2.0, name
    total, parts = select_loss(model, data, cfg, idx, None)
    assert set(parts) == {"suff", "min", "load_balance", "local_entropy", "global_entropy"}
    assert float(total) == pytest.approx(float(0.25 * parts["suff"] + 4.0 * parts["min"]), rel=1e-6)
    for name in ("load_balance", "local_entropy", "global_entropy"):
        expected = torch.stack([torch.stack(o.intermediates["routing"][name]).mean() for o in outs.values()]).mean()
        assert float(parts[name]) == pytest.approx(float(expected), rel=1e-5), name
    # Stage 1's two views are different draws: the intra-modal InfoNCE is not the one of equal views
    model.eval()
    total_a, _ = special_loss(model, data, cfg, idx, torch.Generator().manual_seed(0))
    total_b, _ = special_loss(model, data, cfg, idx, torch.Generator().manual_seed(0))
    total_c, _ = special_loss(model, data, cfg, idx, torch.Generator().manual_seed(1))
    assert float(total_a) == float(total_b) != float(total_c)


def test_supervised_loss_is_the_cross_entropy_of_the_head(data):
    model = build_model(data, MICRO, "supervised")
    idx = torch.arange(8, 24)
    loss, parts = supervised_loss(model, data, MICRO, idx, None)
    inputs, labels = data["train"].batch(idx)
    outs = model(standardise(inputs, data))
    logits = model.task_head(torch.cat([outs[m].z for m in data.modalities], 1))
    assert parts == {} and float(loss) == pytest.approx(float(F.cross_entropy(logits, labels)), rel=1e-6)


# ------------------------------------------------------------------------------ training loop

def test_train_stage_reports_epoch_means_resumes_and_stops_on_divergence(data):
    model = build_model(data, MICRO, "s3")
    values = iter([1.0, 3.0, 2.0, 6.0, 0.5, 0.5])   # two batches an epoch (32 rows, batch 16)
    seen_idx = []

    def loss_fn(model, data, cfg, idx, gen):
        seen_idx.append(idx.clone())
        out = model(standardise(data["train"].batch(idx)[0], data))
        loss = sum(o.z.sum() for o in out.values()) * 0.0 + next(values)
        return loss, {"part": torch.tensor(2.0 * len(seen_idx))}

    ends = []
    history = train_stage("special", model, data, MICRO, loss_fn=loss_fn, params=list(model.parameters()),
                          lr=1e-3, epochs=3, start_epoch=1, on_epoch=ends.append, progress=False)
    assert [(e.stage, e.epoch) for e in ends] == [("special", 1), ("special", 2)]
    assert [h["loss"] for h in history] == [2.0, 4.0] and [h["part"] for h in history] == [3.0, 7.0]
    assert all(h["time_s"] > 0 and "valid_acc" not in h for h in history)
    assert ends[0].metrics is history[0] and ends[0].model is model and ends[0].history is None
    # the batches are the seeded shuffle of each epoch: a permutation of the train rows
    assert sorted(torch.cat(seen_idx[:2]).tolist()) == list(range(32))
    assert not torch.equal(torch.cat(seen_idx[:2]), torch.cat(seen_idx[2:4]))
    # the optimizer state given is the one stepped from (AdamW's step count continues)
    state = ends[-1].optimizer.state_dict()
    steps = [s["step"] for s in state["state"].values()]
    assert steps and all(float(s) == 4 for s in steps)
    ends2 = []
    train_stage("special", model, data, MICRO, loss_fn=lambda *a: (loss_fn(*a)[0] * 0 + 1.0, {}),
                params=list(model.parameters()), lr=1e-3, epochs=4, start_epoch=3, optimizer_state=state,
                on_epoch=ends2.append, progress=False)
    assert all(float(s["step"]) == 6 for s in ends2[-1].optimizer.state_dict()["state"].values())

    def nan_part(model, data, cfg, idx, gen):
        loss, _ = loss_fn(model, data, cfg, idx, gen)
        return loss * 0 + 1.0, {"rep": torch.tensor(float("inf"))}
    values = iter([1.0] * 4)
    with pytest.raises(DivergenceError, match=r"special epoch 0: loss diverged \(\{'rep': inf\}\)"):
        train_stage("special", model, data, MICRO, loss_fn=nan_part, params=list(model.parameters()), lr=1e-3,
                    epochs=1, progress=False)
    values = iter([float("nan")] * 4)
    with pytest.raises(DivergenceError, match="'loss': nan"):
        train_stage("special", model, data, MICRO, loss_fn=lambda *a: (loss_fn(*a)[0], {}),
                    params=list(model.parameters()), lr=1e-3, epochs=1, progress=False)


def test_the_epoch_probe_reports_a_valid_accuracy(data):
    model = build_model(data, MICRO, "s3")
    history = run_stage(SPECIALIZATION, model, data, MICRO.replace(epoch_probe=True), progress=False)
    assert 0.0 <= history[0]["valid_acc"] <= 1.0


def test_run_stage_trains_its_parameters_with_its_fields_then_unfreezes(data):
    model = build_model(data, MICRO, "s3")
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    history = run_stage(SELECTION, model, data, MICRO.replace(epochs_select=2, lr_select=0.5, lr=0.0),
                        progress=False)
    assert len(history) == 2
    for name, p in model.named_parameters():
        assert p.requires_grad, name
        if is_router_param(name):
            # lr_select = 0.5: a big step; lr (Stage 1's) is 0 and must not be the one used
            assert (p - before[name]).abs().max() > 0.1, name
        else:
            assert torch.equal(p, before[name]), name
    history = run_stage(SPECIALIZATION, model, data, MICRO.replace(epochs_special=3, lr=0.0, lr_select=0.5),
                        progress=False)
    assert len(history) == 3


# ---------------------------------------------------------------------------------- a trial

def test_a_trial_runs_its_stages_then_sweeps_and_summarises(data):
    seen = []
    cfg = MICRO.replace(epochs_special=2)
    res = run_trial(data, cfg, "s3", progress=False, on_epoch=lambda ev: seen.append((ev.stage, ev.epoch,
                                                                                      len(ev.history))))
    assert seen == [("special", 0, 1), ("special", 1, 2), ("select", 0, 3)]
    assert [(h["stage"], h["epoch"]) for h in res.history] == [("special", 0), ("special", 1), ("select", 0)]
    assert {"loss", "rep", "dsc", "aux"} <= set(res.history[0]) and {"suff", "min"} <= set(res.history[2])
    assert [r["keep_ratio"] for r in res.curve] == [1.0, 0.5]
    # the summary: summarize's keys, and the diagnostics' (s3core.diagnostics) beside them
    assert {k: v for k, v in res.summary.items() if not k.startswith("diag/")} == summarize(res.curve)
    assert "diag/moe_share" in res.summary
    assert res.method == "s3" and res.config == cfg.to_dict() and res.seconds > 0
    assert isinstance(res.model, torch.nn.Module)
    # the trained model is the one the curve was measured on
    again = sparsify(res.model, data, cfg, progress=False)
    assert untimed(again) == untimed(res.curve)
    clip = run_trial(data, cfg, "clip", progress=False)
    assert clip.config == method_config(cfg, "clip").to_dict() and clip.config["chi"] == 1
    assert [(h["stage"], h["epoch"]) for h in clip.history] == [("special", 0), ("special", 1), ("special", 2)]
    raw = run_trial(data, cfg, "raw_probe", progress=False)
    assert raw.history == [] and raw.model is None and raw.summary == summarize(raw.curve)
    assert raw.config == method_config(cfg, "raw_probe").to_dict()


def test_resume_continues_where_the_checkpoint_stopped(data):
    cfg = MICRO.replace(epochs_special=2, epochs_select=1, dropout=0.1)
    states = []
    # a copy, as the executors' torch.save makes one: the state holds the live tensors
    full = run_trial(data, cfg, "s3", progress=False,
                     on_epoch=lambda ev: states.append(copy.deepcopy(checkpoint_state(ev))))
    assert [(s["stage"], s["epoch"]) for s in states] == [("special", 0), ("special", 1), ("select", 0)]
    assert len(states[0]["history"]) == 1 and len(states[2]["history"]) == 3
    torch.rand(3)   # the global RNG moved on: restore_rng must put it back
    seen = []
    resumed = run_trial(data, cfg, "s3", progress=False, resume=states[0],
                        on_epoch=lambda ev: seen.append((ev.stage, ev.epoch)))
    assert seen == [("special", 1), ("select", 0)]
    assert untimed(resumed.history) == untimed(full.history)
    assert untimed(resumed.curve) == untimed(full.curve)
    # after the last epoch of a stage: the next stage starts at its epoch 0
    seen.clear()
    resumed = run_trial(data, cfg, "s3", progress=False, resume=states[1],
                        on_epoch=lambda ev: seen.append((ev.stage, ev.epoch)))
    assert seen == [("select", 0)] and untimed(resumed.curve) == untimed(full.curve)
    # after the very last epoch: nothing trains, Stage 3 runs on the checkpoint's model
    resumed = run_trial(data, cfg, "s3", progress=False, resume=states[2], on_epoch=seen.append)
    assert seen == [("select", 0)] and untimed(resumed.history) == untimed(full.history)
    assert untimed(resumed.curve) == untimed(full.curve)
    with pytest.raises(DataError, match="stage 'select', which method 's3_no_select' does not have"):
        run_trial(data, cfg, "s3_no_select", progress=False, resume=states[2])


def test_checkpoint_state_and_restore_rng(data):
    model = build_model(data, MICRO, "s3")
    opt = torch.optim.AdamW(model.parameters())
    rng = torch.get_rng_state()
    hist = [{"stage": "special", "epoch": 0}]
    state = checkpoint_state(EpochEnd("special", 4, {}, model, opt, history=hist))
    assert state["stage"] == "special" and state["epoch"] == 4 and state["history"] == hist
    assert state["history"] is not hist
    assert torch.equal(state["torch_rng"], rng)
    assert state["optimizer"] == opt.state_dict()
    assert all(torch.equal(state["model"][k], v) for k, v in model.state_dict().items())
    assert checkpoint_state(EpochEnd("special", 0, {}, model, opt))["history"] == []
    expected = torch.rand(5)
    torch.rand(7)
    restore_rng(state)
    assert torch.equal(torch.rand(5), expected)
    now = torch.get_rng_state()
    restore_rng({"torch_rng": None})
    restore_rng({})
    assert torch.equal(torch.get_rng_state(), now)


def test_a_saved_model_comes_back_with_its_config_and_outputs(data):
    cfg = MICRO.replace(chi=4, keep_ratios=(1.0, 0.3))
    model = build_model(data, cfg, "supervised")
    state = trained_model_state(model, data, cfg, "supervised")
    assert state["method"] == "supervised" and state["num_classes"] == data.num_classes
    assert state["modalities"] == list(data.modalities) and state["dims"] == dict(data.dims)
    assert state["seq_lens"] == dict(data.seq_lens) and state["config"] == cfg.to_dict()
    back, back_cfg = model_from_state(state)
    assert back_cfg == cfg and not back.training
    inputs = standardise(data["test"].batch(torch.arange(8))[0], data)
    model.eval()
    for m in data.modalities:
        assert torch.equal(back(inputs)[m].z, model(inputs)[m].z)
    assert torch.equal(back.task_head.weight, model.task_head.weight)


def test_build_model_is_seeded_and_has_a_head_only_where_the_method_trains_one(data):
    a, b = build_model(data, MICRO, "s3"), build_model(data, MICRO, "s3")
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    c = build_model(data, MICRO.replace(seed=1), "s3")
    assert not all(torch.equal(p, q) for p, q in zip(a.parameters(), c.parameters()))
    assert getattr(a, "task_head", None) is None
    head = build_model(data, MICRO, "supervised").task_head
    assert head.in_features == len(data.modalities) * MICRO.proj_dim and head.out_features == data.num_classes


def test_embed_splits_in_both_scopes(data):
    model = build_model(data, MICRO, "s3").eval()
    out, extra = embed_splits(model, data, MICRO, 0.5)
    # besides the embeddings: the expert FLOPs per test sample the forwards computed (the frontier)
    assert set(extra) == {"expert_flops"} and set(out) == {"train", "valid", "test"}
    half_flops = extra["expert_flops"]
    for split, (feats, labels, kept) in out.items():
        assert feats.shape[0] == len(data[split]) and torch.equal(labels.sort().values,
                                                                  data[split].labels.sort().values)
        assert kept == pytest.approx(0.5, abs=0.05), split
    full, full_extra = embed_splits(model, data, MICRO, 1.0)
    assert all(k == 1.0 for _, _, k in full.values())
    assert half_flops == pytest.approx(full_extra["expert_flops"] / 2, rel=0.1) and half_flops > 0
    thr_cfg = MICRO.replace(prune_scope="threshold")
    out, extra = embed_splits(model, data, thr_cfg, 0.5)
    assert set(extra) == {"thresholds", "expert_flops"} and extra["thresholds"] and all(0 < t < 1 for t in extra["thresholds"].values())
    assert out["train"][2] == pytest.approx(0.5, abs=0.1)
    full_thr, extra = embed_splits(model, data, thr_cfg, 1.0)
    # what ran: the threshold scope also computes the empty rows that pad its last batch
    assert extra["thresholds"] == {} and extra["expert_flops"] >= full_extra["expert_flops"]
    assert all(k == 1.0 for _, _, k in full_thr.values())


def test_sparsify_rows_hold_the_probe_and_the_kept_fraction(data):
    model = build_model(data, MICRO, "s3").eval()
    curve = sparsify(model, data, MICRO, keep_ratios=[0.5, 1], progress=False)
    assert [r["keep_ratio"] for r in curve] == [0.5, 1.0] and isinstance(curve[1]["keep_ratio"], float)
    for r in curve:
        assert set(r) == {"keep_ratio", "valid_acc", "test_acc", "valid_f1", "test_f1", "l2", "probe_converged",
                          "probe_iters", "kept_fraction", "embed_s", "expert_flops", "embed_cos_dist"}
        assert r["kept_fraction"] == pytest.approx(r["keep_ratio"], abs=0.05) and r["embed_s"] > 0
        assert r["l2"] == 1e-2
    assert [r["keep_ratio"] for r in sparsify(model, data, MICRO, progress=False)] == [1.0, 0.5]
    thr = sparsify(model, data, MICRO.replace(prune_scope="threshold"), keep_ratios=[0.5], progress=False)
    assert "thresholds" in thr[0]
