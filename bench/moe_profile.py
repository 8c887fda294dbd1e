"""Where an MoE layer's time goes on the CPU, against the dense FFN (issue 12 point 3).

    python -m bench.moe_profile [--tokens 16000] [--chi 8] [--rounds 9]

Forward + backward of one layer (section 1's setup: d_model 128, d_ff 512, rho 4, top_k = chi),
three ways in interleaved rounds: the dense FFN, the `fused` dispatch (what `auto` picks on the
CPU), and `slot-combine`, an alternative measured here and not adopted: it gathers all of a
layer's pairs at once into a saved (pairs, d_model) buffer and combines each token's k expert
outputs with one gather + sum instead of an index_add_ per expert (no scatter). Prints the
median time ratio to dense, then torch.profiler's self CPU time per operator per step for dense
and fused, so one can see how much is matmul and how much is moving rows (gather, scatter).
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch.profiler import ProfilerActivity, profile

from s3core.config import MoEConfig
from s3core.moe import DenseFFN, MoEFFN

from .moe_bench import _fwd_bwd, _inputs


class _SlotCombine(torch.autograd.Function):
    """fused's maths with one (P, D) gather of the tokens (saved for backward) and a slot combine."""

    @staticmethod
    def forward(ctx, tokens, gate, token_idx, expert_idx, counts, w1, b1, w2, b2, inv, k):
        N, D = tokens.shape
        E, _, H = w1.shape
        P = gate.shape[0]
        gmat = tokens.new_zeros(N * E).index_put_((token_idx * E + expert_idx,), gate, accumulate=True).view(N, E)
        xs = tokens.index_select(0, token_idx)
        pre, act = tokens.new_empty(P, H), tokens.new_empty(P, H)
        ys = tokens.new_empty(P + 1, D)
        ys[P].zero_()
        start = 0
        for e, n in enumerate(counts):
            if n:
                sl = slice(start, start + n)
                h = torch._C._nn.gelu(torch.addmm(b1[e], xs[sl], w1[e], out=pre[sl]), out=act[sl])
                torch.mm(h * gate[sl].unsqueeze(1), w2[e], out=ys[sl])
            start += n
        out = ys.index_select(0, inv).view(N, k, D).sum(1).addmm_(gmat, b2)
        ctx.counts, ctx.k = counts, k
        ctx.save_for_backward(xs, gate, token_idx, expert_idx, gmat, pre, act, w1, w2, b2, inv)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        xs, g, token_idx, expert_idx, gmat, pre, act, w1, w2, b2, inv = ctx.saved_tensors
        go = grad_out.contiguous()
        N, D = go.shape
        E, _, H = w1.shape
        P = g.shape[0]
        dw1, dw2, db1 = torch.zeros_like(w1), torch.zeros_like(w2), xs.new_zeros(E, H)
        db2 = torch.mm(gmat.t(), go)
        dg = torch.mm(go, b2.t()).view(-1).index_select(0, token_idx * E + expert_idx)
        gys = go.index_select(0, token_idx)
        dxs = xs.new_empty(P + 1, D)
        dxs[P].zero_()
        start = 0
        for e, n in enumerate(ctx.counts):
            if n:
                sl = slice(start, start + n)
                ge, h, gy = g[sl].unsqueeze(1), act[sl], gys[sl]
                torch.mm((h * ge).t(), gy, out=dw2[e])
                dhg = torch.mm(gy, w2[e].t())
                dg[sl] += (dhg * h).sum(1)
                da = torch.ops.aten.gelu_backward(dhg.mul_(ge), pre[sl])
                db1[e] = da.sum(0)
                torch.mm(xs[sl].t(), da, out=dw1[e])
                torch.mm(da, w1[e].t(), out=dxs[sl])
            start += n
        dx = dxs.index_select(0, inv).view(N, ctx.k, D).sum(1)
        return dx, dg, None, None, None, dw1, db1, dw2, db2, None, None


class SlotCombineMoE(MoEFFN):
    """MoEFFN with the slot-combine dispatch (no pruning, no token mask: the benchmark's case)."""

    def _dispatch(self, tokens, pair_gate, pair_expert, pair_token):
        E, k, N = self.cfg.num_experts, self.cfg.k, tokens.shape[0]
        order = pair_expert.argsort(stable=True)
        P = order.shape[0]
        inv = torch.full((N * k,), P, dtype=torch.long)
        inv[order] = torch.arange(P)          # unpruned: pair i is slot i (token * k + j)
        counts = torch.bincount(pair_expert[order], minlength=E).tolist()
        return _SlotCombine.apply(tokens, pair_gate[order], pair_token[order], pair_expert[order], counts,
                                  self.w1, self.b1, self.w2, self.b2, inv, k)


def _ops_per_step(run, steps: int = 3) -> dict[str, float]:
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            run()
    return {e.key: e.self_cpu_time_total / 1e3 / steps for e in prof.key_averages()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tokens", type=int, default=16000)
    ap.add_argument("--chi", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=9)
    args = ap.parse_args(argv)
    D, F, seq = 128, 512, 50
    x = _inputs(D, args.tokens, seq)

    def moe(cls):
        torch.manual_seed(1)
        return cls(MoEConfig(d_model=D, d_ff=F, chi=args.chi, rho=4, top_k=args.chi, dispatch="fused"))
    torch.manual_seed(1)
    runs = {"dense": _fwd_bwd(DenseFFN(D, F), x), "fused": _fwd_bwd(moe(MoEFFN), x),
            "slot-combine": _fwd_bwd(moe(SlotCombineMoE), x)}
    for run in runs.values():
        run()
    times = {k: [] for k in runs}
    for _ in range(args.rounds):
        for name, run in runs.items():
            t0 = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - t0)
    print(f"chi {args.chi}, {args.tokens} tokens, d_model {D}, d_ff {F}, {args.rounds} interleaved rounds, "
          f"torch threads {torch.get_num_threads()}")
    print(f"dense: {statistics.median(times['dense']) * 1e3:.1f} ms (median)")
    for name in ("fused", "slot-combine"):
        ratio = statistics.median(a / b for a, b in zip(times[name], times["dense"]))
        print(f"{name}: {ratio:.2f}x dense (median of per-round ratios), {statistics.median(times[name]) * 1e3:.1f} ms")
    ops = {name: _ops_per_step(runs[name]) for name in ("dense", "fused")}
    keys = sorted(set(ops["dense"]) | set(ops["fused"]), key=lambda k: -max(ops["dense"].get(k, 0), ops["fused"].get(k, 0)))
    print("\nself CPU ms per forward + backward step (torch.profiler, 3 steps)")
    print(f"{'operator':28s} {'dense':>8s} {'fused':>8s}")
    for k in keys[:14]:
        print(f"{k[:28]:28s} {ops['dense'].get(k, 0):8.1f} {ops['fused'].get(k, 0):8.1f}")
    print(f"{'total':28s} {sum(ops['dense'].values()):8.1f} {sum(ops['fused'].values()):8.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
