"""The GPU work of issue 12.4 in one call: `python -m bench --gpu` (or `python -m bench.gpu`).

Parts (each writes a table into the `gpu` block of bench/RESULTS.md):
1. correctness: every dispatch against the per-expert loop reference, forward and gradients,
   fp32 and bf16 (autocast), with a padding mask, at p = 1, 0.5 and 0.3;
2. MoE / dense forward+backward at chi 2, 4, 8 (16k tokens, d_model 128, d_ff 512), eager and
   with torch.compile, and inference at p = 0.3 against p = 1 (median of interleaved rounds);
3. host syncs per MoE layer forward, counted with torch.profiler (cudaStreamSynchronize /
   cudaMemcpy device->host events).
Without CUDA, part 1 runs on the CPU in fp32 (so the script itself is tested) and parts 2-3 say
"skipped: no CUDA"; the result is labelled with the device it ran on, never passed off as a GPU
figure. Trials per hour with 1/2/4/8 trials packed on one GPU is not automated here: the
commands are printed (`packing_commands`) for the same session.
"""
from __future__ import annotations

import argparse
import contextlib
import statistics
import time

import torch

DISPATCHES = ("fused", "grouped_mm", "auto")
TOL = {"fp32": dict(rtol=1e-4, atol=1e-5), "bf16": dict(rtol=3e-2, atol=3e-2)}


def _layer(dispatch: str, chi: int, d_model: int, d_ff: int, rho: int, device, seed: int = 0):
    from s3core.config import MoEConfig
    from s3core.moe import MoEFFN
    torch.manual_seed(seed)
    layer = MoEFFN(MoEConfig(d_model=d_model, d_ff=d_ff, chi=chi, rho=rho, dispatch=dispatch)).to(device)
    torch.nn.init.normal_(layer.router.weight, std=1.0)   # real preferences: no ties decide top-k
    return layer


