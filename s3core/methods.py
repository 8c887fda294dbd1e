"""Methods as a registry: what each trains, in which order, with which config, and what it sweeps.

Adding a method is one `Method` entry in METHODS (or `register(Method(...))`): its stages (a
new objective is a `Stage` with its loss, s3core.stage_specs), role, label and plot style; nothing
else switches on its name (tests/structure/test_registries.py adds one). The baselines use encoders with equal active parameters: a dense FFN of width d_ff is the MoE with
chi = rho = top_k = 1, whose single gate is always 1.

- ``s3``: Stage 1 (Specialization) -> Stage 2 (Selection, routers only) -> Stage 3 sweep of p.
- ``s3_no_select``: Stage 1 -> Stage 3 (the paper's ablation without Selection).
- ``clip``: dense encoders trained with cross-modal InfoNCE only, probed at p = 1, for
  epochs_special + epochs_select epochs: the same budget as S3's two stages.
- ``supervised``: dense encoders + a linear task head trained on the labels (the supervised
  control), probed at p = 1 on the frozen z like every other method.
- ``disentangled_ssl`` / ``joint_opt`` (issue 21): the InfoMax baselines of uhlerlab/DisentangledSSL
  on the same dense encoders, z_m = [shared ; private] (S3Config.z_split), probed at p = 1 on
  that concatenation (docs/METHOD_NOTES.md, "InfoMax baselines (issue 21)").
- ``focal``, ``factorcl``: the InfoMax baselines FOCAL and FactorCL-SSL (issue 21) on the same
  dense encoders, probed at p = 1 (docs/METHOD_NOTES.md, "InfoMax baselines (issue 21)").
- ``raw_probe``: no encoder at all: the same linear probe on the raw input features (each
  modality's mean over its real time steps, concatenated): how far a learned representation is
  from the features it started from.

The registry is torch-free (its stages' code loads when they train): the report reads names,
labels, roles and plot styles from it without loading the model code.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from s3core.config import ConfigError, S3Config
from s3core.stage_specs import (DSSL_SHARED, DSSL_SPECIFIC, FACTORCL, FOCAL, JOINT_OPT, SELECTION, SPECIALIZATION,
                                SUPERVISED, Stage)

# What a method is to the comparison: the report compares S3 against the others, the ablation
# against S3 at the same chi, and checks that a synthetic report has a reference.
if TYPE_CHECKING:
    from torch import nn

ROLES = ("s3", "ablation", "baseline", "reference")


@dataclass(frozen=True)
class Style:
    """How plots draw a method. colour None: a per-chi colour (S3, the ablation) or the report's
    fallback cycle; compute_line: its compute is the frontier plot's vertical reference line."""

    colour: str | None = None
    marker: str = "s"
    linestyle: str = "--"
    compute_line: bool = False


@dataclass(frozen=True)
class Method:
    """One method of the comparison.

    Args:
        name: the registry key, logged as the MLflow tag ``s3.method``.
        stages: the training stages in order; Stage 3 (sparsify + probe) always follows.
        config_changes: cfg -> {field: value} the method trains with instead of the trial's.
        head: (embedding width, num classes, config) -> a module trained with the encoders (stored
            as model.task_head: the supervised control's classifier, FactorCL's critics), or None.
            Not an encoder: the probe never sees it, and it counts in no active-parameter budget.
        sweeps: the grid fields this method is run over (None: every field of the grid; ()
            once per benchmark and seed with the base config).
        label: how plots and tables name it.
        evaluate: (data tensors, cfg) -> curve, instead of Stage 3 on the trained model (a
            reference that needs no encoder); None for every method that trains one.
        role: one of ROLES.
        style: how plots draw it.
        family: the group a paper reports as one row ("infomax": the S3 paper's InfoMax row stands
            beside each of the four InfoMax baselines in the report's paper table); "" for none.
    """

    name: str
    stages: tuple[Stage, ...]
    config_changes: Callable[[S3Config], dict] = lambda cfg: {}
    head: Callable[[int, int, S3Config], nn.Module] | None = None
    sweeps: tuple[str, ...] | None = None
    label: str = ""
    evaluate: Callable | None = None
    role: str = "baseline"
    style: Style = Style()
    family: str = ""

    def __post_init__(self):
        if self.role not in ROLES:
            raise ConfigError(f"method {self.name!r}: role must be one of {', '.join(ROLES)}, got {self.role!r}")

    def config(self, cfg: S3Config) -> S3Config:
        """The config this method actually trains with (logged as the run's params)."""
        changes = self.config_changes(cfg)
        return cfg.replace(**changes) if changes else cfg


def _dense_equal_budget(cfg: S3Config, **more) -> dict:
    """Dense encoders of equal active width, trained as long as S3's two stages together."""
    return dict(chi=1, rho=1, top_k=None, keep_ratios=(1.0,), lambda_aux=0.0,
                epochs_special=cfg.epochs_special + cfg.epochs_select, epochs_select=0, **more)


