"""Expert FLOPs for the accuracy-compute frontier (split from s3core.analysis).

Expert FLOPs for the accuracy-compute frontier. Convention: one kept (token, expert) pair
   runs two matmuls, d_model -> expert_hidden and expert_hidden -> d_model, each d_model *
   expert_hidden multiply-adds, and a multiply-add counts as 2 FLOPs: 2 * 2 * d_model *
   expert_hidden per pair. Not counted (each O(d_model + expert_hidden) per pair or O(d_model * E)
   per token): biases, GELU, the gate scaling, the scatter-add, the router. The dense FFN of the
   CLIP reference, d_model -> d_ff -> d_model, costs 2 * 2 * d_model * d_ff per real token and
   layer; with top_k = chi the unpruned MoE costs exactly that (k * d_ff / chi = d_ff).
"""
from __future__ import annotations

import numpy as np
from torch import Tensor

from s3core.moe import num_kept



def expert_flops_per_pair(d_model: int, expert_hidden: int) -> int:
    """FLOPs of one kept (token, expert) pair: 2 * 2 * d_model * expert_hidden (module docstring)."""
    return 4 * int(d_model) * int(expert_hidden)


def expert_flops_per_sample(cfg, kept_pairs, n_samples: int) -> float:
    """Expert FLOPs per sample actually computed.

    Args:
        cfg: S3Config or MoEConfig (d_model, d_ff, chi).
        kept_pairs: kept (token, expert) pairs over the whole split, any shape (e.g. (M, L) per
            modality and layer: ExpertAnalysis.kept_counts.sum((2, 3))); it is summed.
        n_samples: samples in the split.
    """
    per_pair = expert_flops_per_pair(cfg.d_model, cfg.d_ff // cfg.chi)
    return float(np.sum(kept_pairs)) * per_pair / int(n_samples)


def routed_tokens(masks: dict) -> np.ndarray:
    """(N,) tokens the MoE layers route per sample, summed over modalities: the real steps, and
    step 0 of a modality with none (the encoder lets an empty sample attend to its first step)."""
    total = None
    for mask in masks.values():
        mk = np.asarray(mask.cpu() if isinstance(mask, Tensor) else mask, dtype=bool)
        n = np.maximum(mk.sum(1), 1)
        total = n if total is None else total + n
    return total


def dense_ffn_flops_per_sample(cfg, tokens_per_sample) -> float:
    """FLOPs per sample of dense FFNs d_model -> d_ff -> d_model on every routed token of every
    layer: mean(tokens) * n_layers * 2 * 2 * d_model * d_ff (the CLIP reference line).

    Args:
        cfg: S3Config (d_model, d_ff, n_layers). tokens_per_sample: (N,) from `routed_tokens`, or a number.
    """
    return float(np.mean(tokens_per_sample)) * cfg.n_layers * 4 * cfg.d_model * cfg.d_ff


def kept_pairs_per_layer(masks: dict, k: int, keep_ratio: float, batch_size: int) -> dict[str, int]:
    """Kept pairs of one MoE layer per modality over a split, without running the model.

    Stage 3 keeps num_kept(pairs, p) of every (batch, modality, layer), and a batch's pair count
    is k times its routed tokens, which depend on the masks only; every layer routes the same
    tokens. Batches are the split in order, `batch_size` rows each (Stage 3's `embed`)."""
    out = {}
    for m, mask in masks.items():
        tokens = routed_tokens({m: mask})
        total = 0
        for start in range(0, len(tokens), batch_size):
            total += num_kept(int(tokens[start:start + batch_size].sum()) * k, keep_ratio)
        out[m] = total
    return out


def expert_flops_at_keep_ratio(cfg, masks: dict, keep_ratio: float, batch_size: int | None = None) -> float:
    """Expert FLOPs per sample of an S3 model at keep-ratio p on a split with these masks.

    Args:
        cfg: S3Config. masks: {m: (N, T) bool} of the split. batch_size: default cfg.eval_batch_size.
    """
    batch_size = cfg.eval_batch_size if batch_size is None else batch_size
    k = cfg.moe().k
    per_layer = kept_pairs_per_layer(masks, k, keep_ratio, batch_size)
    n = len(next(iter(masks.values())))
    return expert_flops_per_sample(cfg, sum(per_layer.values()) * cfg.n_layers, n)
