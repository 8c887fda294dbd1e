"""The evidence part of the report (issue 10): paired statistics over seeds, the accuracy-compute
frontier's numbers, and the expert analysis read back from the trials.

- Paired statistics: S3 at each chi (its configuration best on validation) against each other
  method's best configuration and against the no-Selection ablation at the same chi; the score is
  the test accuracy at the validation-chosen p, paired by seed (orchestrator.stats). An interval
  that covers 0 is "no measurable difference".
- Frontier: per configuration and p, the mean over seeds of the test accuracy and of the expert
  FLOPs per sample the curve point computed (logged by s3core; plots.plot_frontier draws it).
- Experts: the ``experts/...`` metrics every trial with experts logged (mean ± std over seeds),
  S3 beside the ablation of the same chi (its model is S3's before Selection: s3core.expert_trial),
  and the arrays of one seed (experts/expert_analysis.npz) for the heatmaps.
"""
from __future__ import annotations

import math
import os
import re
import tempfile

import numpy as np
import pandas as pd

from orchestrator import mlflow_layout as layout
from orchestrator.report.aggregate import best_config_of, method_label, method_order
from orchestrator.stats import paired_difference
from s3core.methods import methods_with_role, primary_method

SCORE = "test_acc_at_best"


def per_chi_methods() -> tuple[str, ...]:
    """S3 and its ablations (registry roles): compared, drawn and analysed at each chi."""
    return methods_with_role("s3", "ablation")


def _seed_scores(scores: pd.DataFrame, run_ids) -> dict[int, float]:
    rows = scores[scores["run_id"].isin(list(run_ids))]
    return {int(s): float(v) for s, v in zip(rows["seed"], rows[SCORE]) if pd.notna(s)}


def paired_rows(benchmark: str, scores: pd.DataFrame, configs: pd.DataFrame) -> list[dict]:
    """S3 (per chi) minus each other method, paired by seed: one dict per comparison.

    Keys: s3 (label), other (label), chi, mean, low, high, n, verdict (PairedDifference, in the
    scores' unit: percent points)."""
    bench = configs[configs["benchmark"] == benchmark]
    rows = []
    primary, ablations = primary_method(), methods_with_role("ablation")
    s3_chis = sorted(bench.loc[bench["method"] == primary, "chi"].unique())
    others = sorted((m for m in bench["method"].unique() if m != primary), key=lambda m: (method_order(m), m))
    for chi in s3_chis:
        s3 = best_config_of(bench, method=primary, chi=chi)
        a = _seed_scores(scores, s3["run_ids"])
        for other in others:
            match = {"method": other, "chi": chi} if other in ablations else {"method": other}
            config = best_config_of(bench, **match)
            if config is None:
                continue
            b = _seed_scores(scores, config["run_ids"])
            if not set(a) & set(b):
                continue
            label = method_label(other) + (f" χ={chi}" if other in ablations else "")
            d = paired_difference(a, b, names=(f"{method_label(primary)} χ={int(chi)}", label))
            rows.append({"s3": d.names[0], "other": label, "chi": int(chi), "mean": d.mean, "low": d.low,
                         "high": d.high, "n": d.n, "verdict": d.verdict})
    return rows


