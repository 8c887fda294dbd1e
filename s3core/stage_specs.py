"""The training stages as data: each one's loss, which parameters train, and the config fields it
reads (S3_METHOD.md). Methods (s3core.methods) are sequences of these.

Torch-free, like the method registry built on it: the report reads that registry without loading
torch. A stage's objective (s3core.objectives) is imported when the stage first trains.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from s3core.config import S3Config


@dataclass(frozen=True)
class Stage:
    """One training stage: its loss, which parameters train, and the config fields that set its
    learning rate and length. Methods (s3core.methods) are sequences of these.

    Args:
        name: the stage's name in histories, checkpoints and MLflow metric keys (``special/loss``).
        loss: (model, data, cfg, batch indices, generator) -> (total loss, {part: scalar}).
        trains: parameter name -> whether it trains in this stage (the rest stay bit-identical).
        lr_field, epochs_field: S3Config fields giving the learning rate and the epoch count.
        own_fields: S3Config fields that this stage reads and no other training stage does. The
            stage cache (s3core.stagecache) leaves them out of the keys of the stages before
            it, so a sweep of them reuses those stages. Claim a field here only if no other
            stage reads it: a wrong claim would be a false cache hit.
    """

    name: str
    loss: Callable
    trains: Callable[[str], bool]
    lr_field: str
    epochs_field: str
    own_fields: tuple[str, ...] = ()

    def epochs(self, cfg: S3Config) -> int:
        return getattr(cfg, self.epochs_field)


def every_param(name: str) -> bool:
    return True


def is_router_param(name: str) -> bool:
    """Stage 2 trains exactly these: the MoE routers W_g."""
    return name.endswith("ffn.router.weight")


def _objective(name: str) -> Callable:
    """s3core.objectives.<name>, imported at its first call."""
    def loss(model, data, cfg, idx, gen):
        from s3core import objectives   # torch: loaded when a stage trains, not with the registry
        return getattr(objectives, name)(model, data, cfg, idx, gen)
    loss.__name__ = loss.__qualname__ = name
    return loss


# Stage 1 trains everything with L_special; Stage 2 only the routers W_g with L_select.
SPECIALIZATION = Stage("special", _objective("special_loss"), every_param, "lr", "epochs_special")
SELECTION = Stage("select", _objective("select_loss"), is_router_param, "lr_select", "epochs_select",
                  own_fields=("lambda_suff", "lambda_min", "lr_select", "epochs_select",
                              "select_local_entropy", "select_global_entropy"))
SUPERVISED = Stage("supervised", _objective("supervised_loss"), every_param, "lr", "epochs_special")


# ---------------------------------------------------------------- issue 21: DisentangledSSL / JointOpt
def is_projection_out_param(name: str) -> bool:
    """DisentangledSSL step 2 trains exactly these: each encoder's last projection layer (its rows
    make z's parts; the shared rows get a zero gradient, the shared parts being detached, so with
    weight_decay 0 they stay bit-identical). docs/METHOD_NOTES.md says why this layer."""
    parts = name.split(".")
    return parts[0] == "encoders" and parts[-3:-1] == ["head", "2"]


# DisentangledSSL: step 1 every parameter on the shared parts, step 2 the private rows with the
# shared frozen; JointOpt: both at once. Epochs: step 1 epochs_special, step 2 its own field (the
# method sets it to epochs_select), JointOpt epochs_special (the method adds epochs_select).
DSSL_SHARED = Stage("dssl_shared", _objective("dssl_shared_loss"), every_param, "lr", "epochs_special",
                    own_fields=("dssl_beta",))
DSSL_SPECIFIC = Stage("dssl_specific", _objective("dssl_specific_loss"), is_projection_out_param, "lr",
                      "dssl_epochs_step2", own_fields=("dssl_lambda", "dssl_epochs_step2"))
JOINT_OPT = Stage("joint_opt", _objective("joint_opt_objective"), every_param, "lr", "epochs_special",
                  own_fields=("joint_a", "joint_lambda"))
# ---------------------------------------------------------------- end issue 21


# ------------------------------------------------------------------ issue 21: FOCAL / FactorCL
# The InfoMax baselines: one stage each, training everything (encoders; FactorCL's critics too).
FOCAL = Stage("focal", _objective("focal_objective"), every_param, "lr", "epochs_special",
              own_fields=("focal_tau", "focal_shared_weight", "focal_private_weight", "focal_orth_weight",
                          "focal_rank_weight", "focal_rank_margin", "focal_seq_len"))
FACTORCL = Stage("factorcl", _objective("factorcl_objective"), every_param, "lr", "epochs_special",
                 own_fields=("factorcl_critic_hidden", "factorcl_critic_layers"))

__all__ = ["Stage", "SPECIALIZATION", "SELECTION", "SUPERVISED", "every_param", "is_router_param",
           # issue 21: DisentangledSSL / JointOpt
           "DSSL_SHARED", "DSSL_SPECIFIC", "JOINT_OPT", "is_projection_out_param",
           # issue 21: FOCAL / FactorCL
           "FOCAL", "FACTORCL"]