def _linear_head(width: int, num_classes: int, cfg: S3Config) -> nn.Module:
    from torch import nn   # torch: loaded when a model is built, so the registry loads without it
    return nn.Linear(width, num_classes)


# ---- issue 21: FOCAL / FactorCL
def _factorcl_critics(width: int, num_classes: int, cfg: S3Config) -> nn.Module:
    """FactorCL-SSL's six critics (train-only; s3core.objectives.FactorCLCritics)."""
    from s3core.objectives import FactorCLCritics   # torch: loaded when a model is built, not with the registry
    return FactorCLCritics(cfg)
# ---- end issue 21: FOCAL / FactorCL


def raw_feature_curve(data, cfg: S3Config) -> list[dict]:
    """The raw-feature reference as a one-point curve (p = 1): the linear probe of every method,
    on each modality's raw features averaged over its real steps (s3core.analysis)."""
    # torch: loaded when the reference runs, so the registry loads without it
    import time

    from s3core.analysis import raw_feature_embeddings
    from s3core.probe import linear_probe

    t0 = time.perf_counter()
    xs = [(raw_feature_embeddings(data[s], data.modalities), data[s].labels) for s in ("train", "valid", "test")]
    embed_s = time.perf_counter() - t0
    res = linear_probe(*xs, data.num_classes, l2_grid=cfg.probe_l2, backend=cfg.probe_backend)
    return [{"keep_ratio": 1.0, "valid_acc": res.valid_acc, "test_acc": res.test_acc, "valid_f1": res.valid_f1,
             "test_f1": res.test_f1, "l2": res.l2, "kept_fraction": 1.0, "embed_s": embed_s}]


# The paper's silent choices (issue 20) that each baseline follows when a grid sweeps them
# (docs/METHOD_NOTES.md): the ablation is S3 without Stage 2, so it follows every field that Stage 1 or
# Stage 3 reads; a dense encoder (chi = rho = top_k = 1: one expert whose gate is always 1) has no
# routing to renormalise, initialise or regularise, so only depth, norm placement and pooling change it
# (tests/s3core/test_silent_choices.py checks both directions).
STAGE1_SILENT_CHOICES = ("n_layers", "special_local_entropy", "special_global_entropy", "gate_renorm",
                         "pooling", "norm_placement", "router_init_std")
DENSE_SILENT_CHOICES = ("n_layers", "pooling", "norm_placement")


