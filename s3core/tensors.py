"""A Benchmark's arrays as device tensors, mini-batches, the Stage 1 views, and embedding (on the MoE
layers' row-stable path, `row_stable`)."""
from __future__ import annotations

import contextlib
import warnings
import zlib
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from s3core.data.base import Benchmark
from s3core.moe import MoEFFN


@dataclass
class SplitTensors:
    features: dict[str, Tensor]    # (N, T_m, D_m) float32
    masks: dict[str, Tensor]       # (N, T_m) bool
    labels: Tensor                 # (N,) int64

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def batch(self, idx: Tensor) -> tuple[dict[str, tuple[Tensor, Tensor]], Tensor]:
        """Rows `idx` as the model's input {m: (x, mask)} and their labels."""
        return {m: (self.features[m][idx], self.masks[m][idx]) for m in self.features}, self.labels[idx]


@dataclass
class BenchmarkTensors:
    modalities: tuple[str, ...]
    splits: dict[str, SplitTensors]
    num_classes: int
    dims: dict[str, int]
    seq_lens: dict[str, int]
    feature_mean: dict[str, Tensor]   # (D_m,) over the real steps of train
    feature_std: dict[str, Tensor]    # (D_m,)

    def __getitem__(self, split: str) -> SplitTensors:
        return self.splits[split]


def _as_tensor(a: np.ndarray, device) -> Tensor:
    with warnings.catch_warnings():
        # memory-mapped Arrow caches are read-only; torch only warns, and we never write to them
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(a).to(device)


def to_tensors(bench: Benchmark, device: str | torch.device = "cpu") -> BenchmarkTensors:
    """Move a Benchmark onto `device` once; every stage then slices these tensors."""
    splits = {}
    for name, split in bench.splits.items():
        splits[name] = SplitTensors(
            features={m: _as_tensor(split.features[m], device) for m in bench.modalities},
            masks={m: _as_tensor(split.masks[m], device) for m in bench.modalities},
            labels=_as_tensor(np.asarray(split.labels, dtype=np.int64), device))
    mean, std = {}, {}
    for m in bench.modalities:
        x, mk = splits["train"].features[m], splits["train"].masks[m]
        real = x[mk] if bool(mk.any()) else x.reshape(-1, x.shape[-1])  # (n_real, D)
        mean[m] = real.mean(0)
        std[m] = real.std(0).nan_to_num(1.0).clamp_min(1e-6)
    return BenchmarkTensors(tuple(bench.modalities), splits, bench.num_classes, bench.dims, bench.seq_lens,
                            mean, std)


def shuffled_batches(n: int, batch_size: int, generator: torch.Generator, device) -> list[Tensor]:
    """Index batches of one epoch. The last partial batch is dropped when it is smaller than
    half a batch: contrastive losses need enough in-batch negatives."""
    perm = torch.randperm(n, generator=generator).to(device)
    batches = list(perm.split(batch_size))
    if len(batches) > 1 and len(batches[-1]) < batch_size // 2:
        batches.pop()
    return batches


def ordered_batches(n: int, batch_size: int, device) -> list[Tensor]:
    """The split in file order, in batches of batch_size (the expert analysis reads it this way;
    Stage 3 draws its order from the seed: eval_order)."""
    return list(torch.arange(n, device=device).split(batch_size))


def augment(inputs: dict[str, tuple[Tensor, Tensor]], std: dict[str, Tensor], noise: float,
            step_drop: float, generator: torch.Generator) -> dict[str, tuple[Tensor, Tensor]]:
    """One view for L_rep (our choice; the paper does not name its augmentations):
    Gaussian feature noise of `noise` train-stds, and each real time step masked out with
    probability `step_drop` (the encoder keeps at least one step per sample)."""
    out = {}
    for m, (x, mask) in inputs.items():
        eps = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        x = x + noise * std[m] * eps
        if step_drop > 0:
            keep = torch.rand(mask.shape, generator=generator, device=mask.device) >= step_drop
            mask = mask & keep
        out[m] = (x, mask)
    return out


