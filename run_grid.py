#!/usr/bin/env python
"""Run the S3 grid: `python run_grid.py` (local defaults) or
`ray exec clusters/gpu.yaml --tmux 'bash ~/s3/clusters/run_grid.sh --preset paper ...'` (docs/CLUSTER.md).
`python run_grid.py --help` lists every flag. The project must be installed (pip install -e .)."""
import sys

try:
    from orchestrator.cli import main
except ImportError as err:  # the project must be installed where this runs (a cluster node: its setup commands)
    sys.exit(f"error: cannot import the orchestrator ({err}); install the project on this machine: "
             "pip install -e <repo>")

if __name__ == "__main__":
    sys.exit(main())
