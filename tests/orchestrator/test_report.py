"""The report against a real MLflow store laid out as orchestrator.mlflow_layout says.

The store (sqlite in tmp) holds one parent run and its trials: S3 at chi 4 and 8 x batch 64 and
256 x seeds 0 and 1, a CLIP baseline logged at p = 1.0 only, one FAILED and one RUNNING trial.
"""
from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:  # plain `pytest` without an installed package
    sys.path.insert(0, str(REPO_ROOT))

from mlflow.entities import Metric, Param, RunTag  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402

from orchestrator import mlflow_layout as layout  # noqa: E402
from orchestrator.report import ReportError, build_report, log_report_to_parent  # noqa: E402

BENCHMARK = "mosei"
KEEP_RATIOS = [round(0.1 * i, 1) for i in range(10, 0, -1)]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def inverted_u(peak: float, top: float, seed: int, offset: float = 0.0) -> dict[float, float]:
    """A plausible accuracy curve (fraction) over p, peaking at p = peak."""
    # the wiggle is smaller than the curvature between neighbouring p: the argmax is the peak
    return {p: round(top - 0.08 * (p - peak) ** 2 - 0.0003 * ((seed * 7 + round(p * 10)) % 3)
                     + 0.006 * (seed - 0.5) + offset, 5) for p in KEEP_RATIOS}


def log_trial_run(client: MlflowClient, experiment_id: str, parent_id: str, *, method: str,
                  seed: int, chi: int = 1, batch_size: int = 256,
                  valid_acc: dict[float, float] | None = None,
                  test_acc: dict[float, float] | None = None, status: str = "FINISHED",
                  failure_reason: str | None = None, preset: str = "test") -> str:
    """One trial child run, as the orchestrator logs it; returns its run id."""
    config = {"method": method, "chi": chi, "rho": 4, "batch_size": batch_size,
              "lambda_rep": 1.0, "lambda_min": 0.1, "tau": 0.07, "lr": 1e-3, "epochs": 5,
              "seed": seed, "benchmark": BENCHMARK}
    tags = {
        layout.TAG_ROLE: layout.ROLE_TRIAL, layout.TAG_PARENT: parent_id,
        layout.TAG_TRIAL_KEY: f"{method}-{chi}-{batch_size}-{seed}", layout.TAG_METHOD: method,
        layout.TAG_PRESET: preset, layout.TAG_BENCHMARK: BENCHMARK, layout.TAG_SEED: str(seed),
        layout.TAG_CODE_VERSION: "test",
    }
    if failure_reason:
        tags[layout.TAG_FAILURE] = failure_reason
    run = client.create_run(experiment_id, tags=tags,
                            run_name=f"{method}_chi{chi}_bs{batch_size}_s{seed}")
    run_id = run.info.run_id
    now = int(time.time() * 1000)
    metrics = []
    for epoch in range(3):
        metrics.append(Metric("special/loss", 2.0 - 0.3 * epoch, now, epoch))
    if valid_acc:
        for p in valid_acc:
            step = layout.curve_step(p)
            f1 = {"valid_f1": valid_acc[p] - 0.02, "test_f1": test_acc[p] - 0.02}
            for key, value in (("valid_acc", valid_acc[p]), ("test_acc", test_acc[p]), *f1.items()):
                metrics.append(Metric(key, value, now, step))
        best_p = max(valid_acc, key=lambda p: (valid_acc[p], p))
        summary = {"best_keep_ratio": best_p, "best_valid_acc": valid_acc[best_p],
                   "test_acc_at_best": test_acc[best_p], "test_f1_at_best": test_acc[best_p],
                   "test_acc_no_prune": test_acc[1.0], "valid_acc_no_prune": valid_acc[1.0]}
        metrics += [Metric(k, v, now, 0) for k, v in summary.items()]
    client.log_batch(run_id, metrics=metrics,
                     params=[Param(k, str(v)) for k, v in config.items()],
                     tags=[RunTag(k, v) for k, v in tags.items() if k == layout.TAG_TRIAL_KEY])
    if status != "RUNNING":
        client.set_terminated(run_id, status=status)
    return run_id


# chi=4, batch 64: validation and test disagree on p, so choosing p on test would be caught.
# seed 0: valid peaks at p=0.3 (test there 0.74) while test peaks at p=0.6 (0.82);
# seed 1: valid peaks at p=0.5 (test there 0.77).
def _chi4_bs64(seed: int) -> tuple[dict, dict]:
    valid, test = inverted_u(0.5, 0.78, seed), inverted_u(0.5, 0.78, seed)
    if seed == 0:
        valid[0.3], test[0.3], test[0.6] = 0.80, 0.74, 0.82
    else:
        valid[0.5], test[0.5] = 0.795, 0.77
    return valid, test


