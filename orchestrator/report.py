"""The report: S3's accuracy-vs-keep-ratio curves, the paper-style table, batch-size robustness.

Reads the trials the orchestrator logged to MLflow (layout: orchestrator.mlflow_layout) and writes
into --out (default ./report): curves_<benchmark>.png, batch_size_<benchmark>.png, report.md and
index.html (self-contained: PNGs embedded). Every file is written atomically.

    python -m orchestrator.report                                   # ./mlflow.db, all s3-* experiments
    python -m orchestrator.report --tracking-uri sqlite:////abs/mlflow.db --experiment s3-mosei
    python -m orchestrator.report --parent-run-id <id> --log-to-parent   # one grid; attach to it

Protocol (S3_METHOD.md, "Evaluation"): for each trial (one seed), p* = argmax over p of the
validation accuracy (ties go to the larger p, i.e. less pruning); the trial scores the test
accuracy at p*. Trials that differ only in their seed are one configuration; its score is the
mean +- sample std (ddof=1) over seeds. A table row (method, chi) shows the configuration with
the best mean validation accuracy at p*, so batch size and other swept fields are also chosen
on validation, never on test. Accuracies are shown in percent (fractions are scaled by 100).

Exit codes: 0 report written; 2 nothing to report (empty store, missing experiment, no finished
trials) or the tracking URI cannot be reached, with one line on stderr.
"""
from __future__ import annotations

import argparse
import base64
import html
import io
import math
import os
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from orchestrator.mlflow_layout import (
    CURVE_METRICS,
    METHODS,
    REPORT_ARTIFACT_DIR,
    ROLE_TRIAL,
    TAG_BENCHMARK,
    TAG_FAILURE,
    TAG_METHOD,
    TAG_PARENT,
    TAG_PRESET,
    TAG_ROLE,
    TAG_SEED,
)
from orchestrator import paper_numbers

EXPERIMENT_PREFIX = "s3-"
DEFAULT_OUT_DIR = "report"
KEEP_RATIOS = tuple(round(0.1 * i, 1) for i in range(10, 0, -1))  # 1.0 .. 0.1
# Params that do not define a configuration: the seed (aggregated over) and per-trial
# bookkeeping. Every other param does, so trials that differ in e.g. lambda_min never get averaged.
CONFIG_IGNORED_PARAMS = frozenset({
    "seed", "data_dir", "output_dir", "run_dir", "storage_path", "trial_key", "trial_id",
    "device", "num_workers", "code_version",
})
BASELINE_STYLES = {  # method -> (colour, linestyle, label)
    "clip": ("black", "--", "clip"),
    "s3_no_select": ("tab:gray", "-.", "s3 without Stage 2"),
    "supervised": ("tab:purple", ":", "supervised (upper bound)"),
}
FINISHED, FAILED, RUNNING = "FINISHED", "FAILED", "RUNNING"


class ReportError(Exception):
    """Nothing to report, or the store cannot be read: the CLI prints it on one line, exit 2."""


@dataclass
class ReportResult:
    """What build_report wrote and computed.

    table: one dict per (benchmark, method, chi), the paper-style table.
    configs: one dict per (benchmark, method, configuration), aggregated over seeds.
    points: one row per finished trial x keep-ratio (accuracies in percent).
    """

    out_dir: Path
    paths: list[Path]
    table: list[dict]
    configs: list[dict]
    failed: list[dict]
    counts: dict[str, int]
    notes: list[str]
    points: pd.DataFrame = field(repr=False, default_factory=pd.DataFrame)


# ----------------------------------------------------------------------------- reading MLflow

def default_tracking_uri() -> str:
    env_uri = os.environ.get("MLFLOW_TRACKING_URI")
    if env_uri:
        return env_uri
    return f"sqlite:///{os.path.abspath('mlflow.db')}"  # abs path: sqlite:////abs/mlflow.db


