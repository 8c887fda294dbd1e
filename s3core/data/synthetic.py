"""A synthetic multimodal benchmark with known latent factors, in named variants.

Variant 'base' (the default, `SyntheticConfig()`) is the original generator, kept bit-identical.
The variants 'clean', 'nuisance' and 'localized' are built to test S3's mechanism (below).

## variant='base'
Generative model (all draws from `seed`):
    Z_s ~ N(0, I_shared_dim)            one shared factor per sample, seen by every modality
    Z_m ~ N(0, I_unique_dim)            one unique factor per sample and modality m
    x_m[t] = tanh(A_{m,t} [Z_s; Z_m]) + noise * eps,  eps ~ N(0, I)
where A_{m,t} is a fixed random (D_m, shared_dim + unique_dim) matrix per modality and time step,
scaled by 1/sqrt(shared_dim + unique_dim) so its outputs have unit variance before the tanh (the
tanh is a mild nonlinearity: a linear probe still reads the factors well, an encoder must undo a
little saturation). Labels are binary: y = 1[w . f > 0] with a random w and f = Z_s ('shared'),
Z_1 of modality x1 ('unique') or [Z_s; Z_1] ('mixed'); w is symmetric so classes are balanced.

The mixing matrices and w come from one random stream and the samples from others, so changing a
split size does not change the task. meta['factors'][split] holds the factor arrays.

## The variants: design, fixed before any study was run on them
The mechanism under test (docs/S3_METHOD.md): Stage 2 trains only the routers, with the labels,
so it should give high router scores to the (token, expert) pairs that carry task-relevant
content; Stage 3 keeps the highest-scoring fraction p of a batch's pairs, so lowering p should
first remove task-irrelevant paths (accuracy rises) and then relevant ones (it falls): an
inverted U. 'base' cannot show this: nothing in it is task-irrelevant, every step carries every
factor, and its label is linear in the factors (a logistic regression on the time-mean raw
features scores 94-95%: docs/RESULTS.md, "Synthetic variants", with the command). The variants add what the argument needs, one thing at a time:
- nuisance factors, task-irrelevant (never in the label) and of high variance: N_s shared by
  every modality (what cross-modal InfoNCE keeps) and N_m unique to modality m (what intra-modal
  InfoNCE keeps). InfoMax objectives keep them; the paper says S3 prunes them.
- a label nonlinear in the relevant factors, so no method (and no linear reference) saturates.
- relevant factors that live in some time steps only (one event window per sample), the other
  steps carrying nuisance only: then whole tokens are task-irrelevant, which only per-token
  routing can tell apart and only pair-level pruning can drop.
- MultiBench-like sizes: T = 50 steps, widths 35 and 300 (MOSI/MOSEI vision and text).

Generative model of the variants (per sample; all draws from `seed`):
    Z_s ~ N(0, I_shared_dim),  Z_m ~ N(0, I_unique_dim)                 relevant factors
    N_s ~ N(0, I_nuisance_shared_dim),  N_m ~ N(0, I_nuisance_unique_dim)  nuisance factors
    r_m = tanh(A_m [Z_s; Z_m])           (D_m,) the relevant content of modality m
    u_m = tanh(B_m [N_s; N_m])           (D_m,) the nuisance content of modality m
    x_m[t] = e[t] * r_m + nuisance_scale * b[t] * u_m + noise * eps_t,  eps_t ~ N(0, I)
A_m and B_m are fixed random maps, one per modality for every step (a feature extractor applied
frame by frame: content, not position, tells the steps apart), scaled to unit variance before
the tanh. e[t], b[t] in {0, 1} say which steps carry which content:
    event_steps = 0: e[t] = b[t] = 1 at every step (factors everywhere, as in 'base');
    event_steps = L > 0: e = 1 on a window of L consecutive real steps starting at a uniformly
        random step, the same window in every modality (an aligned event), and b = 1 - e.
Label: f = Z_s ('shared'), Z_1 ('unique') or [Z_s; Z_1] ('mixed'); w, u, v are orthonormal random
directions in f's space (so f needs >= 3 dims) and
    y = 1[cos(theta) * (w . f) + sin(theta) * (u . f) * (v . f) > 0],  theta = label_nonlinearity * pi / 2.
The two terms are uncorrelated, of unit variance and symmetric, so classes are balanced;
label_nonlinearity 0 is a linear label, 1 a pure XOR-like product (a linear read-out of f is then
at chance). y is a deterministic function of f: a model that recovers f can reach 100%. At 0.5
the best linear classifier of f itself, sign(w . f), agrees with y on 81.4% of 1e6 draws
(`a, b, c = np.random.default_rng(0).standard_normal((3, 10**6)); t = np.pi / 4;
((np.cos(t) * a + np.sin(t) * b * c > 0) == (a > 0)).mean()`); a probe of the raw features, which
also carry nuisance and noise, scores 68-82% (docs/RESULTS.md, "Synthetic variants").

| field (None = the variant's value) | base | clean | nuisance | localized | entangled |
|---|---|---|---|---|---|
| n_train / n_valid / n_test | 2000/500/500 | 2000/500/500 | 2000/500/500 | 2000/500/500 | 2000/500/500 |
| seq_len, dims | 8, (16, 24) | 50, (35, 300) | 50, (35, 300) | 50, (35, 300) | 50, (35, 300) |
| shared_dim, unique_dim | 4, 4 | 4, 4 | 4, 4 | 4, 4 | 4, 4 |
| noise | 0.1 | 0.3 | 0.3 | 0.3 | 0.3 |
| label, label_nonlinearity | shared, 0 | mixed, 0.5 | mixed, 0.5 | mixed, 0.5 | mixed, 0.5 |
| nuisance_shared_dim, nuisance_unique_dim | 0, 0 | 0, 0 | 4, 4 | 4, 4 | 0, 0 |
| nuisance_scale | 0 | 0 | 2.0 | 2.0 | 0 |
| event_steps | 0 (all) | 0 (all) | 0 (all) | 10 of 50 | 10 of 50 |
| distractor_scale | 0 | 0 | 0 | 0 | 1.0 |

Why these values: nuisance_scale 2 gives each nuisance-carrying step 4x the variance of the
relevant content (tanh's output std is 0.628 for a unit-variance input: `np.tanh(np.random.
default_rng(0).standard_normal(10**6)).std()`), the "high
variance" that makes InfoMax objectives keep it; noise 0.3 is about half that std; a 10-step
event leaves 80% of the tokens task-irrelevant; label_nonlinearity 0.5 weighs the linear and the
product part equally.

Variant 'entangled' (issue 20), added after the evidence study found 'localized' gives pruning
little to gain: its nuisance lives in its own random map B_m, which a linear probe of the raw
features projects away (the raw probe scores about the same on 'clean' and 'nuisance'). Here the
40 steps outside the event carry *relevant-looking* content instead:
    x_m[t] = e[t] * r_m + distractor_scale * b[t] * tanh(A_m [D_s,t; D_m,t]) + noise * eps_t
with D_s,t ~ N(0, I_shared_dim) shared by the modalities and D_m,t ~ N(0, I_unique_dim), fresh at
every step (time-varying) and independent of the label: the same map A_m as the relevant content,
so the distractors span the same feature subspace and no projection removes them. What tells the
event apart: its 10 steps repeat one vector (r_m), the distractor steps change at every step.
Removing the distractor steps from the input (the input-masking headroom, s3core.diagnostics) is
what pruning could gain; docs/RESULTS.md ("A variant with real headroom") measures it.

What the mechanism predicts (written before running the study; the study reports whatever comes):
- clean: nothing task-irrelevant to prune, so no rise at intermediate p (a control).
- nuisance: every token mixes relevant and nuisance content, so pruning can help only if experts
  specialise by content and Selection lowers the scores of nuisance-carrying experts.
- localized: 40 of 50 steps are nuisance only; if Selection lowers their router scores, pruning
  drops them first, and the share of kept pairs on event steps rises as p falls
  (s3core.analysis.analyse_experts measures it).
The raw-feature linear probe (s3core.analysis.raw_feature_embeddings) is the reference row of
every report on these data.

meta (variants): 'factors'[split] = {'shared': Z_s, 'x1': Z_1, ..., 'nuisance_shared': N_s,
'nuisance_x1': N_1, ...} (nuisance keys only when their dim > 0); 'factor_kinds' = {name:
'relevant_shared' | 'relevant_unique' | 'nuisance_shared' | 'nuisance_unique'}; 'event_mask'[split]
= {m: (N, T) bool, True where r_m is present}; 'label_directions' = (w, u, v); 'variant'.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import numpy as np

from .base import SPLITS, Benchmark, DataError, Split, mask_from_padding, validate_benchmark

LABEL_CHOICES = ("shared", "unique", "mixed")

# The variants' values for every field left at None (the table in the module docstring).
_BASE = dict(n_train=2000, n_valid=500, n_test=500, seq_len=8, dims=(16, 24), shared_dim=4, unique_dim=4,
             noise=0.1, label="shared", pad_fraction=0.0, nuisance_shared_dim=0, nuisance_unique_dim=0,
             nuisance_scale=0.0, event_steps=0, label_nonlinearity=0.0, distractor_scale=0.0)
_MULTIBENCH_SIZED = dict(_BASE, seq_len=50, dims=(35, 300), noise=0.3, label="mixed", label_nonlinearity=0.5)
VARIANTS: dict[str, dict] = {
    "base": _BASE,
    "clean": _MULTIBENCH_SIZED,
    "nuisance": dict(_MULTIBENCH_SIZED, nuisance_shared_dim=4, nuisance_unique_dim=4, nuisance_scale=2.0),
    "localized": dict(_MULTIBENCH_SIZED, nuisance_shared_dim=4, nuisance_unique_dim=4, nuisance_scale=2.0,
                      event_steps=10),
    # issue 20: the irrelevant steps carry relevant-looking content (docstring, 'entangled')
    "entangled": dict(_MULTIBENCH_SIZED, event_steps=10, distractor_scale=1.0),
}


@dataclass
class SyntheticConfig:
    """The benchmark's config. A field left at None takes the variant's value (VARIANTS, the
    table in the module docstring); the values after each field are variant 'base''s. Build a
    variant as SyntheticConfig(variant=...): dataclasses.replace(cfg, variant=...) would carry
    over cfg's already-resolved values."""

    n_train: int | None = None  # samples per split (2000)
    n_valid: int | None = None  # (500)
    n_test: int | None = None  # (500)
    seq_len: int | None = None  # time steps T per modality (8)
    dims: tuple[int, ...] | None = None  # feature width D_m per modality, >= 2 modalities ((16, 24))
    shared_dim: int | None = None  # size of Z_s, seen by every modality (4)
    unique_dim: int | None = None  # size of each Z_m, seen by modality m only (4)
    noise: float | None = None  # std of the Gaussian noise added to every feature (0.1)
    label: str | None = None  # 'shared': y from Z_s; 'unique': y from Z_1 (modality x1); 'mixed': both
    seed: int = 0  # the whole benchmark is a deterministic function of the config
    pad_fraction: float | None = None  # fraction of sequences left-zero-padded (tests masks) (0.0)
    variant: str = "base"  # base (the original generator) | clean | nuisance | localized
    # --- variants other than 'base' only (base: all 0) ---
    nuisance_shared_dim: int | None = None  # size of N_s, task-irrelevant, seen by every modality
    nuisance_unique_dim: int | None = None  # size of each N_m, task-irrelevant, modality m only
    nuisance_scale: float | None = None  # amplitude of the nuisance content relative to the relevant
    event_steps: int | None = None  # 0: relevant content at every step; L: only in an L-step window
    label_nonlinearity: float | None = None  # 0: y linear in f; 1: y = sign of a product (XOR-like)
    distractor_scale: float | None = None  # amplitude of the in-subspace distractors on the steps
                                           # outside the event ('entangled': 1; others: 0, none)

    def __post_init__(self):
        if self.variant not in VARIANTS:
            raise DataError(f"synthetic: variant={self.variant!r}; choose one of {list(VARIANTS)}")
        for name, value in VARIANTS[self.variant].items():
            if getattr(self, name) is None:
                setattr(self, name, value)
        if not isinstance(self.dims, tuple):
            self.dims = tuple(self.dims)  # a list from JSON or the command line


