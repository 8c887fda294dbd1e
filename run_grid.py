#!/usr/bin/env python
"""Run the S3 grid: `python run_grid.py` (local defaults) or
`ray submit clusters/gpu.yaml run_grid.py -- --preset paper --benchmark mosei --data-dir ...`.
`python run_grid.py --help` lists every flag. The project must be installed (pip install -e .)."""
import sys

try:
    from orchestrator.cli import main
except ImportError as err:  # ray submit copies only this file: the node must have the project installed
    sys.exit(f"error: cannot import the orchestrator ({err}); install the project on this machine: "
             "pip install -e <repo>")

if __name__ == "__main__":
    sys.exit(main())