def _check_sqlite_exists(uri: str) -> None:
    """MLflow would silently create an empty database; a report on a typo'd path should not."""
    if not uri.startswith("sqlite:///"):
        return
    path = uri[len("sqlite:///"):].split("?", 1)[0]
    if path and path != ":memory:" and not os.path.exists(path):
        raise ReportError(f"no MLflow store at {path} (tracking URI {uri}); pass --tracking-uri of the store "
                          "run_grid.py wrote (sqlite:////abs/path/mlflow.db)")


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def _resolve_experiments(client, experiment_names: Sequence[str] | None,
                         parent_run_id: str | None) -> list:
    try:
        if experiment_names:
            experiments = []
            for name in experiment_names:
                experiment = client.get_experiment_by_name(name)
                if experiment is None:
                    raise ReportError(f"no experiment named {name!r} in the store")
                experiments.append(experiment)
            return experiments
        if parent_run_id:
            return [client.get_experiment(client.get_run(parent_run_id).info.experiment_id)]
        experiments, token = [], None
        while True:
            page = client.search_experiments(
                filter_string=f"name LIKE '{EXPERIMENT_PREFIX}%'", page_token=token)
            experiments += [e for e in page if e.name.startswith(EXPERIMENT_PREFIX)]
            token = page.token
            if not token:
                break
    except ReportError:
        raise
    except Exception as error:  # connection refused, bad URI, bad run id...
        raise ReportError(f"cannot read the MLflow store: {_first_line(error)}") from error
    if not experiments:
        raise ReportError(f"no experiments named {EXPERIMENT_PREFIX}* in the store; run run_grid.py into it "
                          "first, or pass --tracking-uri / --experiment of the store that holds the trials")
    return sorted(experiments, key=lambda e: e.name)


def _search_trials(client, experiment_ids: list[str], parent_run_id: str | None) -> list:
    filter_string = f"tags.`{TAG_ROLE}` = '{ROLE_TRIAL}'"
    if parent_run_id:
        filter_string += f" and tags.`{TAG_PARENT}` = '{parent_run_id}'"
    runs, token = [], None
    while True:
        page = client.search_runs(experiment_ids, filter_string=filter_string,
                                  max_results=1000, page_token=token)
        runs += list(page)
        token = page.token
        if not token:
            return runs


def _parse_int(value) -> int | None:
    try:
        return int(float(value))
    except (TypeError, ValueError):
        return None


def _trial_info(run, experiment_name: str) -> dict:
    tags, params = run.data.tags, run.data.params
    benchmark = (tags.get(TAG_BENCHMARK) or params.get("benchmark")
                 or experiment_name.removeprefix(EXPERIMENT_PREFIX))
    if experiment_name != EXPERIMENT_PREFIX + benchmark:
        # a named experiment is its own section: two experiments on one benchmark (say, two
        # synthetic labels) hold different data and must not be averaged together
        benchmark = f"{benchmark} [{experiment_name}]"
    method = tags.get(TAG_METHOD) or params.get("method") or "?"
    config = tuple(sorted((k, v) for k, v in params.items() if k not in CONFIG_IGNORED_PARAMS))
    config += (("preset", tags.get(TAG_PRESET, "")), ("method", method))
    return {
        "experiment": experiment_name,
        "run_id": run.info.run_id,
        "run_name": run.info.run_name or run.info.run_id[:8],
        "status": run.info.status,
        "benchmark": benchmark,
        "method": method,
        "preset": tags.get(TAG_PRESET, ""),
        "seed": _parse_int(tags.get(TAG_SEED, params.get("seed"))),
        "chi": _parse_int(params.get("chi")) or 1,
        "batch_size": _parse_int(params.get("batch_size")),
        "config_key": repr(config),
        "failure_reason": tags.get(TAG_FAILURE, ""),
    }


def _read_curve(client, run_id: str) -> pd.DataFrame:
    """One row per keep-ratio; a step logged twice (e.g. a resumed trial) keeps its latest value."""
    columns = {}
    for key in CURVE_METRICS:
        latest: dict[int, tuple[int, float]] = {}
        for metric in client.get_metric_history(run_id, key):
            if metric.step not in latest or metric.timestamp >= latest[metric.step][0]:
                latest[metric.step] = (metric.timestamp, metric.value)
        columns[key] = {step: value for step, (_, value) in latest.items()}
    curve = pd.DataFrame(columns)
    if curve.empty:
        return curve
    curve.index.name = "step"
    curve = curve.reset_index()
    curve["keep_ratio"] = curve["step"] / 100.0
    accuracy = curve[[c for c in CURVE_METRICS if c in curve]].to_numpy(dtype=float)
    if np.nanmax(accuracy) <= 1.0 + 1e-9:  # logged as fractions: report percent
        for key in CURVE_METRICS:
            if key in curve:
                curve[key] = curve[key] * 100.0
    return curve.drop(columns="step").sort_values("keep_ratio", ascending=False)


