"""S3's losses (S3_METHOD.md). All inputs z are L2-normalised (B, d) embeddings."""
from __future__ import annotations

import itertools

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


__all__ = ["info_nce", "intra_modal_info_nce", "cross_modal_info_nce", "supcon_cross", "supcon_loss",
           "class_mean_directions", "compactness_loss"]
