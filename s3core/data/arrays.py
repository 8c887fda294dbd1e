"""A user's own data: a .npz file of arrays, or an Arrow benchmark directory (cache.py layout).

The .npz layout (np.savez(path, **arrays); read with allow_pickle=False, so it cannot run code):
    <split>_<modality>        float (N, T, D), or (N, D) for a vector (read as (N, 1, D))
    <split>_labels            integer (N,) class ids 0..C-1; C = max label + 1 over all splits
    <split>_<modality>_mask   optional bool or 0/1 (N, T); default: a step is real unless all of
                              its features are exactly 0 (MultiBench's left zero-padding)
for split in train, valid, test. Modalities are those of the train split, in file order.
"""
from __future__ import annotations

import os
import zipfile

import numpy as np

from .base import SPLITS, Benchmark, DataError, Split, mask_from_padding, select_modalities, validate_benchmark
from .cache import read_arrow_benchmark

_LAYOUT = ("<split>_<modality> (N, T, D) or (N, D) float, <split>_labels (N,) int, optional "
           "<split>_<modality>_mask (N, T) bool, for split in train/valid/test")


def _parse_keys(path: str, keys: list[str]) -> tuple[list[str], dict]:
    """npz keys -> (modalities in train order, {(split, modality or 'labels', is_mask): key})."""
    table = {}
    unknown = []
    for k in keys:
        split, sep, rest = k.partition("_")
        if not sep or split not in SPLITS or not rest:
            unknown.append(k)
            continue
        if rest == "labels":
            table[(split, "labels", False)] = k
        elif rest.endswith("_mask"):
            table[(split, rest[: -len("_mask")], True)] = k
        else:
            table[(split, rest, False)] = k
    if unknown:
        raise DataError(f"{path}: unexpected keys {unknown} (found {keys}); expected {_LAYOUT}")
    missing_labels = [f"{s}_labels" for s in SPLITS if (s, "labels", False) not in table]
    if missing_labels:
        raise DataError(f"{path}: missing {missing_labels} (found {keys}); expected {_LAYOUT}")
    modalities = [m for (s, m, is_mask) in table if s == "train" and m != "labels" and not is_mask]
    for s in SPLITS:
        have = sorted(m for (sp, m, is_mask) in table if sp == s and m != "labels" and not is_mask)
        if have != sorted(modalities):
            raise DataError(f"{path}: split '{s}' has modalities {have} but train has {sorted(modalities)} "
                            f"(found keys {keys}); every split needs the same modalities")
    orphan_masks = [table[k] for k in table if k[2] and (k[0], k[1], False) not in table]
    if orphan_masks:
        raise DataError(f"{path}: masks {orphan_masks} have no feature array; name them "
                        "<split>_<modality>_mask for an existing <split>_<modality>")
    if len(modalities) < 2:
        raise DataError(f"{path}: found {len(modalities)} modality ({modalities}) in keys {keys}; "
                        f"S3 needs at least 2; expected {_LAYOUT}")
    return modalities, table


def _load_npz(path: str) -> Benchmark:
    try:
        npz = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise DataError(f"{path}: cannot read as .npz ({type(e).__name__}: "
                        f"{str(e).splitlines()[0] if str(e) else ''}); save it with np.savez") from None
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise DataError(f"{path}: is a single .npy array, expected an .npz of named arrays ({_LAYOUT})")
    with npz:
        keys = list(npz.files)
        modalities, table = _parse_keys(path, keys)

        def get(key: str) -> np.ndarray:
            try:
                return npz[key]
            except ValueError as e:  # object arrays need pickle, which we never allow
                raise DataError(f"{path}: '{key}' is not a plain numeric array ({str(e).splitlines()[0]}); "
                                "save numeric numpy arrays, not objects") from None

        splits, max_label = {}, -1
        for s in SPLITS:
            lkey = table[(s, "labels", False)]
            labels = get(lkey)
            if labels.ndim == 2 and labels.shape[1] == 1:
                labels = labels[:, 0]
            if labels.dtype.kind not in "iub" or labels.ndim != 1:
                raise DataError(f"{path}: '{lkey}' is {labels.dtype} {labels.shape}; labels must be 1-D integer "
                                "class ids (e.g. labels.astype(np.int64); threshold float scores first)")
            labels = labels.astype(np.int64)
            n = labels.shape[0]
            if n == 0:
                raise DataError(f"{path}: '{lkey}' is empty; every split needs samples")
            if labels.min() < 0:
                raise DataError(f"{path}: '{lkey}' has negative labels (min {labels.min()}); "
                                "labels must be class ids 0..C-1")
            max_label = max(max_label, int(labels.max()))
            features, masks = {}, {}
            for m in modalities:
                fkey = table[(s, m, False)]
                x = get(fkey)
                if x.dtype.kind not in "fiub":
                    raise DataError(f"{path}: '{fkey}' has dtype {x.dtype}; features must be numeric (float)")
                if x.ndim == 2:
                    x = x[:, None, :]  # a vector modality is a length-1 sequence
                if x.ndim != 3:
                    raise DataError(f"{path}: '{fkey}' has shape {x.shape}; expected (N, T, D) or (N, D)")
                if x.shape[0] != n:
                    raise DataError(f"{path}: '{fkey}' has {x.shape[0]} samples but '{lkey}' has {n}; "
                                    "every array of a split needs one row per label")
                x = x.astype(np.float32)
                if not np.isfinite(x).all():
                    raise DataError(f"{path}: '{fkey}' contains NaN or Inf; clean or impute the features first")
                mkey = table.get((s, m, True))
                if mkey is None:
                    mask = mask_from_padding(x)
                else:
                    mask = get(mkey)
                    if mask.shape != x.shape[:2]:
                        raise DataError(f"{path}: '{mkey}' has shape {mask.shape} but '{fkey}' needs "
                                        f"{x.shape[:2]}; a mask is (N, T)")
                    if mask.dtype != np.bool_:
                        if mask.dtype.kind not in "iu" or not np.isin(mask, (0, 1)).all():
                            raise DataError(f"{path}: '{mkey}' must be bool or 0/1, got {mask.dtype}")
                        mask = mask.astype(np.bool_)
                features[m], masks[m] = x, mask
            splits[s] = Split(features=features, masks=masks, labels=labels)
    num_classes = max_label + 1
    if num_classes < 2:
        raise DataError(f"{path}: every label is 0; a classification benchmark needs at least 2 classes")
    name = os.path.splitext(os.path.basename(path))[0]
    return Benchmark(name=name, modalities=tuple(modalities), splits=splits, num_classes=num_classes,
                     meta={"source": path})


def load_arrays(path: str | os.PathLike, *, modalities=None) -> Benchmark:
    """Load the user's own data: a .npz file (layout in the module docstring) or an Arrow
    benchmark directory written by write_arrow_benchmark.

    Args:
        path: the .npz file or the Arrow directory.
        modalities: a subset (>= 2, in the order given) of the file's modalities; default all.
    Returns:
        A validated Benchmark.
    """
    path = os.path.expanduser(os.fspath(path))
    if os.path.isdir(path):
        return read_arrow_benchmark(path, modalities=modalities)
    if not os.path.exists(path):
        raise DataError(f"{path}: no such file or directory; pass a .npz file or an Arrow benchmark directory")
    bench = _load_npz(path)
    return validate_benchmark(select_modalities(bench, modalities, source=path), source=path)
