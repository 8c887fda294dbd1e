"""The orchestrator end to end: real Ray Tune, Ray Train, Optuna and MLflow, no mocks."""
import csv
import json

import pytest
from mlflow.tracking import MlflowClient

from orchestrator import mlflow_layout as L
from orchestrator.contract import TrialSpec
from orchestrator.plan import Execution, GridError, ResourceRequest, check_resources, grid_trials, plan_execution
from search_spaces import PRESETS, PresetError, load_preset


def Args(**kw) -> ResourceRequest:
    defaults = dict(executor="train", gpus_per_trial=0.0, workers_per_trial=1, cpus_per_worker=None,
                    max_concurrent=None, max_failures=2, storage_path="/tmp/x", ray_address=None, num_cpus=None,
                    num_gpus=None)
    return ResourceRequest(**{**defaults, **kw})


def test_every_preset_loads_and_its_trials_validate():
    for name in PRESETS:
        preset = load_preset(name)
        for key in ("benchmarks", "base", "grid", "seeds", "baselines", "search"):
            assert hasattr(preset, key), (name, key)
        if preset.search is None:
            trials = grid_trials(preset, preset.benchmarks, preset.seeds, {})
            for t in trials:
                t.s3_config().validate()
            assert len({t.key() for t in trials}) == len(trials), f"{name}: duplicate trials"
    with pytest.raises(PresetError, match="choose one of"):
        load_preset("nope")


def test_paper_preset_is_the_papers_grid():
    preset = load_preset("paper")
    trials = grid_trials(preset, ["mosei"], preset.seeds, {})
    s3 = [t for t in trials if t.method == "s3"]
    assert sorted({t.overrides["chi"] for t in s3}) == [2, 4, 8]
    assert sorted({t.overrides["batch_size"] for t in s3}) == [64, 128, 256, 512]
    assert len(s3) == 3 * 4 * 3
    assert tuple(t.s3_config().keep_ratios for t in s3)[0] == (1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1)
    # the baselines are tuned like S3 (issue 9.5): the same batch sizes; the ablation the same chi too
    assert len([t for t in trials if t.method == "clip"]) == 4 * 3
    assert len([t for t in trials if t.method == "supervised"]) == 4 * 3
    assert len([t for t in trials if t.method == "s3_no_select"]) == 3 * 4 * 3
    assert len([t for t in trials if t.method == "raw_probe"]) == 3
    assert sorted({t.overrides["batch_size"] for t in trials if t.method == "clip"}) == [64, 128, 256, 512]


def test_trial_key_is_stable_and_sensitive():
    a = TrialSpec("synthetic", "s3", 0, "smoke", {"chi": 2, "batch_size": 64})
    b = TrialSpec("synthetic", "s3", 0, "smoke", {"batch_size": 64, "chi": 2})
    assert a.key() == b.key()
    assert a.key() != TrialSpec("synthetic", "s3", 1, "smoke", {"chi": 2, "batch_size": 64}).key()
    assert TrialSpec.from_config({"spec": a.to_dict()}) == a
    # run names show the fields the grid varies; they are presentation, not identity
    labelled = TrialSpec("synthetic", "s3", 0, "smoke", {"chi": 2, "batch_size": 64, "tau": 0.1}, ("tau",))
    assert "tau=0.1" in labelled.short() and "tau" not in a.short()
    assert labelled.key() == TrialSpec("synthetic", "s3", 0, "smoke", {"chi": 2, "batch_size": 64, "tau": 0.1}).key()
    flat = {"benchmark": "synthetic", "method": "s3", "seed": 0, "preset": "search", "overrides": {"tau": 0.1},
            "chi": 4}
    assert TrialSpec.from_config(flat).overrides == {"tau": 0.1, "chi": 4}


def test_the_search_space_pickles_with_its_constants():
    """Tune checkpoints its searcher by pickling it, define-by-run space included."""
    import pickle

    import optuna

    from orchestrator.grid import StudySpace

    space = pickle.loads(pickle.dumps(StudySpace(load_preset("search").search.space,
                                                 {"benchmark": "synthetic", "seed": 3})))
    study = optuna.create_study()
    constants = space(study.ask())
    assert constants == {"benchmark": "synthetic", "seed": 3}
    assert {"chi", "tau", "lr"} <= set(study.trials[0].params)


