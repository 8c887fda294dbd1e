"""python -m s3core: S3's three stages on one benchmark, then the accuracy-vs-p table.

No Ray, no MLflow: one process, one config. `python -m s3core --help` lists every flag.
"""
from __future__ import annotations

import argparse
import ast
import json
import os
import sys
import time

from s3core.config import ConfigError, S3Config, check_device
from s3core.data import DataError, dataset_names, load_for_grid
from s3core.methods import METHOD_NAMES as METHODS
from s3core.pipeline import run_trial


def _literal(raw: str):
    try:
        return ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        return raw


def build_parser() -> argparse.ArgumentParser:
    d = S3Config()
    p = argparse.ArgumentParser(prog="python -m s3core", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                                description="Run S3 (Specialization -> Selection -> Sparsification) on one "
                                            "benchmark and print linear-probe accuracy against the keep-ratio p.")
    p.add_argument("--benchmark", default="synthetic", choices=dataset_names())
    p.add_argument("--data-dir", default=None, help="MultiBench .pkl folder, or the .npz / Arrow folder for 'arrays'")
    p.add_argument("--modalities", nargs="+", default=None,
                   help="subset of modalities (default: all; MultiBench: vision text, 'all' adds audio)")
    p.add_argument("--label-rule", default=None,
                   help="MultiBench label rule: nonnegative (y>=0, default for MOSI/MOSEI), positive (y>0), binary")
    p.add_argument("--source-file", default=None,
                   help="MultiBench: which file to read, e.g. mosi_data.pkl (default: the benchmark's first file)")
    p.add_argument("--alignment", default=None,
                   help="MultiBench: text_start (default, MultiBench's aligned mode) or nonzero (per-modality mask)")
    p.add_argument("--synthetic-label", default="unique", choices=["shared", "unique", "mixed"],
                   help="synthetic benchmark: which latent factors the label depends on")
    p.add_argument("--method", default="s3", choices=METHODS,
                   help="any registered method (s3core.methods): s3; s3_no_select (no Stage 2); clip (dense, "
                        "cross-modal InfoNCE); supervised; disentangled_ssl, joint_opt, focal, factorcl "
                        "(InfoMax baselines)")
    p.add_argument("--chi", type=int, default=d.chi, help="MoE granularity (power of two)")
    p.add_argument("--rho", type=int, default=d.rho, help="MoE expansion ratio: N_expert = chi * rho")
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--epochs-special", type=int, default=d.epochs_special, help="Stage 1 epochs")
    p.add_argument("--epochs-select", type=int, default=d.epochs_select, help="Stage 2 epochs")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--device", default=d.device, help="cpu, cuda, cuda:N or mps (checked usable before the run)")
    p.add_argument("--keep-ratios", nargs="+", type=float, default=list(d.keep_ratios),
                   help="Stage 3 sweep of p")
    p.add_argument("--set", nargs="+", default=[], metavar="FIELD=VALUE",
                   help="any other S3Config field, e.g. --set tau=0.07 lambda_min=0.2 d_model=128")
    p.add_argument("--json", default=None, metavar="PATH", help="also write the result (history + curve) as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        overrides = {}
        for item in args.set:
            if "=" not in item:
                raise ConfigError(f"--set expects FIELD=VALUE, got {item!r}")
            key, raw = item.split("=", 1)
            overrides[key] = _literal(raw)
        flags = dict(chi=args.chi, rho=args.rho, batch_size=args.batch_size, seed=args.seed,
                     epochs_special=args.epochs_special, epochs_select=args.epochs_select, device=args.device,
                     keep_ratios=args.keep_ratios)
        given = sys.argv[1:] if argv is None else argv
        for key in sorted(set(flags) & set(overrides)):
            flag = f"--{key.replace('_', '-')}"
            if any(a == flag or a.startswith(flag + "=") for a in given):   # the flag given too
                raise ConfigError(f"{key} is set twice (--set {key}=... and {flag}); pass one")
        cfg = S3Config().replace(**{**flags, **overrides}).validate()
        check_device(cfg.device, probe=True)  # a GPU that is listed but broken fails here, in one line
        t0 = time.perf_counter()
        # the synthetic block goes to the synthetic benchmark alone (s3core.data.load_for_grid)
        bench = load_for_grid(args.benchmark, data_dir=args.data_dir, modalities=args.modalities, options=dict(
            synthetic=dict(label=args.synthetic_label, seed=args.seed), label_rule=args.label_rule,
            source_file=args.source_file, alignment=args.alignment))
        print(f"{bench.describe()} (loaded in {time.perf_counter() - t0:.1f}s)", flush=True)
        result = run_trial(bench, cfg, args.method, progress=not args.quiet)
    except (ConfigError, DataError) as err:
        print(f"error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    for h in result.history:
        extra = f" valid_acc {h['valid_acc']:.3f}" if "valid_acc" in h else ""
        print(f"  {h['stage']:<10} epoch {h['epoch']:>2}  loss {h['loss']:.4f}{extra}  ({h['time_s']:.1f}s)")
    best = result.summary
    print(f"\n{args.method} on {bench.name} (chi={result.config['chi']}, rho={result.config['rho']}, "
          f"batch {cfg.batch_size}, seed {cfg.seed})")
    print(f"{'p':>5} {'valid acc':>10} {'test acc':>9} {'test F1':>8} {'kept':>6}")
    for r in result.curve:
        mark = "  <- chosen on valid" if r["keep_ratio"] == best["best_keep_ratio"] else ""
        print(f"{r['keep_ratio']:>5.1f} {100 * r['valid_acc']:>9.2f}% {100 * r['test_acc']:>8.2f}% "
              f"{100 * r['test_f1']:>7.2f}% {r['kept_fraction']:>6.2f}{mark}")
    print(f"took {result.seconds:.1f}s")
    if args.json:
        with open(args.json + ".tmp", "w") as f:
            json.dump(result.as_dict(), f, indent=1)
        os.replace(args.json + ".tmp", args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
