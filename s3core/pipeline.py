"""One trial: a method's stages in order (s3core.methods), with resume, returning its history and curve."""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from types import SimpleNamespace

import torch
from torch import nn

from s3core.analysis import ExpertAnalysis
from s3core.config import ConfigError, S3Config
from s3core.data.base import Benchmark, DataError
from s3core.diagnostics import diagnostics_batch, masking_headroom, routing_diagnostics
from s3core.distributed import rank_world
from s3core.encoder import S3Model
from s3core.expert_trial import trial_expert_analysis
from s3core.methods import METHOD_NAMES as METHODS, all_stages, get_method
from s3core.stagecache import StageCache, rng_state
from s3core.stages import EpochEnd, OnEpoch, run_stage, sparsify
from s3core.summary import SUMMARY_METRICS, summarize
from s3core.tensors import BenchmarkTensors, to_tensors


def method_config(cfg: S3Config, method: str) -> S3Config:
    """The config a method actually trains with."""
    return get_method(method).config(cfg)


def method_stages(method: str, cfg: S3Config) -> list[tuple[str, int]]:
    """(stage name, epochs) in order, the training stages only; Stage 3 always follows."""
    return [(stage.name, stage.epochs(cfg)) for stage in get_method(method).stages]


@dataclass
class TrialResult:
    method: str
    config: dict
    history: list[dict]            # per epoch: {"stage", "epoch", losses..., valid_acc, time_s}
    curve: list[dict]              # per p: keep_ratio, valid_acc, test_acc, valid_f1, test_f1, ...
    summary: dict = field(default_factory=dict)
    seconds: float = 0.0
    model: nn.Module | None = field(default=None, repr=False, compare=False)   # the trained model (None: raw_probe)
    experts: ExpertAnalysis | None = field(default=None, repr=False, compare=False)  # s3core.expert_trial; None: no experts

    def as_dict(self) -> dict:
        """The result as plain data (the model left out)."""
        return {"method": self.method, "config": self.config, "history": self.history, "curve": self.curve,
                "summary": self.summary, "seconds": self.seconds}


def build_model(data: BenchmarkTensors | Benchmark, cfg: S3Config, method: str) -> nn.Module:
    torch.manual_seed(cfg.seed)
    make_head = get_method(method).head
    head = make_head(len(data.modalities) * cfg.proj_dim, data.num_classes, cfg) if make_head else None
    return S3Model(data.dims, data.seq_lens, cfg, task_head=head)


def check_fits(data: BenchmarkTensors, cfg: S3Config) -> None:
    n = len(data["train"])
    if cfg.batch_size > n:
        raise ConfigError(f"batch_size {cfg.batch_size} exceeds the train split ({n} samples); lower "
                          "the batch size")
    if cfg.batch_size < 2:
        raise ConfigError("batch_size must be >= 2: contrastive losses need in-batch negatives")


