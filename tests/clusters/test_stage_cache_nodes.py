"""The stage cache across nodes: a simulated autoscaling cluster (two worker nodes of one fake GPU
each) with s3:// storage (moto's S3 server on 127.0.0.1, tests/reliability/s3api.py). Two S3
trials that share Stage 1 (they differ in lambda_min, a Stage 2 field) take a whole GPU each, so
while both run they are on different nodes; Stage 1 is trained once, by one of them, and the other
takes it from s3://.../stage-cache, its claim served by the driver's broker (orchestrator.stage_claims),
and ends exactly as a trial trained from scratch. Slow; it stops every Ray process of the machine:
run it in a PID namespace (tests/clusters/run_isolated.sh), see conftest.py.
"""
from __future__ import annotations

import dataclasses
import subprocess
import sys
import time
from pathlib import Path

import pytest

from orchestrator import mlflow_layout as L

from simcluster import ClusterWatcher

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "reliability"))
from s3api import S3Api  # noqa: E402
from test_faults import uninterrupted_run, worker_threads_of  # noqa: E402

pytestmark = pytest.mark.slow

HEAD = {"CPU": 2}
# both worker nodes up before the grid starts (min_workers 2), so the two trials start together on
# different nodes however fast this machine trains: with nodes scaled up on demand, an idle machine
# finished the first trial's Stage 1 before the second node was up, and the trials never overlapped
ONE_GPU_NODES = {"gpu": {"resources": {"CPU": 2, "GPU": 1}, "node_config": {}, "min_workers": 2, "max_workers": 2}}
EPOCHS = 30     # Stage 1 long enough for the second trial to start while the first one trains it


def wait_for_worker_nodes(n: int, timeout_s: float = 300.0) -> None:
    """Block until n worker nodes (nodes with a GPU) are alive in the cluster at "auto". Asked from
    a child process: a ray.init() here would leave Ray's print hook behind in this process, which
    Tune then fails to pickle."""
    probe = ("import sys, time, ray\n"
             "ray.init('auto', include_dashboard=False, log_to_driver=False)\n"
             f"deadline = time.monotonic() + {timeout_s}\n"
             f"while sum(1 for x in ray.nodes() if x['Alive'] and x['Resources'].get('GPU')) < {n}:\n"
             "    if time.monotonic() > deadline: sys.exit(f'worker nodes not up: {ray.nodes()}')\n"
             "    time.sleep(0.5)\n")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=timeout_s + 60)
    assert done.returncode == 0, done.stderr[-2000:]


def test_autoscaling_two_nodes_train_a_shared_stage_once_through_s3(autoscaling_cluster, tmp_path, capsys,
                                                                      monkeypatch):
    from orchestrator import console
    from orchestrator.grid import run
    from orchestrator.plan import Overrides, make_plan
    from search_spaces import load_preset

    api = S3Api()
    try:
        for k, v in api.env.items():           # the nodes started below inherit the S3 endpoint
            monkeypatch.setenv(k, v)
        api.bucket("bucket")
        autoscaling_cluster(HEAD, ONE_GPU_NODES)
        wait_for_worker_nodes(2)
        plan = make_plan(load_preset("smoke"), Overrides(
            seeds=(0,), grid={"lambda_min": [0.25, 0.5]}, set={"epochs_special": EPOCHS}, gpus_per_trial=1.0,
            ray_address="auto", executor="direct", device="cpu", storage_path="s3://bucket/runs",
            tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}", report_dir=str(tmp_path / "report"), verbose=0))
        # the two S3 trials only (the preset's CLIP baseline would take a node of its own)
        plan = dataclasses.replace(plan, studies=tuple(
            dataclasses.replace(s, trials=tuple(t for t in s.trials if t.method == "s3")) for s in plan.studies))
        assert len(plan.trials()) == 2
        watcher = ClusterWatcher()
        watcher.start()
        started = time.monotonic()
        try:
            with console.session(0, tmp_path / "driver.log"):
                result = run(plan)
        finally:
            grid_s = time.monotonic() - started
            watcher.stop()
        out = capsys.readouterr().out
        assert result.exit_code == 0, out[-3000:]
        entries = sorted({k.split("/")[2] for k in api.keys("bucket", "runs/stage-cache/")
                          if k.endswith("/meta.json")})
    finally:
        api.stop()
    assert "stage cache: s3://bucket/runs/stage-cache" in out, out[-2000:]

    # the two trials ran at once, one per node (each holds the node's only GPU)
    both = [s for s in watcher.samples if len(s[2]) == 2]
    assert both and watcher.max_trials_on_one_node() == 1, watcher.summary()

    from mlflow.tracking import MlflowClient
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = [r for r in client.search_runs([e.experiment_id for e in client.search_experiments()])
            if r.data.tags.get(L.TAG_ROLE) == L.ROLE_TRIAL]
    assert len(runs) == 2 and all(r.info.status == "FINISHED" for r in runs)
    tags = {r.info.run_id: {k: v for k, v in r.data.tags.items() if k.startswith(L.TAG_STAGE_CACHE)} for r in runs}
    trainer = [r for r in runs if r.data.tags[f"{L.TAG_STAGE_CACHE}.special"] == "trained"]
    reuser = [r for r in runs if r.data.tags[f"{L.TAG_STAGE_CACHE}.special"] == "reused"]
    assert len(trainer) == 1 and len(reuser) == 1, tags
    trainer, reuser = trainer[0], reuser[0]
    assert reuser.data.tags[f"{L.TAG_STAGE_CACHE}.special.from"] == trainer.info.run_id, tags
    assert all(r.data.tags[f"{L.TAG_STAGE_CACHE}.select"] == "trained" for r in runs), tags
    # three entries: Stage 1, and each trial's Stages 1+2
    assert len(entries) == 3, entries
    # both runs overlapped in time: the reuser waited on the trainer's claim, across nodes
    assert reuser.info.start_time < trainer.info.end_time and trainer.info.start_time < reuser.info.end_time

    # the reuser is bit-identical to the same trial trained from scratch here (no cache)
    reference = uninterrupted_run(reuser, worker_threads_of(out))
    losses = {m.step: m.value for k in ("special/loss", "select/loss")
              for m in client.get_metric_history(reuser.info.run_id, k)}
    assert losses == {e: h["loss"] for e, h in enumerate(reference.history)}
    for name in ("valid_acc", "test_acc"):
        curve = {m.step: m.value for m in client.get_metric_history(reuser.info.run_id, name)}
        assert curve == {L.curve_step(r["keep_ratio"]): r[name] for r in reference.curve}, name
    print(f"\ntwo-node stage cache on s3: grid {grid_s:.0f} s; trainer {trainer.info.run_id} {tags[trainer.info.run_id]}; "
          f"reuser {reuser.info.run_id} {tags[reuser.info.run_id]}; entries in s3 {entries}")
