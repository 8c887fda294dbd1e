"""Carry out a Plan: Ray Tune (grid or Optuna) over trials, tracked in MLflow, ending in a report.

Flow: connect to MLflow (checked before anything is written) -> load each benchmark once in the
driver and put it in the object store (every node reads it from there: once per node, not once
per trial) -> start or join Ray and size the trials -> per benchmark: find or create the MLflow
parent run, skip what already FINISHED (resume), Tuner.fit, report.
"""
from __future__ import annotations

import dataclasses
import signal
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import mlflow
import ray
from mlflow.entities import Param
from mlflow.tracking import MlflowClient
from ray import tune

from s3core.data.registry import get_dataset
from s3core.methods import primary_method

from orchestrator import console
from orchestrator import mlflow_layout as L
from orchestrator.executors import TRAINABLES
from orchestrator.progress import ProgressCallback
from orchestrator.plan import (GridError, GridStudy, OptunaStudy, Plan, check_resources, data_fingerprint,
                               plan_execution, reuse_actors, stage_cache_dir)
from orchestrator.report import ReportError, build_report, log_report_to_parent
from orchestrator.resources import ResourceError, discover_shape, pending_watchdog_callback
from orchestrator.stage_claims import start_broker
from orchestrator.storage import check_storage
from orchestrator.tracking import (MlflowTrialLogger, find_parent, get_or_create_experiment, log_dataset,
                                   log_parent_summary, param_str, provenance_tags, trial_runs)


@dataclasses.dataclass
class BenchmarkResult:
    benchmark: str
    exit_code: int                 # 0 all finished, 1 some failed, 130 interrupted
    done: int = 0
    failed: int = 0
    parent_run_id: str = ""
    report_dir: str | None = None


@dataclasses.dataclass
class GridResult:
    grid_id: str
    benchmarks: list[BenchmarkResult]

    @property
    def exit_code(self) -> int:
        codes = [b.exit_code for b in self.benchmarks]
        return 130 if 130 in codes else max(codes, default=0)


def connect_mlflow(uri: str):
    """An MlflowClient on `uri`, checked to answer before anything is written."""
    if uri.startswith("sqlite:"):
        path = L.sqlite_path(uri)
        if path is None or not path.is_absolute():
            raise GridError(f"tracking URI {uri!r} is not an absolute SQLite path; use sqlite:////abs/path/mlflow.db")
        if not path.parent.is_dir():
            raise GridError(f"the folder of the MLflow store {path} does not exist; create it or pass another "
                            "--tracking-uri")
    elif uri.startswith(("http://", "https://")):
        try:
            urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=5).read()
        except (urllib.error.URLError, OSError) as err:
            raise GridError(f"cannot reach the MLflow server at {uri} ({getattr(err, 'reason', err)}); start it "
                            "(mlflow server ...) or drop --tracking-uri to use a local SQLite store") from None
    else:
        raise GridError(f"unsupported tracking URI {uri!r}; use sqlite:////abs/path/mlflow.db or http://host:port")
    mlflow.set_tracking_uri(uri)
    return MlflowClient(uri)


def load_data(plan: Plan) -> dict:
    """Every benchmark of the plan, loaded once in the driver (DataSettings.load)."""
    out = {}
    for name in plan.data.benchmarks:
        t0 = time.perf_counter()
        if get_dataset(name).data_dir:   # a MultiBench pickle's first load converts it to the Arrow cache: minutes
            print(f"loading {name} from {plan.data.data_dir} (the first load converts it to an Arrow cache) ...",
                  flush=True)
        out[name] = b = plan.data.load(name)
        print(f"loaded {b.describe()} ({time.perf_counter() - t0:.1f}s)", flush=True)
    return out


def _check_batches_fit(plan: Plan, data: dict) -> None:
    for t in plan.trials():
        n_train = len(data[t.benchmark]["train"])
        if t.s3_config().batch_size > n_train:
            raise GridError(f"batch_size {t.s3_config().batch_size} exceeds the {t.benchmark} train split "
                            f"({n_train} samples); lower the batch size")


