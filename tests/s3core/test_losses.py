import math

import pytest
import torch
import torch.nn.functional as F

from s3core.losses import (compactness_loss, cross_modal_info_nce, info_nce, intra_modal_info_nce, supcon_cross,
                           supcon_loss)

E = math.e


def test_info_nce_by_hand():
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    # logits = I / tau with tau = 1: each row is -log(e / (e + 1))
    assert float(info_nce(a, a, 1.0)) == pytest.approx(math.log(1 + 1 / E))
    # tau = 0.5 doubles the logits
    assert float(info_nce(a, a, 0.5)) == pytest.approx(math.log(1 + E ** -2))


def test_cross_modal_info_nce_averages_ordered_pairs():
    torch.manual_seed(0)
    z = {m: F.normalize(torch.randn(5, 3), dim=1) for m in ("a", "b", "c")}
    pairs = [("a", "b"), ("b", "a"), ("a", "c"), ("c", "a"), ("b", "c"), ("c", "b")]
    expected = sum(float(info_nce(z[x], z[y], 0.2)) for x, y in pairs) / 6
    assert float(cross_modal_info_nce(z, 0.2)) == pytest.approx(expected, rel=1e-6)
    # InfoNCE is not symmetric in general, so both directions matter
    assert float(info_nce(z["a"], z["b"], 0.2)) != pytest.approx(float(info_nce(z["b"], z["a"], 0.2)))


def test_intra_modal_info_nce_is_the_mean_over_modalities():
    torch.manual_seed(1)
    v1 = {m: F.normalize(torch.randn(4, 3), dim=1) for m in ("a", "b")}
    v2 = {m: F.normalize(torch.randn(4, 3), dim=1) for m in ("a", "b")}
    expected = 0.5 * (float(info_nce(v1["a"], v2["a"], 0.1)) + float(info_nce(v1["b"], v2["b"], 0.1)))
    assert float(intra_modal_info_nce(v1, v2, 0.1)) == pytest.approx(expected, rel=1e-6)


def test_supcon_by_hand():
    z = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    labels = torch.tensor([0, 1, 0])
    # rows 0 and 2: logits [1, 0, 1], two positives with logit 1: loss = lse - 1
    # row 1: logits [0, 1, 0], one positive with logit 1: loss = log(e + 2) - 1
    expected = (2 * (math.log(2 * E + 1) - 1) + (math.log(E + 2) - 1)) / 3
    assert float(supcon_cross(z, z, labels, 1.0)) == pytest.approx(expected, rel=1e-6)


def test_supcon_with_distinct_labels_is_info_nce():
    torch.manual_seed(2)
    a, b = F.normalize(torch.randn(6, 4), dim=1), F.normalize(torch.randn(6, 4), dim=1)
    labels = torch.arange(6)
    assert float(supcon_cross(a, b, labels, 0.3)) == pytest.approx(float(info_nce(a, b, 0.3)), rel=1e-6)
    both = 0.5 * (float(info_nce(a, b, 0.3)) + float(info_nce(b, a, 0.3)))
    assert float(supcon_loss({"a": a, "b": b}, labels, 0.3)) == pytest.approx(both, rel=1e-6)


def test_compactness_by_hand():
    za = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    zb = torch.tensor([[0.6, 0.8], [1.0, 0.0]])
    labels = torch.tensor([0, 0])
    mu_b = torch.tensor([1.6, 0.8]) / math.sqrt(1.6 ** 2 + 0.8 ** 2)
    mu_a = torch.tensor([1.0, 1.0]) / math.sqrt(2)
    a_to_b = -float((za @ mu_b).mean())
    b_to_a = -float((zb @ mu_a).mean())
    assert float(compactness_loss({"a": za, "b": zb}, labels, 2)) == pytest.approx((a_to_b + b_to_a) / 2, rel=1e-6)


def test_compactness_is_minus_one_when_classes_are_collapsed():
    z = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    labels = torch.tensor([0, 0, 1])
    assert float(compactness_loss({"a": z, "b": z.clone()}, labels, 3)) == pytest.approx(-1.0)
