"""Benchmarks for s3core: `python -m bench [--quick] [--out bench/RESULTS.md] [--only SECTION]`.

Sections: moe (MoE FFN vs dense FFN), pruning (inference time vs keep-ratio), data (pickle vs
Arrow cache), orchestration (pending). Timings are interleaved and reported as ratios of medians
measured in the same run; see bench/RESULTS.md.
"""
from .run import PROFILES, SECTIONS, main, run_benchmarks

__all__ = ["PROFILES", "SECTIONS", "main", "run_benchmarks"]