def run(plan: Plan) -> GridResult:
    """Carry out `plan`; returns per-benchmark outcomes (exit_code: 0, 1 some trials failed, 130)."""
    check_storage(plan.resources.storage_path)  # a missing bucket or credentials: one line, before anything starts
    client = connect_mlflow(plan.tracking.uri)
    data = load_data(plan)
    _check_batches_fit(plan, data)

    req = plan.resources
    if ray.is_initialized():
        pass   # the caller (a notebook, a test, a second grid in one process) is connected already: use that Ray
    elif req.ray_address:
        ray.init(address=req.ray_address, include_dashboard=False, log_to_driver=False)
    else:
        ray.init(address="local", num_cpus=req.num_cpus, num_gpus=req.num_gpus, include_dashboard=False,
                 log_to_driver=False)
    # the node types the cluster can provide (its autoscaler's), not only the nodes up right now
    shape = discover_shape(started_here=not req.ray_address)
    print(f"cluster: {shape.describe()}", flush=True)
    execution = plan_execution(req, shape)
    note = check_resources(execution, shape)
    if note:
        print(f"resources: {note}", flush=True)

    fingerprints = {name: data_fingerprint(b) for name, b in data.items()}
    gid = plan.grid_id(fingerprints)
    execution = dataclasses.replace(execution, stage_cache=stage_cache_dir(req), data_digests=fingerprints)
    broker = None                 # held until the grid returns: the actor lives as long as this driver needs it
    if execution.stage_cache:     # claims every node sees: a named actor of this driver (orchestrator.stage_claims)
        broker, address = start_broker()
        execution = dataclasses.replace(execution, stage_claims=address)
    print(f"stage cache: {execution.stage_cache or 'off'}", flush=True)
    print(f"resources: {execution.executor} executor on {execution.device}, {execution.max_concurrent} concurrent "
          f"trial(s), "
          f"{execution.workers_per_trial} worker(s) x "
          f"{execution.cpus_per_worker:g} CPU" + (f" + {execution.gpus_per_worker:g} GPU" if execution.gpus_per_worker
                                                  else "") + f"; checkpoints in {execution.storage_path}", flush=True)
    refs = {name: [ray.put(b)] for name, b in data.items()}
    if execution.executor == "direct":
        resources = {"cpu": execution.cpus_per_worker, "gpu": execution.gpus_per_worker}
    else:
        # the Tune function only drives a TorchTrainer, whose workers hold the real resources
        resources = {"cpu": 0.01}
    results = []
    for bench in plan.data.benchmarks:
        report_dir = plan.tracking.report_dir if len(plan.data.benchmarks) == 1 else \
            str(Path(plan.tracking.report_dir) / bench)
        result = _run_benchmark(plan, bench, client, gid, execution, refs, TRAINABLES[execution.executor], resources,
                                report_dir, tune, data[bench], fingerprints[bench])
        results.append(result)
        if result.exit_code == 130:
            break
    del broker
    return GridResult(gid, results)


def plan_params(plan: Plan) -> dict:
    """The settings of a grid run, logged on its parent run (data, resources, tracking)."""
    out = {"preset": plan.preset.name, "seeds": list(plan.seeds)}
    for group in ("data", "resources", "tracking"):
        for key, value in dataclasses.asdict(getattr(plan, group)).items():
            out[f"{group}.{key}"] = value
    out["command"] = " ".join(sys.argv)
    return out


