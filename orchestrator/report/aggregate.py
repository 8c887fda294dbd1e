"""Aggregation: per trial (its logged summary), per configuration (over seeds), per table row.

Protocol (S3_METHOD.md, "Evaluation"): each trial logged p* (chosen on validation by s3core,
ties to the larger p) and its accuracies there; the report reads them and never re-chooses p.
Trials that differ only in their seed are one configuration: mean +- sample std (ddof=1) over
seeds. A table row (method, chi) is the configuration with the best mean validation accuracy,
so batch size and other swept fields are chosen on validation too.

One number per trial is computed here from the curve, for comparison with the paper only: the
best test accuracy over p ("test @ best p on test"), the selection the paper's curves imply.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from orchestrator import paper_numbers
from orchestrator.report.read import FAILED, FINISHED, RUNNING
from s3core.methods import METHODS as METHOD_REGISTRY
from s3core.methods import Style

# per-trial column -> prefix of its <prefix>_mean / <prefix>_std over seeds
SEED_AVERAGED = {
    "test_acc_at_best": "test_acc",
    "valid_acc_at_best": "valid_acc",
    "test_acc_no_prune": "test_acc_no_prune",
}
TRIAL_IDENTITY = ("run_id", "run_name", "benchmark", "method", "chi", "batch_size", "seed", "config_key")


def method_label(method: str) -> str:
    """How tables and plots name a method: its registry label, else its name."""
    known = METHOD_REGISTRY.get(method)
    return (known.label or method) if known else method


def method_style(method: str) -> Style:
    """How plots draw a method: its registry style, else the default (the report's fallback colours)."""
    known = METHOD_REGISTRY.get(method)
    return known.style if known else Style()


def method_order(method: str) -> int:
    """Registry order; unknown methods last."""
    names = list(METHOD_REGISTRY)
    return names.index(method) if method in names else len(names)


def records(frame: pd.DataFrame) -> list[dict]:
    """The frame's rows as dicts of plain Python numbers (no numpy scalars)."""
    def clean(value):
        if isinstance(value, np.integer):
            return int(value)
        if isinstance(value, np.floating):
            return float(value)
        return value
    return [{k: clean(v) for k, v in row.items()} for row in frame.to_dict("records")]


def count_statuses(trials: pd.DataFrame) -> dict[str, int]:
    counts = {FINISHED: 0, FAILED: 0, RUNNING: 0}
    for status, count in trials["status"].value_counts().items():
        counts[status] = counts.get(status, 0) + int(count)
    return counts


def _best_on_test(curve: pd.DataFrame) -> tuple[float, float]:
    """(max test accuracy over p, that p); ties go to the larger p, as on validation."""
    if "test_acc" not in curve or curve["test_acc"].isna().all():
        return np.nan, np.nan
    curve = curve.sort_values("keep_ratio", ascending=False)
    best = curve.iloc[int(np.nanargmax(curve["test_acc"].to_numpy(dtype=float)))]
    return float(best["test_acc"]), float(best["keep_ratio"])


def per_trial_scores(trials: pd.DataFrame, points: pd.DataFrame) -> pd.DataFrame:
    """One row per scored trial (FINISHED, with a curve and a logged summary).

    The validation-chosen columns are the trial's logged summary, unchanged (percent):
    best_keep_ratio, valid_acc_at_best, test_acc_at_best, test_acc_no_prune, valid_acc_no_prune.
    From the curve: test_acc_best_on_test and keep_ratio_best_on_test, and n_points.
    """
    scored = trials[trials["has_curve"] & trials["has_summary"]]
    curves = dict(tuple(points.groupby("run_id", sort=False)))
    rows = []
    for trial in records(scored):
        curve = curves[trial["run_id"]]
        best_test, best_test_p = _best_on_test(curve)
        rows.append({
            **{key: trial[key] for key in TRIAL_IDENTITY},
            "best_keep_ratio": trial["best_keep_ratio"],
            "valid_acc_at_best": trial["best_valid_acc"],
            "test_acc_at_best": trial["test_acc_at_best"],
            "test_acc_no_prune": trial["test_acc_no_prune"],
            "valid_acc_no_prune": trial["valid_acc_no_prune"],
            "test_acc_best_on_test": best_test,
            "keep_ratio_best_on_test": best_test_p,
            "n_points": len(curve),
        })
    return pd.DataFrame(rows)


def _std(values: pd.Series) -> float:
    values = values.dropna()
    return float(values.std(ddof=1)) if len(values) > 1 else float("nan")


def _best_of_mean_curve(points: pd.DataFrame, run_ids: list) -> tuple[float, float, float]:
    """The paper's selection: the best p of the seed-averaged test curve. Returns (mean test
    accuracy there, the std over seeds there, that p); ties go to the larger p."""
    curve = points[points["run_id"].isin(run_ids)].groupby("keep_ratio")["test_acc"]
    mean = curve.mean().sort_index(ascending=False)
    if mean.isna().all():
        return np.nan, np.nan, np.nan
    p = float(mean.index[int(np.nanargmax(mean.to_numpy(dtype=float)))])
    at_p = points[points["run_id"].isin(run_ids) & (points["keep_ratio"] == p)]["test_acc"]
    return float(mean[p]), _std(at_p), p


def aggregate_configs(scores: pd.DataFrame, points: pd.DataFrame) -> pd.DataFrame:
    """Mean +- std over seeds per (benchmark, method, configuration). "Best on test" is the best
    p of the seed-averaged test curve, as the paper's curves select it (S3_METHOD.md)."""
    rows = []
    for (benchmark, method, config_key), group in scores.groupby(
            ["benchmark", "method", "config_key"], sort=False):
        batch_size = group["batch_size"].iloc[0]
        row = {
            "benchmark": benchmark, "method": method, "config_key": config_key,
            "chi": int(group["chi"].iloc[0]),
            "batch_size": None if pd.isna(batch_size) else int(batch_size),
            "n_seeds": len(group),
            "seeds": sorted(int(s) for s in group["seed"].dropna()),
            "run_ids": list(group["run_id"]),
            "keep_ratio_mean": float(group["best_keep_ratio"].mean()),
        }
        for column, prefix in SEED_AVERAGED.items():
            row[f"{prefix}_mean"] = float(group[column].mean())
            row[f"{prefix}_std"] = _std(group[column])
        (row["test_acc_best_on_test_mean"], row["test_acc_best_on_test_std"],
         row["keep_ratio_best_on_test_mean"]) = _best_of_mean_curve(points, row["run_ids"])
        rows.append(row)
    return pd.DataFrame(rows)


def best_config_of(configs: pd.DataFrame, **match) -> pd.Series | None:
    """The configuration with the best mean validation accuracy among those matching."""
    selected = configs
    for key, value in match.items():
        selected = selected[selected[key] == value]
    if selected.empty:
        return None
    return selected.loc[selected["valid_acc_mean"].idxmax()]


def paper_table(configs: pd.DataFrame) -> list[dict]:
    """One row per (benchmark, method, chi): the configuration best on validation, with the
    paper's numbers for that (method, chi) beside it (display strings, or None)."""
    rows = []
    for (benchmark, method, chi), group in configs.groupby(["benchmark", "method", "chi"]):
        chosen = records(group.loc[[group["valid_acc_mean"].idxmax()]])[0]
        best = paper_numbers.paper_numbers_matching(benchmark, method, chi, paper_numbers.BEST)
        dense = paper_numbers.paper_numbers_matching(benchmark, method, chi, paper_numbers.NO_PRUNE)
        chosen.update(
            label=method_label(method),
            n_configs=len(group),
            paper_best="; ".join(map(paper_numbers.labelled, best)) or None,
            paper_best_value=best[0].accuracy if best else None,
            paper_no_prune="; ".join(map(paper_numbers.labelled, dense)) or None,
        )
        rows.append(chosen)
    rows.sort(key=lambda r: (r["benchmark"], method_order(r["method"]), r["chi"]))
    return rows


def unmatched_paper_numbers(benchmark: str, rows: list[dict]) -> list[str]:
    """The published numbers for this benchmark that no table row shows, one line each."""
    shown = {id(n) for r in rows for kind in (paper_numbers.BEST, paper_numbers.NO_PRUNE)
             for n in paper_numbers.paper_numbers_matching(benchmark, r["method"], r["chi"], kind)}
    return [f"{method_label(n.method)}{'' if n.chi is None else f' χ={n.chi}'}: {paper_numbers.labelled(n)} ({n.note})"
            for n in paper_numbers.paper_numbers_for(benchmark) if id(n) not in shown]