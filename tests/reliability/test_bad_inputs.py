"""Bad input never crashes with a traceback, never half-writes a file, never harms what is there.

One parametrised test over the inputs a user can get wrong. Every case runs the real CLI in a
subprocess (run_grid.py, `python -m s3core`, `python -m orchestrator.report`,
`python -m orchestrator.check_cluster`) in a work dir that already holds a user's MLflow store
(one FINISHED run) and data files, and checks:

- non-zero exit;
- stderr is exactly one non-empty line starting with "error:" that contains words naming the
  fix. Exception: argparse errors (unknown flag, unknown preset) keep argparse's own format,
  "usage: ..." lines then one "<prog>: error: ..." line, exit 2; we assert that shape;
- no *.tmp / .tmp-* leftovers in the work dir or the data dir;
- no MLflow run left RUNNING, the pre-existing store holds the same runs with the same statuses;
- every pre-existing data file keeps its bytes;
- the payload of a malicious pickle never ran (its marker file does not exist).
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from relhelp import RUN_GRID, leftovers, mb_data, run_cli, tree_bytes, write_pickle

MARKER_NAME = "PAYLOAD_RAN"


@dataclass
class Case:
    build: Callable[[Path, Path], list[str]]     # (work dir, data dir) -> argv after the python binary
    expect: tuple[str, ...]                      # substrings of the error line (case-insensitive)
    argparse_style: bool = False
    marks: list = field(default_factory=list)


def grid(work: Path, *extra: str) -> list[str]:
    return [RUN_GRID, "--preset", "smoke", "--num-cpus", "2", "--tracking-uri", f"sqlite:///{work / 'mlflow.db'}",
            "--storage-path", str(work / "s3_runs"), "--report-dir", str(work / "report"), *extra]


def s3core(*extra: str) -> list[str]:
    return ["-m", "s3core", "--quiet", *extra]


# --- data files, built with plain pickle.dump / np.savez in the data dir -------------------------

def mb_file(data: Path, name="mosi_raw.pkl", mutate=None, **kw) -> Path:
    d = mb_data(**kw)
    if mutate:
        mutate(d)
    return write_pickle(data / name, d)


def npz_file(data: Path, name="mine.npz", n=(12, 6, 6), mutate=None) -> Path:
    rng = np.random.default_rng(0)
    arrays = {}
    for s, k in zip(("train", "valid", "test"), n):
        arrays[f"{s}_a"] = rng.standard_normal((k, 3, 4)).astype(np.float32)
        arrays[f"{s}_b"] = rng.standard_normal((k, 2, 5)).astype(np.float32)
        arrays[f"{s}_labels"] = (np.arange(k) % 2).astype(np.int64)
    if mutate:
        mutate(arrays)
    np.savez(data / name, **arrays)
    return data / name


def nan_vision(d):
    d["train"]["vision"][0, 0, 0] = np.nan


def inf_text(d):
    d["valid"]["text"][1, 1, 1] = np.inf


def short_audio(d):
    d["train"]["audio"] = d["train"]["audio"][:-1]


def three_labels(d):
    for s in d:
        d[s]["labels"] = (np.arange(len(d[s]["labels"])) % 3).astype(np.float64)


def truncated(data: Path) -> Path:
    p = mb_file(data)
    raw = p.read_bytes()
    p.write_bytes(raw[: len(raw) // 2])
    return p


class Payload:
    """Unpickling this runs a shell command that creates the marker file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def malicious(data: Path) -> Path:
    d = mb_data()
    d["train"]["id"] = Payload(data.parent / MARKER_NAME)
    return write_pickle(data / "mosi_raw.pkl", d)


def bad_yaml(data: Path) -> Path:
    p = data / "cluster.yaml"
    p.write_text("cluster_name: s3\nprovider: {type: aws\n  region: [us-west-2\n")
    return p


def yaml_without_provider(data: Path) -> Path:
    import yaml
    cfg = yaml.safe_load((Path(RUN_GRID).parent / "clusters" / "gpu.yaml").read_text())
    del cfg["provider"]
    p = data / "cluster.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return p


def empty_store(work: Path) -> str:
    from mlflow.tracking import MlflowClient
    db = work / "empty.db"
    MlflowClient(tracking_uri=f"sqlite:///{db}").search_experiments()  # creates the tables, no runs
    return f"sqlite:///{db}"


