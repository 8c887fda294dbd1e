"""Plots as PNG bytes: accuracy vs keep-ratio per chi, and accuracy vs batch size.

Methods are named and styled by their registry entry (s3core.methods: label, role, style); S3 gets
one colour per chi, every other method a horizontal line (its best configuration on validation) in
its style's colour and line, or the next of FALLBACK_STYLES without a colour.
"""
from __future__ import annotations

import io

import numpy as np

import pandas as pd

from orchestrator import paper_numbers
from orchestrator.report.aggregate import best_config_of, method_label, method_order, method_style
from s3core.methods import methods_with_role, primary_method

FALLBACK_STYLES = (("tab:brown", "--"), ("tab:olive", "-."), ("tab:cyan", ":"))
MAX_P_TICKS = 12   # beyond this many distinct p, matplotlib picks the ticks


def _pyplot():
    # matplotlib: a second of import, paid when a plot is drawn, not by `import orchestrator.report`
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt   # after use("Agg")
    return plt


def _figure_png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
    _pyplot().close(fig)
    return buffer.getvalue()


def _reference_methods(configs: pd.DataFrame) -> list[tuple[str, str, str]]:
    """(method, colour, linestyle) for every method but S3 in these configs, registry order; the
    i-th method without a colour of its own takes FALLBACK_STYLES[i] (cycled)."""
    others = sorted((m for m in configs["method"].unique() if m != primary_method()),
                    key=lambda m: (method_order(m), m))
    fallback = FALLBACK_STYLES * len(others)
    return [(m, *((method_style(m).colour, method_style(m).linestyle) if method_style(m).colour else fallback[i]))
            for i, m in enumerate(others)]


def _reference_label(method: str, config: pd.Series) -> str:
    """A reference line's legend entry, shared by the test and the valid panel: both values."""
    return (f"{method_label(method)}: test {config['test_acc_mean']:.2f}, valid {config['valid_acc_mean']:.2f} "
            "(best p on valid)")


def _p_label(p: float) -> str:
    """0.125 -> '0.125', 0.3 -> '0.3', 1.0 -> '1.0'."""
    text = f"{p:g}"
    return text if "." in text else f"{p:.1f}"


def _s3_chi_label(chi: int) -> str:
    return f"{method_label(primary_method())} χ={chi}"


def _plot_paper_stars(ax, benchmark: str, chi: int, colour) -> None:
    """The paper's exact numbers for S3 at this chi (best over p, and unpruned), at their p."""
    for number in paper_numbers.paper_numbers_for(benchmark):
        if number.method == primary_method() and number.chi == chi and number.keep_ratio and number.qualifier == "=":
            ax.plot([number.keep_ratio], [number.accuracy], marker="*", markersize=14, color=colour,
                    markeredgecolor="black", linestyle="none",
                    label=f"paper χ={chi}, p={number.keep_ratio:g}: {number.accuracy:.2f} "
                          f"({'no pruning' if number.kind == paper_numbers.NO_PRUNE else 'best over p'})")


def _plot_s3_chi(ax, split: str, curves: pd.DataFrame, config: pd.Series, colour) -> None:
    """Each seed's curve dotted, the mean over seeds bold, +- std shaded."""
    wide = curves.pivot_table(index="keep_ratio", columns="run_id", values=f"{split}_acc")
    wide = wide.sort_index(ascending=False)
    for run_id in wide.columns:
        ax.plot(wide.index, wide[run_id], color=colour, linestyle=":", linewidth=0.9, alpha=0.7)
    mean, std = wide.mean(axis=1), wide.std(axis=1, ddof=1)
    label = _s3_chi_label(config["chi"])
    if pd.notna(config["batch_size"]):
        label += f", batch {config['batch_size']}"
    label += f" (n={config['n_seeds']})"
    ax.plot(mean.index, mean, color=colour, linewidth=2.2, marker="o", markersize=4, label=label)
    if len(wide.columns) > 1:
        ax.fill_between(mean.index, mean - std, mean + std, color=colour, alpha=0.18)


