"""The MLflow layout as a two-way codec: what the orchestrator writes, and how it is read back.

Whatever goes in comes back out unchanged, or is refused on the way in (DESIGN.md: "a codec is
two-way and exact"). The writer (tracking.MlflowTrialLogger) and the readers (the report,
resweep, the tests) use only the functions here.

Layout
------
- Experiment: ``s3-<benchmark>`` unless ``--experiment`` names one.
- Parent run (one per grid and benchmark; reused by ``--resume``):
  tags ``s3.role=parent``, ``s3.grid_id``, ``s3.preset``, ``s3.benchmark``, ``s3.code_version``,
  ``mlflow.source.git.commit``; params: the plan's settings (data, resources, tracking); the
  benchmark as a dataset input with its content digest; metrics ``<method>_chi<chi>/...``: the
  mean over finished trials of test_acc_at_best and best_keep_ratio. Report artifacts under ``report/``.
- Child run (one per trial), ``mlflow.parentRunId`` = the parent's run id:
  tags ``s3.role=trial``, ``s3.trial_key`` (stable hash of the trial config; the resume key),
  ``s3.method`` (a name of s3core.methods), ``s3.preset``, ``s3.benchmark``, ``s3.seed``,
  ``s3.code_version``, ``s3.chi``, ``s3.batch_size``, ``s3.device`` (the device it really ran on),
  ``mlflow.source.git.commit``, and on failure ``s3.failure_reason``.
  params: every field of the config the method trains with, plus method/benchmark/preset.
  metrics:
    - per-epoch metrics, ``<stage>/<name>`` with step = the trial's global epoch index; every
      numeric metric s3core reports for an epoch is logged (no list to keep in step);
    - the curve: CURVE_METRICS and ``keep_ratio`` itself at step = curve_step(p) = p in per
      mille (p = 0.3 -> step 300), so the chart of ``valid_acc`` against ``keep_ratio`` (or
      against step) is the accuracy-vs-keep-ratio curve. s3core refuses a p finer than 1/1000
      (config.KEEP_RATIO_RESOLUTION), so every p survives exactly. At the same steps, the
      point's cost (CURVE_COST_METRICS, when the trial reports them): ``expert_flops``, the
      expert FLOPs per test sample its forwards computed (s3core.flops), and ``embed_s``, the
      seconds spent embedding the three splits; and CURVE_DIAG_METRICS (``embed_cos_dist``, the
      mean cosine distance of the test embeddings from p = 1: s3core.diagnostics);
    - the summary (SUMMARY_METRICS, step 0): p chosen on validation and the accuracies there,
      computed once by s3core (summary.summarize); the report reads it, never recomputes it;
      beside it the final diagnostics ``diag/...`` (s3core.diagnostics; the report's "Can
      pruning act?" table), and ``<stage>/diag/...`` per epoch;
    - the expert analysis (s3core.expert_trial, methods with more than one expert), step 0:
      ``experts/<key>`` for every key of ExpertAnalysis.to_metrics (DSC per layer, ...).
  artifacts: ``curve/curve.csv`` (columns CURVE_COLUMNS), ``curve/curve.png``, and for a method
  with an encoder ``model/model.pt`` (weights, config, method and data shapes: what
  ``python -m orchestrator.resweep`` runs Stage 3 on again), and with the expert analysis
  ``experts/expert_analysis.npz`` (ExpertAnalysis.save: every array, no pickles).
"""
from __future__ import annotations

import csv
import io
import os
from pathlib import Path

from s3core.config import KEEP_RATIO_RESOLUTION, ConfigError, keep_ratio_step
from s3core.methods import METHOD_NAMES as METHODS
from s3core.summary import SUMMARY_METRICS

