"""MLflow from the driver only: one process writes the store (SQLite allows one writer).

`MlflowTrialLogger` is a Ray Tune callback: trial results arrive in the driver and are logged
here, following the layout in `mlflow_layout`. On resume, the metric steps a run already holds are
read back first and never logged twice, and a trial's run is found again by its trial key.
"""
from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient
from ray.tune import Callback

from s3core.pipeline import method_config

from orchestrator import mlflow_layout as L
from orchestrator.trial import TrialSpec

TERMINAL = ("FINISHED", "FAILED", "KILLED")


def code_version() -> str:
    """git commit of the checkout (with -dirty), else the package version."""
    root = Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"], capture_output=True,
                             text=True, timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
        if sha:
            return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        pass
    from importlib.metadata import PackageNotFoundError, version
    try:
        return "v" + version("s3-orchestrator")
    except PackageNotFoundError:
        return "unknown"


def get_or_create_experiment(client: MlflowClient, name: str) -> str:
    exp = client.get_experiment_by_name(name)
    if exp is None:
        return client.create_experiment(name)
    if exp.lifecycle_stage == "deleted":
        client.restore_experiment(exp.experiment_id)
    return exp.experiment_id


def find_parent(client: MlflowClient, experiment_id: str, grid_id: str):
    runs = client.search_runs([experiment_id], filter_string=f"tags.`{L.TAG_ROLE}` = '{L.ROLE_PARENT}' and "
                                                             f"tags.`{L.TAG_GRID_ID}` = '{grid_id}'",
                              order_by=["attributes.start_time DESC"], max_results=1)
    return runs[0] if runs else None


def trial_runs(client: MlflowClient, experiment_id: str, parent_run_id: str) -> dict[str, object]:
    """trial_key -> the child run (the newest, should there ever be two)."""
    runs = client.search_runs([experiment_id], filter_string=f"tags.`{L.TAG_PARENT}` = '{parent_run_id}'",
                              max_results=50000)
    out = {}
    for run in sorted(runs, key=lambda r: r.info.start_time):
        key = run.data.tags.get(L.TAG_TRIAL_KEY)
        if key:
            out[key] = run
    return out


def curve_csv(curve: list[dict]) -> str:
    buf = io.StringIO()
    cols = list(L.CURVE_COLUMNS) + [c for c in ("l2", "kept_fraction", "embed_s") if curve and c in curve[0]]
    writer = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(curve)
    return buf.getvalue()


