import copy

import pytest
import torch

from s3core.config import ConfigError, S3Config
from s3core.data import SyntheticConfig, make_synthetic
from s3core.encoder import is_router_param
from s3core.pipeline import build_model, checkpoint_state, run_trial
from s3core.stages import DivergenceError, select, sparsify, specialize
from s3core.tensors import to_tensors

TINY = S3Config(d_model=16, n_layers=1, n_heads=2, d_ff=32, chi=2, rho=2, proj_dim=8, batch_size=32,
                epochs_special=2, epochs_select=2, eval_batch_size=64, epoch_probe=False,
                keep_ratios=(1.0, 0.5), probe_l2=(1e-2,))


@pytest.fixture(scope="module")
def data():
    return to_tensors(make_synthetic(SyntheticConfig(n_train=96, n_valid=48, n_test=48, seq_len=4, dims=(6, 5),
                                                     pad_fraction=0.3, seed=3)))


def test_select_changes_only_the_routers(data):
    model = build_model(data, TINY, "s3")
    specialize(model, data, TINY, progress=False)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    history = select(model, data, TINY, progress=False)
    assert len(history) == TINY.epochs_select
    routers = [n for n in before if is_router_param(n)]
    assert routers, "the model has no router parameters"
    for name, p in model.named_parameters():
        if is_router_param(name):
            assert not torch.equal(p, before[name]), f"router {name} did not train"
        else:
            assert torch.equal(p, before[name]), f"{name} changed during Stage 2"
    # routers are a small share of the parameters (paper: < 5%)
    n_router = sum(before[n].numel() for n in routers)
    assert n_router / sum(t.numel() for t in before.values()) < 0.05


def test_specialize_trains_every_parameter_and_reports_each_loss(data):
    model = build_model(data, TINY, "s3")
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    history = specialize(model, data, TINY.replace(epoch_probe=True), progress=False)
    assert len(history) == TINY.epochs_special
    for key in ("loss", "rep", "dsc", "aux", "load_balance", "local_entropy", "global_entropy", "valid_acc", "time_s"):
        assert key in history[0], key
    changed = [n for n, p in model.named_parameters() if not torch.equal(p, before[n])]
    assert len(changed) == len(before)


def test_sparsify_sweeps_ten_points_and_prunes_for_real(data):
    model = build_model(data, TINY, "s3")
    curve = sparsify(model, data, TINY.replace(keep_ratios=S3Config().keep_ratios), progress=False)
    assert [r["keep_ratio"] for r in curve] == [1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1]
    for r in curve:
        assert 0.0 <= r["test_acc"] <= 1.0 and 0.0 <= r["test_f1"] <= 1.0
        assert r["kept_fraction"] == pytest.approx(r["keep_ratio"], abs=0.02)


def test_resume_from_a_checkpoint_gives_the_uninterrupted_result(data):
    saved = {}

    def keep(ev):
        if (ev.stage, ev.epoch) == ("special", 0):
            saved["state"] = copy.deepcopy(checkpoint_state(ev))

    full = run_trial(data, TINY, "s3", on_epoch=keep, progress=False)
    resumed = run_trial(data, TINY, "s3", resume=saved["state"], progress=False)
    assert [(h["stage"], h["epoch"]) for h in resumed.history] == [(h["stage"], h["epoch"]) for h in full.history]
    assert [h["loss"] for h in resumed.history] == pytest.approx([h["loss"] for h in full.history], rel=1e-5)
    assert [r["test_acc"] for r in resumed.curve] == pytest.approx([r["test_acc"] for r in full.curve])


def _untimed(rows):
    """The rows without wall-clock fields (time_s, embed_s), which differ from run to run."""
    return [{k: v for k, v in r.items() if not (k.startswith("time") or k.endswith("_s"))} for r in rows]


@pytest.mark.parametrize("at", [("special", 0), ("select", 0)])
def test_resume_with_dropout_is_exactly_the_uninterrupted_run(data, at):
    """Dropout draws from torch's global RNG: a resumed run must continue that stream where the
    checkpoint left it, not from the freshly seeded one build_model leaves (issue 14, bug 2)."""
    cfg = TINY.replace(dropout=0.1)
    saved = {}

    def keep(ev):
        if (ev.stage, ev.epoch) == at:
            saved["state"] = copy.deepcopy(checkpoint_state(ev))

    full = run_trial(data, cfg, "s3", on_epoch=keep, progress=False)
    torch.rand(7)   # the resuming process's RNG is wherever it is
    resumed = run_trial(data, cfg, "s3", resume=saved["state"], progress=False)
    assert _untimed(resumed.history) == _untimed(full.history)
    assert _untimed(resumed.curve) == _untimed(full.curve)