TAG_ROLE = "s3.role"
ROLE_PARENT = "parent"
ROLE_TRIAL = "trial"
TAG_GRID_ID = "s3.grid_id"
TAG_TRIAL_KEY = "s3.trial_key"
TAG_METHOD = "s3.method"
TAG_PRESET = "s3.preset"
TAG_BENCHMARK = "s3.benchmark"
TAG_SEED = "s3.seed"
TAG_CODE_VERSION = "s3.code_version"
TAG_FAILURE = "s3.failure_reason"
TAG_DEVICE = "s3.device"             # the device a trial really ran on
TAG_PARENT = "mlflow.parentRunId"
TAG_CHI = "s3.chi"                     # the chi / batch size a trial trains with (the UI groups by tags)
TAG_BATCH_SIZE = "s3.batch_size"
TAG_EXPERIMENT_KIND = "mlflow.experimentKind"
# per training stage, from the stage cache (s3core.stagecache): s3.stage_cache.<stage> = trained |
# reused, and for a reused one s3.stage_cache.<stage>.from = the MLflow run id that trained it (or
# "trial <key>" when that run is not in this grid) and .key = the entry's key
TAG_STAGE_CACHE = "s3.stage_cache"
EXPERIMENT_KIND_TRAINING = "custom_model_development"

EXPERIMENT_PREFIX = "s3-"
KEEP_RATIO_METRIC = "keep_ratio"
CURVE_METRICS = ("valid_acc", "test_acc", "valid_f1", "test_f1")
CURVE_COLUMNS = (KEEP_RATIO_METRIC,) + CURVE_METRICS
CURVE_COST_METRICS = ("expert_flops", "embed_s")    # logged at the curve steps when the trial reports them
CURVE_DIAG_METRICS = ("embed_cos_dist",)           # s3core.diagnostics: how far pruning moved z from p = 1
CURVE_EXTRA_COLUMNS = ("l2", "kept_fraction") + CURVE_COST_METRICS + CURVE_DIAG_METRICS  # in curve.csv when reported
CURVE_LOGGED = CURVE_COLUMNS + CURVE_COST_METRICS + CURVE_DIAG_METRICS   # what a curve point logs at its step
CURVE_ARTIFACT_DIR = "curve"
MODEL_ARTIFACT_DIR = "model"          # model/model.pt: s3core.pipeline.trained_model_state (torch.save)
MODEL_FILE = "model.pt"
REPORT_ARTIFACT_DIR = "report"
EXPERTS_PREFIX = "experts/"           # metric keys of the expert analysis; also its artifact folder
EXPERTS_ARTIFACT_DIR = "experts"
EXPERTS_FILE = "expert_analysis.npz"

__all__ = ["METHODS", "SUMMARY_METRICS", "curve_step", "read_chi", "curve_metrics", "read_curve", "read_summary",
           "epoch_metric_key", "experiment_name", "default_tracking_uri", "curve_csv", "parse_curve_csv",
           "download_artifact"]


def stage_cache_tags(events: list, run_of_key: dict) -> dict:
    """Tags of a trial's stage-cache events (FinalReport.stage_cache). run_of_key: trial key -> run id."""
    tags = {}
    for e in events:
        base = f"{TAG_STAGE_CACHE}.{e['stage']}"
        tags[base] = e["status"]
        tags[f"{base}.key"] = e["key"]
        if e["status"] == "reused":
            producer = e.get("from") or {}
            key = producer.get("trial_key", "")
            tags[f"{base}.from"] = (run_of_key.get(key)
                                    or f"trial {key} ({producer.get('trial', '?')}, grid {producer.get('parent_run', '?')})")
    return tags


