"""Section `stagecache`: a grid's total trial-seconds with and without the stage cache (issue 12.1).

Every trial of a preset's plan runs in this process through s3core twice, interleaved: once
without the cache and once with a StageCache shared by the grid's trials (in the plan's queue order,
so a trial finds the stages an earlier one stored; which twin runs first alternates, after one
untimed warm-up trial). The sum of TrialResult.seconds of each is
the grid's trial-seconds (one slot; no Ray, no MLflow: those add the same to both). Each reused
trial's curve and history are compared with its fresh twin: `identical` says the two agree to
the last bit (timings aside).
"""
from __future__ import annotations

import shutil
import tempfile
import time

from orchestrator.plan import Overrides, make_plan
from s3core.data.base import content_digest
from s3core.pipeline import run_trial
from s3core.stagecache import StageCache
from search_spaces import load_preset

from .common import load_average

# MOSEI's shapes under the paper protocol (vision 35 + text 300 features, 50 steps); fewer samples
MOSEI_LIKE = {"dims": (35, 300), "seq_len": 50, "label": "unique"}

WORKLOADS = {
    "tiny": [{"preset": "smoke", "seeds": (0,), "epochs": 1, "grid": {}, "synthetic": {"n_train": 64, "n_valid": 32,
                                                                                       "n_test": 32}}],
    "quick": [{"preset": "default", "seeds": (0,), "epochs": 1, "grid": {},
               "synthetic": {"n_train": 500, "n_valid": 200, "n_test": 200}}],
    # what a 2-core CPU shared by several agents (load 10-18) measures in minutes: one seed, 1 epoch,
    # few samples; the paper preset at one batch size
    "full": [{"preset": "default", "seeds": (0,), "epochs": 1, "grid": {},
              "synthetic": {"n_train": 256, "n_valid": 128, "n_test": 128}},
             {"preset": "paper", "seeds": (0,), "epochs": 1, "grid": {"batch_size": [64]},
              "synthetic": {**MOSEI_LIKE, "n_train": 128, "n_valid": 64, "n_test": 64}}],
}

TIMING = ("time_s", "embed_s")


def _strip(rows):
    return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]


def run_workload(preset: str, seeds, epochs: int, grid: dict, synthetic: dict, log=print) -> dict:

    plan = make_plan(load_preset(preset), Overrides(seeds=tuple(seeds), epochs=epochs, grid=dict(grid),
                                                    synthetic=dict(synthetic), benchmarks=("synthetic",)))
    bench = plan.data.load("synthetic")
    digest = content_digest(bench)
    root = tempfile.mkdtemp(prefix="s3bench-stagecache-")
    rows = []
    try:
        trials = plan.trials()
        # warm-up (untimed): the first run in a process pays one-off costs (allocator, kernels, imports)
        run_trial(bench, trials[0].s3_config(), trials[0].method, progress=False)
        for i, spec in enumerate(trials):
            cfg = spec.s3_config()
            cache = StageCache(root, digest, producer={"trial_key": spec.key(), "trial": spec.short()})
            if i % 2 == 0:        # alternate which twin runs first, so neither always finds warmer caches
                fresh = run_trial(bench, cfg, spec.method, progress=False)
                cached = run_trial(bench, cfg, spec.method, progress=False, stage_cache=cache)
            else:
                cached = run_trial(bench, cfg, spec.method, progress=False, stage_cache=cache)
                fresh = run_trial(bench, cfg, spec.method, progress=False)
            same = _strip(fresh.curve) == _strip(cached.curve) and _strip(fresh.history) == _strip(cached.history)
            rows.append({"trial": spec.short(), "without_s": fresh.seconds, "with_s": cached.seconds,
                         "stages": [(e["stage"], e["status"]) for e in cache.events], "identical": same})
            log(f"[bench] stagecache {spec.short()}: {fresh.seconds:.1f} s without, {cached.seconds:.1f} s with "
                f"{[e['status'] for e in cache.events]} identical={same}")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    without, with_ = sum(r["without_s"] for r in rows), sum(r["with_s"] for r in rows)
    return {"preset": preset, "seeds": list(seeds), "epochs": epochs, "grid": grid, "synthetic": plan.data.synthetic,
            "trials": rows, "without_s": without, "with_s": with_,
            "reused": sum(s == "reused" for r in rows for _, s in r["stages"]),
            "trained": sum(s == "trained" for r in rows for _, s in r["stages"])}


