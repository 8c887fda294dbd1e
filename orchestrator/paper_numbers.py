"""The paper's reported numbers, for the report to set beside ours: each benchmark's are in its
dataset registry entry (s3core.data.registry, which names their source: docs/S3_METHOD.md,
"Numbers the paper reports"). The paper quotes the best p (chosen on test, as far as we know);
our report chooses p on validation, so expect ours to sit a little lower.
"""
from __future__ import annotations

import re

from s3core.data.paper import BASELINE, BEST, NO_PRUNE, PaperNumber  # noqa: F401  (the kinds, named here)
from s3core.data.registry import DATASETS
from s3core.methods import METHODS

DEFAULT_SOURCE = PaperNumber.__dataclass_fields__["source"].default   # "S3 paper"
PAPER_BATCH_SIZES = (64, 128, 256, 512)   # "the curves' shape held across batch sizes 64-512"
PAPER_CHI = (2, 4, 8)


def normalise_benchmark(name: str) -> str:
    """'UR-FUNNY', 'ur_funny', 'urfunny', 'urfunny [my-experiment]' -> 'urfunny'."""
    return re.sub(r"[^a-z0-9]", "", name.split(" [", 1)[0].lower())


def paper_numbers_for(benchmark: str) -> tuple[PaperNumber, ...]:
    key = normalise_benchmark(benchmark)
    return next((d.paper for d in DATASETS.values() if normalise_benchmark(d.name) == key), ())


def paper_numbers_matching(benchmark: str, method: str, chi: int | None, kind: str) -> list[PaperNumber]:
    """Every published number for one (method, chi) row of our table, in the registry's order.

    A number matches the method's name or its registry family (the S3 paper's "infomax" row
    stands beside each InfoMax baseline); a baseline number (chi None) matches any chi; kind BEST
    also matches BASELINE, since a baseline's only number is its best.
    """
    kinds = {kind, BASELINE} if kind == BEST else {kind}
    known = METHODS.get(method)
    names = {method, known.family} - {""} if known else {method}
    return [n for n in paper_numbers_for(benchmark)
            if n.method in names and n.kind in kinds and n.chi in (None, chi)]


def paper_number(benchmark: str, method: str, chi: int | None, kind: str) -> PaperNumber | None:
    """The first of paper_numbers_matching, or None."""
    found = paper_numbers_matching(benchmark, method, chi, kind)
    return found[0] if found else None


def labelled(number: PaperNumber) -> str:
    """The number as the report shows it: its display, and its source when not the S3 paper."""
    if number.source == DEFAULT_SOURCE:
        return number.display()
    return f"{number.display()} [{number.source.split(' (', 1)[0]}]"
