#!/usr/bin/env bash
# The SSH path of clusters/local.yaml, run by tests/clusters/test_ssh_path.py in a PID and mount
# namespace of its own (unshare --pid --fork --mount-proc): an SSH server on 127.0.0.1, then the
# user's `ray` commands against it. The `ray stop` that `ray up` and `ray down` run on the head
# sees, and stops, only the processes of this namespace; when this script (the namespace's first
# process) exits, whatever is left in it dies with it. /tmp/ray is private here, so the head's Ray
# session redirects nobody's `ray.init("auto")`.
#
#   ssh_path.sh WORK CONFIG REPO -- GRID ARGS...
# WORK holds sshd_config and gets sshd.log, one STEP.out per step and steps.tsv (step, exit
# status, milliseconds); CONFIG is the test's copy of clusters/local.yaml; REPO the checkout `ray up`
# syncs (its "." file mount).
set -uo pipefail
work=$1 config=$2 repo=$3
shift 4
mkdir -p /tmp/ray /run/sshd
private=$(mktemp -d /tmp/ray-ssh-path.XXXXXX)
mount --bind "$private" /tmp/ray || exit 3
/usr/sbin/sshd -D -e -f "$work/sshd_config" 2> "$work/sshd.log" &
sshd=$!
port=$(sed -n 's/^Port //p' "$work/sshd_config")
for _ in $(seq 100); do (echo > "/dev/tcp/127.0.0.1/$port") 2> /dev/null && break; sleep 0.1; done

step() {   # step NAME COMMAND...: run it from the checkout, record its status and wall time
  local name=$1 start rc
  shift
  start=$(date +%s%N)
  (cd "$repo" && "$@") > "$work/$name.out" 2>&1 < /dev/null
  rc=$?
  printf '%s\t%s\t%s\n' "$name" "$rc" "$(( ($(date +%s%N) - start) / 1000000 ))" >> "$work/steps.tsv"
  return "$rc"
}

if step up ray up -y "$config"; then
  step submit ray submit "$config" run_grid.py -- "$@"
  step report ray exec "$config" ". ~/s3_cluster/env.sh && python -m orchestrator.report --out $work/report"
  step runs ray exec "$config" ". ~/s3_cluster/env.sh && python $work/runs.py"
fi
step down ray down -y "$config"
kill "$sshd"
wait "$sshd" 2> /dev/null
umount /tmp/ray
rm -rf "$private"
exit 0
