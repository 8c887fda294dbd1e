"""S3's losses (S3_METHOD.md). All inputs z are L2-normalised (B, d) embeddings."""
from __future__ import annotations

import itertools
import math

import torch
import torch.nn.functional as F
from torch import Tensor


def info_nce(anchor: Tensor, positive: Tensor, tau: float) -> Tensor:
    """InfoNCE[a->b]: row i of `anchor` must pick row i of `positive` among all rows.

    Args: anchor, positive: (B, d); tau: temperature. Returns a scalar.
    """
    logits = anchor @ positive.T / tau                                   # (B, B)
    targets = torch.arange(anchor.shape[0], device=anchor.device)
    return F.cross_entropy(logits, targets)


def intra_modal_info_nce(view1: dict[str, Tensor], view2: dict[str, Tensor], tau: float) -> Tensor:
    """L_rep = mean over modalities m of InfoNCE[m->m] between two augmented views."""
    return torch.stack([info_nce(view1[m], view2[m], tau) for m in view1]).mean()


def cross_modal_info_nce(z: dict[str, Tensor], tau: float) -> Tensor:
    """L_dsc = mean over ordered modality pairs (m, m') of InfoNCE[m->m']."""
    pairs = list(itertools.permutations(z, 2))
    return torch.stack([info_nce(z[a], z[b], tau) for a, b in pairs]).mean()


def supcon_cross(anchor: Tensor, other: Tensor, labels: Tensor, tau: float) -> Tensor:
    """Cross-modal SupCon, one direction: for anchor i in modality m and every positive s
    (same label) in modality m', -log( exp(<z_i, z_s>/tau) / sum_j exp(<z_i, z_j>/tau) ),
    averaged over the positives of each anchor, then over anchors. Sample i is its own
    positive in the other modality, so every anchor has at least one."""
    logits = anchor @ other.T / tau                                      # (B, B)
    log_prob = logits - logits.logsumexp(dim=1, keepdim=True)
    positives = (labels[:, None] == labels[None, :]).to(log_prob.dtype)  # (B, B)
    per_anchor = -(log_prob * positives).sum(1) / positives.sum(1)
    return per_anchor.mean()


def supcon_loss(z: dict[str, Tensor], labels: Tensor, tau: float) -> Tensor:
    """L_suff: cross-modal SupCon averaged over ordered modality pairs (both directions)."""
    pairs = list(itertools.permutations(z, 2))
    return torch.stack([supcon_cross(z[a], z[b], labels, tau) for a, b in pairs]).mean()


