"""Data parallelism that keeps the batch: every worker's loss sees the whole batch.

With W workers each forwards a contiguous share of every batch. Contrastive losses (InfoNCE,
SupCon) and L_min need the whole batch: their negatives and class means are what the paper's
batch-size axis varies. So each worker gathers the other shares' embeddings (as constants) around
its own (with its graph) and computes the loss of the whole batch, the same value on every worker;
its backward then gives the gradient through its own rows only, and the SUM of the workers'
gradients is the gradient of the whole-batch loss, as one process computes it. The MoE layers'
routing statistics (L_aux: expert load, mean router probabilities, entropies) are summed the same
way (`batch_wide_routing_stats`).

No torch.distributed process group (one process): every function here is the identity.
"""
from __future__ import annotations

import contextlib

import torch
from torch import Tensor, nn

from s3core.moe import MoEFFN


def rank_world() -> tuple[int, int]:
    """(rank, world size) of the default process group; (0, 1) without one."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def share_sizes(n: int, world: int) -> list[int]:
    """Rows of a batch of n per worker: contiguous shares, the first n % world one row longer."""
    return [n // world + (1 if r < n % world else 0) for r in range(world)]


def local_share(n: int) -> tuple[slice, list[int]]:
    """This worker's rows of a batch of n, and every worker's share size."""
    rank, world = rank_world()
    sizes = share_sizes(n, world)
    start = sum(sizes[:rank])
    return slice(start, start + sizes[rank]), sizes


def gather_batch(local: Tensor, sizes: list[int]) -> Tensor:
    """The whole batch from every worker's share, in rank order.

    Args:
        local: this worker's share (sizes[rank], ...), part of the autograd graph.
        sizes: every worker's share size (local_share).
    Returns:
        (sum(sizes), ...): the other shares as constants, this worker's rows as `local` itself, so
        a loss of it back-propagates into this worker's rows only.
    """
    rank, world = rank_world()
    if world == 1:
        return local
    longest = max(sizes)
    buf = local.new_zeros((longest,) + local.shape[1:])
    buf[: local.shape[0]] = local.detach()
    parts = [torch.empty_like(buf) for _ in range(world)]
    torch.distributed.all_gather(parts, buf)               # equal shapes: shares padded to the longest
    parts = [p[:s] for p, s in zip(parts, sizes)]
    parts[rank] = local
    return torch.cat(parts)


def sum_across_workers(local: Tensor) -> Tensor:
    """The sum over workers of `local`, with the gradient flowing into this worker's term only."""
    _, world = rank_world()
    if world == 1:
        return local
    total = local.detach().clone()
    torch.distributed.all_reduce(total)
    return local + (total - local.detach())


def all_reduce_grads(params: list[nn.Parameter]) -> None:
    """SUM the gradients over workers in one flat all-reduce (each holds the gradient through its
    own rows of the whole-batch loss). Done by hand rather than with DDP: Stage 2 freezes all but
    the routers, which DDP's fixed buckets do not allow."""
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    torch.distributed.all_reduce(flat)
    offset = 0
    for p, g in zip(params, grads):
        n = g.numel()
        p.grad = flat[offset:offset + n].view_as(p).clone()
        offset += n


@contextlib.contextmanager
def batch_wide_routing_stats(model: nn.Module):
    """Inside the block, every MoE layer sums its routing statistics over workers before L_aux."""

    _, world = rank_world()
    layers = [m for m in model.modules() if isinstance(m, MoEFFN)]
    if world == 1:
        yield
        return
    for m in layers:
        m.stat_reducer = sum_across_workers
    try:
        yield
    finally:
        for m in layers:
            m.stat_reducer = None


__all__ = ["rank_world", "share_sizes", "local_share", "gather_batch", "sum_across_workers", "all_reduce_grads",
           "batch_wide_routing_stats"]
