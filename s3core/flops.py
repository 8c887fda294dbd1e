"""Expert FLOPs for the accuracy-compute frontier (split from s3core.analysis).

Convention: one kept (token, expert) pair
   runs two matmuls, d_model -> expert_hidden and expert_hidden -> d_model, each d_model *
   expert_hidden multiply-adds, and a multiply-add counts as 2 FLOPs: 2 * 2 * d_model *
   expert_hidden per pair. Not counted (each O(d_model + expert_hidden) per pair or O(d_model * E)
   per token): biases, GELU, the gate scaling, the scatter-add, the router. The dense FFN of the
   CLIP reference, d_model -> d_ff -> d_model, costs 2 * 2 * d_model * d_ff per real token and
   layer; with top_k = chi the unpruned MoE costs exactly that (k * d_ff / chi = d_ff).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import numpy as np
from torch import Tensor

from s3core.moe import MoEFFN, num_kept


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


@dataclass
class PairCount:
    """Routing pairs counted by `count_expert_pairs` (every MoE layer, every forward inside it).

    chosen: pairs the routers chose (k per routed token); kept: of those, the pairs computed;
    flops: expert FLOPs of the kept pairs (expert_flops_per_pair of each layer's own widths);
    per_layer: {layer name: kept pairs}."""

    chosen: int = 0
    kept: int = 0
    flops: float = 0.0
    per_layer: dict = field(default_factory=dict)

    def flops_per_sample(self, n_samples: int) -> float:
        return self.flops / max(int(n_samples), 1)


@contextlib.contextmanager
def count_expert_pairs(model):
    """Count the (token, expert) pairs every MoEFFN of `model` computes inside the block.

    Read from the layers' own outputs (forward hooks; the library is not modified): a forward
    routes the tokens of its token_mask (all B * T without one), chooses k pairs per token and
    computes kept_fraction of them, so kept = round(kept_fraction * k * tokens). This is what
    ran, in either prune scope, padding rows included (the 'threshold' scope pads the last batch
    with empty samples, and each routes one step). Yields a PairCount, filled as forwards run.
    """
    count = PairCount()
    handles = []
    for name, module in getattr(model, "module", model).named_modules():
        if not isinstance(module, MoEFFN):
            continue
        seen: dict = {}

        def pre_hook(mod, args, kwargs, seen=seen):
            x = args[0] if args else kwargs["x"]
            mask = kwargs.get("token_mask", args[1] if len(args) > 1 else None)
            seen["tokens"] = int(x.shape[0] * x.shape[1]) if mask is None else int(mask.sum())

        def hook(mod, args, kwargs, out, seen=seen, name=name):
            chosen = seen.pop("tokens") * mod.cfg.k
            kept = int(round(float(out.kept_fraction) * chosen))
            count.chosen += chosen
            count.kept += kept
            count.flops += kept * expert_flops_per_pair(mod.cfg.d_model, mod.cfg.expert_hidden)
            count.per_layer[name] = count.per_layer.get(name, 0) + kept

        handles.append(module.register_forward_pre_hook(pre_hook, with_kwargs=True))
        handles.append(module.register_forward_hook(hook, with_kwargs=True))
    try:
        yield count
    finally:
        for h in handles:
            h.remove()
