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
figure.
4. packing: the same 8 trials (S3 chi 8 and CLIP, seeds 0-3, the paper preset's model, 1 + 1
   epochs, batch 256) on a fake MOSEI-shaped file (`s3core.data.fake_multibench`, a quarter of
   MOSEI's size) through `run_grid.py` at `--gpus-per-trial` 1, 0.5, 0.25 and 0.125 (1, 2, 4, 8
   trials on the GPU at once): trials per hour (8 / (wall - the fixed part a `--resume` takes)) and
   the GPU's mean utilisation (`nvidia-smi`, sampled every second), and from the best packing the
   paper preset's time on one GPU, labelled as extrapolated. Most packed first; a packing left
   when 390 s have passed is reported as not measured, so the call stays under 10 minutes.
   CUDA only (tested on the CPU with `measure_packing(fractions=(0.0,), scale=0.02,
   device="cpu")`: 8 trials, 394 s on this 2-core machine under load).
"""
from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import torch
from torch.profiler import ProfilerActivity, profile

from orchestrator.plan import Overrides, make_plan
from orchestrator.schedule import longest_first, marginal_passes
from s3core.config import MoEConfig
from s3core.data.fake_multibench import write_fake
from s3core.moe import DenseFFN, MoEFFN
from search_spaces import load_preset

from .common import REPO_ROOT
from .report import gpu_report, write_blocks  # noqa: F401  (gpu_report: this section's block, importable here)

DISPATCHES = ("fused", "grouped_mm", "auto")
TOL = {"fp32": dict(rtol=1e-4, atol=1e-5), "bf16": dict(rtol=3e-2, atol=3e-2)}


def _layer(dispatch: str, chi: int, d_model: int, d_ff: int, rho: int, device, seed: int = 0):
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


PACK_FRACTIONS = (1.0, 0.5, 0.25, 0.125)
PACK_SEEDS = (0, 1, 2, 3)


def pack_settings() -> dict:
    """The S3Config fields every packing trial gets: the paper preset's model, batch 256, 1 + 1 epochs."""
    model = {k: v for k, v in load_preset("paper").base.items() if k not in ("epochs_special", "epochs_select")}
    return {**model, "batch_size": 256, "eval_batch_size": 512, "epochs_special": 1, "epochs_select": 1}


def pack_args(data_dir: str, workdir: str, gpus_per_trial: float, device: str = "cuda") -> list[str]:
    """run_grid.py's arguments for the packing workload: the smoke preset's methods (S3 and CLIP) with
    pack_settings(), at chi 8, on the MOSEI-shaped file in data_dir."""
    return ["--preset", "smoke", "--benchmark", "mosei", "--data-dir", data_dir,
            "--seeds", *map(str, PACK_SEEDS), "--grid", "chi=[8]",
            "--set", *(f"{k}={v}" for k, v in pack_settings().items()),
            "--gpus-per-trial", str(gpus_per_trial), "--device", device, "--no-stage-cache", "--verbose", "0",
            "--storage-path", f"{workdir}/runs", "--tracking-uri", f"sqlite:///{workdir}/mlflow.db",
            "--report-dir", f"{workdir}/report"]


class _UtilisationSampler:
    """Mean GPU utilisation (%) from `nvidia-smi` every `every_s` seconds while in the block."""

    def __init__(self, every_s: float = 1.0):
        self.every_s, self.samples, self._stop = every_s, [], threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.wait(self.every_s):
            try:
                out = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"],
                                     capture_output=True, text=True, timeout=5).stdout.split()
                self.samples.append(float(out[0]))
            except (OSError, ValueError, IndexError, subprocess.SubprocessError):
                continue

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    @property
    def mean(self) -> float | None:
        return statistics.mean(self.samples) if self.samples else None


