"""Sections 1 (MoE FFN vs dense FFN, forward + backward) and 2 (inference time vs keep-ratio)."""
from __future__ import annotations

import statistics

import torch

from s3core.config import MoEConfig, S3Config
from s3core.encoder import ModalityEncoder
from s3core.moe import DenseFFN, MoEFFN, num_kept, resolve_dispatch, top_pairs

from .common import interleaved, ratio_stats, run_child

# Dispatches timed in section 1. "grouped_mm" was the CPU default ("auto") before the fused path
# was added, so its column is the "before" figure and "fused" (what "auto" now picks on the CPU)
# is the "after" figure, both from the same run.
DISPATCHES = ("fused", "grouped_mm", "loop")


def _inputs(d_model: int, tokens: int, seq: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(tokens // seq, seq, d_model, generator=g)


def _fwd_bwd(module, x):
    def step():
        xi = x.detach().requires_grad_(True)
        out = module(xi)
        out = out.output if hasattr(out, "output") else out
        out.sum().backward()
        module.zero_grad(set_to_none=True)
    return step


def _make(kind: str, d_model: int, d_ff: int, chi: int, rho: int, seed: int = 0):
    torch.manual_seed(seed)
    if kind == "dense":
        return DenseFFN(d_model, d_ff)
    return MoEFFN(MoEConfig(d_model=d_model, d_ff=d_ff, chi=chi, rho=rho, top_k=chi, dispatch=kind))


def bench_moe_vs_dense(sizes: list[dict], chis=(2, 4, 8), rho: int = 4, rounds: int = 5,
                       loop_rounds: int | None = None, memory: str = "all") -> list[dict]:
    """Forward + backward time of MoEFFN (each dispatch) over DenseFFN with equal active params.

    sizes: [{"name", "d_model", "d_ff", "tokens", "seq"}]. For each size and chi, the dense FFN
    and every dispatch are timed in interleaved rounds; the ratio is the median over rounds of
    MoE time / dense time in the same round. memory: "all", "last" (the last chi only), "one"
    (the last chi, dense + fused only: for the smoke test) or "none".
    """
    rows = []
    for size in sizes:
        x = _inputs(size["d_model"], size["tokens"], size["seq"])
        for chi in chis:
            cands = {"dense": _fwd_bwd(_make("dense", size["d_model"], size["d_ff"], chi, rho), x)}
            for d in DISPATCHES:
                cands[d] = _fwd_bwd(_make(d, size["d_model"], size["d_ff"], chi, rho), x)
            loop = cands.pop("loop")
            times = interleaved(cands, rounds)
            # the loop reference is slow at fine granularity: fewer rounds, each next to a dense run
            lr = loop_rounds or rounds
            ltimes = interleaved({"dense": cands["dense"], "loop": loop}, lr)
            stats = ratio_stats(times, "dense")
            stats["loop"] = ratio_stats(ltimes, "dense")["loop"]
            row = {"size": size["name"], "d_model": size["d_model"], "d_ff": size["d_ff"],
                   "tokens": x.shape[0] * x.shape[1], "chi": chi, "rho": rho, "top_k": chi,
                   "experts": chi * rho, "expert_hidden": size["d_ff"] // chi, "stats": stats,
                   "auto": resolve_dispatch("auto", torch.device("cpu")), "memory": {}}
            want_mem = memory == "all" or (memory in ("one", "last") and chi == chis[-1])
            if want_mem:
                kinds = ["dense", "fused"] if memory == "one" else ["dense", *DISPATCHES]
                for kind in kinds:
                    row["memory"][kind] = run_child("bench.memprobe", {
                        "case": "ffn", "kind": kind, "d_model": size["d_model"], "d_ff": size["d_ff"],
                        "chi": chi, "rho": rho, "tokens": size["tokens"], "seq": size["seq"],
                        "threads": torch.get_num_threads()})
            rows.append(row)
    return rows


def bench_pruning(keep_ratios, d_model: int, d_ff: int, chi: int, rho: int, tokens: int, seq: int,
                  input_dim: int, n_layers: int, rounds: int = 5, dispatches=("fused", "grouped_mm")) -> dict:
    """Inference (no_grad) time vs keep-ratio p for one MoE layer (per dispatch) and for a whole
    ModalityEncoder; ratios to p = 1.0 within each round."""
    x = _inputs(d_model, tokens, seq)
    out = {"keep_ratios": list(keep_ratios), "layer": {}, "encoder": None,
           "setup": {"d_model": d_model, "d_ff": d_ff, "chi": chi, "rho": rho, "tokens": x.shape[0] * x.shape[1],
                     "seq": seq, "input_dim": input_dim, "n_layers": n_layers}}
    for d in dispatches:
        layer = _make(d, d_model, d_ff, chi, rho).eval()
        cands = {}
        for p in keep_ratios:
            cands[p] = (lambda p=p, layer=layer: layer(x, keep_ratio=p))
        with torch.inference_mode():
            times = interleaved(cands, rounds)
        out["layer"][d] = ratio_stats(times, keep_ratios[0])
    torch.manual_seed(0)
    cfg = S3Config(d_model=d_model, d_ff=d_ff, chi=chi, rho=rho, n_layers=n_layers, n_heads=4).validate()
    enc = ModalityEncoder(input_dim, seq, cfg).eval()
    g = torch.Generator().manual_seed(1)
    xe = torch.randn(x.shape[0], seq, input_dim, generator=g)
    mask = torch.ones(x.shape[0], seq, dtype=torch.bool)
    # MultiBench-style left padding: a quarter of the samples have 10 padded steps
    mask[: x.shape[0] // 4, : min(10, seq - 1)] = False
    cands = {p: (lambda p=p: enc(xe, mask, keep_ratio=p)) for p in keep_ratios}
    with torch.inference_mode():
        times = interleaved(cands, rounds)
    out["encoder"] = ratio_stats(times, keep_ratios[0])
    out["encoder_dispatch"] = resolve_dispatch(cfg.dispatch, torch.device("cpu"))
    out["selection"] = _bench_pair_selection(keep_ratios, x.shape[0] * x.shape[1] * chi, rounds)
    return out


def _bench_pair_selection(keep_ratios, num_pairs: int, rounds: int) -> dict:
    """Choosing the kept pairs alone: topk(n_keep) (before) vs s3core.moe.top_pairs (after), in ms."""
    scores = torch.rand(num_pairs, generator=torch.Generator().manual_seed(0))
    cands = {}
    for p in keep_ratios[1:]:
        n = num_kept(num_pairs, p)
        cands[(p, "topk")] = (lambda n=n: scores.topk(n).indices)
        cands[(p, "top_pairs")] = (lambda n=n: top_pairs(scores, n))
    times = interleaved(cands, rounds)
    return {"num_pairs": num_pairs,
            "ms": {p: {k: 1e3 * statistics.median(times[(p, k)]) for k in ("topk", "top_pairs")}
                   for p in keep_ratios[1:]}}