def test_grid_override_replaces_a_field_and_rejects_non_lists():
    preset = load_preset("smoke")
    trials = grid_trials(preset, ["synthetic"], [0], {}, {"chi": [2, 8], "tau": [0.1, 0.2]})
    assert len([t for t in trials if t.method == "s3"]) == 4
    with pytest.raises(GridError, match="non-empty list"):
        grid_trials(preset, ["synthetic"], [0], {}, {"chi": 4})


def test_plan_shares_cpus_and_packs_fractional_gpus():
    cpu = plan_execution(Args(), {"CPU": 2.0})
    assert cpu.max_concurrent == 2 and cpu.workers_per_trial == 1
    assert 2 * (cpu.cpus_per_worker + 0.01) <= 2.0          # both trials fit: none waits in PENDING
    gpu = plan_execution(Args(gpus_per_trial=0.25), {"CPU": 16.0, "GPU": 1.0})
    assert gpu.max_concurrent == 4 and gpu.gpus_per_worker == 0.25
    ddp = plan_execution(Args(gpus_per_trial=2), {"CPU": 16.0, "GPU": 4.0})
    assert ddp.workers_per_trial == 2 and ddp.gpus_per_worker == 1.0 and ddp.max_concurrent == 2


def test_missing_gpu_is_refused_before_anything_waits():
    ex = Execution(1, 1.0, 0.5, 1, "/tmp/x", 0)
    with pytest.raises(GridError, match="GPU"):
        check_resources(ex, {"CPU": 2.0})
    with pytest.raises(GridError, match="CPU"):
        check_resources(Execution(4, 1.0, 0.0, 1, "/tmp/x", 0), {"CPU": 2.0})


def _children(client, parent_id):
    exp = client.get_run(parent_id).info.experiment_id
    return client.search_runs([exp], filter_string=f"tags.`{L.TAG_PARENT}` = '{parent_id}'")


CURVE_METRICS = ("valid_acc", "test_acc", "valid_f1", "test_f1")


def _check_curve_values(client, run, download_dir):
    """What MLflow holds is the trial's curve: at every step curve_step(p), each curve metric's value
    is the one in the run's curve/curve.csv (the curve as the trial returned it), and the summary
    metrics are read off that same logged curve (p chosen on validation)."""
    download_dir.mkdir(parents=True)
    with open(client.download_artifacts(run.info.run_id, "curve/curve.csv", str(download_dir))) as f:
        rows = list(csv.DictReader(f))
    assert rows
    logged = {}
    for name in CURVE_METRICS:
        history = client.get_metric_history(run.info.run_id, name)
        logged[name] = {m.step: m.value for m in history}
        assert len(logged[name]) == len(history) == len(rows), (name, history)
        assert logged[name] == {L.curve_step(float(r["keep_ratio"])): float(r[name]) for r in rows}, name
    summary = run.data.metrics
    valid = logged["valid_acc"]
    assert summary["best_valid_acc"] == max(valid.values())
    best_step = L.curve_step(summary["best_keep_ratio"])
    assert valid[best_step] == max(valid.values())
    assert summary["test_acc_at_best"] == logged["test_acc"][best_step]
    assert summary["test_f1_at_best"] == logged["test_f1"][best_step]
    assert summary["test_acc_no_prune"] == logged["test_acc"][L.curve_step(1.0)]
    assert summary["valid_acc_no_prune"] == valid[L.curve_step(1.0)]