def _check(cfg: SyntheticConfig) -> None:
    if len(cfg.dims) < 2:
        raise DataError(f"synthetic: dims={tuple(cfg.dims)} gives {len(cfg.dims)} modality; "
                        "S3 needs at least 2, e.g. dims=(16, 24)")
    if min(cfg.n_train, cfg.n_valid, cfg.n_test) < 1 or cfg.seq_len < 1 or min(cfg.dims) < 1:
        raise DataError("synthetic: n_train, n_valid, n_test, seq_len and every dim must be >= 1")
    if cfg.shared_dim < 1 or cfg.unique_dim < 1:
        raise DataError("synthetic: shared_dim and unique_dim must be >= 1")
    if cfg.label not in LABEL_CHOICES:
        raise DataError(f"synthetic: label={cfg.label!r}; choose one of {list(LABEL_CHOICES)}")
    if not 0.0 <= cfg.pad_fraction <= 1.0 or cfg.noise < 0:
        raise DataError("synthetic: pad_fraction must lie in [0, 1] and noise must be >= 0")
    new_fields = ("nuisance_shared_dim", "nuisance_unique_dim", "nuisance_scale", "event_steps",
                  "label_nonlinearity", "distractor_scale")
    if cfg.variant == "base":
        set_ = [f for f in new_fields if getattr(cfg, f) != _BASE[f]]
        if set_:
            raise DataError(f"synthetic: {set_} apply to the variants, not to 'base'; pick one, e.g. "
                            "variant='nuisance'")
        return
    if cfg.distractor_scale < 0:
        raise DataError(f"synthetic: distractor_scale={cfg.distractor_scale} must be >= 0")
    if cfg.nuisance_shared_dim < 0 or cfg.nuisance_unique_dim < 0 or cfg.nuisance_scale < 0:
        raise DataError("synthetic: nuisance_shared_dim, nuisance_unique_dim and nuisance_scale must be >= 0")
    if not 0 <= cfg.event_steps <= cfg.seq_len:
        raise DataError(f"synthetic: event_steps={cfg.event_steps} must lie in 0..seq_len={cfg.seq_len} "
                        "(0: relevant content at every step)")
    if not 0.0 <= cfg.label_nonlinearity <= 1.0:
        raise DataError(f"synthetic: label_nonlinearity={cfg.label_nonlinearity} must lie in [0, 1]")
    if _label_dim(cfg) < 3:
        raise DataError(f"synthetic: the '{cfg.label}' label needs >= 3 factor dims for its three directions "
                        f"w, u, v, got {_label_dim(cfg)}; raise shared_dim/unique_dim")