def class_mean_directions(z: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    """mu_y: the normalised mean of z over the samples of class y in the batch. (C, d); a class
    absent from the batch gets a zero row (it contributes nothing)."""
    sums = z.new_zeros(num_classes, z.shape[1]).index_add(0, labels, z)
    return F.normalize(sums, dim=1)


def compactness_loss(z: dict[str, Tensor], labels: Tensor, num_classes: int) -> Tensor:
    """L_min = -E[<z_x^m, mu_y^m'>], mean over ordered modality pairs: pull each sample towards
    its class's mean direction in the other modality (a vMF approximation of I(Z; X | Y))."""
    terms = []
    for a, b in itertools.permutations(z, 2):
        mu = class_mean_directions(z[b], labels, num_classes)            # (C, d)
        terms.append(-(z[a] * mu[labels]).sum(1).mean())
    return torch.stack(terms).mean()


# ---------------------------------------------------------------- issue 21: DisentangledSSL / JointOpt
# The InfoMax baselines' losses, each equal to the authors' code (uhlerlab/DisentangledSSL at commit
# cda29ec29bf8ad85344637f643a372ba8e74363e, folder synthetic_task/) to float tolerance:
# tests/s3core/test_infomax_disentangled.py holds them against fixtures made by running that code
# (tests/s3core/fixtures/infomax/make_disentangled_fixtures.py). Formulas: docs/METHOD_NOTES.md,
# "InfoMax baselines (issue 21)".

def symmetric_info_nce(a: Tensor, b: Tensor, tau: float) -> Tensor:
    """0.5 * (InfoNCE[a->b] + InfoNCE[b->a]) on L2-normalised rows.

    The authors' critic: losses.py `SupConLoss()(torch.stack([a, b], 1))` (no labels,
    contrast_mode 'all', temperature = base_temperature = 0.07). Its logits mask removes the
    a-a and b-b blocks, so each of the 2B anchors contrasts only against the other view's B rows:
    exactly the two InfoNCE directions, averaged (its factor temperature / base_temperature is 1).
    """
    return 0.5 * (info_nce(a, b, tau) + info_nce(b, a, tau))


def vmf_mean_alignment(mu1: Tensor, mu2: Tensor) -> Tensor:
    """-E[cos(mu1, mu2)]: the authors' losses.py `kl_vmf`, their stand-in for the symmetrised KL of
    two von Mises-Fisher posteriors of equal kappa (the KL is kappa * (1 - cos) up to constants)."""
    return -(F.normalize(mu1, dim=-1) * F.normalize(mu2, dim=-1)).sum(-1).mean()


def orthogonality(a: Tensor, b: Tensor) -> Tensor:
    """|| norm(a)^T norm(b) ||_F over the batch: the authors' losses.py `ortho_loss(norm=True)`,
    the Frobenius norm of the (d_a, d_b) cross-correlation of the row-normalised embeddings (a
    sum over the batch, not a mean: it grows with the batch size)."""
    return torch.linalg.matrix_norm(F.normalize(a, dim=-1).T @ F.normalize(b, dim=-1))


def vmf_rsample(loc: Tensor, kappa: float, gen: torch.Generator | None = None) -> Tensor:
    """One reparameterised sample per row of vMF(loc, kappa) on the unit sphere S^{m-1}.

    Wood's (1994) rejection sampler, as the authors' models.py `VonMisesFisher.rsample`: draw
    w = <z, e1> by rejection (with their blend b = (m-1)/(4 kappa) for kappa >= 11, a Taylor
    form that avoids cancellation), a uniform direction v orthogonal to e1, then the Householder
    reflection that takes e1 to loc. w and v carry no gradient; the reflection does, so the loss
    reaches loc. Beta((m-1)/2, (m-1)/2) is drawn as A / (A + B) with A, B chi-square with m-1
    degrees of freedom (sums of squared normals), so every draw comes from `gen`.
    kappa == 0 returns loc itself (no sampling: the authors' deterministic `simclr` switch).

    Args: loc: (B, m) unit rows, m >= 2; kappa: concentration >= 0; gen: the random stream.
    """
    if kappa == 0:
        return loc
    B, m = loc.shape
    if m < 2:
        raise ValueError(f"vmf_rsample needs rows of width >= 2 (a sphere S^(m-1)), got width {m}")
    dev, dt = loc.device, loc.dtype
    rd = gen.device if gen is not None else dev          # draw where the generator lives
    with torch.no_grad():
        kap = torch.tensor(float(kappa), dtype=torch.float64)
        c = torch.sqrt(4 * kap ** 2 + (m - 1) ** 2)
        b_true = (-2 * kap + c) / (m - 1)
        b_app = (m - 1) / (4 * kap)
        s = torch.clamp(kap - 10, 0.0, 1.0)
        b = b_app * s + b_true * (1 - s)
        a = (m - 1 + 2 * kap + c) / 4
        d = (4 * a * b) / (1 + b) - (m - 1) * math.log(m - 1)
        a, b, d = float(a), float(b), float(d)
        w = torch.empty(B, dtype=torch.float64, device=rd)
        todo = torch.ones(B, dtype=torch.bool, device=rd)
        while todo.any():
            n = int(todo.sum())
            chi = torch.randn(2, n, m - 1, generator=gen, dtype=torch.float64, device=rd).pow(2).sum(-1)
            e = chi[0] / chi[0].add(chi[1])
            u = torch.rand(n, generator=gen, dtype=torch.float64, device=rd).clamp(1e-20, 1 - 1e-20)
            w_ = (1 - (1 + b) * e) / (1 - (1 - b) * e)
            t = (2 * a * b) / (1 - (1 - b) * e)
            accept = ((m - 1) * t.log() - t + d) > u.log()
            idx = todo.nonzero().squeeze(1)
            w[idx[accept]] = w_[accept]
            todo[idx[accept]] = False
        v = torch.randn(B, m - 1, generator=gen, dtype=torch.float64, device=rd)
        v = v / v.norm(dim=-1, keepdim=True)
        w = w.unsqueeze(1)
        x = torch.cat([w, (1 - w ** 2).clamp_min(1e-10).sqrt() * v], 1).to(device=dev, dtype=dt)
    e1 = torch.zeros(m, device=dev, dtype=dt)
    e1[0] = 1.0
    h = e1 - loc
    h = h / (h.norm(dim=-1, keepdim=True) + 1e-5)
    return x - 2 * (x * h).sum(-1, keepdim=True) * h


def _pairs_mean(values: list[Tensor]) -> Tensor:
    return torch.stack(values).mean()


def dssl_step1_loss(z: dict[str, Tensor], mu: dict[str, Tensor], tau: float, beta: float) -> tuple[Tensor, Tensor, Tensor]:
    """DisentangledSSL step 1 (the shared encoders): L = InfoNCE(z) + beta * (-cos(mu_m, mu_m')).

    z[m]: modality m's vMF sample around mu[m] (normalised here, as theirs); mu[m]: its encoder's
    output. InfoNCE is `cross_modal_info_nce` (mean over ordered modality pairs), the alignment
    the mean over unordered pairs: with two modalities, exactly the authors' algorithms.py
    `MVInfoMaxModel.forward` (distribution 'vmf', head 'none'). Returns (total, InfoNCE, alignment)."""
    clip = cross_modal_info_nce({m: F.normalize(v, dim=-1) for m, v in z.items()}, tau)
    skl = _pairs_mean([vmf_mean_alignment(mu[a], mu[b]) for a, b in itertools.combinations(mu, 2)])
    return clip + beta * skl, clip, skl


def specific_info_nce(private: Tensor, private_v: Tensor, shared_other: Tensor, shared_other_v: Tensor,
                      tau: float) -> Tensor:
    """One modality's specific term: InfoNCE_sym between its two augmented views of
    normalise([private ; the other modality's shared]) (the authors' apdzs=True, usezsx=False:
    the private part is paired with the *other* modality's shared part)."""
    j = F.normalize(torch.cat([private, shared_other], 1), dim=-1)
    jv = F.normalize(torch.cat([private_v, shared_other_v], 1), dim=-1)
    return symmetric_info_nce(j, jv, tau)


def disentangled_specific_terms(p: dict[str, Tensor], pv: dict[str, Tensor], s: dict[str, Tensor],
                                sv: dict[str, Tensor], tau: float) -> tuple[Tensor, Tensor]:
    """(specific, ortho) of DisentangledSSL step 2 and JointOpt, from each modality's private part
    p[m], shared part s[m] and the same of its second view pv[m], sv[m]:
        specific = sum_m mean_{m' != m} spec(p_m, s_m')          (`specific_info_nce`)
        ortho = 0.5 sum_m O(p_m, s_m) + 0.5 sum_m O(pv_m, sv_m)   (O = `orthogonality`)
    With two modalities, the authors' algorithms.py `DisenModel.forward` / `JointDisenModel.forward`
    (spec(x1) + spec(x2): a sum over modalities, as theirs)."""
    specific = torch.stack([_pairs_mean([specific_info_nce(p[m], pv[m], s[o], sv[o], tau) for o in s if o != m])
                            for m in p]).sum()
    ortho = (0.5 * torch.stack([orthogonality(p[m], s[m]) for m in p]).sum()
             + 0.5 * torch.stack([orthogonality(pv[m], sv[m]) for m in p]).sum())
    return specific, ortho


def dssl_step2_loss(p, pv, s, sv, tau: float, lmd: float) -> tuple[Tensor, Tensor, Tensor]:
    """DisentangledSSL step 2 (the specific encoders, the shared ones frozen): specific + lmd * ortho
    (`disentangled_specific_terms`; the caller detaches the shared parts, as the authors do).
    Returns (total, specific, ortho)."""
    specific, ortho = disentangled_specific_terms(p, pv, s, sv, tau)
    return specific + lmd * ortho, specific, ortho


def joint_opt_loss(zs: dict[str, Tensor], zsv: dict[str, Tensor], p, pv, s, sv, tau: float, a: float,
                   lmd: float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """JointOpt: 2 shared / (1 + a) + a specific / (1 + a) + lmd ortho, in one step.

    shared = 0.5 (InfoNCE(zs) + InfoNCE(zsv)), `cross_modal_info_nce` on the vMF samples of both
    views (not re-normalised: a vMF sample lies on the sphere, and theirs is not either);
    specific, ortho: `disentangled_specific_terms` on the shared outputs s (not the samples). The
    authors' algorithms.py `JointDisenModel.forward`. Returns (total, shared, specific, ortho)."""
    shared = 0.5 * (cross_modal_info_nce(zs, tau) + cross_modal_info_nce(zsv, tau))
    specific, ortho = disentangled_specific_terms(p, pv, s, sv, tau)
    return 2 * shared / (1 + a) + a * specific / (1 + a) + lmd * ortho, shared, specific, ortho
# ---------------------------------------------------------------- end issue 21: DisentangledSSL / JointOpt
# ------------------------------------------------------------------ issue 21: FOCAL / FactorCL
# The InfoMax baselines' losses (docs/METHOD_NOTES.md, "InfoMax baselines (issue 21)"). Each
# equals its authors' code on the same tensors (tests/s3core/test_infomax_focal_factorcl.py,
# fixtures made by running that code: tests/s3core/fixtures/infomax/). Unlike S3's losses above,
# these take raw (not necessarily normalised) features, as the authors' functions do.

def _as_sequence(e: Tensor) -> Tensor:
    """(B, d) -> (B, 1, d); (B, S, d) unchanged: FOCAL's features are sequences of S windows."""
    return e.unsqueeze(1) if e.dim() == 2 else e


def focal_contrastive(e1: Tensor, e2: Tensor, tau: float) -> Tensor:
    """FOCAL's contrastive term: SimCLR's NT-Xent between the rows of e1 and e2, at each of the S
    temporal positions on its own (a sequence is compared with other sequences only at paired
    positions), averaged over positions and the 2B anchors.

    Anchor i of e1 has positive row i of e2 (and vice versa); its negatives are every other row of
    both sets (2B - 2), cosine similarity / tau.
    Reference: tomoyoshki/focal src/models/loss.py, FOCALLoss.forward_contrastive_loss
    (finegrain=False). Args: e1, e2: (B, d) or (B, S, d). Returns a scalar."""
    a, b = _as_sequence(e1).transpose(0, 1), _as_sequence(e2).transpose(0, 1)    # (S, B, d)
    z = F.normalize(torch.cat([a, b], dim=1), dim=-1)                             # (S, 2B, d)
    n = z.shape[1]
    sim = z @ z.transpose(1, 2) / tau                                             # (S, 2B, 2B)
    self_mask = torch.eye(n, dtype=torch.bool, device=z.device)
    sim = sim.masked_fill(self_mask, float("-inf"))
    targets = (torch.arange(n, device=z.device) + n // 2) % n                     # i <-> i + B
    return F.cross_entropy(sim.reshape(-1, n), targets.repeat(z.shape[0]))


def focal_orthogonality(a: Tensor, b: Tensor) -> Tensor:
    """FOCAL's orthogonality term: mean over rows (and positions) of max(0, cos(a_i, b_i)): only
    a positive cosine is penalised. Reference: FOCALLoss.forward_orthogonality_loss
    (nn.CosineEmbeddingLoss with target -1, margin 0). Args: (B, d) or (B, S, d)."""
    a, b = a.reshape(-1, a.shape[-1]), b.reshape(-1, b.shape[-1])
    return F.cosine_similarity(a, b, dim=-1).clamp_min(0).mean()


def focal_temporal_ranking(e: Tensor, margin: float) -> Tensor:
    """FOCAL's temporal constraint: a sequence's windows must lie closer to each other than to other
    sequences' windows. With d_ij the mean Euclidean distance between the windows of sequences i
    and j (for i = j, over distinct windows), the loss is the mean over i != j of
    max(0, d_ii - d_ij + margin). Reference: FOCALLoss.forward_temporal_inter_ranking_loss
    (nn.MarginRankingLoss with target -1). Args: e: (B, S, d), S >= 2 (with S = 1, d_ii is 0/0:
    the authors' code returns NaN; the objective skips the term instead)."""
    B, S, d = e.shape
    dist = torch.cdist(e.reshape(B * S, d), e.reshape(B * S, d), p=2)
    dist = dist.reshape(B, S, B, S).permute(0, 2, 1, 3)                           # (B, B, S, S)
    keep = 1 - torch.eye(B * S, device=e.device, dtype=e.dtype)
    keep = keep.reshape(B, S, B, S).permute(0, 2, 1, 3)
    seq_dist = (dist * keep).sum((2, 3)) / keep.sum((2, 3))                       # (B, B)
    intra = seq_dist.diagonal()                                                   # (B,)
    off = ~torch.eye(B, dtype=torch.bool, device=e.device)
    return (intra[:, None] - seq_dist + margin).clamp_min(0)[off].mean()


def focal_loss(view1: dict[str, Tensor], view2: dict[str, Tensor], split: int, tau: float,
               w_shared: float, w_private: float, w_orth: float, w_rank: float,
               rank_margin: float) -> tuple[Tensor, dict[str, Tensor]]:
    """FOCAL's objective on two augmented views: {modality: (B, d) or (B, S, d)} each, every
    feature the concatenation [shared (first `split` columns); private (the rest)].

    L = w_shared * sum_views sum_{m<m'} NT-Xent(shared_m, shared_m')
      + w_private * sum_m NT-Xent(private_m(view 1), private_m(view 2))
      + w_orth * sum_views sum_m [orth(shared_m, private_m) + sum_{m'>m} orth(private_m, private_m')]
      + w_rank * sum_views sum_m ranking(feature_m)      (only with S >= 2 windows)
    Sums, not means, as the authors' code. Reference: tomoyoshki/focal src/models/loss.py,
    FOCALLoss.forward (its split_features halves: split = dim // 2). Returns (total, parts)."""
    mods = list(view1)
    views = [{m: _as_sequence(v[m]) for m in mods} for v in (view1, view2)]
    shared = [{m: v[m][..., :split] for m in mods} for v in views]
    private = [{m: v[m][..., split:] for m in mods} for v in views]
    zero = views[0][mods[0]].new_zeros(())
    sh = sum((focal_contrastive(s[a], s[b], tau) for s in shared for i, a in enumerate(mods) for b in mods[i + 1:]),
             zero)
    pr = sum((focal_contrastive(private[0][m], private[1][m], tau) for m in mods), zero)
    orth = zero
    for s, p in zip(shared, private):
        for i, m in enumerate(mods):
            orth = orth + focal_orthogonality(s[m], p[m])
            for m2 in mods[i + 1:]:
                orth = orth + focal_orthogonality(p[m], p[m2])
    seq_len = views[0][mods[0]].shape[1]
    rank = sum((focal_temporal_ranking(v[m], rank_margin) for v in views for m in mods), zero) if seq_len > 1 else zero
    total = w_shared * sh + w_private * pr + w_orth * orth + w_rank * rank
    return total, {"shared": sh, "private": pr, "orth": orth, "rank": rank}


def critic_pair_scores(critic, rows: Tensor, cols: Tensor, rows_first: bool) -> Tensor:
    """A concat critic's scores of every pair: S[i, j] = critic([rows_i; cols_j]) (rows_first) or
    critic([cols_j; rows_i]), (B, B); the diagonal holds the positive (joint) pairs. FactorCL's
    InfoNCECritic scores f([x_j; y_i]) (rows = y, cols = x, rows_first False); its
    CLUBInfoNCECritic f([y_i; x_j]) (rows_first True). Reference: pliang279/FactorCL
    critic_objectives.py, InfoNCECritic.forward / CLUBInfoNCECritic.forward (x_tile, y_tile)."""
    B = rows.shape[0]
    r = rows.unsqueeze(1).expand(B, B, rows.shape[1])                              # r[i, j] = rows_i
    c = cols.unsqueeze(0).expand(B, B, cols.shape[1])                              # c[i, j] = cols_j
    return critic(torch.cat([r, c] if rows_first else [c, r], dim=-1)).squeeze(-1)


def nce_lower_bound(scores: Tensor) -> Tensor:
    """The InfoNCE lower bound of MI from a (B, B) critic score matrix (positives on the diagonal):
    mean_i S_ii - (mean_i logsumexp_j S_ij - log B). Reference: FactorCL critic_objectives.py,
    InfoNCECritic.forward (which returns its negative)."""
    return scores.diagonal().mean() - (scores.logsumexp(dim=1).mean() - math.log(scores.shape[0]))


def club_upper_bound(scores: Tensor) -> Tensor:
    """FactorCL's NCE-CLUB upper bound of MI: mean_i S_ii - mean_ij S_ij, S from a critic trained
    with the InfoNCE bound. Reference: critic_objectives.py, CLUBInfoNCECritic.forward."""
    return scores.diagonal().mean() - scores.mean()


# FactorCL-SSL's five projections of each modality's embedding, in the order of FactorCLSSL.get_embedding
# (the probe's feature order): the shared I(X1;X2) term, its CLUB term, the unique I(X_i;X_i') term,
# the conditional I(X1;X2|X1',X2') term and its CLUB term.
FACTORCL_HEADS = ("infonce_x1x2", "club_x1x2", "infonce_xy", "infonce_x1x2_cond", "club_x1x2_cond")
FACTORCL_CRITICS = ("infonce_x1x2", "club_x1x2", "infonce_x1y", "infonce_x2y", "infonce_x1x2_cond", "club_x1x2_cond")
FACTORCL_CLUB_CRITICS = ("club_x1x2", "club_x1x2_cond")


def _factorcl_scores(x1, x2, x1_aug, x2_aug, critics) -> dict[str, Tensor]:
    """Each critic's (B, B) scores on the pairs FactorCLSSL.forward gives it."""
    c, cc = "infonce_x1x2_cond", "club_x1x2_cond"
    return {
        "infonce_x1x2": critic_pair_scores(critics["infonce_x1x2"], x2["infonce_x1x2"], x1["infonce_x1x2"], False),
        "club_x1x2": critic_pair_scores(critics["club_x1x2"], x2["club_x1x2"], x1["club_x1x2"], True),
        "infonce_x1y": critic_pair_scores(critics["infonce_x1y"], x1_aug["infonce_xy"], x1["infonce_xy"], False),
        "infonce_x2y": critic_pair_scores(critics["infonce_x2y"], x2_aug["infonce_xy"], x2["infonce_xy"], False),
        c: critic_pair_scores(critics[c], torch.cat([x2[c], x2_aug[c]], 1), torch.cat([x1[c], x1_aug[c]], 1), False),
        cc: critic_pair_scores(critics[cc], torch.cat([x2[cc], x2_aug[cc]], 1), torch.cat([x1[cc], x1_aug[cc]], 1),
                               True),
    }


def factorcl_ssl_terms(x1: dict[str, Tensor], x2: dict[str, Tensor], x1_aug: dict[str, Tensor],
                       x2_aug: dict[str, Tensor], critics: dict) -> dict[str, Tensor]:
    """FactorCL-SSL's six terms (their sum is the encoder's loss):
    -I_NCE(X1;X2) + I_CLUB(X1;X2) - I_NCE(X1;X1') - I_NCE(X2;X2') - I_NCE(X1;X2|X1',X2')
    + I_CLUB(X1;X2|X1',X2'), each on its own projection (FACTORCL_HEADS) and critic
    (FACTORCL_CRITICS); the conditional terms condition on the augmented view by concatenating it.

    Args: x1, x2, x1_aug, x2_aug: {head name: (B, w)} a modality's projections of the sample and of
        its augmented view; critics: {critic name: callable (..., in) -> (..., 1)}.
    Reference: pliang279/FactorCL multibench_model.py, FactorCLSSL.forward."""
    s = _factorcl_scores(x1, x2, x1_aug, x2_aug, critics)
    return {"nce_x1x2": -nce_lower_bound(s["infonce_x1x2"]), "club_x1x2": club_upper_bound(s["club_x1x2"]),
            "nce_x1x1aug": -nce_lower_bound(s["infonce_x1y"]), "nce_x2x2aug": -nce_lower_bound(s["infonce_x2y"]),
            "nce_x1x2_cond": -nce_lower_bound(s["infonce_x1x2_cond"]),
            "club_x1x2_cond": club_upper_bound(s["club_x1x2_cond"])}


def factorcl_ssl_loss(x1, x2, x1_aug, x2_aug, critics) -> Tensor:
    """The sum of factorcl_ssl_terms: FactorCLSSL.forward's value."""
    return torch.stack(list(factorcl_ssl_terms(x1, x2, x1_aug, x2_aug, critics).values())).sum()


def factorcl_club_learning_loss(x1, x2, x1_aug, x2_aug, critics) -> Tensor:
    """The NCE-CLUB critics' own loss: -I_NCE of each CLUB critic on its pairs (it learns to tell
    joint from product pairs; the encoders' loss then uses its scores for the upper bound).
    Reference: FactorCLSSL.learning_loss (CLUBInfoNCECritic.learning_loss)."""
    c, cc = "club_x1x2", "club_x1x2_cond"
    s1 = critic_pair_scores(critics[c], x2[c], x1[c], True)
    s2 = critic_pair_scores(critics[cc], torch.cat([x2[cc], x2_aug[cc]], 1), torch.cat([x1[cc], x1_aug[cc]], 1), True)
    return -nce_lower_bound(s1) - nce_lower_bound(s2)


__all__ = ["info_nce", "intra_modal_info_nce", "cross_modal_info_nce", "supcon_cross", "supcon_loss",
           "class_mean_directions", "compactness_loss",
           # issue 21: DisentangledSSL / JointOpt
           "symmetric_info_nce", "vmf_mean_alignment", "orthogonality", "vmf_rsample", "dssl_step1_loss",
           "specific_info_nce", "disentangled_specific_terms", "dssl_step2_loss", "joint_opt_loss",
           # issue 21: FOCAL / FactorCL
           "focal_contrastive", "focal_orthogonality", "focal_temporal_ranking", "focal_loss", "critic_pair_scores",
           "nce_lower_bound", "club_upper_bound", "FACTORCL_HEADS", "FACTORCL_CRITICS", "FACTORCL_CLUB_CRITICS",
           "factorcl_ssl_terms", "factorcl_ssl_loss", "factorcl_club_learning_loss"]
