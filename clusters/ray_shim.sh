#!/usr/bin/env bash
# `ray` on the head's PATH while the cluster is up, and nothing after `ray down`.
#
# `ray down` runs `ray stop` on the head in a login shell, so `ray` must be on that shell's PATH.
# head_setup_commands install this file as ~/s3_cluster/bin/ray and add one tagged line to
# ~/.bashrc that puts ~/s3_cluster/bin on PATH (`ray`, and a `python` that is the system python3
# where the machine has none: never the venv's python).
# `ray stop` through this shim also stops the head's MLflow server, then removes the tagged line
# and ~/s3_cluster: after `ray down` the machine's shells are as they were before `ray up`.
# Every other command goes to the venv's ray unchanged.
set -u
real_ray="$HOME/s3env/bin/ray"
if [ "${1:-}" != stop ]; then
  exec "$real_ray" "$@"
fi
pid_file="$HOME/s3_mlflow/server.pid"
if [ -f "$pid_file" ]; then
  # the server was started with setsid: its process group holds the server and its workers
  kill -- "-$(cat "$pid_file")" 2> /dev/null || true
  rm -f "$pid_file"
fi
"$real_ray" "$@"
rc=$?
sed -i '/# s3-cluster: removed by ray down$/d' "$HOME/.bashrc"
rm -rf "$HOME/s3_cluster"
exit "$rc"
