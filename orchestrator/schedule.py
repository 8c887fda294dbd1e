"""The order in which a grid's trials are queued: longest first (issue 12 point 2).

Tune starts a grid's trials in the order it is given them and hands each slot that frees to the
next. With unequal trials, a long one that starts last leaves the other slots idle at the end (a
tail). Longest-processing-time first (LPT) bounds that: its makespan is at most 4/3 of the best
possible, for any number of slots (Graham, 1969).

A trial's size, as the plan knows it without the data, in passes over the training split:
- each training stage: its epochs x 3 (a forward and a backward, the backward about two forwards);
  Stage 2 too, since its gradient flows back through the encoders to the routers;
- Stage 3: one embedding pass per keep-ratio (all three splits, counted as one training pass);
  a method with its own evaluation (the raw-feature probe): one pass;
- less every training-stage prefix that a trial earlier in the queue computes with the same
  identity (`s3core.pipeline.stage_prefixes` and `stagecache.key_fields`: what the stage cache's
  key hashes, less data and code): the stage cache hands it over, so it costs nothing here, and
  the trial that trains it stays ahead of those that reuse it.
Ties (S3 at different chi: the same passes, and the same FLOPs by construction) go to the larger
chi, which costs more per pass on the CPU (bench/RESULTS.md section 1: 1.23x, 1.39x and 1.75x a
dense FFN at chi 2, 4, 8), then to the smaller batch (more optimizer steps per pass), then keep
the grid's order. A size is a rank, not a time estimate.
"""
from __future__ import annotations

import json

from s3core.methods import get_method
from s3core.pipeline import stage_prefixes
from s3core.stagecache import key_fields

from orchestrator.contract import TrialSpec

ORDERS = ("longest-first", "grid")
PASSES_PER_TRAINING_EPOCH = 3


def trial_work(spec: TrialSpec) -> tuple[list[tuple[str, int]], int]:
    """([(identity of the result after training stage i, passes of stage i)], Stage 3's passes)."""
    method = get_method(spec.method)
    cfg = method.config(spec.s3_config())
    stages = []
    for i, (names, drop, head) in enumerate(stage_prefixes(method)):
        ident = json.dumps({"benchmark": spec.benchmark, "stages": names, "head": head,
                            "config": key_fields(cfg, names, drop)}, sort_keys=True, default=str)
        stages.append((ident, PASSES_PER_TRAINING_EPOCH * method.stages[i].epochs(cfg)))
    stage3 = 1 if method.evaluate is not None else len(cfg.keep_ratios)
    return stages, stage3


def _marginal(works: list) -> list[int]:
    """Each trial_work's passes in this order: stages an earlier one trains count 0."""
    seen, out = set(), []
    for stages, stage3 in works:
        out.append(stage3 + sum(p for ident, p in stages if ident not in seen))
        seen.update(ident for ident, _ in stages)
    return out


def marginal_passes(trials: list[TrialSpec]) -> list[int]:
    """Each trial's passes in this queue order: stages an earlier trial trains count 0."""
    return _marginal([trial_work(spec) for spec in trials])


def _tie_break(spec: TrialSpec) -> tuple[int, int]:
    cfg = get_method(spec.method).config(spec.s3_config())
    return -cfg.chi, cfg.batch_size


def longest_first(trials: list[TrialSpec]) -> list[TrialSpec]:
    """The trials sorted by size, largest first (ties: larger chi, smaller batch, then the grid's
    order), where a stage shared with a trial ahead in the queue is free."""
    items = [(spec, trial_work(spec), _tie_break(spec)) for spec in trials]

    def by_size(queue, sizes):
        return [queue[i] for i in sorted(range(len(queue)), key=lambda i: (-sizes[i], *queue[i][2], i))]

    # the first trial with a prefix is its largest user
    queue = by_size(items, [stage3 + sum(p for _, p in stages) for _, (stages, stage3), _ in items])
    return [spec for spec, _, _ in by_size(queue, _marginal([work for _, work, _ in queue]))]


def order_trials(trials: list[TrialSpec], order: str) -> list[TrialSpec]:
    if order == "grid":
        return list(trials)
    if order == "longest-first":
        return longest_first(trials)
    raise ValueError(f"unknown trial order {order!r}; choose one of {', '.join(ORDERS)}")


__all__ = ["ORDERS", "longest_first", "marginal_passes", "order_trials", "trial_work"]
