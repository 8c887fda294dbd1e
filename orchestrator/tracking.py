"""MLflow from the driver only: one process writes the store (SQLite allows one writer).

`MlflowTrialLogger` is a Ray Tune callback: trial results arrive in the driver and are logged
here, following the layout in `mlflow_layout`. On resume, the metric steps a run already holds are
read back first and never logged twice, and a trial's run is found again by its trial key.
"""
from __future__ import annotations

import json
import os
import re
from importlib.metadata import PackageNotFoundError, version

import torch
import subprocess
import tempfile
import time
from pathlib import Path

from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param, RunTag
from mlflow.tracking import MlflowClient
from ray.tune import Callback

from s3core.methods import get_method

from orchestrator import mlflow_layout as L
from orchestrator.contract import EXPERTS_KEY, TRAINED_MODEL_KEY, DoneReport, EpochReport, Report, TrialSpec, resume_state

TERMINAL = ("FINISHED", "FAILED", "KILLED")


# A job on a cluster has no .git (the cluster files exclude it): the submitting checkout passes
# its commit in these variables (clusters/*.yaml and docs/CLUSTER.md show how).
ENV_GIT_COMMIT = "S3_GIT_COMMIT"
ENV_GIT_DIRTY = "S3_GIT_DIRTY"


def git_commit() -> tuple[str, bool] | None:
    """(full commit sha, dirty) of the code that runs: from S3_GIT_COMMIT / S3_GIT_DIRTY when the
    submitter set them, else from this checkout's git; None when neither is known."""
    if os.environ.get(ENV_GIT_COMMIT):
        return os.environ[ENV_GIT_COMMIT], os.environ.get(ENV_GIT_DIRTY, "0") not in ("", "0", "false")
    root = Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return (sha, bool(dirty)) if sha else None


def code_version() -> str:
    """The commit (12 characters, with -dirty), else the package version."""
    commit = git_commit()
    if commit:
        return commit[0][:12] + ("-dirty" if commit[1] else "")
    try:
        return "v" + version("s3-orchestrator")
    except PackageNotFoundError:
        return "unknown"


def provenance_tags() -> dict:
    """MLflow's own source tags, so the UI's "Source" column shows the commit."""
    commit = git_commit()
    return {"mlflow.source.git.commit": commit[0], L.TAG_CODE_VERSION: code_version()} if commit else \
        {L.TAG_CODE_VERSION: code_version()}


def sqlite_artifact_location(tracking_uri: str, name: str) -> str | None:
    """Where a new experiment's artifacts go on a SQLite store: beside the store, in
    <store folder>/mlruns/<name, with characters outside [A-Za-z0-9._-] as '_'>. MLflow's own default
    is ./mlruns of whatever folder the process runs in, so a store opened from another folder would
    leave its curves and models behind there. None (the server decides) for any other URI."""
    store = L.sqlite_path(tracking_uri)
    if store is None:
        return None
    folder = store.parent
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", name).strip(".") or "experiment"
    return (folder / "mlruns" / safe).as_uri()


def get_or_create_experiment(client: MlflowClient, name: str, tracking_uri: str = "") -> str:
    """The experiment `name` (created, or restored if deleted), tagged as model training; a new one on a
    SQLite store keeps its artifacts beside the store (`sqlite_artifact_location`)."""
    exp = client.get_experiment_by_name(name)
    if exp is None:
        experiment_id = client.create_experiment(name, artifact_location=sqlite_artifact_location(tracking_uri, name))
    else:
        experiment_id = exp.experiment_id
        if exp.lifecycle_stage == "deleted":
            client.restore_experiment(experiment_id)
    # model training, not GenAI: the MLflow 3 UI then opens on runs and their charts, not traces
    client.set_experiment_tag(experiment_id, L.TAG_EXPERIMENT_KIND, L.EXPERIMENT_KIND_TRAINING)
    return experiment_id


