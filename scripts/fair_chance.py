"""The search and the held-out study of issue 20 ("the mechanism's fair chance"), step by step,
every trial through run_grid.py (so through Ray Tune and MLflow like a user's grid).

    python scripts/fair_chance.py search     # fair_chance's Optuna study on data seeds 0, 1, 2
    python scripts/fair_chance.py confirm    # each study's best 3 settings on the other two seeds
    python scripts/fair_chance.py choose     # the winner: best mean validation accuracy at p* over seeds 0-2
    python scripts/fair_chance.py heldout    # winner and defaults on data seeds 3-7, 'entangled' and 'localized'
    python scripts/fair_chance.py table      # the held-out tables (markdown) with paired 95% intervals

Common flags: --root DIR (MLflow store DIR/mlflow.db, checkpoints DIR/runs, reports DIR/report-*,
the winner DIR/winner.json; default ./fair_chance), --num-samples N (Optuna trials per search
study). Test accuracy is never read before `table`: the search, the confirmation and the choice
use validation accuracy at the validation-chosen p only (the trials' `best_valid_acc`).
"""
from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from pathlib import Path

import mlflow

from orchestrator import mlflow_layout as layout
from orchestrator.stats import paired_difference

REPO = Path(__file__).resolve().parents[1]
SEARCH_SEEDS = (0, 1, 2)
HELDOUT_SEEDS = (3, 4, 5, 6, 7)
VARIANTS = ("entangled", "localized")
# the silent choices the search samples (search_spaces/fair_chance.py) and their defaults (S3Config)
DEFAULTS = {"special_local_entropy": 0.0, "select_local_entropy": 0.0, "special_global_entropy": 0.0,
            "select_global_entropy": 0.0, "gate_renorm": False, "pooling": "mean", "norm_placement": "pre",
            "router_init_std": 0.02, "n_layers": 1}
TOP = 3
METHODS = ("s3", "s3_no_select", "clip", "raw_probe")
DIAG = ("diag/moe_share", "diag/local_entropy", "diag/gate_auc", "diag/headroom")


def run_grid(root: Path, preset: str, experiment: str, *flags: str) -> None:
    cmd = [sys.executable, str(REPO / "run_grid.py"), "--preset", preset, "--experiment", experiment,
           "--tracking-uri", f"sqlite:///{root / 'mlflow.db'}", "--storage-path", str(root / "runs"),
           "--report-dir", str(root / f"report-{experiment}"), "--verbose", "0", *flags]
    print("$", " ".join(cmd[1:]), flush=True)
    subprocess.run(cmd, check=True)


def setting_flags(setting: dict) -> list[str]:
    return ["--set", *(f"{k}={v!r}" for k, v in setting.items())] if setting else []


def trials(root: Path, experiment: str):
    """The experiment's finished trial runs as a DataFrame (empty when there is none)."""
    mlflow.set_tracking_uri(f"sqlite:///{root / 'mlflow.db'}")
    df = mlflow.search_runs(experiment_names=[experiment], filter_string=f"tags.`{layout.TAG_ROLE}` = 'trial'")
    return df[df["status"] == "FINISHED"] if len(df) else df


def setting_of(row) -> dict:
    out = {}
    for k, default in DEFAULTS.items():
        raw = row[f"params.{k}"]
        out[k] = (raw == "True") if isinstance(default, bool) else type(default)(raw)
    return out


def curve_of(run_id: str) -> dict[float, tuple[float, float]]:
    """A trial's curve from MLflow: p -> (test accuracy, valid accuracy); step = p in per mille."""
    client = mlflow.MlflowClient()
    test = {m.step: m.value for m in client.get_metric_history(run_id, "test_acc")}
    valid = {m.step: m.value for m in client.get_metric_history(run_id, "valid_acc")}
    return {step / 1000: (test[step], valid[step]) for step in test if step in valid}


def cmd_search(root: Path, args) -> None:
    for d in SEARCH_SEEDS:
        run_grid(root, "fair_chance", f"s3-fair-search-d{d}", "--synthetic", f"seed={d}",
                 "--num-samples", str(args.num_samples), "--seed-search", str(args.seed_search + d))


def top_settings(root: Path) -> list[tuple[int, dict, float]]:
    """Each search study's best TOP settings by validation accuracy at p*: (data seed, setting, value)."""
    out = []
    for d in SEARCH_SEEDS:
        df = trials(root, f"s3-fair-search-d{d}")
        if not len(df):
            print(f"note: no finished trial in s3-fair-search-d{d} yet", file=sys.stderr)
            continue
        df = df.sort_values("metrics.best_valid_acc", ascending=False)
        out += [(d, setting_of(r), float(r["metrics.best_valid_acc"])) for _, r in df.head(TOP).iterrows()]
    return out


