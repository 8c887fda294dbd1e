"""The in-memory form every benchmark takes: per-modality float32 arrays + labels, three splits.

Every loader (synthetic, MultiBench, a user's arrays) returns a `Benchmark`. The model only ever
sees this shape, so any data a user can turn into arrays runs through the whole pipeline.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

import numpy as np

SPLITS = ("train", "valid", "test")


class DataError(ValueError):
    """Bad input data. The message is one line that names the file (if any) and the fix."""


@dataclass
class Split:
    """One split of a benchmark.

    Args:
        features: modality name -> float32 array (N, T_m, D_m). A vector modality has T_m = 1.
        masks: modality name -> bool array (N, T_m), True where a time step holds real data
            (MultiBench left-pads sequences with zeros; padded steps are False).
        labels: int64 array (N,), class ids 0..num_classes-1.
    """

    features: dict[str, np.ndarray]
    masks: dict[str, np.ndarray]
    labels: np.ndarray

    def __len__(self) -> int:
        return int(self.labels.shape[0])


@dataclass
class Benchmark:
    """A multimodal classification benchmark with train/valid/test splits."""

    name: str
    modalities: tuple[str, ...]
    splits: dict[str, Split]
    num_classes: int
    meta: dict = field(default_factory=dict)  # provenance: source file, label rule, seed, ...

    @property
    def dims(self) -> dict[str, int]:
        """Feature width D_m per modality."""
        return {m: int(self.splits["train"].features[m].shape[2]) for m in self.modalities}

    @property
    def seq_lens(self) -> dict[str, int]:
        """Sequence length T_m per modality."""
        return {m: int(self.splits["train"].features[m].shape[1]) for m in self.modalities}

    def __getitem__(self, split: str) -> Split:
        return self.splits[split]

    def describe(self) -> str:
        """One line: sizes, modalities and, for a file-backed benchmark, the file and protocol used."""
        sizes = "/".join(str(len(self.splits[s])) for s in SPLITS if s in self.splits)
        mods = ", ".join(f"{m} {self.seq_lens[m]}x{self.dims[m]}" for m in self.modalities)
        line = f"{self.name}: {sizes} train/valid/test samples, modalities {mods}"
        protocol = self.meta.get("protocol")
        if protocol:
            line += "; " + ", ".join(f"{k} {v}" for k, v in protocol.items())
        elif self.meta.get("source"):
            line += f"; source {self.meta['source']}"
        return line


def mask_from_padding(features: np.ndarray) -> np.ndarray:
    """(N, T, D) -> (N, T) bool: a step is real unless all its features are exactly zero."""
    return np.any(features != 0, axis=2)


def validate_benchmark(bench: Benchmark, source: str = "", check_values: bool = True) -> Benchmark:
    """Check shapes, dtypes, finiteness and labels; raise DataError with a one-line fix.

    check_values=False skips the one check that reads every feature value (finiteness): for an
    Arrow cache whose writer already made it, a full scan would page the whole file in.
    """
    where = f"{source}: " if source else ""
    if len(bench.modalities) < 2:
        raise DataError(f"{where}S3 needs at least 2 modalities, got {list(bench.modalities)}; "
                        "pass two or more modality names")
    for split_name in SPLITS:
        if split_name not in bench.splits:
            raise DataError(f"{where}missing split '{split_name}'; provide train, valid and test")
        split = bench.splits[split_name]
        n = split.labels.shape[0]
        if n == 0:
            raise DataError(f"{where}split '{split_name}' is empty; every split needs samples")
        if split.labels.ndim != 1 or not np.issubdtype(split.labels.dtype, np.integer):
            raise DataError(f"{where}labels of '{split_name}' must be a 1-D integer array, got "
                            f"{split.labels.dtype} {split.labels.shape}; convert labels to int class ids")
        if split.labels.min() < 0 or split.labels.max() >= bench.num_classes:
            raise DataError(f"{where}labels of '{split_name}' must lie in 0..{bench.num_classes - 1}, got "
                            f"{split.labels.min()}..{split.labels.max()}; remap labels to class ids")
        for m in bench.modalities:
            if m not in split.features:
                raise DataError(f"{where}split '{split_name}' lacks modality '{m}'; add it or drop it "
                                "from the modality list")
            x = split.features[m]
            if x.ndim != 3:
                raise DataError(f"{where}'{split_name}/{m}' must be (N, T, D), got shape {x.shape}; "
                                "reshape vectors to (N, 1, D)")
            if x.shape[0] != n:
                raise DataError(f"{where}'{split_name}/{m}' has {x.shape[0]} samples but the labels have "
                                f"{n}; every modality needs one row per label")
            if x.dtype != np.float32:
                raise DataError(f"{where}'{split_name}/{m}' must be float32, got {x.dtype}")
            if check_values and not np.isfinite(x).all():
                raise DataError(f"{where}'{split_name}/{m}' contains NaN or Inf; clean or impute the "
                                "features first")
            dim0 = bench.splits["train"].features[m].shape[2]
            if x.shape[2] != dim0:
                raise DataError(f"{where}'{split_name}/{m}' has feature dim {x.shape[2]} but train has "
                                f"{dim0}; all splits must share the feature dims")
            mk = split.masks[m]
            if mk.shape != x.shape[:2] or mk.dtype != np.bool_:
                raise DataError(f"{where}mask of '{split_name}/{m}' must be bool {x.shape[:2]}")
    return bench


def select_modalities(bench: Benchmark, modalities=None, source: str = "") -> Benchmark:
    """The benchmark restricted to `modalities` (in that order); None keeps all of them."""
    if modalities is None:
        return bench
    where = f"{source}: " if source else ""
    if isinstance(modalities, str):
        modalities = [modalities]
    wanted = tuple(modalities)
    unknown = [m for m in wanted if m not in bench.modalities]
    if unknown:
        raise DataError(f"{where}unknown modalities {unknown}; choose from {list(bench.modalities)}")
    if len(set(wanted)) != len(wanted):
        raise DataError(f"{where}modalities {list(wanted)} repeat a name; list each modality once")
    if len(wanted) < 2:
        raise DataError(f"{where}S3 needs at least 2 modalities, got {list(wanted)}; "
                        "pass two or more modality names")
    splits = {name: Split(features={m: s.features[m] for m in wanted},
                          masks={m: s.masks[m] for m in wanted}, labels=s.labels)
              for name, s in bench.splits.items()}
    return Benchmark(name=bench.name, modalities=wanted, splits=splits, num_classes=bench.num_classes,
                     meta=dict(bench.meta))


def content_digest(bench: Benchmark) -> str:
    """A SHA-256 of everything a trial trains and is scored on: the benchmark's name, modality
    names (in order), num_classes, and for every split its labels and every modality's features
    and mask, each with its dtype and shape (so a reshape with the same bytes differs). Every byte
    is hashed, not a sample of rows: one edited value changes the digest. `meta` (provenance) is
    left out. Contiguous arrays (the Arrow cache's memory-mapped views) are hashed in place.

    Returns:
        64 hex characters.
    """
    h = hashlib.sha256()

    def add_array(tag: str, a: np.ndarray) -> None:
        a = np.asarray(a)
        h.update(f"{tag}|{a.dtype.str}|{a.shape}|".encode())
        h.update(np.ascontiguousarray(a))       # the buffer itself: no copy when contiguous

    h.update(json.dumps([bench.name, list(bench.modalities), bench.num_classes]).encode())
    for split_name in sorted(bench.splits):
        split = bench.splits[split_name]
        add_array(f"{split_name}/labels", split.labels)
        for m in bench.modalities:
            add_array(f"{split_name}/features/{m}", split.features[m])
            if m in split.masks:
                add_array(f"{split_name}/masks/{m}", split.masks[m])
    return h.hexdigest()
