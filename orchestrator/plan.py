"""What a grid will run, as a pure value: `make_plan(preset, overrides) -> Plan`, testable without Ray.

A Plan holds the studies (a grid's trials, or Optuna studies: two kinds of study behind one
interface), the data settings, the resources asked for, and the tracking settings. The code
that starts Ray (orchestrator.grid.run) only carries a plan out. From Python or a notebook:

    from orchestrator.plan import Overrides, make_plan
    from orchestrator.grid import run
    from search_spaces import load_preset
    results = run(make_plan(load_preset("smoke"), Overrides(seeds=[0, 1])))
"""
from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
from pathlib import Path

from s3core.config import typed_changes
from s3core.data.base import content_digest
from s3core.data.registry import load_for_grid
from s3core.methods import get_method, primary_method
from search_spaces import Preset

from orchestrator import mlflow_layout as L
from orchestrator.contract import TrialSpec
from orchestrator.mlflow_layout import default_tracking_uri
from orchestrator.resources import (TUNE_FUNCTION_CPUS, ClusterShape, ResourceError, TrialRequest, check_request,
                                    default_cpus_per_worker, shape_from_totals)
from orchestrator.schedule import ORDERS, order_trials


# auto: `direct` (the trial runs in its Tune function: 1.08x the in-process time, bench section 4)
# for single-worker trials; `train` (a TorchTrainer per trial: 2.73x) where DDP needs a worker group
EXECUTORS = ("auto", "direct", "train")


class GridError(RuntimeError):
    """A grid that cannot start. One line naming the fix."""


@dataclasses.dataclass(frozen=True)
class Overrides:
    """Everything a user can change on top of a preset (run_grid.py's flags, one field each).
    None means "the preset's" or "the default"."""

    benchmarks: tuple[str, ...] | None = None
    data_dir: str | None = None
    modalities: tuple[str, ...] | None = None
    label_rule: str | None = None
    source_file: str | None = None     # MultiBench: the file to read when not the benchmark's own
    alignment: str | None = None       # MultiBench: text_start (default) | nonzero
    seeds: tuple[int, ...] | None = None
    set: dict = dataclasses.field(default_factory=dict)        # S3Config fields for every trial
    grid: dict = dataclasses.field(default_factory=dict)       # S3Config field -> values, replacing the preset's
    synthetic: dict = dataclasses.field(default_factory=dict)  # SyntheticConfig fields
    data_options: dict = dataclasses.field(default_factory=dict)  # other loader options (the benchmark's entry)
    epochs: int | None = None                                  # shortcut for set epochs_special
    num_samples: int | None = None
    seed_search: int = 0
    tracking_uri: str | None = None
    experiment: str | None = None
    report_dir: str = "report"
    storage_path: str | None = None
    resume: bool = False
    verbose: int = 1
    ray_address: str | None = None
    num_cpus: int | None = None
    num_gpus: int | None = None
    max_concurrent: int | None = None
    gpus_per_trial: float = 0.0
    executor: str = "auto"         # auto: direct for one-worker trials, train (Ray Train) for DDP
    workers_per_trial: int = 1
    cpus_per_worker: float | None = None
    max_failures: int = 2
    device: str = "auto"           # auto: cuda for a trial that holds a GPU, else cpu; cpu forces the CPU
    pending_timeout_s: float | None = None   # fail when trials wait for resources this long with none running
    stage_cache: bool = True       # reuse finished stages across trials (<storage>/stage-cache); --no-stage-cache
    order: str = "longest-first"   # the grid's queue: longest-first | grid (the preset's order); orchestrator/schedule.py


@dataclasses.dataclass(frozen=True)
class DataSettings:
    benchmarks: tuple[str, ...]
    data_dir: str | None
    modalities: tuple[str, ...] | None
    label_rule: str | None
    synthetic: dict                # the preset's synthetic overrides merged with the user's
    source_file: str | None = None
    alignment: str | None = None
    options: dict = dataclasses.field(default_factory=dict)   # other loader options (--data-option)

    def loader_options(self) -> dict:
        """The data options every benchmark of the grid is given (s3core.data.load_for_grid)."""
        return {"label_rule": self.label_rule, "source_file": self.source_file, "alignment": self.alignment,
                "synthetic": self.synthetic or None, **self.options}

    def load(self, name: str, data_dir: str | None = None):
        """Benchmark `name` as this grid loads it (the grid, resweep); data_dir: where its files are now."""
        return load_for_grid(name, data_dir=data_dir or self.data_dir, modalities=self.modalities,
                             options=self.loader_options())


