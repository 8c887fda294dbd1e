"""Configs: one flat dataclass per run, so every field is a loggable, searchable param.

Where the paper is silent (S3_METHOD.md), the choice is a named field here with its default.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import typing
from dataclasses import dataclass

DEFAULT_KEEP_RATIOS = (1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1)
# A swept keep-ratio is a multiple of 1/KEEP_RATIO_RESOLUTION: tracking stores p as an integer
# step (p in per mille), so a finer p could not come back exactly and is refused instead.
KEEP_RATIO_RESOLUTION = 1000
DISPATCHES = ("auto", "fused", "grouped_mm", "loop")
PRUNE_SCOPES = ("batch", "threshold")
PROBES = ("tuned", "factorcl")


class ConfigError(ValueError):
    """An invalid config value. The message is one line naming the field and the fix."""


@dataclass(frozen=True)
class MoEConfig:
    """Fine-grained MoE FFN (Ludziejewski et al. 2024): N_expert = chi * rho experts of width d_ff / chi.

    The one home of these fields' defaults: S3Config takes its MoE fields from here by name, and
    `S3Config.moe()` builds this from them."""

    d_model: int = 64
    d_ff: int = 256          # hidden width of the dense FFN this MoE matches in active parameters
    chi: int = 4             # granularity; the paper's grid is {2, 4, 8}
    rho: int = 4             # expansion ratio
    top_k: int | None = None  # None -> chi, so each token activates exactly d_ff hidden units
    dispatch: str = "auto"   # auto | fused | grouped_mm | loop (loop is the slow per-expert reference)
    # L_aux = balance * load_balance + local_entropy * H_local - global_entropy * H_global
    aux_balance: float = 1.0
    aux_local_entropy: float = 0.1
    aux_global_entropy: float = 0.1
    # --- issue 20: silent choices of the paper (defaults keep the behaviour before them) ---
    gate_renorm: bool = False         # True: each token's kept gates divided by their sum (top-k, then pruning)
    router_init_std: float = 0.02     # std of W_g's normal init

    @property
    def num_experts(self) -> int:
        return self.chi * self.rho

    @property
    def k(self) -> int:
        return self.chi if self.top_k is None else self.top_k

    @property
    def expert_hidden(self) -> int:
        return self.d_ff // self.chi

    def validate(self) -> "MoEConfig":
        _check_power_of_two("chi", self.chi)
        if not isinstance(self.rho, int) or self.rho < 1:
            raise ConfigError(f"rho must be an integer >= 1, got {self.rho!r}")
        if self.d_ff % self.chi:
            raise ConfigError(f"d_ff ({self.d_ff}) must be divisible by chi ({self.chi}); pick d_ff a "
                              "multiple of chi")
        if not 1 <= self.k <= self.num_experts:
            raise ConfigError(f"top_k must lie in 1..N_expert = chi*rho = {self.num_experts}, got "
                              f"{self.top_k!r}; leave it unset to use chi")
        if self.dispatch not in DISPATCHES:
            raise ConfigError(f"dispatch must be one of {', '.join(DISPATCHES)}, got {self.dispatch!r}")
        return self


@dataclass(frozen=True)
class S3Config:
    """Everything one S3 run needs. Defaults are a small model that trains on the synthetic
    benchmark in well under a minute on a 2-core CPU; the paper's grid overrides chi/batch_size."""

    # --- encoders (one per modality, same shape); MoE fields and defaults come from MoEConfig ---
    d_model: int = MoEConfig.d_model
    n_layers: int = 1
    n_heads: int = 4
    d_ff: int = MoEConfig.d_ff
    chi: int = MoEConfig.chi
    rho: int = MoEConfig.rho
    top_k: int | None = MoEConfig.top_k
    proj_dim: int = 64              # size of each z_m
    z_split: int = 0                # > 0: z_m = [normalise(u[:z_split]); normalise(u[z_split:])] of the head's
                                    # output u, a shared and a private part each on its unit sphere (the
                                    # InfoMax baselines, issue 21); 0: z_m = normalise(u), as S3
    dropout: float = 0.0
    dispatch: str = MoEConfig.dispatch
    aux_balance: float = MoEConfig.aux_balance
    aux_local_entropy: float = MoEConfig.aux_local_entropy
    aux_global_entropy: float = MoEConfig.aux_global_entropy
    # --- Stage 1: L_special = rep * L_rep + dsc * L_dsc + aux * L_aux ---
    lambda_rep: float = 1.0
    lambda_dsc: float = 1.0
    lambda_aux: float = 0.01
    epochs_special: int = 6
    lr: float = 2e-3
    weight_decay: float = 1e-4
    # Views for L_rep (the paper does not name its augmentations; ours):
    aug_noise: float = 0.1          # Gaussian noise, in units of each feature's train std
    aug_step_drop: float = 0.2      # probability of masking out each real time step
    # --- Stage 2: L_select = suff * L_suff + min * L_min, routers only ---
    lambda_suff: float = 1.0
    lambda_min: float = 0.5
    epochs_select: int = 3
    lr_select: float = 1e-3          # chosen on validation accuracy over {1e-3, 5e-3}: docs/RESULTS.md
    # --- shared ---
    tau: float = 0.1
    batch_size: int = 128
    seed: int = 0
    # --- Stage 3 + evaluation ---
    keep_ratios: tuple[float, ...] = DEFAULT_KEEP_RATIOS
    eval_batch_size: int | None = None  # rows per evaluation forward; None = batch_size. With
                                    # prune_scope='batch' it is the pruning batch (the paper's: the
                                    # trial's batch size); with 'threshold' only speed/memory
    probe_l2: tuple[float, ...] = (1e-4, 1e-3, 1e-2, 1e-1)  # chosen on the validation split
    epoch_probe: bool = True        # a cheap p=1 validation probe after every epoch (for Tune)
    probe_backend: str = "auto"     # auto (scikit-learn if installed) | sklearn | torch
    # --- execution ---
    device: str = "cpu"
    bf16: bool = False              # bf16 autocast on CUDA
    # --- the evaluation protocol (docs/METHOD_NOTES.md: Stage 3, Evaluation) ---
    prune_scope: str = "batch"      # batch: top-p of each evaluation batch's pairs (the paper's),
                                    # batches of eval_batch_size in a seeded order | threshold: per
                                    # layer, the gate cut-off keeping p of train's pairs, per token
    probe: str = "tuned"            # tuned: standardised [z], L2 chosen on valid from probe_l2 |
                                    # factorcl: FactorCL's probe, LogisticRegression(C=1) on raw [z]
    probe_max_iter: int = 1000      # L-BFGS iterations; the curve records probe_converged per p
    # --- the paper's silent choices as settings (issue 20; docs/METHOD_NOTES.md). Each default
    # keeps the behaviour from before these fields, bit for bit (tests/s3core/test_silent_choices.py)
    special_local_entropy: float = 0.0   # Stage 1: + w * H_local (mean over layers and modalities), a
                                    # weight of its own beside lambda_aux * L_aux (whose entropy terms
                                    # weigh lambda_aux * aux_local_entropy = 0.001 by default)
    special_global_entropy: float = 0.0  # Stage 1: - w * H_global
    select_local_entropy: float = 0.0    # Stage 2: + w * H_local (Stage 2 has no L_aux of its own)
    select_global_entropy: float = 0.0   # Stage 2: - w * H_global
    gate_renorm: bool = MoEConfig.gate_renorm   # renormalise each token's kept gates to sum 1
    pooling: str = "mean"           # mean: over real steps | gate_mass: each step weighted by its kept
                                    # gate mass in the last MoE layer | last: the last real step
    norm_placement: str = "pre"     # pre: pre-LN blocks | post: post-LN (MultiBench's Transformer)
    router_init_std: float = MoEConfig.router_init_std
    diagnostics: bool = True        # s3core.diagnostics after every training epoch (history keys diag/...)
                                    # and at the end (summary: diag/..., headroom where data mark events)
    # --- issue 21: DisentangledSSL / JointOpt (docs/METHOD_NOTES.md, "InfoMax baselines (issue 21)").
    # Defaults: the authors' (uhlerlab/DisentangledSSL @ cda29ec, synthetic_task/ argparse defaults).
    infomax_tau: float = 0.07       # both: InfoNCE temperature (losses.py SupConLoss temperature=0.07)
    infomax_kappa: float = 1000.0   # both: vMF concentration of the shared sample (--kappa 1e3); 0 = no sampling
    dssl_beta: float = 0.1          # DisentangledSSL step 1: weight of -cos(mu_1, mu_2) (step2disen.py --beta_start)
    dssl_lambda: float = 0.0        # DisentangledSSL step 2: weight of the orthogonality term (--lmd_start 0)
    dssl_epochs_step2: int = 0      # DisentangledSSL step 2's epochs: the method sets it to epochs_select
                                    # when that is > 0 (step 1 takes epochs_special: S3's two stages' split
                                    # of the same total; theirs 50 + 30)
    joint_a: float = 1.0            # JointOpt: 2 shared/(1+a) + a specific/(1+a) (jointdisen_mp.py --start_a 1)
    joint_lambda: float = 0.0       # JointOpt: weight of the orthogonality term (--lmd_start 0)
    # --- issue 21: FOCAL / FactorCL (the InfoMax baselines `focal`, `factorcl`; docs/METHOD_NOTES.md,
    # "InfoMax baselines (issue 21)"). Defaults are the authors': FOCAL's src/data/MOD.yaml (FOCAL
    # block, SW_Transformer temperature) at tomoyoshki/focal f6a989e; FactorCL's FactorCLSSL at
    # pliang279/FactorCL 0f9f740 (critic_hidden_dim 512, critic_layers 1). ---
    focal_tau: float = 0.07              # temperature of FOCAL's shared and private NT-Xent
    focal_shared_weight: float = 1.0     # shared_contrastive_loss_weight: cross-modal, shared halves
    focal_private_weight: float = 1.0    # private_contrastive_loss_weight: two views, private halves
    focal_orth_weight: float = 3.0       # orthogonal_loss_weight: shared _|_ private, private _|_ private
    focal_rank_weight: float = 5.0       # rank_loss_weight: the temporal constraint (needs focal_seq_len > 1)
    focal_rank_margin: float = 1.0       # inter_rank_margin of that ranking loss
    focal_seq_len: int = 1               # S: each sample cut into S contiguous windows, FOCAL's "sequence"
                                    # (authors: 4 consecutive samples from their sequence sampler; our
                                    # samples are single clips, so 1: no temporal term; METHOD_NOTES.md)
    factorcl_critic_hidden: int = 512    # hidden width of FactorCL's concat critics (InfoNCE and NCE-CLUB)
    factorcl_critic_layers: int = 1      # hidden-to-hidden layers of those critics (their mlp's `layers`)

    def moe(self) -> MoEConfig:
        return MoEConfig(**{f.name: getattr(self, f.name) for f in dataclasses.fields(MoEConfig)})

    def replace(self, **changes) -> "S3Config":
        """A copy with `changes`, each value typed by `typed_changes` (its field's declared type)."""
        return dataclasses.replace(self, **typed_changes(changes))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @property
    def eval_rows(self) -> int:
        """Rows per evaluation forward: eval_batch_size, or the trial's batch_size when None."""
        return self.batch_size if self.eval_batch_size is None else self.eval_batch_size

    def validate(self) -> "S3Config":
        self.moe().validate()
        if self.d_model % self.n_heads:
            raise ConfigError(f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})")
        for name in ("n_layers", "proj_dim", "batch_size", "probe_max_iter"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ConfigError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        if self.eval_batch_size is not None and (not isinstance(self.eval_batch_size, int)
                                                 or self.eval_batch_size < 1):
            raise ConfigError(f"eval_batch_size must be a positive integer or None (= batch_size), got "
                              f"{self.eval_batch_size!r}")
        if self.prune_scope not in PRUNE_SCOPES:
            raise ConfigError(f"prune_scope must be one of {', '.join(PRUNE_SCOPES)}, got {self.prune_scope!r}")
        if self.probe not in PROBES:
            raise ConfigError(f"probe must be one of {', '.join(PROBES)}, got {self.probe!r}")
        for name in ("epochs_special", "epochs_select"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 0:
                raise ConfigError(f"{name} must be an integer >= 0, got {getattr(self, name)!r}")
        if not self.keep_ratios:
            raise ConfigError("keep_ratios is empty; give at least one p in (0, 1]")
        for p in self.keep_ratios:
            check_keep_ratio(p)
            if keep_ratio_step(p) is None:
                raise ConfigError(f"keep-ratio {p!r} is finer than 1/{KEEP_RATIO_RESOLUTION}; round it to "
                                  f"{1 / KEEP_RATIO_RESOLUTION:g} (e.g. {round(p, 3)})")
        if len(set(self.keep_ratios)) != len(self.keep_ratios):
            raise ConfigError(f"keep_ratios repeats a value: {list(self.keep_ratios)}; list each p once")
        for name in ("tau", "lr", "lr_select"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise ConfigError(f"{name} must be a positive number, got {v!r}")
        for name in ("lambda_rep", "lambda_dsc", "lambda_aux", "lambda_suff", "lambda_min",
                     "aug_noise", "weight_decay"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise ConfigError(f"{name} must be a number >= 0, got {v!r}")
        if not 0 <= self.aug_step_drop < 1:
            raise ConfigError(f"aug_step_drop must lie in [0, 1), got {self.aug_step_drop!r}")
        if self.probe_backend not in ("auto", "sklearn", "torch"):
            raise ConfigError(f"probe_backend must be auto, sklearn or torch, got {self.probe_backend!r}")
        if not self.probe_l2 or any(c < 0 for c in self.probe_l2):
            raise ConfigError(f"probe_l2 must be a non-empty list of numbers >= 0, got {self.probe_l2!r}")
        if not (isinstance(self.z_split, int) and not isinstance(self.z_split, bool)
                and 0 <= self.z_split < self.proj_dim):
            raise ConfigError(f"z_split must be an integer in [0, proj_dim = {self.proj_dim}), the shared part's "
                              f"width (0: one part), got {self.z_split!r}")
        check_device(self.device)
        _check_silent_choices(self)
        _check_infomax(self)
        _check_infomax_fields(self)
        return self


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


# what a field's declared type accepts: (check, what to say); a tuple field takes a list of these
_TYPE_CHECKS = {int: (lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer"),
                float: (_is_number, "a number"), bool: (lambda v: isinstance(v, bool), "true or false"),
                str: (lambda v: isinstance(v, str), "a string")}


def typed_changes(changes: dict) -> dict:
    """S3Config changes from outside (--set, --grid, a preset, a method) as config values: each
    checked against its field's declared type, a tuple field's list made a tuple of floats. The
    one place a value is typed: S3Config.replace calls it, and make_plan does once per value.
    Numbers are not converted (an int for a float field stays an int, as it was logged before).
    Raises ConfigError naming the field."""
    hints = _field_types()
    unknown = set(changes) - set(hints)
    if unknown:
        raise ConfigError(f"unknown config field(s) {sorted(unknown)}; valid fields: {', '.join(hints)}")
    out = {}
    for name, value in changes.items():
        kind = hints[name]
        args = typing.get_args(kind)
        if value is None and type(None) in args:
            out[name] = value
        elif typing.get_origin(kind) is tuple:
            check, what = _TYPE_CHECKS.get(args[0], (lambda v: True, "values"))
            if not isinstance(value, (list, tuple)) or not all(check(v) for v in value):
                raise ConfigError(f"{name} must be a list of {what.removeprefix('a ')}s, got {value!r}")
            out[name] = tuple(float(v) for v in value) if args[0] is float else tuple(value)
        else:
            base = next(a for a in args if a is not type(None)) if args else kind
            check, what = _TYPE_CHECKS.get(base, (lambda v: True, ""))   # another kind: validate() checks it
            if not check(value):
                raise ConfigError(f"{name} must be {what}" + (" or None" if args else "") + f", got {value!r}")
            out[name] = value
    return out


@functools.cache
def _field_types() -> dict:
    return typing.get_type_hints(S3Config)


POOLINGS = ("mean", "gate_mass", "last")
NORM_PLACEMENTS = ("pre", "post")


def _check_silent_choices(cfg: "S3Config") -> None:
    """validate()'s checks of the issue-20 fields."""
    for name in ("special_local_entropy", "special_global_entropy", "select_local_entropy",
                 "select_global_entropy", "router_init_std"):
        v = getattr(cfg, name)
        if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
            raise ConfigError(f"{name} must be a number >= 0, got {v!r}")
    if cfg.pooling not in POOLINGS:
        raise ConfigError(f"pooling must be one of {', '.join(POOLINGS)}, got {cfg.pooling!r}")
    if cfg.norm_placement not in NORM_PLACEMENTS:
        raise ConfigError(f"norm_placement must be one of {', '.join(NORM_PLACEMENTS)}, got {cfg.norm_placement!r}")
    if not isinstance(cfg.gate_renorm, bool):
        raise ConfigError(f"gate_renorm must be true or false, got {cfg.gate_renorm!r}")


# ---------------------------------------------------------------- issue 21: DisentangledSSL / JointOpt
def _check_infomax(cfg: "S3Config") -> None:
    """validate()'s checks of the issue-21 fields (DisentangledSSL, JointOpt)."""
    v = cfg.infomax_tau
    if not (_is_number(v) and math.isfinite(v) and v > 0):
        raise ConfigError(f"infomax_tau must be a positive number (the authors' 0.07), got {v!r}")
    for name in ("infomax_kappa", "dssl_beta", "dssl_lambda", "joint_a", "joint_lambda"):
        v = getattr(cfg, name)
        if not (_is_number(v) and math.isfinite(v) and v >= 0):
            raise ConfigError(f"{name} must be a number >= 0, got {v!r}")
    v = cfg.dssl_epochs_step2
    if not isinstance(v, int) or isinstance(v, bool) or v < 0:
        raise ConfigError(f"dssl_epochs_step2 must be an integer >= 0, got {v!r}")
# ---------------------------------------------------------------- end issue 21
def _check_infomax_fields(cfg: "S3Config") -> None:
    """validate()'s checks of the issue-21 FOCAL / FactorCL fields."""
    v = cfg.focal_tau
    if not (_is_number(v) and math.isfinite(v) and v > 0):
        raise ConfigError(f"focal_tau must be a positive number, got {v!r}")
    for name in ("focal_shared_weight", "focal_private_weight", "focal_orth_weight", "focal_rank_weight",
                 "focal_rank_margin"):
        v = getattr(cfg, name)
        if not (_is_number(v) and math.isfinite(v) and v >= 0):
            raise ConfigError(f"{name} must be a number >= 0, got {v!r}")
    for name in ("focal_seq_len", "factorcl_critic_hidden"):
        v = getattr(cfg, name)
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ConfigError(f"{name} must be an integer >= 1, got {v!r}")
    v = cfg.factorcl_critic_layers
    if not isinstance(v, int) or isinstance(v, bool) or v < 0:
        raise ConfigError(f"factorcl_critic_layers must be an integer >= 0, got {v!r}")


def check_keep_ratio(p: float) -> float:
    if not (isinstance(p, (int, float)) and 0 < p <= 1):
        raise ConfigError(f"keep-ratio p must lie in (0, 1], got {p!r}")
    return float(p)


def keep_ratio_step(p: float) -> int | None:
    """p in units of 1/KEEP_RATIO_RESOLUTION (0.3 -> 300) when p is such a multiple in (0, 1], else
    None. The one home of that rule: validate() refuses any other p, and the MLflow codec
    (orchestrator.mlflow_layout.curve_step) stores p as this step."""
    step = round(p * KEEP_RATIO_RESOLUTION)
    if abs(step - p * KEEP_RATIO_RESOLUTION) > 1e-6 or not 0 < step <= KEEP_RATIO_RESOLUTION:
        return None
    return step


DEVICE_TYPES = ("cpu", "cuda", "mps")   # the devices s3core runs on


def check_device(device, probe: bool = False) -> str:
    """Check that `device` names a device this machine can run s3core on.

    validate() calls it without `probe` (cheap: torch's own availability checks). Trial code calls
    it with `probe=True` at trial start: that also runs a tiny op on the device, which catches a GPU
    that torch lists but cannot use (a broken driver, a CUDA build the driver is too old for), so a
    trial fails at once with one line instead of deep inside its first training step.

    Args:
        device: "cpu", "cuda", "cuda:N" or "mps" (a str or a torch.device).
        probe: also run a tiny op on the device.
    Returns:
        `device` as a str.
    Raises:
        ConfigError: one line naming the device and the fix.
    """
    import torch   # configs load without torch (the report reads them); a device check needs it

    name = str(device)
    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError):
        raise ConfigError(f"device {name!r} is not a device name; use cpu, cuda, cuda:N or mps") from None
    if dev.type not in DEVICE_TYPES:
        raise ConfigError(f"device {name!r}: s3core runs on {', '.join(DEVICE_TYPES)} only; use one of those")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            built = f"a CUDA {torch.version.cuda} build" if torch.version.cuda else "a build without CUDA"
            raise ConfigError(f"device {name!r}, but torch sees no usable CUDA GPU on this machine (torch "
                              f"{torch.__version__}, {built}); use device cpu, or install a CUDA build of torch "
                              "and a working NVIDIA driver")
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise ConfigError(f"device {name!r}, but this machine has {count} CUDA device(s): use cuda:0 to "
                              f"cuda:{count - 1}")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device {name!r}, but torch sees no usable MPS device on this machine; use device cpu")
    if probe and dev.type != "cpu":
        try:
            total = (torch.arange(4, device=dev, dtype=torch.float32) * 2).sum().item()
        except Exception as err:  # any failure of the device itself, whatever torch raises for it
            reason = " ".join(f"{type(err).__name__}: {err}".split())[:300]
            raise ConfigError(f"device {name!r} is listed but unusable ({reason}); fix the GPU (driver, "
                              "CUDA build of torch) or run on device cpu") from None
        if total != 12.0:
            raise ConfigError(f"device {name!r} computed 2*(0+1+2+3) = {total}, not 12; the GPU is faulty: "
                              "fix it or run on device cpu")
    return name


def _check_power_of_two(name: str, v) -> None:
    if not isinstance(v, int) or isinstance(v, bool) or v < 1 or v & (v - 1):
        raise ConfigError(f"{name} must be a positive power of two (1, 2, 4, 8, ...), got {v!r}")


def config_fields() -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(S3Config))


__all__ = ["S3Config", "MoEConfig", "ConfigError", "DEFAULT_KEEP_RATIOS", "KEEP_RATIO_RESOLUTION", "PRUNE_SCOPES",
           "PROBES", "typed_changes", "check_keep_ratio", "keep_ratio_step", "check_device", "config_fields"]
