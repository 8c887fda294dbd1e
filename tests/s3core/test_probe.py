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


def _hard(n, seed, scaled=True):
    """Overlapping classes, correlated features and (scaled) widths from 0.01 to 100: L-BFGS needs
    tens of iterations here, and on the raw scaled features (FactorCL's probe) about a thousand."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    x = torch.randn(n, 32, generator=g)
    x[:, :8] += 0.4 * (2 * y[:, None] - 1)
    x[:, 8:16] = x[:, :8] + 0.1 * torch.randn(n, 8, generator=g)
    return (x * torch.logspace(-2, 2, 32) if scaled else x), y


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", ["tuned", "factorcl"])
def test_probe_reports_whether_it_converged(backend, kind):
    scaled = kind == "tuned"  # the tuned probe standardises: the scales do not slow it down
    tr, va, te = _hard(400, 0, scaled), _hard(200, 1, scaled), _hard(200, 2, scaled)
    capped = linear_probe(tr, va, te, 2, l2_grid=(1e-4,), backend=backend, max_iter=3, kind=kind)
    assert not capped.converged and capped.n_iter == 3
    full = linear_probe(tr, va, te, 2, l2_grid=(1e-4,), backend=backend, kind=kind)
    assert full.converged and 3 < full.n_iter < 1000


def test_factorcl_probe_is_sklearn_logistic_regression_at_c_one_on_raw_features():
    from sklearn.linear_model import LogisticRegression
    tr, va, te = _hard(400, 0, False), _hard(200, 1, False), _hard(200, 2, False)
    ours = linear_probe(tr, va, te, 2, backend="sklearn", kind="factorcl")
    theirs = LogisticRegression(max_iter=1000).fit(tr[0].double().numpy(), tr[1].numpy())
    assert ours.test_acc == pytest.approx(theirs.score(te[0].double().numpy(), te[1].numpy()))
    assert ours.valid_acc == pytest.approx(theirs.score(va[0].double().numpy(), va[1].numpy()))
    assert ours.l2 == pytest.approx(1 / 400)
    # no choice on valid: flipping the valid labels changes nothing but the valid accuracy
    flipped = linear_probe(tr, (va[0], 1 - va[1]), te, 2, backend="sklearn", kind="factorcl")
    assert flipped.test_acc == ours.test_acc and flipped.valid_acc == pytest.approx(1 - ours.valid_acc)


def test_torch_factorcl_probe_solves_the_same_problem():
    tr, va, te = _blobs(300, 1.0, 0), _blobs(300, 1.0, 1), _blobs(300, 1.0, 2)
    a = linear_probe(tr, va, te, 2, backend="torch", kind="factorcl")
    b = linear_probe(tr, va, te, 2, backend="sklearn", kind="factorcl")
    assert abs(a.test_acc - b.test_acc) <= 3 / 300