def plot_curves(benchmark: str, points: pd.DataFrame, configs: pd.DataFrame) -> bytes:
    """Test (left) and validation (right) accuracy vs keep-ratio p, one colour per chi; every other
    method a flat line in its registry style with its marker (staggered over p, so that methods
    at equal accuracy stay apart). One legend for both panels: a line's entry gives both values.

    Args:
        points: this benchmark's curve points (read.load_trials), percent.
        configs: aggregate.aggregate_configs over every benchmark.
    """
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.2), sharey=True)
    bench_configs = configs[configs["benchmark"] == benchmark]
    s3 = primary_method()
    chis = sorted(bench_configs.loc[bench_configs["method"] == s3, "chi"].unique())
    colours = plt.get_cmap("tab10")
    keep_ratios = sorted(points["keep_ratio"].unique(), reverse=True)
    for ax, split in zip(axes, ("test", "valid")):
        for index, chi in enumerate(chis):
            config = best_config_of(bench_configs, method=s3, chi=chi)
            _plot_s3_chi(ax, split, points[points["run_id"].isin(config["run_ids"])], config, colours(index % 10))
            if split == "test":
                _plot_paper_stars(ax, benchmark, chi, colours(index % 10))
        references = _reference_methods(bench_configs)
        for index, (method, colour, style) in enumerate(references):
            config = best_config_of(bench_configs, method=method)
            # markers at every len(references)-th p, shifted by one per method: two methods at the
            # same accuracy draw one line, but both markers show
            ax.plot(keep_ratios, [config[f"{split}_acc_mean"]] * len(keep_ratios), color=colour, linestyle=style,
                    linewidth=1.6, marker=method_style(method).marker, markersize=6,
                    markevery=slice(index % len(keep_ratios), None, len(references)),
                    label=_reference_label(method, config))
        ax.set_xlim(1.03, min(keep_ratios) - 0.03)  # p = 1.0 on the left: sparser to the right, as in the paper
        if len(keep_ratios) <= MAX_P_TICKS:
            ax.set_xticks(keep_ratios, [_p_label(p) for p in keep_ratios])
        ax.set_xlabel("keep ratio p  (fraction of routing pairs kept; sparser →)")
        ax.set_title(f"{split} accuracy")
        ax.grid(True, alpha=0.35)
        ax.yaxis.set_tick_params(labelleft=True)
    axes[0].set_ylabel("linear-probe accuracy (%)")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0),
               ncol=min(3, max(1, len(labels))), frameon=False, fontsize=9)
    fig.suptitle(f"{benchmark}: accuracy vs keep ratio (mean ± std over seeds; dotted: each seed)", fontsize=12)
    fig.tight_layout()
    return _figure_png(fig)


def plot_batch_size(benchmark: str, configs: pd.DataFrame) -> bytes | None:
    """Test accuracy at the valid-chosen p vs batch size, one line per chi and per other method
    swept over batch size; None when the benchmark has one batch size only."""
    bench = configs[(configs["benchmark"] == benchmark) & configs["batch_size"].notna()]
    if bench["batch_size"].nunique() < 2:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    colours = plt.get_cmap("tab10")
    s3 = primary_method()
    s3_chis = sorted(bench.loc[bench["method"] == s3, "chi"].unique())
    lines = [(s3, chi, colours(i % 10), "-", _s3_chi_label(chi)) for i, chi in enumerate(s3_chis)]
    lines += [(m, None, colour, style, method_label(m)) for m, colour, style in _reference_methods(bench)
              if bench.loc[bench["method"] == m, "batch_size"].nunique() > 1]
    for method, chi, colour, style, label in lines:
        subset = bench[bench["method"] == method]
        if chi is not None:
            subset = subset[subset["chi"] == chi]
        # per batch size, the configuration best on validation
        chosen = subset.loc[subset.groupby("batch_size")["valid_acc_mean"].idxmax()].sort_values("batch_size")
        ax.errorbar(chosen["batch_size"], chosen["test_acc_mean"], yerr=chosen["test_acc_std"].fillna(0.0),
                    color=colour, linestyle=style, marker="o", capsize=4, linewidth=1.8, label=label)
    sizes = sorted(int(b) for b in bench["batch_size"].unique())
    ax.set_xscale("log", base=2)
    ax.set_xticks(sizes)
    ax.set_xticklabels([str(b) for b in sizes])
    ax.minorticks_off()
    ax.set_xlabel("batch size")
    ax.set_ylabel("test accuracy at valid-chosen p (%)")
    ax.set_title(f"{benchmark}: batch-size robustness (mean ± std over seeds)")
    ax.grid(True, alpha=0.35)
    ax.legend(fontsize=9)
    fig.tight_layout()
    return _figure_png(fig)