def _open_parent(plan: Plan, client, bench: str, gid: str, tags: dict, bench_data, digest: str):
    exp_name = L.experiment_name(bench, plan.tracking.experiment)
    experiment_id = get_or_create_experiment(client, exp_name, plan.tracking.uri)
    parent = find_parent(client, experiment_id, gid) if plan.tracking.resume else None
    if plan.tracking.resume and parent is None:
        print(f"--resume: no earlier grid {gid} (preset {plan.preset.name}) in experiment {exp_name}; starting it now",
              flush=True)
    if parent is None:
        parent = client.create_run(experiment_id, run_name=f"{plan.preset.name}-{bench}-{gid}",
                                   tags={**tags, L.TAG_ROLE: L.ROLE_PARENT, L.TAG_BENCHMARK: bench})
        client.log_batch(parent.info.run_id,
                         params=[Param(k, param_str(v)) for k, v in sorted(plan_params(plan).items())])
        log_dataset(client, parent.info.run_id, bench_data, digest)
    else:
        client.update_run(parent.info.run_id, status="RUNNING")
    return exp_name, experiment_id, parent.info.run_id


def _run_benchmark(plan: Plan, bench: str, client, gid: str, execution, refs, trainable_fn, resources, report_dir,
                   tune, bench_data, digest: str) -> BenchmarkResult:
    tags = {L.TAG_PRESET: plan.preset.name, L.TAG_GRID_ID: gid, **provenance_tags()}
    exp_name, experiment_id, parent_id = _open_parent(plan, client, bench, gid, tags, bench_data, digest)
    # checkpoints are scoped to this parent run: a fresh grid (no --resume) never replays old ones
    execution = dataclasses.replace(execution, scope=parent_id)
    trainable = tune.with_resources(tune.with_parameters(trainable_fn, data_refs={
        "data": refs, "execution": execution.as_dict()}), resources)
    existing = trial_runs(client, experiment_id, parent_id)
    finished = {k: r for k, r in existing.items() if r.info.status == "FINISHED"}
    studies = plan.studies_of(bench)
    print(f"grid {gid} [{bench}]: " + "; ".join(s.describe(finished) for s in studies)
          + f" (MLflow parent run {parent_id}, experiment {exp_name}, {plan.tracking.uri})", flush=True)

    interrupted, loggers = False, []

    def handle_sigterm(signum, frame):
        raise KeyboardInterrupt

    old_term = signal.signal(signal.SIGTERM, handle_sigterm)
    try:
        for study in studies:
            total = _remaining(study, finished)
            if total == 0:
                continue
            protocol = {f"protocol.{k}": v for k, v in (getattr(bench_data, "meta", {}) or {}).get("protocol", {}).items()}
            logger = MlflowTrialLogger(client, experiment_id, parent_id, existing, tags, total, extra_params=protocol)
            loggers.append(logger)
            progress = ProgressCallback(
                logger, bench + (f" seed={study.seed}" if isinstance(study, OptunaStudy) else ""))
            callbacks = [logger, progress]
            if plan.resources.pending_timeout_s:
                callbacks.append(pending_watchdog_callback(plan.resources.pending_timeout_s))
            with console.tune_output(plan.tracking.verbose):
                _tuner(study, plan, tune, trainable, execution, finished, callbacks).fit()
            existing = logger.existing
            finished = {k: r for k, r in existing.items() if r.info.status == "FINISHED"}
            if logger.done + logger.failed < total:
                # Tune catches Ctrl-C itself, stops its trials and returns normally: not a finished grid
                raise KeyboardInterrupt
    except KeyboardInterrupt:
        interrupted = True
    except ResourceError as err:     # the pending watchdog: trials waited for resources, none ran
        for logger in loggers:
            logger.close_unfinished("FAILED")
        client.set_terminated(parent_id, status="FAILED")
        raise GridError(str(err)) from None
    except BaseException:
        for logger in loggers:
            logger.close_unfinished("FAILED")
        client.set_terminated(parent_id, status="FAILED")
        raise
    finally:
        signal.signal(signal.SIGTERM, old_term)
    if interrupted:
        for logger in loggers:
            logger.close_unfinished("KILLED")
        client.set_terminated(parent_id, status="KILLED")
        print(f"interrupted: finished trials are safe in MLflow; continue with the same command plus --resume "
              f"(grid {gid})", file=sys.stderr, flush=True)
        return BenchmarkResult(bench, 130, parent_run_id=parent_id)

    done = sum(lg.done for lg in loggers)
    failed = sum(lg.failed for lg in loggers)
    log_parent_summary(client, parent_id, trial_runs(client, experiment_id, parent_id).values())
    try:
        rep = build_report(client, [exp_name], out_dir=report_dir, parent_run_id=parent_id,
                           progress=console.current().report_progress)
        log_report_to_parent(client, parent_id, report_dir)
        console.current().summary(rep.configs)
        report_index = Path(report_dir) / "index.html"
    except ReportError as err:
        console.current().end_status()
        print(f"report: {err}", file=sys.stderr, flush=True)
        report_index = None
    client.set_terminated(parent_id, status="FINISHED" if failed == 0 else "FAILED")
    print(f"grid {gid} [{bench}]: {done} trial(s) finished, {failed} failed this run", flush=True)
    console.current().closing(report_index, plan.tracking.uri, experiment_id, parent_id)
    return BenchmarkResult(bench, 0 if failed == 0 else 1, done, failed, parent_id, report_dir)


