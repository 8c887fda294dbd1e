"""One trial = one config run through s3core inside Ray Train, driven by a Ray Tune function.

Tune function (a sliver of CPU) -> TorchTrainer(num_workers, use_gpu, resources_per_worker)
-> `train_loop_per_worker` on each worker: fetch the benchmark from the object store (once per
node), run s3core's stages, `ray.train.report` every epoch with a checkpoint (model, optimizer,
stage, epoch, history, RNG), then the final curve. `TuneReportCallback` forwards every report to
Tune, where the driver's MLflow callback (the only MLflow writer) logs it.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile

import torch

from s3core.config import S3Config

CHECKPOINT_FILE = "state.pt"
SPEC_KEYS = ("benchmark", "method", "seed", "preset", "overrides")


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


class ApplicationError(RuntimeError):
    """A trial stopped by a deterministic error of its own (DivergenceError, ConfigError, DataError):
    reported once by the worker instead of being retried by Ray Train's FailureConfig."""


def application_error_types() -> tuple[type, ...]:
    """Errors a retry from the last checkpoint would only repeat; FailureConfig retries the rest
    (a killed worker, a lost node)."""
    from s3core.config import ConfigError
    from s3core.data.base import DataError
    from s3core.stages import DivergenceError
    return (DivergenceError, ConfigError, DataError)


def epoch_result(ev) -> dict:
    """What both executors report after every epoch (the driver's MLflow logger logs it)."""
    metrics = {"kind": "epoch", "stage": ev.stage, "stage_epoch": ev.epoch,
               "global_epoch": len(ev.history) - 1, **ev.metrics}
    metrics["objective"] = metrics.get("valid_acc", 0.0)
    return metrics


def final_result(result, kind: str) -> dict:
    """What both executors report at the end: the curve, the summary, the Tune objective."""
    final = {"kind": kind, "curve_json": json.dumps(result.curve), "history_len": len(result.history),
             "trial_seconds": result.seconds, **result.summary}
    final["objective"] = result.summary["best_valid_acc"]
    return final


def failure_text(err: BaseException) -> str:
    return f"{type(err).__name__}: {' '.join(str(err).split())}"[:2000]


def load_checkpoint_state(directory: str) -> dict:
    # weights_only: a checkpoint is data; loading one must never run code
    return torch.load(os.path.join(directory, CHECKPOINT_FILE), map_location="cpu", weights_only=True)


def write_checkpoint_state(directory: str, state: dict) -> None:
    """Save under a temporary name, then rename: a checkpoint directory never holds half a file."""
    tmp = os.path.join(directory, CHECKPOINT_FILE + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, os.path.join(directory, CHECKPOINT_FILE))


def resume_state(checkpoint) -> dict | None:
    """The state saved in a Ray (Train or Tune) checkpoint, or None when there is none."""
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as d:
        return load_checkpoint_state(d)


def worker_threads(execution: dict) -> int:
    """torch threads for a worker given its CPU share (1.98 CPUs -> 2 threads; Ray itself sets
    OMP_NUM_THREADS=1 for fractional CPUs)."""
    return max(1, round(execution["cpus_per_worker"]))


def train_loop_per_worker(config: dict) -> None:
    """Runs on every Ray Train worker. config: {"spec": TrialSpec dict, "data_ref": [ObjectRef]}."""
    import ray
    import ray.train
    from ray.train import Checkpoint

    from s3core.pipeline import checkpoint_state, run_trial

    spec = TrialSpec.from_config(config)
    ctx = ray.train.get_context()
    rank = ctx.get_world_rank()
    device = "cpu"
    if torch.cuda.is_available() and config.get("use_gpu"):
        device = str(ray.train.torch.get_device())
    cfg = spec.s3_config(device=device)
    if config.get("threads"):
        torch.set_num_threads(config["threads"])
    bench = ray.get(config["data_ref"][0])       # zero-copy from this node's object store

    resume = resume_state(ray.train.get_checkpoint())

    def report(metrics: dict, state: dict) -> None:
        """Every worker reports; rank 0 attaches the checkpoint."""
        if rank != 0:
            ray.train.report(metrics)
            return
        with tempfile.TemporaryDirectory() as d:
            write_checkpoint_state(d, state)
            ray.train.report(metrics, checkpoint=Checkpoint.from_directory(d))

    if resume is not None and "final" in resume:
        report(resume["final"], resume)  # finished before the restart: report again, compute nothing
        return
    if resume is not None and "failed" in resume:
        report(resume["failed"], resume)  # failed deterministically before the restart: fail again
        return

    def on_epoch(ev):
        report(epoch_result(ev), checkpoint_state(ev))

    try:
        result = run_trial(bench, cfg, spec.method, on_epoch=on_epoch, resume=resume, progress=False)
    except application_error_types() as err:
        # Deterministic (same config, same seed, same checkpoint -> same error): Ray Train's
        # FailureConfig would retry it max_failures times for nothing. Report it as the trial's
        # last result instead; tune_trial raises ApplicationError from it, once.
        failed = {"kind": "failed", "reason": failure_text(err)}
        report(failed, {"failed": failed})
        return
    final = final_result(result, "final")
    # the final report carries a checkpoint: Train's Result.metrics are those of the latest checkpoint
    report(final, {"final": final})


def tune_trial(config: dict, data_refs: dict | None = None) -> None:
    """The Tune function: one TorchTrainer per trial. Registered with a sliver of CPU, because
    the trainer's workers hold the real resources."""
    import ray.train
    from ray import tune
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    spec = TrialSpec.from_config(config)
    execution = data_refs["execution"]
    use_gpu = execution["gpus_per_worker"] > 0
    per_worker = {"CPU": execution["cpus_per_worker"]}
    if use_gpu:
        per_worker["GPU"] = execution["gpus_per_worker"]
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"spec": spec.to_dict(), "data_ref": data_refs["data"][spec.benchmark],
                           "use_gpu": use_gpu, "threads": worker_threads(execution)},
        scaling_config=ray.train.ScalingConfig(num_workers=execution["workers_per_trial"], use_gpu=use_gpu,
                                               resources_per_worker=per_worker),
        run_config=ray.train.RunConfig(
            # scoped by the grid id: a trial of the same config on other data must not find this checkpoint
            name=f"trial-{execution['grid_id']}-{spec.key()}", storage_path=execution["storage_path"],
            callbacks=[TuneReportCallback()],
            failure_config=ray.train.FailureConfig(max_failures=execution["max_failures"]),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
        ),
    )
    result = trainer.fit()
    if result.error is not None:
        raise result.error
    final = dict(result.metrics or {})
    if final.get("kind") == "failed":
        raise ApplicationError(final.get("reason", "application error"))
    if final.get("kind") != "final":
        raise RuntimeError(f"trial {spec.short()} ended without its final curve")
    tune.report({**final, "kind": "done"})
