"""The trial contract, the ground floor of the orchestrator: what a trial is, what it reports,
how its checkpoint is stored, and the one trial body both executors run.

A trial reports typed messages across the Ray boundary; each encodes itself into the flat dict
that `ray.train.report` / `ray.tune.report` take (its fields travel as one JSON payload, so Tune's
own keys never mix with ours) and decodes back exactly:
- EpochReport after every training epoch (stage, epoch, s3core's metrics for it);
- FinalReport when Stage 3 is done (curve, summary, seconds); DoneReport is the same message
  re-emitted by the trial's Tune function, the one the MLflow logger logs (a Ray Train worker's
  FinalReport also reaches Tune through TuneReportCallback and must not be logged twice);
- FailedReport for a deterministic error of the trial's own (DivergenceError, ConfigError,
  DataError): retrying from the last checkpoint would only repeat it.

`run_trial_body` is the trial itself, parameterised by an `Executor` that only says how to
report and where the checkpoint is (executors.py: Ray Train workers or the Tune function).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from typing import ClassVar, Protocol

import torch

from s3core.atomic import atomic_file
from s3core.config import ConfigError, S3Config, check_device
from s3core.data.base import DataError
from s3core.methods import get_method
from s3core.pipeline import checkpoint_state, run_trial, trained_model_state
from s3core.stagecache import StageCache
from s3core.stages import DivergenceError

from orchestrator.stage_claims import claims_of

CHECKPOINT_FILE = "state.pt"
TRAINED_MODEL_KEY = "trained_model"   # in a finished trial's checkpoint: s3core.pipeline.trained_model_state
EXPERTS_KEY = "expert_analysis_npz"   # and its expert analysis: ExpertAnalysis.to_bytes() as a uint8 tensor


class ApplicationError(RuntimeError):
    """A trial stopped by a deterministic error of its own: reported once, never retried."""


@dataclasses.dataclass(frozen=True)
class TrialSpec:
    """What identifies a trial. `overrides` are S3Config fields (chi, batch_size, lambda_*...)."""

    benchmark: str
    method: str
    seed: int
    preset: str
    overrides: dict
    label_fields: tuple = ()       # fields shown in run names (the grid's or Optuna's); not in the key

    @classmethod
    def from_config(cls, config: dict) -> "TrialSpec":
        """From a grid entry ({"spec": {...}}) or a flat Optuna sample (fields at the top level)."""
        if "spec" in config:
            spec = dict(config["spec"])
            spec["label_fields"] = tuple(spec.get("label_fields", ()))
            return cls(**spec)
        flat = dict(config)
        base = {k: flat.pop(k) for k in ("benchmark", "method", "seed", "preset")}
        flat.pop("overrides", None)
        extra = config.get("overrides", {})
        return cls(**base, overrides={**extra, **flat}, label_fields=tuple(sorted(flat)))

    def s3_config(self, device: str = "cpu") -> S3Config:
        return S3Config().replace(**self.overrides, seed=int(self.seed), device=device)

    def key(self) -> str:
        """Stable across processes and runs: the resume key, stored as the MLflow tag s3.trial_key."""
        ident = {k: v for k, v in dataclasses.asdict(self).items() if k != "label_fields"}
        canon = json.dumps(ident, sort_keys=True, default=str)
        return hashlib.sha1(canon.encode()).hexdigest()[:16]

    def short(self) -> str:
        """A readable run name: method, benchmark, the fields this trial's grid varies, seed."""
        o = self.overrides
        fields = dict.fromkeys(("chi", "batch_size", *self.label_fields))
        parts = [self.method, self.benchmark] + [f"{k}={o[k]}" for k in fields if k in o]
        return " ".join(parts + [f"seed={self.seed}"])

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# ----------------------------------------------------------------------------------- reports

_KINDS: dict[str, type] = {}


@dataclasses.dataclass(frozen=True)
class Report:
    kind: ClassVar[str] = ""

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        _KINDS[cls.kind] = cls

    def objective(self) -> float:
        """Tune's metric (the searcher maximises it); 0.0 where a report has none."""
        return 0.0

    def encode(self) -> dict:
        return {"kind": self.kind, "objective": self.objective(),
                "payload": json.dumps(dataclasses.asdict(self), allow_nan=True)}

    @staticmethod
    def decode(result: dict) -> "Report | None":
        """The report inside a Tune/Train result dict; None for a result that carries none."""
        cls = _KINDS.get(result.get("kind"))
        if cls is None or "payload" not in result:
            return None
        return cls(**json.loads(result["payload"]))


@dataclasses.dataclass(frozen=True)
class EpochReport(Report):
    kind: ClassVar[str] = "epoch"
    stage: str
    stage_epoch: int               # 0-based, within the stage
    global_epoch: int              # 0-based over the trial's stages: the MLflow step
    metrics: dict                  # every number s3core reported for this epoch (losses, valid_acc...)

    def objective(self) -> float:
        return float(self.metrics.get("valid_acc", 0.0))


@dataclasses.dataclass(frozen=True)
class FinalReport(Report):
    kind: ClassVar[str] = "final"
    curve: list                    # one dict per p (s3core.stages.sparsify)
    summary: dict                  # s3core.pipeline.SUMMARY_METRICS
    seconds: float
    history_len: int
    device: str = "cpu"            # the device the trial really ran on
    stage_cache: list = dataclasses.field(default_factory=list)   # per stage: s3core StageCache.events
    experts: dict = dataclasses.field(default_factory=dict)  # ExpertAnalysis.to_metrics(); {} without experts

    def objective(self) -> float:
        return float(self.summary["best_valid_acc"])


