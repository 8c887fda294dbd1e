"""The report's content, built once as a render.Document (rendered to Markdown and HTML).

The table sets two of our numbers beside the paper's, each labelled with how p was chosen:
- "test @ p chosen on valid": the trial's logged test accuracy at the p its validation split
  chose. Ours, honest: the test split plays no part in any choice.
- "test @ best p on test": per trial the best test accuracy over p, then averaged over seeds.
  The selection the paper's best-p figures imply (optimistic: p is chosen on test). Only p is
  chosen on test; the row's configuration (batch size...) is still the one best on validation.
- the paper's figures, under a header naming their source (PAPER_SOURCE).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from s3core.methods import methods_with_role, primary_method

from orchestrator.report import diagnostics as diag
from orchestrator.report.render import Bullets, Code, Document, Heading, Image, Paragraph, Table

# Where orchestrator.paper_numbers' figures come from (its module docstring says the same).
PAPER_SOURCE = ("Choi & Kwak, ICML 2026 (arXiv 2605.03348); figures as restated in shared/docs/S3_METHOD.md, "
                "\"Numbers the paper reports\"")
PAPER_HEADER = "paper (Choi & Kwak 2026)"
TEST_VALID_P = "test @ p chosen on valid (ours, honest)"
TEST_TEST_P = "test @ best p on test (selection as in the paper's curves)"
TABLE_HEADER = ("method", "χ", "batch", "seeds", TEST_VALID_P, "p chosen on valid (mean)", "valid @ that p",
                TEST_TEST_P, "best p on test (mean)", "test @ p = 1.0",
                f"{PAPER_HEADER}: best over p", f"{PAPER_HEADER}: p = 1.0")
FAILED_HEADER = ("run", "method", "χ", "batch", "seed", "reason")
PROTOCOL = (
    f"Each trial logged the keep-ratio p chosen on its validation split (ties: the larger p); "
    f"\"{TEST_VALID_P}\" is its test accuracy there. \"{TEST_TEST_P}\" is, per trial, the best test "
    "accuracy over p, so it chooses on the test split and is optimistic; it is shown only because "
    "the paper's best-p figures are of that kind. Both: mean ± sample std over seeds, percent. A "
    "row's batch size (and any other swept field) is chosen on validation for both.")
PAPER_NOTE = (f"Columns \"{PAPER_HEADER}\": from the paper, {PAPER_SOURCE}. Its figures are best-over-p "
              f"points of its seed-averaged curves, and how p was chosen is not stated: compare them with "
              f"\"{TEST_TEST_P}\", not with \"{TEST_VALID_P}\".")

NO_PAPER_NOTE = f"The paper ({PAPER_SOURCE}) reports no number for this benchmark."


@dataclass
class BenchmarkSection:
    """One benchmark's part of the report.

    Args:
        rows: aggregate.paper_table's rows of this benchmark.
        curves: file name of the curves PNG.
        batch: file name of the batch-size PNG, None when skipped (batch_note says why).
        unmatched: the paper's numbers no row shows (aggregate.unmatched_paper_numbers).
    """

    benchmark: str
    rows: list[dict]
    curves: str
    batch: str | None
    unmatched: list[str]
    batch_note: str = "only one batch size in these trials"
    paired: list = field(default_factory=list)        # evidence.paired_rows
    curve_rows: list = field(default_factory=list)    # evidence.curve_rows
    frontier: str | None = None                       # file name of the frontier PNG
    experts: list = field(default_factory=list)       # file names of the expert-usage heatmaps (one per chi)
    expert_rows: list = field(default_factory=list)   # evidence.expert_metric_rows
    reference_note: str | None = None                 # e.g. a synthetic report without the raw probe
    diag_rows: list = field(default_factory=list)     # report.diagnostics.diagnostic_rows
    entropy: str | None = None                        # file name of the entropy-over-Selection PNG


def fmt(mean: float | None, std: float | None, digits: int = 2) -> str:
    """'75.50 ± 2.12'; the mean alone without a std; '–' without a mean."""
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "–"
    if std is None or math.isnan(std):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def _batch_cell(row: dict) -> str:
    batch = "–" if row["batch_size"] is None or math.isnan(row["batch_size"]) else str(int(row["batch_size"]))
    return batch + (f" (best of {row['n_configs']})" if row["n_configs"] > 1 else "")


def table_cells(row: dict) -> tuple[str, ...]:
    """One row of the results table, in TABLE_HEADER's order."""
    return (
        row["label"], str(row["chi"]), _batch_cell(row), str(row["n_seeds"]),
        fmt(row["test_acc_mean"], row["test_acc_std"]),
        fmt(row["keep_ratio_mean"], None),
        fmt(row["valid_acc_mean"], row["valid_acc_std"]),
        fmt(row["test_acc_best_on_test_mean"], row["test_acc_best_on_test_std"]),
        fmt(row["keep_ratio_best_on_test_mean"], None),
        fmt(row["test_acc_no_prune_mean"], row["test_acc_no_prune_std"]),
        row["paper_best"] or "–", row["paper_no_prune"] or "–",
    )


