"""Presets: one file per preset, each exposing `get_preset() -> dict` (data, not logic).

Keys of a preset dict:
    name         the preset's name
    benchmarks   default benchmarks (run_grid.py --benchmark overrides)
    synthetic    SyntheticConfig overrides, used when the benchmark is 'synthetic'
    base         S3Config overrides shared by every trial
    grid         S3Config field -> list of values: the cross product is run for method 's3'
    seeds        default seeds (--seeds overrides)
    baselines    methods run once per benchmark x seed with the base config ('clip', 's3_no_select'
                 (which is also gridded over chi), 'supervised')
    search       None, or {"space": define-by-run fn(optuna trial) -> constants dict,
                 "num_samples": int}: Optuna TPE instead of a grid
"""
from __future__ import annotations

import importlib

PRESETS = ("smoke", "default", "paper", "search")


class PresetError(ValueError):
    pass


def load_preset(name: str) -> dict:
    if name not in PRESETS:
        raise PresetError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}")
    preset = importlib.import_module(f"search_spaces.{name}").get_preset()
    preset.setdefault("name", name)
    return preset
