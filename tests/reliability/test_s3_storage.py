"""s3:// storage against a real S3 API (moto's server on 127.0.0.1, tests/reliability/s3api.py).

Fast: the storage check refuses a missing bucket or missing credentials in one line before Ray
starts; the stage cache stores and reuses a stage through s3://, bit-identically. Slow (a grid
end to end): Tune's and Train's checkpoints live in the bucket, a killed driver's grid continues
with --resume from them, and an MLflow server whose artifacts are in S3 holds every trial's curve
and model, read back by the report and by resweep.
"""
from __future__ import annotations

import subprocess

import pytest

from orchestrator.plan import GridError
from orchestrator.storage import check_storage
from relhelp import PY, RUN_GRID, cli_env, run_cli

NO_CREDENTIALS = {"AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/credentials", "AWS_CONFIG_FILE": "/nonexistent/config",
                  "AWS_EC2_METADATA_DISABLED": "true"}
CREDENTIAL_VARS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
                   "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
                   "AWS_CONTAINER_CREDENTIALS_FULL_URI")


@pytest.fixture
def s3env(s3api, monkeypatch):
    for k, v in s3api.env.items():
        monkeypatch.setenv(k, v)
    return s3api


def test_an_existing_bucket_passes_and_a_missing_one_is_one_line(s3env):
    s3env.bucket("there")
    check_storage("s3://there/runs")
    # the write probe leaves nothing behind (pyarrow keeps an empty "runs/" marker of the prefix)
    assert [k for k in s3env.keys("there") if "storage-check" in k] == [], s3env.keys("there")
    with pytest.raises(GridError, match=r"bucket 'absent' does not exist at http://127\.0\.0\.1:\d+; create it"):
        check_storage("s3://absent/runs")
    check_storage("/a/local/path/is/not/probed")


def test_missing_credentials_are_one_line(s3env, monkeypatch):
    s3env.bucket("there")
    for k in CREDENTIAL_VARS:
        monkeypatch.delenv(k, raising=False)
    for k, v in NO_CREDENTIALS.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(GridError, match=r"no AWS credentials \(none found\); set AWS_ACCESS_KEY_ID"):
        check_storage("s3://there/runs")


def test_the_cli_stops_before_ray_on_a_missing_bucket_or_credentials(s3api, tmp_path):
    argv = [RUN_GRID, "--preset", "smoke", "--storage-path", "s3://absent/runs", "--num-cpus", "2",
            "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}", "--verbose", "0"]
    proc = run_cli(argv, tmp_path, timeout=120, **s3api.env)
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert lines[-1].startswith("error: GridError: --storage-path s3://absent/runs: bucket 'absent' does not exist")
    assert "cluster:" not in proc.stdout, "Ray started before the storage was checked"
    assert not (tmp_path / "mlflow.db").exists(), "the check comes before anything is written"

    s3api.bucket("there")
    env = cli_env(**{**s3api.env, **NO_CREDENTIALS})
    for k in CREDENTIAL_VARS:
        env.pop(k, None)
    argv[argv.index("s3://absent/runs")] = "s3://there/runs"
    proc = subprocess.run([PY, *argv], cwd=str(tmp_path), capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1].startswith(
        "error: GridError: --storage-path s3://there/runs: no AWS credentials (none found)")


