"""Mutation score per module from mutmut's result files (mutants/<path>.meta), and every mutant
not killed; also draws the seeded per-module sample that `scripts/mutation.sh` runs when
MUTATION_SAMPLE is set.

    python scripts/mutation_score.py                  # score of every mutant that ran
    python scripts/mutation_score.py --pick 30 --seed 0 > mutants/sample.txt
    python scripts/mutation_score.py --sample mutants/sample.txt

A mutant counts as killed when a test failed on it or it timed out (mutmut's "killed",
"timeout"); "survived" (every selected test passed) and "no tests" (no selected test calls the
mutated function) are the ones to kill or explain. Mutants of the functions in NOT_RESULTS are
left out: they change no number a trial produces (mutmut 3.8 has no per-function exclusion
that works from the config, and the sources are not annotated with pragmas)."""
from __future__ import annotations

import argparse
import json
import random
import sys
import tomllib
from pathlib import Path

from mutmut.stats import status_by_exit_code

KILLED = ("killed", "timeout", "segfault", "caught by type check")
NOT_RESULTS = {
    "orchestrator.tracking.x_curve_png": "the curve.png plot (the numbers are in curve.csv and the metrics)",
    "orchestrator.tracking.x_git_commit": "provenance: the commit tag",
    "orchestrator.tracking.x_code_version": "provenance: the code-version tag",
    "orchestrator.tracking.x_provenance_tags": "provenance: the commit tags",
    "orchestrator.tracking.x_log_dataset": "provenance: the dataset input's description",
    "orchestrator.tracking.x_failure_reason": "the text of a failed trial's reason",
    "orchestrator.tracking.x_error_details": "the path printed next to a failed trial",
}


def function_of(mutant: str) -> str:
    return mutant.split("__mutmut_")[0]


def module_results(root: Path) -> dict[str, dict[str, str]]:
    """module path -> {mutant name: status}, every module the config mutates, NOT_RESULTS left out."""
    modules = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["mutmut"]["only_mutate"]
    out = {}
    for module in modules:
        meta = root / "mutants" / (module + ".meta")
        if not meta.exists():
            raise SystemExit(f"error: {meta} is missing; run scripts/mutation.sh first")
        codes = json.loads(meta.read_text())["exit_code_by_key"]
        out[module] = {name: status_by_exit_code[code] for name, code in sorted(codes.items())
                       if function_of(name) not in NOT_RESULTS}
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pick", type=int, help="print a seeded sample of this many mutants per module and exit")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sample", help="score only the mutants named in this file (one a line)")
    parser.add_argument("--json", help="also write {module: {mutant: status}} to this file")
    args = parser.parse_args(argv)
    results = module_results(Path.cwd())
    if args.pick:
        rng = random.Random(args.seed)
        for statuses in results.values():
            names = sorted(statuses)
            print("\n".join(sorted(rng.sample(names, min(args.pick, len(names))))))
        return 0
    if args.sample:
        chosen = set(Path(args.sample).read_text().split())
        results = {m: {k: v for k, v in s.items() if k in chosen} for m, s in results.items()}
    total_k = total_n = 0
    print(f"{'module':32s} {'killed':>6s} / {'total':>5s}  score   survived  no-tests  other")
    for module, statuses in results.items():
        values = list(statuses.values())
        killed = sum(s in KILLED for s in values)
        survived, no_tests = values.count("survived"), values.count("no tests")
        other = len(values) - killed - survived - no_tests
        total_k, total_n = total_k + killed, total_n + len(values)
        score = f"{100 * killed / len(values):5.1f}%" if values else "  -  "
        print(f"{module:32s} {killed:6d} / {len(values):5d}  {score}  {survived:8d}  {no_tests:8d}  {other:5d}")
    print(f"{'all':32s} {total_k:6d} / {total_n:5d}  {100 * total_k / max(total_n, 1):5.1f}%")
    print("\nnot killed (see one with `python -m mutmut show NAME`):")
    for module, statuses in results.items():
        for name, status in statuses.items():
            if status not in KILLED:
                print(f"  {status:10s} {name}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