def load_trials(client, experiments: list, parent_run_id: str | None = None, progress=None
                ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(trials: one row per trial run, any status; points: one row per finished trial x p).
    progress: None, or called as progress("reading trials from MLflow", done, total) before each run."""
    names = {e.experiment_id: e.name for e in experiments}
    try:
        runs = _search_trials(client, list(names), parent_run_id)
    except Exception as error:
        raise ReportError(f"cannot search runs: {_first_line(error)}") from error
    trial_rows, point_frames = [], []
    for i, run in enumerate(runs):
        if progress is not None:
            progress("reading trials from MLflow", i, len(runs))
        info = _trial_info(run, names[run.info.experiment_id])
        curve = _read_curve(client, run.info.run_id) if info["status"] == FINISHED else None
        info["has_curve"] = curve is not None and not curve.empty and "valid_acc" in curve
        trial_rows.append(info)
        if info["has_curve"]:
            for key, value in info.items():
                curve[key] = value
            point_frames.append(curve)
    trials = pd.DataFrame(trial_rows)
    points = pd.concat(point_frames, ignore_index=True) if point_frames else pd.DataFrame()
    return trials, points


# ----------------------------------------------------------------------------- aggregation

def per_trial_best(points: pd.DataFrame) -> pd.DataFrame:
    """One row per trial: p* chosen on validation, accuracies at p* and at p = 1.0."""
    rows = []
    for run_id, curve in points.groupby("run_id", sort=False):
        curve = curve.sort_values("keep_ratio", ascending=False)
        valid = curve["valid_acc"].to_numpy(dtype=float)
        best = curve.iloc[int(np.nanargmax(valid))]  # first max = largest p among ties
        dense = curve[np.isclose(curve["keep_ratio"], 1.0)]
        row = {k: best[k] for k in ("run_id", "benchmark", "method", "chi", "batch_size", "seed",
                                    "config_key", "run_name")}
        row.update(
            best_keep_ratio=float(best["keep_ratio"]),
            valid_acc_at_best=float(best["valid_acc"]),
            test_acc_at_best=float(best.get("test_acc", np.nan)),
            test_acc_no_prune=float(dense["test_acc"].iloc[0]) if len(dense) else np.nan,
            valid_acc_no_prune=float(dense["valid_acc"].iloc[0]) if len(dense) else np.nan,
            n_points=len(curve),
        )
        rows.append(row)
    return pd.DataFrame(rows)


def _std(values: pd.Series) -> float:
    values = values.dropna()
    return float(values.std(ddof=1)) if len(values) > 1 else float("nan")


def aggregate_configs(best: pd.DataFrame) -> pd.DataFrame:
    """Mean +- std over seeds per (benchmark, method, configuration)."""
    rows = []
    for (benchmark, method, config_key), group in best.groupby(
            ["benchmark", "method", "config_key"], sort=False):
        rows.append({
            "benchmark": benchmark, "method": method, "config_key": config_key,
            "chi": int(group["chi"].iloc[0]),
            "batch_size": None if pd.isna(group["batch_size"].iloc[0])
            else int(group["batch_size"].iloc[0]),
            "n_seeds": len(group),
            "seeds": sorted(int(s) for s in group["seed"].dropna()),
            "run_ids": list(group["run_id"]),
            "test_acc_mean": float(group["test_acc_at_best"].mean()),
            "test_acc_std": _std(group["test_acc_at_best"]),
            "valid_acc_mean": float(group["valid_acc_at_best"].mean()),
            "valid_acc_std": _std(group["valid_acc_at_best"]),
            "keep_ratio_mean": float(group["best_keep_ratio"].mean()),
            "test_acc_no_prune_mean": float(group["test_acc_no_prune"].mean()),
            "test_acc_no_prune_std": _std(group["test_acc_no_prune"]),
        })
    return pd.DataFrame(rows)


def _method_order(method: str) -> int:
    return METHODS.index(method) if method in METHODS else len(METHODS)


def paper_table(configs: pd.DataFrame) -> list[dict]:
    """One row per (benchmark, method, chi): the configuration best on validation."""
    rows = []
    for (benchmark, method, chi), group in configs.groupby(["benchmark", "method", "chi"]):
        chosen = _records(group.loc[[group["valid_acc_mean"].idxmax()]])[0]
        best_paper = paper_numbers.paper_number(benchmark, method, chi, paper_numbers.BEST)
        dense_paper = paper_numbers.paper_number(benchmark, method, chi, paper_numbers.NO_PRUNE)
        chosen.update(
            n_configs=len(group),
            paper_best=best_paper.display() if best_paper else None,
            paper_best_value=best_paper.accuracy if best_paper else None,
            paper_no_prune=dense_paper.display() if dense_paper else None,
        )
        rows.append(chosen)
    rows.sort(key=lambda r: (r["benchmark"], _method_order(r["method"]), r["chi"]))
    return rows


# ----------------------------------------------------------------------------- plots

def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _figure_png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
    _pyplot().close(fig)
    return buffer.getvalue()


def _fmt(mean: float, std: float, digits: int = 2) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "–"
    if std is None or math.isnan(std):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def _best_config_of(configs: pd.DataFrame, **match) -> pd.Series | None:
    selected = configs
    for key, value in match.items():
        selected = selected[selected[key] == value]
    if selected.empty:
        return None
    return selected.loc[selected["valid_acc_mean"].idxmax()]


def plot_curves(benchmark: str, points: pd.DataFrame, configs: pd.DataFrame) -> bytes:
    """Test (left) and validation (right) accuracy vs keep-ratio p, one colour per chi."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.2), sharey=True)
    bench_configs = configs[configs["benchmark"] == benchmark]
    chis = sorted(bench_configs.loc[bench_configs["method"] == "s3", "chi"].unique())
    colours = plt.get_cmap("tab10")
    for ax, split in zip(axes, ("test", "valid")):
        metric = f"{split}_acc"
        for index, chi in enumerate(chis):
            config = _best_config_of(bench_configs, method="s3", chi=chi)
            colour = colours(index % 10)
            curves = points[points["run_id"].isin(config["run_ids"])]
            wide = curves.pivot_table(index="keep_ratio", columns="run_id", values=metric)
            wide = wide.sort_index(ascending=False)
            for run_id in wide.columns:
                ax.plot(wide.index, wide[run_id], color=colour, linestyle=":", linewidth=0.9,
                        alpha=0.7)
            mean, std = wide.mean(axis=1), wide.std(axis=1, ddof=1)
            label = f"S3 χ={chi}"
            if pd.notna(config["batch_size"]):
                label += f", batch {config['batch_size']}"
            label += f" (n={config['n_seeds']})"
            ax.plot(mean.index, mean, color=colour, linewidth=2.2, marker="o", markersize=4,
                    label=label)
            if len(wide.columns) > 1:
                ax.fill_between(mean.index, mean - std, mean + std, color=colour, alpha=0.18)
            if split == "test":
                for number in paper_numbers.paper_numbers_for(benchmark):
                    if (number.method == "s3" and number.chi == chi and number.keep_ratio
                            and number.qualifier == "="):
                        ax.plot([number.keep_ratio], [number.accuracy], marker="*",
                                markersize=14, color=colour, markeredgecolor="black",
                                linestyle="none",
                                label=f"paper χ={chi}, p={number.keep_ratio:g}: "
                                      f"{number.accuracy:.2f}")
        for method, (colour, style, name) in BASELINE_STYLES.items():
            config = _best_config_of(bench_configs, method=method)
            if config is None:
                continue
            value = config[f"{metric}_mean"]
            ax.axhline(value, color=colour, linestyle=style, linewidth=1.6,
                       label=f"{name}: {value:.2f} (best p on valid)")
        ax.set_xlim(1.03, 0.07)  # p = 1.0 on the left: sparser to the right, as in the paper
        ax.set_xticks(KEEP_RATIOS)
        ax.set_xlabel("keep ratio p  (fraction of routing pairs kept; sparser →)")
        ax.set_title(f"{split} accuracy")
        ax.grid(True, alpha=0.35)
        ax.yaxis.set_tick_params(labelleft=True)
    axes[0].set_ylabel("linear-probe accuracy (%)")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0),
               ncol=min(3, max(1, len(labels))), frameon=False, fontsize=9)
    fig.suptitle(f"{benchmark}: accuracy vs keep ratio (mean ± std over seeds; dotted: each "
                 f"seed)", fontsize=12)
    fig.tight_layout()
    return _figure_png(fig)