def _failed_cells(failed: dict) -> tuple:
    reason = failed["failure_reason"] or "(no reason)"
    return ((Code(failed["run_name"]), f" ({failed['run_id'][:8]})"), failed["method"], str(failed["chi"]),
            str(failed["batch_size"]), str(failed["seed"]), reason)


def _benchmark_blocks(section: BenchmarkSection) -> list:
    has_paper = section.unmatched or any(r["paper_best"] or r["paper_no_prune"] for r in section.rows)
    blocks = [Heading(section.benchmark), Table(TABLE_HEADER, tuple(table_cells(r) for r in section.rows)),
              Paragraph(PAPER_NOTE if has_paper else NO_PAPER_NOTE)]
    if section.unmatched:
        blocks.append(Paragraph("Other numbers from the paper: " + "; ".join(section.unmatched)))
    blocks.append(Image(section.curves, "curves"))
    if section.batch:
        blocks.append(Image(section.batch, "batch size"))
    else:
        blocks.append(Paragraph(f"Batch-size plot skipped: {section.batch_note}", kind="aside"))
    if section.reference_note:
        blocks.append(Paragraph(section.reference_note, kind="note"))
    return blocks + _evidence_blocks(section)


PAIRED_HEADER = ("S3", "compared with", "seeds paired", "mean difference (points)", "95% interval", "verdict")
PAIRED_NOTE = ("Test accuracy at the p chosen on validation; S3 minus the other method, paired by seed "
               "(same seed: same data order and initialisation), t-interval over the seeds' differences. "
               "An interval that covers 0 is \"no measurable difference\". Each side is its configuration "
               "best on validation; the no-Selection ablation is compared at the same χ.")
CURVE_HEADER = ("configuration", "p", "seeds", "test acc (%)", "minus p = 1 (points)", "95% interval", "verdict")
CURVE_NOTE = ("Test accuracy at each keep-ratio p, mean ± std over seeds, and its difference from the same "
              "trials at p = 1, paired by seed (t-interval). An inverted U is an intermediate p measurably "
              "above p = 1; an interval that covers 0 is \"no measurable difference\".")
EXPERT_HEATMAP_NOTE = ("Expert usage per class on the test split, one seed (the lowest with the arrays): "
                       "rows are the no-Selection ablation's model (= S3 before Selection), S3 after Selection "
                       "at p = 1, and the pairs S3 kept at its chosen p; columns are modality x layer. Expert "
                       "e of one modality and expert e of the other are different parameters.")
EXPERT_HEADER = ("metric (experts/...)", "χ", "S3 (after Selection)", "s3 without Stage 2 (= before Selection)")
EXPERT_NOTE = ("Expert analysis of each trial's model on the test split (s3core.expert_trial), mean ± std over "
               "seeds (n). dsc: Jensen-Shannon divergence (bits, 0 = identical) between the two modalities' "
               "expert usage per class, at p = 1; dsc_at_p: among the pairs kept at the trial's chosen p. "
               "event_share(_at_p): share of routing pairs on the steps that carry the relevant factors "
               "(synthetic 'localized'), at p = 1 and at p. r2/<factor>/.../max: the best expert's R² of its "
               "routing weight on that factor (linear + square terms; chance ≈ regressors / n).")


