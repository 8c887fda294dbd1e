"""The two ways a trial runs; each supplies only how to report and where its checkpoint is, and
both run contract.run_trial_body, so they behave the same on finish, failure and resume.

- `train` (Ray Train): the Tune function (a sliver of CPU) drives one TorchTrainer whose workers
  run the body; every report carries a checkpoint (rank 0's), `TuneReportCallback` forwards them
  to Tune, and Ray Train's FailureConfig restarts killed workers from the latest checkpoint. A
  controller and a worker group per trial: right for DDP over several GPUs.
- `direct`: the Tune function runs the body itself with `ray.tune.report(..., checkpoint=)` and
  resumes from `ray.tune.get_checkpoint()` when Tune's FailureConfig restarts it. No worker group;
  Tune reuses the actor for the next trial (plan.reuse_actors), so a trial after the first pays no
  process start and no imports; run_trial seeds everything per trial, so a reused process gives
  the same result as a fresh one.
"""
from __future__ import annotations

import tempfile

import ray
import ray.train
import torch
from ray import tune
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from s3core.config import ConfigError, check_device

from orchestrator.contract import (ApplicationError, DoneReport, FailedReport, FinalReport, Report, TrialSpec,
                                   failure_text, resume_state, run_trial_body, worker_threads,
                                   write_checkpoint_state)


def _with_checkpoint(report_fn, report: Report, state: dict, checkpoint_cls) -> None:
    with tempfile.TemporaryDirectory() as d:
        write_checkpoint_state(d, state)
        report_fn(report.encode(), checkpoint=checkpoint_cls.from_directory(d))


# ------------------------------------------------------------------------------- Ray Train

class TrainWorkerExecutor:
    """On each Ray Train worker: every rank reports, rank 0 attaches the checkpoint."""

    def __init__(self):
        self.train = ray.train
        self.rank = ray.train.get_context().get_world_rank()

    def checkpoint(self) -> dict | None:
        return resume_state(self.train.get_checkpoint())

    def report(self, report: Report, state: dict) -> None:
        if self.rank != 0:
            self.train.report(report.encode())
            return
        _with_checkpoint(self.train.report, report, state, self.train.Checkpoint)

    def finish(self, final: FinalReport, state: dict) -> None:
        # the final report carries a checkpoint: Train's Result.metrics are those of the latest checkpoint
        self.report(final, state)

    def fail(self, failed: FailedReport, state: dict) -> None:
        # reported, not raised: Ray Train would retry a raise max_failures times for nothing;
        # tune_trial raises ApplicationError from it, once
        self.report(failed, state)


def train_loop_per_worker(config: dict) -> None:
    """Runs on every Ray Train worker. config: {"spec": TrialSpec dict, "data_ref": [ObjectRef], ...}."""

    spec = TrialSpec.from_config(config)
    # the planned device, never a silent fallback: run_trial_body probes it and fails in one line
    device = str(ray.train.torch.get_device()) if config["device"] == "cuda" and torch.cuda.is_available() \
        else config["device"]
    torch.set_num_threads(config["threads"])
    bench = ray.get(config["data_ref"][0])       # zero-copy from this node's object store
    run_trial_body(spec, bench, device, TrainWorkerExecutor(), config.get("execution"))


def probe_device(device: str) -> str | None:
    """Runs where a Train worker would: None if torch can use `device` there, else the one-line reason."""
    try:
        check_device(device, probe=True)
    except ConfigError as err:
        return failure_text(err)
    return None


def check_worker_device(execution: dict) -> None:
    """A GPU that torch cannot use fails the trial here, in one line, before TorchTrainer sets up
    its NCCL process group (which, on a node whose torch has no CUDA, fails in a long traceback or
    leaves the trial hanging). One probe task on a node with the workers' GPU share."""
    if execution["gpus_per_worker"] <= 0 or execution["device"] == "cpu":
        return   # fake GPUs with computation forced to the CPU (the simulated cluster) need no probe

    # outside the trial's own placement group (a sliver of CPU), as the trainer's workers are
    probe = ray.remote(num_cpus=0, num_gpus=execution["gpus_per_worker"], max_retries=0)(probe_device).options(
        scheduling_strategy=PlacementGroupSchedulingStrategy(placement_group=None))
    reason = ray.get(probe.remote(execution["device"]))
    if reason is not None:
        raise ApplicationError(reason)


def tune_trial(config: dict, data_refs: dict | None = None) -> None:
    """The Tune function of the `train` executor: one TorchTrainer per trial. Registered with a
    sliver of CPU, because the trainer's workers hold the real resources."""
    # Ray Train's torch backend and its Tune bridge: loaded by the train executor only
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    spec = TrialSpec.from_config(config)
    execution = data_refs["execution"]
    use_gpu = execution["gpus_per_worker"] > 0
    check_worker_device(execution)
    per_worker = {"CPU": execution["cpus_per_worker"]}
    if use_gpu:
        per_worker["GPU"] = execution["gpus_per_worker"]
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"spec": spec.to_dict(), "data_ref": data_refs["data"][spec.benchmark],
                           "use_gpu": use_gpu, "threads": worker_threads(execution["cpus_per_worker"]),
                           "device": execution["device"], "execution": execution},
        scaling_config=ray.train.ScalingConfig(num_workers=execution["workers_per_trial"], use_gpu=use_gpu,
                                               resources_per_worker=per_worker),
        run_config=ray.train.RunConfig(
            # scoped to this grid run (its MLflow parent): other data, other code or a fresh start
            # without --resume never finds this checkpoint
            name=f"trial-{execution['scope']}-{spec.key()}", storage_path=execution["storage_path"],
            callbacks=[TuneReportCallback()],
            failure_config=ray.train.FailureConfig(max_failures=execution["max_failures"]),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
        ),
    )
    result = trainer.fit()
    if result.error is not None:
        raise result.error
    report = Report.decode(dict(result.metrics or {}))
    if isinstance(report, FailedReport):
        raise ApplicationError(report.reason)
    if not isinstance(report, FinalReport):
        raise RuntimeError(f"trial {spec.short()} ended without its final curve")
    # the trainer's final checkpoint (with the trained model) goes with the trial's last report
    tune.report(DoneReport.of(report).encode(), checkpoint=result.checkpoint)


# ---------------------------------------------------------------------------------- direct

class DirectExecutor:
    """In the Tune function itself: reports go to Tune with a Tune checkpoint."""

    def __init__(self):
        self.tune = tune

    def checkpoint(self) -> dict | None:
        return resume_state(self.tune.get_checkpoint())

    def report(self, report: Report, state: dict) -> None:
        _with_checkpoint(self.tune.report, report, state, self.tune.Checkpoint)

    def finish(self, final: FinalReport, state: dict) -> None:
        self.report(DoneReport.of(final), state)

    def fail(self, failed: FailedReport, state: dict) -> None:
        # the checkpoint remembers the failure, so Tune's retry fails again at once
        self.report(failed, state)
        raise ApplicationError(failed.reason)


def tune_trial_direct(config: dict, data_refs: dict | None = None) -> None:

    spec = TrialSpec.from_config(config)
    execution = data_refs["execution"]
    torch.set_num_threads(worker_threads(execution["cpus_per_worker"]))
    bench = ray.get(data_refs["data"][spec.benchmark][0])
    run_trial_body(spec, bench, execution["device"], DirectExecutor(), execution)


TRAINABLES = {"train": tune_trial, "direct": tune_trial_direct}
