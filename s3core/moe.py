"""Fine-grained Mixture-of-Experts FFN with Stage 3's routing-pair pruning.

Router g(x) = TOP_k(softmax(W_g x)); MoE(x) = sum_i g(x)_i e_i(x)  (S3_METHOD.md). The top-k
gates are not renormalised: the paper writes TOP_k of the softmax, and with chi = rho = k = 1
that is exactly a dense FFN (the single gate is 1). `MoEConfig.gate_renorm` (off by default)
divides each token's kept gates by their sum, after top-k and after Stage 3's pruning; pruning
still ranks the raw gates.

Dispatch (MoEConfig.dispatch): the chosen (token, expert) pairs are sorted by expert, then
- "fused": one autograd Function with a hand-written backward runs expert by expert: gather that
  expert's tokens, addmm + GELU, scale by the gate *before* the second matmul (H < D columns),
  matmul, index_add_ straight into the output. Nothing of size (pairs, d_model) is kept for
  backward (the gather is redone there), so each expert's working set stays in cache; b2 enters
  as one (N, E) gate matrix @ b2. Measured fastest on the CPU (bench/RESULTS.md).
- "grouped_mm": all experts in one `torch._grouped_mm` per FFN matrix (the fast path on Hopper GPUs).
- "loop": the plain per-expert Python loop under autograd (the slow reference).
"auto" picks "fused" on the CPU and "grouped_mm" on CUDA when available. Pruned pairs are removed
before dispatch, so a keep-ratio p < 1 saves compute, not only a mask.

Stage 3 sets three attributes of the layer (s3core/pruning.py does it for a whole model):
- `prune_threshold`: keep exactly the pairs whose gate is >= this value, token by token (the
  'threshold' prune scope), instead of the top fraction of the batch's pairs;
- `gate_recorder`: a list the layer appends (gates, batch row of each pair's token) to, for every
  chosen pair (fitting the threshold);
- `row_stable`: compute every token's output in fixed 64-row products (`row_stable_matmul`) and
  sum its k expert outputs in a fixed order, so a token's result does not depend on which other
  tokens share the batch, to the last bit. Evaluation only (no autograd).
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from s3core.config import MoEConfig, check_keep_ratio


class MoEOutput(NamedTuple):
    output: Tensor                 # (B, T, D)
    aux_loss: Tensor               # scalar: the weighted L_aux of this layer
    aux_parts: dict[str, Tensor]   # raw scalars: load_balance, local_entropy, global_entropy
    expert_load: Tensor            # (E,) fraction of chosen pairs sent to each expert (pre-pruning)
    kept_fraction: Tensor          # scalar: pairs computed / pairs chosen (= p up to rounding)
    gate_mass: Tensor | None = None  # (B, T) each token's kept gates summed (before gate_renorm),
                                   # only when `want_gate_mass` is set (the gate_mass pooling)


ROW_BLOCK = 64  # rows per product on the row-stable path


def row_stable_matmul(x: Tensor, w: Tensor) -> Tensor:
    """x (n, K) @ w (K, H) with every row computed inside a (ROW_BLOCK, K) x (K, H) product.

    BLAS picks other kernels for a handful of rows: on this CPU a 1-row or 7-row product differs
    in the last bits from the same rows inside a 64-row one. With every block the same shape, a
    row's result depends on that row alone. Returns (n_padded, H): n rounded up to ROW_BLOCK; the
    caller keeps the padded rows through its element-wise ops (so their vectorised loops have no
    tail handled by other code) and slices at the end.
    """
    n, K = x.shape
    pad = (-n) % ROW_BLOCK
    if pad or n == 0:
        x = F.pad(x, (0, 0, 0, pad if n else ROW_BLOCK))
    blocks = x.view(-1, ROW_BLOCK, K)
    return torch.bmm(blocks, w.to(x.dtype).expand(blocks.shape[0], K, w.shape[1])).reshape(-1, w.shape[1])


def _pad_rows(t: Tensor, rows: int) -> Tensor:
    return t if t.shape[0] == rows else F.pad(t, (0, 0) * (t.dim() - 1) + (0, rows - t.shape[0]))


def num_kept(num_pairs: int, keep_ratio: float) -> int:
    """How many of `num_pairs` routing pairs a keep-ratio p keeps: ceil(p * n), at least 1."""
    if num_pairs == 0:
        return 0
    # round() first so that 0.3 * 10 = 3.0000000000000004 keeps 3, not 4
    return max(1, min(num_pairs, math.ceil(round(keep_ratio * num_pairs, 6))))


def top_pairs(scores: Tensor, n_keep: int) -> Tensor:
    """Indices of the n_keep highest scores (which of equal scores survive is unspecified).

    On the CPU, topk's cost grows with k, so for n_keep > n / 2 it is cheaper to find the
    n - n_keep lowest scores and keep the rest: at p = 0.9 of 128k pairs, 2.5 ms instead of 9 ms
    (bench section 2). On CUDA, topk(n_keep) stays: the mask path's nonzero() would sync."""
    n = scores.shape[0]
    if scores.device.type != "cpu" or 2 * n_keep <= n:
        return scores.topk(n_keep).indices
    drop = scores.topk(n - n_keep, largest=False).indices
    keep = torch.ones(n, dtype=torch.bool, device=scores.device)
    keep[drop] = False
    return keep.nonzero().squeeze(1)