@dataclasses.dataclass(frozen=True)
class ResourceRequest:
    """What the user asked for; `plan_execution` turns it into an Execution against a cluster."""

    executor: str
    gpus_per_trial: float
    workers_per_trial: int
    cpus_per_worker: float | None
    max_concurrent: int | None
    max_failures: int
    storage_path: str
    ray_address: str | None
    num_cpus: int | None
    num_gpus: int | None
    device: str = "auto"
    pending_timeout_s: float | None = None
    stage_cache: bool = True


@dataclasses.dataclass(frozen=True)
class TrackingSettings:
    uri: str
    experiment: str | None
    report_dir: str
    resume: bool
    verbose: int


@dataclasses.dataclass
class Execution:
    """The resources each trial really takes, and where its checkpoints go."""

    workers_per_trial: int
    cpus_per_worker: float
    gpus_per_worker: float
    max_concurrent: int
    storage_path: str
    max_failures: int
    scope: str = ""                # the MLflow parent run: scopes each trial's Ray Train run and checkpoints
    executor: str = "train"        # train | direct, as resolved from the request
    device: str = "cpu"            # what each trial computes on, as resolved from the request
    stage_cache: str = ""          # the stage cache's directory or URI ("" = off): s3core.stagecache
    stage_claims: str = ""         # "namespace/name" of the grid's claim broker (orchestrator.stage_claims)
    data_digests: dict = dataclasses.field(default_factory=dict)   # benchmark -> data_fingerprint

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


# ------------------------------------------------------------------------------------ studies

@dataclasses.dataclass(frozen=True)
class GridStudy:
    """A fixed list of trials (Tune's grid_search over them)."""

    benchmark: str
    trials: tuple[TrialSpec, ...]
    suffix: str = ""               # appended to Tune's experiment name

    def total(self) -> int:
        return len(self.trials)

    def todo(self, finished: dict) -> tuple[TrialSpec, ...]:
        """The trials not FINISHED yet. finished: trial key -> run."""
        return tuple(t for t in self.trials if t.key() not in finished)

    def describe(self, finished: dict) -> str:
        return f"{len(self.trials)} trials, {len(self.trials) - len(self.todo(finished))} already finished"


@dataclasses.dataclass(frozen=True)
class OptunaStudy:
    """num_samples trials drawn by Optuna TPE from a define-by-run space, for one (benchmark, seed)."""

    benchmark: str
    seed: int
    preset: str
    space: object                  # define-by-run fn(optuna trial) -> constants dict
    base: dict                     # S3Config overrides every sample starts from
    num_samples: int
    sampler_seed: int

    @property
    def suffix(self) -> str:
        return f"-seed{self.seed}"

    def total(self) -> int:
        return self.num_samples

    def finished_here(self, finished: dict) -> list:
        return [r for r in finished.values() if r.data.tags.get(L.TAG_SEED) == str(self.seed)]

    def describe(self, finished: dict) -> str:
        return f"Optuna study seed {self.seed}: {self.num_samples} samples, {len(self.finished_here(finished))} done"


def _check_grid(grid: dict) -> None:
    for name, values in grid.items():
        if not isinstance(values, (list, tuple)) or not values:
            raise GridError(f"grid field {name!r} needs a non-empty list of values, got {values!r}; "
                            f"write --grid {name}=[v1,v2]")


def grid_trials(preset: Preset, benchmarks, seeds, extra: dict, grid_override: dict | None = None) -> list[TrialSpec]:
    """The grid's trials: the primary method (s3) over the cross product of the grid; each baseline
    over the grid fields its registry entry sweeps (s3_no_select: chi), with the base config otherwise."""
    base = {**preset.base, **extra}
    grid = {**preset.grid, **(grid_override or {})}
    _check_grid(grid)
    trials = []
    primary = primary_method()
    for bench, seed in itertools.product(benchmarks, seeds):
        for method in (primary, *preset.baselines):
            sweeps = get_method(method).sweeps
            names = [n for n in grid if sweeps is None or n in sweeps]
            for values in itertools.product(*(grid[n] for n in names)):
                trials.append(TrialSpec(bench, method, seed, preset.name, {**base, **dict(zip(names, values))},
                                        label_fields=tuple(names) if method == primary else ()))
    return trials


