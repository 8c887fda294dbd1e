"""The training stages' objectives on one batch: (model, data, cfg, batch indices, generator) ->
(total loss, {part: scalar}). The stage table (s3core.stage_specs) names them; the losses' math is in
s3core.losses. With several workers (s3core/distributed.py) each forwards its own share of the batch
and computes the loss of the whole batch from the gathered embeddings."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from s3core.config import ConfigError, S3Config
from s3core.distributed import gather_batch, local_share, rank_world
from s3core.losses import (FACTORCL_CLUB_CRITICS, FACTORCL_CRITICS, FACTORCL_HEADS, compactness_loss,
                           cross_modal_info_nce, dssl_step1_loss, dssl_step2_loss, factorcl_club_learning_loss,
                           factorcl_ssl_terms, focal_loss, intra_modal_info_nce, joint_opt_loss, supcon_loss,
                           vmf_rsample)
from s3core.tensors import BenchmarkTensors, augment, standardise


def _routing_means(outs) -> dict[str, torch.Tensor]:
    stats = {}
    for name in ("load_balance", "local_entropy", "global_entropy"):
        stats[name] = torch.stack([torch.stack(o.intermediates["routing"][name]).mean() for o in outs.values()]).mean()
    return stats


def entropy_term(outs_list, w_local: float, w_global: float):
    """w_local * H_local - w_global * H_global, each the mean over every layer and modality of the
    given encoder outputs (S3Config.special_/select_ local/global_entropy); None when both are 0,
    so the default loss is the same computation as before these weights."""
    if not (w_local or w_global):
        return None
    layers = [e for outs in outs_list for o in outs.values() for e in o.intermediates["entropy"]]
    local = torch.stack([loc for loc, _ in layers]).mean()
    glob = torch.stack([g for _, g in layers]).mean()
    return w_local * local - w_global * glob


def _share(inputs: dict[str, tuple], rows: slice) -> dict[str, tuple]:
    return {m: (x[rows], mask[rows]) for m, (x, mask) in inputs.items()}


def special_loss(model: nn.Module, data: BenchmarkTensors, cfg: S3Config, idx, gen):
    """Stage 1's loss on the batch `idx`: returns (total, parts).

    With several workers (s3core/distributed.py) each draws the views of the whole batch (the
    same random numbers as one process), forwards its own share, and computes the loss of the
    whole batch from the gathered embeddings."""
    inputs, _ = data["train"].batch(idx)
    rows, sizes = local_share(len(idx))
    view1 = standardise(augment(inputs, data.feature_std, cfg.aug_noise, cfg.aug_step_drop, gen), data)
    view2 = standardise(augment(inputs, data.feature_std, cfg.aug_noise, cfg.aug_step_drop, gen), data)
    out1, out2 = model(_share(view1, rows)), model(_share(view2, rows))
    z1 = {m: gather_batch(o.z, sizes) for m, o in out1.items()}
    z2 = {m: gather_batch(o.z, sizes) for m, o in out2.items()}
    rep = intra_modal_info_nce(z1, z2, cfg.tau)
    dsc = 0.5 * (cross_modal_info_nce(z1, cfg.tau) + cross_modal_info_nce(z2, cfg.tau))
    aux = torch.stack([o.aux_loss for o in out1.values()] + [o.aux_loss for o in out2.values()]).mean()
    total = cfg.lambda_rep * rep + cfg.lambda_dsc * dsc + cfg.lambda_aux * aux
    extra = entropy_term([out1, out2], cfg.special_local_entropy, cfg.special_global_entropy)
    if extra is not None:
        total = total + extra
    return total, {"rep": rep, "dsc": dsc, "aux": aux, **_routing_means(out1)}


def select_loss(model: nn.Module, data: BenchmarkTensors, cfg: S3Config, idx, gen):
    """Stage 2's loss on one batch (no augmentation, no balancing term: uneven use is the point);
    the whole batch's loss on every worker, as in special_loss."""
    inputs, labels = data["train"].batch(idx)
    rows, sizes = local_share(len(idx))
    outs = model(_share(standardise(inputs, data), rows))
    z = {m: gather_batch(o.z, sizes) for m, o in outs.items()}
    suff = supcon_loss(z, labels, cfg.tau)
    mini = compactness_loss(z, labels, data.num_classes)
    total = cfg.lambda_suff * suff + cfg.lambda_min * mini
    extra = entropy_term([outs], cfg.select_local_entropy, cfg.select_global_entropy)
    if extra is not None:
        total = total + extra
    return total, {"suff": suff, "min": mini, **_routing_means(outs)}