def _check_store(tmp_path, expect_trials: int, workers: int):
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.get_experiment_by_name("s3-synthetic")
    parents = client.search_runs([exp.experiment_id], filter_string=f"tags.`{L.TAG_ROLE}` = '{L.ROLE_PARENT}'")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    parent_id = parents[0].info.run_id
    parent = parents[0]
    # what the MLflow UI shows when it opens: a model-training experiment, the per-method summary
    # on the collapsed parent row, the commit, the settings and the benchmark as a dataset input
    assert exp.tags.get(L.TAG_EXPERIMENT_KIND) == L.EXPERIMENT_KIND_TRAINING
    assert parent.data.tags.get("mlflow.source.git.commit") and parent.data.params["preset"]
    assert "resources.executor" in parent.data.params and "data.benchmarks" in parent.data.params
    (dataset,) = parent.inputs.dataset_inputs
    assert dataset.dataset.name == "synthetic" and len(dataset.dataset.digest) >= 16
    assert any(k.endswith("/test_acc_at_best") for k in parent.data.metrics), parent.data.metrics
    children = _children(client, parent_id)
    assert len(children) == expect_trials
    assert len({c.data.tags[L.TAG_TRIAL_KEY] for c in children}) == expect_trials
    for run in children:
        assert run.info.status == "FINISHED"
        tags, params = run.data.tags, run.data.params
        for tag in (L.TAG_METHOD, L.TAG_SEED, L.TAG_PRESET, L.TAG_CODE_VERSION, L.TAG_TRIAL_KEY, L.TAG_CHI,
                    L.TAG_BATCH_SIZE, L.TAG_DEVICE):
            assert tags.get(tag), tag
        for p in ("chi", "rho", "batch_size", "lambda_rep", "lambda_dsc", "lambda_aux", "lambda_suff", "lambda_min",
                  "tau", "lr", "epochs_special", "seed"):
            assert p in params, p
        method = tags[L.TAG_METHOD]
        assert tags[L.TAG_DEVICE] == "cpu"
        assert [m.step for m in client.get_metric_history(run.info.run_id, L.KEEP_RATIO_METRIC)] == \
            [m.step for m in client.get_metric_history(run.info.run_id, "valid_acc")]
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "valid_acc")]
        expected = [L.curve_step(p) for p in (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)] \
            if method == "s3" else [L.curve_step(1.0)]
        assert sorted(steps) == expected, (method, steps)
        loss = client.get_metric_history(run.info.run_id, "special/loss")
        n_special = int(params["epochs_special"])
        assert sorted(m.step for m in loss) == list(range(n_special)), "one point per epoch, no duplicates"
        if method == "s3":
            sel = client.get_metric_history(run.info.run_id, "select/suff")
            assert sorted(m.step for m in sel) == list(range(n_special, n_special + int(params["epochs_select"])))
        for name in L.SUMMARY_METRICS:
            assert name in run.data.metrics, name
        arts = {a.path for a in client.list_artifacts(run.info.run_id, L.CURVE_ARTIFACT_DIR)}
        assert arts == {"curve/curve.csv", "curve/curve.png"}
        assert {a.path for a in client.list_artifacts(run.info.run_id, L.MODEL_ARTIFACT_DIR)} == {"model/model.pt"}
        _check_curve_values(client, run, tmp_path / "artifacts" / run.info.run_id)
        if method == "clip":
            assert params["chi"] == "1"   # the dense baseline logs what it really trains
    report_arts = {a.path for a in client.list_artifacts(parent_id, L.REPORT_ARTIFACT_DIR)}
    assert "report/index.html" in report_arts and "report/report.md" in report_arts
    assert (tmp_path / "report" / "index.html").exists()
    assert (tmp_path / "report" / "curves_synthetic.png").stat().st_size > 10_000
    return client, children


def test_smoke_grid_end_to_end_one_worker(tmp_path, grid_runner):
    proc = grid_runner(tmp_path, "--preset", "smoke", "--executor", "train")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "[2/2] done" in proc.stdout
    _check_store(tmp_path, expect_trials=2, workers=1)


def test_smoke_grid_end_to_end_direct_executor(tmp_path, grid_runner):
    proc = grid_runner(tmp_path, "--preset", "smoke", "--executor", "direct", "--max-concurrent", "1")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    _check_store(tmp_path, expect_trials=2, workers=1)
    # one trial after the other in the same actor (reuse_actors): Tune records each result's pid
    pids = {json.loads(line)["pid"] for path in (tmp_path / "runs").glob("grid-*/*/result.json")
            for line in path.read_text().splitlines() if line.strip()}
    assert len(pids) == 1, f"each direct trial started its own process: {pids}"
    _check_resweep(tmp_path)


