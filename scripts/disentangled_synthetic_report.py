"""The report half of scripts/disentangled_synthetic.py: its `table` subcommand (ours and theirs side
by side, the paired gaps, `--plot`). Called through that script (`table --out DIR [--tags T..]
[--plot PNG]`), never by hand; it reads the JSON files `theirs` and `ours` wrote.
"""
from __future__ import annotations

import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from disentangled_synthetic import (COMMIT, LABEL_FACTOR, LABELS, OURS, REFERENCES, REPO, THEIRS,  # noqa: E402
                                    UsageError, ours_path, read_json)


# ---------------------------------------------------------------- table
def _mean_std(values: list[float]) -> str:
    if not values:
        return "–"
    v = np.asarray(values, dtype=float) * (100 if max(values) <= 1 else 1)
    return f"{v.mean():.1f} ± {v.std(ddof=1):.1f} (n={len(v)})" if len(v) > 1 else f"{v.mean():.1f} (n=1)"


def their_parts(method: str, k: int) -> list[tuple[str, str]]:
    """(part, key in their logs) of their own probe of each part for label k, as their code logs it."""
    if method == "disentangled_ssl":
        keys = [("shared", f"step1 Test Acc {k}"), ("spe1", f"Acc_spe1 {k}"), ("spe2", f"Acc_spe2 {k}")]
    else:
        keys = [("shared", f"Acc_s {k}"), ("spe1", f"Acc_spe1 {k}"), ("spe2", f"Acc_spe2 {k}")]
    return keys


def gap_lines(theirs: dict, settings: list[tuple[str, dict]]) -> list[str]:
    """Each setting of ours minus their concat probe, paired by seed (the same data seed), with its
    95% t-interval; and whether ours' mean lies within the range of their per-seed results."""
    from orchestrator.stats import paired_difference

    lines = ["| label | method | setting | ours - theirs (points, paired by seed, 95% CI) | ours' mean within "
             "their range (min-max over seeds) |", "|---|---|---|---|---|"]
    for k in LABELS:
        for m in THEIRS:
            t = {s: theirs[s][m]["concat"][f"label{k}"] for s in theirs if m in theirs[s]}
            for name, o in settings:
                ours = {s: o[s][m][f"label{k}"] for s in o if m in o[s] and f"label{k}" in o[s][m]}
                if not t or not (set(t) & set(ours)):
                    continue
                d = paired_difference(ours, t, names=("ours", "theirs"))
                mean = 100 * float(np.mean([ours[s] for s in d.seeds]))
                lo, hi = 100 * min(t[s] for s in d.seeds), 100 * max(t[s] for s in d.seeds)
                ci = f" [{100 * d.low:+.1f}, {100 * d.high:+.1f}]" if d.n >= 2 else ""
                inside = "yes" if lo <= mean <= hi else "no"
                lines.append(f"| {k} | {m} | {name} | {100 * d.mean:+.1f}{ci} (n={d.n}) | {inside} ({mean:.1f} vs "
                             f"{lo:.1f}-{hi:.1f}) |")
    return lines


