"""The users' SSH path end to end on this machine (slow): `ray up -y` on a copy of
clusters/local.yaml, `ray submit COPY run_grid.py -- --preset smoke`, the report read from the
head's MLflow server, `ray down -y`.

The head is this machine, reached through an SSH server of the test's own on 127.0.0.1 (a free
port, through `auth.ssh_proxy_command`: Ray's launcher has no SSH port setting). Server and `ray`
commands run in a PID and mount namespace of their own (tests/clusters/ssh_path.sh), so the `ray
stop` of `ray up` / `ray down` stops only this cluster: no S3_ALLOW_RAY_STOP needed. The copy
differs from clusters/local.yaml only in its name, key and ports (free ones for Ray's GCS,
dashboard and client server and for MLflow); its setup commands are the file's own.

It writes into root's home as the real file does (~/s3, ~/s3env, ...): it skips when any of
those exists already, removes them afterwards and puts ~/.bashrc back byte for byte."""
import json
import os
import pwd
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from orchestrator.console import plain

REPO = Path(__file__).resolve().parents[2]
# the home that sshd gives root (passwd's), which CI's $HOME need not be
HOME = Path(pwd.getpwuid(0).pw_dir)
# what the cluster files' setup, `ray up`, `ray submit` and the grid put in the head's home
LEFT_IN_HOME = ("s3", "s3env", "s3_mlflow", "s3_runs", "s3_cluster", "report", "run_grid.py")
TOOLS = {"sshd": "/usr/sbin/sshd", "rsync": "rsync", "tmux": "tmux", "unshare": "unshare"}

RUNS_PY = """
import json
from mlflow.tracking import MlflowClient
client = MlflowClient()
out = []
for exp in client.search_experiments():
    for run in client.search_runs([exp.experiment_id]):
        if "mlflow.parentRunId" not in run.data.tags:
            continue
        out.append({"name": run.info.run_name, "status": run.info.status,
                    "curve": sorted(a.path for a in client.list_artifacts(run.info.run_id, "curve")),
                    "stages": {k: v for k, v in run.data.tags.items() if k.startswith("s3.stage_cache.")}})
print("RUNS " + json.dumps(out))
"""

PROXY = """#!{python}
import os, socket, sys, threading
conn = socket.create_connection(("127.0.0.1", {port}))
def upstream():
    while data := os.read(0, 65536):
        conn.sendall(data)
    conn.shutdown(socket.SHUT_WR)
threading.Thread(target=upstream, daemon=True).start()
while data := conn.recv(65536):
    os.write(1, data)
"""


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def test_copy_config(tmp_path):
    """The copy changes names, key and ports only (fast: this is what the slow test relies on)."""
    original = yaml.safe_load((REPO / "clusters" / "local.yaml").read_text())
    copy = yaml.safe_load(write_test_config(tmp_path, [2201, 2202, 2203, 2204, 2205]).read_text())
    for key in ("setup_commands", "file_mounts", "rsync_exclude", "rsync_filter", "worker_setup_commands"):
        assert copy[key] == original[key], key
    text = json.dumps([copy["head_setup_commands"], copy["head_start_ray_commands"]])
    assert "5000" not in text and "6379" not in text and "2205" in text and "--port=2202" in text
    assert copy["auth"]["ssh_proxy_command"] == str(tmp_path / "proxy")
    assert "2201" in (tmp_path / "proxy").read_text()


def write_test_config(work: Path, ports: list[int]) -> Path:
    """clusters/local.yaml with this test's key, SSH proxy and free ports; returns its path."""
    ssh, gcs, dashboard, client, mlflow_port = ports
    config = yaml.safe_load((REPO / "clusters" / "local.yaml").read_text())
    config["cluster_name"] = f"s3-ssh-test-{os.getpid()}"
    proxy = work / "proxy"
    proxy.write_text(PROXY.format(python=sys.executable, port=ssh))
    proxy.chmod(0o755)
    config["auth"] = {"ssh_user": "root", "ssh_private_key": str(work / "key"), "ssh_proxy_command": str(proxy)}

    def ports_of(command: str) -> str:
        command = command.replace("--port=6379", f"--port={gcs} --dashboard-port={dashboard} "
                                                 f"--ray-client-server-port={client}")
        return re.sub(r"\b5000\b", str(mlflow_port), command)

    for key in ("head_setup_commands", "head_start_ray_commands"):
        config[key] = [ports_of(c) for c in config[key]]
    path = work / "local-test.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def write_sshd(work: Path, port: int) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(work / "key")], check=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(work / "host_key")], check=True)
    shutil.copy(work / "key.pub", work / "authorized_keys")
    (work / "sshd_config").write_text("\n".join([
        f"Port {port}", "ListenAddress 127.0.0.1", f"HostKey {work / 'host_key'}",
        f"PidFile {work / 'sshd.pid'}", f"AuthorizedKeysFile {work / 'authorized_keys'}",
        "PermitRootLogin prohibit-password", "PasswordAuthentication no", "KbdInteractiveAuthentication no",
        "UsePAM no", "StrictModes no", "PrintMotd no", ""]))


