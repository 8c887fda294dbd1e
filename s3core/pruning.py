"""Stage 3's two pruning scopes, and the evaluation path that makes a token's result batch-free.

`S3Config.prune_scope` (docs/METHOD_NOTES.md, "Stage 3"):
- 'batch' (the paper's: "for each batch, sort the top-k routing pairs by score and retain only
  the top-p proportion"): each MoE layer keeps the top fraction p of the pairs of the evaluation
  batch it sees. A sample's result depends on the samples it is batched with, so the batches are
  the trial's own batch size in an order drawn from its seed (tensors.eval_order).
- 'threshold': per MoE layer (one per modality and depth), the gate value that keeps a fraction
  p of the train split's routing pairs, fitted once on train (`fit_thresholds`); every token then
  keeps exactly its pairs at or above it. A sample's embedding does not depend on its batch,
  so a deployed model can be pruned one request at a time.

Only the MoE layers' plain attributes are set here (moe.MoEFFN: prune_threshold, gate_recorder;
row_stable in s3core.tensors), always restored on exit; the encoder is untouched.
"""
from __future__ import annotations

import contextlib

import torch
from torch import nn

from s3core.moe import num_kept
from s3core.tensors import forward_batches, moe_layers, row_stable  # noqa: F401  (the last two importable from here)


def layer_depth(name: str) -> int:
    """The block index in a MoE layer's name ('encoders.text.blocks.1.ffn' -> 1)."""
    parts = name.split(".")
    return int(parts[parts.index("blocks") + 1]) if "blocks" in parts else 0


@contextlib.contextmanager
def thresholds_applied(model: nn.Module, thresholds: dict[str, float]):
    """Prune each named MoE layer token by token at its threshold inside the block."""
    layers = moe_layers(model)
    unknown = sorted(set(thresholds) - set(layers))
    if unknown:
        raise KeyError(f"no MoE layers named {unknown} in the model; it has {sorted(layers)}")
    before = {n: layers[n].prune_threshold for n in thresholds}
    for n, t in thresholds.items():
        layers[n].prune_threshold = float(t)
    try:
        yield
    finally:
        for n, b in before.items():
            layers[n].prune_threshold = b


def threshold_for(gates: torch.Tensor, keep_ratio: float) -> float:
    """The gate value at or above which num_kept(n, p) of the n gates lie (the n_keep-th largest)."""
    n = gates.numel()
    n_keep = num_kept(n, keep_ratio)
    return float(gates.float().kthvalue(n - n_keep + 1).values)


@torch.no_grad()
def fit_thresholds(model: nn.Module, data, keep_ratio: float, batch_size: int, autocast=None) -> dict[str, float]:
    """Per MoE layer, the gate threshold that keeps a fraction `keep_ratio` of the train split's
    routing pairs, layer after layer: depth d is fitted on the pairs it sees when every shallower
    layer is already pruned at its threshold (so on train every layer keeps p of its pairs).

    Args:
        model: an S3Model. data: BenchmarkTensors (its 'train' split is used).
        keep_ratio: p in (0, 1). batch_size: rows per forward (the result does not depend on it).
    Returns:
        {layer name: threshold}.
    """
    layers = moe_layers(model)
    thresholds: dict[str, float] = {}
    for depth in sorted({layer_depth(n) for n in layers}):
        targets = {n: m for n, m in layers.items() if layer_depth(n) == depth}
        gates: dict[str, list] = {n: [] for n in targets}
        for m in targets.values():
            m.gate_recorder = []
        try:
            with thresholds_applied(model, thresholds):
                for _, _, n_real in forward_batches(model, data, "train", batch_size, 1.0, autocast, pad=True):
                    for n, m in targets.items():
                        for g, row in m.gate_recorder:
                            gates[n].append(g[row < n_real])          # leave the padding rows out
                        m.gate_recorder.clear()
        finally:
            for m in targets.values():
                m.gate_recorder = None
        for n in targets:
            thresholds[n] = threshold_for(torch.cat(gates[n]), keep_ratio)
    return thresholds


__all__ = ["moe_layers", "layer_depth", "row_stable", "thresholds_applied", "threshold_for", "fit_thresholds"]
