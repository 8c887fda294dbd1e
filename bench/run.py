"""Entry point: run the sections of a profile and write the Markdown report."""
from __future__ import annotations

import argparse
import datetime as dt
import os
import shlex
import sys
import time
from dataclasses import dataclass
from typing import Callable

from .common import load_average, machine_info
from .data_bench import bench_data
from .moe_bench import bench_moe_vs_dense, bench_pruning
from .orchestration import bench_orchestration
from .probe_bench import bench_probe
from .queue_bench import bench_queue
from .report import write_blocks, write_report
from .stage_reuse import bench_stage_reuse


@dataclass(frozen=True)
class Section:
    """One section of the report: run(profile, the profile's settings, tmp_root, log) -> its results.
    block: it writes its own block of RESULTS.md (between markers) and leaves the rest as it is,
    so it can be measured again alone without wiping the other sections' figures; a run without
    --only runs the block sections after the others (not in the tiny profile of the smoke test)."""

    run: Callable[[str, dict, str, Callable], dict]
    block: bool = False


# a new section is one entry here (plus its report block: bench/report.py)
SECTION_TABLE = {
    "moe": Section(lambda profile, cfg, tmp_root, log: bench_moe_vs_dense(**cfg["moe"])),
    "pruning": Section(lambda profile, cfg, tmp_root, log: bench_pruning(**cfg["pruning"])),
    "data": Section(lambda profile, cfg, tmp_root, log: bench_data(tmp_root=tmp_root, **cfg["data"])),
    "orchestration": Section(lambda profile, cfg, tmp_root, log: bench_orchestration(quick=profile != "full",
                                                                                      profile=profile)),
    "probe": Section(lambda profile, cfg, tmp_root, log: bench_probe(**cfg["probe"])),
    "stagecache": Section(lambda profile, cfg, tmp_root, log: bench_stage_reuse(profile, log=log), block=True),
    "queue": Section(lambda profile, cfg, tmp_root, log: bench_queue(profile, log=log), block=True),
}
SECTIONS = tuple(name for name, sec in SECTION_TABLE.items() if not sec.block)
BLOCK_SECTIONS = tuple(name for name, sec in SECTION_TABLE.items() if sec.block)
KEEP_RATIOS = (1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1)
MULTIBENCH = {"name": "MultiBench-like", "d_model": 128, "d_ff": 512, "tokens": 320 * 50, "seq": 50}
LARGE = {"name": "larger", "d_model": 256, "d_ff": 1024, "tokens": 640 * 50, "seq": 50}

PROFILES = {
    # seconds: for tests/bench/test_bench_smoke.py only
    "tiny": {"moe": dict(sizes=[{"name": "tiny", "d_model": 16, "d_ff": 32, "tokens": 128, "seq": 8}],
                         chis=(2, 8), rounds=2, loop_rounds=1, memory="one"),
             "pruning": dict(keep_ratios=(1.0, 0.5, 0.1), d_model=16, d_ff=32, chi=4, rho=2, tokens=128,
                             seq=8, input_dim=6, n_layers=1, rounds=2),
             "data": dict(total_samples=60, repeats=1, cache_repeats=1),
             "probe": dict(sizes=((200, 16),), rounds=1)},
    "quick": {"moe": dict(sizes=[MULTIBENCH], chis=(2, 4, 8), rounds=3, loop_rounds=2, memory="last"),
              "pruning": dict(keep_ratios=KEEP_RATIOS, d_model=128, d_ff=512, chi=8, rho=4, tokens=16000,
                              seq=50, input_dim=300, n_layers=2, rounds=3),
              "data": dict(total_samples=2000, repeats=1),
              "probe": dict(sizes=((2000, 128),), rounds=2)},
    "full": {"moe": dict(sizes=[MULTIBENCH, LARGE], chis=(2, 4, 8), rounds=7, loop_rounds=3, memory="all"),
             "pruning": dict(keep_ratios=KEEP_RATIOS, d_model=128, d_ff=512, chi=8, rho=4, tokens=16000,
                             seq=50, input_dim=300, n_layers=2, rounds=7),
             "data": dict(total_samples=22856, repeats=2),
             "probe": dict(sizes=((2000, 128), (16000, 256), (16000, 384)), rounds=3)},
}


def run_benchmarks(profile: str = "full", out: str = "bench/RESULTS.md", only=None, command: str | None = None,
                   tmp_root: str = "/tmp", log=print) -> dict:
    """Run the sections of `profile` (all, or those in `only`), write the report to `out`; return the results."""
    cfg = PROFILES[profile]
    only = tuple(only) if only else SECTIONS + (BLOCK_SECTIONS if profile != "tiny" else ())
    res = {"profile": profile, "command": command or "python -m bench", "sections_run": list(only),
           "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
           "machine": machine_info(), "load_start": load_average()}
    t0 = time.perf_counter()
    timings = {}
    for sec in SECTIONS + BLOCK_SECTIONS:
        if sec not in only:
            continue
        log(f"[bench] {sec} ...")
        s0 = time.perf_counter()
        res[sec] = SECTION_TABLE[sec].run(profile, cfg, tmp_root, log)
        timings[sec] = time.perf_counter() - s0
        log(f"[bench] {sec} done in {timings[sec]:.0f} s")
    res["section_seconds"] = timings
    res["total_seconds"] = time.perf_counter() - t0
    res["load_end"] = load_average()
    previous = open(out).read() if os.path.exists(out) else None
    if any(sec not in BLOCK_SECTIONS for sec in only):
        write_report(res, out, previous)
    write_blocks(res, out, previous)
    log(f"[bench] wrote {out} ({res['total_seconds']:.0f} s)")
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    ap.add_argument("--quick", action="store_true", help="smaller settings, < 2 minutes")
    ap.add_argument("--out", default=os.path.join("bench", "RESULTS.md"))
    ap.add_argument("--only", choices=SECTIONS + BLOCK_SECTIONS, action="append", help="run only this section (repeatable)")
    ap.add_argument("--profile", choices=tuple(PROFILES), help=argparse.SUPPRESS)  # 'tiny' for the smoke test
    ap.add_argument("--gpu", action="store_true", help="the GPU checks of issue 12.4 only (bench/gpu.py): "
                    "correctness of every dispatch on CUDA, MoE/dense with and without torch.compile, host syncs; "
                    "on a machine without CUDA the correctness part runs on the CPU and the rest is skipped")
    ap.add_argument("--tmp-root", default="/tmp", help="where the data section's temp dir goes")
    args = ap.parse_args(argv)
    if args.gpu:
        from .gpu import main as gpu_main   # the GPU checks only; their module is not a section here
        return gpu_main(["--out", args.out] + (["--quick"] if args.quick else []))
    profile = args.profile or ("quick" if args.quick else "full")
    argv = sys.argv[1:] if argv is None else list(argv)
    command = "python -m bench" + ("" if not argv else " " + shlex.join(argv))
    run_benchmarks(profile, args.out, args.only, command=command, tmp_root=args.tmp_root)
    return 0
