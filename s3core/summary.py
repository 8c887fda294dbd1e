"""A curve's summary, computed once (MLflow stores it, the report reads it back). Torch-free: the
report and the MLflow layout name SUMMARY_METRICS without loading the model code."""
from __future__ import annotations

SUMMARY_METRICS = (
    "best_keep_ratio",      # p chosen on the validation split (ties: the larger p)
    "best_valid_acc",
    "test_acc_at_best",     # test accuracy at the validation-chosen p
    "test_f1_at_best",
    "test_acc_no_prune",    # p = 1.0
    "valid_acc_no_prune",
)


def choose_on_valid(curve: list[dict]) -> dict:
    """The curve point with the best validation accuracy (ties: the larger p, i.e. less pruning)."""
    return max(curve, key=lambda r: (r["valid_acc"], r["keep_ratio"]))


def summarize(curve: list[dict]) -> dict:
    """Summary scalars (SUMMARY_METRICS): p chosen on validation, and the unpruned point."""
    best = choose_on_valid(curve)
    out = {"best_keep_ratio": best["keep_ratio"], "best_valid_acc": best["valid_acc"],
           "test_acc_at_best": best["test_acc"], "test_f1_at_best": best["test_f1"]}
    full = [r for r in curve if r["keep_ratio"] == 1.0]
    if full:
        out["test_acc_no_prune"] = full[0]["test_acc"]
        out["valid_acc_no_prune"] = full[0]["valid_acc"]
    return out


__all__ = ["SUMMARY_METRICS", "choose_on_valid", "summarize"]
