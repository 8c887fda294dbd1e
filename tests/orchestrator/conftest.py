import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def run_grid(tmp_path: Path, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    """run_grid.py as a user runs it, everything (store, checkpoints, report) under tmp_path."""
    cmd = [sys.executable, str(REPO / "run_grid.py"), "--num-cpus", "2",
           "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}", "--storage-path", str(tmp_path / "runs"),
           "--report-dir", str(tmp_path / "report"), *args]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("RAY_ADDRESS", None)
    env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=timeout, env=env)


@pytest.fixture
def grid_runner():
    return run_grid
