"""Run a preset's trials through Ray Tune (grid or Optuna) and track them in MLflow.

Flow: parse -> check resources -> load each benchmark once in the driver and put it in the
object store (every node reads it from there: once per node, not once per trial) -> find or
create the MLflow parent run -> skip trials already FINISHED (resume) -> Tuner.fit -> report.
"""
from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import os
import signal
import sys
import time
from pathlib import Path

from orchestrator import mlflow_layout as L
from orchestrator.trial import TrialSpec

RAY_ADDRESS_ENV = "RAY_ADDRESS"


class GridError(RuntimeError):
    """A grid that cannot start. One line naming the fix."""


@dataclasses.dataclass
class Execution:
    workers_per_trial: int
    cpus_per_worker: float
    gpus_per_worker: float
    max_concurrent: int
    storage_path: str
    max_failures: int
    grid_id: str = ""              # scopes each trial's Ray Train run (and its checkpoints) to its grid

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def default_tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd().resolve() / 'mlflow.db'}"


def grid_trials(preset: dict, benchmarks: list[str], seeds: list[int], extra: dict,
                grid_override: dict | None = None) -> list[TrialSpec]:
    """The grid preset's trials: s3 over the cross product of `grid`, baselines once per seed
    ('s3_no_select' is gridded over chi too: it is the ablation of each chi)."""
    base = {**preset["base"], **extra}
    grid = {**preset["grid"], **(grid_override or {})}
    for name, values in grid.items():
        if not isinstance(values, (list, tuple)) or not values:
            raise GridError(f"grid field {name!r} needs a non-empty list of values, got {values!r}; "
                            f"write --grid {name}=[v1,v2]")
    names = list(grid)
    trials = []
    for bench, seed in itertools.product(benchmarks, seeds):
        for values in itertools.product(*(grid[n] for n in names)):
            trials.append(TrialSpec(bench, "s3", seed, preset["name"], {**base, **dict(zip(names, values))},
                                    label_fields=tuple(names)))
        for method in preset["baselines"]:
            if method == "s3_no_select" and "chi" in grid:
                for chi in grid["chi"]:
                    trials.append(TrialSpec(bench, method, seed, preset["name"], {**base, "chi": chi}))
            else:
                trials.append(TrialSpec(bench, method, seed, preset["name"], dict(base)))
    return trials


def grid_id(preset_name: str, benchmarks, seeds, extra: dict, synthetic: dict, search_samples,
            data_fingerprints: dict | None = None) -> str:
    """Identifies a grid: the same flags on the same data give the same id (that is what --resume
    finds); other data (another synthetic label, another file) give another id, so checkpoints
    and MLflow runs of one never stand in for the other."""
    canon = json.dumps({"preset": preset_name, "benchmarks": list(benchmarks), "seeds": list(seeds),
                        "extra": extra, "synthetic": synthetic, "samples": search_samples,
                        "data": data_fingerprints or {}}, sort_keys=True, default=str)
    return hashlib.sha1(canon.encode()).hexdigest()[:12]


