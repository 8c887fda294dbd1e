"""S3's losses against loop-by-loop references on inputs where every term differs (labels that
repeat unevenly, three modalities). Written to kill the mutants that survived
scripts/mutation.sh (docs/RELIABILITY.md, "Mutation testing")."""
from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from s3core.losses import class_mean_directions, compactness_loss, cross_modal_info_nce, supcon_cross, supcon_loss


def supcon_reference(anchor, other, labels, tau) -> float:
    """-log softmax over row i's logits, averaged over the positives of i, then over i: loops."""
    total = 0.0
    n = anchor.shape[0]
    for i in range(n):
        logits = [float(anchor[i] @ other[j]) / tau for j in range(n)]
        lse = math.log(sum(math.exp(v) for v in logits))
        pos = [j for j in range(n) if labels[j] == labels[i]]
        total += sum(lse - logits[j] for j in pos) / len(pos)
    return total / n


def normalised(*shape, seed):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(*shape, generator=g), dim=-1)


def test_supcon_cross_matches_the_loop_reference_with_uneven_classes():
    a, b = normalised(7, 4, seed=0), normalised(7, 4, seed=1)
    labels = torch.tensor([0, 0, 1, 2, 0, 1, 1])
    assert float(supcon_cross(a, b, labels, 0.3)) == pytest.approx(supcon_reference(a, b, labels, 0.3), rel=1e-5)


def test_supcon_loss_averages_every_ordered_pair_of_three_modalities():
    z = {m: normalised(6, 3, seed=s) for s, m in enumerate("abc")}
    labels = torch.tensor([1, 0, 1, 1, 0, 2])
    pairs = list(itertools.permutations("abc", 2))
    expected = sum(supcon_reference(z[x], z[y], labels, 0.5) for x, y in pairs) / len(pairs)
    assert float(supcon_loss(z, labels, 0.5)) == pytest.approx(expected, rel=1e-5)
    ce = sum(float(F.cross_entropy(z[x] @ z[y].T / 0.5, torch.arange(6))) for x, y in pairs) / 6
    assert float(cross_modal_info_nce(z, 0.5)) == pytest.approx(ce, rel=1e-5)


def test_class_mean_directions_and_compactness_with_an_absent_class():
    z = normalised(5, 3, seed=2)
    labels = torch.tensor([2, 0, 2, 2, 0])
    mu = class_mean_directions(z, labels, 4)
    assert mu.shape == (4, 3)
    for c in range(4):
        rows = z[labels == c]
        expected = F.normalize(rows.sum(0), dim=0) if len(rows) else torch.zeros(3)
        assert torch.allclose(mu[c], expected, atol=1e-6), c
    za, zb = normalised(5, 3, seed=3), normalised(5, 3, seed=4)
    mu_a, mu_b = class_mean_directions(za, labels, 4), class_mean_directions(zb, labels, 4)
    a_to_b = -sum(float(za[i] @ mu_b[labels[i]]) for i in range(5)) / 5
    b_to_a = -sum(float(zb[i] @ mu_a[labels[i]]) for i in range(5)) / 5
    assert float(compactness_loss({"a": za, "b": zb}, labels, 4)) == pytest.approx((a_to_b + b_to_a) / 2, rel=1e-5)