EXPECTED_CHI4_BS64 = {"test_acc_mean": 75.5, "test_acc_std": math.sqrt(4.5),
                      "keep_ratio_mean": 0.4, "valid_acc_mean": 79.75}


@pytest.fixture(scope="module")
def empty_db(tmp_path_factory) -> Path:
    """A fresh store with no experiment but Default; creating one costs seconds, so copy it."""
    path = tmp_path_factory.mktemp("empty") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture(scope="module")
def store(tmp_path_factory, empty_db):
    root = tmp_path_factory.mktemp("store")
    shutil.copy(empty_db, root / "mlflow.db")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    experiment_id = client.create_experiment(layout.experiment_name(BENCHMARK),
                                             artifact_location=(root / "artifacts").as_uri())
    parent = client.create_run(experiment_id, run_name="grid", tags={
        layout.TAG_ROLE: layout.ROLE_PARENT, layout.TAG_GRID_ID: "g1",
        layout.TAG_PRESET: "test", layout.TAG_BENCHMARK: BENCHMARK})
    parent_id = parent.info.run_id
    for chi, peak in ((4, 0.5), (8, 0.3)):
        for batch_size in (64, 256):
            for seed in (0, 1):
                if chi == 4 and batch_size == 64:
                    valid, test = _chi4_bs64(seed)
                else:
                    valid = inverted_u(peak, 0.76 + 0.01 * (chi == 8), seed)
                    test = inverted_u(peak, 0.75 + 0.01 * (chi == 8), seed, offset=-0.003)
                log_trial_run(client, experiment_id, parent_id, method="s3", seed=seed, chi=chi,
                              batch_size=batch_size, valid_acc=valid, test_acc=test)
    for seed, (valid, test) in enumerate([(0.745, 0.741), (0.751, 0.739)]):
        log_trial_run(client, experiment_id, parent_id, method="clip", seed=seed,
                      valid_acc={1.0: valid}, test_acc={1.0: test})
    log_trial_run(client, experiment_id, parent_id, method="s3", seed=2, chi=8, batch_size=64,
                  status="FAILED", failure_reason="CUDA out of memory in Stage 1 (epoch 3)")
    log_trial_run(client, experiment_id, parent_id, method="s3", seed=2, chi=4, batch_size=256,
                  status="RUNNING")
    client.set_terminated(parent_id)
    return {"uri": uri, "client": client, "parent_id": parent_id, "root": root}


