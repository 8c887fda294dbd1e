"""Diagnostics that say whether Stage 3's pruning can act on a trained model (issue 20).

Per trial (`pipeline.run_trial` puts them in the history after every training epoch, in the
Stage 3 curve and in the summary, so they reach MLflow as the other metrics do):

- routing entropy, per modality m and MoE layer l, normalised by log E to [0, 1]: the paper's
  Figs 7-10. `local_entropy` is the mean over tokens of each token's router entropy (1: every
  token spreads its probability evenly, nothing to rank; 0: every token is sure);
  `global_entropy` is the entropy of the batch's mean router distribution (1: experts used
  evenly). The numbers are the ones L_aux is computed from (`MoEFFN._aux_parts`), read from a
  forward of a fixed batch of the validation split at p = 1.
- moe_share: per real token, ||MoE branch output|| / ||residual stream it is added to||, the
  median over tokens. Pruning a pair removes part of the MoE branch only: with a share of 0.1
  the token reaches the pooled embedding through the residual almost unchanged.
- gate_auc (on data with known relevant steps, the synthetic variants' meta 'event_mask'):
  the probability that a routed pair on a relevant step has a higher gate than one on an
  irrelevant step (ties count half): 1 = the router ranks relevant pairs first, as pruning
  needs; 0.5 = no better than chance.
- embed_cos_dist (a Stage 3 curve column): the mean over test samples of 1 - cos(z at p, z at
  p = 1): how far pruning moved the embedding.
- headroom (summary, data with an event mask): test accuracy of the same encoder and probe with
  the irrelevant steps removed from the input (mask & event_mask), minus the accuracy on the
  whole input: about the most pruning could gain.

Metric keys: ``diag/<name>/<modality>/L<layer>`` (history and summary), ``diag/<name>`` for the
means over modalities and layers. `cannot_act` (s3core.diagnostic_flags) is the report's flag.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import torch
import torch.nn.functional as F

from s3core.analysis import route_pairs
from s3core.diagnostic_flags import DIAG_PREFIX, LOCAL_ENTROPY_CEILING, MOE_SHARE_FLOOR, cannot_act  # noqa: F401
from s3core.pruning import layer_depth, moe_layers
from s3core.raw_features import raw_feature_probe
from s3core.stages import embedding_shift, sparsify  # noqa: F401  (embedding_shift: importable from here)
from s3core.tensors import standardise

DIAG_ROWS = 256                     # validation rows of the per-epoch forward


def auc(scores: torch.Tensor, positive: torch.Tensor) -> float:
    """Mann-Whitney AUC: P(score of a positive > score of a negative), ties counted half. NaN
    when either class is empty."""
    scores = scores.double().reshape(-1)
    positive = positive.reshape(-1).bool()
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = scores.argsort()
    sorted_scores = scores[order]
    ranks = torch.empty_like(scores)
    # 1-based ranks, ties given their average rank
    _, inverse, counts = torch.unique(sorted_scores, return_inverse=True, return_counts=True)
    first = torch.cumsum(counts, 0) - counts + 1
    mean_rank = first.double() + (counts.double() - 1) / 2
    ranks[order] = mean_rank[inverse]
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


@torch.no_grad()
def routing_diagnostics(model, inputs: dict, event_mask: dict | None = None) -> dict[str, float]:
    """One forward of `model` (an S3Model, eval mode, p = 1) on `inputs` {m: (x, mask)} (already
    standardised); returns the flat metrics of the module docstring (entropies, moe_share and,
    with `event_mask` {m: (B, T) bool}, gate_auc), per modality and layer and their means."""
    model = getattr(model, "module", model)
    was_training = model.training
    model.eval()
    layers = moe_layers(model)
    seen: dict[str, dict] = {n: {} for n in layers}
    handles = []
    for name, layer in layers.items():
        rec = seen[name]
        handles.append(layer.register_forward_pre_hook(
            lambda mod, args, kwargs, rec=rec: rec.update(
                x=args[0], mask=kwargs.get("token_mask", args[1] if len(args) > 1 else None)),
            with_kwargs=True))
        handles.append(layer.register_forward_hook(lambda mod, args, out, rec=rec: rec.update(out=out)))
        handles.append(layer.router.register_forward_hook(lambda mod, args, out, rec=rec: rec.update(logits=out)))
    blocks = {n.rsplit(".", 1)[0]: n for n in layers}
    for bname, block in model.named_modules():
        if bname in blocks:
            rec = seen[blocks[bname]]
            handles.append(block.register_forward_hook(
                lambda mod, args, out, rec=rec, post=getattr(block, "post_ln", False):
                rec.update(resid=rec["x"] if post else out[0] - out[1].output)))
    try:
        model(inputs)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    out: dict[str, float] = {}
    means: dict[str, list] = {}
    for name, layer in layers.items():
        rec = seen[name]
        m = name.split(".")[1]
        tag = f"{m}/L{layer_depth(name)}"
        moe = rec["out"]
        mask = rec["mask"]
        if mask is None:
            mask = torch.ones(moe.output.shape[:2], dtype=torch.bool, device=moe.output.device)
        values = {"local_entropy": float(moe.aux_parts["local_entropy"]),
                  "global_entropy": float(moe.aux_parts["global_entropy"])}
        num = moe.output.float().norm(dim=-1)[mask]
        den = rec["resid"].float().norm(dim=-1)[mask].clamp_min(1e-12)
        values["moe_share"] = float((num / den).median()) if num.numel() else float("nan")
        if event_mask is not None and m in event_mask:
            gate, _, _ = route_pairs(rec["logits"], layer.cfg.k)                # (N, k)
            rows, steps = mask.nonzero(as_tuple=True)
            relevant = event_mask[m].to(mask.device)[rows, steps]
            values["gate_auc"] = auc(gate, relevant.unsqueeze(1).expand_as(gate))
        for key, v in values.items():
            out[f"{DIAG_PREFIX}{key}/{tag}"] = v
            means.setdefault(key, []).append(v)
    for key, vs in means.items():
        finite = [v for v in vs if v == v]
        if finite:
            out[f"{DIAG_PREFIX}{key}"] = float(np.mean(finite))
    return out


def diagnostics_batch(data, meta: dict | None, split: str = "valid", rows: int = DIAG_ROWS):
    """The fixed batch the per-epoch diagnostics read: the first `rows` of `split` (standardised)
    and their event mask (None without one)."""
    st = data[split]
    idx = torch.arange(min(rows, len(st)), device=st.labels.device)
    inputs, _ = st.batch(idx)
    events = ((meta or {}).get("event_mask") or {}).get(split)
    mask = None if events is None else {m: torch.as_tensor(np.asarray(events[m])[: len(idx)]) for m in events}
    return standardise(inputs, data), mask


def with_event_masks(data, event_mask: dict):
    """A copy of BenchmarkTensors `data` whose masks keep only the relevant steps
    (mask & event_mask[split][m]); the features are shared, not copied."""
    splits = {}
    for s, st in data.splits.items():
        masks = {m: st.masks[m] & torch.as_tensor(np.asarray(event_mask[s][m]), device=st.masks[m].device)
                 for m in st.masks}
        splits[s] = dataclasses.replace(st, masks=masks)
    return dataclasses.replace(data, splits=splits)


def masking_headroom(model, data, cfg, meta: dict | None, full_test_acc: float) -> dict[str, float]:
    """Test accuracy of `model` at p = 1 with the irrelevant steps removed from every split's
    input (the same probe as Stage 3), and its difference to `full_test_acc`. {} without an
    event mask in `meta`."""
    events = (meta or {}).get("event_mask")
    if not events:
        return {}
    row = sparsify(getattr(model, "module", model), with_event_masks(data, events), cfg, keep_ratios=(1.0,),
                   progress=False)[0]
    return {f"{DIAG_PREFIX}masked_test_acc": row["test_acc"],
            f"{DIAG_PREFIX}headroom": row["test_acc"] - full_test_acc}


def raw_probe_headroom(bench) -> dict[str, float]:
    """The input-masking headroom of the raw-feature reference (s3core.raw_features) on a
    Benchmark with meta 'event_mask': its test accuracy on the relevant steps alone and on the
    whole input, and the difference."""
    events = bench.meta["event_mask"]
    masked = dataclasses.replace(bench, splits={
        s: dataclasses.replace(sp, masks={m: sp.masks[m] & events[s][m] for m in sp.masks})
        for s, sp in bench.splits.items()})
    full, only = raw_feature_probe(bench).test_acc, raw_feature_probe(masked).test_acc
    return {"test_acc": full, "masked_test_acc": only, "headroom": only - full}


__all__ = ["DIAG_PREFIX", "auc", "routing_diagnostics", "diagnostics_batch", "with_event_masks", "masking_headroom",
           "raw_probe_headroom", "embedding_shift", "cannot_act", "MOE_SHARE_FLOOR", "LOCAL_ENTROPY_CEILING"]
