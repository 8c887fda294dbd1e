"""A number a paper reports for a benchmark, as data: the dataset registry (s3core.data.registry)
lists each benchmark's, and the report (orchestrator.paper_numbers) sets them beside ours."""
from __future__ import annotations

from dataclasses import dataclass

# kind: what the number is.
BEST = "best"            # S3's best accuracy over p (the paper's headline)
NO_PRUNE = "no_prune"    # p = 1.0, Stage 3 skipped
BASELINE = "baseline"    # a dense/contrastive baseline, not chi-specific


@dataclass(frozen=True)
class PaperNumber:
    """One accuracy the paper reports.

    Args:
        method: a name of s3core.methods, or "infomax" (FactorCL, DisentangledSSL: reference
            only, we do not run it).
        chi: the granularity it was reported at; None when not chi-specific.
        keep_ratio: the p it was reported at; None when not stated.
        accuracy: percent.
        qualifier: "=" exact, "~" approximate, "<" an upper bound ("below 75"),
            "range" (accuracy .. accuracy_high).
    """

    method: str
    kind: str
    accuracy: float
    chi: int | None = None
    keep_ratio: float | None = None
    qualifier: str = "="
    accuracy_high: float | None = None
    note: str = ""

    def display(self) -> str:
        if self.qualifier == "range":
            value = f"{self.accuracy:g}-{self.accuracy_high:g}"
        elif self.qualifier == "=":
            value = f"{self.accuracy:.2f}"
        else:
            value = f"{self.qualifier}{self.accuracy:g}"
        if self.keep_ratio is not None and self.kind != NO_PRUNE:
            value += f" (p~{self.keep_ratio:g})"
        return value


__all__ = ["PaperNumber", "BEST", "NO_PRUNE", "BASELINE"]