def _check_resweep(tmp_path):
    """Stage 3 again on the logged model: a new p lands in the same run, a recomputed p matches."""
    from orchestrator.resweep import main as resweep_main

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.get_experiment_by_name("s3-synthetic")
    (run,) = client.search_runs([exp.experiment_id], filter_string=f"tags.`{L.TAG_METHOD}` = 's3'")
    before = {r["keep_ratio"]: r for r in L.read_curve(client, run.info.run_id)}
    assert {a.path for a in client.list_artifacts(run.info.run_id, L.MODEL_ARTIFACT_DIR)} == {"model/model.pt"}
    code = resweep_main([run.info.run_id, "--keep-ratios", "0.35", "0.3", "--overwrite",
                         "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"])
    assert code == 0
    after = {r["keep_ratio"]: r for r in L.read_curve(client, run.info.run_id)}
    assert set(after) == set(before) | {0.35}
    # the same model, data and probe: the recomputed point agrees with the grid's (threads may differ)
    assert after[0.3]["valid_acc"] == pytest.approx(before[0.3]["valid_acc"], abs=0.03)
    assert {k: v for k, v in after.items() if k not in (0.3, 0.35)} == \
        {k: v for k, v in before.items() if k not in (0.3, 0.35)}
    text = client.download_artifacts(run.info.run_id, "curve/curve.csv", str(tmp_path))
    assert len(L.parse_curve_csv(open(text).read())) == 11
    with pytest.raises(SystemExit) as exit_info:   # a run id that is not there: one line, exit 2
        resweep_main(["0123456789abcdef", "--keep-ratios", "0.5", "--tracking-uri",
                      f"sqlite:///{tmp_path / 'mlflow.db'}"])
    assert exit_info.value.code == 2


def test_auto_executor_is_direct_for_one_worker_and_train_for_ddp():
    assert plan_execution(Args(executor="auto"), {"CPU": 2.0}).executor == "direct"
    assert plan_execution(Args(executor="auto", workers_per_trial=2), {"CPU": 4.0}).executor == "train"
    assert plan_execution(Args(executor="auto", gpus_per_trial=2), {"CPU": 8.0, "GPU": 2.0}).executor == "train"
    assert plan_execution(Args(executor="train"), {"CPU": 2.0}).executor == "train"


def test_direct_executor_refuses_several_workers():
    with pytest.raises(GridError, match="executor train"):
        plan_execution(Args(executor="direct", workers_per_trial=2), {"CPU": 2.0})


@pytest.mark.slow
def test_smoke_grid_end_to_end_two_ddp_workers(tmp_path, grid_runner):
    proc = grid_runner(tmp_path, "--preset", "smoke", "--workers-per-trial", "2", "--cpus-per-worker", "0.49",
                       "--max-concurrent", "2")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "2 worker(s)" in proc.stdout
    _check_store(tmp_path, expect_trials=2, workers=2)


@pytest.mark.slow
def test_optuna_search_preset_end_to_end(tmp_path, grid_runner):
    proc = grid_runner(tmp_path, "--preset", "search", "--num-samples", "3",
                       "--set", "d_model=16", "n_layers=1", "n_heads=2", "d_ff=64", "proj_dim=16", "epochs_special=1",
                       "epochs_select=1", "probe_l2=[0.01]",
                       "--synthetic", "n_train=256", "n_valid=128", "n_test=128", "seq_len=4")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.get_experiment_by_name("s3-synthetic")
    runs = client.search_runs([exp.experiment_id], filter_string=f"tags.`{L.TAG_ROLE}` = '{L.ROLE_TRIAL}'")
    assert len(runs) == 3 and all(r.info.status == "FINISHED" for r in runs)
    sampled = {(r.data.params["chi"], r.data.params["tau"], r.data.params["lr"]) for r in runs}
    assert len(sampled) == 3, "Optuna sampled three distinct configs"
    for r in runs:
        # the objective is validation accuracy at the validation-chosen p
        curve = {m.step: m.value for m in client.get_metric_history(r.info.run_id, "valid_acc")}
        assert r.data.metrics["best_valid_acc"] == pytest.approx(max(curve.values()))


def test_grid_id_and_data_fingerprint_follow_the_data():
    from orchestrator.plan import data_fingerprint, grid_id
    from s3core.data import SyntheticConfig, make_synthetic

    small = dict(n_train=64, n_valid=32, n_test=32, seq_len=4)
    unique = data_fingerprint(make_synthetic(SyntheticConfig(label="unique", **small)))
    assert unique == data_fingerprint(make_synthetic(SyntheticConfig(label="unique", **small)))
    shared = data_fingerprint(make_synthetic(SyntheticConfig(label="shared", **small)))
    assert unique != shared
    assert data_fingerprint(make_synthetic(SyntheticConfig(label="unique", seed=1, **small))) != unique
    args = ("smoke", ["synthetic"], [0], {}, {}, None)
    assert grid_id(*args, {"synthetic": unique}) == grid_id(*args, {"synthetic": unique})
    assert grid_id(*args, {"synthetic": unique}) != grid_id(*args, {"synthetic": shared})