def _interval(row: dict) -> str:
    if row["n"] < 2 or math.isnan(row["low"]):
        return "–"
    return f"[{row['low']:+.2f}, {row['high']:+.2f}]"


def _mean_cell(value) -> str:
    if not value:
        return "–"
    mean, std, n = value
    return f"{fmt(mean, std, 3)} ({n})"


def _curve_cells(row: dict) -> tuple:
    head = (row["label"], f"{row['keep_ratio']:g}", str(row["n"]), fmt(row["mean"], row["std"]))
    if row["diff"] is None:
        return head + ("–", "–", "reference" if row["keep_ratio"] == 1.0 else "–")
    return head + (f"{row['diff']:+.2f}", _interval(row), row["verdict"])


def _evidence_blocks(section: BenchmarkSection) -> list:
    blocks = []
    if section.paired:
        blocks += [Heading("Paired differences over seeds", 3), Paragraph(PAIRED_NOTE),
                   Table(PAIRED_HEADER, tuple((r["s3"], r["other"], str(r["n"]), f"{r['mean']:+.2f}", _interval(r),
                                               r["verdict"]) for r in section.paired))]
    if section.curve_rows:
        blocks += [Heading("Accuracy against p, paired with p = 1", 3), Paragraph(CURVE_NOTE),
                   Table(CURVE_HEADER, tuple(_curve_cells(r) for r in section.curve_rows))]
    if section.frontier:
        blocks += [Heading("Accuracy vs compute", 3), Image(section.frontier, "accuracy vs compute")]
    if section.experts or section.expert_rows:
        blocks.append(Heading("Expert analysis", 3))
    if section.experts:
        blocks.append(Paragraph(EXPERT_HEATMAP_NOTE, kind="aside"))
        blocks += [Image(name, "expert usage per class") for name in section.experts]
    if section.expert_rows:
        # S3's column and its ablation's (EXPERT_HEADER): the rows are keyed by method name
        primary, ablation = primary_method(), next(iter(methods_with_role("ablation")), None)
        blocks += [Paragraph(EXPERT_NOTE),
                   Table(EXPERT_HEADER, tuple((r["key"], str(r["chi"]), _mean_cell(r.get(primary)),
                                               _mean_cell(r.get(ablation))) for r in section.expert_rows))]
    if section.diag_rows or section.entropy:
        blocks += [Heading("Can pruning act? (diagnostics)", 3), Paragraph(diag.NOTE)]
        if section.diag_rows:
            blocks.append(Table(diag.HEADER, tuple(diag.table_cells(r) for r in section.diag_rows)))
        if section.entropy:
            blocks.append(Image(section.entropy, "routing entropy over Selection's epochs"))
    return blocks


def build_document(*, tracking_uri: str, experiments: list[str], parent_run_id: str | None,
                   counts: dict[str, int], notes: list[str], sections: list[BenchmarkSection],
                   failed: list[dict]) -> Document:
    """The whole report as one Document.

    Args:
        counts: trial runs per status; notes: warnings shown at the top.
        failed: one dict per FAILED trial (run_id, run_name, method, chi, batch_size, seed,
            failure_reason).
    """
    facts = [("tracking URI: ", Code(tracking_uri)),
             ("experiments: ", *sum(((", " if i else "", Code(n)) for i, n in enumerate(experiments)), ()))]
    if parent_run_id:
        facts.append(("parent run: ", Code(parent_run_id)))
    facts.append("trials: " + ", ".join(f"{v} {k.lower()}" for k, v in counts.items()))
    blocks = [Bullets(tuple(facts)), Paragraph(PROTOCOL)]
    blocks += [Paragraph(note, kind="note") for note in notes]
    for section in sections:
        blocks += _benchmark_blocks(section)
    blocks.append(Heading("Failed trials"))
    blocks.append(Table(FAILED_HEADER, tuple(_failed_cells(f) for f in failed)) if failed else Paragraph("None."))
    return Document("S3 report", blocks)
