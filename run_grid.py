#!/usr/bin/env python
"""Run the S3 grid: `python run_grid.py` (local defaults), or on a Ray cluster from your laptop
`ray submit clusters/gpu.yaml run_grid.py -- --preset paper ...` (docs/CLUSTER.md).
`python run_grid.py --help` lists every flag. The project must be installed (pip install -e .).

`ray submit` copies this one file to the head and runs it with the `python` of a login shell
there, which is not the project's venv (the cluster files keep the venv out of the shells). On a
head set up by clusters/gpu.yaml or clusters/local.yaml (it has ~/s3_cluster/env.sh), a copy of
this file that is not in a checkout, or a python that cannot import the project, hands the same
arguments to ~/s3/clusters/run_grid.sh: the venv, RAY_ADDRESS=auto and the head's MLflow server.
Nothing here depends on where the copy was put."""
import os
import sys
from pathlib import Path

CLUSTER_ENV = Path("s3_cluster", "env.sh")          # under $HOME: written by the cluster files' setup
CLUSTER_RUNNER = Path("s3", "clusters", "run_grid.sh")   # under $HOME: the checkout synced by ray up
HANDED_OVER = "S3_RUN_GRID_ON_HEAD"                  # set by the hand-over: never hand over twice


def cluster_command(argv, script, home, environ, importable: bool):
    """The command that runs this grid in a cluster head's environment, or None to run it here.

    Args:
        argv: the grid's arguments (sys.argv[1:]).
        script: this file's path.
        home: the home folder ($HOME).
        environ: the environment (os.environ).
        importable: whether this python can import the orchestrator.
    """
    if environ.get(HANDED_OVER):
        return None
    env_file, runner = Path(home, CLUSTER_ENV), Path(home, CLUSTER_RUNNER)
    if not (env_file.is_file() and runner.is_file()):
        return None
    in_checkout = (Path(script).resolve().parent / "orchestrator" / "cli.py").is_file()
    if in_checkout and importable:
        return None
    return ["bash", str(runner), *argv]


def _import_main():
    try:
        from orchestrator.cli import main
    except ImportError as err:
        return None, err
    return main, None


if __name__ == "__main__":
    main, error = _import_main()
    command = cluster_command(sys.argv[1:], __file__, Path.home(), os.environ, importable=main is not None)
    if command is not None:
        sys.stdout.flush()
        os.execvpe(command[0], command, {**os.environ, HANDED_OVER: "1"})
    if main is None:
        sys.exit(f"error: cannot import the orchestrator ({error}); install the project on this machine "
                 "(pip install -c constraints.txt -e <checkout>), or run this on a head set up by "
                 "clusters/gpu.yaml or clusters/local.yaml (ray up), where it finds ~/s3_cluster/env.sh")
    sys.exit(main())
