"""Helpers shared by the reliability tests (imported by them; conftest.py puts this folder on sys.path).
store, find real Ray processes. Nothing here mocks Ray, Optuna or MLflow.

Every test keeps its MLflow store, Ray storage, report dir and cwd under its tmp_path. Ray is
always started by the CLI itself with --num-cpus 2 (a private local instance, address='local');
these tests never run `ray stop`.
"""
from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
PY = sys.executable
RUN_GRID = str(REPO / "run_grid.py")
TERMINAL = ("FINISHED", "FAILED", "KILLED")
SPLITS = ("train", "valid", "test")


def cli_env(**extra) -> dict:
    env = dict(os.environ)
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("RAY_ADDRESS", None)
    env.update({"PYTHONUNBUFFERED": "1", "RAY_USAGE_STATS_ENABLED": "0", "TQDM_DISABLE": "1",
                "PYTHONPATH": str(REPO) + os.pathsep + env.get("PYTHONPATH", "")})
    env.update(extra)
    return env


def run_cli(args: list[str], cwd, timeout: float = 240, **env) -> subprocess.CompletedProcess:
    return subprocess.run([PY, *args], cwd=str(cwd), capture_output=True, text=True, timeout=timeout,
                          env=cli_env(**env))


class Grid:
    """One run_grid.py setup under a tmp dir: its store, storage, report dir and cwd."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.db = self.root / "mlflow.db"
        self.uri = f"sqlite:///{self.db}"
        self.storage = self.root / "s3_runs"
        self.report = self.root / "report"
        self.log = self.root / "driver.log"
        self.env: dict = {}            # extra environment of the CLI (e.g. an S3 endpoint's)

    def argv(self, *extra: str) -> list[str]:
        return [RUN_GRID, "--num-cpus", "2", "--tracking-uri", self.uri, "--storage-path", str(self.storage),
                "--report-dir", str(self.report), "--verbose", "0",
                # these faults target Ray Train's workers; an explicit --executor in extra wins
                *(() if "--executor" in extra else ("--executor", "train")), *extra]

    def run(self, *extra: str, timeout: float = 420) -> subprocess.CompletedProcess:
        proc = run_cli(self.argv(*extra), self.root, timeout=timeout, **self.env)
        with open(self.log, "a") as f:
            f.write(f"$ run_grid {' '.join(extra)}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}\n")
        return proc

    def start(self, *extra: str) -> subprocess.Popen:
        """run_grid.py in the background, its own process group, output to driver.log."""
        f = open(self.log, "a")
        f.write(f"$ run_grid {' '.join(extra)} (background)\n")
        f.flush()
        return subprocess.Popen([PY, *self.argv(*extra)], cwd=str(self.root), stdout=f, stderr=subprocess.STDOUT,
                                text=True, env=cli_env(**self.env), start_new_session=True)

    def client(self):
        from mlflow.tracking import MlflowClient
        return MlflowClient(tracking_uri=self.uri)

    def wait_started(self, proc: subprocess.Popen, timeout: float = 240) -> None:
        """Wait until the background driver has created its MLflow store and parent run. A reader
        that touches a store still being created runs MLflow's schema migrations at the same time
        as the driver, and one of the two dies on 'table ... already exists'."""
        wait_for(lambda: "MLflow parent run" in self.output(), timeout, 0.5, proc, "the driver's parent run", self)

    def output(self) -> str:
        return self.log.read_text() if self.log.exists() else ""


def all_runs(client) -> list:
    exps = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(exps, max_results=50000) if exps else []


def trial_runs(client) -> list:
    return [r for r in all_runs(client) if r.data.tags.get("s3.role") == "trial"]


def parent_runs(client) -> list:
    return [r for r in all_runs(client) if r.data.tags.get("s3.role") == "parent"]


def wait_for(predicate, timeout: float, interval: float = 1.0, proc: subprocess.Popen | None = None,
             what: str = "condition", log: "Grid | None" = None):
    """Poll predicate() until it returns a truthy value; fail on timeout or if proc exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except Exception:  # the store may not exist yet / be mid-creation
            value = None
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            tail = log.output()[-4000:] if log is not None else ""
            pytest.fail(f"the process exited (rc {proc.returncode}) before {what}\n{tail}")
        time.sleep(interval)
    tail = log.output()[-4000:] if log is not None else ""
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}\n{tail}")


def stop_process_group(proc: subprocess.Popen, timeout: float = 60) -> None:
    """Leave nothing of a background run_grid.py behind (it and the Ray it started)."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGINT)
            proc.wait(timeout=timeout)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=30)


def ray_processes_of(session_pid_hint: int | None = None, needle: str = "RayTrainWorker") -> list[int]:
    """PIDs whose /proc cmdline contains `needle` (Ray sets the process title to ray::<Actor>...),
    owned by this user. No psutil: /proc is enough on Linux."""
    out = []
    uid = os.getuid()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            if entry.stat().st_uid != uid:
                continue
            cmd = Path(entry.path, "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if needle in cmd:
            out.append(int(entry.name))
    return out


def descendants(pid: int) -> set[int]:
    """All descendants of pid, from /proc/*/stat (ppid field)."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    out, todo = set(), [pid]
    while todo:
        p = todo.pop()
        for c in children.get(p, []):
            if c not in out:
                out.add(c)
                todo.append(c)
    return out


def alive(pid: int) -> bool:
    """True while pid runs. A zombie (state Z: exited, not yet reaped) counts as gone: once its
    parent is dead it waits on PID 1 to reap it, and some container inits never do."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def reap(pids, wait_s: float = 60) -> dict[int, str]:
    """Give the Ray processes a killed driver started `wait_s` to go, then SIGKILL those left
    (ours: started by the test's driver). Returns {pid: cmdline} of those that outlived the wait."""
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline and any(alive(p) for p in pids):
        time.sleep(1)
    orphans = {p: cmdline(p) for p in pids if alive(p)}
    for p in orphans:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return orphans


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")[:200]
    except OSError:
        return "?"


def metric_steps(client, run_id: str, key: str) -> list[int]:
    return [m.step for m in client.get_metric_history(run_id, key)]


# ------------------------------------------------------------------------------- data files

def mb_split(rng, n=8, t=3, dims=(35, 74, 300), labels=None):
    v, a, x = (rng.standard_normal((n, t, d)).astype(np.float32) for d in dims)
    if labels is None:
        labels = rng.standard_normal((n, 1, 1))
    return {"vision": v, "audio": a, "text": x, "labels": labels}


def mb_data(seed=0, n=8, t=3, dims=(35, 74, 300)) -> dict:
    """A MultiBench affect pickle's layout: {split: {vision, audio, text, labels}} (docs/DATA.md)."""
    rng = np.random.default_rng(seed)
    return {s: mb_split(rng, n=n, t=t, dims=dims) for s in SPLITS}


def write_pickle(path, obj) -> Path:
    with open(path, "wb") as f:
        pickle.dump(obj, f)
    return Path(path)


def tree_bytes(root: Path) -> dict[str, bytes]:
    """relative path -> bytes of every regular file under root."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(Path(root).rglob("*")) if p.is_file()}


def leftovers(*roots: Path) -> list[str]:
    """Temporary files or directories a crashed writer would leave: *.tmp, .tmp-*."""
    bad = []
    for root in roots:
        for p in Path(root).rglob("*"):
            if p.name.endswith(".tmp") or p.name.startswith(".tmp-") or ".tmp." in p.name:
                bad.append(str(p))
    return bad
