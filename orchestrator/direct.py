"""`--executor direct`: a trial runs inside its Tune function, without a Ray Train worker group.

Ray Train starts a controller and a worker group per trial (about 15-20 s on a 2-core machine,
bench/RESULTS.md section 4): right for DDP over several GPUs, heavy for the many small
single-device trials of a grid. Here the Tune function itself runs s3core, reports every epoch
with `ray.tune.report(..., checkpoint=ray.tune.Checkpoint)`, and resumes from
`ray.tune.get_checkpoint()` when Tune's FailureConfig restarts it. The MLflow side is the same.
Tune reuses the actor for the next trial (grid.reuse_actors), so a trial after the first pays
no process start and no imports; run_trial seeds everything per trial, so a reused process gives
the same result as a fresh one (tests/s3core/test_stages.py).
"""
from __future__ import annotations

import tempfile

import torch

from orchestrator.trial import (TrialSpec, application_error_types, epoch_result, failure_text, final_result,
                                resume_state, worker_threads, write_checkpoint_state)


def tune_trial_direct(config: dict, data_refs: dict | None = None) -> None:
    import ray
    from ray import tune

    from s3core.pipeline import checkpoint_state, run_trial

    spec = TrialSpec.from_config(config)
    execution = data_refs["execution"]
    torch.set_num_threads(worker_threads(execution))
    device = "cuda" if execution["gpus_per_worker"] > 0 and torch.cuda.is_available() else "cpu"
    cfg = spec.s3_config(device=device)
    bench = ray.get(data_refs["data"][spec.benchmark][0])

    def report(metrics: dict, state: dict) -> None:
        with tempfile.TemporaryDirectory() as d:
            write_checkpoint_state(d, state)
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(d))

    resume = resume_state(tune.get_checkpoint())
    if resume is not None and "final" in resume:
        tune.report({**resume["final"], "kind": "done"})
        return
    if resume is not None and "failed" in resume:
        raise RuntimeError(resume["failed"]["reason"])

    def on_epoch(ev):
        report(epoch_result(ev), checkpoint_state(ev))

    try:
        result = run_trial(bench, cfg, spec.method, on_epoch=on_epoch, resume=resume, progress=False)
    except application_error_types() as err:
        # deterministic: a retry would only repeat it, so the checkpoint remembers the failure
        reason = failure_text(err)
        report({"kind": "failed", "reason": reason}, {"failed": {"reason": reason}})
        raise
    final = final_result(result, "done")
    report(final, {"final": final})
