"""Fault injection against real Ray (Tune + Train), real MLflow (SQLite) and the real CLI.

All slow: each test runs run_grid.py end to end (a private local Ray with --num-cpus 2) under
its tmp_path. MLflow is polled while the grid runs through a second MlflowClient, read-only
(search_runs / get_metric_history), as `mlflow ui` would.
"""
from __future__ import annotations

import json
import os
import signal
import time
from collections import Counter
from pathlib import Path

import pytest
from relhelp import (Grid, alive, descendants, metric_steps, parent_runs, ray_processes_of, reap, stop_process_group,
                     trial_runs, wait_for)

from orchestrator import mlflow_layout as L
from orchestrator.contract import Report

pytestmark = pytest.mark.slow

GRID_TIMEOUT = 540  # a smoke-sized grid takes ~1 min on an idle 2-core box; CI boxes are busier


def tune_results(grid: Grid) -> dict[str, list[dict]]:
    """trial key -> the results Tune's JSON logger recorded (an independent record of what was reported)."""
    from orchestrator.contract import TrialSpec
    out: dict[str, list[dict]] = {}
    for path in grid.storage.glob("grid-*/*/result.json"):
        rows = [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]
        if not rows:
            continue
        params = json.loads((path.parent / "params.json").read_text())
        out.setdefault(TrialSpec.from_config(params).key(), []).extend(rows)
    return out


def assert_complete_history(client, run, epochs_special: int, epochs_select: int):
    """Every metric's steps are unique; special/loss covers 0..E1-1, select/loss E1..E1+E2-1."""
    for key in run.data.metrics:
        steps = metric_steps(client, run.info.run_id, key)
        dup = [s for s, c in Counter(steps).items() if c > 1]
        assert not dup, f"{key}: duplicated steps {dup}"
    method = run.data.tags[L.TAG_METHOD]
    if method == "clip":  # the same epoch budget as S3's two stages, all in one stage
        assert sorted(metric_steps(client, run.info.run_id, "special/loss")) == \
            list(range(epochs_special + epochs_select))
    else:
        assert sorted(metric_steps(client, run.info.run_id, "special/loss")) == list(range(epochs_special))
        assert sorted(metric_steps(client, run.info.run_id, "select/loss")) == \
            list(range(epochs_special, epochs_special + epochs_select))
    n_curve = 10 if method == "s3" else 1
    assert len(metric_steps(client, run.info.run_id, "valid_acc")) == n_curve
    for key in L.SUMMARY_METRICS:
        assert key in run.data.metrics, key


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_mtime_ns, p.stat().st_size)
            for p in root.rglob("*") if p.is_file()} if root.exists() else {}


def checkpoints_of(grid: Grid, key: str) -> dict[str, tuple[int, int]]:
    """Files of the Ray Train run(s) of one trial (trial-<key> or trial-<grid id>-<key>)."""
    out = {}
    for d in grid.storage.glob(f"trial-*{key}"):
        out.update({f"{d.name}/{k}": v for k, v in snapshot(d).items()})
    return out


# ------------------------------------------------------------------------------ 1. worker killed

def uninterrupted_run(run, threads: int):
    """The same trial run in this process without interruption: its S3Config rebuilt from the
    params MLflow holds (every field is logged), its data from the smoke preset's synthetic config."""
    import ast
    import dataclasses

    import torch

    from s3core.config import S3Config
    from s3core.data import load_benchmark
    from s3core.pipeline import run_trial
    from search_spaces import load_preset

    def parse(text: str):
        try:
            return json.loads(text)
        except ValueError:
            try:
                return ast.literal_eval(text)
            except (ValueError, SyntaxError):
                return text

    params = run.data.params
    # every field but the device, which is a tag (s3.device), not a param; this test runs on the CPU
    cfg = S3Config().replace(**{f.name: parse(params[f.name]) for f in dataclasses.fields(S3Config)
                                if f.name != "device"})
    bench = load_benchmark("synthetic", synthetic=load_preset("smoke").synthetic)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)   # as the Train worker: a float sum's rounding depends on it
    try:
        return run_trial(bench, cfg, run.data.tags[L.TAG_METHOD], progress=False)
    finally:
        torch.set_num_threads(before)


def worker_threads_of(grid_output: str) -> int:
    """The torch threads each Train worker ran with, from the grid's resources line
    ('... 1 worker(s) x 0.99 CPU ...'), as orchestrator.contract.worker_threads computes them."""
    import re

    from orchestrator.contract import worker_threads
    found = re.search(r"(\d+) worker\(s\) x ([\d.]+) CPU", grid_output)
    assert found, f"no resources line in the grid's output: {grid_output[-2000:]}"
    return worker_threads(float(found.group(2)))


