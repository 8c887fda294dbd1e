"""Fixtures of the reliability tests. Helpers live in relhelp.py (pytest runs with
--import-mode=importlib, so this folder is put on sys.path for the test modules to import it)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from relhelp import Grid  # noqa: E402


@pytest.fixture
def grid_env(tmp_path) -> Grid:
    """A run_grid.py setup whose store, storage, report dir and cwd are all under tmp_path."""
    return Grid(tmp_path / "grid")


@pytest.fixture(scope="session")
def user_store(tmp_path_factory) -> Path:
    """A user's existing MLflow store: one experiment, one FINISHED run with a metric."""
    from mlflow.tracking import MlflowClient
    db = tmp_path_factory.mktemp("store") / "mlflow.db"
    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    exp = client.create_experiment("s3-synthetic")
    run = client.create_run(exp, run_name="earlier-work")
    client.log_metric(run.info.run_id, "valid_acc", 0.75, step=100)
    client.set_terminated(run.info.run_id, "FINISHED")
    return db


@pytest.fixture
def s3api():
    """moto's S3 server on a free port of 127.0.0.1 (s3api.S3Api), stopped afterwards."""
    from s3api import S3Api
    api = S3Api()
    yield api
    api.stop()