def supervised_loss(model: nn.Module, data: BenchmarkTensors, cfg: S3Config, idx, gen):
    """The supervised control: cross-entropy of the model's task head on [z_1, ..., z_M]. The head
    runs on this worker's share before the gather, so its gradient, too, comes from this share alone."""
    inputs, labels = data["train"].batch(idx)
    rows, sizes = local_share(len(idx))
    outs = model(_share(standardise(inputs, data), rows))
    head = model.module.task_head if hasattr(model, "module") else model.task_head
    logits = gather_batch(head(torch.cat([outs[m].z for m in data.modalities], 1)), sizes)
    return F.cross_entropy(logits, labels), {}


# ---------------------------------------------------------------- issue 21: DisentangledSSL / JointOpt
# One encoder per modality whose z is [shared ; private] (S3Config.z_split: each part normalised on
# its own). The math is in s3core.losses; the choices (which parameters train in DisentangledSSL's
# step 2, the views) in docs/METHOD_NOTES.md, "InfoMax baselines (issue 21)".

def _shared_width(cfg: S3Config, data: BenchmarkTensors) -> int:
    """z_split, checked: both parts non-empty (the shared one >= 2 wide for the vMF sample), and
    at least two modalities (the shared part is what they have in common)."""
    k = cfg.z_split
    if not 2 <= k < cfg.proj_dim:
        raise ConfigError(f"the InfoMax baselines need 2 <= z_split < proj_dim ({cfg.proj_dim}), got {k}; "
                          "run them through their Method (it sets z_split = proj_dim // 2)")
    if len(data.modalities) < 2:
        raise ConfigError(f"the InfoMax baselines need >= 2 modalities, the benchmark has {list(data.modalities)}")
    return k


def _two_views(data: BenchmarkTensors, cfg: S3Config, idx, gen):
    """The authors' views: x = aug(x), v = aug(x) (the second augments the first), standardised."""
    inputs, _ = data["train"].batch(idx)
    first = augment(inputs, data.feature_std, cfg.aug_noise, cfg.aug_step_drop, gen)
    second = augment(first, data.feature_std, cfg.aug_noise, cfg.aug_step_drop, gen)
    return standardise(first, data), standardise(second, data)


def _gathered_z(model: nn.Module, view, rows, sizes) -> dict[str, torch.Tensor]:
    return {m: gather_batch(o.z, sizes) for m, o in model(_share(view, rows)).items()}


def dssl_shared_loss(model: nn.Module, data: BenchmarkTensors, cfg: S3Config, idx, gen):
    """DisentangledSSL step 1 on one batch: every parameter trains the shared parts z[:, :z_split]
    (`losses.dssl_step1_loss` on one augmented view, their vMF samples drawn from `gen`)."""
    k = _shared_width(cfg, data)
    inputs, _ = data["train"].batch(idx)
    rows, sizes = local_share(len(idx))
    view = standardise(augment(inputs, data.feature_std, cfg.aug_noise, cfg.aug_step_drop, gen), data)
    z = _gathered_z(model, view, rows, sizes)
    mu = {m: v[:, :k] for m, v in z.items()}
    samples = {m: vmf_rsample(v, cfg.infomax_kappa, gen) for m, v in mu.items()}
    total, clip, align = dssl_step1_loss(samples, mu, cfg.infomax_tau, cfg.dssl_beta)
    return total, {"clip": clip, "align": align}


def dssl_specific_loss(model: nn.Module, data: BenchmarkTensors, cfg: S3Config, idx, gen):
    """DisentangledSSL step 2 on one batch: the private parts z[:, z_split:] learn
    `losses.dssl_step2_loss` with the shared parts detached (the stage trains only the private
    rows' layer, stage_specs.is_projection_out_param; the shared rows get a zero gradient)."""
    k = _shared_width(cfg, data)
    rows, sizes = local_share(len(idx))
    view1, view2 = _two_views(data, cfg, idx, gen)
    z1, z2 = _gathered_z(model, view1, rows, sizes), _gathered_z(model, view2, rows, sizes)
    s = {m: v[:, :k].detach() for m, v in z1.items()}
    sv = {m: v[:, :k].detach() for m, v in z2.items()}
    total, specific, ortho = dssl_step2_loss({m: v[:, k:] for m, v in z1.items()}, {m: v[:, k:] for m, v in z2.items()},
                                             s, sv, cfg.infomax_tau, cfg.dssl_lambda)
    return total, {"specific": specific, "ortho": ortho}


