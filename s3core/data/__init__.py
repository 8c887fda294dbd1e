"""s3core's data layer: every source becomes a validated `Benchmark` (see base.py and docs/DATA.md).

    load_benchmark("synthetic")                              built-in, no files
    load_benchmark("mosi", data_dir="~/data/affect")         MultiBench pickles (cached as Arrow);
                                                             the paper's protocol by default
    load_benchmark("arrays", data_dir="my_data.npz")         the user's own arrays

The benchmarks are a registry (registry.py): a new one is one entry plus its loader.
"""
from __future__ import annotations

from .arrays import load_arrays
from .base import SPLITS, Benchmark, DataError, Split, mask_from_padding, select_modalities, validate_benchmark
from .cache import read_arrow_benchmark, write_arrow_benchmark
from .multibench import ALIGNMENTS, DEFAULT_MODALITIES, LABEL_RULES, load_multibench
from .registry import DATASETS, Dataset, dataset_names, get_dataset, load_benchmark, load_for_grid
from .safe_pickle import safe_load_pickle
from .synthetic import SyntheticConfig, make_synthetic

BENCHMARKS = dataset_names()   # the built-in ones; the registry (s3core.data.registry) has any added since

__all__ = [
    "ALIGNMENTS", "BENCHMARKS", "DATASETS", "DEFAULT_MODALITIES", "LABEL_RULES", "SPLITS", "Benchmark", "DataError",
    "Dataset", "Split", "SyntheticConfig", "dataset_names", "get_dataset", "load_arrays", "load_benchmark",
    "load_for_grid", "load_multibench", "make_synthetic", "mask_from_padding", "read_arrow_benchmark",
    "safe_load_pickle", "select_modalities", "validate_benchmark", "write_arrow_benchmark",
]
