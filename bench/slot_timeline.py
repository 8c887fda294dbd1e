"""The slot timeline of a finished grid, read from its MLflow store (issue 12 point 2).

    python -m bench.slot_timeline --tracking-uri sqlite:////abs/mlflow.db --experiment s3-synthetic [--slots 2]

Each trial run's MLflow start and end times, placed on the slot that frees first (how Tune fills
`--max-concurrent` slots), then: the makespan, the trial-seconds, the share of slot time used,
and the tail during which a slot sat idle. Imbalance (one long trial last) shows as a long tail
and a low slot use; a per-trial slowdown from sharing the cores does not.
"""
from __future__ import annotations

import argparse
import sys

from mlflow.tracking import MlflowClient

from orchestrator import mlflow_layout as L


def timeline(runs: list[tuple[float, float, str]], slots: int = 2) -> dict:
    """runs: (start s, end s, name). Returns {"rows": [(start, end, slot, name)], "makespan",
    "busy", "use", "tail"} with times relative to the first start."""
    rows = sorted(runs)
    t0 = rows[0][0]
    free = [t0] * slots
    placed = []
    for start, end, name in rows:
        slot = min(range(slots), key=lambda i: free[i])
        free[slot] = end
        placed.append((start - t0, end - t0, slot, name))
    ends = sorted(e for _, e, _, _ in placed)
    makespan = ends[-1]
    busy = sum(e - s for s, e, _, _ in placed)
    tail = ends[-1] - ends[-slots] if len(ends) >= slots else makespan
    return {"rows": placed, "makespan": makespan, "busy": busy, "use": busy / (slots * makespan), "tail": tail}


def trial_runs(client, experiment_ids: list[str]) -> list[tuple[float, float, str]]:
    """(start s, end s, run name) of every finished trial run of the experiments (timeline's input)."""
    return [(r.info.start_time / 1000, r.info.end_time / 1000, r.info.run_name)
            for r in client.search_runs(experiment_ids, filter_string=f"tags.`{L.TAG_ROLE}` = '{L.ROLE_TRIAL}'")
            if r.info.end_time]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tracking-uri", required=True)
    ap.add_argument("--experiment", default="s3-synthetic")
    ap.add_argument("--slots", type=int, default=2, help="the grid's --max-concurrent (default 2)")
    args = ap.parse_args(argv)

    client = MlflowClient(args.tracking_uri)
    exp = client.get_experiment_by_name(args.experiment)
    if exp is None:
        print(f"error: no experiment {args.experiment!r} in {args.tracking_uri}", file=sys.stderr)
        return 2
    runs = trial_runs(client, [exp.experiment_id])
    if not runs:
        print("error: no finished trial runs in that experiment", file=sys.stderr)
        return 2
    t = timeline(runs, args.slots)
    print(f"{'start':>6} {'end':>6} {'s':>5} slot  trial")
    for start, end, slot, name in t["rows"]:
        print(f"{start:6.0f} {end:6.0f} {end - start:5.0f}  {slot}    {name}")
    print(f"makespan {t['makespan']:.0f} s, trial-seconds {t['busy']:.0f}, slot use {t['use']:.0%}, "
          f"tail with a slot idle {t['tail']:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
