"""Section `queue`: 2 trials at a time, the grid's order against longest first (issue 12.2).

The 4-trial workload of section 4 (S3 at chi 2, 4, 8 and CLIP on the synthetic default size)
runs through `run_grid.py --executor direct --max-concurrent 2` with `--order grid` and with
`--order longest-first`, alternating, `rounds` times each; each run is a fresh process in a fresh
folder, and a `--resume` of it (nothing left to run) measures its fixed start-up + report part.
The reference is the same trials one after another in this process through s3core (the mean of
a run before and one after). Each run's slot timeline comes from its MLflow store
(`bench.slot_timeline.timeline`): makespan, slot use, and the tail with a slot idle. Speed-up:
reference / (wall - fixed).
"""
from __future__ import annotations

import shutil
import statistics
import tempfile

from mlflow.tracking import MlflowClient

from .common import load_average
from .orchestration import WORKLOADS, _in_process, _run_grid
from .slot_timeline import timeline, trial_runs

ORDERS = ("grid", "longest-first")


def _timeline_of(workdir: str) -> dict:

    client = MlflowClient(f"sqlite:///{workdir}/mlflow.db")
    t = timeline(trial_runs(client, [e.experiment_id for e in client.search_experiments()]), 2)
    return {k: t[k] for k in ("makespan", "busy", "use", "tail")} | {
        "starts": [name for _, _, _, name in sorted(t["rows"])]}


def summarize(runs: list[dict], reference_s: float) -> dict:
    """runs: [{"order", "wall", "fixed", "makespan", "use", "tail"}] -> per order: medians and
    the speed-up reference / (wall - fixed) of each run."""
    out = {}
    for order in ORDERS:
        rs = [r for r in runs if r["order"] == order]
        if not rs:
            continue
        speedups = [reference_s / (r["wall"] - r["fixed"]) for r in rs]
        out[order] = {"runs": len(rs), "speedup": statistics.median(speedups), "speedups": speedups,
                      "use": statistics.median(r["use"] for r in rs), "tail": statistics.median(r["tail"] for r in rs),
                      "makespan": statistics.median(r["makespan"] for r in rs),
                      "net": statistics.median(r["wall"] - r["fixed"] for r in rs)}
    return out


def bench_queue(profile: str = "full", rounds: int | None = None, log=print) -> dict:
    work = WORKLOADS["quick" if profile != "full" else "full"]
    rounds = rounds or (2 if profile == "full" else 1)
    load = [load_average()]
    ref_before, n = _in_process(work["args"])
    runs = []
    for r in range(rounds):
        for order in ORDERS:
            d = tempfile.mkdtemp(prefix="s3bench-queue-")
            try:
                flags = ["--executor", "direct", "--max-concurrent", "2", "--order", order]
                wall = _run_grid(d, work["args"], flags)
                fixed = _run_grid(d, work["args"], [*flags, "--resume"])
                row = {"order": order, "round": r, "wall": wall, "fixed": fixed, **_timeline_of(d)}
                runs.append(row)
                log(f"[bench] queue {order} round {r}: wall {wall:.1f} s, fixed {fixed:.1f} s, "
                    f"slot use {row['use']:.0%}, tail {row['tail']:.1f} s")
            finally:
                shutil.rmtree(d, ignore_errors=True)
    ref_after, _ = _in_process(work["args"])
    load.append(load_average())
    ref = (ref_before + ref_after) / 2
    return {"workload": work["label"], "trials": n, "reference_s": ref, "reference_runs": [ref_before, ref_after],
            "runs": runs, "summary": summarize(runs, ref), "load": load}


def queue_report(res: dict) -> list[str]:
    L = [f"Workload: {res['workload']}; `run_grid.py --executor direct --max-concurrent 2` with each `--order`, "
         "alternating; reference: the same trials one after another in-process through s3core "
         f"({res['reference_runs'][0]:.1f} s before, {res['reference_runs'][1]:.1f} s after; mean "
         f"{res['reference_s']:.1f} s). Load average (1/5/15) at start {res['load'][0]}, at end {res['load'][1]}.",
         "", "| order | runs | speed-up vs in-process sequential (median; each run) | net s | makespan s | "
         "slot use | tail with a slot idle s | first two started |", "|---|---|---|---|---|---|---|---|"]
    for order, s in res["summary"].items():
        first = next(r["starts"][:2] for r in res["runs"] if r["order"] == order)
        L.append(f"| {order} | {s['runs']} | **{s['speedup']:.2f}x** ({', '.join(f'{x:.2f}' for x in s['speedups'])}) | "
                 f"{s['net']:.1f} | {s['makespan']:.1f} | {s['use']:.0%} | {s['tail']:.1f} | {'; '.join(first)} |")
    best = max(s["speedup"] for s in res["summary"].values())
    L += ["", f"- Target: 2 trials at a time at least 1.6x the in-process sequential time: "
              f"**{'met' if best >= 1.6 else 'missed'}** (best order {best:.2f}x).",
          "- net: wall less the fixed start-up + report (a `--resume` with nothing left to run); makespan and slot "
          "use from the trials' MLflow start and end times (`bench.slot_timeline`)."]
    return L
