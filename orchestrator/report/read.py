"""Reading the store: MLflow runs -> tidy pandas tables.

Curves and summaries are decoded by orchestrator.mlflow_layout (read_curve, read_summary) and
nothing else: no step arithmetic here. Accuracies are turned into percent once, here, so every
table downstream is in percent.

Tables (see load_trials):
- trials: one row per trial run of any status (tags, the configuration key, and for a FINISHED
  run with a curve and a summary, the logged summary in percent);
- points: one row per FINISHED trial x keep-ratio (the curve, in percent; its cost columns
  expert_flops and embed_s as logged).
"""
from __future__ import annotations

import os
import sys
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from orchestrator import mlflow_layout as layout

FINISHED, FAILED, RUNNING = "FINISHED", "FAILED", "RUNNING"
# Params that do not define a configuration: the seed (aggregated over) and per-trial
# bookkeeping. Every other param does, so trials that differ in e.g. lambda_min never get averaged.
CONFIG_IGNORED_PARAMS = frozenset({
    "seed", "data_dir", "output_dir", "run_dir", "storage_path", "trial_key", "trial_id",
    "device", "num_workers", "code_version",
})
# Summary metrics that are accuracies (scaled to percent like the curve); the rest (p) are not.
SUMMARY_ACCURACIES = tuple(k for k in layout.SUMMARY_METRICS if k != "best_keep_ratio")
PROGRESS_EVERY = 100   # runs read between two progress lines

Progress = Callable[[str], None]


class ReportError(Exception):
    """Nothing to report, or the store cannot be read: the CLI prints it on one line, exit 2."""


def print_progress(line: str) -> None:
    """The default progress sink: one line on stderr, flushed (stdout keeps the final summary)."""
    print(line, file=sys.stderr, flush=True)


def first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def check_sqlite_exists(uri: str) -> None:
    """MLflow would silently create an empty database; a report on a typo'd path should not."""
    if not uri.startswith("sqlite:///"):
        return
    path = uri[len("sqlite:///"):].split("?", 1)[0]
    if path and path != ":memory:" and not os.path.exists(path):
        raise ReportError(f"no MLflow store at {path} (tracking URI {uri}); pass --tracking-uri of the store "
                          "run_grid.py wrote (sqlite:////abs/path/mlflow.db)")


def _all_pages(search) -> list:
    """Every item of a paged MLflow search; search(page_token) -> a PagedList."""
    items, token = [], None
    while True:
        page = search(token)
        items += list(page)
        token = page.token
        if not token:
            return items


def resolve_experiments(client, experiment_names: Sequence[str] | None, parent_run_id: str | None) -> list:
    """The experiments to report on, sorted by name.

    Args:
        experiment_names: these experiments; None: the parent run's experiment when
            parent_run_id is given, else every experiment named with layout.EXPERIMENT_PREFIX.
    Raises:
        ReportError: a named experiment is missing, none matches, or the store cannot be read.
    """
    prefix = layout.EXPERIMENT_PREFIX
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
        experiments = [e for e in _all_pages(lambda token: client.search_experiments(
            filter_string=f"name LIKE '{prefix}%'", page_token=token)) if e.name.startswith(prefix)]
    except ReportError:
        raise
    except Exception as error:  # connection refused, bad URI, bad run id...
        raise ReportError(f"cannot read the MLflow store: {first_line(error)}") from error
    if not experiments:
        raise ReportError(f"no experiments named {prefix}* in the store; run run_grid.py into it "
                          "first, or pass --tracking-uri / --experiment of the store that holds the trials")
    return sorted(experiments, key=lambda e: e.name)


def _search_trials(client, experiment_ids: list[str], parent_run_id: str | None) -> list:
    filter_string = f"tags.`{layout.TAG_ROLE}` = '{layout.ROLE_TRIAL}'"
    if parent_run_id:
        filter_string += f" and tags.`{layout.TAG_PARENT}` = '{parent_run_id}'"
    return _all_pages(lambda token: client.search_runs(experiment_ids, filter_string=filter_string,
                                                       max_results=1000, page_token=token))


def _parse_int(value) -> int | None:
    try:
        return int(float(value))
    except (TypeError, ValueError):
        return None


