"""Section 5: the linear probe's backend: torch full-batch L-BFGS vs scikit-learn's lbfgs.

Both solve the same objective (mean cross-entropy + l2/2 ||W||^2 on train-standardised features,
the L2 grid chosen on validation), so the faster one is the default (`S3Config.probe_backend`).
"""
from __future__ import annotations

import torch

from s3core.probe import linear_probe

from .common import interleaved, ratio_stats


def _data(n: int, d: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    x = torch.randn(n, d, generator=g)
    x[:, :4] += 0.5 * y[:, None]
    return x, y


def bench_probe(sizes=((2000, 128), (16000, 256)), rounds: int = 3) -> dict:

    rows = []
    for n, d in sizes:
        splits = _data(n, d, 0), _data(n // 4, d, 1), _data(n // 4, d, 2)
        results = {}

        def run(backend):
            def fn():
                results[backend] = linear_probe(*splits, 2, backend=backend)
            return fn

        times = interleaved({"torch": run("torch"), "sklearn": run("sklearn")}, rounds=rounds)
        st = ratio_stats(times, ref="sklearn")
        rows.append({"n": n, "d": d, "torch_s": st["torch"]["median_s"], "sklearn_s": st["sklearn"]["median_s"],
                     "ratio": st["torch"], "same_valid_acc": abs(results["torch"].valid_acc
                                                                - results["sklearn"].valid_acc) <= 2 / (n // 4)})
    return {"rows": rows, "rounds": rounds}


def probe_report(res: dict) -> list[str]:
    L = ["Median seconds per probe (4 L2 values, chosen on validation), and torch / sklearn time in the same round "
         "(median, min-max over rounds). `same valid acc`: the two agree within 2 validation samples.", "",
         "| train n x dim | torch L-BFGS | sklearn lbfgs | torch / sklearn | same valid acc |", "|---|---|---|---|---|"]
    for r in res["rows"]:
        st = r["ratio"]
        L.append(f"| {r['n']} x {r['d']} | {r['torch_s']:.3f} s | {r['sklearn_s']:.3f} s | {st['ratio']:.2f}x "
                 f"({st['ratio_min']:.2f}-{st['ratio_max']:.2f}) | {'yes' if r['same_valid_acc'] else 'no'} |")
    L += ["", "`S3Config.probe_backend = \"auto\"` uses scikit-learn when it is installed (it is a dependency).", ""]
    return L
