"""Divergences between expert-usage distributions and the expert matching (split from
s3core.analysis): Jensen-Shannon in bits, its generalisation to several rows, and an exact
minimum-cost assignment (numpy only: s3core needs no scipy)."""
from __future__ import annotations

import numpy as np


def js_divergence(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Jensen-Shannon divergence in bits between distributions on the last axis (0 log 0 = 0).

    Rows need not be normalised (they are); a row of zeros or NaN gives NaN."""
    p, q = np.asarray(p, dtype=np.float64), np.asarray(q, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = p / p.sum(-1, keepdims=True)
        q = q / q.sum(-1, keepdims=True)
        mid = 0.5 * (p + q)
        kl = lambda a: np.where(a > 0, a * np.log2(a / np.where(mid > 0, mid, 1.0)), 0.0).sum(-1)  # noqa: E731
        out = 0.5 * kl(p) + 0.5 * kl(q)
    bad = ~(np.isfinite(p).all(-1) & np.isfinite(q).all(-1))
    return np.where(bad, np.nan, np.clip(out, 0.0, 1.0))


def entropy_bits(p: np.ndarray) -> np.ndarray:
    p = np.asarray(p, dtype=np.float64)
    return -np.where(p > 0, p * np.log2(np.where(p > 0, p, 1.0)), 0.0).sum(-1)


def generalised_js(rows: np.ndarray) -> float:
    """JS divergence (bits) of several distributions (rows, equal weights): H(mean) - mean H.
    Rows with NaN (an absent class) are left out; fewer than 2 rows give NaN."""
    rows = np.asarray(rows, dtype=np.float64)
    rows = rows[np.isfinite(rows).all(1)]
    if len(rows) < 2:
        return float("nan")
    return float(max(0.0, entropy_bits(rows.mean(0)) - entropy_bits(rows).mean()))


def min_cost_assignment(cost: np.ndarray) -> np.ndarray:
    """Exact minimum-cost perfect matching of a square cost matrix (Hungarian algorithm, O(n^3)).

    Returns col (n,): row i is matched to column col[i]. (numpy only: s3core needs no scipy.)"""
    cost = np.asarray(cost, dtype=np.float64)
    n = cost.shape[0]
    if cost.shape != (n, n):
        raise ValueError(f"min_cost_assignment needs a square matrix, got {cost.shape}")
    u, v = np.zeros(n + 1), np.zeros(n + 1)
    match = np.zeros(n + 1, dtype=np.int64)  # match[j]: the row (1-based) matched to column j; 0 = none
    way = np.zeros(n + 1, dtype=np.int64)
    for i in range(1, n + 1):
        match[0], j0 = i, 0
        minv = np.full(n + 1, np.inf)
        used = np.zeros(n + 1, dtype=bool)
        while True:
            used[j0] = True
            i0 = match[j0]
            free = ~used[1:]
            cur = cost[i0 - 1] - u[i0] - v[1:]
            better = free & (cur < minv[1:])
            minv[1:][better] = cur[better]
            way[1:][better] = j0
            cand = np.where(free, minv[1:], np.inf)
            j1 = int(cand.argmin()) + 1
            delta = cand[j1 - 1]
            u[match[used]] += delta
            v[used] -= delta
            minv[~used] -= delta
            j0 = j1
            if match[j0] == 0:
                break
        while j0:
            j1 = way[j0]
            match[j0] = match[j1]
            j0 = j1
    col = np.empty(n, dtype=np.int64)
    col[match[1:] - 1] = np.arange(n)
    return col


__all__ = ["js_divergence", "generalised_js", "min_cost_assignment", "entropy_bits"]