def frontier_points(benchmark: str, points: pd.DataFrame, configs: pd.DataFrame) -> pd.DataFrame:
    """Per method's best configuration (S3 and the ablation: per chi) and p: mean over seeds of
    test accuracy and expert FLOPs per sample. Columns: label, method, chi, keep_ratio, test_acc,
    expert_flops, n. Rows without logged FLOPs keep NaN there."""
    bench = configs[configs["benchmark"] == benchmark]
    frames = []
    for method in sorted(bench["method"].unique(), key=lambda m: (method_order(m), m)):
        chis = sorted(bench.loc[bench["method"] == method, "chi"].unique()) if method in per_chi_methods() else [None]
        for chi in chis:
            config = best_config_of(bench, method=method, **({"chi": chi} if chi is not None else {}))
            curve = points[points["run_id"].isin(config["run_ids"])]
            if "expert_flops" not in curve:
                curve = curve.assign(expert_flops=np.nan)
            mean = curve.groupby("keep_ratio").agg(test_acc=("test_acc", "mean"), expert_flops=("expert_flops", "mean"),
                                                   n=("run_id", "nunique")).reset_index()
            label = method_label(method) + (f" χ={int(chi)}" if chi is not None else "")
            frames.append(mean.assign(label=label, method=method, chi=int(config["chi"])))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def curve_rows(benchmark: str, points: pd.DataFrame, configs: pd.DataFrame) -> list[dict]:
    """Is there an inverted U? For S3 and the ablation at each chi (best configuration on
    validation), each p: the test accuracy over seeds and its difference from p = 1 paired by seed.

    Returns one dict per (label, p): label, chi, keep_ratio, mean, std, n, and the paired
    difference from p = 1 (diff, low, high, verdict; None at p = 1 itself)."""
    bench = configs[configs["benchmark"] == benchmark]
    rows = []
    for method in per_chi_methods():
        for chi in sorted(bench.loc[bench["method"] == method, "chi"].unique()):
            config = best_config_of(bench, method=method, chi=chi)
            curve = points[points["run_id"].isin(config["run_ids"])]
            by_p = {float(p): {int(s): float(v) for s, v in zip(g["seed"], g["test_acc"]) if pd.notna(s)}
                    for p, g in curve.groupby("keep_ratio")}
            if 1.0 not in by_p:
                continue
            label = method_label(method) + f" χ={int(chi)}"
            for p in sorted(by_p, reverse=True):
                scores = list(by_p[p].values())
                row = {"label": label, "chi": int(chi), "keep_ratio": p, "mean": float(np.mean(scores)),
                       "std": float(np.std(scores, ddof=1)) if len(scores) > 1 else math.nan, "n": len(scores),
                       "diff": None}
                if p != 1.0 and len(set(by_p[p]) & set(by_p[1.0])) >= 2:
                    d = paired_difference(by_p[p], by_p[1.0], names=(f"p = {p:g}", "p = 1"))
                    row.update(diff=d.mean, low=d.low, high=d.high, verdict=d.verdict)
                rows.append(row)
    return rows


# ---------------------------------------------------------------------------------------------- experts

# experts/<name>/<tag> metric names (s3core.analysis.ExpertAnalysis.to_metrics)
DSC_KEY = re.compile(r"^dsc/(?P<pair>[^/]+)/L(?P<layer>\d+)$")


def expert_metric_rows(benchmark: str, trials: pd.DataFrame, configs: pd.DataFrame, names) -> list[dict]:
    """Mean ± std over seeds of the expert metrics `names` (keys of to_metrics, without the
    ``experts/`` prefix; a regex each), for S3 and the ablation at each chi (best configuration).

    Returns one dict per (metric key, chi): key, chi, and for each of S3 / ablation its mean, std, n."""
    bench = configs[configs["benchmark"] == benchmark]
    patterns = [re.compile(n) for n in names]
    rows: dict[tuple, dict] = {}
    for method in per_chi_methods():
        for chi in sorted(bench.loc[bench["method"] == method, "chi"].unique()):
            config = best_config_of(bench, method=method, chi=chi)
            chosen = trials[trials["run_id"].isin(config["run_ids"])]
            values: dict[str, list] = {}
            for metrics in chosen["experts"]:
                for key, value in (metrics or {}).items():
                    if any(p.search(key) for p in patterns):
                        values.setdefault(key, []).append(value)
            for key, vs in values.items():
                row = rows.setdefault((key, int(chi)), {"key": key, "chi": int(chi)})
                row[method] = (float(np.mean(vs)), float(np.std(vs, ddof=1)) if len(vs) > 1 else math.nan, len(vs))
    return sorted(rows.values(), key=lambda r: (r["chi"], r["key"]))


def load_expert_arrays(client, benchmark: str, trials: pd.DataFrame, configs: pd.DataFrame) -> dict:
    """The expert analysis arrays of the lowest seed of S3 and of the ablation at each chi:
    {(method, chi): (seed, ExpertAnalysis)}; runs without the artifact are left out."""
    from s3core.analysis import ExpertAnalysis   # torch: the report loads without it until it reads arrays

    bench = configs[configs["benchmark"] == benchmark]
    out = {}
    for method in per_chi_methods():
        for chi in sorted(bench.loc[bench["method"] == method, "chi"].unique()):
            config = best_config_of(bench, method=method, chi=chi)
            runs = trials[trials["run_id"].isin(config["run_ids"])].sort_values("seed")
            for run_id, seed in zip(runs["run_id"], runs["seed"]):
                try:
                    with tempfile.TemporaryDirectory() as d:
                        path = layout.download_artifact(
                            client, run_id, f"{layout.EXPERTS_ARTIFACT_DIR}/{layout.EXPERTS_FILE}", d)
                        out[(method, int(chi))] = (int(seed), ExpertAnalysis.load(os.fspath(path)))
                    break
                except Exception:    # no artifact on this run (an older trial): try the next seed
                    continue
    return out


__all__ = ["per_chi_methods", "paired_rows", "curve_rows", "frontier_points", "expert_metric_rows", "load_expert_arrays"]