def _label_dim(cfg: SyntheticConfig) -> int:
    return {"shared": cfg.shared_dim, "unique": cfg.unique_dim,
            "mixed": cfg.shared_dim + cfg.unique_dim}[cfg.label]


def make_synthetic(cfg: SyntheticConfig | None = None) -> Benchmark:
    """Generate the synthetic benchmark described in the module docstring.

    Args:
        cfg: the config; defaults to SyntheticConfig() (variant 'base').
    Returns:
        A validated Benchmark with modalities "x1", "x2", ..., features (N, seq_len, dims[m])
        float32, binary labels, and meta['factors'][split] = {'shared': (N, shared_dim),
        'x1': (N, unique_dim), ...} plus meta['label_weights'] (w) and meta['config'];
        the variants add the nuisance factors and meta 'factor_kinds', 'event_mask', 'variant'.
    """
    cfg = cfg or SyntheticConfig()
    _check(cfg)
    if cfg.variant != "base":
        return _make_variant(cfg)
    names = tuple(f"x{i + 1}" for i in range(len(cfg.dims)))
    k = cfg.shared_dim + cfg.unique_dim
    structure_seq, *split_seqs = np.random.SeedSequence(cfg.seed).spawn(1 + len(SPLITS))
    structure_rng = np.random.default_rng(structure_seq)
    mixing = {m: structure_rng.standard_normal((cfg.seq_len, k, d)) / np.sqrt(k)  # (T, k, D)
              for m, d in zip(names, cfg.dims)}
    label_dim = {"shared": cfg.shared_dim, "unique": cfg.unique_dim,
                 "mixed": cfg.shared_dim + cfg.unique_dim}[cfg.label]
    w = structure_rng.standard_normal(label_dim)

    sizes = {"train": cfg.n_train, "valid": cfg.n_valid, "test": cfg.n_test}
    splits, factors = {}, {}
    for split_name, seq in zip(SPLITS, split_seqs):
        rng = np.random.default_rng(seq)
        n = sizes[split_name]
        z_shared = rng.standard_normal((n, cfg.shared_dim))
        z_unique = {m: rng.standard_normal((n, cfg.unique_dim)) for m in names}
        features, masks = {}, {}
        for m in names:
            z = np.concatenate([z_shared, z_unique[m]], axis=1)  # (N, k)
            x = np.tanh(np.einsum("nk,tkd->ntd", z, mixing[m]))  # (N, T, D)
            x += cfg.noise * rng.standard_normal(x.shape)
            x = x.astype(np.float32)
            if cfg.pad_fraction > 0 and cfg.seq_len > 1:
                padded = rng.random(n) < cfg.pad_fraction
                n_pad = rng.integers(1, cfg.seq_len, size=n) * padded  # 0 = not padded
                x[np.arange(cfg.seq_len)[None, :] < n_pad[:, None]] = 0.0  # left padding, like MultiBench
            features[m] = x
            masks[m] = mask_from_padding(x)
        label_factor = {"shared": z_shared, "unique": z_unique[names[0]],
                        "mixed": np.concatenate([z_shared, z_unique[names[0]]], axis=1)}[cfg.label]
        labels = (label_factor @ w > 0).astype(np.int64)
        splits[split_name] = Split(features=features, masks=masks, labels=labels)
        factors[split_name] = {"shared": z_shared, **z_unique}

    config = asdict(cfg)
    config["dims"] = list(cfg.dims)
    bench = Benchmark(name="synthetic", modalities=names, splits=splits, num_classes=2,
                      meta={"source": "synthetic", "config": config, "factors": factors,
                            "label_weights": w})
    return validate_benchmark(bench, source="synthetic")