def _remaining(study, finished: dict) -> int:
    if isinstance(study, GridStudy):
        return len(study.todo(finished))
    return max(0, study.num_samples - len(study.finished_here(finished)))


def _tuner(study, plan: Plan, tune, trainable, execution, finished: dict, callbacks: list):
    """A Tuner for what is left of `study` (grid: the unfinished trials; Optuna: the missing samples)."""
    reuse = reuse_actors(execution.executor)
    run_config = tune.RunConfig(
        name=f"grid-{execution.scope}-{study.benchmark}{study.suffix}", storage_path=execution.storage_path,
        callbacks=callbacks, verbose=console.tune_verbose(plan.tracking.verbose),
        # train: Ray Train retries inside the trial; direct: Tune does
        failure_config=tune.FailureConfig(
            max_failures=execution.max_failures if execution.executor == "direct" else 0))
    if isinstance(study, GridStudy):
        return tune.Tuner(trainable, param_space={"spec": tune.grid_search([t.to_dict() for t in study.todo(finished)])},
                          tune_config=tune.TuneConfig(max_concurrent_trials=execution.max_concurrent,
                                                      reuse_actors=reuse),
                          run_config=run_config)
    assert isinstance(study, OptunaStudy)
    # Optuna (and Ray's searcher over it): loaded for a preset that samples, not for every grid
    from ray.tune.search.optuna import OptunaSearch

    done = len(study.finished_here(finished))
    space = StudySpace(study.space, {"benchmark": study.benchmark, "seed": study.seed, "method": primary_method(),
                                     "preset": study.preset, "overrides": study.base})
    # A resumed study must draw new samples. Its sampler seed moves on by the number already
    # finished: with the first run's seed, its first draws would be the first run's draws again,
    # map to the same trial keys, and the finished runs would be reused instead of new ones run.
    url = plan.optuna_storage()
    storage = None
    if url:
        import optuna   # as above: only a sampling preset
        L.sqlite_path(url).parent.mkdir(parents=True, exist_ok=True)
        storage = optuna.storages.RDBStorage(url)
        print(f"Optuna study {execution.scope}{study.suffix} in {url} (optuna-dashboard {url})", flush=True)
    algo = OptunaSearch(space=space, metric="objective", mode="max", seed=study.sampler_seed + done,
                        storage=storage, study_name=f"{execution.scope}{study.suffix}")
    return tune.Tuner(trainable, tune_config=tune.TuneConfig(search_alg=algo, num_samples=_remaining(study, finished),
                                                             max_concurrent_trials=execution.max_concurrent,
                                                             reuse_actors=reuse),
                      run_config=run_config)


class StudySpace:
    """A preset's define-by-run space plus the study's constants (benchmark, seed, ...), which
    pass through unchanged. A module-level class, not a closure: Tune pickles the searcher."""

    def __init__(self, user_space, constants: dict):
        self.user_space = user_space
        self.constants = constants

    def __call__(self, trial) -> dict:
        self.user_space(trial)
        return dict(self.constants)
