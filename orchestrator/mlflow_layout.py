"""The names the orchestrator writes to MLflow and the report reads back: one place, both sides.

Layout
------
- Experiment: ``s3-<benchmark>`` unless ``--experiment`` names one.
- Parent run (one per ``run_grid.py`` invocation; reused by ``--resume``):
  tags ``s3.role=parent``, ``s3.grid_id``, ``s3.preset``, ``s3.benchmark``, ``s3.code_version``.
  Report artifacts go under ``report/``.
- Child run (one per trial), ``mlflow.parentRunId`` = the parent's run id:
  tags ``s3.role=trial``, ``s3.trial_key`` (stable hash of the trial config; the resume key),
  ``s3.method`` (one of METHODS), ``s3.preset``, ``s3.benchmark``, ``s3.seed``, ``s3.code_version``,
  and on failure ``s3.failure_reason``.
  params: every field of the trial config (chi, rho, batch_size, lambda_*, tau, lr, epochs, seed...).
  metrics:
    - per-epoch losses, ``<stage>/<name>`` with step = global epoch index (STAGE_PREFIXES);
    - the curve: CURVE_METRICS with step = round(100 * p), so the MLflow chart of ``valid_acc``
      against step is the accuracy-vs-keep-ratio curve;
    - summary scalars SUMMARY_METRICS (no step).
  artifacts: ``curve/curve.csv`` (columns CURVE_COLUMNS), ``curve/curve.png``.
"""
from __future__ import annotations

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
TAG_PARENT = "mlflow.parentRunId"

# s3: the full method; s3_no_select: Stage 1 then 3 (the paper's ablation);
# clip: dense encoders, cross-modal InfoNCE only; supervised: dense, trained on labels (upper bound).
METHODS = ("s3", "s3_no_select", "clip", "supervised")

STAGE_PREFIXES = ("special", "select", "supervised")
CURVE_METRICS = ("valid_acc", "test_acc", "valid_f1", "test_f1")
CURVE_COLUMNS = ("keep_ratio",) + CURVE_METRICS
SUMMARY_METRICS = (
    "best_keep_ratio",      # p chosen on the validation split
    "best_valid_acc",
    "test_acc_at_best",     # test accuracy at the validation-chosen p
    "test_f1_at_best",
    "test_acc_no_prune",    # p = 1.0
    "valid_acc_no_prune",
)
CURVE_ARTIFACT_DIR = "curve"
REPORT_ARTIFACT_DIR = "report"


def curve_step(keep_ratio: float) -> int:
    """The MLflow step under which the curve point for keep-ratio p is logged."""
    return int(round(100 * keep_ratio))


def experiment_name(benchmark: str, explicit: str | None = None) -> str:
    return explicit or f"s3-{benchmark}"
