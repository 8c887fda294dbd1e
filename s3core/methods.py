"""Methods as a registry: what each trains, in which order, with which config, and what it sweeps.

Adding a method is one `Method` entry in METHODS; nothing else switches on its name. The
baselines use encoders with equal active parameters: a dense FFN of width d_ff is the MoE with
chi = rho = top_k = 1, whose single gate is always 1.

- ``s3``: Stage 1 (Specialization) -> Stage 2 (Selection, routers only) -> Stage 3 sweep of p.
- ``s3_no_select``: Stage 1 -> Stage 3 (the paper's ablation without Selection).
- ``clip``: dense encoders trained with cross-modal InfoNCE only, probed at p = 1, for
  epochs_special + epochs_select epochs: the same budget as S3's two stages.
- ``supervised``: dense encoders + a linear task head trained on the labels (the supervised
  control), probed at p = 1 on the frozen z like every other method.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import nn

from s3core.config import ConfigError, S3Config
from s3core.stages import SELECTION, SPECIALIZATION, SUPERVISED, Stage


@dataclass(frozen=True)
class Method:
    """One method of the comparison.

    Args:
        name: the registry key, logged as the MLflow tag ``s3.method``.
        stages: the training stages in order; Stage 3 (sparsify + probe) always follows.
        config_changes: cfg -> {field: value} the method trains with instead of the trial's.
        head: (embedding width, num classes) -> a module trained with the encoders, or None.
        sweeps: the grid fields this method is run over (None: every field of the grid; ()
            once per benchmark and seed with the base config).
        label: how plots and tables name it.
    """

    name: str
    stages: tuple[Stage, ...]
    config_changes: Callable[[S3Config], dict] = lambda cfg: {}
    head: Callable[[int, int], nn.Module] | None = None
    sweeps: tuple[str, ...] | None = None
    label: str = ""

    def config(self, cfg: S3Config) -> S3Config:
        """The config this method actually trains with (logged as the run's params)."""
        changes = self.config_changes(cfg)
        return cfg.replace(**changes) if changes else cfg


def _dense_equal_budget(cfg: S3Config, **more) -> dict:
    """Dense encoders of equal active width, trained as long as S3's two stages together."""
    return dict(chi=1, rho=1, top_k=None, keep_ratios=(1.0,), lambda_aux=0.0,
                epochs_special=cfg.epochs_special + cfg.epochs_select, epochs_select=0, **more)


def _linear_head(width: int, num_classes: int) -> nn.Module:
    return nn.Linear(width, num_classes)


METHODS: dict[str, Method] = {m.name: m for m in (
    Method("s3", (SPECIALIZATION, SELECTION), sweeps=None, label="S3"),
    Method("s3_no_select", (SPECIALIZATION,), sweeps=("chi",), label="s3 without Stage 2"),
    Method("clip", (SPECIALIZATION,), config_changes=lambda cfg: _dense_equal_budget(cfg, lambda_rep=0.0),
           sweeps=(), label="clip"),
    Method("supervised", (SUPERVISED,), config_changes=_dense_equal_budget, head=_linear_head, sweeps=(),
           label="supervised (upper bound)"),
)}
METHOD_NAMES = tuple(METHODS)


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise ConfigError(f"unknown method {name!r}; choose one of: {', '.join(METHOD_NAMES)}")
    return METHODS[name]


__all__ = ["Method", "METHODS", "METHOD_NAMES", "get_method"]