def plot_batch_size(benchmark: str, configs: pd.DataFrame) -> bytes | None:
    """Best-p test accuracy vs batch size, one line per chi; None with one batch size only."""
    bench = configs[(configs["benchmark"] == benchmark) & configs["batch_size"].notna()]
    if bench["batch_size"].nunique() < 2:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    colours = plt.get_cmap("tab10")
    s3_chis = sorted(bench.loc[bench["method"] == "s3", "chi"].unique())
    lines = [("s3", chi) for chi in s3_chis]
    lines += [(m, None) for m in BASELINE_STYLES
              if bench.loc[bench["method"] == m, "batch_size"].nunique() > 1]
    for method, chi in lines:
        subset = bench[bench["method"] == method]
        if chi is not None:
            subset = subset[subset["chi"] == chi]
        # per batch size, the configuration best on validation
        chosen = subset.loc[subset.groupby("batch_size")["valid_acc_mean"].idxmax()]
        chosen = chosen.sort_values("batch_size")
        if chi is not None:
            colour, style = colours(s3_chis.index(chi) % 10), "-"
            label = f"S3 χ={chi}"
        else:
            colour, style, label = BASELINE_STYLES[method]
        ax.errorbar(chosen["batch_size"], chosen["test_acc_mean"],
                    yerr=chosen["test_acc_std"].fillna(0.0), color=colour, linestyle=style,
                    marker="o", capsize=4, linewidth=1.8, label=label)
    sizes = sorted(int(b) for b in bench["batch_size"].unique())
    ax.set_xscale("log", base=2)
    ax.set_xticks(sizes)
    ax.set_xticklabels([str(b) for b in sizes])
    ax.minorticks_off()
    ax.set_xlabel("batch size")
    ax.set_ylabel("test accuracy at valid-chosen p (%)")
    ax.set_title(f"{benchmark}: batch-size robustness (mean ± std over seeds)")
    ax.grid(True, alpha=0.35)
    ax.legend(fontsize=9)
    fig.tight_layout()
    return _figure_png(fig)