class _ContiguousGrad(torch.autograd.Function):
    """Identity whose backward makes the incoming grad contiguous: grouped_mm's CPU backward
    rejects the stride-0 grads that reductions such as .sum() produce."""

    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return grad.contiguous()


def _grouped_mm_available() -> bool:
    return hasattr(torch, "_grouped_mm")


def resolve_dispatch(method: str, device: torch.device) -> str:
    """The dispatch "auto" means on `device`: measured fastest per device (bench/RESULTS.md)."""
    if method != "auto":
        return method
    if device.type == "cuda" and _grouped_mm_available():
        return "grouped_mm"
    return "fused"


class _FusedExperts(torch.autograd.Function):
    """sum over pairs of gate * (W2_e gelu(W1_e x + b1_e) + b2_e), expert by expert, in place.

    Inputs are sorted by expert; `counts` is the per-expert pair count (a Python list). The
    forward keeps only the (P, H) pre- and post-activation (as a dense FFN keeps its (N, d_ff)
    ones); the gathered tokens are gathered again in backward rather than stored.
    """

    @staticmethod
    def forward(ctx, tokens, gate, token_idx, expert_idx, counts, w1, b1, w2, b2):
        N, D = tokens.shape
        E, _, H = w1.shape
        P = gate.shape[0]
        dt = tokens.dtype
        w1c, b1c, w2c, b2c = (w.to(dt) for w in (w1, b1, w2, b2))
        g = gate.to(dt)
        # b2 of every pair at once: (N, E) gate matrix @ (E, D)
        gmat = tokens.new_zeros(N * E).index_put_((token_idx * E + expert_idx,), g, accumulate=True).view(N, E)
        out = torch.mm(gmat, b2c)
        pre = tokens.new_empty(P, H)
        act = tokens.new_empty(P, H)
        start = 0
        for e, n in enumerate(counts):
            if n:
                sl = slice(start, start + n)
                idx = token_idx[sl]
                xe = tokens.index_select(0, idx)
                a = torch.addmm(b1c[e], xe, w1c[e], out=pre[sl])
                h = torch._C._nn.gelu(a, out=act[sl])
                hg = h * g[sl].unsqueeze(1)
                out.index_add_(0, idx, torch.mm(hg, w2c[e]))
            start += n
        ctx.counts = counts
        ctx.save_for_backward(tokens, g, token_idx, expert_idx, gmat, pre, act, w1c, w2c, b2c)
        ctx.dtypes = (gate.dtype, w1.dtype, b1.dtype, w2.dtype, b2.dtype)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        tokens, g, token_idx, expert_idx, gmat, pre, act, w1, w2, b2 = ctx.saved_tensors
        need_x, need_g, _, _, _, need_w1, need_b1, need_w2, need_b2 = ctx.needs_input_grad
        go = grad_out.contiguous().to(tokens.dtype)
        E, D, H = w1.shape
        dx = torch.zeros_like(tokens) if need_x else None
        dw1 = torch.zeros_like(w1) if need_w1 else None
        db1 = tokens.new_zeros(E, H) if need_b1 else None
        dw2 = torch.zeros_like(w2) if need_w2 else None
        db2 = torch.mm(gmat.t(), go) if need_b2 else None
        dg = None
        if need_g:
            # d gate from the b2 term: (go @ b2^T)[token, expert]; the expert term is added below
            dg = torch.mm(go, b2.t()).view(-1).index_select(0, token_idx * E + expert_idx)
        need_inner = need_x or need_w1 or need_b1
        start = 0
        for e, n in enumerate(ctx.counts):
            if n:
                sl = slice(start, start + n)
                idx = token_idx[sl]
                ge = g[sl].unsqueeze(1)
                h = act[sl]
                gy = go.index_select(0, idx)                              # (n, D)
                if need_w2:
                    torch.mm((h * ge).t(), gy, out=dw2[e])
                if need_g or need_inner:
                    dhg = torch.mm(gy, w2[e].t())                         # (n, H)
                    if need_g:
                        dg[sl] += (dhg * h).sum(1)
                    if need_inner:
                        da = torch.ops.aten.gelu_backward(dhg.mul_(ge), pre[sl])
                        if need_b1:
                            db1[e] = da.sum(0)
                        if need_w1:
                            torch.mm(tokens.index_select(0, idx).t(), da, out=dw1[e])
                        if need_x:
                            dx.index_add_(0, idx, torch.mm(da, w1[e].t()))
            start += n
        gd, w1d, b1d, w2d, b2d = ctx.dtypes
        cast = lambda t, d: None if t is None else t.to(d)
        return (dx, cast(dg, gd), None, None, None, cast(dw1, w1d), cast(db1, b1d), cast(dw2, w2d),
                cast(db2, b2d))