def cmd_confirm(root: Path, args) -> None:
    for d, setting, _ in top_settings(root):
        for other in SEARCH_SEEDS:
            if other != d:
                run_grid(root, "fair_chance_confirm", f"s3-fair-confirm-d{other}", "--synthetic", f"seed={other}",
                         *setting_flags(setting))


def cmd_choose(root: Path, args) -> None:
    confirm = {d: trials(root, f"s3-fair-confirm-d{d}") for d in SEARCH_SEEDS}
    rows = []
    for d, setting, value in top_settings(root):
        scores = {d: value}
        for other, df in confirm.items():
            for _, r in df.iterrows():
                if other != d and setting_of(r) == setting:
                    scores[other] = float(r["metrics.best_valid_acc"])
        rows.append((sum(scores.values()) / len(scores), d, scores, setting))
    rows.sort(key=lambda r: -r[0])
    print("| mean valid acc @p* (seeds 0-2) | from study | per data seed | setting |\n|---|---|---|---|")
    for mean, d, scores, setting in rows:
        per = ", ".join(f"{s}: {100 * v:.1f}" for s, v in sorted(scores.items()))
        print(f"| {100 * mean:.1f} | d{d} | {per} | {json.dumps(setting)} |")
    best = rows[0]
    if len(best[2]) != len(SEARCH_SEEDS):
        raise SystemExit(f"error: the best setting has scores on {sorted(best[2])} only; run `confirm` first")
    (root / "winner.json").write_text(json.dumps(best[3], indent=1) + "\n")
    print(f"winner -> {root / 'winner.json'}")


def heldout_experiment(variant: str, which: str) -> str:
    return f"s3-fair-heldout-{variant}-{which}"


def cmd_heldout(root: Path, args) -> None:
    winner = json.loads((root / "winner.json").read_text())
    for variant in args.variants:
        for which, setting in (("winner", winner), ("defaults", {})):
            for d in args.seeds:
                run_grid(root, "fair_chance_heldout", heldout_experiment(variant, which), "--synthetic",
                         f"variant={variant}", f"seed={d}", "--seeds", str(d), *setting_flags(setting))


def _fmt(x: float, scale: float = 100.0, digits: int = 1) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{scale * x:.{digits}f}"


def plot_heldout(root: Path, variants, path: Path) -> None:
    """Mean test accuracy over the held-out data seeds against p: S3 and the ablation at the winner and
    at the defaults, CLIP-style and the raw probe as flat lines; one panel per variant."""
    import matplotlib   # plotting: loaded only when a figure is asked for
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(variants), figsize=(6 * len(variants), 4.2), squeeze=False)
    for ax, variant in zip(axes[0], variants):
        for which, colour in (("winner", "tab:red"), ("defaults", "tab:blue")):
            df = trials(root, heldout_experiment(variant, which))
            if not len(df):
                continue
            for method, style in (("s3", "-o"), ("s3_no_select", ":^")):
                curves = [curve_of(str(r)) for r in df.loc[df["params.method"] == method, "run_id"]]
                if not curves:
                    continue
                ps = sorted(set.intersection(*(set(c) for c in curves)))
                ax.plot(ps, [100 * sum(c[p][0] for c in curves) / len(curves) for p in ps], style, color=colour,
                        label=f"{'S3' if method == 's3' else 'S3 without Stage 2'} ({which}, n={len(curves)})")
            for method, ls in (("clip", "--"), ("raw_probe", "-.")):
                vals = df.loc[df["params.method"] == method, "metrics.test_acc_at_best"].dropna()
                if len(vals):
                    ax.axhline(100 * vals.mean(), color=colour if method == "clip" else "gray", linestyle=ls,
                               linewidth=1.2, label=f"{'CLIP-style' if method == 'clip' else 'raw probe'} ({which})")
        ax.set(title=f"{variant}: held-out data seeds {', '.join(map(str, HELDOUT_SEEDS))}", xlabel="keep-ratio p",
               ylabel="test accuracy (%), mean over seeds")
        ax.invert_xaxis()
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"figure -> {path}")


