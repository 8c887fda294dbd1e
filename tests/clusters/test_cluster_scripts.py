"""What the launcher files' setup leaves in a shell, run for real in a sandbox HOME.

The head's setup commands (from clusters/gpu.yaml and clusters/local.yaml) run with HOME set to
a temporary folder, with a fake venv whose `ray` and `python` record how they were called. Then
shells are started the way Ray's launcher starts them (`bash --login -c -i 'source ~/.bashrc; ...'`):
the project's environment must reach run_grid.sh only, `ray` must be on PATH for `ray down`, and
`ray stop` (what `ray down` runs) must stop MLflow and remove everything setup added.
"""
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CLUSTERS = REPO / "clusters"
LAUNCHER_FILES = ["gpu.yaml", "local.yaml"]
USER_BASHRC = "# the user's own settings\nexport EDITOR=vi\n"

FAKE_RAY = """#!/usr/bin/env bash
echo "$@" >> "$HOME/ray_calls"
"""
FAKE_PYTHON = """#!/usr/bin/env bash
echo "python $*"
echo "RAY_ADDRESS=${RAY_ADDRESS:-} MLFLOW_TRACKING_URI=${MLFLOW_TRACKING_URI:-}"
"""


def sandbox_env(home: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI")}
    env.update(HOME=str(home), PATH="/usr/local/bin:/usr/bin:/bin")
    return env


def launcher_shell(home: Path, command: str) -> subprocess.CompletedProcess:
    """A command as Ray's launcher runs it on a node (command_runner._with_interactive)."""
    wrapped = f"source ~/.bashrc; export OMP_NUM_THREADS=1 PYTHONWARNINGS=ignore && ({command})"
    return subprocess.run(["bash", "--login", "-c", "-i", wrapped], cwd=home, env=sandbox_env(home),
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)


def write_exe(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o755)


def set_up_head(tmp_path: Path, name: str) -> Path:
    """A HOME after `ray up`'s setup of the head: the checkout at ~/s3, a fake venv, then every
    setup and head setup command of the file except installs (uv, pip, apt)."""
    home = tmp_path / "home"
    home.mkdir()
    (home / ".bashrc").write_text(USER_BASHRC)
    (home / "s3").symlink_to(REPO)
    write_exe(home / "s3env" / "bin" / "ray", FAKE_RAY)
    write_exe(home / "s3env" / "bin" / "python", FAKE_PYTHON)
    config = yaml.safe_load((CLUSTERS / name).read_text())
    for command in config["setup_commands"] + config["head_setup_commands"]:
        if any(word in command for word in ("uv", "pip", "apt-get", "venv")):
            continue
        for _ in range(2):  # `ray up` again on a running cluster: setup must be idempotent
            done = subprocess.run(["bash", "-c", command], env=sandbox_env(home), capture_output=True, text=True)
            assert done.returncode == 0, (command, done.stderr)
    return home


@pytest.mark.parametrize("name", LAUNCHER_FILES)
def test_setup_leaks_no_environment_into_shells(tmp_path, name):
    home = set_up_head(tmp_path, name)
    shell = launcher_shell(home, 'echo "[$RAY_ADDRESS][$MLFLOW_TRACKING_URI]"; command -v ray; command -v python || true')
    assert shell.returncode == 0, shell.stderr
    lines = shell.stdout.splitlines()
    assert lines[0] == "[][]", "RAY_ADDRESS / MLFLOW_TRACKING_URI leaked into every shell"
    assert lines[1] == f"{home}/s3_cluster/bin/ray", "`ray down` needs ray on the login shell's PATH"
    assert "s3env" not in shell.stdout.split("\n", 2)[2], "the venv's python leaked onto PATH"
    bashrc = (home / ".bashrc").read_text()
    assert bashrc.startswith(USER_BASHRC) and bashrc.count("\n") == USER_BASHRC.count("\n") + 1


@pytest.mark.parametrize("name", LAUNCHER_FILES)
def test_run_grid_sh_gets_the_cluster_environment(tmp_path, name):
    home = set_up_head(tmp_path, name)
    ran = subprocess.run(["bash", str(home / "s3" / "clusters" / "run_grid.sh"), "--preset", "smoke"],
                         env=sandbox_env(home), capture_output=True, text=True, timeout=60)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.splitlines() == [f"python {home}/s3/run_grid.py --preset smoke",
                                       "RAY_ADDRESS=auto MLFLOW_TRACKING_URI=http://127.0.0.1:5000"]


@pytest.mark.parametrize("name", LAUNCHER_FILES)
def test_ray_submit_runs_the_grid_in_the_cluster_environment(tmp_path, name):
    """`ray submit CLUSTER.yaml run_grid.py -- ARGS` copies the script to ~/ and runs `python
    ~/run_grid.py ARGS` in a launcher shell: the login shell's python (here no `python` on PATH
    but /usr/bin/python3: setup's fallback) hands over to run_grid.sh, which runs the venv's."""
    home = set_up_head(tmp_path, name)
    (home / "run_grid.py").write_text((REPO / "run_grid.py").read_text())
    shell = launcher_shell(home, "python ~/run_grid.py --preset smoke --seeds 0 1")
    assert shell.returncode == 0, shell.stderr
    assert shell.stdout.splitlines()[-2:] == [f"python {home}/s3/run_grid.py --preset smoke --seeds 0 1",
                                              "RAY_ADDRESS=auto MLFLOW_TRACKING_URI=http://127.0.0.1:5000"]
    python = launcher_shell(home, "command -v python; python -c 'import sys; print(sys.prefix)'")
    assert "s3env" not in python.stdout, "the venv's python leaked onto PATH"


def test_run_grid_sh_without_setup_is_one_line_error(tmp_path):
    ran = subprocess.run(["bash", str(CLUSTERS / "run_grid.sh"), "--preset", "smoke"],
                         env=sandbox_env(tmp_path), capture_output=True, text=True, timeout=60)
    assert ran.returncode == 2 and ran.stdout == ""
    assert len(ran.stderr.splitlines()) == 1 and "ray up" in ran.stderr


@pytest.mark.parametrize("name", LAUNCHER_FILES)
def test_ray_down_stops_mlflow_and_removes_what_setup_added(tmp_path, name):
    home = set_up_head(tmp_path, name)
    # a stand-in for the MLflow server, started like it (setsid: its own process group)
    server = subprocess.Popen(["sleep", "300"], start_new_session=True)
    (home / "s3_mlflow" / "server.pid").write_text(f"{server.pid}\n")
    try:
        passed_on = launcher_shell(home, "ray status")
        assert passed_on.returncode == 0, passed_on.stderr
        assert (home / "ray_calls").read_text() == "status\n" and server.poll() is None
        assert (home / "s3_cluster" / "bin" / "ray").exists(), "only `ray stop` cleans up"

        down = launcher_shell(home, "ray stop")     # what `ray down` runs on the head
        assert down.returncode == 0, down.stderr
        assert server.wait(timeout=10) == -signal.SIGTERM, "the MLflow server was not stopped"
    finally:
        if server.poll() is None:
            server.kill()
    assert (home / "ray_calls").read_text() == "status\nstop\n"
    assert (home / ".bashrc").read_text() == USER_BASHRC
    assert not (home / "s3_cluster").exists() and not (home / "s3_mlflow" / "server.pid").exists()
    assert (home / "s3_mlflow" / "artifacts").is_dir(), "the MLflow store is kept"
    after = launcher_shell(home, "command -v ray || echo none")
    assert after.stdout.strip().splitlines()[-1] == "none"


def test_ray_stop_passes_the_real_exit_status(tmp_path):
    home = tmp_path / "home"
    write_exe(home / "s3env" / "bin" / "ray", "#!/usr/bin/env bash\nexit 3\n")
    (home / ".bashrc").write_text(USER_BASHRC)
    shim = home / "s3_cluster" / "bin" / "ray"
    write_exe(shim, (CLUSTERS / "ray_shim.sh").read_text())
    t0 = time.monotonic()
    ran = subprocess.run(["bash", str(shim), "stop"], env=sandbox_env(home), capture_output=True, text=True)
    assert ran.returncode == 3 and time.monotonic() - t0 < 30
    assert not shim.exists()


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def other_addresses() -> list[str]:
    """This machine's IPv4 addresses other than loopback."""
    import ray  # noqa: F401 - puts the psutil that Ray vendors on sys.path
    import psutil
    return [a.address for addrs in psutil.net_if_addrs().values() for a in addrs
            if a.family.name == "AF_INET" and not a.address.startswith("127.")]


def reachable(host: str, port: int) -> bool:
    import socket
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


@pytest.mark.slow
@pytest.mark.parametrize("name", LAUNCHER_FILES)
def test_head_mlflow_server_proxies_artifacts_on_localhost_only(tmp_path, name):
    """The file's own MLflow server command (port swapped for a free one): artifacts logged
    through the server land in its --artifacts-destination and come back through it; nothing
    listens beyond 127.0.0.1; killing its process group (what ray_shim.sh does) stops it."""
    import sys
    import urllib.request

    from mlflow.tracking import MlflowClient

    config = yaml.safe_load((CLUSTERS / name).read_text())
    home = tmp_path / "home"
    (home / "s3_mlflow" / "artifacts").mkdir(parents=True)
    (home / "s3env" / "bin").mkdir(parents=True)
    (home / "s3env" / "bin" / "mlflow").symlink_to(Path(sys.executable).parent / "mlflow")
    port = free_port()
    start = [c for c in config["head_start_ray_commands"] if 'mlflow" server' in c]
    assert len(start) == 1
    started = subprocess.run(["bash", "-c", start[0].replace("5000", str(port))], env=sandbox_env(home),
                             capture_output=True, text=True, timeout=60)
    assert started.returncode == 0, started.stderr
    pgid = int((home / "s3_mlflow" / "server.pid").read_text())
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 240   # a busy 2-core machine takes a while to import MLflow
        while True:
            try:
                urllib.request.urlopen(url + "/health", timeout=5).read()
                break
            except OSError:
                assert time.monotonic() < deadline, (home / "s3_mlflow" / "server.log").read_text()[-3000:]
                time.sleep(1)
        client = MlflowClient(tracking_uri=url)
        run = client.create_run(client.create_experiment("proxied"))
        client.log_text(run.info.run_id, "curve", "curve/note.txt")
        assert run.info.artifact_uri.startswith("mlflow-artifacts:"), run.info.artifact_uri
        stored = list((home / "s3_mlflow" / "artifacts").rglob("note.txt"))
        assert len(stored) == 1 and stored[0].read_text() == "curve"
        local = client.download_artifacts(run.info.run_id, "curve/note.txt", str(tmp_path))
        assert Path(local).read_text() == "curve"
        for address in other_addresses():
            assert not reachable(address, port), f"the MLflow server answers on {address}"
    finally:
        os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + 60
    while reachable("127.0.0.1", port):
        assert time.monotonic() < deadline, "the server outlived its process group's SIGTERM"
        time.sleep(0.5)
