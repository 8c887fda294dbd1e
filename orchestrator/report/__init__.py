"""The report: S3's accuracy-vs-keep-ratio curves, the paper-style table, batch-size robustness.

Reads the trials the orchestrator logged to MLflow (layout: orchestrator.mlflow_layout) and writes
into --out (default ./report): curves_<benchmark>.png, batch_size_<benchmark>.png, report.md and
index.html (self-contained: PNGs embedded). Every file is written atomically.

    python -m orchestrator.report                                   # ./mlflow.db, all s3-* experiments
    python -m orchestrator.report --tracking-uri sqlite:////abs/mlflow.db --experiment s3-mosei
    python -m orchestrator.report --parent-run-id <id> --log-to-parent   # one grid; attach to it

Protocol (S3_METHOD.md, "Evaluation"): each trial (one seed) logged p* = argmax over p of the
validation accuracy (ties go to the larger p) and its test accuracy at p*; the report reads that
summary and never re-chooses p. Trials that differ only in their seed are one configuration; its
score is the mean +- sample std (ddof=1) over seeds. A table row (method, chi) shows the
configuration with the best mean validation accuracy at p*, so batch size and other swept fields
are also chosen on validation, never on test. Beside it, for comparison with the paper only, the
best test accuracy over p per trial (document.py says how each number is labelled). Accuracies
are shown in percent (fractions are scaled by 100).

Modules: read (MLflow -> tidy tables), aggregate (seeds, configurations, table rows), plots,
document (the report's content, built once), render (Markdown and HTML), cli (the command line:
`orchestrator.report.cli.main`).

Exit codes: 0 report written; 2 nothing to report (empty store, missing experiment, no finished
trials) or the tracking URI cannot be reached, with one error line on stderr (after any progress
lines).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import pandas as pd

from orchestrator.mlflow_layout import REPORT_ARTIFACT_DIR
from orchestrator.report import aggregate, evidence, plots
from orchestrator.report import diagnostics as diag
from orchestrator.report.document import BenchmarkSection, build_document
from s3core.atomic import atomic_file

from orchestrator.report.read import (FAILED, FINISHED, Progress, ReportError, load_trials, print_progress,
                                      resolve_experiments)
from orchestrator.report.render import to_html, to_markdown
from s3core.methods import methods_with_role, primary_method

__all__ = ["build_report", "log_report_to_parent", "ReportError", "ReportResult", "DEFAULT_OUT_DIR"]

DEFAULT_OUT_DIR = "report"


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


def _atomic_write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path, suffix=".tmp", mode=0o644) as handle:
        handle.write(data)
    return path


def _safe_name(benchmark: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in benchmark)


def _notes(trials: pd.DataFrame, counts: dict[str, int], experiments: list) -> list[str]:
    """Warnings for the top of the report: partial results, trials left out, empty experiments."""
    notes = []
    unfinished = {k: v for k, v in counts.items() if k != FINISHED and v}
    if unfinished:
        notes.append("partial results: " + ", ".join(f"{v} trial(s) {k}" for k, v in unfinished.items())
                     + "; the table and plots use FINISHED trials only.")
    finished = trials[trials["status"] == FINISHED]
    no_curve = finished[~finished["has_curve"]]
    if len(no_curve):
        notes.append(f"{len(no_curve)} finished trial(s) logged no curve metrics and are left "
                     f"out: {', '.join(no_curve['run_name'])}.")
    no_summary = finished[finished["has_curve"] & ~finished["has_summary"]]
    if len(no_summary):
        notes.append(f"{len(no_summary)} finished trial(s) logged a curve but no summary (best_keep_ratio) "
                     f"and are left out: {', '.join(no_summary['run_name'])}.")
    for experiment in experiments:
        if not (trials["experiment"] == experiment.name).any():
            notes.append(f"experiment {experiment.name} has no trial runs.")
    return notes


# the expert metrics the report tabulates (keys of ExpertAnalysis.to_metrics, as regexes)
EXPERT_METRICS = (r"^dsc/", r"^dsc_at_p/", r"^event_share/", r"^event_share_at_p/", r"^r2/[^/]+/[^/]+/L\d+/max$")


def _expert_panels(arrays: dict, chi: int) -> list:
    """The ablations' usage at p = 1, then S3's at p = 1 and, when it prunes, at its p*."""
    panels = []
    for method in methods_with_role("ablation"):
        if (method, chi) in arrays:
            seed, a = arrays[(method, chi)]
            panels.append((f"{aggregate.method_label(method)} χ={chi}, p=1 (seed {seed})", a, "usage"))
    if (primary_method(), chi) in arrays:
        seed, a = arrays[(primary_method(), chi)]
        label = aggregate.method_label(primary_method())
        panels.append((f"{label} χ={chi}, p=1 (seed {seed})", a, "usage"))
        if a.keep_ratio < 1.0:
            panels.append((f"{label} χ={chi}, kept at p*={a.keep_ratio:g} (seed {seed})", a, "usage_at_p"))
    return panels


def _evidence(client, benchmark: str, name: str, trials, scores, points, configs, images: dict) -> dict:
    """The section's evidence (paired statistics, frontier, experts); PNGs go into `images`."""
    bench_points = points[points["benchmark"] == benchmark]
    out = {"paired": evidence.paired_rows(benchmark, scores, configs),
           "curve_rows": evidence.curve_rows(benchmark, bench_points, configs)}
    frontier_png = plots.plot_frontier(benchmark, evidence.frontier_points(benchmark, bench_points, configs))
    if frontier_png is not None:
        images[f"frontier_{name}.png"] = frontier_png
        out["frontier"] = f"frontier_{name}.png"
    arrays = evidence.load_expert_arrays(client, benchmark, trials, configs)
    out["experts"] = []
    for chi in sorted({c for _, c in arrays}):
        png = plots.plot_expert_usage(f"{benchmark} χ={chi}", _expert_panels(arrays, chi))
        if png is not None:
            images[f"experts_{name}_chi{chi}.png"] = png
            out["experts"].append(f"experts_{name}_chi{chi}.png")
    out["expert_rows"] = evidence.expert_metric_rows(benchmark, trials, configs, EXPERT_METRICS)
    out.update(diag.section(client, trials, benchmark, name, images, configs))
    bench_methods = set(configs.loc[configs["benchmark"] == benchmark, "method"])
    references = methods_with_role("reference")
    if benchmark.startswith("synthetic") and references and not bench_methods & set(references):
        out["reference_note"] = ("no raw-feature reference row: every synthetic report should show it; add "
                                 f"{' or '.join(references)} to the grid's baselines")
    return out