def trial_info(run, experiment_name: str) -> dict:
    """The identity of one trial run: where it belongs in the tables (no metrics)."""
    tags, params = run.data.tags, run.data.params
    benchmark = (tags.get(layout.TAG_BENCHMARK) or params.get("benchmark")
                 or experiment_name.removeprefix(layout.EXPERIMENT_PREFIX))
    if experiment_name != layout.experiment_name(benchmark):
        # a named experiment is its own section: two experiments on one benchmark (say, two
        # synthetic labels) hold different data and must not be averaged together
        benchmark = f"{benchmark} [{experiment_name}]"
    method = tags.get(layout.TAG_METHOD) or params.get("method") or "?"
    config = tuple(sorted((k, v) for k, v in params.items() if k not in CONFIG_IGNORED_PARAMS))
    config += (("preset", tags.get(layout.TAG_PRESET, "")), ("method", method))
    return {
        "experiment": experiment_name,
        "run_id": run.info.run_id,
        "run_name": run.info.run_name or run.info.run_id[:8],
        "status": run.info.status,
        "benchmark": benchmark,
        "method": method,
        "preset": tags.get(layout.TAG_PRESET, ""),
        "seed": _parse_int(tags.get(layout.TAG_SEED, params.get("seed"))),
        "chi": layout.read_chi(params),
        # routed experts per MoE layer, chi * rho (S3Config.num_experts): S3 at chi = 1 still routes
        # among rho experts; a run without a logged rho counts as chi's
        "n_experts": layout.read_chi(params) * (_parse_int(params.get("rho")) or 1),
        "batch_size": _parse_int(params.get("batch_size")),
        "config_key": repr(config),
        "failure_reason": tags.get(layout.TAG_FAILURE, ""),
    }


def _percent_scale(curve: pd.DataFrame) -> float:
    """100 when the run logged accuracies as fractions (every curve accuracy <= 1), else 1."""
    accuracy = curve[[c for c in layout.CURVE_METRICS if c in curve]].to_numpy(dtype=float)
    return 100.0 if np.nanmax(accuracy) <= 1.0 + 1e-9 else 1.0


def read_trial(client, run) -> tuple[pd.DataFrame, dict]:
    """(curve, summary) of one FINISHED run, accuracies in percent.

    curve: one row per keep-ratio (layout.read_curve's rows, p descending); empty when the run
    logged no curve. summary: layout.read_summary's metrics, accuracies scaled like the curve.
    """
    curve = pd.DataFrame(layout.read_curve(client, run.info.run_id))
    summary = layout.read_summary(run)
    if curve.empty:
        return curve, summary
    scale = _percent_scale(curve)
    for key in layout.CURVE_METRICS:
        if key in curve:
            curve[key] = curve[key] * scale
    summary = {k: v * scale if k in SUMMARY_ACCURACIES else v for k, v in summary.items()}
    return curve, summary


def load_trials(client, experiments: list, parent_run_id: str | None = None,
                progress: Progress | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read every trial run of the experiments (of one grid when parent_run_id is given).

    Returns:
        (trials, points). trials: one row per trial run, any status, with has_curve,
        has_summary, the summary columns (layout.SUMMARY_METRICS, NaN where not logged) and
        experts: the run's expert-analysis metrics {key without 'experts/': value} ({} if none);
        diag: its diagnostics' summary metrics {'diag/...': value} ({} if none).
        points: one row per FINISHED trial with a curve x keep-ratio, the trial's columns
        repeated on each row.
    """
    progress = progress or (lambda line: None)
    names = {e.experiment_id: e.name for e in experiments}
    try:
        runs = _search_trials(client, list(names), parent_run_id)
    except Exception as error:
        raise ReportError(f"cannot search runs: {first_line(error)}") from error
    finished = sum(run.info.status == FINISHED for run in runs)
    progress(f"report: reading {len(runs)} trial runs ({finished} finished) from "
             f"{len(names)} experiment(s) ...")
    trial_rows, point_frames = [], []
    for index, run in enumerate(runs, 1):
        info = trial_info(run, names[run.info.experiment_id])
        curve, summary = read_trial(client, run) if info["status"] == FINISHED else (pd.DataFrame(), {})
        has_curve = not curve.empty and "valid_acc" in curve
        if has_curve:
            point_frames.append(curve.assign(**info))
        experts = {k[len(layout.EXPERTS_PREFIX):]: v for k, v in run.data.metrics.items()
                   if k.startswith(layout.EXPERTS_PREFIX)} if info["status"] == FINISHED else {}
        diag = {k: v for k, v in run.data.metrics.items()          # s3core.diagnostics' summary keys
                if k.startswith("diag/")} if info["status"] == FINISHED else {}
        trial_rows.append({**info, "has_curve": has_curve, "has_summary": "best_keep_ratio" in summary,
                           **{key: summary.get(key, np.nan) for key in layout.SUMMARY_METRICS},
                           "experts": experts, "diag": diag})
        if index % PROGRESS_EVERY == 0 and index < len(runs):
            progress(f"report: read {index}/{len(runs)} runs ...")
    trials = pd.DataFrame(trial_rows)
    points = pd.concat(point_frames, ignore_index=True) if point_frames else pd.DataFrame()
    return trials, points
