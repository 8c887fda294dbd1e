"""Section 4: orchestration overhead. PENDING: needs the orchestrator.

The lead fills `bench_orchestration` once the orchestrator exists (e.g. time of a Tune/Ray run
of N trials vs the same trials run in-process, Ray start-up, per-trial overhead). Until then the
report prints a placeholder and no figures.
"""
from __future__ import annotations

PENDING = "pending: needs the orchestrator"


def bench_orchestration(quick: bool = False) -> dict:
    """Measure the orchestration overhead. Not implemented yet: returns {"pending": PENDING}.

    Return a dict with "rows": [{"what": str, "seconds": float, "ratio": float | None}] and
    "notes": [str] when implemented; report.py prints it as a table.
    """
    return {"pending": PENDING}