# ---------------------------------------------------------------- issue 21: DisentangledSSL / JointOpt
def _infomax_split(cfg: S3Config) -> dict:
    """The shared part's width: the trial's z_split, else half of z (the authors' shared and
    specific embeddings are equally wide, 100 each). weight_decay 0: the authors train with Adam."""
    return dict(z_split=_shared_part(cfg, cfg.z_split or cfg.proj_dim // 2), weight_decay=0.0)


def _shared_part(cfg: S3Config, k: int) -> int:
    """k, checked when the config is made (a grid, before Ray starts), not at the first batch."""
    if not 2 <= k < cfg.proj_dim:
        raise ConfigError(f"the InfoMax baselines need a shared part of 2 <= z_split < proj_dim ({cfg.proj_dim}) "
                          f"dimensions, got {k}: set z_split=0 (half of proj_dim) with proj_dim >= 4, or a z_split in range")
    return k


def _dssl_config(cfg: S3Config) -> dict:
    """Dense, equal active parameters; step 1 takes epochs_special, step 2 epochs_select (S3's two
    stages' split of the same total; the authors' 50 + 30). Idempotent: a config converted once
    (epochs_select 0) keeps its dssl_epochs_step2."""
    return {**_dense_equal_budget(cfg, **_infomax_split(cfg)), "epochs_special": cfg.epochs_special,
            "dssl_epochs_step2": cfg.epochs_select or cfg.dssl_epochs_step2, "epochs_select": 0}


def _joint_config(cfg: S3Config) -> dict:
    """Dense, equal active parameters, one step of epochs_special + epochs_select epochs."""
    return _dense_equal_budget(cfg, **_infomax_split(cfg))


# The InfoMax baselines' colours are outside matplotlib's tab10, which the report gives S3's and the
# ablation's per-chi lines in turn, so no baseline shares a colour with an S3 line.
INFOMAX_DISENTANGLED = (
    Method("disentangled_ssl", (DSSL_SHARED, DSSL_SPECIFIC), config_changes=_dssl_config,
           sweeps=("batch_size", *DENSE_SILENT_CHOICES), label="DisentangledSSL", family="infomax", style=Style("darkgoldenrod", "D", "--")),
    Method("joint_opt", (JOINT_OPT,), config_changes=_joint_config, sweeps=("batch_size", *DENSE_SILENT_CHOICES),
           label="JointOpt", family="infomax", style=Style("teal", "v", "--")),
)
# ---------------------------------------------------------------- end issue 21

# ---------------------------------------------------------------- issue 21: FOCAL / FactorCL
# InfoMax baselines (docs/METHOD_NOTES.md "InfoMax baselines (issue 21)"), dense, equal budget as clip.
INFOMAX_FOCAL_FACTORCL = (
    # FOCAL: z_m = [shared; private], halves as the authors' split_features; the probe sees [z_1..z_M]
    Method("focal", (FOCAL,), config_changes=lambda cfg: _dense_equal_budget(cfg, z_split=_shared_part(cfg, cfg.proj_dim // 2)),
           sweeps=("batch_size", *DENSE_SILENT_CHOICES), label="FOCAL", family="infomax", style=Style("navy", "<", "--")),
    # FactorCL-SSL: z_m = its five projections side by side (their get_embedding); critics train-only
    # z_split pinned to 0: its five blocks are cut from one z, never from a trial's shared/private split
    Method("factorcl", (FACTORCL,), config_changes=lambda cfg: _dense_equal_budget(cfg, z_split=0),
           head=_factorcl_critics,
           sweeps=("batch_size", *DENSE_SILENT_CHOICES), label="FactorCL-SSL", family="infomax", style=Style("orchid", "P", "--")),
)
# ---------------------------------------------------------------- end issue 21: FOCAL / FactorCL

METHODS: dict[str, Method] = {m.name: m for m in (
    Method("s3", (SPECIALIZATION, SELECTION), sweeps=None, label="S3", role="s3", style=Style(marker="o", linestyle="-")),
    # baselines are tuned like S3 (issue 9.5): the same batch sizes, and the ablation the same chi and p
    Method("s3_no_select", (SPECIALIZATION,), sweeps=("chi", "batch_size", *STAGE1_SILENT_CHOICES),
           label="s3 without Stage 2",
           role="ablation", style=Style("tab:gray", "^", "-.")),
    Method("clip", (SPECIALIZATION,), config_changes=lambda cfg: _dense_equal_budget(cfg, lambda_rep=0.0),
           sweeps=("batch_size", *DENSE_SILENT_CHOICES), label="clip", style=Style("black", "s", "--", compute_line=True)),
    Method("supervised", (SUPERVISED,), config_changes=_dense_equal_budget, head=_linear_head,
           sweeps=("batch_size", *DENSE_SILENT_CHOICES),
           label="supervised (upper bound)", style=Style("tab:purple", "s", ":")),
    # no encoder at all: chi 1 (no experts) in its logged config, so no table shows it a granularity
    Method("raw_probe", (), config_changes=lambda cfg: dict(keep_ratios=(1.0,), chi=1, rho=1, top_k=None), sweeps=(),
           label="linear probe on raw features", evaluate=raw_feature_curve, role="reference"),
    *INFOMAX_DISENTANGLED,   # issue 21
    *INFOMAX_FOCAL_FACTORCL,   # issue 21: FOCAL / FactorCL
)}
METHOD_NAMES = tuple(METHODS)


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise ConfigError(f"unknown method {name!r}; choose one of: {', '.join(METHODS)}")
    return METHODS[name]


# ------------------------------------------------------------------ the registry, read by role

def register(method: Method) -> Method:
    """Add a method (a new one is this call plus its stages' losses); refuses a taken name."""
    if method.name in METHODS:
        raise ConfigError(f"method {method.name!r} is registered already; pick another name")
    METHODS[method.name] = method
    return method


def unregister(name: str) -> None:
    METHODS.pop(name, None)


def methods_with_role(*roles: str) -> tuple[str, ...]:
    """The registered methods of these roles, in registry order."""
    return tuple(name for name, m in METHODS.items() if m.role in roles)


def methods_of_family(family: str) -> tuple[str, ...]:
    """The registered methods of a family (Method.family), in registry order: the presets run
    methods_of_family("infomax") beside the CLIP-style baseline."""
    return tuple(name for name, m in METHODS.items() if family and m.family == family)


def primary_method() -> str:
    """The method the grid sweeps over its whole grid and the report compares the others with."""
    (name,) = methods_with_role("s3")
    return name


def all_stages() -> tuple[Stage, ...]:
    """Every training stage of a registered method, once each, in registry order."""
    out: dict[str, Stage] = {}
    for method in METHODS.values():
        for stage in method.stages:
            out.setdefault(stage.name, stage)
    return tuple(out.values())


__all__ = ["Method", "Style", "ROLES", "METHODS", "METHOD_NAMES", "get_method", "register", "unregister",
           "methods_with_role", "primary_method", "all_stages"]