def grid_id(preset_name: str, benchmarks, seeds, extra: dict, synthetic: dict, search_samples,
            data_fingerprints: dict | None = None) -> str:
    """Identifies a grid: the same flags on the same data give the same id (that is what --resume
    finds); other data (another synthetic label, another file) give another id, so MLflow runs of
    one never stand in for the other."""
    canon = json.dumps({"preset": preset_name, "benchmarks": list(benchmarks), "seeds": list(seeds),
                        "extra": extra, "synthetic": synthetic, "samples": search_samples,
                        "data": data_fingerprints or {}}, sort_keys=True, default=str)
    return hashlib.sha1(canon.encode()).hexdigest()[:12]


def data_fingerprint(bench) -> str:
    """A content hash of a Benchmark: every value of every split (s3core.data.base.content_digest),
    so a changed file is never taken for the old one."""
    return content_digest(bench)[:16]


# --------------------------------------------------------------------------------------- plan

@dataclasses.dataclass(frozen=True)
class Plan:
    preset: Preset
    studies: tuple                 # GridStudy | OptunaStudy, per benchmark in order
    data: DataSettings
    resources: ResourceRequest
    tracking: TrackingSettings
    seeds: tuple[int, ...]
    identity: dict                 # what names this grid besides its data (grid_id's arguments)

    def trials(self) -> list[TrialSpec]:
        return [t for s in self.studies if isinstance(s, GridStudy) for t in s.trials]

    def grid_id(self, data_fingerprints: dict) -> str:
        return grid_id(**self.identity, data_fingerprints=data_fingerprints)

    def studies_of(self, benchmark: str) -> list:
        return [s for s in self.studies if s.benchmark == benchmark]

    def optuna_storage(self) -> str | None:
        """Where Optuna studies are stored, so a resumed search keeps its history and
        `optuna-dashboard <url>` opens it: a SQLite file next to a SQLite MLflow store, else in a
        local storage path; None (in memory) for an MLflow server with remote storage."""
        store = L.sqlite_path(self.tracking.uri)
        if store is not None:
            return f"sqlite:///{store.parent / 'optuna.db'}"
        if "://" not in self.resources.storage_path:
            return f"sqlite:///{Path(self.resources.storage_path).resolve() / 'optuna.db'}"
        return None


def make_plan(preset: Preset, overrides: Overrides | None = None) -> Plan:
    """The preset with the user's overrides, every trial config validated. Pure: no Ray, no I/O."""
    o = overrides or Overrides()
    benchmarks = tuple(o.benchmarks or preset.benchmarks)
    seeds = tuple(preset.seeds if o.seeds is None else o.seeds)
    # --set / --grid values typed once, here (s3core.config.typed_changes): a value of the wrong
    # type fails now, naming its field; every trial's config is then validated below
    extra = typed_changes(dict(o.set))
    if o.epochs is not None:
        extra["epochs_special"] = o.epochs
    if preset.search is not None and o.grid:
        raise GridError(f"--grid does not apply to the {preset.name} preset, which samples with Optuna; "
                        "use --set for fixed values")
    if o.order not in ORDERS:
        raise GridError(f"unknown trial order {o.order!r}; choose one of {', '.join(ORDERS)}")
    if o.executor not in EXECUTORS:
        raise GridError(f"unknown executor {o.executor!r}; choose one of {', '.join(EXECUTORS)}")
    _check_grid(o.grid)
    grid = {name: [typed_changes({name: v})[name] for v in values] for name, values in o.grid.items()}
    base = {**preset.base, **extra}
    if preset.search is None:
        trials = grid_trials(preset, benchmarks, seeds, extra, grid)
        for t in trials:
            # as given (a bad --set fails even where a method overrides the field), then as the trial
            # will train it (a method's own changes, an InfoMax split, checked too)
            get_method(t.method).config(t.s3_config().validate()).validate()
        studies = tuple(GridStudy(b, tuple(order_trials([t for t in trials if t.benchmark == b], o.order)))
                        for b in benchmarks)
        num_samples = None
    else:
        TrialSpec(benchmarks[0], primary_method(), seeds[0], preset.name, base).s3_config().validate()
        num_samples = o.num_samples or preset.search.num_samples
        studies = tuple(OptunaStudy(b, s, preset.name, preset.search.space, base, num_samples, o.seed_search)
                        for b in benchmarks for s in seeds)
    synthetic = {**preset.synthetic, **o.synthetic}
    resources = ResourceRequest(o.executor, o.gpus_per_trial or 0.0, o.workers_per_trial, o.cpus_per_worker,
                                o.max_concurrent, o.max_failures,
                                o.storage_path or str(Path.cwd().resolve() / "s3_runs"), o.ray_address, o.num_cpus,
                                o.num_gpus, o.device, o.pending_timeout_s, o.stage_cache)
    if resources.device not in ("auto", "cpu", "cuda"):
        raise GridError(f"--device {resources.device!r}: choose auto, cpu or cuda")
    return Plan(preset=preset, studies=studies,
                data=DataSettings(benchmarks, o.data_dir, tuple(o.modalities) if o.modalities else None, o.label_rule,
                                  synthetic, o.source_file, o.alignment, dict(o.data_options)),
                resources=resources,
                tracking=TrackingSettings(o.tracking_uri or default_tracking_uri(), o.experiment, o.report_dir,
                                          o.resume, o.verbose),
                seeds=seeds,
                identity=dict(preset_name=preset.name, benchmarks=list(benchmarks), seeds=list(seeds),
                              extra={**extra, "__grid__": dict(o.grid)}, synthetic=synthetic,
                              search_samples=num_samples))


