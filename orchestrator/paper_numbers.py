"""The paper's reported numbers, for the report to set beside ours: each benchmark's are in its
dataset registry entry (s3core.data.registry, which names their source: docs/S3_METHOD.md,
"Numbers the paper reports"). The paper quotes the best p (chosen on test, as far as we know);
our report chooses p on validation, so expect ours to sit a little lower.
"""
from __future__ import annotations

import re

from s3core.data.paper import BASELINE, BEST, NO_PRUNE, PaperNumber  # noqa: F401  (the kinds, named here)
from s3core.data.registry import DATASETS

PAPER_BATCH_SIZES = (64, 128, 256, 512)   # "the curves' shape held across batch sizes 64-512"
PAPER_CHI = (2, 4, 8)


def normalise_benchmark(name: str) -> str:
    """'UR-FUNNY', 'ur_funny', 'urfunny', 'urfunny [my-experiment]' -> 'urfunny'."""
    return re.sub(r"[^a-z0-9]", "", name.split(" [", 1)[0].lower())


def paper_numbers_for(benchmark: str) -> tuple[PaperNumber, ...]:
    key = normalise_benchmark(benchmark)
    return next((d.paper for d in DATASETS.values() if normalise_benchmark(d.name) == key), ())


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
