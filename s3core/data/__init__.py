"""s3core's data layer: every source becomes a validated `Benchmark` (see base.py and docs/DATA.md).

    load_benchmark("synthetic")                              built-in, no files
    load_benchmark("mosi", data_dir="~/data/affect")         MultiBench pickles (cached as Arrow);
                                                             the paper's protocol by default
    load_benchmark("arrays", data_dir="my_data.npz")         the user's own arrays
"""
from __future__ import annotations

import os
from dataclasses import fields

from .arrays import load_arrays
from .base import SPLITS, Benchmark, DataError, Split, mask_from_padding, select_modalities, validate_benchmark
from .cache import read_arrow_benchmark, write_arrow_benchmark
from .multibench import ALIGNMENTS, DEFAULT_MODALITIES, LABEL_RULES, load_multibench
from .safe_pickle import safe_load_pickle
from .synthetic import SyntheticConfig, make_synthetic

BENCHMARKS = ("synthetic", "mosi", "mosei", "urfunny", "mustard", "arrays")
_ALIASES = {"ur-funny": "urfunny", "ur_funny": "urfunny", "humor": "urfunny", "sarcasm": "mustard",
            "npz": "arrays", "arrow": "arrays"}

__all__ = [
    "ALIGNMENTS", "BENCHMARKS", "DEFAULT_MODALITIES", "LABEL_RULES", "SPLITS", "Benchmark", "DataError", "Split", "SyntheticConfig",
    "load_arrays", "load_benchmark", "load_multibench", "make_synthetic", "mask_from_padding",
    "read_arrow_benchmark", "safe_load_pickle", "select_modalities", "validate_benchmark",
    "write_arrow_benchmark",
]


def load_benchmark(name: str, *, data_dir: str | os.PathLike | None = None, modalities=None,
                   label_rule: str | None = None, synthetic: SyntheticConfig | dict | None = None,
                   seed: int = 0, cache_dir: str | os.PathLike | None = None, source_file: str | None = None,
                   alignment: str | None = None) -> Benchmark:
    """Load any benchmark by name.

    Args:
        name: one of BENCHMARKS ('ur-funny'/'humor' and 'sarcasm' are accepted as aliases).
        data_dir: MultiBench: the folder with the pickle; 'arrays': the .npz file or Arrow directory.
        modalities: a subset (>= 2) of the benchmark's modalities, in the order given; default all,
            except MultiBench: ('vision', 'text'), the paper's ('all' for the three).
        label_rule: MultiBench only: 'nonnegative', 'positive' or 'binary' (default per benchmark).
        synthetic: 'synthetic' only: a SyntheticConfig (or a dict of its fields); its own seed is used.
        seed: 'synthetic' only, when `synthetic` is None: SyntheticConfig(seed=seed).
        cache_dir: MultiBench only: where the Arrow cache lives (default <data_dir>/.s3cache).
        source_file: MultiBench only: which of the benchmark's files to read (default its first).
        alignment: MultiBench only: 'text_start' (default, MultiBench's aligned mode) or 'nonzero'.
    The MultiBench settings used are in the result's meta["protocol"].
    """
    key = _ALIASES.get(str(name).lower(), str(name).lower())
    if key not in BENCHMARKS:
        raise DataError(f"unknown benchmark '{name}'; choose one of: {', '.join(BENCHMARKS)}")
    if key != "synthetic" and synthetic is not None:
        raise DataError(f"synthetic=... applies only to the 'synthetic' benchmark, not '{name}'; drop it")
    if key in ("synthetic", "arrays"):
        for opt, value in (("label_rule", label_rule), ("source_file", source_file), ("alignment", alignment)):
            if value is not None:
                raise DataError(f"{opt} applies only to MultiBench benchmarks, not '{name}'; drop it")
    if key == "synthetic":
        if synthetic is None:
            cfg = SyntheticConfig(seed=seed)
        elif isinstance(synthetic, dict):
            known = {f.name for f in fields(SyntheticConfig)}
            unknown = sorted(set(synthetic) - known)
            if unknown:
                raise DataError(f"unknown synthetic config fields {unknown}; choose from {sorted(known)}")
            cfg = SyntheticConfig(**{k: tuple(v) if k == "dims" else v for k, v in synthetic.items()})
        else:
            cfg = synthetic
        bench = make_synthetic(cfg)
        return validate_benchmark(select_modalities(bench, modalities, source="synthetic"), source="synthetic")
    if data_dir is None:
        what = "the .npz file or Arrow directory" if key == "arrays" else "the folder holding the MultiBench pickle"
        raise DataError(f"benchmark '{name}' needs data_dir: {what}")
    data_dir = os.path.expanduser(os.fspath(data_dir))
    if key == "arrays":
        return load_arrays(data_dir, modalities=modalities)
    return load_multibench(key, data_dir, modalities=modalities, label_rule=label_rule, cache_dir=cache_dir,
                           source_file=source_file, alignment=alignment)