def check_correctness(device: str, dtypes=("fp32", "bf16"), chis=(2, 8), keep_ratios=(1.0, 0.5, 0.3),
                      B: int = 8, T: int = 12, d_model: int = 32, d_ff: int = 64) -> list[dict]:
    """Each dispatch vs the loop reference on `device`: max abs difference of the output and of every
    gradient, and whether they are within TOL. bf16 runs under autocast (CUDA only)."""
    rows = []
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(B, T, d_model, generator=g)
    weight = torch.randn(B, T, d_model, generator=g)
    mask = torch.ones(B, T, dtype=torch.bool)
    mask[: B // 4, : T // 3] = False                     # left padding on a quarter of the rows
    for dtype in dtypes:
        if dtype == "bf16" and not device.startswith("cuda"):
            continue
        for chi in chis:
            for p in keep_ratios:
                ref = None
                for dispatch in ("loop", *DISPATCHES):
                    layer = _layer(dispatch, chi, d_model, d_ff, 4, device)
                    x = x0.to(device).requires_grad_(True)
                    ctx = torch.autocast("cuda", dtype=torch.bfloat16) if dtype == "bf16" else contextlib.nullcontext()
                    with ctx:
                        out = layer(x, token_mask=mask.to(device), keep_ratio=p).output
                    (out.float() * weight.to(device)).sum().backward()
                    got = [out.detach().float()] + [t.grad.detach().float() for t in
                                                    (x, layer.w1, layer.b1, layer.w2, layer.b2, layer.router.weight)]
                    if ref is None:
                        ref = got
                        continue
                    diffs = [float((a - b).abs().max()) for a, b in zip(got, ref)]
                    ok = all(torch.allclose(a, b, **TOL[dtype]) for a, b in zip(got, ref))
                    rows.append({"device": device, "dtype": dtype, "chi": chi, "keep_ratio": p, "dispatch": dispatch,
                                 "max_abs_out": diffs[0], "max_abs_grad": max(diffs[1:]), "ok": ok})
    return rows


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _median_ratio(fns: dict, ref: str, rounds: int, device: str) -> dict:
    times = {k: [] for k in fns}
    for r in range(rounds + 1):
        for name, fn in fns.items():
            _sync(device)
            t0 = time.perf_counter()
            fn()
            _sync(device)
            if r:
                times[name].append(time.perf_counter() - t0)
    return {k: statistics.median(t / r for t, r in zip(v, times[ref])) for k, v in times.items()}


def time_moe_vs_dense(device: str, chis=(2, 4, 8), tokens: int = 16000, seq: int = 50, d_model: int = 128,
                      d_ff: int = 512, rounds: int = 7, compile_: bool = True) -> list[dict]:
    """MoE (auto dispatch) / dense, forward+backward, eager and compiled; inference p=0.3 / p=1."""
    from s3core.moe import DenseFFN
    x = torch.randn(tokens // seq, seq, d_model, device=device)
    rows = []
    for chi in chis:
        torch.manual_seed(0)
        dense = DenseFFN(d_model, d_ff).to(device)
        moe = _layer("auto", chi, d_model, d_ff, 4, device)

        fns = {"dense": lambda: dense(x).sum().backward(), "moe": lambda: moe(x).output.sum().backward()}
        if compile_:
            cd, cm = torch.compile(dense), torch.compile(moe)
            fns["dense_compiled"] = lambda: cd(x).sum().backward()
            fns["moe_compiled"] = lambda: cm(x).output.sum().backward()
            for f in ("dense_compiled", "moe_compiled"):
                fns[f]()                                  # compile outside the timing
        ratios = _median_ratio(fns, "dense", rounds, device)
        with torch.inference_mode():
            prune = _median_ratio({"p1": lambda: moe(x, keep_ratio=1.0), "p03": lambda: moe(x, keep_ratio=0.3)},
                                  "p1", rounds, device)
        row = {"chi": chi, "moe/dense": ratios["moe"], "p0.3/p1": prune["p03"]}
        if compile_:
            row["compiled moe/compiled dense"] = ratios["moe_compiled"] / ratios["dense_compiled"]
        rows.append(row)
    return rows


def count_host_syncs(device: str, chi: int = 8, tokens: int = 16000, seq: int = 50) -> dict:
    """Device->host syncs in one MoE layer forward (with a padding mask, at p = 1 and p = 0.5)."""
    from torch.profiler import ProfilerActivity, profile
    x = torch.randn(tokens // seq, seq, 128, device=device)
    mask = torch.ones(tokens // seq, seq, dtype=torch.bool, device=device)
    mask[:, :5] = False
    layer = _layer("auto", chi, 128, 512, 4, device)
    out = {}
    for p in (1.0, 0.5):
        layer(x, token_mask=mask, keep_ratio=p)             # warm-up
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            layer(x, token_mask=mask, keep_ratio=p)
            torch.cuda.synchronize()
        names = [e.name for e in prof.events()]
        out[f"p={p}"] = {"cudaStreamSynchronize": sum("StreamSynchronize" in n for n in names),
                         "cudaMemcpy (any)": sum("Memcpy" in n for n in names),
                         "aten::nonzero": sum(n == "aten::nonzero" for n in names),
                         "aten::item": sum(n in ("aten::item", "aten::_local_scalar_dense") for n in names)}
    return out


def packing_commands() -> list[str]:
    return [f"python run_grid.py --preset paper --benchmark mosei --data-dir <fake mosei dir> --epochs 1 "
            f"--seeds 0 --gpus-per-trial {g} --storage-path /tmp/pack{g} --no-stage-cache" for g in (1, 0.5, 0.25, 0.125)]


def run_gpu_bench(quick: bool = False, log=print) -> dict:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    res = {"device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu (no CUDA)"}
    t0 = time.perf_counter()
    res["correctness"] = check_correctness(device)
    log(f"[gpu] correctness on {device}: {sum(r['ok'] for r in res['correctness'])}/{len(res['correctness'])} ok")
    if device == "cuda":
        res["timing"] = time_moe_vs_dense(device, rounds=3 if quick else 7)
        res["syncs"] = count_host_syncs(device)
    else:
        res["skipped"] = "no CUDA on this machine: timing, compile and host-sync parts skipped"
        log(f"[gpu] {res['skipped']}")
    res["packing"] = packing_commands()
    res["seconds"] = time.perf_counter() - t0
    return res


def gpu_report(res: dict) -> list[str]:
    L = [f"Device: {res['device']}; wall {res['seconds']:.0f} s.", "",
         "Correctness: each dispatch against the loop reference (output and every gradient), padding mask, "
         "tolerance fp32 rtol 1e-4 / atol 1e-5, bf16 3e-2.", "",
         "| device | dtype | chi | p | dispatch | max abs out | max abs grad | ok |", "|---|---|---|---|---|---|---|---|"]
    L += [f"| {r['device']} | {r['dtype']} | {r['chi']} | {r['keep_ratio']} | {r['dispatch']} | {r['max_abs_out']:.2e} | "
          f"{r['max_abs_grad']:.2e} | {'yes' if r['ok'] else 'NO'} |" for r in res["correctness"]]
    L.append("")
    if "timing" in res:
        L += ["| chi | MoE / dense (eager) | compiled MoE / compiled dense | inference p=0.3 / p=1 |", "|---|---|---|---|"]
        L += [f"| {r['chi']} | {r['moe/dense']:.2f}x | {r.get('compiled moe/compiled dense', float('nan')):.2f}x | "
              f"{r['p0.3/p1']:.2f}x |" for r in res["timing"]]
        L += ["", f"Host syncs per MoE layer forward: {res['syncs']}", ""]
    else:
        L += [f"_{res['skipped']}._", ""]
    L += ["Packing (not automated; run in the same GPU session):", ""] + [f"- `{c}`" for c in res["packing"]] + [""]
    return L


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.gpu", description=__doc__)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default="bench/RESULTS.md")
    args = ap.parse_args(argv)
    import datetime as dt

    from .report import write_blocks
    res = run_gpu_bench(args.quick)
    write_blocks({"gpu": res, "command": "python -m bench --gpu", "profile": "gpu",
                  "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}, args.out)
    print(f"[gpu] wrote {args.out}")
    return 0 if all(r["ok"] for r in res["correctness"]) else 1


if __name__ == "__main__":
    raise SystemExit(main())