def run_trial(data: BenchmarkTensors | Benchmark, cfg: S3Config, method: str = "s3", *,
              on_epoch: OnEpoch | None = None, resume: dict | None = None, progress: bool = True,
              model: nn.Module | None = None, stage_cache: StageCache | None = None) -> TrialResult:
    """Run one method end to end.

    Args:
        data: a Benchmark (moved to cfg.device here) or tensors already on the device.
        cfg: the run's config; `method_config` derives the baselines' variants.
        on_epoch: called after every training epoch (checkpoint and report there).
        resume: a state from `checkpoint_state`: finished stages are skipped, the interrupted
            one continues from its next epoch with its optimizer state.
        model: optionally a pre-built model (e.g. wrapped for DDP); built here otherwise.
        stage_cache: a StageCache (s3core.stagecache): a stage whose result is stored there is
            loaded instead of trained (its epochs replayed to on_epoch), and a stage trained
            here is stored. What happened per stage lands in stage_cache.events. Off (None)
            by default. With several data-parallel workers rank 0 looks up, claims and stores
            (with every rank's RNG streams); every rank follows its decision and loads.
    Returns:
        TrialResult with the history (including resumed epochs), the Stage 3 curve and, for a
        model with experts, the expert analysis at p = 1 and at the chosen p (s3core.expert_trial).
    """
    t0 = time.perf_counter()
    cfg = method_config(cfg, method).validate()
    meta = getattr(data, "meta", None)     # the synthetic benchmark's factors, for the expert analysis
    if isinstance(data, Benchmark):
        data = to_tensors(data, cfg.device)
    check_fits(data, cfg)
    method_entry = get_method(method)
    if method_entry.evaluate is not None:      # a reference without an encoder: no stage trains
        curve = method_entry.evaluate(data, cfg)
        return TrialResult(method, cfg.to_dict(), [], curve, summarize(curve), time.perf_counter() - t0)
    if model is None:
        model = build_model(data, cfg, method).to(cfg.device)
    history: list[dict] = list(resume["history"]) if resume else []
    done_stage, done_epoch = (resume["stage"], resume["epoch"]) if resume else (None, -1)
    if resume:
        _unwrap(model).load_state_dict(resume["model"])
        restore_rng(resume)

    diag_batch = diagnostics_batch(data, meta) if cfg.diagnostics else None

    def record(ev: EpochEnd) -> None:
        if diag_batch is not None and ev.checkpoint_at is None:    # a replayed epoch has them already
            ev.metrics.update(routing_diagnostics(ev.model, *diag_batch))
        history.append({"stage": ev.stage, "epoch": ev.epoch, **ev.metrics})
        ev.history = history
        if on_epoch is not None:
            on_epoch(ev)

    stages = method_entry.stages
    names = [stage.name for stage in stages]
    if done_stage is not None and done_stage not in names:
        raise DataError(f"checkpoint is from stage {done_stage!r}, which method {method!r} does not have; "
                        "delete the checkpoint or resume with the method that wrote it")
    cache = _StageKeys(stage_cache, cfg, method_entry) if stage_cache is not None else None
    if stage_cache is not None:
        stage_cache.events = []
    skip_to = -1                   # stages up to this index come from the cache
    for i, stage in enumerate(stages):
        start, opt_state = 0, None
        if done_stage is not None:
            if names.index(stage.name) < names.index(done_stage):
                continue
            if stage.name == done_stage:
                start, opt_state = done_epoch + 1, resume.get("optimizer")
                if start >= stage.epochs(cfg):
                    continue
        if i <= skip_to:
            continue
        if cache is None or start > 0 or stage.epochs(cfg) == 0:
            run_stage(stage, model, data, cfg, start_epoch=start, optimizer_state=opt_state, on_epoch=record,
                      progress=progress)
            continue
        # the deepest stage already stored, without waiting on any lock; else claim this one
        j, entry = cache.deepest(i)
        if entry is not None:
            cache.reuse(j, entry, model, history, record)
            skip_to = j
            continue
        with cache.claim(i) as entry:
            if entry is not None:      # another trial trained it while this one waited
                cache.reuse(i, entry, model, history, record)
                continue
            t_stage = time.perf_counter()
            run_stage(stage, model, data, cfg, start_epoch=0, optimizer_state=None, on_epoch=record,
                      progress=progress)
            cache.stored(i, model, history, time.perf_counter() - t_stage)
    curve = sparsify(_unwrap(model), data, cfg, progress=progress)
    summary = summarize(curve)
    if diag_batch is not None:
        summary.update(routing_diagnostics(model, *diag_batch))
        if "test_acc_no_prune" in summary:
            summary.update(masking_headroom(model, data, cfg, meta, summary["test_acc_no_prune"]))
    experts = trial_expert_analysis(_unwrap(model), data, cfg, summary["best_keep_ratio"], meta)
    return TrialResult(method, cfg.to_dict(), history, curve, summary, time.perf_counter() - t0,
                       _unwrap(model), experts)


def stage_prefixes(method_entry) -> list[tuple[list[str], set[str], str | None]]:
    """For each training stage i of a method: (the stage names up to i, the config fields its result
    does not read, the head's name): with a config, what the result after stage i depends on, less the
    data and the code. Two trials of one grid with equal prefixes at i (and equal
    `stagecache.key_fields`) share stages 0..i (the stage cache's key; the plan's trial order)."""
    head = method_entry.head
    head_name = None if head is None else f"{head.__module__}.{head.__qualname__}"
    stages = method_entry.stages
    # a stage of another method (SELECTION for s3_no_select) reads its own fields nowhere here
    absent = {f for s in all_stages() if s.name not in {t.name for t in stages} for f in s.own_fields}
    out = []
    for i in range(len(stages)):
        later = {f for s in stages[i + 1:] for f in s.own_fields} - {f for s in stages[:i + 1] for f in s.own_fields}
        out.append(([s.name for s in stages[:i + 1]], later | absent, head_name))
    return out


def _rank0_says(value):
    """Rank 0's `value` on every rank (the identity without a process group)."""
    if rank_world()[1] == 1:
        return value
    box = [value]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