def test_worker_killed_mid_trial_resumes_from_checkpoint(grid_env: Grid):
    epochs = 8
    proc = grid_env.start("--preset", "smoke", "--set", f"epochs_special={epochs}", "--max-concurrent", "1",
                          "--max-failures", "2")
    try:
        grid_env.wait_started(proc)
        client = grid_env.client()

        def running_trial_mid_way():
            for run in trial_runs(client):
                if run.info.status == "RUNNING":
                    n = len(metric_steps(client, run.info.run_id, "special/loss"))
                    if 1 <= n <= epochs - 3:
                        return run
            return None

        def train_workers() -> list[int]:
            # only the Ray this driver started: its descendants whose title names the Train worker actor
            return [p for p in ray_processes_of(needle="RayTrainWorker") if p in descendants(proc.pid) and alive(p)]

        victim = wait_for(running_trial_mid_way, GRID_TIMEOUT, 0.5, proc, "a trial with >= 1 logged epoch", grid_env)
        workers = train_workers()
        assert len(workers) == 1, f"expected one Train worker (--max-concurrent 1), found {workers}"
        first = workers[0]
        epochs_before = len(metric_steps(client, victim.info.run_id, "special/loss"))
        os.kill(first, signal.SIGKILL)

        # Which process serves the victim from now on: while it is the only RUNNING trial
        # (--max-concurrent 1), each new epoch it logs comes from the one Train worker alive then.
        served_after_kill: set[int] = set()
        logged = epochs_before
        deadline = time.monotonic() + GRID_TIMEOUT
        while time.monotonic() < deadline and proc.poll() is None:
            if client.get_run(victim.info.run_id).info.status != "RUNNING":
                break
            n = sum(len(metric_steps(client, victim.info.run_id, k)) for k in ("special/loss", "select/loss"))
            workers = train_workers()
            if n > logged and len(workers) == 1:
                served_after_kill.add(workers[0])
            logged = max(logged, n)
            time.sleep(0.3)
        assert proc.wait(timeout=GRID_TIMEOUT) == 0, grid_env.output()[-3000:]
    finally:
        stop_process_group(proc)

    # a resume really happened inside the victim trial: a second worker process took it over
    assert not alive(first)
    assert served_after_kill and first not in served_after_kill, (
        f"no other worker was seen serving the victim after worker {first} was killed: {served_after_kill}")

    runs = trial_runs(client)
    keys = Counter(r.data.tags[L.TAG_TRIAL_KEY] for r in runs)
    assert set(keys.values()) == {1} and len(keys) == 2, keys
    victim = client.get_run(victim.info.run_id)
    assert victim.info.status == "FINISHED"
    for run in runs:
        assert run.info.status == "FINISHED"
        assert_complete_history(client, run, epochs, 1)
    # Tune's own record: the restarted worker went on from its last checkpoint, it did not start over
    reported = [Report.decode(r).global_epoch for r in tune_results(grid_env)[victim.data.tags[L.TAG_TRIAL_KEY]]
                if r.get("kind") == "epoch"]
    assert reported.count(0) == 1, f"epoch 0 was recomputed after the kill: {reported}"
    assert sorted(set(reported)) == list(range(epochs + 1)), reported
    assert len(reported) <= epochs + 1 + 1, f"more than one epoch recomputed: {reported} (killed after {epochs_before})"
    assert "database is locked" not in grid_env.output()

    # and the resumed trial trained exactly as an uninterrupted one: same losses, same curve
    reference = uninterrupted_run(victim, worker_threads_of(grid_env.output()))
    losses = {m.step: m.value for k in ("special/loss", "select/loss")
              for m in client.get_metric_history(victim.info.run_id, k)}
    assert losses == {e: h["loss"] for e, h in enumerate(reference.history)}
    for name in ("valid_acc", "test_acc", "valid_f1", "test_f1"):
        curve = {m.step: m.value for m in client.get_metric_history(victim.info.run_id, name)}
        assert curve == {L.curve_step(r["keep_ratio"]): r[name] for r in reference.curve}, name


# ------------------------------------------------------------------------------ 2. driver killed

