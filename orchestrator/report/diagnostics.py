"""The report's diagnostics (issue 20): can pruning act on the trained models?

Reads what s3core.diagnostics logged per trial: the summary's ``diag/*`` metrics (the model after
its last stage; the headroom on data with known relevant steps) and the history of
``select/diag/{local,global}_entropy/<modality>/L<layer>`` over Selection's epochs. Draws the
paper's Figs 7-10 panels (entropy over Selection's epochs, one line per chi, mean over seeds and
layers; one column per modality, local and global entropy in two rows) and tabulates each
configuration's diagnostics, flagging those where pruning cannot act
(s3core.diagnostic_flags.cannot_act: MoE share < 0.2 or local entropy > 0.9).
"""
from __future__ import annotations

import re

import numpy as np
import pandas as pd
from matplotlib.ticker import MaxNLocator

from s3core.diagnostic_flags import DIAG_PREFIX, LOCAL_ENTROPY_CEILING, MOE_SHARE_FLOOR, cannot_act
from s3core.methods import primary_method

from orchestrator.report.aggregate import best_config_of, method_label, method_order
from orchestrator.report.plots import _figure_png, _pyplot

COLUMNS = ("moe_share", "local_entropy", "global_entropy", "gate_auc", "headroom")
HEADER = ("method", "χ", "seeds", "MoE share (median)", "local entropy", "global entropy", "gate AUC",
          "headroom (pts)", "pruning can act?")
NOTE = ("After the trial's last stage, on a fixed validation batch at p = 1 (s3core.diagnostics): the MoE "
        "branch's output norm over the residual stream's (median per token), routing entropies normalised "
        "to [0, 1], the gates' AUC of relevant-vs-irrelevant steps (synthetic variants only) and the "
        "input-masking headroom (test accuracy with the irrelevant steps removed from the input, minus on "
        f"the whole input, in points). Flag: MoE share < {MOE_SHARE_FLOOR} or local entropy > "
        f"{LOCAL_ENTROPY_CEILING}. Means over seeds, of the configuration the accuracy table shows.")
_ENTROPY_KEY = re.compile(r"^select/diag/(local|global)_entropy/([^/]+)/L(\d+)$")


def _chosen(trials: pd.DataFrame, benchmark: str, configs: pd.DataFrame | None) -> pd.DataFrame:
    """The benchmark's trials; with `configs` (aggregate.aggregate_configs), only those of each
    (method, chi)'s configuration best on validation, the one the accuracy table shows: a sweep
    over batch size (or any field) is not averaged together, and "seeds" counts seeds."""
    bench = trials[trials["benchmark"] == benchmark]
    if configs is None:
        return bench
    bench_configs = configs[configs["benchmark"] == benchmark]
    run_ids = [r for (method, chi), _ in bench_configs.groupby(["method", "chi"])
               for r in best_config_of(bench_configs, method=method, chi=chi)["run_ids"]]
    return bench[bench["run_id"].isin(run_ids)]


def _n_experts(trials: pd.DataFrame) -> pd.Series:
    """Each trial's experts per MoE layer (read.trial_info's n_experts; chi for frames without it)."""
    return trials["n_experts"] if "n_experts" in trials else trials["chi"]


def diagnostic_rows(trials: pd.DataFrame, benchmark: str, configs: pd.DataFrame | None = None) -> list[dict]:
    """One row per (method, chi) of the benchmark's finished trials that logged diagnostics, in
    registry order (as the accuracy table), then by chi; with `configs`, of the configuration
    best on validation only (_chosen)."""
    rows = []
    bench = _chosen(trials, benchmark, configs)
    done = bench[bench["diag"].map(bool)]
    for (method, chi), group in done.groupby(["method", "chi"], sort=True):
        row = {"method": method, "chi": int(chi), "n": len(group)}
        for col in COLUMNS:
            values = [d[DIAG_PREFIX + col] for d in group["diag"] if DIAG_PREFIX + col in d]
            row[col] = float(np.mean(values)) if values else None
        # one expert (a dense model, chi = rho = 1): no routing pairs, nothing for pruning to act on or not
        row["flags"] = None if int(_n_experts(group).max()) <= 1 else cannot_act(
            {DIAG_PREFIX + c: row[c] for c in ("moe_share", "local_entropy") if row[c] is not None})
        rows.append(row)
    rows.sort(key=lambda r: (method_order(r["method"]), r["method"], r["chi"]))
    return rows


def flagged_trials(trials: pd.DataFrame) -> list[tuple[str, list[str]]]:
    """(run name, reasons) of every finished trial whose own diagnostics say pruning cannot act."""
    out = []
    for _, t in trials[trials["diag"].map(bool) & (_n_experts(trials) > 1)].iterrows():
        reasons = cannot_act(t["diag"])
        if reasons:
            out.append((t["run_name"], reasons))
    return out