def bench_stage_reuse(profile: str = "full", log=print) -> dict:
    out = {"load_start": load_average(), "workloads": []}
    t0 = time.perf_counter()
    for w in WORKLOADS[profile]:
        out["workloads"].append(run_workload(**w, log=log))
    out["seconds"] = time.perf_counter() - t0
    out["load_end"] = load_average()
    return out


HOW = ("How it works (s3core/stagecache.py): a training stage's result (weights, RNG streams, history so far) "
       "is stored under `<storage>/stage-cache/<key>/`, the key a SHA-256 of the data's content digest, the "
       "s3core sources and torch/numpy/scikit-learn versions, the method's stages up to this one and its head, "
       "the number of workers, and every S3Config field except the Stage-3-only ones (keep_ratios, prune_scope, "
       "probe, probe_max_iter, probe_l2) and the fields only a later stage reads (Stage 2's lambda_suff, "
       "lambda_min, lr_select, epochs_select). Entries are written to a temporary directory and renamed in one "
       "`os.replace`. A trial that needs a stage another trial is training waits on `<key>.lock` (O_EXCL, mtime "
       "heartbeat; stale after 120 s or when its process is gone). The plan also orders them: its queue "
       "(orchestrator/schedule.py, longest first) puts the trial that trains a shared stage ahead of those "
       "that reuse it, whose size counts only what they train, so such waits are rare; the lock covers the "
       "rest (Tune and Optuna decide at run time which trials run together; two grids on one storage). "
       "Each trial run gets tags "
       "`s3.stage_cache.<stage>` = trained | reused, `.from` (the run that trained it) and `.key`; "
       "`run_grid.py --no-stage-cache` turns it off.")


def stage_reuse_report(res: dict) -> list[str]:
    L = [HOW, "", "Every trial of the preset's plan runs twice in one process, interleaved: without the stage cache "
         "and with one StageCache shared by the grid (trials in the plan's queue order; which twin runs first "
         "alternates; one untimed warm-up trial first). Trial-seconds: the sum "
         "of run_trial's seconds (one slot, no Ray/MLflow, which add the same to both). `identical`: the "
         "reused trial's curve and history equal the fresh twin's to the last bit (timings aside).", "",
         f"Load average (1/5/15 min) at start {res['load_start']}, at end {res['load_end']}; "
         f"section wall time {res['seconds']:.0f} s.", "",
         "| preset (workload) | trials | stages trained / reused | trial-seconds without | with | with / without "
         "| all identical |", "|---|---|---|---|---|---|---|"]
    for w in res["workloads"]:
        desc = (f"{w['preset']}, --epochs {w['epochs']}, seeds {w['seeds']}"
                + (f", --grid {w['grid']}" if w["grid"] else "")
                + (f"; synthetic {w['synthetic']}" if w["synthetic"] else ""))
        ok = all(r["identical"] for r in w["trials"])
        L.append(f"| {desc} | {len(w['trials'])} | {w['trained']} / {w['reused']} | {w['without_s']:.1f} | "
                 f"{w['with_s']:.1f} | {w['with_s'] / w['without_s']:.2f}x | {'yes' if ok else 'NO'} |")
    L.append("")
    for w in res["workloads"]:
        L += [f"<details><summary>{w['preset']}: per trial</summary>", "",
              "| trial | without s | with s | stages |", "|---|---|---|---|"]
        L += [f"| {r['trial']} | {r['without_s']:.1f} | {r['with_s']:.1f} | "
              f"{', '.join(f'{s} {st}' for s, st in r['stages']) or '-'} |" for r in w["trials"]]
        L += ["", "</details>", ""]
    return L
