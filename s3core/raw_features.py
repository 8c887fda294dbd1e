"""The raw-feature reference (split from s3core.analysis): per sample, the mean over real time
steps of each modality's raw features, concatenated, fed to the same linear probe as any
method's embeddings: how much of a label a linear read-out of the inputs gets."""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from s3core.probe import linear_probe


def raw_feature_embeddings(split, modalities=None):
    """Mean over the real (mask True) steps of each modality's raw features, concatenated.

    Args:
        split: a data Split (numpy) or a tensors SplitTensors (torch): anything with
            `.features` {m: (N, T_m, D_m)} and `.masks` {m: (N, T_m) bool}.
        modalities: the order of the blocks; default the split's own order.
    Returns:
        (N, sum_m D_m) float32, numpy for a numpy split and a torch tensor (on the split's
        device) for a torch one. A sample with no real step of a modality gets zeros there.
    """
    modalities = tuple(split.features) if modalities is None else tuple(modalities)
    blocks = []
    for m in modalities:
        x, mask = split.features[m], split.masks[m]
        if isinstance(x, Tensor):
            w = mask.to(torch.float32).unsqueeze(2)                                  # (N, T, 1)
            blocks.append((x.float() * w).sum(1) / w.sum(1).clamp_min(1.0))
        else:
            w = np.asarray(mask, dtype=np.float32)[:, :, None]
            blocks.append((np.asarray(x, dtype=np.float32) * w).sum(1) / np.maximum(w.sum(1), 1.0))
    if blocks and isinstance(blocks[0], Tensor):
        return torch.cat(blocks, 1)
    return np.concatenate(blocks, 1).astype(np.float32)


def raw_feature_probe(bench, l2_grid=(1e-4, 1e-3, 1e-2, 1e-1), backend: str = "auto", max_iter: int = 1000):
    """The raw-feature reference on a Benchmark: `linear_probe` (train fits, valid chooses the L2,
    test scores) on `raw_feature_embeddings` of each split. Returns a ProbeResult."""

    xs = [(torch.from_numpy(raw_feature_embeddings(bench[s], bench.modalities)),
           torch.from_numpy(np.asarray(bench[s].labels, dtype=np.int64))) for s in ("train", "valid", "test")]
    return linear_probe(*xs, num_classes=bench.num_classes, l2_grid=l2_grid, max_iter=max_iter, backend=backend)



__all__ = ["raw_feature_embeddings", "raw_feature_probe"]