@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["SIGINT", "SIGKILL"])
def test_driver_killed_then_resumed(grid_env: Grid, sig):
    flags = ("--preset", "smoke", "--grid", "chi=[2,4]", "--max-concurrent", "1")
    proc = grid_env.start(*flags)
    ray_pids: set[int] = set()
    try:
        grid_env.wait_started(proc)
        client = grid_env.client()
        finished = wait_for(lambda: [r for r in trial_runs(client) if r.info.status == "FINISHED"],
                            GRID_TIMEOUT, 0.5, proc, "a FINISHED trial", grid_env)
        ray_pids = descendants(proc.pid)
        if sig == signal.SIGINT:
            os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C: the whole foreground process group
            rc = proc.wait(timeout=180)
            assert rc == 130, grid_env.output()[-3000:]
        else:
            os.kill(proc.pid, signal.SIGKILL)   # the driver alone, no chance to clean up
            proc.wait(timeout=60)
    finally:
        stop_process_group(proc)
    # the Ray processes this driver started do not outlive it for long
    orphans = reap(ray_pids)

    before = {r.data.tags[L.TAG_TRIAL_KEY]: r for r in trial_runs(client)}
    done_before = {k: r for k, r in before.items() if r.info.status == "FINISHED"}
    assert done_before and len(done_before) < 3, "the interrupt came too late to test resume"
    assert len(parent_runs(client)) == 1
    if sig == signal.SIGINT:
        assert all(r.info.status != "RUNNING" for r in trial_runs(client) + parent_runs(client))
        assert parent_runs(client)[0].info.status == "KILLED"
    ckpts = {k: checkpoints_of(grid_env, k) for k in done_before}
    assert all(ckpts.values()), "finished trials have checkpoints"

    resumed = grid_env.run(*flags, "--resume", timeout=GRID_TIMEOUT)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"{len(done_before)} already finished" in resumed.stdout

    parents = parent_runs(client)
    assert len(parents) == 1 and parents[0].info.status == "FINISHED", "the parent run was not reused"
    runs = trial_runs(client)
    keys = Counter(r.data.tags[L.TAG_TRIAL_KEY] for r in runs)
    assert len(keys) == 3 and set(keys.values()) == {1}, keys
    for run in runs:
        assert run.info.status == "FINISHED"
        assert run.data.tags[L.TAG_PARENT] == parents[0].info.run_id
        assert_complete_history(client, run, 2, 1)
    after = {r.data.tags[L.TAG_TRIAL_KEY]: r for r in runs}
    for k, r in done_before.items():
        assert after[k].info.run_id == r.info.run_id
        assert after[k].info.start_time == r.info.start_time
        assert after[k].info.end_time == r.info.end_time, "a finished trial was re-run"
        assert checkpoints_of(grid_env, k) == ckpts[k], "a finished trial's checkpoints changed"
    for k, r in before.items():  # unfinished ones (RUNNING after SIGKILL, KILLED after SIGINT) reuse their run
        assert after[k].info.run_id == r.info.run_id
    # raylet, GCS and the workers fate-share with the driver. Known limit of Ray 2.60 (docs/RELIABILITY.md):
    # after a SIGKILL its DashboardAgent / RuntimeEnvAgent can outlive the driver; killed above.
    core = {p: c for p, c in orphans.items() if "DashboardAgent" not in c and "RuntimeEnvAgent" not in c}
    assert not core, f"Ray processes outlived the killed driver by > 60 s: {core}"


# ------------------------------------------------------------------------------ 3. divergence

def test_diverging_trial_fails_alone_and_is_not_retried(grid_env: Grid):
    t0 = time.monotonic()
    proc = grid_env.run("--preset", "smoke", "--grid", "tau=[0.1,1e-38]", "--max-failures", "2",
                        timeout=GRID_TIMEOUT)
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-3000:]
    client = grid_env.client()
    runs = trial_runs(client)
    assert len(runs) == 3
    by_status = Counter(r.info.status for r in runs)
    assert by_status == {"FINISHED": 2, "FAILED": 1}, by_status
    (failed,) = [r for r in runs if r.info.status == "FAILED"]
    assert failed.data.params["tau"] == "1e-38"
    reason = failed.data.tags[L.TAG_FAILURE]
    assert "DivergenceError" in reason and "diverged" in reason, reason
    # not retried: the error came straight from the worker's report, not from Ray Train giving up
    # after --max-failures restarts (which raises TrainingFailedError / WorkerGroupError)
    assert "TrainingFailedError" not in reason and "WorkerGroupError" not in reason, reason
    attempts = [r for r in tune_results(grid_env).get(failed.data.tags[L.TAG_TRIAL_KEY], [])
                if r.get("kind") == "failed"]
    assert len(attempts) == 1, attempts
    report = (grid_env.report / "report.md").read_text()
    assert failed.info.run_id in report or failed.info.run_name in report
    assert "DivergenceError" in report
    parent = parent_runs(client)[0]
    assert parent.info.status == "FAILED"
    print(f"divergence grid took {time.monotonic() - t0:.0f}s")


# ------------------------------------------------------------------------------ 5. concurrency