def plot_frontier(benchmark: str, frontier: pd.DataFrame) -> bytes | None:
    """Test accuracy against expert FLOPs per sample (evidence.frontier_points): one line per
    configuration over its p, the compute of a method whose style asks for it (the dense CLIP model)
    as a vertical reference line, a method without FLOPs (the raw-feature probe: no encoder) as a
    horizontal one. None without any FLOPs."""
    if frontier.empty or frontier["expert_flops"].isna().all():
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8.5, 5.2))
    colours = plt.get_cmap("tab10")
    for index, (label, group) in enumerate(frontier.groupby("label", sort=False)):
        with_flops = group.dropna(subset=["expert_flops"]).sort_values("expert_flops")
        if with_flops.empty:          # no encoder, no FLOPs (the raw-feature probe): a reference line
            value = group["test_acc"].iloc[0]
            ax.axhline(value, color="tab:olive", linestyle=":", linewidth=1.5, label=f"{label}: {value:.2f}")
            continue
        group = with_flops
        method = group["method"].iloc[0]
        style, s3 = method_style(method), method == primary_method()
        per_chi = method in methods_with_role("s3", "ablation")     # one line per chi: a colour each
        colour = style.colour if style.colour and not per_chi else colours(index % 10)
        ax.plot(group["expert_flops"] / 1e6, group["test_acc"], marker=style.marker, color=colour, markersize=4,
                linestyle="-" if s3 else "--", linewidth=1.6,
                label=f"{label} (n={int(group['n'].max())})")
        if style.compute_line:
            ax.axvline(group["expert_flops"].iloc[0] / 1e6, color="black", linestyle="--", linewidth=1.0,
                       alpha=0.7, label=f"dense {method_label(method)} compute: "
                                        f"{group['expert_flops'].iloc[0] / 1e6:.2f} MFLOPs")
    ax.set_xlabel("expert FLOPs per test sample (millions; from the routing pairs each p kept)")
    ax.set_ylabel("test accuracy (%) (mean over seeds)")
    ax.grid(True, alpha=0.35)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2, frameon=False, fontsize=8.5)
    ax.set_title(f"{benchmark}: accuracy vs compute (each S3 point is one keep ratio p)", fontsize=11)
    fig.tight_layout()
    return _figure_png(fig)


def plot_expert_usage(benchmark: str, panels: list[tuple[str, object, str]]) -> bytes | None:
    """Heatmaps of expert usage per class: one row per (title, ExpertAnalysis, which) in panels,
    which = 'usage' (pairs at p = 1) or 'usage_at_p' (pairs kept at the analysis' p); one column
    per modality and layer. Each cell: the share of class c's pairs that expert e gets; the
    panel title gives the mean DSC (JS divergence, bits) between the modalities' rows."""
    if not panels:
        return None
    plt = _pyplot()
    first = panels[0][1]
    M, L = first.usage.shape[:2]
    n_cols = M * L
    fig, axes = plt.subplots(len(panels), n_cols, figsize=(4.2 * n_cols, 0.8 + 1.9 * len(panels)), squeeze=False,
                             constrained_layout=True)
    vmax = max(float(np.nanmax(getattr(a, which))) for _, a, which in panels)
    image = None
    for r, (title, analysis, which) in enumerate(panels):
        usage = getattr(analysis, which)
        dsc = analysis.dsc if which == "usage" else analysis.dsc_at_p
        for m in range(M):
            for layer in range(L):
                ax = axes[r][m * L + layer]
                image = ax.imshow(usage[m, layer], aspect="auto", cmap="viridis", vmin=0.0, vmax=vmax,
                                  interpolation="nearest")
                C, E = usage.shape[2:]
                ax.set_yticks(range(C), [f"class {c}" for c in range(C)], fontsize=7)
                ax.set_xticks(range(0, E, max(1, E // 8)))
                ax.tick_params(axis="x", labelsize=7)
                mean_dsc = float(np.nanmean(dsc[:, layer])) if dsc.size else float("nan")
                ax.set_title(f"{title}\n{analysis.modalities[m]}, layer {layer}; DSC {mean_dsc:.2f} bits",
                             fontsize=8)
                if r == len(panels) - 1:
                    ax.set_xlabel("expert", fontsize=8)
    fig.colorbar(image, ax=axes, shrink=0.8, label="share of the class's routing pairs")
    fig.suptitle(f"{benchmark}: expert usage per class", fontsize=11)
    return _figure_png(fig)
