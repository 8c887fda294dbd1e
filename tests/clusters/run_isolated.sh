#!/usr/bin/env bash
# Run a command (the autoscaling tests) where `ray stop --force` can only stop its own Ray
# processes: a new PID namespace (ray stop sees only the processes started inside), a private
# /tmp/ray (the new cluster's address file does not redirect other users' `ray.init()`), and a
# new network namespace (its head's port 6379 and dashboard's 8265 clash with nobody's).
# Needs root. The command gets S3_ALLOW_RAY_STOP=1.
#
#   tests/clusters/run_isolated.sh python -m pytest tests/clusters -m slow -k autoscaling
set -euo pipefail
if [ -z "${S3_ISOLATED:-}" ]; then
  exec unshare --pid --fork --mount-proc --net env S3_ISOLATED=1 S3_ALLOW_RAY_STOP=1 bash "$0" "$@"
fi
ip link set lo up
mkdir -p /tmp/ray
private=$(mktemp -d /tmp/ray-isolated.XXXXXX)
mount --bind "$private" /tmp/ray
set +e
"$@"
rc=$?
set -e
umount /tmp/ray
rm -rf "$private"
exit "$rc"
