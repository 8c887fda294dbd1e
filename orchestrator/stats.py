"""Paired comparisons of two methods over seeds: the mean difference with a t-interval.

    d = paired_difference({0: 0.93, 1: 0.91, 2: 0.92}, {0: 0.90, 1: 0.90, 2: 0.91}, names=("s3", "clip"))
    d.verdict   # 'no measurable difference' when the interval covers 0, else 's3 higher' / 's3 lower'
    d.describe()  # 's3 - clip: +1.67 [95% CI -1.20, +4.53] over 3 seeds: no measurable difference'

Method: seed s gives the difference d_s = a_s - b_s (same seed = same data order and init, so
pairing removes the seed-to-seed variance both share); the interval is
mean(d) +- t_{1 - alpha/2, n - 1} * sd(d) / sqrt(n), sd with ddof = 1. The t quantile comes from
scipy when it is installed (it is, with scikit-learn), else from a table (95% only). Pure Python
and numpy otherwise; no Ray, no MLflow.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

NO_DIFFERENCE = "no measurable difference"

# two-sided 95% t quantiles t_{0.975, df} (scipy.stats.t.ppf(0.975, df), 6 digits)
_T975 = {1: 12.706205, 2: 4.302653, 3: 3.182446, 4: 2.776445, 5: 2.570582, 6: 2.446912, 7: 2.364624,
         8: 2.306004, 9: 2.262157, 10: 2.228139, 11: 2.200985, 12: 2.178813, 13: 2.160369, 14: 2.144787,
         15: 2.131450, 16: 2.119905, 17: 2.109816, 18: 2.100922, 19: 2.093024, 20: 2.085963, 21: 2.079614,
         22: 2.073873, 23: 2.068658, 24: 2.063899, 25: 2.059539, 26: 2.055529, 27: 2.051831, 28: 2.048407,
         29: 2.045230, 30: 2.042272, 40: 2.021075, 60: 2.000298, 120: 1.979930}


def t_quantile(confidence: float, df: int) -> float:
    """Two-sided t critical value: P(|T_df| <= t) = confidence."""
    if df < 1:
        raise ValueError(f"t_quantile needs df >= 1, got {df}")
    try:
        from scipy.stats import t as student_t   # scipy is optional: without it, the 0.95 table (_T975)
    except ImportError:
        student_t = None
    if student_t is not None:
        return float(student_t.ppf(0.5 + confidence / 2, df))
    if abs(confidence - 0.95) > 1e-12:
        raise ValueError(f"confidence {confidence} needs scipy; without it only 0.95 is tabulated")
    # a df between table rows takes the next lower row: a slightly wider, conservative interval
    return _T975[max(d for d in _T975 if d <= df)] if df <= 120 else 1.959964


@dataclass(frozen=True)
class PairedDifference:
    mean: float              # mean over seeds of a - b
    low: float               # the interval; NaN with fewer than 2 seeds
    high: float
    n: int                   # seeds paired
    sd: float                # sample std (ddof 1) of the differences; NaN with n < 2
    confidence: float
    seeds: tuple             # the seeds (or positions) paired, in order
    names: tuple[str, str]   # (a, b)

    @property
    def verdict(self) -> str:
        """'no measurable difference' when the interval covers 0; '<a> higher' or '<a> lower'
        when it does not; 'fewer than 2 seeds' when there is no interval."""
        if self.n < 2 or math.isnan(self.low):
            return "fewer than 2 seeds"
        if self.low <= 0.0 <= self.high:
            return NO_DIFFERENCE
        return f"{self.names[0]} {'higher' if self.mean > 0 else 'lower'}"

    def describe(self, scale: float = 1.0, digits: int = 2) -> str:
        """One line, values multiplied by `scale` (100 for accuracies in percent)."""
        f = lambda v: f"{v * scale:+.{digits}f}"  # noqa: E731
        interval = f" [{round(self.confidence * 100)}% CI {f(self.low)}, {f(self.high)}]" if self.n >= 2 else ""
        return (f"{self.names[0]} - {self.names[1]}: {f(self.mean)}{interval} over {self.n} "
                f"seed{'s' if self.n != 1 else ''}: {self.verdict}")

    def to_dict(self) -> dict:
        return {"mean": self.mean, "low": self.low, "high": self.high, "n": self.n, "sd": self.sd,
                "confidence": self.confidence, "verdict": self.verdict, "a": self.names[0], "b": self.names[1]}


def paired_difference(a, b, confidence: float = 0.95, names: tuple[str, str] = ("a", "b")) -> PairedDifference:
    """The mean of a - b over seeds with its t-interval.

    Args:
        a, b: {seed: score} (paired on the seeds both have; a seed in one only is left out and
            does not count in n) or equal-length sequences (paired by position).
        confidence: of the interval, in (0, 1).
        names: what a and b are, for the verdict and describe().
    Returns:
        PairedDifference. Raises ValueError when nothing can be paired, a score is not finite,
        or two sequences differ in length.
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    if isinstance(a, dict) != isinstance(b, dict):
        raise ValueError("pass a and b both as {seed: score} dicts or both as sequences")
    if isinstance(a, dict):
        seeds = tuple(sorted(set(a) & set(b), key=lambda s: (str(type(s)), s)))
        xa = np.array([a[s] for s in seeds], dtype=np.float64)
        xb = np.array([b[s] for s in seeds], dtype=np.float64)
    else:
        xa, xb = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
        if xa.shape != xb.shape:
            raise ValueError(f"paired sequences differ in length: {len(xa)} vs {len(xb)}; pair by seed with dicts")
        seeds = tuple(range(len(xa)))
    if len(seeds) == 0:
        raise ValueError(f"no seed has a score for both {names[0]} and {names[1]}")
    if not (np.isfinite(xa).all() and np.isfinite(xb).all()):
        raise ValueError(f"scores of {names[0]} or {names[1]} are not all finite; drop failed trials first")
    d = xa - xb
    n = len(d)
    mean = float(d.mean())
    if n < 2:
        return PairedDifference(mean, math.nan, math.nan, n, math.nan, confidence, seeds, tuple(names))
    sd = float(d.std(ddof=1))
    half = t_quantile(confidence, n - 1) * sd / math.sqrt(n)
    return PairedDifference(mean, mean - half, mean + half, n, sd, confidence, seeds, tuple(names))


__all__ = ["NO_DIFFERENCE", "PairedDifference", "paired_difference", "t_quantile"]