def _orthonormal(rng: np.random.Generator, dim: int, count: int) -> np.ndarray:
    """`count` orthonormal random directions in R^dim, as rows (count, dim)."""
    q, r = np.linalg.qr(rng.standard_normal((dim, count)))
    return (q * np.sign(np.diag(r))).T  # sign fix: a unique Q for the drawn matrix


def _variant_label(f: np.ndarray, directions: np.ndarray, nonlinearity: float) -> np.ndarray:
    """y = 1[cos(theta) w.f + sin(theta) (u.f)(v.f) > 0], theta = nonlinearity * pi / 2. f: (N, k)."""
    theta = nonlinearity * math.pi / 2
    lin, pu, pv = (f @ directions.T).T  # each (N,)
    return (math.cos(theta) * lin + math.sin(theta) * pu * pv > 0).astype(np.int64)


def _make_variant(cfg: SyntheticConfig) -> Benchmark:
    """The variants' generator (module docstring, 'The variants')."""
    names = tuple(f"x{i + 1}" for i in range(len(cfg.dims)))
    T, L = cfg.seq_len, cfg.event_steps
    k_rel = cfg.shared_dim + cfg.unique_dim
    k_nui = cfg.nuisance_shared_dim + cfg.nuisance_unique_dim
    structure_seq, *split_seqs = np.random.SeedSequence([cfg.seed, 1]).spawn(1 + len(SPLITS))
    structure_rng = np.random.default_rng(structure_seq)
    relevant_map = {m: structure_rng.standard_normal((k_rel, d)) / np.sqrt(k_rel) for m, d in zip(names, cfg.dims)}
    nuisance_map = {m: structure_rng.standard_normal((k_nui, d)) / np.sqrt(max(k_nui, 1))
                    for m, d in zip(names, cfg.dims)}
    directions = _orthonormal(structure_rng, _label_dim(cfg), 3)  # rows w, u, v

    sizes = {"train": cfg.n_train, "valid": cfg.n_valid, "test": cfg.n_test}
    splits, factors, event_masks = {}, {}, {}
    for split_name, seq in zip(SPLITS, split_seqs):
        rng = np.random.default_rng(seq)
        n = sizes[split_name]
        z_shared = rng.standard_normal((n, cfg.shared_dim))
        z_unique = {m: rng.standard_normal((n, cfg.unique_dim)) for m in names}
        n_shared = rng.standard_normal((n, cfg.nuisance_shared_dim))
        n_unique = {m: rng.standard_normal((n, cfg.nuisance_unique_dim)) for m in names}
        # left padding first, then the event window inside the real steps
        n_pad = np.zeros(n, dtype=np.int64)
        max_pad = T - max(L, 1)  # at least one real step, and room for the whole window
        if cfg.pad_fraction > 0 and max_pad > 0:
            padded = rng.random(n) < cfg.pad_fraction
            n_pad = rng.integers(1, max_pad + 1, size=n) * padded
        steps = np.arange(T)[None, :]                                         # (1, T)
        real = steps >= n_pad[:, None]                                        # (N, T)
        if L > 0:
            start = n_pad + (rng.random(n) * (T - n_pad - L + 1)).astype(np.int64)  # uniform in n_pad..T-L
            event = real & (steps >= start[:, None]) & (steps < start[:, None] + L)
            background = real & ~event
        else:
            event = background = real
        distract = None
        if cfg.distractor_scale > 0:  # fresh relevant-like factors at every step (drawn only here)
            d_shared = rng.standard_normal((n, T, cfg.shared_dim))
            distract = {m: np.concatenate([d_shared, rng.standard_normal((n, T, cfg.unique_dim))], 2) for m in names}
        features, masks = {}, {}
        for m in names:
            relevant = np.tanh(np.concatenate([z_shared, z_unique[m]], 1) @ relevant_map[m])  # (N, D)
            x = cfg.noise * rng.standard_normal((n, T, relevant.shape[1]), dtype=np.float32)
            x += event[:, :, None] * relevant[:, None, :].astype(np.float32)
            if k_nui > 0 and cfg.nuisance_scale > 0:
                nuisance = np.tanh(np.concatenate([n_shared, n_unique[m]], 1) @ nuisance_map[m])
                x += background[:, :, None] * (cfg.nuisance_scale * nuisance[:, None, :]).astype(np.float32)
            if distract is not None:
                fake = np.tanh(distract[m] @ relevant_map[m]).astype(np.float32)            # (N, T, D)
                x += background[:, :, None] * (cfg.distractor_scale * fake)
            x[~real] = 0.0  # left padding, like MultiBench
            features[m] = x
            masks[m] = mask_from_padding(x)
        label_factor = {"shared": z_shared, "unique": z_unique[names[0]],
                        "mixed": np.concatenate([z_shared, z_unique[names[0]]], axis=1)}[cfg.label]
        labels = _variant_label(label_factor, directions, cfg.label_nonlinearity)
        splits[split_name] = Split(features=features, masks=masks, labels=labels)
        f = {"shared": z_shared, **z_unique}
        if cfg.nuisance_shared_dim > 0:
            f["nuisance_shared"] = n_shared
        if cfg.nuisance_unique_dim > 0:
            f.update({f"nuisance_{m}": n_unique[m] for m in names})
        factors[split_name] = f
        event_masks[split_name] = {m: event & masks[m] for m in names}

    kinds = {"shared": "relevant_shared", **{m: "relevant_unique" for m in names}}
    kinds.update({k: ("nuisance_shared" if k == "nuisance_shared" else "nuisance_unique")
                  for k in factors["train"] if k.startswith("nuisance_")})
    config = asdict(cfg)
    config["dims"] = list(cfg.dims)
    bench = Benchmark(name="synthetic", modalities=names, splits=splits, num_classes=2,
                      meta={"source": "synthetic", "variant": cfg.variant, "config": config,
                            "factors": factors, "factor_kinds": kinds, "event_mask": event_masks,
                            "label_directions": directions})
    return validate_benchmark(bench, source="synthetic")
