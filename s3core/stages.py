"""S3's three stages, each callable alone (S3_METHOD.md).

- `specialize`: Stage 1, self-supervised, every parameter trains:
  L_special = lambda_rep * L_rep + lambda_dsc * L_dsc + lambda_aux * L_aux.
- `select`: Stage 2, supervised, only the routers train: L_select = lambda_suff * L_suff + lambda_min * L_min.
- `sparsify`: Stage 3, inference only: sweep the keep-ratio p and probe each.

Training stages take `start_epoch` / `optimizer_state` to resume, and call `on_epoch(EpochEnd)`
after every epoch, which is where a caller checkpoints and reports. Each epoch draws its shuffling
and augmentation from a generator seeded by (seed, stage, epoch), so a resumed run replays the
same batches as an uninterrupted one.
"""
from __future__ import annotations

import contextlib
import time
import zlib
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from s3core.config import S3Config
from s3core.distributed import all_reduce_grads, batch_wide_routing_stats, rank_world
from s3core.encoder import S3Model, set_trainable
from s3core.flops import count_expert_pairs
from s3core.objectives import select_loss, special_loss, supervised_loss  # noqa: F401  (importable from here)
from s3core.probe import linear_probe
from s3core.pruning import fit_thresholds, thresholds_applied
from s3core.stage_specs import SELECTION, SPECIALIZATION, SUPERVISED, Stage, every_param  # noqa: F401
from s3core.summary import choose_on_valid  # noqa: F401  (importable from here)
from s3core.tensors import BenchmarkTensors, embed, eval_order, shuffled_batches


class DivergenceError(RuntimeError):
    """A training loss became NaN or Inf. The trial must stop, not produce a curve of garbage."""


@dataclass
class EpochEnd:
    stage: str
    epoch: int                     # 0-based, within the stage
    metrics: dict                  # this epoch's means (losses, routing stats, valid_acc, time_s)
    model: nn.Module
    optimizer: torch.optim.Optimizer
    history: list | None = None    # the trial's history so far, this epoch included (set by run_trial)
    checkpoint_at: tuple | None = None  # (stage, epoch, history): where a resume continues, when not
                                   # here: an epoch replayed from the stage cache (s3core.stagecache)


OnEpoch = Callable[[EpochEnd], None]


def epoch_generator(seed: int, stage: str, epoch: int, device) -> torch.Generator:
    g = torch.Generator(device=device)
    g.manual_seed(zlib.crc32(f"{seed}/{stage}/{epoch}".encode()))
    return g


def autocast_for(cfg: S3Config):
    if cfg.bf16 and str(cfg.device).startswith("cuda"):
        return lambda: torch.autocast("cuda", dtype=torch.bfloat16)
    return None


def quick_valid_acc(model, data: BenchmarkTensors, cfg: S3Config) -> float:
    """A cheap p = 1 probe (one L2 value) for per-epoch progress; the real choice is in sparsify."""
    ac = autocast_for(cfg)
    rows = max(256, cfg.eval_rows)  # p = 1 prunes nothing: the batch only sets speed
    tr = embed(model, data, "train", 1.0, rows, ac)[:2]
    va = embed(model, data, "valid", 1.0, rows, ac)[:2]
    return linear_probe(tr, va, va, data.num_classes, l2_grid=(1e-2,), max_iter=50,
                        backend=cfg.probe_backend).valid_acc


def train_stage(stage: str, model: nn.Module, data: BenchmarkTensors, cfg: S3Config, *, loss_fn,
                params: list[nn.Parameter], lr: float, epochs: int, start_epoch: int = 0,
                optimizer_state: dict | None = None, on_epoch: OnEpoch | None = None,
                progress: bool = True) -> list[dict]:
    """The loop every training stage shares. Returns one metrics dict per epoch run."""
    device = data["train"].labels.device
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=cfg.weight_decay)
    if optimizer_state is not None:
        opt.load_state_dict(optimizer_state)
    ac = autocast_for(cfg)
    history = []
    bar = tqdm(range(start_epoch, epochs), desc=f"{stage}", disable=not progress, leave=False,
               unit="epoch", initial=start_epoch, total=epochs)
    for epoch in bar:
        t0 = time.perf_counter()
        model.train()
        gen = epoch_generator(cfg.seed, stage, epoch, device)
        sums: dict[str, torch.Tensor] = {}
        batches = shuffled_batches(len(data["train"]), cfg.batch_size,
                                   epoch_generator(cfg.seed, stage + "/order", epoch, "cpu"), device)
        _, world = rank_world()
        for idx in batches:
            # data parallel: the loss forwards this worker's share and sees the whole batch
            with ac() if ac else contextlib.nullcontext(), batch_wide_routing_stats(model):
                loss, parts = loss_fn(model, data, cfg, idx, gen)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if world > 1:
                all_reduce_grads(params)
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            # accumulate on the device: one host sync per epoch, not per step
            for name, value in {"loss": loss, **parts}.items():
                sums[name] = sums.get(name, 0) + value.detach().float()
        metrics = {name: float(v) / len(batches) for name, v in sums.items()}
        if not all(map(lambda v: v == v and abs(v) != float("inf"), metrics.values())):
            bad = {k: v for k, v in metrics.items() if not (v == v and abs(v) != float("inf"))}
            raise DivergenceError(f"{stage} epoch {epoch}: loss diverged ({bad}); lower lr or the loss weights")
        if cfg.epoch_probe:
            metrics["valid_acc"] = quick_valid_acc(model, data, cfg)
        metrics["time_s"] = time.perf_counter() - t0
        history.append(metrics)
        bar.set_postfix(loss=f"{metrics['loss']:.3f}", **({"val": f"{metrics['valid_acc']:.3f}"}
                                                          if "valid_acc" in metrics else {}))
        if on_epoch is not None:
            on_epoch(EpochEnd(stage, epoch, metrics, model, opt))
    return history


