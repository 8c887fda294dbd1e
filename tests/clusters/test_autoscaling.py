"""The cluster path without a cloud: a smoke grid on a simulated autoscaling cluster.

Head: 2 CPU, no GPU. Worker type `gpu`: {"CPU": 2, "GPU": 1} (fake), min 0, max 2. The grid runs
in this process (`orchestrator.cli.main`, `--ray-address auto`) as `ray submit` runs it on a head.
Slow; they stop every Ray process of the machine (see conftest.py): run them alone, or with
tests/clusters/run_isolated.sh.

Computation is on the CPU: torch sees no CUDA behind fake GPUs. The `direct` executor is used
because the Train executor, given a GPU, sets up an NCCL process group, which a CPU-only torch
lacks (issue 11 point 3).
"""
from __future__ import annotations

import json
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from orchestrator import mlflow_layout as L
from orchestrator.contract import Report, TrialSpec

from simcluster import ClusterWatcher, kill_node, raylet_of

pytestmark = pytest.mark.slow

HEAD = {"CPU": 2}
WORKER_TYPES = {"gpu": {"resources": {"CPU": 2, "GPU": 1}, "node_config": {}, "min_workers": 0, "max_workers": 2}}
SCALE_DOWN_TIMEOUT = 120   # idle_timeout_minutes 0.1 (6 s) plus the autoscaler's rounds


def grid_argv(tmp_path: Path, *extra: str) -> list[str]:
    return ["--preset", "smoke", "--gpus-per-trial", "0.5", "--ray-address", "auto", "--executor", "direct", "--device", "cpu",
            "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}", "--storage-path", str(tmp_path / "runs"),
            "--report-dir", str(tmp_path / "report"), "--verbose", "0", *extra]


def mlflow_client(tmp_path: Path):
    from mlflow.tracking import MlflowClient
    return MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")


def trial_runs(client) -> list:
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(experiments, max_results=1000) if experiments else []
    return [r for r in runs if r.data.tags.get(L.TAG_ROLE) == L.ROLE_TRIAL]


def assert_one_finished_run_per_trial(client, expected: int) -> list:
    runs = trial_runs(client)
    keys = Counter(r.data.tags[L.TAG_TRIAL_KEY] for r in runs)
    assert len(keys) == expected and set(keys.values()) == {1}, keys
    for run in runs:
        assert run.info.status == "FINISHED", (run.data.tags.get(L.TAG_METHOD), run.info.status,
                                               run.data.tags.get(L.TAG_FAILURE))
        for key in run.data.metrics:
            steps = [m.step for m in client.get_metric_history(run.info.run_id, key)]
            duplicated = [s for s, n in Counter(steps).items() if n > 1]
            assert not duplicated, f"{key}: duplicated steps {duplicated}"
    return runs


