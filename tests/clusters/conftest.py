"""A simulated autoscaling Ray cluster for tests (the tests named `autoscaling`).

`ray.cluster_utils.AutoscalingCluster` runs a head and worker node types with fake resources on
this machine, each node its own raylet, scaled by Ray's real autoscaler (v1 in Ray 2.60) through
its fake_multinode provider. Fake "GPU" resources schedule like real ones, but torch sees no CUDA
through them: the grids here compute on the CPU.

Three traps of Ray 2.60 (shared/docs/CLUSTER_NOTES.md), handled here:
  - the wheel lacks the base config `_generate_config` reads (FileNotFoundError), so
    SimulatedCluster builds the whole config itself;
  - `.start()` and `.shutdown()` run `ray stop --force`, which stops EVERY Ray process on the
    machine, not only this cluster's. The fixture therefore refuses to start (skips) while other
    Ray processes run, unless S3_ALLOW_RAY_STOP=1 (CI, a dedicated machine) or the tests run in
    their own PID namespace: `tests/clusters/run_isolated.sh python -m pytest ... -k autoscaling`;
  - it calls the `ray` command: the venv's bin directory is put first on PATH.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

# pytest runs with --import-mode=importlib: put this folder on sys.path for the tests to import it
sys.path.insert(0, str(Path(__file__).resolve().parent))

from simcluster import ALLOW_ENV, other_ray_processes, simulated_cluster_class  # noqa: E402


@pytest.fixture
def autoscaling_cluster(monkeypatch):
    """start(head_resources, worker_node_types, override_env=None, **config) -> the started
    cluster, connected to with ray.init("auto") by the code under test. Shut down afterwards."""
    import ray

    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    started = []

    def start(head_resources: dict, worker_node_types: dict, override_env: dict | None = None, **config):
        others = other_ray_processes()
        if others and os.environ.get(ALLOW_ENV) != "1":
            pytest.skip(f"AutoscalingCluster.start() runs `ray stop --force`, which would kill the other Ray "
                        f"processes on this machine ({', '.join(others[:3])}...); run in a PID namespace "
                        f"(tests/clusters/run_isolated.sh) or set {ALLOW_ENV}=1")
        cluster = simulated_cluster_class()(dict(head_resources), worker_node_types, **config)
        if ray.is_initialized():
            ray.shutdown()
        started.append(cluster)
        # a busy machine (CI, shared boxes) starts a raylet in more than Ray's default 60 s
        cluster.start(override_env={"RAY_raylet_start_wait_time_s": "300", **(override_env or {})})
        return cluster

    yield start
    if ray.is_initialized():
        ray.shutdown()
    for cluster in started:
        cluster.shutdown()