def cmd_table(args) -> None:
    def load(name):
        return read_json(os.path.join(args.out, name))

    theirs = load("theirs.json")
    settings = [("ours, defaults", load("ours.json"))]
    for tag in args.tags:
        if not os.path.exists(ours_path(args.out, tag)):
            raise UsageError(f"{ours_path(args.out, tag)}: missing; run `ours --train-once --tag {tag}` first")
        settings.append((f"ours, {tag}", load(os.path.basename(ours_path(args.out, tag)))))
    if not theirs and not any(o for _, o in settings):
        raise UsageError(f"nothing under {args.out}: run `theirs` and `ours` first")
    lines = ["| label | method | " + " | ".join(name for name, _ in settings) + " | theirs, concat probe | "
             "theirs, their probe: shared | spe1 | spe2 |", "|---" * (len(settings) + 6) + "|"]
    for k in LABELS:
        for m in OURS + REFERENCES:
            cells = [[o[s][m][f"label{k}"] for s in o if m in o[s] and f"label{k}" in o[s][m]] for _, o in settings]
            t = [theirs[s][m]["concat"][f"label{k}"] for s in theirs if m in theirs[s]]
            parts = []
            for name, key in their_parts(m, k):
                parts.append(_mean_std([theirs[s][m]["their_logs"][key] for s in theirs
                                        if m in theirs[s] and key in theirs[s][m]["their_logs"]]))
            if not any(cells) and not t:
                continue
            lines.append(f"| {k}: {LABEL_FACTOR[k]} | {m} | {' | '.join(_mean_std(c) for c in cells)} | "
                         f"{_mean_std(t)} | {' | '.join(parts)} |")
    text = "\n".join(lines) + "\n\nTest accuracy (%), mean ± std over seeds (n); theirs: " \
        f"{REPO}@{COMMIT[:7]}; '–': not run (FactorCL has no code in their synthetic_task).\n"
    text += "\n" + "\n".join(gap_lines(theirs, settings)) + "\n"
    with open(os.path.join(args.out, "table.md"), "w") as fh:
        fh.write(text)
    print(text)
    if args.plot:
        plot_table(theirs, settings, args.plot)
        print(f"plot: {args.plot}")


def plot_table(theirs: dict, settings: list[tuple[str, dict]], path: str) -> None:
    """One panel per method (theirs' three): per label, a bar per setting of ours and one for their code
    (concat probe), mean with the std over seeds as an error bar and each seed as a dot; the raw-feature
    probe of ours' first setting as a dashed line per label."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bars = [(name, {s: o[s] for s in o}) for name, o in settings] + \
        [("theirs (their code)", {s: {m: theirs[s][m]["concat"] for m in theirs[s]} for s in theirs})]
    ours_colours = ["#c6dbef", "#9ecae1", "#6baed6", "#3182bd", "#08519c", "#08306b"]
    colours = [ours_colours[round(j * (len(ours_colours) - 1) / max(1, len(bars) - 2))] for j in range(len(bars) - 1)]
    colours.append("#e6550d")   # their code
    fig, axes = plt.subplots(1, len(THEIRS), figsize=(4.6 * len(THEIRS), 4.2), sharey=True)
    width = 0.8 / len(bars)
    raw = settings[0][1]
    for ax, m in zip(axes, THEIRS):
        for j, (name, res) in enumerate(bars):
            for i, k in enumerate(LABELS):
                vals = [100 * res[s][m][f"label{k}"] for s in res if m in res[s] and f"label{k}" in res[s][m]]
                if not vals:
                    continue
                x = i + (j - (len(bars) - 1) / 2) * width
                ax.bar(x, np.mean(vals), width * 0.95, yerr=np.std(vals, ddof=1) if len(vals) > 1 else 0,
                       color=colours[j], label=name if i == 0 else None, capsize=2)
                ax.plot([x] * len(vals), vals, ".", color="k", ms=3)
        for i, k in enumerate(LABELS):
            vals = [100 * raw[s]["raw_probe"][f"label{k}"] for s in raw if "raw_probe" in raw[s]]
            if vals:
                ax.hlines(np.mean(vals), i - 0.45, i + 0.45, colors="k", linestyles="--",
                          label="raw-feature probe" if i == 0 else None)
        ax.set_xticks(range(len(LABELS)), [f"label {k}\n{LABEL_FACTOR[k]}" for k in LABELS], fontsize=8)
        ax.set_title(m)
        ax.set_ylim(45, 90)
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("test accuracy (%), probe on all parts")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(4, len(labels)), fontsize=8, frameon=False)
    fig.suptitle(f"DisentangledSSL's synthetic task: ours (s3core) and their code ({REPO}@{COMMIT[:7]})", fontsize=10)
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)
