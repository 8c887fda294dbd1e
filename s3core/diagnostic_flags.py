"""When a trial's diagnostics (s3core.diagnostics) say Stage 3's pruning cannot act. Torch-free,
so the report reads it without importing the library's numerics."""
from __future__ import annotations

DIAG_PREFIX = "diag/"
MOE_SHARE_FLOOR = 0.2               # below this median share, pruning barely moves a token
LOCAL_ENTROPY_CEILING = 0.9         # above this, the router's scores barely rank pairs


def cannot_act(metrics: dict) -> list[str]:
    """Why pruning cannot act on a model, from its diagnostics (empty: no flag): a median MoE
    share below MOE_SHARE_FLOOR or a local entropy above LOCAL_ENTROPY_CEILING."""
    reasons = []
    share = metrics.get(f"{DIAG_PREFIX}moe_share")
    ent = metrics.get(f"{DIAG_PREFIX}local_entropy")
    if share is not None and share < MOE_SHARE_FLOOR:
        reasons.append(f"MoE share {share:.2f} < {MOE_SHARE_FLOOR}")
    if ent is not None and ent > LOCAL_ENTROPY_CEILING:
        reasons.append(f"local entropy {ent:.2f} > {LOCAL_ENTROPY_CEILING}")
    return reasons


__all__ = ["DIAG_PREFIX", "MOE_SHARE_FLOOR", "LOCAL_ENTROPY_CEILING", "cannot_act"]