def data_fingerprint(bench) -> str:
    """A cheap content hash of a Benchmark: every label, every shape, and a strided sample of rows."""
    import numpy as np

    h = hashlib.sha1()
    h.update(json.dumps([bench.name, list(bench.modalities), bench.num_classes]).encode())
    for split_name in sorted(bench.splits):
        split = bench.splits[split_name]
        h.update(np.ascontiguousarray(split.labels).tobytes())
        for m in bench.modalities:
            x = split.features[m]
            h.update(str(x.shape).encode())
            h.update(np.ascontiguousarray(x[:: max(1, len(x) // 64)]).tobytes())
    return h.hexdigest()[:16]


def check_resources(execution: Execution, cluster: dict) -> None:
    """Fail before any trial waits in PENDING forever for resources the cluster lacks."""
    need_cpu = execution.workers_per_trial * execution.cpus_per_worker + 0.01
    need_gpu = execution.workers_per_trial * execution.gpus_per_worker
    have_cpu, have_gpu = cluster.get("CPU", 0.0), cluster.get("GPU", 0.0)
    if need_gpu > 0 and have_gpu < need_gpu:
        raise GridError(f"a trial needs {need_gpu:g} GPU but the Ray cluster has {have_gpu:g}; drop "
                        "--gpus-per-trial (CPU-only works) or connect to a cluster with GPUs")
    if need_cpu > have_cpu + 1e-9:
        raise GridError(f"a trial needs {need_cpu:g} CPU ({execution.workers_per_trial} workers x "
                        f"{execution.cpus_per_worker:g}) but the Ray cluster has {have_cpu:g}; lower "
                        "--workers-per-trial or --cpus-per-worker")


def plan_execution(args, cluster: dict) -> Execution:
    have_cpu = cluster.get("CPU", 1.0)
    gpus = args.gpus_per_trial or 0.0
    if gpus > 1:
        if gpus != int(gpus):
            raise GridError(f"--gpus-per-trial {gpus:g}: above 1 it must be a whole number of GPUs "
                            "(one DDP worker each)")
        workers, gpus_per_worker = int(gpus), 1.0
    else:
        workers, gpus_per_worker = args.workers_per_trial, gpus
    if getattr(args, "executor", "train") == "direct" and workers > 1:
        raise GridError(f"--executor direct runs each trial in a single process; use --executor train for "
                        f"{workers} workers per trial (DDP)")
    if args.max_concurrent:
        concurrent = args.max_concurrent
    elif gpus_per_worker > 0:
        concurrent = max(1, int(cluster.get("GPU", 0) / (workers * gpus_per_worker)))
    else:
        concurrent = max(1, int(have_cpu // workers))
    if args.cpus_per_worker:
        cpus = args.cpus_per_worker
    else:
        # share the CPUs among the concurrent trials; each trial's Tune function holds 0.01
        cpus = max(0.01, round((have_cpu / concurrent - 0.01) / workers - 0.005, 2))
    storage = args.storage_path or str(Path.cwd().resolve() / "s3_runs")
    return Execution(workers, cpus, gpus_per_worker, concurrent, storage, args.max_failures)


def connect_mlflow(uri: str):
    """An MlflowClient on `uri`, checked to answer before anything is written."""
    from mlflow.tracking import MlflowClient

    if uri.startswith("sqlite:"):
        path = uri[len("sqlite:///"):] if uri.startswith("sqlite:///") else ""
        if not path.startswith("/"):
            raise GridError(f"tracking URI {uri!r} is not an absolute SQLite path; use sqlite:////abs/path/mlflow.db")
        if not Path(path).parent.is_dir():
            raise GridError(f"the folder of the MLflow store {path} does not exist; create it or pass another "
                            "--tracking-uri")
    elif uri.startswith(("http://", "https://")):
        import urllib.error
        import urllib.request
        try:
            urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=5).read()
        except (urllib.error.URLError, OSError) as err:
            raise GridError(f"cannot reach the MLflow server at {uri} ({getattr(err, 'reason', err)}); start it "
                            "(mlflow server ...) or drop --tracking-uri to use a local SQLite store") from None
    else:
        raise GridError(f"unsupported tracking URI {uri!r}; use sqlite:////abs/path/mlflow.db or http://host:port")
    import mlflow
    mlflow.set_tracking_uri(uri)
    return MlflowClient(uri)


def load_data(benchmarks, args, preset) -> dict:
    from s3core.data import SyntheticConfig, load_benchmark

    out = {}
    for name in benchmarks:
        synthetic = SyntheticConfig(**{**preset.get("synthetic", {}), **(args.synthetic or {})}) \
            if name == "synthetic" else None
        t0 = time.perf_counter()
        out[name] = load_benchmark(name, data_dir=args.data_dir, modalities=args.modalities,
                                   label_rule=args.label_rule, synthetic=synthetic,
                                   source_file=getattr(args, "source_file", None),
                                   alignment=getattr(args, "alignment", None))
        print(f"loaded {out[name].describe()} ({time.perf_counter() - t0:.1f}s)", flush=True)
    return out


def run(args) -> int:
    """The body of run_grid.py. Returns the exit code."""
    import ray
    from ray import tune

    from orchestrator.trial import tune_trial
    from search_spaces import load_preset

    preset = load_preset(args.preset)
    benchmarks = args.benchmark or preset["benchmarks"]
    seeds = args.seeds if args.seeds is not None else preset["seeds"]
    extra = dict(args.set or {})
    if args.epochs is not None:
        extra["epochs_special"] = args.epochs
    search = preset.get("search")
    num_samples = (args.num_samples or search["num_samples"]) if search else None
    if search is not None and args.grid:
        raise GridError(f"--grid does not apply to the {preset['name']} preset, which samples with Optuna; "
                        "use --set for fixed values")

    # validate every trial config before any process starts or any run is written
    if search is None:
        trials = grid_trials(preset, benchmarks, seeds, extra, args.grid)
        for t in trials:
            t.s3_config().validate()
    else:
        trials = []
        TrialSpec(benchmarks[0], "s3", seeds[0], preset["name"], {**preset["base"], **extra}).s3_config().validate()
    client = connect_mlflow(args.tracking_uri)

    data = load_data(benchmarks, args, preset)
    for t in trials:
        n_train = len(data[t.benchmark]["train"])
        if t.s3_config().batch_size > n_train:
            raise GridError(f"batch_size {t.s3_config().batch_size} exceeds the {t.benchmark} train split "
                            f"({n_train} samples); lower the batch size")

    if args.ray_address:
        ray.init(address=args.ray_address, include_dashboard=False, log_to_driver=False)
    elif not ray.is_initialized():
        ray.init(address="local", num_cpus=args.num_cpus, num_gpus=args.num_gpus, include_dashboard=False,
                 log_to_driver=False)
    execution = plan_execution(args, ray.cluster_resources())
    check_resources(execution, ray.cluster_resources())

    gid = grid_id(preset["name"], benchmarks, seeds, {**extra, "__grid__": args.grid or {}},
                  {**preset.get("synthetic", {}), **(args.synthetic or {})}, num_samples,
                  {name: data_fingerprint(b) for name, b in data.items()})
    execution.grid_id = gid
    print(f"resources: {execution.max_concurrent} concurrent trial(s), {execution.workers_per_trial} worker(s) x "
          f"{execution.cpus_per_worker:g} CPU" + (f" + {execution.gpus_per_worker:g} GPU" if execution.gpus_per_worker
                                                  else "") + f"; checkpoints in {execution.storage_path}", flush=True)
    refs = {"data": {name: [ray.put(b)] for name, b in data.items()}, "execution": execution.as_dict()}
    if args.executor == "direct":
        from orchestrator.direct import tune_trial_direct
        resources = {"cpu": execution.cpus_per_worker, "gpu": execution.gpus_per_worker}
        trainable = tune.with_resources(tune.with_parameters(tune_trial_direct, data_refs=refs), resources)
    else:
        # the Tune function only drives a TorchTrainer, whose workers hold the real resources
        trainable = tune.with_resources(tune.with_parameters(tune_trial, data_refs=refs), {"cpu": 0.01})
    job = dict(args=args, preset=preset, seeds=seeds, extra=extra, search=search, num_samples=num_samples,
               execution=execution, client=client, gid=gid, trainable=trainable)
    codes = []
    for bench in benchmarks:
        # one MLflow experiment (and parent run) per benchmark, unless --experiment names one
        code = _run_benchmark(bench, [t for t in trials if t.benchmark == bench],
                              report_dir=args.report_dir if len(benchmarks) == 1 else
                              str(Path(args.report_dir) / bench), **job)
        if code == 130:
            return code
        codes.append(code)
    return max(codes)


def _run_benchmark(bench, trials, *, args, preset, seeds, extra, search, num_samples, execution, client, gid,
                   trainable, report_dir) -> int:
    from ray import tune

    from orchestrator.report import ReportError, build_report, log_report_to_parent
    from orchestrator.tracking import (MlflowTrialLogger, code_version, find_parent, get_or_create_experiment,
                                       trial_runs)

    exp_name = L.experiment_name(bench, args.experiment)
    experiment_id = get_or_create_experiment(client, exp_name)
    tags = {L.TAG_PRESET: preset["name"], L.TAG_CODE_VERSION: code_version(), L.TAG_GRID_ID: gid}
    parent = find_parent(client, experiment_id, gid) if args.resume else None
    if args.resume and parent is None:
        print(f"--resume: no earlier grid {gid} (preset {preset['name']}) in experiment {exp_name}; starting it now",
              flush=True)
    if parent is None:
        parent = client.create_run(experiment_id, run_name=f"{preset['name']}-{bench}-{gid}",
                                   tags={**tags, L.TAG_ROLE: L.ROLE_PARENT, L.TAG_BENCHMARK: bench})
        client.log_param(parent.info.run_id, "preset", preset["name"])
    else:
        client.update_run(parent.info.run_id, status="RUNNING")
    parent_id = parent.info.run_id
    existing = trial_runs(client, experiment_id, parent_id)
    finished = {k for k, r in existing.items() if r.info.status == "FINISHED"}
    if search is None:
        todo = [t for t in trials if t.key() not in finished]
        studies = [(None, todo, len(todo))] if todo else []
        print(f"grid {gid} [{bench}]: {len(trials)} trials, {len(trials) - len(todo)} already finished, {len(todo)} "
              f"to run (MLflow parent run {parent_id}, experiment {exp_name}, {args.tracking_uri})", flush=True)
    else:
        # one Optuna study per (benchmark, seed); on resume only the missing samples run (TPE restarts
        # its model from scratch: finished samples are kept in MLflow, not fed back)
        studies = []
        for seed in seeds:
            done_here = sum(1 for r in existing.values() if r.info.status == "FINISHED"
                            and r.data.tags.get(L.TAG_SEED) == str(seed))
            if num_samples - done_here > 0:
                studies.append(((bench, seed), None, num_samples - done_here))
        print(f"search {gid} [{bench}]: {len(seeds)} Optuna stud(ies) x {num_samples} samples, "
              f"{sum(n for *_, n in studies)} to run (MLflow parent run {parent_id}, experiment {exp_name})",
              flush=True)

    interrupted = False
    loggers = []

    def handle_sigterm(signum, frame):
        raise KeyboardInterrupt

    old_term = signal.signal(signal.SIGTERM, handle_sigterm)
    try:
        for study, todo_trials, total in studies:
            logger = MlflowTrialLogger(client, experiment_id, parent_id, existing, tags, total)
            loggers.append(logger)
            run_config = tune.RunConfig(name=f"grid-{gid}-{bench}" + (f"-seed{study[1]}" if study else ""),
                                        storage_path=execution.storage_path, callbacks=[logger], verbose=args.verbose,
                                        # train: Ray Train retries inside the trial; direct: Tune does
                                        failure_config=tune.FailureConfig(
                                            max_failures=execution.max_failures if args.executor == "direct" else 0))
            if search is None:
                tuner = tune.Tuner(trainable,
                                   param_space={"spec": tune.grid_search([t.to_dict() for t in todo_trials])},
                                   tune_config=tune.TuneConfig(max_concurrent_trials=execution.max_concurrent,
                                                               reuse_actors=reuse_actors(args.executor)),
                                   run_config=run_config)
            else:
                tuner = _search_tuner(tune, trainable, search, study, preset, extra, total, execution,
                                      run_config, args.seed_search, reuse_actors(args.executor))
            tuner.fit()
            existing = logger.existing
            if logger.done + logger.failed < total:
                # Tune catches Ctrl-C itself, stops its trials and returns normally: not a finished grid
                raise KeyboardInterrupt
    except KeyboardInterrupt:
        interrupted = True
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
        return 130

    done = sum(lg.done for lg in loggers)
    failed = sum(lg.failed for lg in loggers)
    try:
        rep = build_report(client, [exp_name], out_dir=report_dir, parent_run_id=parent_id)
        log_report_to_parent(client, parent_id, report_dir)
        print(f"report: {Path(report_dir).resolve() / 'index.html'} ({len(rep.paths)} files)", flush=True)
    except ReportError as err:
        print(f"report: {err}", file=sys.stderr, flush=True)
    client.set_terminated(parent_id, status="FINISHED" if failed == 0 else "FAILED")
    print(f"grid {gid} [{bench}]: {done} trial(s) finished, {failed} failed this run. MLflow UI: "
          f"mlflow ui --backend-store-uri {args.tracking_uri}", flush=True)
    return 0 if failed == 0 else 1


def reuse_actors(executor: str) -> bool:
    """`direct` trials run in one Ray actor after another instead of a fresh process each, which
    saves the process start and the torch import (about 3 s a trial on 2 cores, bench section 4).
    Every direct trial asks for the same resources, which Tune's reuse requires. A trial that
    raises is not reused: Tune stops that actor. The Train executor gains nothing from it: its
    cost is the worker group each TorchTrainer starts."""
    return executor == "direct"


class StudySpace:
    """A preset's define-by-run space plus the study's constants (benchmark, seed, ...), which
    pass through unchanged. A module-level class, not a closure: Tune pickles the searcher."""

    def __init__(self, user_space, constants: dict):
        self.user_space = user_space
        self.constants = constants

    def __call__(self, trial) -> dict:
        self.user_space(trial)
        return dict(self.constants)


def _search_tuner(tune, trainable, search, study, preset, extra, num_samples, execution, run_config, seed, reuse):
    from ray.tune.search.optuna import OptunaSearch

    bench, trial_seed = study
    base = {**preset["base"], **extra}
    space = StudySpace(search["space"], {"benchmark": bench, "seed": trial_seed, "method": "s3",
                                         "preset": preset["name"], "overrides": base})
    algo = OptunaSearch(space=space, metric="objective", mode="max", seed=seed)
    return tune.Tuner(trainable,
                      tune_config=tune.TuneConfig(search_alg=algo, num_samples=num_samples,
                                                  max_concurrent_trials=execution.max_concurrent,
                                                  reuse_actors=reuse),
                      run_config=run_config)