# ---------------------------------------------------------------------------------- resources

def _shape(cluster):
    """A ClusterShape (orchestrator.resources), or a resources dict read as a single node."""
    return cluster if isinstance(cluster, ClusterShape) else shape_from_totals(cluster)


def check_resources(execution: Execution, cluster) -> str:
    """Fail before any trial waits in PENDING forever: when no node type the cluster can provide
    (`cluster`: a ClusterShape, or a resources dict read as one node) could ever hold a trial.
    Returns a note when the shape is only partly known ('' otherwise)."""
    request = TrialRequest(execution.workers_per_trial, execution.cpus_per_worker, execution.gpus_per_worker)
    try:
        return check_request(_shape(cluster), request).note
    except ResourceError as err:
        raise GridError(str(err)) from None


def plan_execution(request: ResourceRequest, cluster) -> Execution:
    """Per-trial resources, fixed (never a share of the live cluster's CPUs, which counts the
    head's), and the trials at once that the cluster holds at its largest. `cluster`: a
    ClusterShape of the node types the cluster can provide (resources.discover_shape), or a
    resources dict (one node)."""
    shape = _shape(cluster)
    gpus = request.gpus_per_trial or 0.0
    if gpus > 1:
        if gpus != int(gpus):
            raise GridError(f"--gpus-per-trial {gpus:g}: above 1 it must be a whole number of GPUs "
                            "(one DDP worker each)")
        workers, gpus_per_worker = int(gpus), 1.0
    else:
        workers, gpus_per_worker = request.workers_per_trial, gpus
    if request.executor == "direct" and workers > 1:
        raise GridError(f"--executor direct runs each trial in a single process; use --executor train for "
                        f"{workers} workers per trial (DDP)")
    executor = request.executor if request.executor != "auto" else ("direct" if workers == 1 else "train")
    # the Train executor's Tune function holds a sliver of CPU besides its workers
    driver_cpus = TUNE_FUNCTION_CPUS if executor == "train" else 0.0
    cpus = request.cpus_per_worker or default_cpus_per_worker(shape, gpus_per_worker, driver_cpus)
    try:
        fit = check_request(shape, TrialRequest(workers, cpus, gpus_per_worker, driver_cpus))
    except ResourceError as err:
        raise GridError(str(err)) from None
    device = request.device if request.device != "auto" else ("cuda" if gpus_per_worker > 0 else "cpu")
    return Execution(workers, cpus, gpus_per_worker, request.max_concurrent or fit.concurrent, request.storage_path,
                     request.max_failures, executor=executor, device=device)


def is_uri(path: str) -> bool:
    return "://" in path


def join_uri(root: str, *parts: str) -> str:
    """`root`/parts for a path or a URI (a URI's query, e.g. ?endpoint_override=..., stays last)."""
    base, sep, query = root.partition("?")
    return "/".join([base.rstrip("/"), *parts]) + (sep + query if sep else "")


def stage_cache_dir(request: ResourceRequest) -> str:
    """Where the grid's stage results go: <storage>/stage-cache, shared by every trial and every
    later grid on the same storage (a path, or a URI such as s3://bucket/runs/stage-cache); "" (off)
    for --no-stage-cache."""
    if not request.stage_cache:
        return ""
    if is_uri(request.storage_path):
        return join_uri(request.storage_path, "stage-cache")
    return str(Path(request.storage_path).resolve() / "stage-cache")


def reuse_actors(executor: str) -> bool:
    """`direct` trials run in one Ray actor after another instead of a fresh process each, which
    saves the process start and the torch import (about 3 s a trial on 2 cores, bench section 4).
    Every direct trial asks for the same resources, which Tune's reuse requires. A trial that
    raises is not reused: Tune stops that actor. The Train executor gains nothing from it: its
    cost is the worker group each TorchTrainer starts."""
    return executor == "direct"
