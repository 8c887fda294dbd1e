import pytest
import torch

from s3core.probe import linear_probe, macro_f1


def _blobs(n, shift, seed):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    x = torch.randn(n, 8, generator=g)
    x[:, 0] += shift * (2 * y - 1)
    return x, y


BACKENDS = ["torch", "sklearn"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_probe_separates_separable_data_and_chooses_l2_from_the_grid(backend):
    res = linear_probe(_blobs(200, 4.0, 0), _blobs(100, 4.0, 1), _blobs(100, 4.0, 2), 2, l2_grid=(1e-3, 1e-1),
                       backend=backend)
    assert res.test_acc >= 0.97 and res.valid_acc >= 0.97
    assert res.l2 in (1e-3, 1e-1)


def test_backends_solve_the_same_objective():
    tr, va, te = _blobs(300, 1.0, 0), _blobs(300, 1.0, 1), _blobs(300, 1.0, 2)
    a = linear_probe(tr, va, te, 2, l2_grid=(1e-2,), backend="torch", max_iter=200)
    b = linear_probe(tr, va, te, 2, l2_grid=(1e-2,), backend="sklearn", max_iter=200)
    # the same regularised optimum: predictions agree up to a sample or two near the boundary
    assert abs(a.test_acc - b.test_acc) <= 2 / 300 and abs(a.train_acc - b.train_acc) <= 2 / 300


@pytest.mark.parametrize("backend", BACKENDS)
def test_probe_is_at_chance_on_noise(backend):
    res = linear_probe(_blobs(400, 0.0, 0), _blobs(400, 0.0, 1), _blobs(2000, 0.0, 2), 2, backend=backend)
    assert 0.4 < res.test_acc < 0.6


@pytest.mark.parametrize("backend", BACKENDS)
def test_test_labels_never_influence_the_choice(backend):
    tr, va, te = _blobs(200, 1.0, 0), _blobs(100, 1.0, 1), _blobs(100, 1.0, 2)
    a = linear_probe(tr, va, te, 2, l2_grid=(1e-4, 1e-2, 1.0, 100.0), backend=backend)
    b = linear_probe(tr, va, (te[0], 1 - te[1]), 2, l2_grid=(1e-4, 1e-2, 1.0, 100.0), backend=backend)
    assert (a.l2, a.valid_acc) == (b.l2, b.valid_acc)
    assert a.test_acc == pytest.approx(1 - b.test_acc)


def test_macro_f1_by_hand():
    pred, labels = torch.tensor([0, 0, 1, 1]), torch.tensor([0, 1, 1, 1])
    # class 0: tp 1, fp 1, fn 0 -> 2/3; class 1: tp 2, fp 0, fn 1 -> 4/5
    assert macro_f1(pred, labels, 2) == pytest.approx((2 / 3 + 4 / 5) / 2)
