"""`ray submit CLUSTER.yaml run_grid.py -- ARGS` copies run_grid.py alone to the head and runs it
with a login shell's `python`; run_grid.py hands its arguments to ~/s3/clusters/run_grid.sh there
(the cluster's venv and environment). Fast: a sandbox HOME laid out as the cluster files' setup
lays out a head, no SSH (the SSH path itself: test_ssh_path.py, slow)."""
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("run_grid_script", REPO / "run_grid.py")
run_grid = importlib.util.module_from_spec(spec)
spec.loader.exec_module(run_grid)


def make_head(home: Path, python_dir: Path, tracking_uri="http://127.0.0.1:1") -> Path:
    """HOME as setup leaves a head: ~/s3 the checkout, ~/s3_cluster/env.sh; returns ~/run_grid.py,
    where `ray submit` copies the script."""
    home.mkdir(parents=True, exist_ok=True)
    (home / "s3").symlink_to(REPO)
    (home / "s3_cluster").mkdir()
    (home / "s3_cluster" / "env.sh").write_text(
        f'export PATH="{python_dir}:$PATH"\nexport MLFLOW_TRACKING_URI={tracking_uri}\n')
    copy = home / "run_grid.py"
    shutil.copy(REPO / "run_grid.py", copy)
    return copy


def login_python(home: Path, script: Path, *args: str) -> subprocess.CompletedProcess:
    """A `python` that cannot import the project (no site-packages: -S), as a login shell's."""
    env = {"HOME": str(home), "PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}
    return subprocess.run([sys.executable, "-S", str(script), *args], env=env, capture_output=True, text=True,
                          timeout=120)


def test_a_lone_copy_on_a_head_hands_over_to_the_cluster_environment(tmp_path):
    home = tmp_path / "home"
    copy = make_head(home, Path(sys.executable).parent)
    proc = login_python(home, copy, "--help")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: run_grid.py"), proc.stdout[:500]
    # the venv's python ran it with env.sh's environment: the tracking URI's default is env.sh's
    assert "http://127.0.0.1:1" in proc.stdout


def test_the_handed_over_grid_sees_its_arguments_unchanged(tmp_path):
    home = tmp_path / "home"
    copy = make_head(home, Path(sys.executable).parent)
    proc = login_python(home, copy, "--preset", "no-such-preset")
    assert proc.returncode == 2
    assert "invalid choice: 'no-such-preset'" in proc.stderr, proc.stderr


def test_off_a_head_it_is_one_line_naming_the_fix(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    copy = home / "run_grid.py"
    shutil.copy(REPO / "run_grid.py", copy)
    proc = login_python(home, copy, "--preset", "smoke")
    assert proc.returncode == 1 and not proc.stdout
    (line,) = proc.stderr.splitlines()
    assert line.startswith("error: cannot import the orchestrator") and "pip install -c constraints.txt" in line


def test_a_broken_head_environment_fails_once_instead_of_looping(tmp_path):
    """env.sh's python cannot import the project either (-I: not even from the checkout it runs):
    one hand-over, then the one-line error."""
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "python").write_text(f'#!/bin/sh\nexec "{sys.executable}" -S -I "$@"\n')
    (bad / "python").chmod(0o755)
    home = tmp_path / "home"
    copy = make_head(home, bad)
    proc = login_python(home, copy, "--preset", "smoke")
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.count("error: cannot import the orchestrator") == 1, proc.stderr


@pytest.mark.parametrize("lone,importable,handed_over,expected", [
    (True, True, False, True),      # ray submit's copy, even where another checkout is importable
    (True, False, False, True),     # ray submit's copy, a python without the project
    (False, False, False, True),    # `python ~/s3/run_grid.py` with the system python
    (False, True, False, False),    # a checkout whose python has the project: run it here
    (True, False, True, False),     # already handed over once
])
def test_when_it_hands_over(tmp_path, lone, importable, handed_over, expected):
    home = tmp_path / "home"
    copy = make_head(home, Path(sys.executable).parent)
    script = copy if lone else REPO / "run_grid.py"
    environ = {run_grid.HANDED_OVER: "1"} if handed_over else {}
    command = run_grid.cluster_command(["--preset", "smoke"], script, home, environ, importable)
    if expected:
        assert command == ["bash", str(home / "s3" / "clusters" / "run_grid.sh"), "--preset", "smoke"]
    else:
        assert command is None


def test_no_hand_over_off_a_head(tmp_path):
    (tmp_path / "s3" / "clusters").mkdir(parents=True)
    (tmp_path / "s3" / "clusters" / "run_grid.sh").write_text("")
    # a checkout at ~/s3 without the setup's env.sh is not a head
    assert run_grid.cluster_command([], tmp_path / "run_grid.py", tmp_path, {}, importable=False) is None
    assert not os.environ.get(run_grid.HANDED_OVER)
