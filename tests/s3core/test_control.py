"""The positive control (s3core/control.py): a hand-built model on which Stage 3 must show the
inverted U, in both prune scopes, and must not when it ignores the router's scores."""
import pytest
import torch

import s3core.moe
import s3core.stages
from s3core.control import check_curve, control_curve

FAST_P = (1.0, 0.2, 0.1, 0.01)
SMALL = dict(n_train=800, n_valid=300, n_test=300)


@pytest.mark.parametrize("scope", ["batch", "threshold"])
def test_control_rises_falls_and_validation_finds_the_peak(scope):
    curve = control_curve(0, scope, keep_ratios=FAST_P, **SMALL)
    assert check_curve(curve) == [], [(r["keep_ratio"], r["test_acc"], r["valid_acc"]) for r in curve]


def test_control_fails_when_batch_pruning_keeps_random_pairs(monkeypatch):
    """Mutation 1: the 'batch' scope keeps a random n_keep of the pairs, not the top-gate ones."""
    monkeypatch.setattr(s3core.moe, "top_pairs", lambda scores, n: torch.randperm(scores.numel())[:n])
    assert check_curve(control_curve(0, "batch", keep_ratios=FAST_P, **SMALL))


def test_control_fails_when_threshold_pruning_keeps_every_pair(monkeypatch):
    """Mutation 2: the 'threshold' scope fits no threshold (every pair kept at every p)."""
    monkeypatch.setattr(s3core.stages, "fit_thresholds", lambda model, data, p, rows, ac=None: {})
    assert check_curve(control_curve(0, "threshold", keep_ratios=FAST_P, **SMALL))
