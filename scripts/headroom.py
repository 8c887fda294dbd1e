"""The input-masking headroom of a synthetic variant (issue 20): the raw-feature probe's and a
trained encoder's test accuracy with the irrelevant steps removed from the input, minus on the
whole input (s3core.diagnostics).

    python scripts/headroom.py --variant entangled --seeds 0 1 2 [--method clip --epochs 3]
"""
from __future__ import annotations

import argparse
import json
import time

from s3core.config import S3Config
from s3core.data.synthetic import SyntheticConfig, make_synthetic
from s3core.diagnostics import raw_probe_headroom


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variant", default="entangled")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--method", default=None, help="also train this method (e.g. clip) and measure its headroom")
    ap.add_argument("--epochs", type=int, default=3, help="the method's training epochs (epochs_special)")
    ap.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE", help="synthetic config fields")
    args = ap.parse_args(argv)
    extra = {k: json.loads(v) for k, v in (kv.split("=", 1) for kv in args.set)}
    for seed in args.seeds:
        t0 = time.perf_counter()
        bench = make_synthetic(SyntheticConfig(variant=args.variant, seed=seed, **extra))
        raw = raw_probe_headroom(bench)
        line = (f"{args.variant} seed {seed}: raw probe {100 * raw['test_acc']:.1f} whole, "
                f"{100 * raw['masked_test_acc']:.1f} relevant steps only, headroom {100 * raw['headroom']:+.1f}")
        if args.method:
            from s3core.pipeline import run_trial

            cfg = S3Config(seed=seed, epochs_special=args.epochs, epochs_select=0, keep_ratios=(1.0,),
                           epoch_probe=False)
            s = run_trial(bench, cfg, args.method, progress=False).summary
            line += (f"; {args.method} {100 * s['test_acc_no_prune']:.1f} whole, "
                     f"{100 * s['diag/masked_test_acc']:.1f} relevant only, headroom {100 * s['diag/headroom']:+.1f}")
        print(line + f"  ({time.perf_counter() - t0:.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
