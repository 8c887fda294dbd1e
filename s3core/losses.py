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
           # issue 21: FOCAL / FactorCL
           "focal_contrastive", "focal_orthogonality", "focal_temporal_ranking", "focal_loss", "critic_pair_scores",
           "nce_lower_bound", "club_upper_bound", "FACTORCL_HEADS", "FACTORCL_CRITICS", "FACTORCL_CLUB_CRITICS",
           "factorcl_ssl_terms", "factorcl_ssl_loss", "factorcl_club_learning_loss"]