def test_the_stage_cache_reuses_a_stage_through_s3_bit_identically(s3env):
    from s3core.config import S3Config
    from s3core.data import SyntheticConfig, make_synthetic
    from s3core.data.base import content_digest
    from s3core.pipeline import run_trial
    from s3core.stagecache import StageCache

    s3env.bucket("cache")
    bench = make_synthetic(SyntheticConfig(n_train=96, n_valid=48, n_test=48, seq_len=4, dims=(6, 5), seed=3))
    cfg = S3Config(d_model=16, n_layers=1, n_heads=2, d_ff=32, chi=2, rho=2, proj_dim=8, batch_size=32,
                   epochs_special=2, epochs_select=1, eval_batch_size=64, epoch_probe=False, dropout=0.1,
                   keep_ratios=(1.0,), probe_l2=(1e-2,), probe_backend="torch")
    root = "s3://cache/runs/stage-cache"
    fresh = run_trial(bench, cfg, "s3", progress=False)
    first = StageCache(root, content_digest(bench), producer={"trial": "first"})
    run_trial(bench, cfg, "s3", progress=False, stage_cache=first)
    assert [e["status"] for e in first.events] == ["trained", "trained"]
    keys = [k for k in s3env.keys("cache", "runs/stage-cache/") if not k.endswith("/")]   # less pyarrow's dir markers
    assert sorted(k.rsplit("/", 1)[1] for k in keys) == ["meta.json", "meta.json", "state.pt", "state.pt"], keys
    second = StageCache(root, content_digest(bench), producer={"trial": "second"})
    again = run_trial(bench, cfg.replace(lambda_min=0.25), "s3", progress=False, stage_cache=second)
    assert [(e["stage"], e["status"]) for e in second.events] == [("special", "reused"), ("select", "trained")]
    assert second.events[0]["from"] == {"trial": "first"}
    # stage 1 of the reuse is bit-identical to training it fresh
    assert [h["loss"] for h in again.history if h["stage"] == "special"] == \
        [h["loss"] for h in fresh.history if h["stage"] == "special"]
    # a state.pt whose meta.json never came (a writer killed between the two PUTs) is not an entry
    s3env.client().delete_object(Bucket="cache", Key=[k for k in keys if k.endswith("meta.json")][0])
    assert sum(StageCache(root, content_digest(bench)).load(k.split("/")[2]) is not None
               for k in keys if k.endswith("state.pt")) == 1


# --------------------------------------------------------------------------- a grid on s3://

def s3_tune_results(s3api, bucket: str, prefix: str) -> dict[str, list[dict]]:
    """trial key -> the results Tune's JSON logger wrote into the bucket (its own record)."""
    import json

    from orchestrator.contract import TrialSpec
    out: dict[str, list[dict]] = {}
    client = s3api.client()
    for key in s3api.keys(bucket, prefix):
        if key.endswith("/result.json") and key.startswith(f"{prefix}grid-"):
            rows = [json.loads(ln) for ln in client.get_object(Bucket=bucket, Key=key)["Body"].read().decode()
                    .splitlines() if ln.strip()]
            params = json.loads(client.get_object(Bucket=bucket, Key=key.rsplit("/", 1)[0] + "/params.json")
                                ["Body"].read())
            out.setdefault(TrialSpec.from_config(params).key(), []).extend(rows)
    return out


def checkpoint_dirs(keys: list[str]) -> set[str]:
    """The checkpoint_NNNNNN folders among object keys."""
    return {k.split("/checkpoint_")[0] + "/checkpoint_" + k.split("/checkpoint_")[1].split("/")[0]
            for k in keys if "/checkpoint_" in k}