def test_resume_after_a_finished_stage_skips_it(data):
    saved = {}

    def keep(ev):
        if (ev.stage, ev.epoch) == ("special", TINY.epochs_special - 1):
            saved["state"] = copy.deepcopy(checkpoint_state(ev))

    run_trial(data, TINY, "s3", on_epoch=keep, progress=False)
    seen = []
    run_trial(data, TINY, "s3", resume=saved["state"], on_epoch=lambda ev: seen.append(ev.stage), progress=False)
    assert seen == ["select"] * TINY.epochs_select


E1, E2 = TINY.epochs_special, TINY.epochs_select
STAGES = {   # (stage, epoch) of every training epoch, in order; the baselines get S3's E1 + E2 budget
    "s3": [("special", e) for e in range(E1)] + [("select", e) for e in range(E2)],
    "s3_no_select": [("special", e) for e in range(E1)],
    "clip": [("special", e) for e in range(E1 + E2)],
    "supervised": [("supervised", e) for e in range(E1 + E2)],
}


@pytest.mark.parametrize("method", ["s3", "s3_no_select", "clip", "supervised"])
def test_every_method_runs_its_stages_and_summarises(data, method):
    seen = []
    res = run_trial(data, TINY, method, progress=False, on_epoch=lambda ev: seen.append((ev.stage, ev.epoch)))
    assert [(h["stage"], h["epoch"]) for h in res.history] == STAGES[method]
    assert seen == STAGES[method]
    assert res.curve and res.summary["best_keep_ratio"] in [r["keep_ratio"] for r in res.curve]
    if method in ("clip", "supervised"):
        assert res.config["chi"] == 1 and [r["keep_ratio"] for r in res.curve] == [1.0]
    else:
        assert [r["keep_ratio"] for r in res.curve] == list(TINY.keep_ratios)


def test_no_select_ablation_is_an_s3_model_after_stage_1_only(data):
    """The ablation the README compares with S3: Stage 1, then straight to Stage 3, same seed."""
    model = build_model(data, TINY, "s3")
    stage1 = specialize(model, data, TINY, progress=False)
    reference = sparsify(model, data, TINY, progress=False)
    ablation = run_trial(data, TINY, "s3_no_select", progress=False)
    # run_trial adds the diagnostics (s3core.diagnostics) to each epoch; they change nothing else
    trained = [{k: v for k, v in h.items() if not k.startswith("diag/")} for h in ablation.history]
    assert all(any(k.startswith("diag/") for k in h) for h in ablation.history)
    assert _untimed(trained) == _untimed([{"stage": "special", "epoch": e, **h} for e, h in enumerate(stage1)])
    assert _untimed(ablation.curve) == _untimed(reference)


def test_a_trial_does_not_depend_on_what_ran_before_it_in_the_process(data):
    """The direct executor runs trial after trial in one reused Ray actor: a trial must give the
    same result whatever ran before it (the RNG is seeded per trial, no state leaks)."""
    first = run_trial(data, TINY, "s3", progress=False)
    run_trial(data, TINY.replace(seed=7, chi=4), "clip", progress=False)   # something else in between
    torch.rand(5)                                                          # and a moved global RNG
    again = run_trial(data, TINY, "s3", progress=False)
    def untimed(rows):  # wall-clock fields (time_s, embed_s) differ from run to run
        return [{k: v for k, v in r.items() if not (k.startswith("time") or k.endswith("_s"))} for r in rows]
    assert untimed(again.curve) == untimed(first.curve)
    assert untimed(again.history) == untimed(first.history)


def test_a_diverging_loss_stops_the_trial(data):
    # tau this small overflows the InfoNCE logits to inf: the loss is not finite
    with pytest.raises(DivergenceError, match="diverged"):
        run_trial(data, TINY.replace(tau=1e-38), "s3", progress=False)


def test_batch_larger_than_the_train_split_is_refused(data):
    with pytest.raises(ConfigError, match="exceeds the train split"):
        run_trial(data, TINY.replace(batch_size=512), "s3", progress=False)
