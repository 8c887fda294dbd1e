"""Run Stage 3 again on a logged model: new keep-ratios (or another Stage-3 setting) without retraining.

    python -m orchestrator.resweep RUN_ID --keep-ratios 0.35 0.25 0.15
    python -m orchestrator.resweep RUN_ID --keep-ratios 0.5 --set probe_l2=[0.01] --tracking-uri sqlite:////abs/mlflow.db

The trial's run holds its trained model (``model/model.pt``) and its parent run the data settings
and the benchmark's content digest. The benchmark is loaded again with those settings (or from
--data-dir), checked against the digest, embedded at each new p and probed as in the grid; the new
curve points go to the same run at their own steps (a p the run already has is recomputed only
with --overwrite), the summary (p* on validation) is recomputed over the whole curve, and
``curve/curve.csv`` is rewritten. Exit codes: 0 done, 2 a one-line error naming the fix.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import torch
from mlflow.entities import Metric

from s3core.pipeline import model_from_state, summarize
from s3core.stages import sparsify
from s3core.tensors import to_tensors

from orchestrator import mlflow_layout as L
from orchestrator.cli import parse_assignments
from orchestrator.errors import ResweepError, user_errors
from orchestrator.plan import DataSettings, data_fingerprint


def _parent_settings(client, run) -> tuple[dict, str | None]:
    """The data settings logged on the trial's parent run, and the benchmark's digest there."""
    parent_id = run.data.tags.get(L.TAG_PARENT)
    if not parent_id:
        raise ResweepError(f"run {run.info.run_id} has no parent run; re-sweep a trial run of a grid")
    parent = client.get_run(parent_id)
    settings = {k[len("data."):]: v for k, v in parent.data.params.items() if k.startswith("data.")}
    digests = [d.dataset.digest for d in parent.inputs.dataset_inputs]
    return settings, digests[0] if digests else None


def _load_data(settings: dict, benchmark: str, data_dir: str | None):
    """The benchmark as the grid loaded it, from its parent run's logged data settings."""
    def value(key):
        raw = settings.get(key, "None")
        return None if raw == "None" else json.loads(raw) if raw[:1] in "[{" else raw

    data = DataSettings((benchmark,), value("data_dir"), value("modalities"), value("label_rule"),
                        value("synthetic") or {}, value("source_file"), value("alignment"), value("options") or {})
    return data.load(benchmark, data_dir)


def resweep(client, run_id: str, keep_ratios, *, data_dir: str | None = None, device: str = "cpu",
            changes: dict | None = None, overwrite: bool = False, printer=print) -> list[dict]:
    """Stage 3 at `keep_ratios` on the model logged in `run_id`; returns the run's whole new curve."""
    run = client.get_run(run_id)
    if run.info.status == "RUNNING":
        raise ResweepError(f"run {run_id} is RUNNING; wait for its grid to end (one writer per MLflow store)")
    with tempfile.TemporaryDirectory() as d:
        try:
            path = L.download_artifact(client, run_id, f"{L.MODEL_ARTIFACT_DIR}/{L.MODEL_FILE}", d)
        except Exception as err:  # MLflow raises several types for a missing artifact
            raise ResweepError(f"run {run_id} has no {L.MODEL_ARTIFACT_DIR}/{L.MODEL_FILE} ({type(err).__name__}); "
                               "only trials of a method with an encoder, run by this version, log their model") from None
        state = torch.load(path, map_location="cpu", weights_only=True)  # data only: never runs code
    model, cfg = model_from_state(state)
    settings, digest = _parent_settings(client, run)
    benchmark = run.data.tags.get(L.TAG_BENCHMARK) or run.data.params.get("benchmark")
    t0 = time.perf_counter()
    bench = _load_data(settings, benchmark, data_dir)
    if digest and data_fingerprint(bench) != digest[:16]:
        raise ResweepError(f"the {benchmark} data loaded now differ from the data run {run_id} was trained on "
                           "(content digest); pass the original files with --data-dir")
    printer(f"resweep: {benchmark} loaded in {time.perf_counter() - t0:.1f}s; Stage 3 at p = "
            + ", ".join(f"{p:g}" for p in keep_ratios), flush=True)
    old = L.read_curve(client, run_id)
    have = {L.curve_step(r[L.KEEP_RATIO_METRIC]) for r in old}
    todo = [p for p in keep_ratios if overwrite or L.curve_step(p) not in have]
    cfg = cfg.replace(keep_ratios=tuple(todo) or (1.0,), device=device, **(changes or {})).validate()
    model = model.to(device)
    new = sparsify(model, to_tensors(bench, device), cfg, progress=False) if todo else []
    by_step = {L.curve_step(r[L.KEEP_RATIO_METRIC]): r for r in old}
    by_step.update({L.curve_step(r[L.KEEP_RATIO_METRIC]): r for r in new})
    curve = [by_step[s] for s in sorted(by_step, reverse=True)]
    now = int(time.time() * 1000)
    metrics = [Metric(k, v, now, step) for k, v, step in L.curve_metrics(new)]
    metrics += [Metric(k, float(v), now, 0) for k, v in summarize(curve).items()]
    client.log_batch(run_id, metrics=metrics)
    with tempfile.TemporaryDirectory() as d:
        with open(os.path.join(d, "curve.csv"), "w") as f:
            f.write(L.curve_csv(curve))
        client.log_artifacts(run_id, d, artifact_path=L.CURVE_ARTIFACT_DIR)
    printer(f"resweep: {len(new)} new point(s) logged to run {run_id}; p* on validation is now "
            f"{summarize(curve)['best_keep_ratio']:g}", flush=True)
    return curve


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m orchestrator.resweep", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("run_id", help="an MLflow trial run (a child run of a grid)")
    p.add_argument("--keep-ratios", nargs="+", type=float, required=True, help="the p to evaluate")
    p.add_argument("--tracking-uri", default=L.default_tracking_uri(), help="the MLflow store the run is in")
    p.add_argument("--data-dir", default=None, help="where the benchmark's files are now (default: as logged)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--set", nargs="+", default=[], metavar="FIELD=VALUE",
                   help="other Stage-3 config fields, e.g. probe_l2=[0.01] eval_batch_size=512")
    p.add_argument("--overwrite", action="store_true", help="recompute a p the run already has")
    args = p.parse_args(argv)
    from orchestrator.grid import connect_mlflow   # grid loads Ray (its progress view): not for --help

    with user_errors():
        try:
            changes = parse_assignments(args.set)
        except ValueError as err:
            raise ResweepError(f"--set: {err}") from None
        resweep(connect_mlflow(args.tracking_uri), args.run_id, args.keep_ratios, data_dir=args.data_dir,
                device=args.device, changes=changes, overwrite=args.overwrite)
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