def standardise(inputs: dict[str, tuple[Tensor, Tensor]], data: BenchmarkTensors) -> dict[str, tuple[Tensor, Tensor]]:
    """Per-feature standardisation with train statistics (MultiBench features span wild scales);
    padded steps stay zero."""
    out = {}
    for m, (x, mask) in inputs.items():
        x = (x - data.feature_mean[m]) / data.feature_std[m]
        out[m] = (x * mask.unsqueeze(-1).to(x.dtype), mask)
    return out


def eval_order(n: int, seed: int, split: str) -> Tensor:
    """The order of a split's evaluation batches in the 'batch' prune scope: a permutation drawn
    from (seed, split), the same for every p of a trial. MultiBench files are sorted by video, so
    file order would put one speaker's clips in one batch."""
    g = torch.Generator().manual_seed(zlib.crc32(f"{seed}/eval/{split}".encode()))
    return torch.randperm(n, generator=g)


def _pad_batch(inputs: dict[str, tuple[Tensor, Tensor]], rows: int) -> dict[str, tuple[Tensor, Tensor]]:
    """Append empty samples (zero features, no real step) up to `rows` rows."""
    out = {}
    for m, (x, mask) in inputs.items():
        extra = rows - x.shape[0]
        out[m] = (torch.cat([x, x.new_zeros((extra,) + x.shape[1:])]),
                  torch.cat([mask, mask.new_zeros((extra,) + mask.shape[1:])]))
    return out


@torch.no_grad()
def forward_batches(model, data: BenchmarkTensors, split: str, batch_size: int, keep_ratio: float,
                    autocast=None, *, order: Tensor | None = None, pad: bool = False):
    """Run `model` over a split in consecutive batches; yields (idx, outputs, n_real) per batch.

    Args:
        order: the sample order (a permutation of the split); default file order.
        pad: fill the last batch up to batch_size with empty samples, so every forward has one
            shape (with the MoE layers' row-stable path, a sample's output then depends on it
            alone); its first n_real rows are the real samples.
    """
    model.eval()
    st = data[split]
    device = st.labels.device
    order = torch.arange(len(st), device=device) if order is None else order.to(device)
    for idx in order.split(batch_size):
        inputs, _ = st.batch(idx)
        if pad and len(idx) < batch_size:
            inputs = _pad_batch(inputs, batch_size)
        with autocast() if autocast else contextlib.nullcontext():
            outs = model(standardise(inputs, data), keep_ratio=keep_ratio)
        yield idx, outs, len(idx)


def moe_layers(model: torch.nn.Module) -> dict[str, MoEFFN]:
    """Every MoE layer of `model` by its module name, e.g. 'encoders.text.blocks.1.ffn': one per
    modality and depth, in the order the model holds them."""
    return {name: m for name, m in model.named_modules() if isinstance(m, MoEFFN)}


@contextlib.contextmanager
def row_stable(model: torch.nn.Module):
    """Evaluate every MoE layer on its row-stable path (moe.row_stable_matmul) inside the block."""
    layers = list(moe_layers(model).values())
    before = [m.row_stable for m in layers]
    for m in layers:
        m.row_stable = True
    try:
        yield
    finally:
        for m, b in zip(layers, before):
            m.row_stable = b


@torch.no_grad()
def embed(model, data: BenchmarkTensors, split: str, keep_ratio: float, batch_size: int,
          autocast=None, *, order: Tensor | None = None, pad: bool = False) -> tuple[Tensor, Tensor, float]:
    """Frozen embeddings [z_1, ..., z_M] of a split at keep-ratio p, in the split's own order.

    Batches follow `order` (default file order) and, with pad=True, all have batch_size rows
    (forward_batches). The MoE layers run on their row-stable path (row_stable).

    Returns (features (N, M * proj_dim), labels (N,), mean kept fraction of routing pairs)."""
    st = data[split]
    z_all, kept = None, []
    with row_stable(model):
        for idx, outs, n_real in forward_batches(model, data, split, batch_size, keep_ratio, autocast,
                                                 order=order, pad=pad):
            z = torch.cat([outs[m].z.float() for m in data.modalities], 1)[:n_real]
            if z_all is None:
                z_all = z.new_empty(len(st), z.shape[1])
            z_all[idx] = z
            kept.extend(torch.stack(o.intermediates["routing"]["kept_fraction"]).mean() for o in outs.values())
    return z_all, st.labels, float(torch.stack(kept).mean()) if kept else 1.0
