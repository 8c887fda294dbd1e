#!/usr/bin/env bash
# Mutation testing of the modules whose mistakes would corrupt a result (pyproject.toml
# [tool.mutmut]; docs/RELIABILITY.md "Mutation testing"). Starts from a clean mutants/, runs
# mutmut with at most 2 worker processes, then prints the score per module and every survivor.
#   scripts/mutation.sh                      # every mutant
#   MUTATION_SAMPLE=30 scripts/mutation.sh   # a seeded sample of 30 mutants per module (MUTATION_SEED=0)
# Needs mutmut 3.8 (pip install -e ".[dev]"); PYTHON picks the interpreter (default: python).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python}"
CHILDREN="${MUTATION_CHILDREN:-2}"
# one torch thread per mutmut worker: the workers, not torch, use the cores
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
rm -rf mutants
start=$(date +%s)
if [ -n "${MUTATION_SAMPLE:-}" ]; then
  # 1. generate the mutants and map tests to functions (mutmut then stops: no mutant is named
  #    'none-yet'); 2. draw the sample; 3. run those mutants only
  mkdir mutants
  "$PY" -m mutmut run --max-children "$CHILDREN" 'none-yet' > mutants/setup.log 2>&1 || true
  [ -f mutants/mutmut-stats.json ] || { cat mutants/setup.log; echo "error: mutmut setup failed" >&2; exit 1; }
  "$PY" scripts/mutation_score.py --pick "$MUTATION_SAMPLE" --seed "${MUTATION_SEED:-0}" > mutants/sample.txt
  # shellcheck disable=SC2046
  "$PY" -m mutmut run --max-children "$CHILDREN" $(cat mutants/sample.txt) > mutants/run.log 2>&1
  tail -c 2000 mutants/run.log | tr '\r' '\n' | tail -n 4
  echo "wall time: $(( $(date +%s) - start )) s; load average now: $(cut -d' ' -f1-3 /proc/loadavg)"
  "$PY" scripts/mutation_score.py --sample mutants/sample.txt
else
  "$PY" -m mutmut run --max-children "$CHILDREN"
  echo "wall time: $(( $(date +%s) - start )) s; load average now: $(cut -d' ' -f1-3 /proc/loadavg)"
  "$PY" scripts/mutation_score.py
fi