CASES: dict[str, Case] = {
    # --- config (run_grid.py and python -m s3core) ---
    "unknown-benchmark": Case(lambda w, d: grid(w, "--benchmark", "nosuch"), ("nosuch", "choose")),
    "chi-not-power-of-two": Case(lambda w, d: grid(w, "--set", "chi=3"), ("chi", "power of two")),
    "grid-chi-zero": Case(lambda w, d: grid(w, "--grid", "chi=[0]"), ("chi", "power of two")),
    "grid-empty-list": Case(lambda w, d: grid(w, "--grid", "chi=[]"), ("chi", "non-empty list")),
    "rho-below-1": Case(lambda w, d: grid(w, "--set", "rho=0"), ("rho", ">= 1")),
    "top-k-above-n-expert": Case(lambda w, d: grid(w, "--set", "top_k=99"), ("top_k", "N_expert")),
    "keep-ratio-above-1": Case(lambda w, d: grid(w, "--set", "keep_ratios=[1.0,1.5]"), ("keep-ratio", "(0, 1]")),
    "keep-ratio-zero-s3core": Case(lambda w, d: s3core("--keep-ratios", "1.0", "0.0"), ("keep-ratio", "(0, 1]")),
    "unknown-config-field": Case(lambda w, d: grid(w, "--set", "chii=4"), ("chii", "valid fields")),
    "set-twice-s3core": Case(lambda w, d: s3core("--chi", "4", "--set", "chi=4"), ("chi", "set twice")),
    "heads-not-dividing-d-model": Case(lambda w, d: s3core("--set", "d_model=30", "n_heads=4"),
                                       ("d_model", "divisible")),
    "negative-tau": Case(lambda w, d: grid(w, "--set", "tau=-1"), ("tau", "positive")),
    "batch-larger-than-train": Case(lambda w, d: grid(w, "--set", "batch_size=100000"),
                                    ("batch_size", "lower the batch size")),
    "unknown-preset": Case(lambda w, d: grid(w)[:1] + ["--preset", "nope"], ("nope", "choose from"),
                           argparse_style=True),
    "unknown-flag": Case(lambda w, d: grid(w, "--no-such-flag", "1"), ("unrecognized", "--no-such-flag"),
                         argparse_style=True),
    # --- tracking ---
    "unreachable-mlflow": Case(lambda w, d: grid(w)[:-6] + ["--tracking-uri", "http://127.0.0.1:9"],
                               ("127.0.0.1:9", "start it")),
    "relative-sqlite-uri": Case(lambda w, d: grid(w)[:-6] + ["--tracking-uri", "sqlite:///rel.db"],
                                ("absolute", "sqlite:////")),
    "report-empty-store": Case(lambda w, d: ["-m", "orchestrator.report", "--tracking-uri", empty_store(w),
                                             "--out", str(w / "rep")], ("no experiments", "run run_grid.py")),
    "report-missing-store": Case(lambda w, d: ["-m", "orchestrator.report", "--tracking-uri",
                                               f"sqlite:///{w / 'nope.db'}", "--out", str(w / "rep")],
                                 ("no MLflow store", "--tracking-uri")),
    # --- data ---
    "missing-data-dir": Case(lambda w, d: grid(w, "--benchmark", "mosi", "--data-dir", str(d / "absent")),
                             ("does not exist", "create it")),
    "empty-split-npz": Case(lambda w, d: s3core("--benchmark", "arrays", "--data-dir",
                                                str(npz_file(d, n=(0, 6, 6)))), ("empty", "every split needs")),
    "npz-n-differs-between-modalities": Case(
        lambda w, d: s3core("--benchmark", "arrays", "--data-dir", str(npz_file(
            d, mutate=lambda a: a.update(train_b=a["train_b"][:-1])))), ("one row per label",)),
    "npz-nan-features": Case(
        lambda w, d: s3core("--benchmark", "arrays", "--data-dir", str(npz_file(
            d, mutate=lambda a: a["valid_a"].__setitem__((0, 0, 0), np.nan)))), ("NaN", "clean")),
    "npz-float-labels": Case(
        lambda w, d: s3core("--benchmark", "arrays", "--data-dir", str(npz_file(
            d, mutate=lambda a: a.update(test_labels=a["test_labels"].astype(np.float32))))), ("integer",)),
    "urfunny-non-binary-labels": Case(
        lambda w, d: grid(w, "--benchmark", "urfunny", "--label-rule", "binary", "--data-dir",
                          str(mb_file(d, "humor.pkl", three_labels, dims=(371, 81, 300)).parent)),
        ("binary", "use label_rule")),
    "multibench-n-differs-between-modalities": Case(
        lambda w, d: s3core("--benchmark", "mosi", "--data-dir", str(mb_file(d, mutate=short_audio).parent)),
        ("mismatched sample counts",)),
    "multibench-wrong-dims": Case(
        lambda w, d: grid(w, "--benchmark", "mosi", "--data-dir", str(mb_file(d, dims=(10, 10, 10)).parent)),
        ("dims", "right file")),
    "multibench-nan": Case(
        lambda w, d: s3core("--benchmark", "mosi", "--data-dir", str(mb_file(d, mutate=nan_vision).parent)),
        ("NaN", "re-download")),
    "multibench-inf": Case(
        lambda w, d: s3core("--benchmark", "mosi", "--data-dir", str(mb_file(d, mutate=inf_text).parent)),
        ("Inf", "re-download")),
    "truncated-pickle": Case(
        lambda w, d: s3core("--benchmark", "mosi", "--data-dir", str(truncated(d).parent)),
        ("truncated",)),
    "pickle-code-payload": Case(
        lambda w, d: s3core("--benchmark", "mosi", "--data-dir", str(malicious(d).parent)),
        ("posix.system",)),
    "unknown-label-rule": Case(
        lambda w, d: s3core("--benchmark", "mosi", "--label-rule", "sometimes", "--data-dir",
                            str(mb_file(d).parent)), ("label_rule", "choose one of")),
    # --- cluster files ---
    "cluster-yaml-malformed": Case(lambda w, d: ["-m", "orchestrator.check_cluster", str(bad_yaml(d))],
                                   ("not valid YAML", "line 3")),
    "cluster-yaml-no-provider": Case(lambda w, d: ["-m", "orchestrator.check_cluster",
                                                   str(yaml_without_provider(d))], ("provider",)),
}


