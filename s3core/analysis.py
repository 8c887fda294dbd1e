"""Evidence for S3's mechanism: a raw-feature reference, an expert analysis, expert FLOPs.

Pure torch/numpy (no Ray, no MLflow). Three parts:

1. `raw_feature_embeddings(split)`, `raw_feature_probe(bench)`: the raw-feature reference
   (s3core.raw_features, re-exported here).

2. `analyse_experts(model, data, split, keep_ratio, ...)` -> `ExpertAnalysis`, per modality and
   MoE layer. The router's choices are read with forward hooks (a pre-hook on each `MoEFFN` for
   its token mask, a hook on `MoEFFN.router` for its logits; the library is not modified) and
   recomputed from the logits exactly as `MoEFFN.forward` does: softmax, top-k, and at p < 1 the
   batch's ceil(p * pairs) highest-gate pairs (`moe.num_kept`, `moe.top_pairs`). The model runs in
   the batches Stage 3's `embed` uses (the split in order, `batch_size`), so the kept pairs are
   the ones that curve point computed. Definitions (a "pair" is a routed (token, expert) choice
   of top-k; a sample's class is its label):
   - usage[m, l, c, e]: the fraction of class c's pairs (at p = 1) that go to expert e;
     gate_usage: the same with each pair weighted by its gate; usage_at_p: of the pairs kept at p.
   - DSC (Distributional Semantic Coherence): dsc[pair, l, c] = JS(usage[m1, l, c], usage[m2, l, c]),
     the Jensen-Shannon divergence in bits (0 = identical usage, 1 = disjoint experts), for each
     pair of modalities. Each modality has its own encoder, so expert e of x1 and expert e of x2
     are different parameters: the by-index DSC is what the issue asks for, and `dsc_matched` is
     the same JS after matching modality m2's experts to m1's by an assignment that minimises
     the L1 distance between their per-class usage profiles (permutation-invariant; optimistic,
     since the matching is chosen on the same data).
   - class_js[m, l]: the generalised JS divergence (bits) between the classes' usage rows, equal
     weights: 0 when routing ignores the class; how class-specific the routing is.
   - routing_weight[m, l, n, e]: sample n's mean over its routed tokens of expert e's gate (0
     where e is not in the top-k), at p = 1 (sort by it for an expert's high-activating samples).
   - factor_r2[m, l, e, f]: R^2 of a least-squares fit (with intercept) of expert e's routing
     weight on factor f's values, linear and squared terms (`quadratic=True`); factor 'label' is the
     class one-hot. r2_chance[f] = regressors / (N - 1) is its expectation under independence.
   - survival[m, l, e]: kept pairs / chosen pairs of expert e at p; kept_share: each expert's
     share of all kept pairs.
   - event_share[m, l]: the share of pairs on steps marked by `event_mask` (the synthetic
     variants' relevant steps) at p = 1, and event_share_at_p among the pairs kept at p. The
     mechanism predicts event_share_at_p > event_share after Selection.
   Run it on the model after Stage 1 and after Stage 2 for "before/after Selection".

3. Expert FLOPs for the accuracy-compute frontier: s3core.flops (re-exported here).
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import warnings
from dataclasses import dataclass, fields
from itertools import combinations

import numpy as np
import torch
from torch import Tensor

from s3core.atomic import atomic_file
from s3core.divergence import entropy_bits as _entropy_bits
from s3core.divergence import generalised_js, js_divergence, min_cost_assignment  # noqa: F401 (re-exported)
from s3core.moe import num_kept, top_pairs
from s3core.raw_features import raw_feature_embeddings, raw_feature_probe  # noqa: F401 (re-exported)
from s3core.tensors import standardise

# ----------------------------------------------------------------------------------------------
# 2. expert analysis: routing


def route_pairs(logits: Tensor, k: int, keep_ratio: float = 1.0) -> tuple[Tensor, Tensor, Tensor]:
    """The routing MoEFFN.forward computes from its router logits, for one batch.

    Args:
        logits: (N, E) router logits of the batch's routed tokens.
        k: top-k. keep_ratio: Stage 3's p for this batch.
    Returns:
        gate (N, k) float32, expert (N, k) int64, kept (N, k) bool (all True at p = 1).
    """
    probs = logits.float().softmax(dim=-1)
    gate, expert = probs.topk(k, dim=-1)
    kept = torch.ones_like(gate, dtype=torch.bool)
    n_pairs = gate.numel()
    if keep_ratio < 1.0 and n_pairs > 0:
        flat = torch.zeros(n_pairs, dtype=torch.bool, device=gate.device)
        flat[top_pairs(gate.reshape(-1).detach(), num_kept(n_pairs, keep_ratio))] = True
        kept = flat.view_as(gate)
    return gate, expert, kept


# ----------------------------------------------------------------------------------------------
# 2. expert analysis: the result


@dataclass
class ExpertAnalysis:
    """Per modality m, MoE layer l, class c, expert e, factor f (module docstring, part 2)."""

    modalities: tuple[str, ...]
    factor_names: tuple[str, ...]          # 'label' first, then the factors given
    keep_ratio: float
    n_samples: int
    pair_counts: np.ndarray                # (M, L, C, E) chosen pairs at p = 1
    gate_mass: np.ndarray                  # (M, L, C, E) sum of their gates
    pruned_pass_counts: np.ndarray         # (M, L, C, E) chosen pairs in the forward at p
    kept_counts: np.ndarray                # (M, L, C, E) of those, kept
    usage: np.ndarray                      # (M, L, C, E) pair_counts normalised over e
    gate_usage: np.ndarray                 # (M, L, C, E)
    usage_at_p: np.ndarray                 # (M, L, C, E) kept_counts normalised over e
    survival: np.ndarray                   # (M, L, E) kept / chosen at p (NaN: never chosen)
    kept_share: np.ndarray                 # (M, L, E) share of the kept pairs
    dsc: np.ndarray                        # (P, L, C) JS bits, by expert index, p = 1
    dsc_at_p: np.ndarray                   # (P, L, C) from usage_at_p
    dsc_matched: np.ndarray                # (P, L, C) after matching experts (p = 1)
    class_js: np.ndarray                   # (M, L) between classes, p = 1
    class_js_at_p: np.ndarray              # (M, L)
    routing_weight: np.ndarray             # (M, L, N, E) per sample: mean gate over its tokens, p = 1
    factor_r2: np.ndarray                  # (M, L, E, F) R^2 of routing_weight on each factor
    r2_chance: np.ndarray                  # (F,)
    event_share: np.ndarray                # (M, L) NaN without an event mask
    event_share_at_p: np.ndarray           # (M, L)

    @property
    def modality_pairs(self) -> list[tuple[str, str]]:
        return list(combinations(self.modalities, 2))

    def to_metrics(self, prefix: str = "") -> dict[str, float]:
        """Flat scalars for logging, NaNs left out. Keys (tag = '<modality>/L<layer>'):
        dsc|dsc_at_p|dsc_matched/<m1>-<m2>/L<l> (mean over classes); class_js|class_js_at_p/<tag>;
        usage_entropy/<tag> (entropy of the pooled p = 1 usage / log2 E); kept_fraction/<tag>;
        survival_min|survival_max/<tag>; event_share|event_share_at_p/<tag>;
        r2/<factor>/<tag>/max (best expert), /used (mean weighted by the p = 1 gate mass) and
        /kept (weighted by the kept pairs at p); keep_ratio, n_samples."""
        out = {"keep_ratio": float(self.keep_ratio), "n_samples": float(self.n_samples)}
        M, L, C, E = self.pair_counts.shape

        def put(key, value):
            if np.isfinite(value):
                out[key] = float(value)

        with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # nanmean of an all-NaN row: left out
            for pi, (a, b) in enumerate(self.modality_pairs):
                for layer in range(L):
                    for name in ("dsc", "dsc_at_p", "dsc_matched"):
                        put(f"{name}/{a}-{b}/L{layer}", np.nanmean(getattr(self, name)[pi, layer]))
            for mi, m in enumerate(self.modalities):
                for layer in range(L):
                    tag = f"{m}/L{layer}"
                    pooled = self.pair_counts[mi, layer].sum(0)                   # (E,)
                    pooled_gate = self.gate_mass[mi, layer].sum(0)
                    kept = self.kept_counts[mi, layer].sum(0)
                    survival = self.survival[mi, layer]
                    put(f"class_js/{tag}", self.class_js[mi, layer])
                    put(f"class_js_at_p/{tag}", self.class_js_at_p[mi, layer])
                    put(f"usage_entropy/{tag}", _entropy_bits(pooled / pooled.sum()) / np.log2(E) if E > 1 else 0.0)
                    put(f"kept_fraction/{tag}", kept.sum() / self.pruned_pass_counts[mi, layer].sum())
                    put(f"survival_min/{tag}", np.nanmin(survival) if np.isfinite(survival).any() else np.nan)
                    put(f"survival_max/{tag}", np.nanmax(survival) if np.isfinite(survival).any() else np.nan)
                    put(f"event_share/{tag}", self.event_share[mi, layer])
                    put(f"event_share_at_p/{tag}", self.event_share_at_p[mi, layer])
                    for fi, f in enumerate(self.factor_names):
                        r2 = self.factor_r2[mi, layer, :, fi]
                        put(f"r2/{f}/{tag}/max", r2.max())
                        put(f"r2/{f}/{tag}/used", (r2 * pooled_gate).sum() / pooled_gate.sum())
                        put(f"r2/{f}/{tag}/kept", (r2 * kept).sum() / kept.sum())
        return {prefix + k: v for k, v in out.items()}

    def to_bytes(self) -> bytes:
        """Every array and the metadata as the bytes of one .npz (what `save` writes)."""
        arrays, meta = {}, {}
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, np.ndarray):
                arrays[f.name] = v
            else:
                meta[f.name] = list(v) if isinstance(v, tuple) else v
        arrays["__meta__"] = np.array(json.dumps(meta))
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **arrays)
        return buffer.getvalue()

    def save(self, path: str | os.PathLike) -> str:
        """Write every array and the metadata to one .npz (atomic: tmp + os.replace). Returns the path."""
        path = os.fspath(path)
        with atomic_file(path, suffix=".npz.tmp") as fh:
            fh.write(self.to_bytes())
        return path

    @classmethod
    def load(cls, path) -> "ExpertAnalysis":
        """Read a file (a path, or a binary file object) written by `save` or `to_bytes`
        (no pickles: allow_pickle=False)."""
        source = path if hasattr(path, "read") else os.fspath(path)
        with np.load(source, allow_pickle=False) as z:
            if "__meta__" not in z.files:
                raise ValueError(f"{source} is not an ExpertAnalysis file (no __meta__); write it "
                                 "with ExpertAnalysis.save")
            meta = json.loads(str(z["__meta__"]))
            arrays = {k: z[k] for k in z.files if k != "__meta__"}
        meta["modalities"] = tuple(meta["modalities"])
        meta["factor_names"] = tuple(meta["factor_names"])
        return cls(**meta, **arrays)

    @classmethod
    def from_bytes(cls, data: bytes) -> "ExpertAnalysis":
        return cls.load(io.BytesIO(bytes(data)))


# ----------------------------------------------------------------------------------------------
# 2. expert analysis: accumulation


class ExpertUsageAccumulator:
    """Accumulates routing statistics batch by batch; `result()` builds the ExpertAnalysis.

    Usable without a model (the tests feed it hand-built router logits): for every batch and
    (modality, layer), call `add` with the logits of the routed tokens and which sample and step
    each token is. pass_ 'full' is the forward at p = 1, 'pruned' the forward at keep_ratio,
    'both' one forward that serves as both (keep_ratio = 1).

    Args:
        modalities, n_layers, num_experts, k: the model's shape.
        labels: (N,) class of every sample of the split; num_classes: C.
        keep_ratio: p of the pruned pass.
        event_mask: optional {m: (N, T) bool}: True on the steps event_share counts.
    """

    def __init__(self, modalities, n_layers: int, num_experts: int, k: int, labels, num_classes: int,
                 keep_ratio: float = 1.0, event_mask: dict | None = None):
        self.modalities = tuple(modalities)
        self.L, self.E, self.k, self.C = n_layers, num_experts, k, num_classes
        self.labels = torch.as_tensor(np.asarray(labels), dtype=torch.int64)
        self.N = int(self.labels.shape[0])
        self.keep_ratio = float(keep_ratio)
        self.event_mask = None if event_mask is None else {
            m: torch.as_tensor(np.asarray(event_mask[m]), dtype=torch.bool) for m in self.modalities}
        M, L, C, E = len(self.modalities), n_layers, num_classes, num_experts
        z = lambda *s: torch.zeros(*s, dtype=torch.float64)  # noqa: E731
        self.pair_counts, self.gate_mass = z(M, L, C * E), z(M, L, C * E)
        self.pruned_counts, self.kept_counts = z(M, L, C * E), z(M, L, C * E)
        self.weight_sum = z(M, L, self.N, E)       # per sample: sum of gates over its tokens
        self.tokens = z(M, L, self.N)               # per sample: routed tokens
        self.events = z(M, L, 4)                    # chosen on event, chosen, kept on event, kept

    def add(self, modality: str, layer: int, logits: Tensor, sample: Tensor, step: Tensor, pass_: str) -> None:
        """One batch of one (modality, layer): logits (n, E) of the routed tokens, sample (n,)
        their row in the split, step (n,) their time step."""
        if pass_ not in ("full", "pruned", "both"):
            raise ValueError(f"pass_ must be full, pruned or both, got {pass_!r}")
        mi = self.modalities.index(modality)
        p = 1.0 if pass_ == "full" else self.keep_ratio
        gate, expert, kept = route_pairs(logits.detach().cpu(), self.k, p)
        sample, step = sample.detach().cpu().long(), step.detach().cpu().long()
        gate = gate.double()
        cls = self.labels[sample]                                            # (n,)
        cell = (cls.unsqueeze(1) * self.E + expert).reshape(-1)             # (n*k,) class-expert cell
        ones = torch.ones_like(gate).reshape(-1)
        on_event = None
        if self.event_mask is not None:
            on_event = self.event_mask[modality][sample, step].unsqueeze(1).expand_as(gate).reshape(-1).double()
        if pass_ in ("full", "both"):
            self.pair_counts[mi, layer].index_add_(0, cell, ones)
            self.gate_mass[mi, layer].index_add_(0, cell, gate.reshape(-1))
            rows = (sample.unsqueeze(1) * self.E + expert).reshape(-1)
            self.weight_sum[mi, layer].view(-1).index_add_(0, rows, gate.reshape(-1))
            self.tokens[mi, layer].index_add_(0, sample, torch.ones(len(sample), dtype=torch.float64))
            if on_event is not None:
                self.events[mi, layer, 0] += on_event.sum()
            self.events[mi, layer, 1] += ones.sum()
        if pass_ in ("pruned", "both"):
            k_flat = kept.reshape(-1).double()
            self.pruned_counts[mi, layer].index_add_(0, cell, ones)
            self.kept_counts[mi, layer].index_add_(0, cell, k_flat)
            if on_event is not None:
                self.events[mi, layer, 2] += (on_event * k_flat).sum()
            self.events[mi, layer, 3] += k_flat.sum()

    def result(self, factors: dict | None = None, quadratic: bool = True) -> ExpertAnalysis:
        """Build the analysis. factors: optional {name: (N,) or (N, k)} known per-sample factors."""
        M, L, C, E = len(self.modalities), self.L, self.C, self.E
        shape = (M, L, C, E)
        pair_counts, gate_mass = self.pair_counts.view(shape).numpy(), self.gate_mass.view(shape).numpy()
        pruned, kept = self.pruned_counts.view(shape).numpy(), self.kept_counts.view(shape).numpy()
        with np.errstate(invalid="ignore", divide="ignore"):
            norm = lambda a: a / a.sum(-1, keepdims=True)  # noqa: E731 - a class with no pairs -> NaN row
            usage, gate_usage, usage_at_p = norm(pair_counts), norm(gate_mass), norm(kept)
            survival = kept.sum(2) / pruned.sum(2)
            survival = np.where(pruned.sum(2) > 0, survival, np.nan)
            kept_share = kept.sum(2) / kept.sum((2, 3))[..., None]
            ev = self.events.numpy()
            has_events = self.event_mask is not None
            event_share = ev[..., 0] / ev[..., 1] if has_events else np.full((M, L), np.nan)
            event_share_at_p = ev[..., 2] / ev[..., 3] if has_events else np.full((M, L), np.nan)
        pairs = list(combinations(range(M), 2))
        dsc = np.full((len(pairs), L, C), np.nan)
        dsc_at_p, dsc_matched = dsc.copy(), dsc.copy()
        for pi, (a, b) in enumerate(pairs):
            for layer in range(L):
                dsc[pi, layer] = js_divergence(usage[a, layer], usage[b, layer])
                dsc_at_p[pi, layer] = js_divergence(usage_at_p[a, layer], usage_at_p[b, layer])
                profile_a, profile_b = np.nan_to_num(usage[a, layer]).T, np.nan_to_num(usage[b, layer]).T  # (E, C)
                cost = np.abs(profile_a[:, None, :] - profile_b[None, :, :]).sum(-1)                      # (E, E)
                col = min_cost_assignment(cost)
                dsc_matched[pi, layer] = js_divergence(usage[a, layer], usage[b, layer][:, col])
        class_js = np.array([[generalised_js(usage[mi, layer]) for layer in range(L)] for mi in range(M)])
        class_js_at_p = np.array([[generalised_js(usage_at_p[mi, layer]) for layer in range(L)] for mi in range(M)])

        names, regressors = ["label"], [np.eye(C)[self.labels.numpy()][:, 1:]]
        for name, values in (factors or {}).items():
            v = np.asarray(values, dtype=np.float64).reshape(self.N, -1)
            names.append(str(name))
            regressors.append(np.concatenate([v, v ** 2], 1) if quadratic else v)
        with np.errstate(invalid="ignore", divide="ignore"):
            weight = (self.weight_sum / self.tokens.clamp_min(1.0).unsqueeze(-1)).numpy()   # (M, L, N, E)
        factor_r2 = np.zeros((M, L, E, len(names)))
        for fi, x in enumerate(regressors):
            factor_r2[..., fi] = _r2_per_column(weight.reshape(M * L, self.N, E), x).reshape(M, L, E)
        r2_chance = np.array([x.shape[1] / max(self.N - 1, 1) for x in regressors])
        return ExpertAnalysis(
            modalities=self.modalities, factor_names=tuple(names), keep_ratio=self.keep_ratio, n_samples=self.N,
            pair_counts=pair_counts, gate_mass=gate_mass, pruned_pass_counts=pruned, kept_counts=kept,
            usage=usage, gate_usage=gate_usage, usage_at_p=usage_at_p, survival=survival, kept_share=kept_share,
            dsc=dsc, dsc_at_p=dsc_at_p, dsc_matched=dsc_matched, class_js=class_js, class_js_at_p=class_js_at_p,
            routing_weight=weight, factor_r2=factor_r2, r2_chance=r2_chance, event_share=event_share, event_share_at_p=event_share_at_p)


def _r2_per_column(targets: np.ndarray, x: np.ndarray) -> np.ndarray:
    """R^2 of least-squares fits (with intercept) of every column of targets (G, N, E) on x (N, r).
    A constant column (an expert never chosen, or always with the same weight) gets 0."""
    design = np.concatenate([np.ones((x.shape[0], 1)), x], 1)                 # (N, r + 1)
    G, N, E = targets.shape
    y = targets.transpose(1, 0, 2).reshape(N, G * E)
    beta, *_ = np.linalg.lstsq(design, y, rcond=None)
    resid = ((y - design @ beta) ** 2).sum(0)
    total = ((y - y.mean(0)) ** 2).sum(0)
    r2 = np.where(total > 1e-12 * N, 1.0 - resid / np.where(total > 0, total, 1.0), 0.0)
    return np.clip(r2, 0.0, 1.0).reshape(G, E)


@torch.no_grad()
def analyse_experts(model, data, split: str = "test", keep_ratio: float = 1.0, batch_size: int = 256,
                    factors: dict | None = None, event_mask: dict | None = None,
                    quadratic: bool = True, autocast=None, order: Tensor | None = None) -> ExpertAnalysis:
    """Expert analysis of a trained S3Model on one split (module docstring, part 2).

    Args:
        model: an S3Model (or a wrapper with `.module`); left in the train/eval mode it came in.
        data: the BenchmarkTensors the model was trained on (its standardisation is used).
        split: which split to analyse. keep_ratio: p (e.g. the validation-chosen p*).
        batch_size: Stage 3's batch size (cfg.eval_batch_size): pruning is per batch.
        factors: optional {name: (N,) or (N, k)} per-sample factors of the split, e.g. the
            synthetic benchmark's bench.meta['factors'][split].
        event_mask: optional {m: (N, T) bool}, e.g. bench.meta['event_mask'][split].
        quadratic: regress routing weights on factors' linear and squared terms (else linear).
        autocast: the context factory Stage 3 used (s3core.stages.autocast_for(cfg)), so a bf16
            model routes as it did on its curve; None runs in the model's dtype.
        order: the order the split's batches are drawn in (a permutation of its rows); None is
            file order. At p < 1 a pair survives by its rank within its batch, so the kept
            pairs equal a curve point's only in that point's order: pass Stage 3's
            `s3core.tensors.eval_order(n, cfg.seed, split)` (s3core.expert_trial does). At p = 1
            the order does not matter (nothing is pruned; routing is per token).
    Returns:
        ExpertAnalysis.
    """

    model = getattr(model, "module", model)
    modalities = tuple(data.modalities)
    ffns = {m: [block.ffn for block in model.encoders[m].blocks] for m in modalities}
    moe_cfg = ffns[modalities[0]][0].cfg
    st = data[split]
    acc = ExpertUsageAccumulator(modalities, len(ffns[modalities[0]]), moe_cfg.num_experts, moe_cfg.k,
                                 st.labels.cpu().numpy(), data.num_classes, keep_ratio, event_mask)
    state = {"rows": None, "pass": "both"}
    handles = []
    for m in modalities:
        for layer, ffn in enumerate(ffns[m]):
            seen: dict = {}

            def pre_hook(module, args, kwargs, seen=seen):
                x = args[0] if args else kwargs["x"]
                seen["shape"] = tuple(x.shape[:2])
                seen["mask"] = kwargs.get("token_mask", args[1] if len(args) > 1 else None)

            def router_hook(module, args, logits, m=m, layer=layer, seen=seen):
                B, T = seen["shape"]
                mask = seen["mask"]
                idx = (torch.arange(B * T, device=logits.device) if mask is None
                       else mask.reshape(B * T).nonzero().squeeze(1))
                acc.add(m, layer, logits, state["rows"][idx.cpu() // T], idx % T, state["pass"])

            handles.append(ffn.register_forward_pre_hook(pre_hook, with_kwargs=True))
            handles.append(ffn.router.register_forward_hook(router_hook))
    was_training = model.training
    model.eval()
    try:
        passes = [(1.0, "both")] if keep_ratio >= 1.0 else [(1.0, "full"), (float(keep_ratio), "pruned")]
        rows = torch.arange(len(st)) if order is None else torch.as_tensor(order).cpu().long()
        for p, name in passes:
            state["pass"] = name
            for idx in rows.split(batch_size):
                state["rows"] = idx                     # batch row -> row of the split
                inputs, _ = st.batch(idx.to(st.labels.device))
                with autocast() if autocast else contextlib.nullcontext():
                    model(standardise(inputs, data), keep_ratio=p)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return acc.result(factors, quadratic=quadratic)


# re-exported: the FLOP counts live in s3core.flops
from s3core.flops import (dense_ffn_flops_per_sample, expert_flops_at_keep_ratio, expert_flops_per_pair,  # noqa: E402,F401
                          expert_flops_per_sample, kept_pairs_per_layer, routed_tokens)
from s3core.tensors import standardise

__all__ = ["ExpertAnalysis", "ExpertUsageAccumulator", "analyse_experts", "dense_ffn_flops_per_sample",
           "expert_flops_at_keep_ratio", "expert_flops_per_pair", "expert_flops_per_sample", "generalised_js",
           "js_divergence", "kept_pairs_per_layer", "min_cost_assignment", "raw_feature_embeddings",
           "raw_feature_probe", "route_pairs", "routed_tokens"]