# ----------------------------------------------------------------------------- writing

def _atomic_write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(tmp_name, 0o644)
        os.replace(tmp_name, path)
    except BaseException:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
        raise
    return path


TABLE_HEADER = ("method", "χ", "batch", "seeds", "test acc @ p* (valid-chosen)", "mean p*",
                "valid acc @ p*", "test acc p=1.0", "paper best", "paper p=1.0")


def _table_cells(row: dict) -> list[str]:
    batch = "–" if pd.isna(row["batch_size"]) else str(int(row["batch_size"]))
    if row["n_configs"] > 1:
        batch += f" (best of {row['n_configs']})"
    return [
        row["method"], str(row["chi"]), batch, str(row["n_seeds"]),
        _fmt(row["test_acc_mean"], row["test_acc_std"]),
        f"{row['keep_ratio_mean']:.2f}",
        _fmt(row["valid_acc_mean"], row["valid_acc_std"]),
        _fmt(row["test_acc_no_prune_mean"], row["test_acc_no_prune_std"]),
        row["paper_best"] or "–", row["paper_no_prune"] or "–",
    ]


def _unmatched_paper_numbers(benchmark: str, rows: list[dict]) -> list[str]:
    shown = {(r["paper_best"], r["method"]) for r in rows} | {(r["paper_no_prune"], r["method"])
                                                                for r in rows}
    return [f"{n.method}{'' if n.chi is None else f' χ={n.chi}'}: {n.display()} ({n.note})"
            for n in paper_numbers.paper_numbers_for(benchmark)
            if (n.display(), n.method) not in shown]


