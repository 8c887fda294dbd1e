"""Section 4: orchestration overhead and throughput.

The same trials three ways: in this process through s3core (sequential, the reference), and
through `run_grid.py` with each executor (Ray Train worker group per trial, or `direct`), one trial
at a time and two at a time. Every run_grid invocation is a fresh process, as a user runs it, so
its wall time includes Python/Ray/MLflow start-up and the report; a `--resume` of the finished
grid (nothing left to run) measures that fixed part alone.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time

from orchestrator.cli import build_parser, overrides_from_args
from orchestrator.plan import make_plan
from s3core.pipeline import run_trial
from search_spaces import load_preset

from .common import REPO_ROOT

PENDING = "pending: needs the orchestrator"

# quick: the smoke preset as is (2 tiny trials). full: 4 trials of the synthetic default's size.
WORKLOADS = {
    "quick": {"args": ["--preset", "smoke"], "label": "smoke preset (2 trials: S3 chi=2, CLIP)"},
    "full": {"args": ["--preset", "smoke", "--grid", "chi=[2,4,8]",
                      "--synthetic", "n_train=2000", "n_valid=500", "n_test=500", "seq_len=8",
                      "--set", "d_model=64", "d_ff=256", "proj_dim=64", "n_heads=4", "epochs_special=4",
                      "epochs_select=2", "probe_l2=[0.0001,0.001,0.01,0.1]"],
             "label": "4 trials (S3 chi=2/4/8 + CLIP) on the synthetic default size"},
}


def _in_process(workload_args: list[str]) -> tuple[float, int]:
    """The grid's trials run one after another in this process, through s3core only."""

    args = build_parser().parse_args(workload_args)
    plan = make_plan(load_preset(args.preset), overrides_from_args(args))
    t0 = time.perf_counter()
    bench = plan.data.load("synthetic")
    trials = plan.trials()
    for spec in trials:
        run_trial(bench, spec.s3_config(), spec.method, progress=False)
    return time.perf_counter() - t0, len(trials)


def _run_grid(workdir: str, workload_args: list[str], extra: list[str]) -> float:
    cmd = [sys.executable, os.path.join(REPO_ROOT, "run_grid.py"), "--num-cpus", "2", "--verbose", "0",
           "--tracking-uri", f"sqlite:///{os.path.join(workdir, 'mlflow.db')}",
           "--storage-path", os.path.join(workdir, "runs"), "--report-dir", os.path.join(workdir, "report"),
           *workload_args, *extra]
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI")}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, env=env, timeout=1800)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"run_grid {' '.join(extra)} failed: {proc.stderr.strip()[-1500:]}")
    return wall


def bench_orchestration(quick: bool = False, profile: str | None = None) -> dict:
    if profile == "tiny":
        return {"pending": "not run in the tiny profile (it starts Ray several times; see --quick)"}
    work = WORKLOADS["quick" if quick else "full"]
    # the reference runs before and after the run_grid runs; their mean is the denominator, so a
    # slow phase of this shared machine weighs on both sides
    ref_before, n_trials = _in_process(work["args"])
    runs = {}  # (executor, concurrent) -> (wall seconds, fixed start-up + report seconds)
    for executor in ("train", "direct"):
        for concurrent in (1, 2):
            d = tempfile.mkdtemp(prefix="s3bench-orch-")
            try:
                flags = ["--executor", executor, "--max-concurrent", str(concurrent)]
                runs[executor, concurrent] = (_run_grid(d, work["args"], flags),
                                              _run_grid(d, work["args"], [*flags, "--resume"]))
            finally:
                shutil.rmtree(d, ignore_errors=True)
    ref_after, _ = _in_process(work["args"])
    ref = (ref_before + ref_after) / 2

    rows = [{"what": f"in-process s3core, sequential ({n_trials} trials): mean of a run before "
                     f"({ref_before:.1f} s) and after ({ref_after:.1f} s) the run_grid runs", "seconds": ref}]
    for (executor, concurrent), (wall, fixed) in runs.items():
        rows.append({"what": f"run_grid --executor {executor}, {concurrent} at a time: wall", "seconds": wall})
        rows.append({"what": f"  same, less the fixed start-up + report ({fixed:.1f} s, from a --resume with "
                             "nothing left to run)", "seconds": wall - fixed})
    for r in rows:
        r["ratio"] = r["seconds"] / ref

    notes = []
    for executor in ("train", "direct"):
        seq_ratio = (runs[executor, 1][0] - runs[executor, 1][1]) / ref
        speedup = ref / (runs[executor, 2][0] - runs[executor, 2][1])
        notes.append(f"{executor}: sequential overhead {seq_ratio:.2f}x the in-process time without start-up "
                     f"(target <= 1.15: {'met' if seq_ratio <= 1.15 else 'missed'}); 2 at a time vs in-process "
                     f"sequential: {speedup:.2f}x speed-up (target >= 1.6: {'met' if speedup >= 1.6 else 'missed'}).")
    notes.append("`--executor direct` reuses one Ray actor for trial after trial (Tune's reuse_actors), "
                 "so it starts no process and imports nothing per trial.")
    notes.append(f"Workload: {work['label']}. Every run_grid wall time includes a fresh Python process, Ray start-up, "
                 "MLflow and the report; the net rows subtract the wall time of a --resume of the same finished grid.")
    return {"rows": rows, "notes": notes, "workload": work["label"]}