def cmd_table(root: Path, args) -> None:
    if args.plot:
        plot_heldout(root, args.variants, args.plot)
    for variant in args.variants:
        by = {}
        for which in ("winner", "defaults"):
            df = trials(root, heldout_experiment(variant, which))
            if not len(df):
                by[which] = {m: {} for m in METHODS}
                continue
            by[which] = {m: {int(r["params.seed"]): r for _, r in df[df["params.method"] == m].iterrows()} for m in METHODS}
        print(f"\n### {variant}, data seeds {', '.join(map(str, args.seeds))} (model seed = data seed)\n")
        print("| setting | method | n | test acc @p* | mean p* | test acc p=1 | MoE share | local entropy | gate AUC | headroom |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for which in ("winner", "defaults"):
            for m in METHODS:
                rows = list(by[which][m].values())
                if not rows:
                    continue

                def mean(col):
                    vals = [float(r[col]) for r in rows if col in r and r[col] == r[col]]
                    return sum(vals) / len(vals) if vals else float("nan")
                print(f"| {which} | {m} | {len(rows)} | {_fmt(mean('metrics.test_acc_at_best'))} | "
                      f"{_fmt(mean('metrics.best_keep_ratio'), 1, 2)} | {_fmt(mean('metrics.test_acc_no_prune'))} | "
                      + " | ".join("–" if m == "clip" and k in ("diag/local_entropy", "diag/gate_auc")  # one expert
                                   else _fmt(mean(f"metrics.{k}"), 1, 2) if k != "diag/headroom"
                                   else _fmt(mean(f"metrics.{k}")) for k in DIAG) + " |")
        print("\nMean test accuracy (%) over the data seeds at each p (valid in brackets):\n")
        ps = None
        for which in ("winner", "defaults"):
            for m in ("s3", "s3_no_select"):
                curves = [curve_of(str(r["run_id"])) for r in by[which][m].values()]
                if not curves:
                    continue
                if ps is None:
                    ps = sorted(curves[0], reverse=True)
                    print("| setting | method | " + " | ".join(f"p = {p:g}" for p in ps) + " |")
                    print("|---|---|" + "---|" * len(ps))
                cells = []
                for p in ps:
                    te = [c[p][0] for c in curves if p in c]
                    va = [c[p][1] for c in curves if p in c]
                    cells.append(f"{100 * sum(te) / len(te):.1f} ({100 * sum(va) / len(va):.1f})")
                print(f"| {which} | {m} | " + " | ".join(cells) + " |")
        print("\n| comparison (paired by data seed) | n | mean difference (points) | 95% interval |\n|---|---|---|---|")
        pairs = [(f"{w}: s3 - {m}", ("s3", w), (m, w)) for w in ("winner", "defaults") for m in METHODS[1:]]
        pairs += [("s3: winner - defaults", ("s3", "winner"), ("s3", "defaults")),
                  ("s3, p = 1: winner - defaults", ("s3", "winner", "p1"), ("s3", "defaults", "p1")),
                  ("winner: s3 @p* - s3 @p=1", ("s3", "winner"), ("s3", "winner", "p1")),
                  ("defaults: s3 @p* - s3 @p=1", ("s3", "defaults"), ("s3", "defaults", "p1"))]
        for name, a, b in pairs:
            def scores(key):
                col = "metrics.test_acc_no_prune" if len(key) == 3 else "metrics.test_acc_at_best"
                return {s: 100 * float(r[col]) for s, r in by[key[1]][key[0]].items()}
            try:
                pdiff = paired_difference(scores(a), scores(b))
            except ValueError as err:
                print(f"| {name} | – | {err} | |")
                continue
            print(f"| {name} | {pdiff.n} | {pdiff.mean:+.1f} | [{pdiff.low:+.1f}, {pdiff.high:+.1f}] |")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("step", choices=("search", "confirm", "choose", "heldout", "table"))
    ap.add_argument("--root", type=Path, default=Path("fair_chance"), help="where the study's stores live")
    ap.add_argument("--num-samples", type=int, default=16, help="Optuna trials per search study")
    ap.add_argument("--seed-search", type=int, default=0,
                    help="search: study D's Optuna sampler seed is this + D (the run in docs/RESULTS.md used 0 for "
                         "all three studies, so their first 10 random settings were the same)")
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS))
    ap.add_argument("--seeds", type=int, nargs="+", default=list(HELDOUT_SEEDS), help="held-out data seeds")
    ap.add_argument("--plot", type=Path, default=None, help="table: also draw the held-out curves into this PNG")
    args = ap.parse_args(argv)
    root = args.root.resolve()
    root.mkdir(parents=True, exist_ok=True)
    {"search": cmd_search, "confirm": cmd_confirm, "choose": cmd_choose, "heldout": cmd_heldout,
     "table": cmd_table}[args.step](root, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