@dataclasses.dataclass(frozen=True)
class DoneReport(FinalReport):
    kind: ClassVar[str] = "done"

    @classmethod
    def of(cls, final: FinalReport) -> "DoneReport":
        return cls(**dataclasses.asdict(final))


@dataclasses.dataclass(frozen=True)
class FailedReport(Report):
    kind: ClassVar[str] = "failed"
    reason: str


def failure_text(err: BaseException) -> str:
    return f"{type(err).__name__}: {' '.join(str(err).split())}"[:2000]


def application_error_types() -> tuple[type, ...]:
    """Errors a retry from the last checkpoint would only repeat; Ray retries the rest (a killed
    worker, a lost node)."""
    return (DivergenceError, ConfigError, DataError)


# -------------------------------------------------------------------------------- checkpoints

def load_checkpoint_state(directory: str) -> dict:
    # weights_only: a checkpoint is data; loading one must never run code
    return torch.load(os.path.join(directory, CHECKPOINT_FILE), map_location="cpu", weights_only=True)


def write_checkpoint_state(directory: str, state: dict) -> None:
    """Save under a temporary name, then rename: a checkpoint directory never holds half a file,
    and a save that fails leaves no temporary file behind either."""
    with atomic_file(os.path.join(directory, CHECKPOINT_FILE)) as handle:
        torch.save(state, handle)


def resume_state(checkpoint) -> dict | None:
    """The state saved in a Ray (Train or Tune) checkpoint, or None when there is none."""
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as d:
        return load_checkpoint_state(d)


def worker_threads(cpus_per_worker: float) -> int:
    """torch threads for a worker given its CPU share (1.98 CPUs -> 2 threads; Ray itself sets
    OMP_NUM_THREADS=1 for fractional CPUs)."""
    return max(1, round(cpus_per_worker))


# ------------------------------------------------------------------------------- trial body

class Executor(Protocol):
    """What an executor supplies to the trial body: how to report and where the checkpoint is."""

    def checkpoint(self) -> dict | None:
        """The state of the trial's latest checkpoint, None on a first start."""

    def report(self, report: Report, state: dict) -> None:
        """Report `report` with `state` as the new checkpoint."""

    def finish(self, final: FinalReport, state: dict) -> None:
        """The trial's last report on success."""

    def fail(self, failed: FailedReport, state: dict) -> None:
        """The trial's last report on a deterministic failure; may raise ApplicationError."""


def stage_cache_for(spec: TrialSpec, execution: dict | None):
    """The trial's s3core StageCache, from the execution settings (None when the grid runs without:
    --no-stage-cache), with the claims of the grid's broker that every node sees."""
    if not execution or not execution.get("stage_cache"):
        return None
    return StageCache(execution["stage_cache"], execution["data_digests"][spec.benchmark],
                      producer={"trial_key": spec.key(), "trial": spec.short(), "parent_run": execution.get("scope", "")},
                      claims=claims_of(execution.get("stage_claims", "")))


def run_trial_body(spec: TrialSpec, bench, device: str, executor: Executor, execution: dict | None = None) -> None:
    """One trial, the same for every executor: resume from the checkpoint (a finished or failed
    trial reports its end again and computes nothing), run s3core's stages with a checkpoint and
    an EpochReport after every epoch (a stage found in the grid's stage cache is loaded, not
    trained: s3core.stagecache), then finish with the curve or fail once."""
    resume = executor.checkpoint()
    if resume is not None and "final" in resume:
        executor.finish(FinalReport(**resume["final"]), resume)
        return
    if resume is not None and "failed" in resume:
        executor.fail(FailedReport(**resume["failed"]), resume)
        return

    def on_epoch(ev) -> None:
        report = EpochReport(ev.stage, ev.epoch, len(ev.history) - 1,
                             {k: float(v) for k, v in ev.metrics.items() if isinstance(v, (int, float))})
        executor.report(report, checkpoint_state(ev))

    try:
        # a GPU that torch lists but cannot use fails here, in one line, not deep in a training step
        check_device(device, probe=True)
        cache = stage_cache_for(spec, execution)
        result = run_trial(bench, spec.s3_config(device=device), spec.method, on_epoch=on_epoch, resume=resume,
                           progress=False, stage_cache=cache)
    except application_error_types() as err:
        failed = FailedReport(failure_text(err))
        executor.fail(failed, {"failed": dataclasses.asdict(failed)})
        return
    experts = result.experts.to_metrics() if result.experts is not None else {}
    final = FinalReport(result.curve, result.summary, result.seconds, len(result.history), device,
                        list(cache.events) if cache is not None else [], experts)
    state = {"final": dataclasses.asdict(final)}
    if result.experts is not None:
        # the arrays travel in the final checkpoint (a tensor loads with weights_only); the driver logs them
        state[EXPERTS_KEY] = torch.frombuffer(bytearray(result.experts.to_bytes()), dtype=torch.uint8)
    if result.model is not None:
        # the trained model travels in the final checkpoint; the driver logs it as the run's
        # model artifact, so Stage 3 can run again on it (orchestrator.resweep) without retraining
        trained_cfg = get_method(spec.method).config(spec.s3_config(device=device))
        state[TRAINED_MODEL_KEY] = trained_model_state(result.model.cpu(), bench, trained_cfg, spec.method)
    executor.finish(final, state)


__all__ = ["TRAINED_MODEL_KEY", "EXPERTS_KEY", "TrialSpec", "Report", "EpochReport", "FinalReport", "DoneReport", "FailedReport", "ApplicationError",
           "CHECKPOINT_FILE", "load_checkpoint_state", "write_checkpoint_state", "resume_state", "worker_threads",
           "run_trial_body", "Executor", "failure_text", "application_error_types"]