def entropy_histories(client, trials: pd.DataFrame, benchmark: str, configs: pd.DataFrame | None = None) -> dict:
    """{(chi, kind, modality): (epochs,) mean over S3 trials (seeds) and layers of the entropy over
    Selection's epochs}; with `configs`, of each chi's configuration best on validation only."""
    per: dict = {}
    bench = _chosen(trials, benchmark, configs)
    s3 = bench[(bench["method"] == primary_method()) & bench["diag"].map(bool)]
    for _, t in s3.iterrows():
        run = client.get_run(t["run_id"])
        for key in run.data.metrics:
            match = _ENTROPY_KEY.match(key)
            if not match:
                continue
            history = sorted(client.get_metric_history(t["run_id"], key), key=lambda m: (m.step, m.timestamp))
            latest = {m.step: m.value for m in history}
            values = [latest[s] for s in sorted(latest)]
            per.setdefault((int(t["chi"]), match.group(1), match.group(2)), []).append(values)
    out = {}
    for k, series in per.items():
        n = min(len(s) for s in series)
        out[k] = np.mean([s[:n] for s in series], axis=0)
    return out


def plot_entropy(benchmark: str, histories: dict) -> bytes | None:
    """The Figs 7-10 panels: rows local / global entropy, one column per modality, one line per chi."""
    if not histories:
        return None
    plt = _pyplot()
    modalities = sorted({m for _, _, m in histories})
    fig, axes = plt.subplots(2, len(modalities), figsize=(3.6 * len(modalities), 5.2), squeeze=False, sharey=True)
    for col, m in enumerate(modalities):
        for row, kind in enumerate(("local", "global")):
            ax = axes[row][col]
            for chi in sorted({c for c, k, mm in histories if k == kind and mm == m}):
                y = histories[(chi, kind, m)]
                ax.plot(np.arange(1, len(y) + 1), y, "o-", label=f"χ={chi}")
            ax.set_title(f"{m}: {kind} entropy", fontsize=9)
            ax.set_ylim(0, 1.05)
            if kind == "local":
                ax.axhline(LOCAL_ENTROPY_CEILING, color="grey", lw=0.8, ls=":")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes[1][col].set_xlabel("Selection epoch")
        axes[0][col].legend(fontsize=7)
    axes[0][0].set_ylabel("normalised entropy")
    axes[1][0].set_ylabel("normalised entropy")
    fig.suptitle(f"{benchmark}: routing entropy during Selection (S3, mean over seeds and layers)", fontsize=10)
    fig.tight_layout()
    return _figure_png(fig)


def _cell(v, scale: float = 1.0, digits: int = 2) -> str:
    return "–" if v is None else f"{v * scale:.{digits}f}"


def table_cells(row: dict) -> tuple:
    """A row's cells. A one-expert model (flags None) has no routing: its entropies (0 by
    construction) and gate AUC (0.5: every gate ties at 1) are shown as '–', not as numbers."""
    routed = row["flags"] is not None
    if not routed:
        verdict = "– (one expert)"
    else:
        verdict = "no: " + "; ".join(row["flags"]) if row["flags"] else "yes"
    routing = [_cell(row[c]) if routed else "–" for c in ("local_entropy", "global_entropy", "gate_auc")]
    return (method_label(row["method"]), str(row["chi"]), str(row["n"]), _cell(row["moe_share"]), *routing,
            _cell(row["headroom"], 100.0, 1), verdict)


def section(client, trials: pd.DataFrame, benchmark: str, name: str, images: dict, configs: pd.DataFrame) -> dict:
    """The benchmark section's diagnostics: {'diag_rows', 'entropy'} (entropy: the PNG's file name),
    of each (method, chi)'s configuration best on validation (`configs`: aggregate.aggregate_configs)."""
    if "diag" not in trials:
        return {}
    out = {"diag_rows": diagnostic_rows(trials, benchmark, configs)}
    png = plot_entropy(benchmark, entropy_histories(client, trials, benchmark, configs))
    if png is not None:
        images[f"entropy_{name}.png"] = png
        out["entropy"] = f"entropy_{name}.png"
    return out


def note(trials: pd.DataFrame) -> str | None:
    """The report's top note naming the trials where pruning cannot act, and where to look."""
    if "diag" not in trials:
        return None
    flagged = flagged_trials(trials)
    if not flagged:
        return None
    names = ", ".join(f"{n} ({'; '.join(r)})" for n, r in flagged[:8]) + (" ..." if len(flagged) > 8 else "")
    return (f"pruning cannot act in {len(flagged)} trial(s): {names}. A flat accuracy-vs-p curve there says "
            "nothing about the mechanism; see each benchmark's \"Can pruning act?\" table and its entropy "
            "figure (entropy_<benchmark>.png).")


__all__ = ["diagnostic_rows", "flagged_trials", "entropy_histories", "plot_entropy", "section", "note",
           "table_cells", "HEADER", "NOTE"]