class _StageKeys:
    """run_trial's view of a StageCache: the key of each stage prefix of this method and config,
    and how an entry is taken (weights, RNG streams, history replayed) or stored. Under DDP rank 0
    decides (looks up, claims, stores) and every rank follows it: the ranks must train or skip the
    same stages, or their collectives would hang."""

    def __init__(self, cache: StageCache, cfg: S3Config, method_entry):
        self.cache, self.stages, self.cfg = cache, method_entry.stages, cfg
        self.rank, self.world = rank_world()
        self.keys = [cache.key(cfg, names, drop, head, world=self.world)
                     for names, drop, head in stage_prefixes(method_entry)]

    def deepest(self, first: int) -> tuple[int, dict | None]:
        found, entry = None, None
        if self.rank == 0:
            for j in range(len(self.stages) - 1, first - 1, -1):
                entry = self.cache.load(self.keys[j][0])
                if entry is not None:
                    found = j
                    break
        found = _rank0_says(found)
        if found is None:
            return first, None
        if entry is None:          # a rank other than 0: load what rank 0 found
            entry = self.cache.load(self.keys[found][0])
        if entry is None:
            raise DataError(f"stage cache entry {self.keys[found][0]}, which rank 0 found under {self.cache.root}, "
                            f"is not there for rank {self.rank}: put the storage where every node sees it "
                            "(s3://... or NFS)")
        return found, entry

    @contextlib.contextmanager
    def claim(self, i: int):
        """The stored entry of stage i, or None when this trial trains it (rank 0 holds the claim)."""
        key = self.keys[i][0]
        if self.rank != 0:
            yield self.cache.load(key) if _rank0_says(None) else None
            return
        with self.cache.claim(key) as entry:
            _rank0_says(entry is not None)
            yield entry

    def reuse(self, j: int, entry: dict, model: nn.Module, history: list, record) -> None:
        """Take stage j's entry: its weights and RNG streams, and replay the epochs of the stages
        this trial has not run yet to `record` (a checkpoint then resumes after stage j)."""
        _unwrap(model).load_state_dict(entry["model"])
        restore_rng(entry["ranks"][self.rank] if "ranks" in entry else entry)
        have = {(h["stage"], h["epoch"]) for h in history}
        last = self.stages[j]
        replay = [h for h in entry["history"] if (h["stage"], h["epoch"]) not in have]
        at = (last.name, last.epochs(self.cfg) - 1, history + replay)
        for h in replay:
            metrics = {k: v for k, v in h.items() if k not in ("stage", "epoch")}
            record(EpochEnd(h["stage"], h["epoch"], metrics, model, None, checkpoint_at=at))
        producer = entry["meta"].get("producer", {})
        for s in self.stages[:j + 1]:
            if not any(e["stage"] == s.name for e in self.cache.events):
                self.cache.events.append({"stage": s.name, "status": "reused", "key": self.keys[j][0],
                                          "from": producer})

    def stored(self, i: int, model: nn.Module, history: list, seconds: float) -> None:
        key, ident = self.keys[i]
        state = {"model": _unwrap(model).state_dict(), "history": list(history), **rng_state()}
        if self.world > 1:      # each rank's own RNG streams: a rank's dropout masks continue from its own
            ranks = [None] * self.world
            torch.distributed.all_gather_object(ranks, rng_state())
            state["ranks"] = ranks
        if self.rank == 0:
            self.cache.store(key, state, ident)
        self.cache.events.append({"stage": self.stages[i].name, "status": "trained", "key": key,
                                  "seconds": seconds})


def trained_model_state(model: nn.Module, data: BenchmarkTensors | Benchmark, cfg: S3Config, method: str) -> dict:
    """A trained model as plain data (tensors, numbers, strings: loadable with weights_only):
    its weights, the config it trained with, its method and the data's shapes, so Stage 3 can run
    again on it (other p, another pruning scope) without its training data's loader."""
    return {"method": method, "config": cfg.to_dict(), "modalities": list(data.modalities),
            "dims": dict(data.dims), "seq_lens": dict(data.seq_lens), "num_classes": int(data.num_classes),
            "weights": _unwrap(model).state_dict()}


def model_from_state(state: dict) -> tuple[nn.Module, S3Config]:
    """The inverse of trained_model_state: (model in eval mode, its config)."""

    fields = dict(state["config"])
    for name in ("keep_ratios", "probe_l2"):
        fields[name] = tuple(fields[name])
    cfg = S3Config(**fields)
    cfg.replace(device="cpu").validate()   # what the model reads; it is built on the CPU, wherever it trained
    shapes = SimpleNamespace(modalities=tuple(state["modalities"]), dims=state["dims"], seq_lens=state["seq_lens"],
                             num_classes=state["num_classes"])
    model = build_model(shapes, cfg, state["method"])
    model.load_state_dict(state["weights"])
    return model.eval(), cfg


def _unwrap(model: nn.Module) -> nn.Module:
    return getattr(model, "module", model)


def checkpoint_state(ev: EpochEnd) -> dict:
    """Everything a resume needs after `ev`: model, optimizer, stage/epoch, history, and the
    global RNG streams (dropout draws from them; shuffling and augmentation use their own
    per-epoch generators, see stages.epoch_generator)."""
    # an epoch replayed from the stage cache checkpoints as the end of the stage it came with
    # (the whole stage, its history included: a resume from it replays nothing and trains on)
    stage, epoch, history = ev.checkpoint_at or (ev.stage, ev.epoch, ev.history or [])
    state = {"model": _unwrap(ev.model).state_dict(),
             "optimizer": None if ev.optimizer is None else ev.optimizer.state_dict(),
             "stage": stage, "epoch": epoch, "history": list(history), **rng_state()}
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


__all__ = ["METHODS", "SUMMARY_METRICS", "TrialResult", "run_trial", "method_config", "method_stages", "summarize",
           "build_model", "checkpoint_state", "restore_rng", "trained_model_state", "model_from_state"]