def store_state(db: Path) -> list[tuple]:
    """(run id, status, end time, metrics) of every run, read through MLflow."""
    from mlflow.tracking import MlflowClient
    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    exps = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(exps, max_results=1000) if exps else []
    return sorted((r.info.run_id, r.info.status, r.info.end_time, tuple(sorted(r.data.metrics.items())))
                  for r in runs)


def assert_one_line_error(proc, case: Case):
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert "Traceback" not in proc.stderr, proc.stderr
    if case.argparse_style:
        assert proc.returncode == 2
        assert lines and lines[0].startswith("usage:"), proc.stderr
        error_lines = [ln for ln in lines if ": error: " in ln]
        assert len(error_lines) == 1 and lines[-1] == error_lines[0], proc.stderr
        line = lines[-1]
    else:
        assert len(lines) == 1, f"expected one stderr line, got {len(lines)}:\n{proc.stderr}"
        line = lines[0]
        assert line.startswith("error:"), line
    for words in case.expect:
        assert words.lower() in line.lower(), f"{words!r} not in {line!r}"
    return line


# Each run_grid.py case imports Ray, MLflow, pandas (~5 s CPU): a representative few run by default,
# the rest with -m slow, to keep the default suite fast.
SLOW_CASES = {'unknown-benchmark', 'grid-chi-zero', 'grid-empty-list', 'rho-below-1', 'top-k-above-n-expert', 'keep-ratio-above-1', 'unknown-config-field', 'negative-tau', 'relative-sqlite-uri', 'missing-data-dir', 'urfunny-non-binary-labels', 'multibench-wrong-dims'}
for _name in SLOW_CASES:
    CASES[_name].marks.append(pytest.mark.slow)


@pytest.mark.parametrize("name", [pytest.param(n, marks=c.marks) for n, c in CASES.items()])
def test_bad_input_fails_cleanly(name, tmp_path, user_store):
    case = CASES[name]
    work, data = tmp_path / "work", tmp_path / "data"
    work.mkdir()
    data.mkdir()
    shutil.copy(user_store, work / "mlflow.db")
    (data / "notes.txt").write_text("the user's own file\n")
    argv = case.build(work, data)
    before_store = store_state(work / "mlflow.db")
    before_data = tree_bytes(data)

    proc = run_cli(argv, work, timeout=180)

    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert_one_line_error(proc, case)
    assert leftovers(work, data) == []
    assert not (tmp_path / MARKER_NAME).exists(), "the pickle's payload ran"
    after_data = tree_bytes(data)
    for rel, raw in before_data.items():
        assert after_data.get(rel) == raw, f"{rel} was changed or removed"
    assert store_state(work / "mlflow.db") == before_store
    for db in work.glob("*.db"):
        assert all(status != "RUNNING" for _, status, _, _ in store_state(db)), db


def test_every_case_is_in_the_reliability_doc_and_every_documented_case_runs():
    """docs/RELIABILITY.md's bad-input table and CASES name the same cases, and the slow column
    says which of them the default suite skips."""
    doc = (Path(RUN_GRID).parent / "docs" / "RELIABILITY.md").read_text()
    section = doc.split("## Bad inputs", 1)[1].split("\n## ", 1)[0]
    documented, slow = set(), set()
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not line.startswith("| ") or cells[0] in ("Case", "") or set(cells[0]) <= set("-"):
            continue
        names = {n.strip() for n in cells[0].split("/")}
        documented |= names
        if cells[-1] == "yes":
            slow |= names
    assert documented == set(CASES), (f"documented, not tested: {sorted(documented - set(CASES))}; "
                                      f"tested, not documented: {sorted(set(CASES) - documented)}")
    assert slow == SLOW_CASES
