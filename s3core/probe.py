"""Linear probe: logistic regression on frozen embeddings, full-batch L-BFGS.

Two probes (S3Config.probe):
- 'tuned' (default): on train-standardised features, the L2 strength chosen on the validation
  split from a grid; test is only ever read, never used to choose.
- 'factorcl': FactorCL's probe (pliang279/FactorCL, Multibench/multibench_example.ipynb:
  `LogisticRegression(max_iter=200).fit(train_embeds, train_labels)`): scikit-learn's default
  C = 1 on the raw embeddings, nothing chosen on validation, so a number compares like for like.
Both iterate up to `max_iter` and report whether the solver converged; a fit that did not is
recorded (ProbeResult.converged), never silently taken for a converged one.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass(frozen=True)
class ProbeResult:
    valid_acc: float
    test_acc: float
    valid_f1: float          # macro-F1: some benchmarks are unbalanced
    test_f1: float
    l2: float                # the regularisation used (tuned: chosen on valid; factorcl: C = 1 as 1 / n)
    train_acc: float
    converged: bool = True   # the solver stopped on its tolerance, not on max_iter
    n_iter: int = 0          # iterations of the fit whose numbers are reported


def accuracy(pred: Tensor, labels: Tensor) -> float:
    return float((pred == labels).float().mean())


def macro_f1(pred: Tensor, labels: Tensor, num_classes: int) -> float:
    """Mean over classes of F1; a class absent from both pred and labels is skipped."""
    scores = []
    for c in range(num_classes):
        tp = int(((pred == c) & (labels == c)).sum())
        fp = int(((pred == c) & (labels != c)).sum())
        fn = int(((pred != c) & (labels == c)).sum())
        if tp + fp + fn == 0:
            continue
        scores.append(2 * tp / (2 * tp + fp + fn))
    return float(sum(scores) / len(scores)) if scores else 0.0


def _fit(x: Tensor, y: Tensor, num_classes: int, l2: float, init: Tensor | None,
         max_iter: int) -> tuple[Tensor, int]:
    """Minimise mean cross-entropy + l2/2 ||W||^2 (bias unpenalised); returns (W (d+1, C), iterations)."""
    n, d = x.shape
    w = (init.clone() if init is not None else x.new_zeros(d + 1, num_classes)).requires_grad_(True)
    xb = torch.cat([x, x.new_ones(n, 1)], 1)                             # (n, d+1) with bias column
    opt = torch.optim.LBFGS([w], lr=1.0, max_iter=max_iter, tolerance_grad=1e-6,
                            tolerance_change=1e-9, history_size=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(xb @ w, y) + 0.5 * l2 * (w[:-1] ** 2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    state = opt.state[opt.param_groups[0]["params"][0]]
    n_iter, evals = int(state.get("n_iter", 0)), int(state.get("func_evals", 0))
    # stopped on a tolerance, not on the iteration or function-evaluation budget: report fewer
    # iterations than max_iter only then (the caller reads n_iter < max_iter as converged)
    return w.detach(), n_iter if (n_iter < max_iter and evals < opt.defaults["max_eval"]) else max_iter


def _predict(w: Tensor, x: Tensor) -> Tensor:
    return (x @ w[:-1] + w[-1]).argmax(1)


def _sklearn_available() -> bool:
    try:
        import sklearn.linear_model  # noqa: F401
        return True
    except ImportError:
        return False


def linear_probe(train: tuple[Tensor, Tensor], valid: tuple[Tensor, Tensor], test: tuple[Tensor, Tensor],
                 num_classes: int, l2_grid=(1e-4, 1e-3, 1e-2, 1e-1), max_iter: int = 1000,
                 backend: str = "auto", kind: str = "tuned") -> ProbeResult:
    """Fit on train, report valid and test.

    kind='tuned': for each L2 strength, minimise mean cross-entropy + l2/2 * ||W||^2 (bias
    unpenalised) on train-standardised features, keep the best on valid. kind='factorcl':
    FactorCL's probe, C = 1 on the raw features (l2 = 1 / n_train in the same units); l2_grid unused.

    Args:
        train, valid, test: (features (N, d), labels (N,)) on the CPU or any device.
        num_classes: C. l2_grid: candidate L2 strengths (largest first is fastest: warm starts).
        max_iter: L-BFGS iterations per fit; `converged` says whether the reported fit stopped before.
        backend: "sklearn" (scikit-learn's lbfgs; measured 2.4-16x faster at our sizes, see
            bench/RESULTS.md), "torch" (full-batch L-BFGS in float64), or "auto" (sklearn if installed).
        kind: 'tuned' or 'factorcl'.
    Returns:
        ProbeResult. Ties on validation accuracy go to the stronger regularisation.
    """
    if kind not in ("tuned", "factorcl"):
        raise ValueError(f"probe kind must be tuned or factorcl, got {kind!r}")
    if backend == "auto":
        backend = "sklearn" if _sklearn_available() else "torch"
    if backend == "sklearn":
        if kind == "factorcl":
            return _sklearn_factorcl_probe(train, valid, test, num_classes, max_iter)
        return _sklearn_probe(train, valid, test, num_classes, l2_grid, max_iter)
    if backend != "torch":
        raise ValueError(f"probe backend must be auto, sklearn or torch, got {backend!r}")
    x_tr = train[0].detach().double()
    if kind == "factorcl":
        mean, std = torch.zeros_like(x_tr[0]), torch.ones_like(x_tr[0])   # raw embeddings
        l2_grid = (1.0 / len(x_tr),)                                        # C = 1
    else:
        mean, std = x_tr.mean(0), x_tr.std(0).clamp_min(1e-6)
    norm = lambda x: (x.detach().double() - mean) / std  # noqa: E731 - standardise with train stats
    x_tr, x_va, x_te = norm(train[0]), norm(valid[0]), norm(test[0])
    y_tr, y_va, y_te = train[1].long(), valid[1].long(), test[1].long()
    best, best_key, w = None, None, None
    for l2 in sorted(l2_grid, reverse=True):
        w, n_iter = _fit(x_tr, y_tr, num_classes, float(l2), w, max_iter)
        va_pred = _predict(w, x_va)
        key = (accuracy(va_pred, y_va), macro_f1(va_pred, y_va, num_classes))
        if best_key is None or key > best_key:
            te_pred = _predict(w, x_te)
            best_key = key
            best = ProbeResult(valid_acc=key[0], test_acc=accuracy(te_pred, y_te), valid_f1=key[1],
                               test_f1=macro_f1(te_pred, y_te, num_classes), l2=float(l2),
                               train_acc=accuracy(_predict(w, x_tr), y_tr), converged=n_iter < max_iter,
                               n_iter=n_iter)
    return best


def _sklearn_probe(train, valid, test, num_classes, l2_grid, max_iter) -> ProbeResult:
    # scikit-learn is optional (probe_backend 'auto' falls back to torch without it)
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    def np_(t):
        return t.detach().cpu().double().numpy()

    x_tr, x_va, x_te = np_(train[0]), np_(valid[0]), np_(test[0])
    mean, std = x_tr.mean(0), np.maximum(x_tr.std(0, ddof=1) if len(x_tr) > 1 else 1.0, 1e-6)
    x_tr, x_va, x_te = (x_tr - mean) / std, (x_va - mean) / std, (x_te - mean) / std
    y_tr, y_va, y_te = (t.detach().cpu().long() for t in (train[1], valid[1], test[1]))
    n = len(x_tr)
    clf = LogisticRegression(max_iter=max_iter, warm_start=True, tol=1e-6)
    best, best_key = None, None
    for l2 in sorted(l2_grid, reverse=True):
        # sklearn minimises 1/2 ||w||^2 + C * sum(loss): C = 1 / (n * l2) gives our mean-loss objective
        clf.set_params(C=1.0 / (n * max(float(l2), 1e-12)))
        n_iter = _sklearn_fit(clf, x_tr, y_tr.numpy())
        va_pred = torch.from_numpy(clf.predict(x_va))
        key = (accuracy(va_pred, y_va), macro_f1(va_pred, y_va, num_classes))
        if best_key is None or key > best_key:
            te_pred = torch.from_numpy(clf.predict(x_te))
            best_key = key
            best = ProbeResult(valid_acc=key[0], test_acc=accuracy(te_pred, y_te), valid_f1=key[1],
                               test_f1=macro_f1(te_pred, y_te, num_classes), l2=float(l2),
                               train_acc=accuracy(torch.from_numpy(clf.predict(x_tr)), y_tr),
                               converged=n_iter < max_iter, n_iter=n_iter)
    return best


def _sklearn_fit(clf, x, y) -> int:
    """Fit; the iterations used (a fit that stops at max_iter is reported by the caller, so the
    warning itself is not needed)."""
    from sklearn.exceptions import ConvergenceWarning   # optional, as above

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(x, y)
    return int(max(clf.n_iter_))


def _sklearn_factorcl_probe(train, valid, test, num_classes, max_iter) -> ProbeResult:
    """FactorCL's probe: LogisticRegression with scikit-learn's defaults (C = 1, tol 1e-4, lbfgs)
    on the raw embeddings, fitted once on train."""
    from sklearn.linear_model import LogisticRegression   # optional, as above

    def np_(t):
        return t.detach().cpu().double().numpy()

    x_tr, x_va, x_te = np_(train[0]), np_(valid[0]), np_(test[0])
    y_tr, y_va, y_te = (t.detach().cpu().long() for t in (train[1], valid[1], test[1]))
    clf = LogisticRegression(C=1.0, max_iter=max_iter)
    n_iter = _sklearn_fit(clf, x_tr, y_tr.numpy())
    va_pred, te_pred = torch.from_numpy(clf.predict(x_va)), torch.from_numpy(clf.predict(x_te))
    return ProbeResult(valid_acc=accuracy(va_pred, y_va), test_acc=accuracy(te_pred, y_te),
                       valid_f1=macro_f1(va_pred, y_va, num_classes), test_f1=macro_f1(te_pred, y_te, num_classes),
                       l2=1.0 / len(x_tr), train_acc=accuracy(torch.from_numpy(clf.predict(x_tr)), y_tr),
                       converged=n_iter < max_iter, n_iter=n_iter)
