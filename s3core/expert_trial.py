"""The expert analysis at the end of a trial (issue 10): what `pipeline.run_trial` returns and the
orchestrator logs (metrics ``experts/...`` and the artifact ``experts/expert_analysis.npz``).

One call of `s3core.analysis.analyse_experts` on the trained model, on the test split, at p = 1
and at the validation-chosen p*:
- the batches are Stage 3's (the split in `eval_order(n, cfg.seed, 'test')`, eval_rows per
  batch), so the pairs kept at p* are the ones the curve point at p* computed. (analyse_experts
  alone reads file order; at p = 1 the order does not matter, at p < 1 it does: a pair survives
  by its rank in its batch.) The router is read without the row-stable matmul Stage 3 embeds
  with, so a gate may differ in its last bits and, rarely, a tie may break the other way.
- in the 'threshold' prune scope there is no per-batch top-p to reproduce: the analysis is at
  p = 1 only (keep_ratio 1 in its metrics).
- the known factors and the event mask come from the benchmark's meta (the synthetic
  benchmark's 'factors' and 'event_mask' of the split); a benchmark without them gets the
  label alone.
- "before Selection" is the no-Selection ablation's trial of the same chi and seed: its Stage 1
  is the same computation with the same seeds, so its model is S3's model before Stage 2. The
  report pairs the two.
Methods without experts (one expert per layer: the dense baselines) get no analysis (None).

Cost: two forward passes over the test split (p = 1 and p*), about 2 / (3 * len(keep_ratios))
of Stage 3's sweep, which embeds the three splits once per p.
"""
from __future__ import annotations

from s3core.analysis import ExpertAnalysis, analyse_experts
from s3core.config import S3Config
from s3core.pruning import moe_layers
from s3core.stages import autocast_for
from s3core.tensors import BenchmarkTensors, eval_order

ANALYSIS_SPLIT = "test"


def trial_expert_analysis(model, data: BenchmarkTensors, cfg: S3Config, keep_ratio: float,
                          meta: dict | None = None, split: str = ANALYSIS_SPLIT) -> ExpertAnalysis | None:
    """The expert analysis of a trained model at p = 1 and at `keep_ratio` (module docstring).

    Args:
        model: the trained S3Model. data: its BenchmarkTensors. cfg: the config it trained with.
        keep_ratio: the validation-chosen p* (pipeline.summarize's best_keep_ratio).
        meta: the Benchmark's meta, for its 'factors' and 'event_mask' (None: the label only).
    Returns:
        ExpertAnalysis, or None when the model has no layer with more than one expert.
    """
    model = getattr(model, "module", model)
    layers = moe_layers(model)
    if not layers or all(layer.cfg.num_experts < 2 for layer in layers.values()):
        return None

    meta = meta or {}
    factors = (meta.get("factors") or {}).get(split)
    event_mask = (meta.get("event_mask") or {}).get(split)
    p = float(keep_ratio) if cfg.prune_scope == "batch" else 1.0
    return analyse_experts(model, data, split, keep_ratio=p, batch_size=cfg.eval_rows, factors=factors,
                           event_mask=event_mask, autocast=autocast_for(cfg),
                           order=eval_order(len(data[split]), cfg.seed, split))


__all__ = ["ANALYSIS_SPLIT", "trial_expert_analysis"]