def build_report(client, experiment_names: Sequence[str] | None = None,
                 out_dir: str | os.PathLike = DEFAULT_OUT_DIR, parent_run_id: str | None = None,
                 progress: Progress | None = print_progress) -> ReportResult:
    """Read the trials from MLflow and write the report into out_dir.

    Args:
        client: an mlflow.tracking.MlflowClient.
        experiment_names: experiments to read; None: the parent run's experiment when
            parent_run_id is given, else every experiment named s3-*.
        out_dir: where to write (created if missing).
        parent_run_id: only the trials of this grid invocation.
        progress: called with one line per stage ("report: reading 45 trial runs ...");
            default: printed to stderr; None: silent.
    Returns:
        ReportResult. Raises ReportError when there is nothing to report (nothing written).
    """
    progress = progress or (lambda line: None)
    out_dir = Path(out_dir)
    experiments = resolve_experiments(client, experiment_names, parent_run_id)
    trials, points = load_trials(client, experiments, parent_run_id, progress)
    scope = ", ".join(e.name for e in experiments) + (f" (parent run {parent_run_id})" if parent_run_id else "")
    if trials.empty:
        raise ReportError(f"no trial runs in {scope}")
    counts = aggregate.count_statuses(trials)
    if points.empty or not (trials["has_curve"] & trials["has_summary"]).any():
        raise ReportError(f"no finished trials with a curve and a summary in {scope} "
                          f"({', '.join(f'{v} {k.lower()}' for k, v in counts.items())})")

    notes = _notes(trials, counts, experiments)
    flag = diag.note(trials[trials["status"] == FINISHED])
    if flag:
        notes.append(flag)
    scores = aggregate.per_trial_scores(trials, points)
    progress(f"report: aggregating {len(scores)} trials over seeds and configurations ...")
    configs = aggregate.aggregate_configs(scores, points)
    table = aggregate.paper_table(configs)
    single_seed = [r for r in table if r["n_seeds"] < 2]
    if single_seed:
        notes.append(f"{len(single_seed)} table row(s) rest on a single seed (no std).")

    written: list[Path] = []
    images: dict[str, bytes] = {}
    sections = []
    for benchmark in sorted(configs["benchmark"].unique()):
        progress(f"report: plotting {benchmark} ...")
        name = _safe_name(benchmark)
        images[f"curves_{name}.png"] = plots.plot_curves(benchmark, points[points["benchmark"] == benchmark], configs)
        batch_png = plots.plot_batch_size(benchmark, configs)
        if batch_png is not None:
            images[f"batch_size_{name}.png"] = batch_png
        rows = [r for r in table if r["benchmark"] == benchmark]
        extra = _evidence(client, benchmark, name, trials, scores, points, configs, images)
        sections.append(BenchmarkSection(
            benchmark, rows, curves=f"curves_{name}.png",
            batch=f"batch_size_{name}.png" if batch_png is not None else None,
            unmatched=aggregate.unmatched_paper_numbers(benchmark, rows), **extra))

    failed = aggregate.records(trials[trials["status"] == FAILED][
        ["run_id", "run_name", "experiment", "benchmark", "method", "chi", "batch_size", "seed", "failure_reason"]])
    document = build_document(tracking_uri=getattr(client, "tracking_uri", "?"),
                              experiments=[e.name for e in experiments], parent_run_id=parent_run_id,
                              counts=counts, notes=notes, sections=sections, failed=failed)
    progress(f"report: writing {len(images)} plot(s), report.md and index.html to {out_dir} ...")
    for image_name, png in images.items():
        written.append(_atomic_write(out_dir / image_name, png))
    written.append(_atomic_write(out_dir / "report.md", to_markdown(document).encode("utf-8")))
    written.append(_atomic_write(out_dir / "index.html", to_html(document, images).encode("utf-8")))
    return ReportResult(out_dir=out_dir, paths=written, table=table, configs=aggregate.records(configs),
                        failed=failed, counts=counts, notes=notes, points=points)


def log_report_to_parent(client, parent_run_id: str, out_dir: str | os.PathLike) -> None:
    """Attach the written report to the grid's parent run, under REPORT_ARTIFACT_DIR."""
    client.log_artifacts(parent_run_id, str(out_dir), artifact_path=REPORT_ARTIFACT_DIR)
