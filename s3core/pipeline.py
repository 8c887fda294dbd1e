"""One trial: a method's stages in order, with resume, returning its history and curve.

Methods (the baselines use encoders with equal active parameters: a dense FFN of width d_ff is
the MoE with chi = rho = top_k = 1, whose single gate is always 1):
- ``s3``: Stage 1 -> Stage 2 -> Stage 3 sweep.
- ``s3_no_select``: Stage 1 -> Stage 3 (the paper's ablation without Selection).
- ``clip``: dense encoders trained with cross-modal InfoNCE only, probed at p = 1.
  The baselines train for epochs_special + epochs_select epochs: the same budget as S3.
- ``supervised``: dense encoders + a linear head trained on the labels (an upper bound), probed
  at p = 1 on the frozen z like every other method.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from torch import nn

from s3core.config import ConfigError, S3Config
from s3core.data.base import Benchmark, DataError
from s3core.encoder import S3Model
from s3core.stages import (EpochEnd, OnEpoch, choose_on_valid, select, sparsify, specialize, supervised_loss,
                           train_stage)
from s3core.tensors import BenchmarkTensors, to_tensors

METHODS = ("s3", "s3_no_select", "clip", "supervised")


def method_config(cfg: S3Config, method: str) -> S3Config:
    """The config a method actually trains with."""
    if method not in METHODS:
        raise ConfigError(f"unknown method {method!r}; choose one of: {', '.join(METHODS)}")
    if method in ("clip", "supervised"):
        # the same number of training epochs as S3's two stages: an equal budget, not only equal width
        changes = dict(chi=1, rho=1, top_k=None, keep_ratios=(1.0,), lambda_aux=0.0,
                       epochs_special=cfg.epochs_special + cfg.epochs_select, epochs_select=0)
        if method == "clip":
            changes["lambda_rep"] = 0.0
        return cfg.replace(**changes)
    return cfg


def method_stages(method: str, cfg: S3Config) -> list[tuple[str, int]]:
    """(stage name, epochs) in order, the training stages only; Stage 3 always follows."""
    if method == "s3":
        return [("special", cfg.epochs_special), ("select", cfg.epochs_select)]
    if method == "supervised":
        return [("supervised", cfg.epochs_special)]
    return [("special", cfg.epochs_special)]


@dataclass
class TrialResult:
    method: str
    config: dict
    history: list[dict]            # per epoch: {"stage", "epoch", losses..., valid_acc, time_s}
    curve: list[dict]              # per p: keep_ratio, valid_acc, test_acc, valid_f1, test_f1, ...
    summary: dict = field(default_factory=dict)
    seconds: float = 0.0


def summarize(curve: list[dict]) -> dict:
    """Summary scalars: p chosen on validation, and the unpruned point."""
    best = choose_on_valid(curve)
    out = {"best_keep_ratio": best["keep_ratio"], "best_valid_acc": best["valid_acc"],
           "test_acc_at_best": best["test_acc"], "test_f1_at_best": best["test_f1"]}
    full = [r for r in curve if r["keep_ratio"] == 1.0]
    if full:
        out["test_acc_no_prune"] = full[0]["test_acc"]
        out["valid_acc_no_prune"] = full[0]["valid_acc"]
    return out


def build_model(data: BenchmarkTensors | Benchmark, cfg: S3Config, method: str) -> nn.Module:
    torch.manual_seed(cfg.seed)
    model = S3Model(data.dims, data.seq_lens, cfg)
    if method == "supervised":
        model.sup_head = nn.Linear(len(data.modalities) * cfg.proj_dim, data.num_classes)
    return model


def check_fits(data: BenchmarkTensors, cfg: S3Config) -> None:
    n = len(data["train"])
    if cfg.batch_size > n:
        raise ConfigError(f"batch_size {cfg.batch_size} exceeds the train split ({n} samples); lower "
                          "the batch size")
    if cfg.batch_size < 2:
        raise ConfigError("batch_size must be >= 2: contrastive losses need in-batch negatives")


def run_trial(data: BenchmarkTensors | Benchmark, cfg: S3Config, method: str = "s3", *,
              on_epoch: OnEpoch | None = None, resume: dict | None = None, progress: bool = True,
              model: nn.Module | None = None) -> TrialResult:
    """Run one method end to end.

    Args:
        data: a Benchmark (moved to cfg.device here) or tensors already on the device.
        cfg: the run's config; `method_config` derives the baselines' variants.
        on_epoch: called after every training epoch (checkpoint and report there).
        resume: a state from `checkpoint_state`: finished stages are skipped, the interrupted
            one continues from its next epoch with its optimizer state.
        model: optionally a pre-built model (e.g. wrapped for DDP); built here otherwise.
    Returns:
        TrialResult with the history (including resumed epochs) and the Stage 3 curve.
    """
    t0 = time.perf_counter()
    cfg = method_config(cfg, method).validate()
    if isinstance(data, Benchmark):
        data = to_tensors(data, cfg.device)
    check_fits(data, cfg)
    if model is None:
        model = build_model(data, cfg, method).to(cfg.device)
    history: list[dict] = list(resume["history"]) if resume else []
    done_stage, done_epoch = (resume["stage"], resume["epoch"]) if resume else (None, -1)
    if resume:
        _unwrap(model).load_state_dict(resume["model"])
        restore_rng(resume)

    def record(ev: EpochEnd) -> None:
        history.append({"stage": ev.stage, "epoch": ev.epoch, **ev.metrics})
        ev.history = history
        if on_epoch is not None:
            on_epoch(ev)

    stages = method_stages(method, cfg)
    names = [s for s, _ in stages]
    if done_stage is not None and done_stage not in names:
        raise DataError(f"checkpoint is from stage {done_stage!r}, which method {method!r} does not have; "
                        "delete the checkpoint or resume with the method that wrote it")
    for stage, epochs in stages:
        start, opt_state = 0, None
        if done_stage is not None:
            if names.index(stage) < names.index(done_stage):
                continue
            if stage == done_stage:
                start, opt_state = done_epoch + 1, resume.get("optimizer")
                if start >= epochs:
                    continue
        kw = dict(start_epoch=start, optimizer_state=opt_state, on_epoch=record, progress=progress)
        if stage == "special":
            specialize(model, data, cfg, **kw)
        elif stage == "select":
            select(model, data, cfg, **kw)
        else:
            train_stage("supervised", model, data, cfg, loss_fn=supervised_loss,
                        params=list(model.parameters()), lr=cfg.lr, epochs=epochs, **kw)
    curve = sparsify(_unwrap(model), data, cfg, progress=progress)
    return TrialResult(method, cfg.to_dict(), history, curve, summarize(curve), time.perf_counter() - t0)


def _unwrap(model: nn.Module) -> nn.Module:
    return getattr(model, "module", model)


def checkpoint_state(ev: EpochEnd) -> dict:
    """Everything a resume needs after `ev`: model, optimizer, stage/epoch, history, and the
    global RNG streams (dropout draws from them; shuffling and augmentation use their own
    per-epoch generators, see stages.epoch_generator)."""
    state = {"model": _unwrap(ev.model).state_dict(), "optimizer": ev.optimizer.state_dict(),
             "stage": ev.stage, "epoch": ev.epoch, "history": list(ev.history or []),
             "torch_rng": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda_rng"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict) -> None:
    """Continue the global RNG streams where `checkpoint_state` saved them, so that a resumed
    run with dropout draws the same masks as an uninterrupted one. Checkpoints written before
    the RNG was saved have no "torch_rng": the stream then starts from build_model's seed."""
    if state.get("torch_rng") is not None:
        torch.set_rng_state(state["torch_rng"].cpu())
    cuda = state.get("cuda_rng")
    if cuda is not None and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


__all__ = ["METHODS", "TrialResult", "run_trial", "method_config", "method_stages", "summarize",
           "build_model", "checkpoint_state", "restore_rng"]