def curve_png(curve: list[dict], title: str, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ps = [r["keep_ratio"] for r in curve]
    fig, ax = plt.subplots(figsize=(6, 4), dpi=110)
    ax.plot(ps, [100 * r["valid_acc"] for r in curve], "o-", label="valid")
    ax.plot(ps, [100 * r["test_acc"] for r in curve], "s--", label="test")
    ax.set_xlabel("keep-ratio p (fraction of routing pairs kept)")
    ax.set_ylabel("linear-probe accuracy (%)")
    ax.invert_xaxis()  # sparser to the right, as in the paper
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


class MlflowTrialLogger(Callback):
    """Logs every Tune trial as a child run of `parent_run_id`.

    Args:
        client: MlflowClient on the grid's tracking URI.
        experiment_id, parent_run_id: where child runs go.
        existing: trial_key -> run from a previous invocation (resume): reused, never duplicated.
        tags: extra tags for every child run (preset, code version).
        total: number of trials this invocation runs (for the progress lines).
    """

    def __init__(self, client: MlflowClient, experiment_id: str, parent_run_id: str, existing: dict,
                 tags: dict, total: int, printer=print):
        self.client = client
        self.experiment_id = experiment_id
        self.parent_run_id = parent_run_id
        self.existing = dict(existing)
        self.tags = tags
        self.total = total
        self.done = 0
        self.failed = 0
        self.print = printer
        self.run_of: dict[str, str] = {}              # Tune trial id -> MLflow run id
        self.logged: dict[str, set] = {}              # run id -> {(metric key, step)}
        self.started: dict[str, float] = {}

    # --- helpers -------------------------------------------------------------------------------
    def _spec(self, trial) -> TrialSpec:
        return TrialSpec.from_config(trial.config)

    def _run_id(self, trial) -> str:
        if trial.trial_id not in self.run_of:
            self._open_run(trial)
        return self.run_of[trial.trial_id]

    def _open_run(self, trial) -> None:
        spec = self._spec(trial)
        key = spec.key()
        prev = self.existing.get(key)
        if prev is not None:
            run_id = prev.info.run_id
            if prev.info.status != "RUNNING":
                self.client.update_run(run_id, status="RUNNING")
            logged = set()
            for name in prev.data.metrics:
                for m in self.client.get_metric_history(run_id, name):
                    logged.add((m.key, m.step))
            self.logged[run_id] = logged
        else:
            cfg = method_config(spec.s3_config(), spec.method)  # what the method really trains with
            params = {**{k: v for k, v in cfg.to_dict().items()}, "method": spec.method,
                      "benchmark": spec.benchmark, "preset": spec.preset}
            tags = {**self.tags, L.TAG_PARENT: self.parent_run_id, L.TAG_ROLE: L.ROLE_TRIAL,
                    L.TAG_TRIAL_KEY: key, L.TAG_METHOD: spec.method, L.TAG_BENCHMARK: spec.benchmark,
                    L.TAG_SEED: str(spec.seed), L.TAG_PRESET: spec.preset, "mlflow.runName": spec.short()}
            run = self.client.create_run(self.experiment_id, tags=tags, run_name=spec.short())
            run_id = run.info.run_id
            self.client.log_batch(run_id, params=[Param(k, _param_str(v)) for k, v in sorted(params.items())])
            self.logged[run_id] = set()
            self.existing[key] = self.client.get_run(run_id)
        self.run_of[trial.trial_id] = run_id

    def _log_metrics(self, run_id: str, values: dict, step: int) -> None:
        now = int(time.time() * 1000)
        fresh = [Metric(k, float(v), now, step) for k, v in values.items()
                 if (k, step) not in self.logged[run_id] and _is_number(v)]
        if fresh:
            self.client.log_batch(run_id, metrics=fresh)
            self.logged[run_id].update((m.key, step) for m in fresh)

    # --- Tune callback hooks -------------------------------------------------------------------
    def on_trial_start(self, iteration, trials, trial, **info):
        self._run_id(trial)
        self.started[trial.trial_id] = time.time()

    def on_trial_result(self, iteration, trials, trial, result, **info):
        run_id = self._run_id(trial)
        kind = result.get("kind")
        if kind == "epoch":
            stage = result["stage"]
            values = {f"{stage}/{k}": v for k, v in result.items()
                      if k not in ("kind", "stage", "stage_epoch", "global_epoch", "objective") and k in
                      _EPOCH_KEYS}
            self._log_metrics(run_id, values, int(result["global_epoch"]))
        elif kind == "done":
            self._log_final(trial, run_id, result)

    def _log_final(self, trial, run_id: str, result: dict) -> None:
        spec = self._spec(trial)
        curve = json.loads(result["curve_json"])
        for row in curve:
            self._log_metrics(run_id, {k: row[k] for k in L.CURVE_METRICS}, L.curve_step(row["keep_ratio"]))
        self._log_metrics(run_id, {k: result[k] for k in L.SUMMARY_METRICS if k in result}, 0)
        with tempfile.TemporaryDirectory() as d:
            csv_path = os.path.join(d, "curve.csv")
            with open(csv_path, "w") as f:
                f.write(curve_csv(curve))
            curve_png(curve, spec.short(), os.path.join(d, "curve.png"))
            self.client.log_artifacts(run_id, d, artifact_path=L.CURVE_ARTIFACT_DIR)
        # FINISHED only once everything above is in the store: a killed driver leaves RUNNING,
        # which --resume treats as unfinished
        self.client.set_terminated(run_id, status="FINISHED")
        self.done += 1
        secs = time.time() - self.started.get(trial.trial_id, time.time())
        self.print(f"[{self.done + self.failed}/{self.total}] done   {spec.short()}: p*={result['best_keep_ratio']:.1f} "
                   f"valid {100 * result['best_valid_acc']:.1f}% test {100 * result['test_acc_at_best']:.1f}% "
                   f"(no pruning {100 * result.get('test_acc_no_prune', float('nan')):.1f}%) in {secs:.0f}s",
                   flush=True)

    def on_trial_error(self, iteration, trials, trial, **info):
        run_id = self._run_id(trial)
        reason = failure_reason(trial)
        self.client.set_tag(run_id, L.TAG_FAILURE, reason[:4000])
        self.client.set_terminated(run_id, status="FAILED")
        self.failed += 1
        self.print(f"[{self.done + self.failed}/{self.total}] FAILED {self._spec(trial).short()}: {reason} "
                   f"(details: {error_details(trial)})", flush=True)

    def close_unfinished(self, status: str = "KILLED") -> None:
        """On an interrupted grid: no child run of this invocation stays RUNNING."""
        for run_id in set(self.run_of.values()):
            if self.client.get_run(run_id).info.status == "RUNNING":
                self.client.set_terminated(run_id, status=status)


_EPOCH_KEYS = {"loss", "rep", "dsc", "aux", "suff", "min", "load_balance", "local_entropy", "global_entropy",
               "valid_acc", "time_s"}


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _param_str(v) -> str:
    s = json.dumps(v) if isinstance(v, (list, tuple, dict)) else str(v)
    return s[:6000]


def error_details(trial) -> str:
    """Where a failed trial's traceback is: its error.txt in the checkpoint storage when that is a
    local folder (Tune copies it there from the driver's staging folder under /tmp/ray), else the
    staging copy."""
    staged = getattr(trial, "error_file", None)
    if not staged:
        return "no error file from Tune"
    try:
        if trial.storage.storage_filesystem.type_name == "local":
            return str(Path(trial.path) / Path(staged).name)
    except (AttributeError, ValueError, TypeError):
        pass
    return staged


def failure_reason(trial) -> str:
    """The last line of the trial's error that names an exception, e.g. 'DivergenceError: ...'."""
    text = ""
    path = getattr(trial, "error_file", None)
    try:
        if path and os.path.exists(path):
            text = Path(path).read_text(errors="replace")
    except OSError:
        pass
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for ln in reversed(lines):
        if "Error:" in ln or "Exception:" in ln:
            # trial.ApplicationError only carries the worker's own error ("DivergenceError: ..."): show that
            return ln.split("ray.exceptions.")[-1].split("ApplicationError: ", 1)[-1][:500]
    return lines[-1][:500] if lines else "trial failed (no error text from Ray)"