def wait_until(predicate, timeout: float, what: str, interval: float = 1.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def alive_gpu_nodes() -> list[str]:
    import ray
    return [n["NodeID"] for n in ray.nodes() if n["Alive"] and n["Resources"].get("GPU", 0) > 0]


def test_autoscaling_smoke_grid_scales_up_from_zero_packs_and_scales_down(autoscaling_cluster, tmp_path, capsys):
    import ray
    from orchestrator.cli import main

    t0 = time.monotonic()
    autoscaling_cluster(HEAD, WORKER_TYPES)
    ray.init("auto", include_dashboard=False, log_to_driver=False)
    assert alive_gpu_nodes() == [], "the cluster must start without GPU nodes (min_workers 0)"
    ray.shutdown()   # the grid connects itself, as on a cluster head
    watcher = ClusterWatcher()
    watcher.start()
    started = time.monotonic()
    try:
        # two seeds: 4 trials (S3 and CLIP per seed) of 0.5 GPU -> two per node, two nodes
        code = main(grid_argv(tmp_path, "--seeds", "0", "1"))
    finally:
        grid_s = time.monotonic() - started
        watcher.stop()
    out = capsys.readouterr().out
    assert code == 0, out[-3000:]
    assert "the autoscaler's config" in out, "planned from the live nodes, not the node types"
    assert "4 concurrent trial(s)" in out, out[-3000:]

    assert_one_finished_run_per_trial(mlflow_client(tmp_path), expected=4)
    gpu_nodes_seen = {node for s in watcher.samples for node in watcher.gpu_nodes(s)}
    assert watcher.max_gpu_nodes() == 2 and len(gpu_nodes_seen) == 2, watcher.summary()
    assert watcher.max_trials_on_one_node() == 2, watcher.summary()
    assert watcher.trial_nodes() <= gpu_nodes_seen, "a trial ran on the head, which has no GPU"
    first_node_s = watcher.first_time(lambda s: watcher.gpu_nodes(s))

    wait_until(lambda: not alive_gpu_nodes(), SCALE_DOWN_TIMEOUT, "the idle GPU nodes to be given back")
    down_s = time.monotonic() - started - grid_s
    print(f"\nautoscaling smoke grid: cluster start {started - t0:.0f} s, first GPU node after {first_node_s:.0f} s, "
          f"grid {grid_s:.0f} s, {len(gpu_nodes_seen)} GPU nodes, max {watcher.max_trials_on_one_node()} trials "
          f"on one node, scaled to 0 GPU nodes {down_s:.0f} s after the grid")


def tune_trial_key(folder: Path) -> str:
    """The trial key of one of Tune's trial folders (from its params.json)."""
    return TrialSpec.from_config(json.loads((folder / "params.json").read_text())).key()


def tune_results(storage: Path) -> dict[str, list[dict]]:
    """trial key -> the results Tune recorded for it (its own JSON log, independent of MLflow)."""
    out: dict[str, list[dict]] = {}
    for path in storage.glob("grid-*/*/result.json"):
        out.setdefault(tune_trial_key(path.parent), []).extend(
            json.loads(line) for line in path.read_text().splitlines() if line.strip())
    return out


def tune_failed(storage: Path) -> set[str]:
    """The trial keys Tune recorded a failure for (an error.txt in the trial's folder)."""
    return {tune_trial_key(path.parent) for path in storage.glob("grid-*/*/error.txt")}


def test_autoscaling_worker_node_killed_mid_trial_resumes_on_another_node(autoscaling_cluster, tmp_path, capsys):
    from orchestrator.cli import main

    epochs = 30
    # the autoscaler gives up on a silent node after AUTOSCALER_HEARTBEAT_TIMEOUT_S (30 s by default)
    autoscaling_cluster(HEAD, WORKER_TYPES, override_env={"AUTOSCALER_HEARTBEAT_TIMEOUT_S": "10"})
    watcher = ClusterWatcher()
    watcher.start()
    client = mlflow_client(tmp_path)
    killed: dict = {}

    def kill_a_node_mid_trial():
        """In the background: once a trial has logged some but not all epochs, SIGKILL the raylet
        of the node running the most trial actors and every process under it (the node dies with its workers).

        Two epochs at least: Tune registers a reported checkpoint only when the `save` task it then
        sends the trial's actor comes back, so a node killed between the two loses the newest
        checkpoint, and the trial resumes from the one before it (from scratch after one epoch)."""
        try:
            def mid_way():
                for run in trial_runs(client):
                    n = len(client.get_metric_history(run.info.run_id, "special/loss"))
                    if run.info.status == "RUNNING" and 2 <= n <= epochs - 10:
                        return n
                return None
            epochs_before = wait_until(mid_way, 600, "a trial with logged epochs", interval=0.3)
            trials_by_node = watcher.samples[-1][2]
            node_id = max(trials_by_node, key=lambda node: len(trials_by_node[node]))
            raylet = raylet_of(node_id)
            assert raylet is not None, f"no raylet for node {node_id}: {watcher.summary()}"
            processes = kill_node(raylet)
            killed.update(node=node_id, processes=processes, time=time.monotonic() - watcher.t0, wall_ms=time.time() * 1000,
                          epochs_before=epochs_before,
                          trials_on_node=len(trials_by_node[node_id]))
        except BaseException as err:  # noqa: BLE001 - reported by the test below
            killed["error"] = f"{type(err).__name__}: {err}"

    killer = threading.Thread(target=kill_a_node_mid_trial, daemon=True)
    killer.start()
    started = time.monotonic()
    try:
        code = main(grid_argv(tmp_path, "--set", f"epochs_special={epochs}", "--max-failures", "3"))
    finally:
        grid_s = time.monotonic() - started
        watcher.stop()
        killer.join(timeout=5)
    out = capsys.readouterr().out
    assert "error" not in killed, killed
    assert killed.get("node"), f"the grid ended before a node could be killed: {out[-2000:]}"
    assert code == 0, out[-3000:]

    # MLflow, this project's record: every epoch of every trial logged, once (no duplicated step)
    logged_before_kill = {}
    for run in assert_one_finished_run_per_trial(client, expected=2):
        points = [m for key in ("special/loss", "select/loss") for m in client.get_metric_history(run.info.run_id, key)]
        assert sorted(m.step for m in points) == list(range(epochs + 1)), (run.data.tags.get(L.TAG_METHOD), points)
        logged_before_kill[run.data.tags[L.TAG_TRIAL_KEY]] = sum(m.timestamp <= killed["wall_ms"] for m in points)
    # Tune's record: the killed trials failed (error.txt), and one with 2 or more epochs logged
    # before the kill went on from a checkpoint, not from epoch 0 (with fewer, Tune may hold no
    # registered checkpoint yet: see above). Tune's result.json is no full record of the attempts:
    # in CI (2026-12-08) it kept only the second attempt's rows, from epoch 3 on.
    failed = tune_failed(tmp_path / "runs")
    resumable = {key for key in failed if logged_before_kill[key] >= 2}
    assert resumable, f"no killed trial had 2 epochs logged: {failed}, {logged_before_kill}, {killed}, {watcher.summary()}"
    results = tune_results(tmp_path / "runs")
    for key in resumable:
        rows = [r for r in results[key] if r.get("kind") == "epoch"]
        last = [Report.decode(r).global_epoch for r in rows if r["pid"] == rows[-1]["pid"]]
        assert last[0] > 0, f"a killed trial started again from scratch: {last}"
    # where it kept both attempts' rows: at most the one epoch whose checkpoint Tune had not
    # registered yet (see above) computed twice
    for key, rows in results.items():
        reported = [Report.decode(r).global_epoch for r in rows if r.get("kind") == "epoch"]
        assert len(reported) - len(set(reported)) <= 1, f"more than one epoch recomputed: {reported}"
    # after the kill, trials run on another node. The dead node's actors stay listed ALIVE until the
    # GCS sees it dead (its health checks: ~15 s here), which can come after the resumed trials
    # finished (CI, stop 24): so look for trial actors on other nodes, not for the node to be gone.
    # New actors only: a trial that was on another node all along is no resumed one.
    before = {actor for t, _, trials in watcher.samples if t <= killed["time"] for actors in trials.values() for actor in actors}
    later = [s for s in watcher.samples if s[0] > killed["time"]]
    elsewhere = [(t, {node for node, actors in trials.items() if node != killed["node"] and set(actors) - before})
                 for t, _, trials in later]
    elsewhere = [(t, nodes) for t, nodes in elsewhere if nodes]
    assert elsewhere, (killed, watcher.summary())
    after = set().union(*(nodes for _, nodes in elsewhere))
    resumed_after_s = elsewhere[0][0] - killed["time"]
    seen_dead = next((t for t, nodes, _ in later if killed["node"] not in nodes), None)
    dead = f"{seen_dead - killed['time']:.0f} s later" if seen_dead is not None else "only after the grid ended"
    print(f"\nnode killed at {killed['time']:.0f} s, {killed['epochs_before']} epoch(s) into a trial "
          f"({killed['trials_on_node']} trial(s) on the node); the GCS saw it dead {dead}; "
          f"{len(failed)} trial(s) resumed on {len(after)} other node(s) {resumed_after_s:.0f} s after the kill; "
          f"grid {grid_s:.0f} s")