def measure_packing(fractions=PACK_FRACTIONS, scale: float = 0.25, device: str = "cuda", budget_s: float = 390.0,
                    log=print) -> dict:
    """Trials per hour and GPU utilisation of the packing workload at each --gpus-per-trial, most
    packed first; a fraction is skipped once `budget_s` has passed (the device call's 10 minutes)."""


    root = tempfile.mkdtemp(prefix="s3bench-pack-")
    rows = []
    try:
        data_dir = os.path.join(root, "data")
        write_fake("mosei", data_dir, scale=scale)
        env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI")}
        t_start = time.perf_counter()
        for g in sorted(fractions):
            left = budget_s - (time.perf_counter() - t_start)
            if left <= 0:
                rows.append({"gpus_per_trial": g, "skipped": f"the {budget_s:.0f} s budget was spent"})
                log(f"[gpu] packing {g}: skipped, budget spent")
                continue
            work = os.path.join(root, f"pack{g}")
            os.makedirs(work)
            cmd = [sys.executable, os.path.join(REPO_ROOT, "run_grid.py"), *pack_args(data_dir, work, g, device)]
            walls = []
            for extra in ([], ["--resume"]):
                with _UtilisationSampler() as util:
                    t0 = time.perf_counter()
                    try:
                        proc = subprocess.run(cmd + extra, cwd=work, capture_output=True, text=True, env=env,
                                              timeout=max(60.0, left + 60.0))
                    except subprocess.TimeoutExpired:
                        proc = None
                if proc is None:
                    break
                walls.append(time.perf_counter() - t0)
                if proc.returncode != 0:
                    raise RuntimeError(f"packing at --gpus-per-trial {g} failed: {proc.stderr.strip()[-1500:]}")
                if not extra:
                    utilisation = util.mean
            if len(walls) < 2:       # a run timed out
                rows.append({"gpus_per_trial": g, "skipped": "timed out"})
                log(f"[gpu] packing {g}: timed out")
                continue
            trials = 2 * len(PACK_SEEDS)
            net = walls[0] - walls[1]
            rows.append({"gpus_per_trial": g, "trials": trials, "wall_s": walls[0], "fixed_s": walls[1],
                         "trials_per_hour": trials * 3600 / net, "gpu_util": utilisation})
            log(f"[gpu] packing {g}: {rows[-1]['trials_per_hour']:.0f} trials/h, wall {walls[0]:.0f} s "
                f"(fixed {walls[1]:.0f} s), GPU util {utilisation if utilisation is not None else 'n/a'}")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return {"scale": scale, "rows": rows}


def paper_preset_hours(rows: list[dict], scale: float) -> dict:
    """The paper preset's time for one benchmark on one GPU, EXTRAPOLATED from the best packing:
    its trials' passes over the training split (orchestrator.schedule: epochs x 3 per training
    stage, one per keep-ratio; a stage the stage cache hands over counts 0) against the packing
    trials' passes per hour, scaled from the packing data (`scale` of MOSEI) to MOSEI's size.
    Crude by construction: batch size (64-512 in the paper grid) and start-up are left out."""
    paper = sum(marginal_passes(longest_first(make_plan(load_preset("paper")).trials())))
    pack_trials = make_plan(load_preset("smoke"), Overrides(benchmarks=("mosei",), seeds=PACK_SEEDS,
                                                            grid={"chi": [8]}, set=pack_settings())).trials()
    pack = sum(marginal_passes(pack_trials))
    best = max((r for r in rows if "trials_per_hour" in r), key=lambda r: r["trials_per_hour"])
    passes_per_hour = best["trials_per_hour"] / len(pack_trials) * pack * scale
    return {"gpus_per_trial": best["gpus_per_trial"], "hours": paper / passes_per_hour, "paper_passes": paper,
            "pack_passes": pack}


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
    if device == "cuda":
        res["packing"] = measure_packing(log=log)
        if any("trials_per_hour" in r for r in res["packing"]["rows"]):
            res["packing"]["paper"] = paper_preset_hours(res["packing"]["rows"], res["packing"]["scale"])
    res["seconds"] = time.perf_counter() - t0
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.gpu", description=__doc__)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default="bench/RESULTS.md")
    args = ap.parse_args(argv)

    res = run_gpu_bench(args.quick)
    write_blocks({"gpu": res, "command": "python -m bench --gpu", "profile": "gpu",
                  "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}, args.out)
    print(f"[gpu] wrote {args.out}")
    return 0 if all(r["ok"] for r in res["correctness"]) else 1


if __name__ == "__main__":
    raise SystemExit(main())
