"""The grid's closing text: the summary table and where the report and the MLflow UI are."""
from __future__ import annotations

import ast
import math
from pathlib import Path

from orchestrator.mlflow_layout import METHODS

SUMMARY_MAX_ROWS = 24      # configurations in the console summary; the report has them all


def _config_fields(row: dict) -> dict:
    """The configuration's parameters, from the report's config_key (a repr of (name, value)
    pairs); just chi when it cannot be read."""
    try:
        pairs = ast.literal_eval(row.get("config_key", ""))
        fields = {str(k): str(v) for k, v in pairs}
    except (ValueError, SyntaxError, TypeError):
        fields = {}
    fields.pop("method", None)
    fields.pop("preset", None)
    fields.setdefault("chi", str(row.get("chi", "")))
    return fields


def _sort_value(v: str):
    try:
        return (0, float(v), "")
    except ValueError:
        return (1, 0.0, v)


def _accuracy(mean, std, n: int) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "-"
    if n > 1 and std is not None and not math.isnan(std):
        return f"{mean:.1f} ± {std:.1f}"
    return f"{mean:.1f}"


def summary_lines(configs: list[dict], max_rows: int = SUMMARY_MAX_ROWS) -> list[str]:
    """A plain-text table per benchmark: one row per method and value of the swept fields, with
    the test accuracy (%) at the p chosen on validation (mean ± std over seeds), the mean chosen
    p, the test accuracy without pruning, and the number of seeds.

    Args:
        configs: build_report's ReportResult.configs (accuracies already in percent).
        max_rows: per benchmark; beyond it, the configurations best on validation are kept.
    Returns:
        lines, no trailing newlines.
    """

    lines: list[str] = []
    for bench in sorted({r["benchmark"] for r in configs}):
        rows = [dict(r, _fields=_config_fields(r)) for r in configs if r["benchmark"] == bench]
        swept = {"chi"}
        for method in {r["method"] for r in rows}:
            mine = [r["_fields"] for r in rows if r["method"] == method]
            for name in set().union(*mine):
                if len({f.get(name) for f in mine}) > 1:
                    swept.add(name)
        fields = ["chi"] + sorted(swept - {"chi"})
        hidden = 0
        if len(rows) > max_rows:
            rows.sort(key=lambda r: -r.get("valid_acc_mean", 0.0))
            hidden, rows = len(rows) - max_rows, rows[:max_rows]
        rows.sort(key=lambda r: (METHODS.index(r["method"]) if r["method"] in METHODS else len(METHODS),
                                 r["method"], [_sort_value(r["_fields"].get(f, "")) for f in fields]))
        header = ["method", *fields, "test acc @p*", "mean p*", "test acc p=1", "seeds"]
        table = [header] + [[r["method"], *(r["_fields"].get(f, "-") for f in fields),
                             _accuracy(r.get("test_acc_mean"), r.get("test_acc_std"), r.get("n_seeds", 1)),
                             f"{r.get('keep_ratio_mean', float('nan')):.2f}",
                             _accuracy(r.get("test_acc_no_prune_mean"), r.get("test_acc_no_prune_std"),
                                       r.get("n_seeds", 1)),
                             str(r.get("n_seeds", ""))] for r in rows]
        widths = [max(len(row[i]) for row in table) for i in range(len(header))]
        lines.append(f"results [{bench}]: test accuracy (%) at the keep-ratio p* chosen on validation, "
                     "mean ± std over seeds")
        for i, row in enumerate(table):
            cells = [c.ljust(w) if j == 0 else c.rjust(w) for j, (c, w) in enumerate(zip(row, widths))]
            lines.append("  " + "  ".join(cells).rstrip())
            if i == 0:
                lines.append("  " + "  ".join("-" * w for w in widths))
        if hidden:
            lines.append(f"  ... {hidden} more configuration(s), lower on validation: see the report")
    return lines


def mlflow_ui_hint(tracking_uri: str, experiment_id: str | None = None, parent_run_id: str | None = None) -> str:
    """How to look at the runs: a local store needs `mlflow ui` started on it; a server is
    already one, so its URL is the answer."""
    page = ""
    if experiment_id:
        page = f"#/experiments/{experiment_id}" + (f"/runs/{parent_run_id}" if parent_run_id else "")
    if tracking_uri.startswith(("http://", "https://")):
        return f"MLflow UI: {tracking_uri.rstrip('/')}/{page}"
    return (f"MLflow UI: mlflow ui --backend-store-uri {tracking_uri}   then open http://127.0.0.1:5000/{page}")


def closing_lines(report_index, tracking_uri: str, experiment_id=None, parent_run_id=None,
                  log_path: Path | None = None) -> list[str]:
    lines = []
    if report_index:
        lines.append(f"report: {Path(report_index).resolve()}")
    lines.append(mlflow_ui_hint(tracking_uri, experiment_id, parent_run_id))
    if log_path is not None and Path(log_path).exists():
        lines.append(f"Ray's and MLflow's log messages: {log_path}")
    return lines