def test_concurrent_trials_lose_no_metric(grid_env: Grid):
    proc = grid_env.start("--preset", "smoke", "--grid", "chi=[1,2,4]", "--max-concurrent", "4",
                          "--cpus-per-worker", "0.45")
    reads = 0
    try:
        grid_env.wait_started(proc)
        client = grid_env.client()
        # a second reader hammering the store while four trials write through the driver
        deadline = time.monotonic() + GRID_TIMEOUT
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                for run in trial_runs(client):
                    client.get_metric_history(run.info.run_id, "special/loss")
                reads += 1
            except Exception as err:  # noqa: BLE001 - the store may still be being created
                if "locked" in str(err):
                    pytest.fail(f"reader saw {err}")
            time.sleep(0.3)
        assert proc.wait(timeout=60) == 0, grid_env.output()[-3000:]
    finally:
        stop_process_group(proc)
    out = grid_env.output()
    assert "database is locked" not in out and "OperationalError" not in out
    assert reads > 5

    runs = trial_runs(client)
    assert len(runs) == 4 and all(r.info.status == "FINISHED" for r in runs)
    # they did run at the same time
    spans = sorted((r.info.start_time, r.info.end_time) for r in runs)
    overlap = max(sum(1 for s, e in spans if s <= t < e) for t, _ in spans)
    assert overlap >= 2, spans

    reported = tune_results(grid_env)
    for run in runs:
        key = run.data.tags[L.TAG_TRIAL_KEY]
        epochs = [r for r in reported[key] if r.get("kind") == "epoch"]
        expected_epoch_points = sum(len(Report.decode(r).metrics) for r in epochs)
        done = [Report.decode(r) for r in reported[key] if r.get("kind") == "done"][-1]
        n_curve = 10 if run.data.tags[L.TAG_METHOD] == "s3" else 1
        assert len(done.curve) == n_curve
        # per curve point: its accuracies and keep ratio, and its cost (the frontier) where reported
        curve_points = sum(1 for row in done.curve for k in L.CURVE_LOGGED if k in row)
        assert curve_points >= n_curve * len(L.CURVE_COLUMNS)
        assert set(L.SUMMARY_METRICS) <= set(done.summary)     # and the diagnostics' diag/... beside them
        expected = expected_epoch_points + curve_points + len(done.summary) + len(done.experts)
        got = sum(len(client.get_metric_history(run.info.run_id, k)) for k in run.data.metrics)
        assert got == expected, f"{run.info.run_name}: {got} metric points in MLflow, {expected} reported"
        assert_complete_history(client, run, 2, 1)


# ------------------------------------------------------------------------------ 6. Optuna search resumed

TINY_SEARCH = ("--preset", "search", "--num-samples", "4", "--max-concurrent", "1", "--executor", "direct",
               "--set", "d_model=16", "n_layers=1", "n_heads=2", "d_ff=64", "proj_dim=16", "epochs_special=1",
               "epochs_select=1", "probe_l2=[0.01]",
               "--synthetic", "n_train=256", "n_valid=128", "n_test=128", "seq_len=4")
SEARCHED = ("chi", "rho", "batch_size", "lambda_rep", "lambda_dsc", "lambda_aux", "lambda_suff", "lambda_min", "tau",
            "lr")


def test_a_resumed_optuna_search_runs_new_samples(grid_env: Grid):
    """An interrupted search of 4 samples, resumed with the same flags, ends with 4 FINISHED trials
    of 4 distinct sampled configs. (Not `--num-samples 2` then `4 --resume`: the sample count is
    part of the grid id today, so that starts another grid instead of resuming this one.)
    Setup problems raise RuntimeError, so that only the final check can be the expected failure."""
    proc = grid_env.start(*TINY_SEARCH)
    try:
        grid_env.wait_started(proc)
        client = grid_env.client()
        wait_for(lambda: len([r for r in trial_runs(client) if r.info.status == "FINISHED"]) >= 2,
                 GRID_TIMEOUT, 0.5, proc, "2 FINISHED samples", grid_env)
        os.killpg(proc.pid, signal.SIGINT)
        if proc.wait(timeout=180) != 130:
            raise RuntimeError(f"the interrupted search did not exit 130:\n{grid_env.output()[-3000:]}")
    finally:
        stop_process_group(proc)
    done_before = len([r for r in trial_runs(client) if r.info.status == "FINISHED"])
    if not 1 <= done_before < 4:
        raise RuntimeError(f"the interrupt came too late to test resume ({done_before} samples finished)")

    resumed = grid_env.run(*TINY_SEARCH, "--resume", timeout=GRID_TIMEOUT)
    if resumed.returncode != 0:
        raise RuntimeError(f"the resumed search failed:\n{resumed.stdout[-2000:]}\n{resumed.stderr[-3000:]}")
    runs = trial_runs(client)
    if any(r.info.status == "RUNNING" for r in runs) or len(parent_runs(client)) != 1:
        raise RuntimeError("the resume left a run RUNNING or made a second parent run")
    finished = [r for r in runs if r.info.status == "FINISHED"]
    configs = {tuple(r.data.params[k] for k in SEARCHED) for r in finished}
    assert len(finished) == 4 and len(configs) == 4, (
        f"{len(finished)} FINISHED samples of {len(configs)} distinct configs after the resume "
        f"({done_before} had finished before it)")
