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
from dataclasses import dataclass

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