def _markdown(context: dict) -> str:
    lines = ["# S3 report", "",
             f"- tracking URI: `{context['tracking_uri']}`",
             f"- experiments: {', '.join(f'`{n}`' for n in context['experiments'])}"]
    if context["parent_run_id"]:
        lines.append(f"- parent run: `{context['parent_run_id']}`")
    lines.append("- trials: " + ", ".join(f"{v} {k.lower()}" for k, v in context["counts"].items()))
    lines += ["", "p* is chosen per seed on the validation split; test accuracy is reported there "
              "(mean ± sample std over seeds, percent). A row's batch size (and any other swept "
              "field) is also chosen on validation.", ""]
    for note in context["notes"]:
        lines.append(f"> **Note:** {note}")
        lines.append("")
    for benchmark, section in context["benchmarks"].items():
        lines += [f"## {benchmark}", "", "| " + " | ".join(TABLE_HEADER) + " |",
                  "|" + "---|" * len(TABLE_HEADER)]
        lines += ["| " + " | ".join(_table_cells(r)) + " |" for r in section["rows"]]
        if section["unmatched"]:
            lines += ["", "Other numbers from the paper: " + "; ".join(section["unmatched"])]
        lines += ["", f"![curves]({section['curves']})", ""]
        if section["batch"]:
            lines += [f"![batch size]({section['batch']})", ""]
        else:
            lines += [f"_Batch-size plot skipped: {section['batch_note']}_", ""]
    lines += ["## Failed trials", ""]
    if context["failed"]:
        lines += ["| run | method | χ | batch | seed | reason |", "|---|---|---|---|---|---|"]
        for f in context["failed"]:
            reason = f["failure_reason"].replace("|", "\\|").replace("\n", " ") or "(no reason)"
            lines.append(f"| `{f['run_name']}` ({f['run_id'][:8]}) | {f['method']} | {f['chi']} "
                         f"| {f['batch_size']} | {f['seed']} | {reason} |")
    else:
        lines.append("None.")
    return "\n".join(lines) + "\n"