@pytest.mark.slow
def test_ray_up_submit_report_down_over_ssh(tmp_path):
    missing = [name for name, tool in TOOLS.items() if not shutil.which(tool)]
    if missing:
        pytest.skip(f"the SSH path needs {', '.join(missing)} (Debian: apt-get install -y openssh-server rsync "
                    "tmux; .ci/run installs them)")
    if os.geteuid() != 0:
        pytest.skip("the SSH path logs in as root (clusters/local.yaml's default) and needs unshare: run as root")
    probe = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", "sh", "-c",
                            'd=$(mktemp -d) && mount --bind "$d" "$d" && umount "$d" && rmdir "$d"'],
                           capture_output=True, text=True, timeout=60)
    if probe.returncode != 0:
        pytest.skip(f"cannot make a PID and mount namespace here (a container without CAP_SYS_ADMIN?): "
                    f"{probe.stderr.strip()[:200]}")
    there = [name for name in LEFT_IN_HOME if (HOME / name).exists()] + [p.name for p in HOME.glob("ray_bootstrap_*")]
    if there:
        pytest.skip(f"{', '.join('~/' + n for n in there)} already exist(s): this test would remove it afterwards")
    work = tmp_path
    ssh_port, *ray_ports = free_ports(5)
    write_sshd(work, ssh_port)
    config = write_test_config(work, [ssh_port, *ray_ports])
    (work / "runs.py").write_text(RUNS_PY)
    bashrc = HOME / ".bashrc"
    bashrc_before = bashrc.read_bytes() if bashrc.exists() else None
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "MLFLOW_"))}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    start = time.monotonic()
    try:
        proc = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", "bash",
                               str(REPO / "tests" / "clusters" / "ssh_path.sh"), str(work), str(config), str(REPO),
                               "--", "--preset", "smoke"],
                              env=env, capture_output=True, text=True, timeout=1500)
        wall = time.monotonic() - start
        steps = {name: (int(rc), int(ms) / 1000) for name, rc, ms in
                 (ln.split("\t") for ln in (work / "steps.tsv").read_text().splitlines())}
        # as a terminal shows it (bytes decoded, so a carriage return is not read as a new line)
        outputs = {name: plain((work / f"{name}.out").read_bytes().decode(errors="replace")) for name in steps}
        print(f"\nSSH path: {wall:.0f} s in all; " + ", ".join(f"{n} {s:.0f} s (exit {rc})"
                                                              for n, (rc, s) in steps.items()))
        print("---- ray submit ... run_grid.py -- --preset smoke ----\n" + outputs.get("submit", ""))
        assert proc.returncode == 0, proc.stderr
        failed = {n: outputs[n][-3000:] for n, (rc, _) in steps.items() if rc != 0}
        assert not failed and list(steps) == ["up", "submit", "report", "runs", "down"], \
            (failed or steps, (work / "sshd.log").read_text()[-2000:])
        submit = outputs["submit"]
        assert re.search(r"\[1/2\] done ", submit) and re.search(r"\[2/2\] done ", submit), submit[-3000:]
        assert "results [synthetic]" in submit
        assert f"MLflow UI: http://127.0.0.1:{ray_ports[-1]}/" in submit       # the head's server
        assert "View run" not in submit and "cannot import" not in submit
        # the report, built on the head from its MLflow server
        assert (work / "report" / "index.html").is_file()
        (line,) = [ln for ln in outputs["runs"].splitlines() if ln.startswith("RUNS ")]
        runs = json.loads(line[len("RUNS "):])
        assert len(runs) == 2 and {r["status"] for r in runs} == {"FINISHED"}, runs
        assert all("curve/curve.csv" in r["curve"] for r in runs), runs
        # ray down: the shim removed its ~/.bashrc line and ~/s3_cluster
        assert (bashrc.read_bytes() if bashrc.exists() else None) == bashrc_before
        assert not (HOME / "s3_cluster").exists()
    finally:
        # rm -rf: the venv is about 0.8 GB, shutil.rmtree took 2 min of it on a loaded machine
        left = [str(HOME / name) for name in LEFT_IN_HOME] + [str(p) for p in HOME.glob("ray_bootstrap_*")]
        subprocess.run(["rm", "-rf", "--", *left], check=False, timeout=600)
        if bashrc_before is None:
            bashrc.unlink(missing_ok=True)
        elif bashrc.read_bytes() != bashrc_before:
            bashrc.write_bytes(bashrc_before)