def joint_opt_objective(model: nn.Module, data: BenchmarkTensors, cfg: S3Config, idx, gen):
    """JointOpt on one batch: every parameter learns `losses.joint_opt_loss` on two views (shared
    InfoNCE on the vMF samples of both, specific and orthogonality on the parts themselves)."""
    k = _shared_width(cfg, data)
    rows, sizes = local_share(len(idx))
    view1, view2 = _two_views(data, cfg, idx, gen)
    z1, z2 = _gathered_z(model, view1, rows, sizes), _gathered_z(model, view2, rows, sizes)
    s, sv = {m: v[:, :k] for m, v in z1.items()}, {m: v[:, :k] for m, v in z2.items()}
    zs = {m: vmf_rsample(v, cfg.infomax_kappa, gen) for m, v in s.items()}
    zsv = {m: vmf_rsample(v, cfg.infomax_kappa, gen) for m, v in sv.items()}
    total, shared, specific, ortho = joint_opt_loss(zs, zsv, {m: v[:, k:] for m, v in z1.items()},
                                                    {m: v[:, k:] for m, v in z2.items()}, s, sv,
                                                    cfg.infomax_tau, cfg.joint_a, cfg.joint_lambda)
    return total, {"shared": shared, "specific": specific, "ortho": ortho}
# ---------------------------------------------------------------- end issue 21: DisentangledSSL / JointOpt


# ------------------------------------------------------------------ issue 21: FOCAL / FactorCL