@pytest.fixture(scope="module")
def report(store, tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("report")
    return build_report(store["client"], out_dir=out_dir, parent_run_id=store["parent_id"])


def _row(rows, **match):
    found = [r for r in rows if all(r[k] == v for k, v in match.items())]
    assert len(found) == 1, (match, rows)
    return found[0]


def test_files_exist_and_pngs_are_valid(report):
    names = {p.name for p in report.paths}
    assert names == {"curves_mosei.png", "batch_size_mosei.png", "report.md", "index.html"}
    for name in ("curves_mosei.png", "batch_size_mosei.png"):
        data = (report.out_dir / name).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 20_000
    assert not [p for p in report.out_dir.iterdir() if p.name.endswith(".tmp")]
    html = (report.out_dir / "index.html").read_text()
    assert html.count("data:image/png;base64,") == 2
    markdown = (report.out_dir / "report.md").read_text()
    assert "(curves_mosei.png)" in markdown and "(batch_size_mosei.png)" in markdown


def test_p_is_chosen_on_validation_not_test(report):
    config = _row(report.configs, method="s3", chi=4, batch_size=64)
    assert config["n_seeds"] == 2
    for key, expected in EXPECTED_CHI4_BS64.items():
        assert config[key] == pytest.approx(expected, abs=1e-6), key
    # the table's chi=4 row picks batch 64: the best mean validation accuracy
    row = _row(report.table, method="s3", chi=4)
    assert row["batch_size"] == 64 and row["n_configs"] == 2
    assert row["test_acc_mean"] == pytest.approx(75.5)
    assert row["paper_best"] == "77.18 (p~0.1)"


def test_table_matches_hand_computed_means(report):
    clip = _row(report.table, method="clip", chi=1)
    assert clip["n_seeds"] == 2 and clip["keep_ratio_mean"] == 1.0
    assert clip["test_acc_mean"] == pytest.approx((74.1 + 73.9) / 2)
    assert clip["test_acc_std"] == pytest.approx(math.sqrt(0.02))
    assert clip["paper_best"] == "~74.5"
    chi8 = _row(report.table, method="s3", chi=8)
    assert chi8["keep_ratio_mean"] == pytest.approx(0.3)  # both seeds' valid curves peak there
    assert chi8["paper_best"] == "77.95 (p~0.3)" and chi8["paper_no_prune"] == "75.78"
    config = _row(report.configs, method="s3", chi=8, batch_size=256)
    tests = [inverted_u(0.3, 0.76, seed, offset=-0.003)[0.3] * 100 for seed in (0, 1)]
    assert config["test_acc_mean"] == pytest.approx(sum(tests) / 2)
    no_prune = [inverted_u(0.3, 0.76, seed, offset=-0.003)[1.0] * 100 for seed in (0, 1)]
    assert config["test_acc_no_prune_mean"] == pytest.approx(sum(no_prune) / 2)


def test_failed_and_running_trials_are_reported(report):
    assert report.counts["FINISHED"] == 10
    assert report.counts["FAILED"] == 1 and report.counts["RUNNING"] == 1
    assert report.failed[0]["failure_reason"] == "CUDA out of memory in Stage 1 (epoch 3)"
    assert any("partial" in note for note in report.notes)
    for name in ("report.md", "index.html"):
        text = (report.out_dir / name).read_text()
        assert "CUDA out of memory in Stage 1 (epoch 3)" in text
        assert "75.50 ± 2.12" in text


def test_log_report_to_parent(store, report):
    log_report_to_parent(store["client"], store["parent_id"], report.out_dir)
    listed = {a.path for a in store["client"].list_artifacts(store["parent_id"],
                                                             layout.REPORT_ARTIFACT_DIR)}
    assert f"{layout.REPORT_ARTIFACT_DIR}/index.html" in listed


def _cli(*args, cwd):
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["PYTHONPATH"] = str(REPO_ROOT)
    return subprocess.run([sys.executable, "-m", "orchestrator.report", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def test_cli_writes_the_report(store, tmp_path):
    result = _cli("--tracking-uri", store["uri"], "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out" / "index.html").exists()


def test_cli_on_missing_and_empty_store_exits_2(tmp_path, empty_db):
    # no mlflow.db in cwd: the default URI points at nothing, and nothing gets created
    result = _cli(cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "no MLflow store" in result.stderr
    assert not (tmp_path / "mlflow.db").exists()
    # a store with no s3-* experiment
    shutil.copy(empty_db, tmp_path / "mlflow.db")
    result = _cli("--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().count("\n") == 0 and "no experiments" in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_experiment_or_no_finished_trial_is_an_error(store, tmp_path):
    client = store["client"]
    with pytest.raises(ReportError, match="s3-nope"):
        build_report(client, ["s3-nope"], tmp_path)
    experiment_id = client.create_experiment("pending")
    parent = client.create_run(experiment_id, tags={layout.TAG_ROLE: layout.ROLE_PARENT})
    log_trial_run(client, experiment_id, parent.info.run_id, method="s3", seed=0, chi=2,
                  status="RUNNING")
    with pytest.raises(ReportError, match="no finished trials"):
        build_report(client, ["pending"], tmp_path)
    assert not list(tmp_path.iterdir())


def test_two_named_experiments_on_one_benchmark_are_separate_sections(tmp_path):
    """Different data (say two synthetic labels) on the same benchmark must never be averaged."""
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    for name, top in (("labelA", 0.9), ("labelB", 0.6)):
        exp = client.create_experiment(name)
        parent = client.create_run(exp, tags={layout.TAG_ROLE: layout.ROLE_PARENT}).info.run_id
        for seed in (0, 1):
            curve = {p: top for p in (1.0, 0.5)}
            log_trial_run(client, exp, parent, method="s3", seed=seed, chi=4, valid_acc=curve, test_acc=curve)
    res = build_report(client, ["labelA", "labelB"], out_dir=str(tmp_path / "out"))
    by_section = {r["benchmark"]: r for r in res.table}
    assert len(by_section) == 2, by_section.keys()
    means = sorted(c["test_acc_mean"] for c in res.configs)
    assert means == pytest.approx([60.0, 90.0])    # percent; not one section averaging to 75


def test_every_report_file_arrives_by_an_atomic_rename(store, tmp_path, monkeypatch):
    """Every file of the report is written under another name and renamed into place, so a
    reader (or a crash) never meets half a file; a rename that fails leaves the previous report
    as it was and no temporary file."""
    out = tmp_path / "rep"
    build_report(store["client"], out_dir=out, parent_run_id=store["parent_id"])
    real_replace = os.replace
    renamed = []

    def recording_replace(src, dst, *args, **kwargs):
        renamed.append(Path(dst).resolve())
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", recording_replace)
    build_report(store["client"], out_dir=out, parent_run_id=store["parent_id"])
    files = {p.resolve() for p in out.iterdir()}
    assert files and files <= set(renamed), f"written in place: {sorted(files - set(renamed))}"
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def failing_replace(src, dst, *args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError):
        build_report(store["client"], out_dir=out, parent_run_id=store["parent_id"])
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