@pytest.mark.slow
def test_a_grid_on_s3_survives_a_killed_worker_and_driver_and_mlflow_keeps_its_artifacts_in_s3(s3api, tmp_path):
    import os
    import signal
    from collections import Counter

    from relhelp import (Grid, alive, descendants, metric_steps, parent_runs, ray_processes_of, reap,
                         stop_process_group, trial_runs, wait_for)
    from s3api import MlflowServer
    from test_faults import GRID_TIMEOUT, assert_complete_history

    from orchestrator import mlflow_layout as L
    from orchestrator.contract import Report

    s3api.bucket("bucket")
    server = MlflowServer(tmp_path, "s3://bucket/mlflow", s3api.env)
    grid = Grid(tmp_path / "grid")
    grid.env, grid.storage, grid.uri = dict(s3api.env), "s3://bucket/runs", server.uri
    epochs = 6
    flags = ("--preset", "smoke", "--grid", "chi=[2,4]", "--set", f"epochs_special={epochs}", "--max-concurrent", "1",
             "--max-failures", "2")
    figures = {}
    try:
        proc = grid.start(*flags)
        try:
            grid.wait_started(proc)
            client = grid.client()

            def running_mid_way():
                for run in trial_runs(client):
                    if run.info.status == "RUNNING" and 1 <= len(metric_steps(client, run.info.run_id,
                                                                                "special/loss")) <= epochs - 3:
                        return run
                return None

            # 1. a Train worker killed mid-trial: Train restarts it from the checkpoint in the bucket
            victim = wait_for(running_mid_way, GRID_TIMEOUT, 0.5, proc, "a trial with >= 1 logged epoch", grid)
            workers = [p for p in ray_processes_of(needle="RayTrainWorker") if p in descendants(proc.pid) and alive(p)]
            assert len(workers) == 1, workers
            os.kill(workers[0], signal.SIGKILL)
            wait_for(lambda: client.get_run(victim.info.run_id).info.status == "FINISHED", GRID_TIMEOUT, 1, proc,
                     "the victim to finish", grid)
            # 2. the driver killed (SIGKILL) with a trial still to run
            wait_for(lambda: 2 <= sum(r.info.status == "FINISHED" for r in trial_runs(client)) < 3 or None,
                     GRID_TIMEOUT, 0.3, proc, "a second FINISHED trial", grid)
            ray_pids = descendants(proc.pid)
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=60)
        finally:
            stop_process_group(proc)
        reap(ray_pids)          # Ray 2.60's agents can outlive a SIGKILLed driver (test_faults)
        done_before = {r.data.tags[L.TAG_TRIAL_KEY] for r in trial_runs(client) if r.info.status == "FINISHED"}
        assert 1 <= len(done_before) < 3, done_before
        checkpoints = checkpoint_dirs(s3api.keys("bucket", "runs/"))
        figures["checkpoint dirs in s3 before --resume"] = len(checkpoints)
        assert checkpoints and not list(tmp_path.rglob("checkpoint_*")), "checkpoints live in the bucket only"

        resumed = grid.run(*flags, "--resume", timeout=GRID_TIMEOUT)
        assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
        assert f"{len(done_before)} already finished" in resumed.stdout
        parents = parent_runs(client)
        assert len(parents) == 1 and parents[0].info.status == "FINISHED"
        runs = trial_runs(client)
        assert len(Counter(r.data.tags[L.TAG_TRIAL_KEY] for r in runs)) == 3 == len(runs)
        for run in runs:
            assert run.info.status == "FINISHED"
            assert_complete_history(client, run, epochs, 1)
        # Tune's own record in the bucket: the victim went on from its checkpoint, it did not start over
        reported = [Report.decode(r).global_epoch for r in
                    s3_tune_results(s3api, "bucket", "runs/")[victim.data.tags[L.TAG_TRIAL_KEY]] if r.get("kind") == "epoch"]
        assert reported.count(0) == 1 and sorted(set(reported)) == list(range(epochs + 1)), reported
        figures["victim epochs reported (a resume repeats at most one)"] = len(reported)
        figures["checkpoint dirs in s3 at the end (2 kept per Train run)"] = \
            len(checkpoint_dirs(s3api.keys("bucket", "runs/")))
        # every trial's curve and model are in the bucket, behind the MLflow server
        artifacts = s3api.keys("bucket", "mlflow/")
        for run in runs:
            mine = [k for k in artifacts if f"/{run.info.run_id}/artifacts/" in k]
            assert any(k.endswith(f"{L.MODEL_ARTIFACT_DIR}/{L.MODEL_FILE}") for k in mine), mine
            assert any(k.endswith(f"/artifacts/{L.CURVE_ARTIFACT_DIR}/curve.csv") for k in mine), mine
        figures["artifacts in s3"] = len(artifacts)

        # read back: the report from the server, and resweep of an S3 trial's model
        from relhelp import run_cli
        report = run_cli(["-m", "orchestrator.report", "--tracking-uri", server.uri, "--out", str(tmp_path / "rep")],
                         tmp_path, timeout=300, **s3api.env)
        assert report.returncode == 0, report.stderr[-3000:]
        figures["report files"] = len([p for p in (tmp_path / "rep").rglob("*") if p.is_file()])
        s3_run = next(r for r in runs if r.data.tags[L.TAG_METHOD] == "s3")
        resweep = run_cli(["-m", "orchestrator.resweep", s3_run.info.run_id, "--keep-ratios", "0.35",
                           "--tracking-uri", server.uri], tmp_path, timeout=300, **s3api.env)
        assert resweep.returncode == 0, resweep.stdout[-2000:] + resweep.stderr[-3000:]
        assert any(m.step == L.curve_step(0.35) for m in client.get_metric_history(s3_run.info.run_id, "valid_acc"))
        curve_key = next(k for k in s3api.keys("bucket", "mlflow/")
                         if f"/{s3_run.info.run_id}/artifacts/{L.CURVE_ARTIFACT_DIR}/" in k and k.endswith(".csv"))
        curve_csv = s3api.client().get_object(Bucket="bucket", Key=curve_key)["Body"].read().decode()
        assert "0.35" in curve_csv, curve_csv      # the curve in the bucket now holds the resweep's point
        figures["resweep"] = f"read {L.MODEL_ARTIFACT_DIR}/{L.MODEL_FILE} from s3, wrote {curve_key.split('/artifacts/')[1]}"
    finally:
        server.stop()
        print(f"\ns3 grid figures: {figures}")