def run_stage(stage: Stage, model: nn.Module, data: BenchmarkTensors, cfg: S3Config, **kw) -> list[dict]:
    """Train `stage.trains` parameters with `stage.loss`; the others are frozen, then unfrozen."""
    names = set(set_trainable(model, stage.trains))
    params = [p for n, p in model.named_parameters() if n in names]
    try:
        return train_stage(stage.name, model, data, cfg, loss_fn=stage.loss, params=params,
                           lr=getattr(cfg, stage.lr_field), epochs=stage.epochs(cfg), **kw)
    finally:
        set_trainable(model, every_param)


def specialize(model: S3Model, data: BenchmarkTensors, cfg: S3Config, **kw) -> list[dict]:
    """Stage 1: train every parameter with L_special for cfg.epochs_special epochs."""
    return run_stage(SPECIALIZATION, model, data, cfg, **kw)


def select(model: S3Model, data: BenchmarkTensors, cfg: S3Config, **kw) -> list[dict]:
    """Stage 2: train only the routers W_g with L_select; every other parameter stays bit-identical."""
    return run_stage(SELECTION, model, data, cfg, **kw)


def embed_splits(model: S3Model, data: BenchmarkTensors, cfg: S3Config, keep_ratio: float) -> tuple[dict, dict]:
    """Stage 3's embeddings of train/valid/test at keep-ratio p, under cfg.prune_scope.

    - 'batch' (the paper's): each MoE layer keeps the top p of the pairs of each evaluation batch:
      batches of cfg.eval_rows (the trial's batch size unless eval_batch_size is set) in the order
      `eval_order(n, cfg.seed, split)`, the same for every p.
    - 'threshold': per MoE layer, the gate threshold keeping p of train's pairs (fit_thresholds),
      applied to every token alone; batches are padded to one shape, so a sample's embedding does
      not depend on its batch, to the last bit.
    At p = 1 nothing is pruned in either scope: no threshold is fitted, no pair is dropped.

    Returns ({split: (features, labels, kept_fraction)}, extra columns for the curve row):
    expert_flops, the expert FLOPs per test sample that the test split's forwards computed
    (s3core.flops.count_expert_pairs: kept pairs x 2 * 2 * d_model * expert_hidden), and in the
    'threshold' scope the fitted thresholds.
    """
    ac = autocast_for(cfg)
    counted: dict = {}

    def embed_split(split: str, p: float, **kw):
        if split != "test":
            return embed(model, data, split, p, cfg.eval_rows, ac, **kw)
        with count_expert_pairs(model) as count:   # the compute of this curve point, on test
            out = embed(model, data, split, p, cfg.eval_rows, ac, **kw)
        counted[split] = count
        return out

    splits = ("train", "valid", "test")
    extra: dict = {}
    if cfg.prune_scope == "threshold":
        thresholds = fit_thresholds(model, data, keep_ratio, cfg.eval_rows, ac) if keep_ratio < 1.0 else {}
        with thresholds_applied(model, thresholds):
            out = {s: embed_split(s, 1.0, pad=True) for s in splits}
        extra["thresholds"] = thresholds
    else:
        out = {s: embed_split(s, keep_ratio, order=eval_order(len(data[s]), cfg.seed, s)) for s in splits}
    extra["expert_flops"] = counted["test"].flops_per_sample(len(data["test"]))
    return out, extra


def embedding_shift(reference: torch.Tensor, z: torch.Tensor) -> float:
    """Mean over rows of 1 - cos(z, reference): how far pruning moved the embedding."""
    return float((1 - F.cosine_similarity(z.float(), reference.float(), dim=1)).mean())


def sparsify(model: S3Model, data: BenchmarkTensors, cfg: S3Config, keep_ratios=None,
             progress: bool = True) -> list[dict]:
    """Stage 3: for each keep-ratio p, embed every split with pruning p (embed_splits) and fit
    the linear probe (cfg.probe). Returns one row per p: keep_ratio, valid/test acc and macro-F1,
    the probe's l2 and whether it converged, the kept fraction of the test split's routing
    pairs, the expert FLOPs per test sample computed (embed_splits), the seconds spent embedding
    the three splits, in the 'threshold' scope the fitted thresholds and, when p = 1 is swept,
    embed_cos_dist (embedding_shift against p = 1)."""
    keep_ratios = cfg.keep_ratios if keep_ratios is None else tuple(keep_ratios)
    curve, test_z = [], []
    for p in tqdm(keep_ratios, desc="sparsify", disable=not progress, leave=False, unit="p"):
        t0 = time.perf_counter()
        emb, extra = embed_splits(model, data, cfg, float(p))
        tr, va, te = emb["train"], emb["valid"], emb["test"]
        embed_s = time.perf_counter() - t0
        res = linear_probe(tr[:2], va[:2], te[:2], data.num_classes, l2_grid=cfg.probe_l2, backend=cfg.probe_backend,
                           max_iter=cfg.probe_max_iter, kind=cfg.probe)
        curve.append({"keep_ratio": float(p), "valid_acc": res.valid_acc, "test_acc": res.test_acc,
                      "valid_f1": res.valid_f1, "test_f1": res.test_f1, "l2": res.l2,
                      "probe_converged": res.converged, "probe_iters": res.n_iter,
                      "kept_fraction": te[2], "embed_s": embed_s, **extra})
        test_z.append(te[0])
    if 1.0 in keep_ratios:   # how far pruning moved the test embeddings (s3core.diagnostics)
        ref = test_z[keep_ratios.index(1.0)]
        for row, z in zip(curve, test_z):
            row["embed_cos_dist"] = embedding_shift(ref, z)
    return curve