def log_dataset(client: MlflowClient, run_id: str, bench, digest: str) -> None:
    """The benchmark as an MLflow dataset input of the run, with its content digest."""
    meta = getattr(bench, "meta", None) or {}
    source = str(meta.get("source_file") or meta.get("source") or bench.name)
    profile = json.dumps({split: len(bench[split]) for split in ("train", "valid", "test")})
    dataset = Dataset(name=bench.name, digest=digest, source_type="local" if "/" in source else "code",
                      source=json.dumps({"uri": source}), profile=profile)
    client.log_inputs(run_id, [DatasetInput(dataset, [InputTag("mlflow.data.context", "training")])])


def log_parent_summary(client: MlflowClient, parent_run_id: str, runs) -> dict:
    """Per method and chi, the mean over finished trials of the test accuracy at the validation-
    chosen p and of p*, logged on the parent run (the UI's collapsed row then shows the results)."""
    groups: dict[str, list] = {}
    for run in runs:
        if run.info.status != "FINISHED" or "test_acc_at_best" not in run.data.metrics:
            continue
        key = f"{run.data.tags.get(L.TAG_METHOD)}_chi{run.data.params.get('chi', '?')}"
        groups.setdefault(key, []).append(run.data.metrics)
    summary = {}
    for key, metrics in groups.items():
        for name in ("test_acc_at_best", "best_keep_ratio"):
            summary[f"{key}/{name}"] = sum(m[name] for m in metrics) / len(metrics)
        summary[f"{key}/n_trials"] = float(len(metrics))
    now = int(time.time() * 1000)
    if summary:
        client.log_batch(parent_run_id, metrics=[Metric(k, v, now, 0) for k, v in sorted(summary.items())])
    return summary


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


def curve_png(curve: list[dict], title: str, path: str) -> None:
    # matplotlib: a second of import, paid by the driver when it plots, not by every Ray worker
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt   # after use("Agg")

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


def _print(*args, **kwargs) -> None:
    """print as builtins has it when called. Tune pickles this callback, and a default of
    `printer=print` would hold the built-in print of import time: after a first grid in the same
    process, ray.shutdown() swaps builtins.print for tqdm_ray's safe_print, and pickling the old
    one fails ("not the same object as builtins.print"), so a second grid in a notebook failed."""
    print(*args, **kwargs)