def windows(inputs: dict[str, tuple], count: int) -> dict[str, tuple]:
    """Each sample's T steps as `count` contiguous windows of ceil(T / count) steps (the last padded
    with masked-out steps): {m: (x (B * count, L, D), mask (B * count, L))}, rows sample-major
    (row b * count + s), the layout of FOCAL's sequences. count 1: the inputs unchanged."""
    if count == 1:
        return inputs
    out = {}
    for m, (x, mask) in inputs.items():
        B, T, D = x.shape
        L = -(-T // count)
        x = F.pad(x, (0, 0, 0, L * count - T))
        mask = F.pad(mask, (0, L * count - T))
        out[m] = (x.reshape(B * count, L, D), mask.reshape(B * count, L))
    return out


def focal_objective(model: nn.Module, data: BenchmarkTensors, cfg: S3Config, idx, gen):
    """FOCAL (Liu et al., NeurIPS 2023) on the batch `idx`: two augmented views (s3core.tensors.augment,
    as Stage 1's), each sample cut into cfg.focal_seq_len windows, encoded; z's first cfg.z_split
    columns are the shared space, the rest the private one (s3core.losses.focal_loss). The whole
    batch's loss on every worker, as special_loss."""
    if cfg.z_split < 1:
        raise ConfigError("FOCAL needs a shared and a private space: set z_split > 0 (method focal sets "
                          "proj_dim // 2)")
    inputs, _ = data["train"].batch(idx)
    rows, sizes = local_share(len(idx))
    S = cfg.focal_seq_len
    views = [standardise(augment(inputs, data.feature_std, cfg.aug_noise, cfg.aug_step_drop, gen), data)
             for _ in range(2)]
    z = []
    for view in views:
        outs = model(windows(_share(view, rows), S))
        z.append({m: gather_batch(o.z, [n * S for n in sizes]).reshape(len(idx), S, -1) for m, o in outs.items()})
    return focal_loss(z[0], z[1], cfg.z_split, cfg.focal_tau, cfg.focal_shared_weight, cfg.focal_private_weight,
                      cfg.focal_orth_weight, cfg.focal_rank_weight, cfg.focal_rank_margin)


def _critic_mlp(width: int, hidden: int, layers: int) -> nn.Sequential:
    """FactorCL's critic network (critic_objectives.mlp with output 1): in -> hidden, ReLU,
    `layers` x (hidden -> hidden, ReLU), -> 1."""
    seq = [nn.Linear(width, hidden), nn.ReLU()]
    for _ in range(layers):
        seq += [nn.Linear(hidden, hidden), nn.ReLU()]
    return nn.Sequential(*seq, nn.Linear(hidden, 1))


class FactorCLCritics(nn.Module):
    """FactorCL-SSL's six concat critics (train-only: the probe never sees them; they are not encoder
    parameters, active or not). Each modality's z (proj_dim) is cut into the five projections of
    s3core.losses.FACTORCL_HEADS (z.tensor_split(5, dim=1)); a critic scores the concatenation of a
    pair of them (the conditional ones, of a projection and its augmented view's)."""

    def __init__(self, cfg: S3Config):
        super().__init__()
        if cfg.proj_dim < len(FACTORCL_HEADS):
            raise ConfigError(f"FactorCL cuts z into {len(FACTORCL_HEADS)} projections: proj_dim must be >= "
                              f"{len(FACTORCL_HEADS)}, got {cfg.proj_dim}")
        w = [len(c) for c in torch.arange(cfg.proj_dim).tensor_split(len(FACTORCL_HEADS))]
        width = {"infonce_x1x2": 2 * w[0], "club_x1x2": 2 * w[1], "infonce_x1y": 2 * w[2], "infonce_x2y": 2 * w[2],
                 "infonce_x1x2_cond": 4 * w[3], "club_x1x2_cond": 4 * w[4]}
        self.critics = nn.ModuleDict({name: _critic_mlp(width[name], cfg.factorcl_critic_hidden,
                                                        cfg.factorcl_critic_layers) for name in FACTORCL_CRITICS})

    def scorers(self, frozen: tuple[str, ...] = ()) -> dict:
        """{critic name: callable}; a `frozen` critic scores with its weights detached (its scores still
        carry the inputs' gradient): how the encoders' loss uses the NCE-CLUB critics, whose own
        weights only their learning loss trains."""
        out = {}
        for name, net in self.critics.items():
            if name in frozen:
                params = {k: v.detach() for k, v in net.named_parameters()}
                out[name] = lambda x, net=net, params=params: torch.func.functional_call(net, params, (x,))
            else:
                out[name] = net
        return out


def factorcl_objective(model: nn.Module, data: BenchmarkTensors, cfg: S3Config, idx, gen):
    """FactorCL-SSL (Liang et al., NeurIPS 2023) on the batch `idx`, two modalities: the sample and
    one augmented view (s3core.tensors.augment) are encoded; each z is cut into the five projections
    (FactorCLCritics). Returns the encoders' loss (s3core.losses.factorcl_ssl_terms, NCE-CLUB critics'
    weights detached) plus the NCE-CLUB critics' learning loss on detached projections: one backward
    gives the authors' two updates their gradients (they step the CLUB critics after the encoders,
    on the updated encoders; here both step together: docs/METHOD_NOTES.md)."""
    if len(data.modalities) != 2:
        raise ConfigError(f"FactorCL is defined for two modalities; this benchmark has {len(data.modalities)}: "
                          "pick two with modalities=[a, b]")
    inputs, _ = data["train"].batch(idx)
    rows, sizes = local_share(len(idx))
    plain = standardise(inputs, data)
    aug = standardise(augment(inputs, data.feature_std, cfg.aug_noise, cfg.aug_step_drop, gen), data)
    out, out_aug = model(_share(plain, rows)), model(_share(aug, rows))
    critics = (model.module if hasattr(model, "module") else model).task_head
    m1, m2 = data.modalities

    def blocks(o, m, detach=False):
        z = gather_batch(o[m].z, sizes)
        return dict(zip(FACTORCL_HEADS, (z.detach() if detach else z).tensor_split(len(FACTORCL_HEADS), dim=1)))

    # Every worker scores all B x B pairs of the gathered batch, so each would give the critics' weights
    # the whole batch's gradient and all_reduce_grads' sum would be world x it: only rank 0 trains them
    # (the others' critics score with detached weights; their inputs' gradient still flows).
    not_rank0 = rank_world()[0] != 0
    terms = factorcl_ssl_terms(blocks(out, m1), blocks(out, m2), blocks(out_aug, m1), blocks(out_aug, m2),
                               critics.scorers(frozen=FACTORCL_CRITICS if not_rank0 else FACTORCL_CLUB_CRITICS))
    learn = factorcl_club_learning_loss(blocks(out, m1, True), blocks(out, m2, True), blocks(out_aug, m1, True),
                                        blocks(out_aug, m2, True), critics.scorers(FACTORCL_CRITICS if not_rank0 else ()))
    encoder_loss = torch.stack(list(terms.values())).sum()
    return encoder_loss + learn, {**terms, "encoders": encoder_loss, "club_critics": learn}


__all__ = ["special_loss", "select_loss", "supervised_loss",
           # issue 21: DisentangledSSL / JointOpt
           "dssl_shared_loss", "dssl_specific_loss", "joint_opt_objective",
           # issue 21: FOCAL / FactorCL
           "windows", "focal_objective", "FactorCLCritics", "factorcl_objective"]
