"""Presets: one file per preset, each exposing `get_preset() -> dict` (data, not logic).

`load_preset(name)` turns that dict into a typed `Preset`; an unknown or missing key fails there,
with the preset's name, before anything runs. Keys:
    name         the preset's name
    benchmarks   default benchmarks (run_grid.py --benchmark overrides)
    synthetic    SyntheticConfig overrides, used when the benchmark is 'synthetic'
    base         S3Config overrides shared by every trial
    grid         S3Config field -> list of values: the cross product is run for method 's3'
    seeds        default seeds (--seeds overrides)
    baselines    other methods of s3core.methods; each runs over the grid fields its registry
                 entry sweeps (s3_no_select: chi), with the base config otherwise
    search       None, or {"space": define-by-run fn(optuna trial) -> constants dict,
                 "num_samples": int}: Optuna TPE instead of a grid
"""
from __future__ import annotations

import dataclasses
import importlib
from typing import Callable

PRESETS = ("smoke", "default", "paper", "search", "evidence", "evidence_s3", "fair_chance", "fair_chance_confirm",
           "fair_chance_heldout", "infomax_study")


class PresetError(ValueError):
    pass


@dataclasses.dataclass(frozen=True)
class SearchSpec:
    space: Callable            # define-by-run: fn(optuna trial) -> constants dict
    num_samples: int


@dataclasses.dataclass(frozen=True)
class Preset:
    name: str
    benchmarks: tuple[str, ...]
    base: dict
    grid: dict
    seeds: tuple[int, ...]
    baselines: tuple[str, ...] = ()
    synthetic: dict = dataclasses.field(default_factory=dict)
    search: SearchSpec | None = None

    @classmethod
    def from_dict(cls, raw: dict) -> "Preset":
        name = raw.get("name", "?")
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(raw) - fields)
        if unknown:
            raise PresetError(f"preset {name!r} has unknown key(s) {unknown}; valid keys: {', '.join(sorted(fields))}")
        missing = sorted(f.name for f in dataclasses.fields(cls) if f.name not in raw
                         and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING)
        if missing:
            raise PresetError(f"preset {name!r} lacks key(s) {missing}")
        search = raw.get("search")
        if search is not None and not isinstance(search, SearchSpec):
            extra = sorted(set(search) - {"space", "num_samples"})
            if extra:
                raise PresetError(f"preset {name!r}: unknown search key(s) {extra}; valid: space, num_samples")
            search = SearchSpec(**search)
        return cls(**{**raw, "benchmarks": tuple(raw["benchmarks"]), "seeds": tuple(raw["seeds"]),
                      "baselines": tuple(raw.get("baselines", ())), "search": search})


def load_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise PresetError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}")
    raw = importlib.import_module(f"search_spaces.{name}").get_preset()
    return Preset.from_dict({"name": name, **raw})