class MoEFFN(nn.Module):
    """Fine-grained MoE feed-forward layer.

    Args:
        cfg: MoEConfig (chi, rho, top_k, d_model, d_ff, dispatch, aux weights), validated by its
            caller (S3Config.validate, once per trial): the layer trusts it.
    """

    def __init__(self, cfg: MoEConfig):
        super().__init__()
        self.cfg = cfg
        E, D, H = cfg.num_experts, cfg.d_model, cfg.expert_hidden
        self.router = nn.Linear(D, E, bias=False)
        # expert weights stacked for the grouped matmul: x (n, D) @ w1[e] (D, H)
        self.w1 = nn.Parameter(torch.empty(E, D, H))
        self.b1 = nn.Parameter(torch.empty(E, H))
        self.w2 = nn.Parameter(torch.empty(E, H, D))
        self.b2 = nn.Parameter(torch.empty(E, D))
        self.reset_parameters()
        # Stage 3 state (module docstring); plain attributes, never saved in the state dict
        self.prune_threshold: float | None = None
        self.gate_recorder: list | None = None
        self.row_stable: bool = False
        # data parallel training (s3core/distributed.py): sums the routing statistics over workers
        self.stat_reducer = None
        self.want_gate_mass: bool = False   # return MoEOutput.gate_mass (set by the encoder)

    def reset_parameters(self) -> None:
        # nn.Linear's default init, per expert
        D, H = self.cfg.d_model, self.cfg.expert_hidden
        for w, b, fan_in in ((self.w1, self.b1, D), (self.w2, self.b2, H)):
            bound = 1.0 / math.sqrt(fan_in)
            nn.init.uniform_(w, -bound, bound)
            nn.init.uniform_(b, -bound, bound)
        nn.init.normal_(self.router.weight, std=self.cfg.router_init_std)

    def forward(self, x: Tensor, token_mask: Tensor | None = None, keep_ratio: float = 1.0) -> MoEOutput:
        """
        Args:
            x: (B, T, D) tokens.
            token_mask: (B, T) bool, True for real tokens. Padding tokens are not routed and
                get a zero MoE output (the residual path carries them).
            keep_ratio: p in (0, 1]: keep the fraction p of this batch's routing pairs with the
                highest router scores; p = 1.0 is the unpruned layer, exactly. Must be 1.0 while
                `prune_threshold` is set (the two scopes exclude each other).
        Returns:
            MoEOutput.
        """
        check_keep_ratio(keep_ratio)
        if self.prune_threshold is not None and keep_ratio < 1.0:
            raise ValueError("keep_ratio < 1 with prune_threshold set: prune per batch or per token, not both")
        B, T, D = x.shape
        cfg = self.cfg
        k = cfg.k
        flat = x.reshape(B * T, D)
        if token_mask is not None:
            token_idx = token_mask.reshape(B * T).nonzero().squeeze(1)  # (N,)
            tokens = flat.index_select(0, token_idx)                    # (N, D)
        else:
            token_idx = None
            tokens = flat
        N = tokens.shape[0]

        row_stable = self.row_stable and not torch.is_grad_enabled()
        if row_stable:
            router_logits = row_stable_matmul(tokens, self.router.weight.t())  # (N padded, E)
            router_probs = router_logits.float().softmax(dim=-1)[:N]
        else:
            router_logits = self.router(tokens)                          # (N, E)
            router_probs = router_logits.float().softmax(dim=-1)         # (N, E)
        gate, expert_idx = router_probs.topk(k, dim=-1)                  # (N, k) each

        aux_parts, expert_load = self._aux_parts(router_probs, expert_idx, N)
        aux_loss = (cfg.aux_balance * aux_parts["load_balance"]
                    + cfg.aux_local_entropy * aux_parts["local_entropy"]
                    - cfg.aux_global_entropy * aux_parts["global_entropy"])

        pair_gate = gate.reshape(-1)                                     # (N*k,)
        pair_expert = expert_idx.reshape(-1)                             # (N*k,)
        pair_token = torch.arange(N, device=x.device).repeat_interleave(k)
        pair_slot = torch.arange(N * k, device=x.device)                 # (token, j-th choice) as token*k + j
        num_pairs = pair_gate.shape[0]
        if self.gate_recorder is not None:
            # each pair's gate and the batch row (sample) of its token, so padding rows can be left out
            token_pos = token_idx if token_idx is not None else torch.arange(N, device=x.device)
            self.gate_recorder.append((pair_gate.detach().float(), (token_pos // T).repeat_interleave(k)))
        keep = None
        if self.prune_threshold is not None:
            keep = (pair_gate.detach() >= self.prune_threshold).nonzero().squeeze(1)  # token by token
        elif keep_ratio < 1.0 and num_pairs > 0:
            keep = top_pairs(pair_gate.detach(), num_kept(num_pairs, keep_ratio))
        if keep is not None:
            pair_gate, pair_expert, pair_token, pair_slot = (pair_gate[keep], pair_expert[keep], pair_token[keep],
                                                             pair_slot[keep])
        kept_fraction = torch.tensor(pair_gate.shape[0] / max(num_pairs, 1))
        gate_mass = None
        if self.want_gate_mass or cfg.gate_renorm:
            mass = pair_gate.new_zeros(N).index_add(0, pair_token, pair_gate)          # (N,)
            if self.want_gate_mass:
                gate_mass = (mass if token_idx is None else
                             mass.new_zeros(B * T).index_copy(0, token_idx, mass)).reshape(B, T)
            if cfg.gate_renorm:
                pair_gate = pair_gate / mass.clamp_min(1e-9)[pair_token]

        if row_stable:
            expert_out = self._dispatch_row_stable(tokens, pair_gate, pair_expert, pair_token, pair_slot)
        else:
            expert_out = self._dispatch(tokens, pair_gate, pair_expert, pair_token)  # (N, D)
        if token_idx is not None:
            out = flat.new_zeros(B * T, D).index_copy(0, token_idx, expert_out)
        else:
            out = expert_out
        return MoEOutput(out.reshape(B, T, D), aux_loss, aux_parts, expert_load, kept_fraction, gate_mass)

    def _aux_parts(self, router_probs: Tensor, expert_idx: Tensor, N: int):
        """L_aux's parts from batch sums (expert counts, router probabilities, per-token entropies,
        tokens); with `stat_reducer` set, the sums are over every worker's share of the batch."""
        E = self.cfg.num_experts
        counts = torch.bincount(expert_idx.reshape(-1), minlength=E).to(router_probs.dtype)
        token_entropy = -(router_probs * router_probs.clamp_min(1e-9).log()).sum(-1)       # (N,)
        sums = torch.cat([router_probs.sum(0), token_entropy.sum().reshape(1),
                          router_probs.new_full((1,), float(N))])
        if self.stat_reducer is not None:
            # one collective per layer, whatever N (every worker must join it)
            counts = self.stat_reducer(counts)
            sums = self.stat_reducer(sums)
        # no token anywhere: every sum is 0, and the clamps make every part 0 (no host sync to test it)
        prob_sum, entropy_sum, n_tokens = sums[:E], sums[E], sums[E + 1].clamp_min(1.0)
        expert_load = counts / counts.sum().clamp_min(1.0)               # f_i
        mean_prob = prob_sum / n_tokens                                  # P_i
        log_e = math.log(E) if E > 1 else 1.0
        # Switch/GShard balance: E * sum_i f_i P_i, = 1 when uniform
        load_balance = E * (expert_load * mean_prob).sum()
        # entropies normalised by log E, so they lie in [0, 1] whatever chi and rho are
        local_entropy = entropy_sum / n_tokens / log_e
        global_entropy = -(mean_prob * mean_prob.clamp_min(1e-9).log()).sum() / log_e
        return ({"load_balance": load_balance, "local_entropy": local_entropy,
                 "global_entropy": global_entropy}, expert_load.detach())

    def _dispatch(self, tokens: Tensor, pair_gate: Tensor, pair_expert: Tensor, pair_token: Tensor) -> Tensor:
        """Sum over pairs of gate * expert(token), grouped by expert. Returns (N, D)."""
        E = self.cfg.num_experts
        method = resolve_dispatch(self.cfg.dispatch, tokens.device)
        if method == "grouped_mm" and not _grouped_mm_available():
            method = "loop"
        order = pair_expert.argsort(stable=True)
        sorted_expert = pair_expert[order]
        sorted_token = pair_token[order]
        counts = torch.bincount(sorted_expert, minlength=E)              # (E,)
        if method == "fused":
            with torch.autocast(tokens.device.type, enabled=False):  # it runs in the tokens' dtype
                return _FusedExperts.apply(tokens, pair_gate[order], sorted_token, sorted_expert,
                                           counts.tolist(), self.w1, self.b1, self.w2, self.b2)
        xs = tokens.index_select(0, sorted_token)                        # (P, D)
        if method == "grouped_mm" and xs.shape[0] > 0:
            offs = counts.cumsum(0).to(torch.int32)
            w1, w2 = self.w1, self.w2
            if xs.dtype != w1.dtype:  # autocast does not cover _grouped_mm
                w1, w2 = w1.to(xs.dtype), w2.to(xs.dtype)
            h = torch._grouped_mm(xs, w1, offs=offs)                       # (P, H)
            h = _ContiguousGrad.apply(h)
            h = F.gelu(h + self.b1.to(h.dtype).index_select(0, sorted_expert))
            y = torch._grouped_mm(h, w2, offs=offs)                        # (P, D)
            y = _ContiguousGrad.apply(y)
            y = y + self.b2.to(y.dtype).index_select(0, sorted_expert)
        else:
            y = self._loop_experts(xs, counts, sorted_expert)
        y = y * pair_gate[order].unsqueeze(1).to(y.dtype)
        return tokens.new_zeros(tokens.shape, dtype=y.dtype).index_add(0, sorted_token, y).to(tokens.dtype)

    def _dispatch_row_stable(self, tokens: Tensor, pair_gate: Tensor, pair_expert: Tensor, pair_token: Tensor,
                             pair_slot: Tensor) -> Tensor:
        """`_dispatch` computed so that a token's output depends on that token alone, bit for bit:
        every product is a fixed-shape block (row_stable_matmul), element-wise ops run on padded
        blocks, and a token's k expert outputs are summed in its top-k order from an (N, k, D)
        buffer instead of scattered (index_add_ on CUDA adds in no fixed order). Returns (N, D)."""
        N, D = tokens.shape
        k = self.cfg.k
        E = self.cfg.num_experts
        order = pair_expert.argsort(stable=True)
        counts = torch.bincount(pair_expert, minlength=E).tolist()
        buf = tokens.new_zeros(N * k, D)
        start = 0
        for e, n in enumerate(counts):
            if n:
                sl = order[start:start + n]
                xe = tokens.index_select(0, pair_token[sl])                         # (n, D)
                rows = n + (-n) % ROW_BLOCK
                g = _pad_rows(pair_gate[sl].to(tokens.dtype).unsqueeze(1), rows)   # (rows, 1)
                h = F.gelu(row_stable_matmul(xe, self.w1[e]) + self.b1[e].to(tokens.dtype))   # (rows, H)
                y = row_stable_matmul(h * g, self.w2[e]) + g * self.b2[e].to(tokens.dtype)     # (rows, D)
                buf[pair_slot[sl]] = y[:n]
            start += n
        return buf.view(N, k, D).sum(1)

    def _loop_experts(self, xs: Tensor, counts: Tensor, sorted_expert: Tensor) -> Tensor:
        """Reference dispatch: one Python iteration per expert (not per token)."""
        outs = []
        start = 0
        for e, n in enumerate(counts.tolist()):
            if n:
                seg = xs[start:start + n]
                h = F.gelu(seg @ self.w1[e].to(seg.dtype) + self.b1[e].to(seg.dtype))
                outs.append(h @ self.w2[e].to(seg.dtype) + self.b2[e].to(seg.dtype))
            start += n
        if not outs:
            return xs.new_zeros(0, self.cfg.d_model)
        return torch.cat(outs, 0)


class DenseFFN(nn.Module):
    """Dense FFN D -> d_ff -> D (GELU): the equal-active-parameter reference for MoEFFN."""

    def __init__(self, d_model: int, d_ff: int):
        super().__init__()
        self.fc1 = nn.Linear(d_model, d_ff)
        self.fc2 = nn.Linear(d_ff, d_model)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.fc1(x)))
