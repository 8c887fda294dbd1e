"""The paper's reported numbers, as data, for the report to set beside ours.

Source: docs/S3_METHOD.md, section "Numbers the paper reports" (Choi & Kwak, ICML 2026,
arXiv 2605.03348): linear-probe accuracy in percent. Only numbers stated there are listed;
MUStARD's were not extracted, so it has none. The paper quotes the best p (chosen on test, as
far as we know); our report chooses p on validation, so expect ours to sit a little lower.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

# kind: what the number is.
BEST = "best"            # S3's best accuracy over p (the paper's headline)
NO_PRUNE = "no_prune"    # p = 1.0, Stage 3 skipped
BASELINE = "baseline"    # a dense/contrastive baseline, not chi-specific


@dataclass(frozen=True)
class PaperNumber:
    """One accuracy the paper reports.

    Args:
        method: one of orchestrator.mlflow_layout.METHODS, or "infomax" (FactorCL,
            DisentangledSSL: reference only, we do not run it).
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


# Keyed by normalised benchmark name (see normalise_benchmark).
PAPER_NUMBERS: dict[str, tuple[PaperNumber, ...]] = {
    "mosei": (
        PaperNumber("s3", BEST, 77.95, chi=8, keep_ratio=0.3, note="S3 best"),
        PaperNumber("s3", NO_PRUNE, 75.78, chi=8, keep_ratio=1.0, note="chi=8 without pruning"),
        PaperNumber("s3", BEST, 77.25, chi=2, keep_ratio=0.1, note="ablation: chi=2"),
        PaperNumber("s3", BEST, 77.18, chi=4, keep_ratio=0.1, note="ablation: chi=4"),
        PaperNumber("s3_no_select", BEST, 75.0, qualifier="<",
                    note="skipping Stage 2 scores below 75"),
        PaperNumber("clip", BASELINE, 74.5, qualifier="~", note="CLIP-style contrastive"),
        PaperNumber("infomax", BASELINE, 74.0, qualifier="range", accuracy_high=76.0,
                    note="InfoMax (FactorCL, DisentangledSSL)"),
    ),
    "mosi": (
        PaperNumber("s3", BEST, 66.13, chi=8, keep_ratio=0.6, note="S3 best"),
        PaperNumber("infomax", BASELINE, 63.0, qualifier="~", note="InfoMax"),
    ),
    "urfunny": (
        PaperNumber("s3", BEST, 64.74, chi=4, keep_ratio=0.4, note="S3 best"),
        PaperNumber("infomax", BASELINE, 63.0, qualifier="~", note="InfoMax"),
    ),
    "mustard": (),  # not extracted
}

PAPER_BATCH_SIZES = (64, 128, 256, 512)   # "the curves' shape held across batch sizes 64-512"
PAPER_CHI = (2, 4, 8)


def normalise_benchmark(name: str) -> str:
    """'UR-FUNNY', 'ur_funny', 'urfunny', 'urfunny [my-experiment]' -> 'urfunny'."""
    return re.sub(r"[^a-z0-9]", "", name.split(" [", 1)[0].lower())


def paper_numbers_for(benchmark: str) -> tuple[PaperNumber, ...]:
    return PAPER_NUMBERS.get(normalise_benchmark(benchmark), ())


def paper_number(benchmark: str, method: str, chi: int | None, kind: str) -> PaperNumber | None:
    """The paper's number for one (method, chi) row of our table, or None.

    A baseline number (chi None) matches any chi; kind BEST also matches BASELINE, since a
    baseline's only number is its best.
    """
    kinds = {kind, BASELINE} if kind == BEST else {kind}
    for number in paper_numbers_for(benchmark):
        if number.method == method and number.kind in kinds and number.chi in (None, chi):
            return number
    return None