class MlflowTrialLogger(Callback):
    """Logs every Tune trial as a child run of `parent_run_id`.

    Args:
        client: MlflowClient on the grid's tracking URI.
        experiment_id, parent_run_id: where child runs go.
        existing: trial_key -> run from a previous invocation (resume): reused, never duplicated.
        tags: extra tags for every child run (preset, code version).
        extra_params: params for every child run besides its config (the data protocol).
        total: number of trials this invocation runs (for the progress lines).
    """

    def __init__(self, client: MlflowClient, experiment_id: str, parent_run_id: str, existing: dict,
                 tags: dict, total: int, printer=None, extra_params: dict | None = None):
        self.client = client
        self.experiment_id = experiment_id
        self.parent_run_id = parent_run_id
        self.existing = dict(existing)
        self.tags = tags
        self.total = total
        self.done = 0
        self.failed = 0
        self.print = printer or _print
        self.extra_params = dict(extra_params or {})  # e.g. the data protocol (label rule, file, ...)
        self.run_of: dict[str, str] = {}              # Tune trial id -> MLflow run id
        self.logged: dict[str, set] = {}              # run id -> {(metric key, step)}
        self.started: dict[str, float] = {}
        self.finishing: dict[str, DoneReport] = {}    # Tune trial id -> its logged final report, until complete

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
            cfg = get_method(spec.method).config(spec.s3_config())  # what the method really trains with
            # the device is a tag set when the trial ends (the one it really used), not a config param
            params = {**{k: v for k, v in cfg.to_dict().items() if k != "device"}, "method": spec.method,
                      "benchmark": spec.benchmark, "preset": spec.preset, **self.extra_params}
            tags = {**self.tags, L.TAG_PARENT: self.parent_run_id, L.TAG_ROLE: L.ROLE_TRIAL,
                    L.TAG_TRIAL_KEY: key, L.TAG_METHOD: spec.method, L.TAG_BENCHMARK: spec.benchmark,
                    L.TAG_SEED: str(spec.seed), L.TAG_PRESET: spec.preset, "mlflow.runName": spec.short(),
                    # for the UI's "Group by": the fields a reader compares runs by
                    L.TAG_CHI: str(cfg.chi), L.TAG_BATCH_SIZE: str(cfg.batch_size)}
            run = self.client.create_run(self.experiment_id, tags=tags, run_name=spec.short())
            run_id = run.info.run_id
            self.client.log_batch(run_id, params=[Param(k, param_str(v)) for k, v in sorted(params.items())])
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
        report = Report.decode(result)
        if isinstance(report, EpochReport):
            values = {L.epoch_metric_key(report.stage, k): v for k, v in report.metrics.items()}
            self._log_metrics(run_id, values, report.global_epoch)
        elif isinstance(report, DoneReport):
            self._log_final(trial, run_id, report)

    def _log_final(self, trial, run_id: str, done: DoneReport) -> None:
        spec = self._spec(trial)
        points: dict[int, dict] = {}
        for key, value, step in L.curve_metrics(done.curve):
            points.setdefault(step, {})[key] = value
        for step, values in points.items():
            self._log_metrics(run_id, values, step)
        self._log_metrics(run_id, done.summary, 0)
        self._log_metrics(run_id, {L.EXPERTS_PREFIX + k: v for k, v in done.experts.items()}, 0)
        with tempfile.TemporaryDirectory() as d:
            with open(os.path.join(d, "curve.csv"), "w") as f:
                f.write(L.curve_csv(done.curve))
            curve_png(done.curve, spec.short(), os.path.join(d, "curve.png"))
            self.client.log_artifacts(run_id, d, artifact_path=L.CURVE_ARTIFACT_DIR)
        # the device used and what the stage cache did, in one write (one SQLite transaction)
        run_of_key = {key: run.info.run_id for key, run in self.existing.items()}
        tags = {L.TAG_DEVICE: done.device, **L.stage_cache_tags(done.stage_cache, run_of_key)}
        self.client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])
        # FINISHED once the trial completes (on_trial_complete), after its final checkpoint (the
        # model) is in too: a driver killed before leaves RUNNING, which --resume treats as unfinished
        self.finishing[trial.trial_id] = done

    def on_checkpoint(self, iteration, trials, trial, checkpoint, **info):
        """A finished trial's last checkpoint holds its trained model and its expert analysis:
        the run's model artifact and experts/expert_analysis.npz."""
        if trial.trial_id not in self.finishing:
            return
        state = resume_state(checkpoint)
        if state and TRAINED_MODEL_KEY in state:
            with tempfile.TemporaryDirectory() as d:
                torch.save(state[TRAINED_MODEL_KEY], os.path.join(d, L.MODEL_FILE))
                self.client.log_artifacts(self._run_id(trial), d, artifact_path=L.MODEL_ARTIFACT_DIR)
        if state and EXPERTS_KEY in state:
            with tempfile.TemporaryDirectory() as d:
                with open(os.path.join(d, L.EXPERTS_FILE), "wb") as f:
                    f.write(state[EXPERTS_KEY].numpy().tobytes())
                self.client.log_artifacts(self._run_id(trial), d, artifact_path=L.EXPERTS_ARTIFACT_DIR)

    def on_trial_complete(self, iteration, trials, trial, **info):
        done = self.finishing.pop(trial.trial_id, None)
        if done is None:
            return
        spec = self._spec(trial)
        self.client.set_terminated(self._run_id(trial), status="FINISHED")
        self.done += 1
        secs = time.time() - self.started.get(trial.trial_id, time.time())
        s = done.summary
        self.print(f"[{self.done + self.failed}/{self.total}] done   {spec.short()}: p*={s['best_keep_ratio']:g} "
                   f"valid {100 * s['best_valid_acc']:.1f}% test {100 * s['test_acc_at_best']:.1f}% "
                   f"(no pruning {100 * s.get('test_acc_no_prune', float('nan')):.1f}%) in {secs:.0f}s",
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


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def param_str(v) -> str:
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
