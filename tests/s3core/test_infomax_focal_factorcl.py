"""FOCAL and FactorCL (issue 21): the project's losses equal their authors' code, and the methods train.

The fixtures (tests/s3core/fixtures/infomax/*.npz, made by make_focal_factorcl_fixtures.py in a
throw-away environment from the authors' repositories at the commits infomax_fixtures.json names)
hold the authors' loss values and input gradients on fixed float64 tensors."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from s3core import losses
from s3core.config import ConfigError, S3Config
from s3core.data import SyntheticConfig, make_synthetic
from s3core.methods import get_method
from s3core.objectives import FactorCLCritics, factorcl_objective, focal_objective
from s3core.pipeline import build_model, run_trial
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