@pytest.mark.slow
def test_a_grid_on_other_data_never_reuses_another_grids_checkpoints(tmp_path, grid_runner):
    """Regression: Ray Train runs were named by the trial config alone, so a grid on another
    synthetic label replayed the first grid's finished checkpoints instead of training."""
    curves = {}
    for label in ("unique", "shared"):
        proc = grid_runner(tmp_path, "--preset", "smoke", "--synthetic", f"label={label}", "--experiment",
                           f"s3-{label}")
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
        exp = client.get_experiment_by_name(f"s3-{label}")
        runs = client.search_runs([exp.experiment_id], filter_string=f"tags.`{L.TAG_METHOD}` = 's3'")
        assert len(runs) == 1
        curves[label] = [(m.step, m.value) for m in client.get_metric_history(runs[0].info.run_id, "valid_acc")]
        assert len(curves[label]) == 10
    assert curves["unique"] != curves["shared"]


@pytest.mark.slow
def test_a_rerun_without_resume_recomputes_under_new_code(tmp_path, grid_runner, monkeypatch):
    """Issue 11.5: the same command again (no --resume) after a code change trains again; it never
    replays the first grid's finished Ray Train checkpoints (they are scoped to their parent run)."""
    seen = {}
    for commit in ("a" * 40, "b" * 40):
        monkeypatch.setenv("S3_GIT_COMMIT", commit)
        # without the stage cache, which would (rightly) reuse stages here: S3_GIT_COMMIT changes, the source does not
        proc = grid_runner(tmp_path, "--preset", "smoke", "--executor", "train", "--no-stage-cache")
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
        exp = client.get_experiment_by_name("s3-synthetic")
        runs = client.search_runs([exp.experiment_id], filter_string=f"tags.`{L.TAG_CODE_VERSION}` = '{commit[:12]}' "
                                                                     f"and tags.`{L.TAG_ROLE}` = '{L.ROLE_TRIAL}'")
        assert len(runs) == 2
        for run in runs:
            assert run.data.tags["mlflow.source.git.commit"] == commit
            # a replayed checkpoint reports only its final curve: no per-epoch losses
            losses = client.get_metric_history(run.info.run_id, "special/loss")
            assert len(losses) == int(run.data.params["epochs_special"]), (commit, run.info.run_name)
        seen[commit] = {r.info.run_id for r in runs}
    assert not seen["a" * 40] & seen["b" * 40]


@pytest.mark.slow
@pytest.mark.parametrize("executor", ["auto", "train"])
def test_a_gpu_torch_cannot_use_fails_its_trials_in_one_line_and_the_grid_ends(tmp_path, grid_runner, executor):
    """Issue 11.3: Ray advertises a GPU (--num-gpus 1) that torch cannot use (no CUDA here, as on a
    node with a broken driver). Each trial fails at once with one line naming the cause, no trial
    hangs, the grid ends with exit 1, and each run says which device it was given. The same with
    Ray Train workers (`train`), whose NCCL set-up used to fail in a 60-line traceback and hang."""
    import torch
    if torch.cuda.is_available():
        pytest.skip("this machine has a usable GPU")
    proc = grid_runner(tmp_path, "--preset", "smoke", "--gpus-per-trial", "1", "--num-gpus", "1",
                       "--executor", executor, timeout=400)
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.get_experiment_by_name("s3-synthetic")
    runs = client.search_runs([exp.experiment_id], filter_string=f"tags.`{L.TAG_ROLE}` = '{L.ROLE_TRIAL}'")
    assert len(runs) == 2 and all(r.info.status == "FAILED" for r in runs)
    for run in runs:
        reason = run.data.tags[L.TAG_FAILURE]
        assert "ConfigError" in reason and "no usable CUDA GPU" in reason, reason
        assert "\n" not in reason
    assert "FAILED" in proc.stdout and "Traceback" not in proc.stdout
