"""orchestrator.stats: paired differences over seeds."""
from __future__ import annotations

import builtins
import math

import numpy as np
import pytest

from orchestrator import stats
from orchestrator.stats import NO_DIFFERENCE, paired_difference, t_quantile


def test_hand_computed_interval_covering_zero():
    # d = 1, 2, 3: mean 2, sd 1, t(0.975, 2) = 4.302653 -> 2 +- 4.302653 / sqrt(3) = 2 +- 2.484138
    d = paired_difference({0: 3.0, 1: 4.0, 2: 5.0}, {0: 2.0, 1: 2.0, 2: 2.0}, names=("s3", "clip"))
    assert (d.n, d.mean, d.sd) == (3, 2.0, 1.0)
    assert d.low == pytest.approx(2 - 2.484138, abs=1e-5) and d.high == pytest.approx(2 + 2.484138, abs=1e-5)
    assert d.verdict == NO_DIFFERENCE == "no measurable difference"
    assert d.describe() == "s3 - clip: +2.00 [95% CI -0.48, +4.48] over 3 seeds: no measurable difference"


def test_interval_excluding_zero_names_the_direction():
    a = [0.930, 0.925, 0.935, 0.928, 0.932]
    b = [0.920, 0.913, 0.926, 0.917, 0.922]
    d = paired_difference(a, b, names=("s3", "clip"))
    diffs = np.subtract(a, b)
    half = 2.776445 * diffs.std(ddof=1) / math.sqrt(5)
    assert d.low == pytest.approx(diffs.mean() - half) and d.high == pytest.approx(diffs.mean() + half)
    assert d.low > 0 and d.verdict == "s3 higher"
    assert paired_difference(b, a, names=("clip", "s3")).verdict == "clip lower"
    assert d.describe(scale=100, digits=1).startswith("s3 - clip: +1.0 [95% CI +0.")
    assert d.to_dict()["verdict"] == "s3 higher"


def test_pairs_by_seed_not_by_position():
    a = {2: 0.9, 0: 0.5, 1: 0.7, 7: 0.99}         # seed 7 has no partner: left out
    b = {0: 0.4, 1: 0.6, 2: 0.8}
    d = paired_difference(a, b)
    assert d.seeds == (0, 1, 2) and d.n == 3
    assert d.mean == pytest.approx(0.1) and d.sd == pytest.approx(0.0, abs=1e-12)
    assert d.low == pytest.approx(0.1) and d.verdict == "a higher"  # identical differences: a zero-width interval


def test_identical_methods_and_too_few_seeds():
    same = paired_difference([0.8, 0.7, 0.9], [0.8, 0.7, 0.9])
    assert same.mean == 0.0 and same.verdict == NO_DIFFERENCE
    one = paired_difference({0: 0.9}, {0: 0.8})
    assert one.n == 1 and math.isnan(one.low) and one.verdict == "fewer than 2 seeds"
    assert "over 1 seed:" in one.describe()


@pytest.mark.parametrize("a, b, match", [
    ({0: 1.0}, {1: 1.0}, "no seed"),
    ([1.0, 2.0], [1.0], "differ in length"),
    ({0: 1.0}, [1.0], "both"),
    ([1.0, float("nan")], [1.0, 1.0], "finite"),
])
def test_bad_input(a, b, match):
    with pytest.raises(ValueError, match=match):
        paired_difference(a, b)


def test_t_table_agrees_with_scipy_and_is_used_without_it(monkeypatch):
    scipy_stats = pytest.importorskip("scipy.stats")
    for df, t in stats._T975.items():
        assert t == pytest.approx(scipy_stats.t.ppf(0.975, df), abs=2e-6)
    real_import = builtins.__import__

    def no_scipy(name, *args, **kwargs):
        if name.startswith("scipy"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_scipy)
    assert t_quantile(0.95, 4) == 2.776445
    assert t_quantile(0.95, 35) == stats._T975[30]                 # between rows: the wider one
    assert t_quantile(0.95, 1000) == pytest.approx(1.959964)
    with pytest.raises(ValueError, match="needs scipy"):
        t_quantile(0.9, 4)
    d = paired_difference([3.0, 4.0, 5.0], [2.0, 2.0, 2.0])
    assert d.high == pytest.approx(2 + 2.484138, abs=1e-5)
