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
        method: a name of s3core.methods, or "infomax" (the S3 paper's InfoMax row: FactorCL,
            DisentangledSSL), or "simclr" (FactorCL's SimCLR row: reference only, we do not run it).
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
    source: str = "S3 paper"     # whose table the number is from (issue 21: FactorCL's own figures)

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


# ---- issue 21: FactorCL's published linear-probe accuracies (percent), for the InfoMax baselines' rows.
# Source: the FactorCL paper's MultiBench table (Liang, Deng, Ma, Zou, Morency, Salakhutdinov,
# "Factorized Contrastive Learning: Going Beyond Multi-view Redundancy", NeurIPS 2023,
# arXiv:2306.05268), rows FactorCL-SSL and SimCLR, as issue 21 quotes them; a logistic-regression probe
# on the concatenated embeddings (their notebook: LogisticRegression(max_iter=200), our probe="factorcl").
# The figures are not in their repository (pliang279/FactorCL 0f9f740): its
# Multibench/multibench_example.ipynb prints single runs only (FactorCL-SSL: MOSI 54.08, UR-FUNNY
# 59.64, MUStARD 60.14; no MOSEI), so these are quoted from the paper, not re-measured.
FACTORCL_SOURCE = "FactorCL paper (Liang et al., NeurIPS 2023, arXiv:2306.05268), MultiBench table"
FACTORCL_PUBLISHED: dict[str, tuple[PaperNumber, ...]] = {
    name: (PaperNumber("factorcl", BASELINE, ssl, note="FactorCL-SSL, as FactorCL's paper reports it",
                       source=FACTORCL_SOURCE),
           PaperNumber("simclr", BASELINE, simclr, note="SimCLR, as FactorCL's paper reports it",
                       source=FACTORCL_SOURCE))
    for name, ssl, simclr in (("mosei", 74.88, 71.03), ("mosi", 52.91, 46.21), ("urfunny", 60.50, 50.09),
                              ("mustard", 55.80, 53.48))
}
# ---- end issue 21

__all__ = ["PaperNumber", "BEST", "NO_PRUNE", "BASELINE", "FACTORCL_SOURCE", "FACTORCL_PUBLISHED"]
