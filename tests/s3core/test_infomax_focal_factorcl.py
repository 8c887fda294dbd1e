"""FOCAL and FactorCL (issue 21): the project's losses equal their authors' code, and the methods train.

The fixtures (tests/s3core/fixtures/infomax/*.npz, made by make_focal_factorcl_fixtures.py in a
throw-away environment from the authors' repositories at the commits infomax_fixtures.json names)
hold the authors' loss values and input gradients on fixed float64 tensors."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from orchestrator import paper_numbers
from s3core import losses
from s3core.config import ConfigError, S3Config
from s3core.data import SyntheticConfig, make_synthetic
from s3core.distributed import all_reduce_grads
from s3core.methods import get_method
from s3core.objectives import FactorCLCritics, factorcl_objective, focal_objective, windows
from s3core.pipeline import build_model, run_trial
from s3core.stage_specs import FACTORCL, FOCAL
from s3core.stages import epoch_generator
from s3core.tensors import to_tensors

FIXTURES = Path(__file__).parent / "fixtures" / "infomax"
META = json.loads((FIXTURES / "infomax_fixtures.json").read_text())
TOL = dict(rtol=1e-9, atol=1e-10)


def _load(name: str) -> dict[str, np.ndarray]:
    with np.load(FIXTURES / f"{name}.npz", allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


def test_the_fixtures_say_how_they_were_made():
    assert META["focal"]["repo"] == "tomoyoshki/focal"
    assert META["focal"]["commit"] == "f6a989eef42e7590aacc0c025e5aed875c6025c9"
    assert META["factorcl"]["repo"] == "pliang279/FactorCL"
    assert META["factorcl"]["commit"] == "0f9f7403b3764ba9faf9ee3247358bdd719f688c"
    assert "make_focal_factorcl_fixtures.py" in META["command"]


# ------------------------------------------------------------------ FOCAL

def _focal_views(fx, grad=False):
    case = META["focal"]["case"]
    B, S = case["batch"], case["seq_len"]
    views = []
    for v in ("view1", "view2"):
        views.append({m: torch.tensor(fx[f"{v}/{m}"]).reshape(B, S, -1).requires_grad_(grad)
                      for m in case["modalities"]})
    return views


def test_focal_loss_equals_the_authors_forward_with_every_term_and_gradient():
    fx, case = _load("focal"), META["focal"]["case"]
    w = case["weights"]
    v1, v2 = _focal_views(fx, grad=True)
    total, parts = losses.focal_loss(v1, v2, case["split"], w["temperature"], w["shared_contrastive_loss_weight"],
                                     w["private_contrastive_loss_weight"], w["orthogonal_loss_weight"],
                                     w["rank_loss_weight"], w["inter_rank_margin"])
    np.testing.assert_allclose(total.item(), fx["total"], **TOL)
    for name, value in parts.items():
        np.testing.assert_allclose(value.item(), fx[f"part/{name}"], **TOL, err_msg=name)
    mods = case["modalities"]
    grads = torch.autograd.grad(total, [v1[m] for m in mods] + [v2[m] for m in mods])
    for i, m in enumerate(mods):
        np.testing.assert_allclose(grads[i].reshape(-1, case["dim"]).numpy(), fx[f"grad_view1/{m}"], **TOL)
        np.testing.assert_allclose(grads[3 + i].reshape(-1, case["dim"]).numpy(), fx[f"grad_view2/{m}"], **TOL)


def test_focal_without_sequences_drops_the_temporal_term_where_the_authors_code_gives_nan():
    fx = _load("focal")
    a, b = torch.tensor(fx["s1/acc_view1"]), torch.tensor(fx["s1/mic_view1"])
    assert math.isnan(fx["s1/forward_total"])          # their forward at seq_len 1: the rank term is 0/0
    np.testing.assert_allclose(losses.focal_contrastive(a[:, :4], b[:, :4], 0.07).item(),
                               fx["s1/shared_contrastive_acc_mic"], **TOL)
    np.testing.assert_allclose(losses.focal_orthogonality(a[:, :4], a[:, 4:]).item(), fx["s1/orth_acc"], **TOL)
    _, parts = losses.focal_loss({"a": a, "b": b}, {"a": b, "b": a}, 4, 0.07, 1, 1, 3, 5, 1)
    assert parts["rank"].item() == 0.0 and math.isfinite(parts["shared"].item())
    # uhlerlab's FOCAL (SupCon with cross-view negatives only; the mean signed cosine) differs: not ours
    assert abs(fx["uhlerlab/supcon_shared_acc_mic"] - fx["s1/shared_contrastive_acc_mic"]) > 0.1
    assert abs(fx["uhlerlab/ortho_loss_focal_acc"] - fx["s1/orth_acc"]) > 0.01


# ------------------------------------------------------------------ FactorCL

def _factorcl_critics(fx) -> FactorCLCritics:
    case = META["factorcl"]["case"]
    cfg = S3Config(proj_dim=5 * case["head_width"], factorcl_critic_hidden=case["critic_hidden"],
                   factorcl_critic_layers=case["critic_layers"])
    critics = FactorCLCritics(cfg).double()
    state = {f"critics.{name}.{k}": torch.tensor(fx[f"critic/{name}/{k}"]) for name in case["critics"]
             for k in ("0.weight", "0.bias", "2.weight", "2.bias", "4.weight", "4.bias")}
    critics.load_state_dict(state)
    return critics


def _blocks(x: torch.Tensor) -> dict[str, torch.Tensor]:
    return dict(zip(losses.FACTORCL_HEADS, x.tensor_split(5, dim=1)))


def test_factorcl_ssl_loss_equals_the_authors_forward_and_gradient():
    fx = _load("factorcl")
    critics = _factorcl_critics(fx)
    xs = {k: torch.tensor(fx[f"input/{k}"]).requires_grad_() for k in ("x1", "x2", "x1_aug", "x2_aug")}
    blocks = [_blocks(xs[k]) for k in ("x1", "x2", "x1_aug", "x2_aug")]
    total = losses.factorcl_ssl_loss(*blocks, critics.scorers())
    np.testing.assert_allclose(total.item(), fx["total"], **TOL)
    for k, g in zip(xs, torch.autograd.grad(total, list(xs.values()))):
        np.testing.assert_allclose(g.numpy(), fx[f"grad/{k}"], **TOL, err_msg=k)


def test_factorcl_club_critics_learning_loss_equals_the_authors_and_its_critic_gradient():
    fx = _load("factorcl")
    critics = _factorcl_critics(fx)
    blocks = [_blocks(torch.tensor(fx[f"input/{k}"])) for k in ("x1", "x2", "x1_aug", "x2_aug")]
    learning = losses.factorcl_club_learning_loss(*blocks, critics.scorers())
    np.testing.assert_allclose(learning.item(), fx["learning_loss"], **TOL)
    for name in losses.FACTORCL_CLUB_CRITICS:
        params = dict(critics.critics[name].named_parameters())
        grads = torch.autograd.grad(learning, list(params.values()), retain_graph=True)
        for (key, _), g in zip(params.items(), grads):
            np.testing.assert_allclose(g.numpy(), fx[f"learning_grad/{name}/{key}"], **TOL, err_msg=f"{name}.{key}")


# ------------------------------------------------------------------ the methods, through the pipeline

TINY = dict(d_model=16, n_heads=2, d_ff=32, proj_dim=10, batch_size=32, keep_ratios=(1.0, 0.5), probe_l2=(1e-2,),
            epoch_probe=False, epochs_special=1, epochs_select=1, factorcl_critic_hidden=16, diagnostics=False)


@pytest.fixture(scope="module")
def bench():
    torch.set_num_threads(1)
    return make_synthetic(SyntheticConfig(n_train=96, n_valid=48, n_test=48, seq_len=4))


@pytest.mark.parametrize("method", ["focal", "factorcl"])
def test_each_method_trains_through_the_pipeline_and_is_probed_at_p_1(bench, method):
    res = run_trial(bench, S3Config(**TINY), method, progress=False)
    assert [h["stage"] for h in res.history] == [method, method]       # epochs_special + epochs_select
    assert [r["keep_ratio"] for r in res.curve] == [1.0]
    assert 0.0 <= res.curve[0]["test_acc"] <= 1.0
    assert all(math.isfinite(h["loss"]) for h in res.history)
    cfg = get_method(method).config(S3Config(**TINY))
    assert (cfg.chi, cfg.rho, cfg.top_k) == (1, 1, None)                 # the dense, equal-budget encoder
    assert cfg.z_split == (5 if method == "focal" else 0)


def test_focal_z_is_a_shared_and_a_private_part_each_on_its_sphere(bench):
    cfg = get_method("focal").config(S3Config(**TINY))
    model = build_model(bench, cfg, "focal")
    data = to_tensors(bench)
    inputs, _ = data["train"].batch(torch.arange(8))
    z = model(inputs)[data.modalities[0]].z
    np.testing.assert_allclose(z[:, :5].norm(dim=1).detach().numpy(), 1.0, rtol=1e-5)
    np.testing.assert_allclose(z[:, 5:].norm(dim=1).detach().numpy(), 1.0, rtol=1e-5)
    assert model.task_head is None


def test_factorcl_critics_are_a_train_only_head_outside_the_encoders(bench):
    cfg = get_method("factorcl").config(S3Config(**TINY))
    model = build_model(bench, cfg, "factorcl")
    assert isinstance(model.task_head, FactorCLCritics)
    assert sorted(model.task_head.critics) == sorted(losses.FACTORCL_CRITICS)
    assert not any(n.startswith("task_head") for n, _ in model.encoders.named_parameters())


def _loss(method: str, bench, **changes) -> float:
    cfg = get_method(method).config(S3Config(**TINY)).replace(**changes).validate()
    data = to_tensors(bench)
    model = build_model(data, cfg, method)
    fn = focal_objective if method == "focal" else factorcl_objective
    total, _ = fn(model, data, cfg, torch.arange(32), torch.Generator().manual_seed(0))
    return total.item()


FIELD_CHANGES = {"focal_tau": ("focal", 0.5), "focal_shared_weight": ("focal", 2.0),
                 "focal_private_weight": ("focal", 2.0), "focal_orth_weight": ("focal", 0.5),
                 "focal_rank_weight": ("focal", 1.0), "focal_rank_margin": ("focal", 3.0),
                 "focal_seq_len": ("focal", 3), "factorcl_critic_hidden": ("factorcl", 8),
                 "factorcl_critic_layers": ("factorcl", 2)}


@pytest.mark.parametrize("field", sorted(FIELD_CHANGES))
def test_each_new_config_field_changes_the_loss(bench, field):
    method, value = FIELD_CHANGES[field]
    base = {"focal_seq_len": 2} if field.startswith("focal_rank") else {}   # the rank term needs sequences
    assert _loss(method, bench, **base, **{field: value}) != _loss(method, bench, **base), field


def test_the_new_fields_are_listed_as_their_stages_own_for_the_stage_cache():
    assert set(FOCAL.own_fields) | set(FACTORCL.own_fields) == set(FIELD_CHANGES)


@pytest.mark.parametrize("field,value,message", [
    ("focal_tau", 0.0, "focal_tau must be a positive number"),
    ("focal_orth_weight", -1.0, "focal_orth_weight must be a number >= 0"),
    ("focal_rank_margin", float("nan"), "focal_rank_margin must be a number >= 0"),
    ("focal_seq_len", 0, "focal_seq_len must be an integer >= 1"),
    ("factorcl_critic_hidden", 0, "factorcl_critic_hidden must be an integer >= 1"),
    ("factorcl_critic_layers", -1, "factorcl_critic_layers must be an integer >= 0"),
])
def test_bad_values_are_one_line_errors(field, value, message):
    with pytest.raises(ConfigError, match=message) as err:
        S3Config(**{field: value}).validate()
    assert "\n" not in str(err.value)


def test_factorcl_refuses_other_than_two_modalities_and_a_too_narrow_z():
    three = make_synthetic(SyntheticConfig(n_train=64, n_valid=32, n_test=32, seq_len=4, dims=(6, 6, 6)))
    with pytest.raises(ConfigError, match="two modalities"):
        run_trial(three, S3Config(**TINY), "factorcl", progress=False)
    with pytest.raises(ConfigError, match="proj_dim must be >= 5"):
        FactorCLCritics(S3Config(proj_dim=4))


def test_factorcls_published_figures_sit_beside_ours_labelled_with_their_source():
    published = {"mosei": (74.88, 71.03), "mosi": (52.91, 46.21), "urfunny": (60.50, 50.09), "mustard": (55.80, 53.48)}
    for bench, (ssl, simclr) in published.items():
        # the report's row (orchestrator.report.aggregate) shows every match: the S3 paper's InfoMax
        # row, when it has one (Method.family), and FactorCL's own figure with its source
        found = paper_numbers.paper_numbers_matching(bench, "factorcl", 1, paper_numbers.BEST)
        ours = [n for n in found if n.method == "factorcl"]
        assert [n.accuracy for n in ours] == [ssl]
        assert "FactorCL paper" in ours[0].source and "arXiv:2306.05268" in ours[0].source
        assert all(n.method == "infomax" and n.source == "S3 paper" for n in found if n.method != "factorcl")
        other = [n for n in paper_numbers.paper_numbers_for(bench) if n.method == "simclr"]
        assert [n.accuracy for n in other] == [simclr]
    assert paper_numbers.paper_number("mosei", "clip", 1, paper_numbers.BEST).source == "S3 paper"


def test_focal_windows_are_contiguous_and_sample_major_as_the_authors_sequences():
    x = torch.arange(2 * 5 * 1, dtype=torch.float32).reshape(2, 5, 1)          # B = 2 samples, T = 5 steps
    mask = torch.ones(2, 5, dtype=torch.bool)
    wx, wm = windows({"m": (x, mask)}, 2)["m"]
    assert wx.shape == (4, 3, 1)                                               # ceil(5 / 2) = 3 steps each
    assert wx[:, :, 0].tolist() == [[0, 1, 2], [3, 4, 0], [5, 6, 7], [8, 9, 0]]  # row b * S + s
    assert wm.tolist() == [[True] * 3, [True, True, False], [True] * 3, [True, True, False]]
    assert windows({"m": (x, mask)}, 1)["m"][0] is x


# ------------------------------------------------------------------------------ data parallel

def _ddp_grads(method: str, world: int) -> dict:
    """Loss and gradients of one batch of 21 (shares of 11 and 10), as test_infomax_disentangled.py:
    what one process gives is what the sum over workers must give, FactorCL's critics included."""
    data = to_tensors(make_synthetic(SyntheticConfig(n_train=63, n_valid=16, n_test=16, seq_len=4, dims=(6, 7),
                                                     pad_fraction=0.4, seed=2)))
    cfg = get_method(method).config(S3Config(**{**TINY, "batch_size": 21, "focal_seq_len": 2}))
    model = build_model(data, cfg, method)
    fn = focal_objective if method == "focal" else factorcl_objective
    loss, _ = fn(model, data, cfg, torch.arange(5, 26), epoch_generator(0, method, 0, "cpu"))
    loss.backward()
    if world > 1:
        all_reduce_grads(list(model.parameters()))
    return {"loss": loss.detach(), **{n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}}


def _ddp_worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        torch.save({m: _ddp_grads(m, world) for m in ("focal", "factorcl")}, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.slow
def test_two_workers_give_the_whole_batch_loss_and_gradients(tmp_path):
    """Every worker computes the whole batch's loss; FactorCL's critics score all B x B pairs there,
    so only one worker may give their weights a gradient (the sum would be world x theirs)."""
    mp.spawn(_ddp_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    torch.set_num_threads(1)
    for method in ("focal", "factorcl"):
        single = _ddp_grads(method, 1)
        for rank in range(2):
            got = torch.load(tmp_path / f"rank{rank}.pt")[method]
            assert set(got) == set(single), method
            for key in single:
                torch.testing.assert_close(got[key], single[key], rtol=1e-4, atol=1e-6, msg=f"{method}: {key}")
