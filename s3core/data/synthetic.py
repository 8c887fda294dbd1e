"""A synthetic multimodal benchmark with known shared and unique latent factors.

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
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from .base import SPLITS, Benchmark, DataError, Split, mask_from_padding, validate_benchmark

LABEL_CHOICES = ("shared", "unique", "mixed")


@dataclass
class SyntheticConfig:
    n_train: int = 2000  # samples per split
    n_valid: int = 500
    n_test: int = 500
    seq_len: int = 8  # time steps T per modality
    dims: tuple[int, ...] = (16, 24)  # feature width D_m per modality; len(dims) >= 2 modalities
    shared_dim: int = 4  # size of Z_s, seen by every modality
    unique_dim: int = 4  # size of each Z_m, seen by modality m only
    noise: float = 0.1  # std of the Gaussian noise added to every feature
    label: str = "shared"  # 'shared': y from Z_s; 'unique': y from Z_1 (modality x1); 'mixed': both
    seed: int = 0  # the whole benchmark is a deterministic function of the config
    pad_fraction: float = 0.0  # fraction of sequences left-zero-padded by 1..T-1 steps (tests masks)


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


def make_synthetic(cfg: SyntheticConfig | None = None) -> Benchmark:
    """Generate the synthetic benchmark described in the module docstring.

    Args:
        cfg: the config; defaults to SyntheticConfig().
    Returns:
        A validated Benchmark with modalities "x1", "x2", ..., features (N, seq_len, dims[m])
        float32, binary labels, and meta['factors'][split] = {'shared': (N, shared_dim),
        'x1': (N, unique_dim), ...} plus meta['label_weights'] (w) and meta['config'].
    """
    cfg = cfg or SyntheticConfig()
    _check(cfg)
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
