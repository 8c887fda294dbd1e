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
