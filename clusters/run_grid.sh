#!/usr/bin/env bash
# run_grid.py on a cluster head, in the environment the cluster file's setup wrote to
# ~/s3_cluster/env.sh: the project's venv first on PATH, RAY_ADDRESS=auto (join this cluster) and
# MLFLOW_TRACKING_URI (the head's MLflow server). Only this script reads that file: nothing of the
# cluster leaks into other shells on the machine. Arguments go to run_grid.py unchanged.
#
#   ray submit clusters/gpu.yaml run_grid.py -- --preset paper --benchmark mosei   (its copy hands over here)
#   ray exec clusters/gpu.yaml --tmux 'bash ~/s3/clusters/run_grid.sh --preset paper --benchmark mosei'
set -euo pipefail
env_file="$HOME/s3_cluster/env.sh"
if [ ! -f "$env_file" ]; then
  echo "error: $env_file is missing: run this on a head set up by clusters/gpu.yaml or clusters/local.yaml (ray up)" >&2
  exit 2
fi
. "$env_file"
exec python "$HOME/s3/run_grid.py" "$@"