def default_tracking_uri() -> str:
    """MLFLOW_TRACKING_URI, else an absolute SQLite store in the working directory (MLflow 3 refuses
    a relative ./mlruns file store)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd().resolve() / 'mlflow.db'}"


def sqlite_path(uri: str) -> Path | None:
    """The file of a `sqlite:///...` store URI (sqlite:////abs/mlflow.db -> /abs/mlflow.db; a relative
    one stays relative), None for any other URI."""
    return Path(uri[len("sqlite:///"):]) if uri.startswith("sqlite:///") else None


def experiment_name(benchmark: str, explicit: str | None = None) -> str:
    return explicit or f"{EXPERIMENT_PREFIX}{benchmark}"


def curve_step(keep_ratio: float) -> int:
    """The MLflow step of the curve point for keep-ratio p: p in units of 1/KEEP_RATIO_RESOLUTION.

    Raises ConfigError for a p that the step cannot hold exactly (s3core's config validation
    refuses such a p before any trial starts: s3core.config.keep_ratio_step is the rule)."""
    step = keep_ratio_step(keep_ratio)
    if step is None:
        raise ConfigError(f"keep-ratio {keep_ratio!r} is not a multiple of 1/{KEEP_RATIO_RESOLUTION} in (0, 1]; "
                          f"round it to {1 / KEEP_RATIO_RESOLUTION:g}")
    return step


def read_chi(params: dict) -> int:
    """The granularity chi a trial trained with, from its params (every field of its method's config,
    as str()): 1, no experts, for a run that logged no chi."""
    try:
        return int(float(params["chi"])) or 1
    except (KeyError, TypeError, ValueError):
        return 1


def epoch_metric_key(stage: str, name: str) -> str:
    return f"{stage}/{name}"


def curve_metrics(curve: list[dict]) -> list[tuple[str, float, int]]:
    """(key, value, step) for every curve point: CURVE_METRICS, the keep-ratio itself and the
    point's cost (CURVE_COST_METRICS) where the row has it."""
    steps = [curve_step(row[KEEP_RATIO_METRIC]) for row in curve]
    if len(set(steps)) != len(steps):
        raise ConfigError(f"the curve repeats a keep-ratio: {[row[KEEP_RATIO_METRIC] for row in curve]}")
    return [(key, float(row[key]), step) for row, step in zip(curve, steps)
            for key in CURVE_LOGGED if key in row]


def _latest_by_step(history) -> dict[int, float]:
    """step -> value; a step logged twice (a resumed trial) keeps its latest value."""
    latest: dict[int, tuple[int, float]] = {}
    for metric in history:
        if metric.step not in latest or metric.timestamp >= latest[metric.step][0]:
            latest[metric.step] = (metric.timestamp, metric.value)
    return {step: value for step, (_, value) in latest.items()}


def read_curve(client, run_id: str) -> list[dict]:
    """The curve a run logged, one dict per keep-ratio (CURVE_COLUMNS present, and the
    CURVE_COST_METRICS the run logged), p descending.

    The keep-ratio is the logged ``keep_ratio`` metric where there is one (exact), else
    step / KEEP_RATIO_RESOLUTION (runs logged before the metric existed)."""
    columns = {key: _latest_by_step(client.get_metric_history(run_id, key)) for key in CURVE_LOGGED}
    steps = sorted(set().union(*(columns[k] for k in CURVE_METRICS)), reverse=True)
    rows = []
    for step in steps:
        row = {KEEP_RATIO_METRIC: columns[KEEP_RATIO_METRIC].get(step, step / KEEP_RATIO_RESOLUTION)}
        row.update({key: columns[key][step] for key in CURVE_LOGGED
                    if key != KEEP_RATIO_METRIC and step in columns[key]})
        rows.append(row)
    return rows


def read_summary(run) -> dict:
    """The summary a finished trial logged (SUMMARY_METRICS found on the run)."""
    return {key: run.data.metrics[key] for key in SUMMARY_METRICS if key in run.data.metrics}


def curve_csv(curve: list[dict]) -> str:
    buf = io.StringIO()
    # an extra column only when every row has it (a re-sweep without p = 1 has no embed_cos_dist)
    cols = list(CURVE_COLUMNS) + [c for c in CURVE_EXTRA_COLUMNS if curve and all(c in r for r in curve)]
    writer = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in curve:
        writer.writerow({k: repr(float(row[k])) for k in cols if k in row})
    return buf.getvalue()


def parse_curve_csv(text: str) -> list[dict]:
    """curve_csv's inverse: floats written with repr() read back bit-identical."""
    return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(io.StringIO(text))]


def download_artifact(client, run_id: str, path: str, dst: str) -> str:
    """client.download_artifacts without MLflow's progress bar: a tqdm bar per file would land in
    the console's summary (and carriage returns in a piped log). Returns the local path."""
    key = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
    saved = os.environ.get(key)
    os.environ[key] = "false"
    try:
        return client.download_artifacts(run_id, path, dst)
    finally:
        if saved is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = saved