def _html(context: dict, images: dict[str, bytes]) -> str:
    esc = html.escape

    def img(name: str) -> str:
        data = base64.b64encode(images[name]).decode("ascii")
        return (f'<a href="{esc(name)}"><img alt="{esc(name)}" '
                f'src="data:image/png;base64,{data}"></a>')

    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>S3 report</title>",
             "<style>body{font-family:sans-serif;margin:2em;max-width:1400px}"
             "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #bbb;"
             "padding:4px 8px;text-align:right}td:first-child,th{text-align:left}"
             "img{max-width:100%}.note{background:#fff4d6;padding:6px 10px;border-left:4px "
             "solid #e0a800}code{background:#f2f2f2}</style></head><body>",
             "<h1>S3 report</h1><ul>",
             f"<li>tracking URI: <code>{esc(context['tracking_uri'])}</code></li>",
             "<li>experiments: " + ", ".join(f"<code>{esc(n)}</code>"
                                            for n in context["experiments"]) + "</li>"]
    if context["parent_run_id"]:
        parts.append(f"<li>parent run: <code>{esc(context['parent_run_id'])}</code></li>")
    parts.append("<li>trials: " + esc(", ".join(f"{v} {k.lower()}"
                                                 for k, v in context["counts"].items())) + "</li>")
    parts.append("</ul><p>p* is chosen per seed on the validation split; test accuracy is reported "
                 "there (mean ± sample std over seeds, percent). A row's batch size (and any "
                 "other swept field) is also chosen on validation.</p>")
    for note in context["notes"]:
        parts.append(f"<p class='note'>{esc(note)}</p>")
    for benchmark, section in context["benchmarks"].items():
        parts.append(f"<h2>{esc(benchmark)}</h2><table><tr>"
                     + "".join(f"<th>{esc(h)}</th>" for h in TABLE_HEADER) + "</tr>")
        for row in section["rows"]:
            parts.append("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in _table_cells(row))
                         + "</tr>")
        parts.append("</table>")
        if section["unmatched"]:
            parts.append("<p>Other numbers from the paper: "
                         + esc("; ".join(section["unmatched"])) + "</p>")
        parts.append(img(section["curves"]))
        if section["batch"]:
            parts.append(img(section["batch"]))
        else:
            parts.append(f"<p><em>Batch-size plot skipped: {esc(section['batch_note'])}</em></p>")
    parts.append("<h2>Failed trials</h2>")
    if context["failed"]:
        parts.append("<table><tr><th>run</th><th>method</th><th>χ</th><th>batch</th><th>seed"
                     "</th><th>reason</th></tr>")
        for f in context["failed"]:
            parts.append("<tr>" + "".join(
                f"<td>{esc(str(c))}</td>" for c in (
                    f"{f['run_name']} ({f['run_id'][:8]})", f["method"], f["chi"],
                    f["batch_size"], f["seed"], f["failure_reason"] or "(no reason)"))
                + "</tr>")
        parts.append("</table>")
    else:
        parts.append("<p>None.</p>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _safe_name(benchmark: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in benchmark)


def _count_statuses(trials: pd.DataFrame) -> dict[str, int]:
    counts = {FINISHED: 0, FAILED: 0, RUNNING: 0}
    for status, count in trials["status"].value_counts().items():
        counts[status] = counts.get(status, 0) + int(count)
    return counts


def _records(frame: pd.DataFrame) -> list[dict]:
    def clean(value):
        if isinstance(value, (np.integer,)):
            return int(value)
        if isinstance(value, (np.floating,)):
            return float(value)
        return value
    return [{k: clean(v) for k, v in row.items()} for row in frame.to_dict("records")]


def build_report(client, experiment_names: Sequence[str] | None = None,
                 out_dir: str | os.PathLike = DEFAULT_OUT_DIR,
                 parent_run_id: str | None = None, progress=None) -> ReportResult:
    """Read the trials from MLflow and write the report into out_dir.

    Args:
        client: an mlflow.tracking.MlflowClient.
        experiment_names: experiments to read; None: the parent run's experiment when
            parent_run_id is given, else every experiment named s3-*.
        out_dir: where to write (created if missing).
        parent_run_id: only the trials of this grid invocation.
        progress: None, or a function called as progress(what, done, total) while it works.
    Returns:
        ReportResult. Raises ReportError when there is nothing to report.
    """
    out_dir = Path(out_dir)
    experiments = _resolve_experiments(client, experiment_names, parent_run_id)
    trials, points = load_trials(client, experiments, parent_run_id, progress)
    scope = ", ".join(e.name for e in experiments)
    if parent_run_id:
        scope += f" (parent run {parent_run_id})"
    if trials.empty:
        raise ReportError(f"no trial runs in {scope}")
    counts = _count_statuses(trials)
    if points.empty:
        raise ReportError(f"no finished trials with a curve in {scope} "
                          f"({', '.join(f'{v} {k.lower()}' for k, v in counts.items())})")

    notes = []
    unfinished = {k: v for k, v in counts.items() if k != FINISHED and v}
    if unfinished:
        notes.append("partial results: " + ", ".join(f"{v} trial(s) {k}" for k, v in
                     unfinished.items()) + "; the table and plots use FINISHED trials only.")
    no_curve = trials[(trials["status"] == FINISHED) & ~trials["has_curve"]]
    if len(no_curve):
        notes.append(f"{len(no_curve)} finished trial(s) logged no curve metrics and are left "
                     f"out: {', '.join(no_curve['run_name'])}.")
    for experiment in experiments:
        if not (trials["experiment"] == experiment.name).any():
            notes.append(f"experiment {experiment.name} has no trial runs.")

    best = per_trial_best(points)
    configs = aggregate_configs(best)
    table = paper_table(configs)
    single_seed = [r for r in table if r["n_seeds"] < 2]
    if single_seed:
        notes.append(f"{len(single_seed)} table row(s) rest on a single seed (no std).")

    written: list[Path] = []
    images: dict[str, bytes] = {}
    sections = {}
    for i, benchmark in enumerate(sorted(configs["benchmark"].unique())):
        if progress is not None:
            progress("plotting", i, configs["benchmark"].nunique())
        name = _safe_name(benchmark)
        curves_png = plot_curves(benchmark, points[points["benchmark"] == benchmark], configs)
        curves_name = f"curves_{name}.png"
        written.append(_atomic_write(out_dir / curves_name, curves_png))
        images[curves_name] = curves_png
        batch_png = plot_batch_size(benchmark, configs)
        batch_name = None
        if batch_png is not None:
            batch_name = f"batch_size_{name}.png"
            written.append(_atomic_write(out_dir / batch_name, batch_png))
            images[batch_name] = batch_png
        rows = [r for r in table if r["benchmark"] == benchmark]
        sections[benchmark] = {
            "rows": rows, "curves": curves_name, "batch": batch_name,
            "batch_note": "only one batch size in these trials",
            "unmatched": _unmatched_paper_numbers(benchmark, rows),
        }

    failed = _records(trials[trials["status"] == FAILED][
        ["run_id", "run_name", "experiment", "benchmark", "method", "chi", "batch_size", "seed",
         "failure_reason"]])
    context = {
        "tracking_uri": getattr(client, "tracking_uri", "?"),
        "experiments": [e.name for e in experiments], "parent_run_id": parent_run_id,
        "counts": counts, "notes": notes, "benchmarks": sections, "failed": failed,
    }
    written.append(_atomic_write(out_dir / "report.md", _markdown(context).encode("utf-8")))
    written.append(_atomic_write(out_dir / "index.html",
                                 _html(context, images).encode("utf-8")))
    return ReportResult(out_dir=out_dir, paths=written, table=table,
                        configs=_records(configs), failed=failed, counts=counts, notes=notes,
                        points=points)


def log_report_to_parent(client, parent_run_id: str, out_dir: str | os.PathLike) -> None:
    """Attach the written report to the grid's parent run, under REPORT_ARTIFACT_DIR."""
    client.log_artifacts(parent_run_id, str(out_dir), artifact_path=REPORT_ARTIFACT_DIR)


# ----------------------------------------------------------------------------- CLI

def _parse_args(argv: Iterable[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m orchestrator.report",
        description="Plots and a paper-style table from the S3 trials in an MLflow store.")
    parser.add_argument("--tracking-uri", default=None,
                        help="default: $MLFLOW_TRACKING_URI, else sqlite:///<cwd>/mlflow.db")
    parser.add_argument("--experiment", dest="experiments", action="extend", nargs="+",
                        metavar="NAME", help="experiment name(s); default: every s3-* experiment")
    parser.add_argument("--parent-run-id", default=None, help="only this grid's trials")
    parser.add_argument("--out", default=DEFAULT_OUT_DIR, help="output directory (./report)")
    parser.add_argument("--log-to-parent", action="store_true",
                        help="also log the report as artifacts of --parent-run-id")
    return parser.parse_args(list(argv) if argv is not None else None)


def main(argv: Iterable[str] | None = None) -> int:
    args = _parse_args(argv)
    if args.log_to_parent and not args.parent_run_id:
        print("error: report: --log-to-parent needs --parent-run-id", file=sys.stderr)
        return 2
    uri = args.tracking_uri or default_tracking_uri()
    # Fail fast on an unreachable server instead of MLflow's minutes of retries.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "15")
    try:
        _check_sqlite_exists(uri)
        from mlflow.tracking import MlflowClient
        try:
            client = MlflowClient(tracking_uri=uri)
        except Exception as error:
            raise ReportError(f"cannot open tracking URI {uri}: {_first_line(error)}") from error
        result = build_report(client, args.experiments, args.out, args.parent_run_id)
        if args.log_to_parent:
            log_report_to_parent(client, args.parent_run_id, args.out)
    except ReportError as error:
        print(f"error: report: {' '.join(str(error).split())}", file=sys.stderr)  # one line, as run_grid.py
        return 2
    print(f"report: {len(result.table)} table row(s), {result.counts.get(FINISHED, 0)} finished / "
          f"{result.counts.get(FAILED, 0)} failed / {result.counts.get(RUNNING, 0)} running "
          f"trials -> {Path(args.out).resolve() / 'index.html'}")
    for note in result.notes:
        print(f"report: note: {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
