"""The MLflow logger (orchestrator.tracking) driven the way Ray Tune drives it, without Ray: what
lands in a SQLite MLflow store for a trial's epochs, its end, its model, a failure, a resume and an
interrupted grid. Written to kill the mutants that survived scripts/mutation.sh
(docs/RELIABILITY.md, "Mutation testing"); every check reads the store back through MlflowClient."""
from __future__ import annotations

import contextlib
import itertools
import re
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from mlflow.tracking import MlflowClient

from orchestrator import mlflow_layout as L
from orchestrator import tracking
from orchestrator.contract import DoneReport, EpochReport, FinalReport, TrialSpec, write_checkpoint_state
from s3core.methods import get_method

_names = itertools.count()


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One SQLite store for the module (creating one costs seconds); each test has its experiment."""
    root = tmp_path_factory.mktemp("mlflow")
    return SimpleNamespace(client=MlflowClient(f"sqlite:///{root / 'mlflow.db'}"), root=root)


@pytest.fixture
def grid(store):
    """A fresh experiment, its parent run, and a logger for it (printing into a list)."""
    client = store.client
    n = next(_names)
    exp = client.create_experiment(f"exp{n}", artifact_location=str(store.root / f"art{n}"))
    parent = client.create_run(exp, tags={L.TAG_ROLE: L.ROLE_PARENT, L.TAG_GRID_ID: f"g{n}"}).info.run_id
    lines = []
    logger = tracking.MlflowTrialLogger(client, exp, parent, {}, {"s3.preset": "smoke", "extra.tag": "x"}, total=3,
                                        printer=lambda *a, **k: lines.append(" ".join(map(str, a))),
                                        extra_params={"data.label": "xor"})
    return SimpleNamespace(client=client, exp=exp, parent=parent, logger=logger, lines=lines, root=store.root)


SPEC = TrialSpec("synthetic", "s3", 2, "smoke", {"chi": 4, "batch_size": 32, "tau": 0.25})
CURVE = [{"keep_ratio": 1.0, "valid_acc": 0.5, "test_acc": 0.25, "valid_f1": 0.125, "test_f1": 0.375,
          "l2": 0.01, "kept_fraction": 1.0, "embed_s": 0.5},
         {"keep_ratio": 0.3, "valid_acc": 0.75, "test_acc": 0.625, "valid_f1": 0.5, "test_f1": 0.6875,
          "l2": 0.1, "kept_fraction": 0.3, "embed_s": 0.25}]
SUMMARY = {"best_keep_ratio": 0.3, "best_valid_acc": 0.75, "test_acc_at_best": 0.625, "test_f1_at_best": 0.6875,
           "test_acc_no_prune": 0.25, "valid_acc_no_prune": 0.5}


def trial(trial_id="t0", spec=SPEC, error_file=None):
    return SimpleNamespace(trial_id=trial_id, config={"spec": spec.to_dict()}, error_file=error_file)


def history(client, run_id, key):
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def assert_logged_now(client, run_id, key):
    """Metrics carry the wall-clock time they were logged at, in milliseconds (a resumed run's
    latest value per step is chosen by it)."""
    stamps = [m.timestamp for m in client.get_metric_history(run_id, key)]
    assert stamps and all(abs(t - time.time() * 1000) < 600_000 for t in stamps), stamps


def epoch(stage, stage_epoch, global_epoch, **metrics):
    return {**EpochReport(stage, stage_epoch, global_epoch, metrics).encode(), "training_iteration": global_epoch + 1}


class FakeCheckpoint:
    def __init__(self, directory):
        self.directory = directory

    @contextlib.contextmanager
    def as_directory(self):
        yield self.directory


def test_a_trial_opens_one_child_run_with_its_config_tags_and_params(grid):
    t = trial()
    grid.logger.on_trial_start(0, [], t)
    grid.logger.on_trial_result(0, [], t, epoch("special", 0, 0, loss=1.5))   # the same trial: the same run
    (run_id,) = set(grid.logger.run_of.values())
    run = grid.client.get_run(run_id)
    assert run.info.status == "RUNNING" and run.info.experiment_id == grid.exp
    tags = run.data.tags
    cfg = get_method("s3").config(SPEC.s3_config())
    expected_tags = {L.TAG_PARENT: grid.parent, L.TAG_ROLE: L.ROLE_TRIAL, L.TAG_TRIAL_KEY: SPEC.key(),
                     L.TAG_METHOD: "s3", L.TAG_BENCHMARK: "synthetic", L.TAG_SEED: "2", L.TAG_PRESET: "smoke",
                     "mlflow.runName": SPEC.short(), L.TAG_CHI: "4", L.TAG_BATCH_SIZE: "32", "extra.tag": "x"}
    assert {k: tags.get(k) for k in expected_tags} == expected_tags
    assert run.info.run_name == SPEC.short()
    params = run.data.params
    expected = {k: tracking.param_str(v) for k, v in cfg.to_dict().items() if k != "device"}
    expected.update(method="s3", benchmark="synthetic", preset="smoke", **{"data.label": "xor"})
    assert params == expected
    assert params["tau"] == "0.25" and params["keep_ratios"] == "[1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1]"
    # a method that trains another config logs that one (clip: the dense baseline)
    clip = TrialSpec("synthetic", "clip", 0, "smoke", {"chi": 4})
    grid.logger.on_trial_start(0, [], trial("t1", clip))
    clip_run = grid.client.get_run(grid.logger.run_of["t1"])
    assert clip_run.data.params["chi"] == "1" and clip_run.data.params["method"] == "clip"
    assert clip_run.data.tags[L.TAG_CHI] == "1"
    assert grid.logger.existing[SPEC.key()].info.run_id == run_id


def test_epoch_results_are_logged_once_per_step_and_only_numbers(grid):
    t = trial()
    grid.logger.on_trial_start(0, [], t)
    grid.logger.on_trial_result(0, [], t, epoch("special", 0, 0, loss=1.5, rep=0.75, valid_acc=0.5))
    grid.logger.on_trial_result(0, [], t, epoch("special", 1, 1, loss=1.25, rep=0.5, valid_acc=0.625))
    grid.logger.on_trial_result(0, [], t, epoch("special", 1, 1, loss=9.0, rep=9.0))   # a repeat: kept out
    grid.logger.on_trial_result(0, [], t, epoch("select", 0, 2, loss=0.5, n=3, flag=True, name="x"))
    grid.logger.on_trial_result(0, [], t, {"training_iteration": 4, "objective": 1.0})  # no report: nothing
    run_id = grid.logger.run_of["t0"]
    client = grid.client
    assert history(client, run_id, "special/loss") == [(0, 1.5), (1, 1.25)]
    assert history(client, run_id, "special/rep") == [(0, 0.75), (1, 0.5)]
    assert history(client, run_id, "special/valid_acc") == [(0, 0.5), (1, 0.625)]
    assert history(client, run_id, "select/loss") == [(2, 0.5)]
    assert history(client, run_id, "select/n") == [(2, 3.0)]
    assert_logged_now(client, run_id, "special/loss")
    assert set(client.get_run(run_id).data.metrics) == {"special/loss", "special/rep", "special/valid_acc",
                                                        "select/loss", "select/n"}
    assert grid.logger.logged[run_id] == {("special/loss", 0), ("special/rep", 0), ("special/valid_acc", 0),
                                          ("special/loss", 1), ("special/rep", 1), ("special/valid_acc", 1),
                                          ("select/loss", 2), ("select/n", 2)}


def _finish(grid, t, model_state=None):
    grid.logger.on_trial_start(0, [], t)
    grid.logger.on_trial_result(0, [], t, epoch("special", 0, 0, loss=1.5))
    done = DoneReport(CURVE, SUMMARY, 12.0, 1, "cpu:7")
    grid.logger.on_trial_result(0, [], t, {**done.encode(), "training_iteration": 2})
    if model_state is not None:
        d = grid.root / f"ckpt-{t.trial_id}-{grid.exp}"
        d.mkdir()
        write_checkpoint_state(str(d), {"final": {}, "trained_model": model_state})
        grid.logger.on_checkpoint(0, [], t, FakeCheckpoint(str(d)))
    return grid.logger.run_of[t.trial_id]


def test_the_end_of_a_trial_logs_its_curve_summary_artifacts_and_device(grid, tmp_path):
    t = trial()
    weights = {"w": torch.arange(6.0).reshape(2, 3)}
    run_id = _finish(grid, t, model_state={"weights": weights, "method": "s3"})
    client = grid.client
    run = client.get_run(run_id)
    assert run.info.status == "RUNNING", "FINISHED only once the trial completes"
    for key in L.CURVE_COLUMNS:
        assert history(client, run_id, key) == sorted((L.curve_step(r["keep_ratio"]), r[key]) for r in CURVE), key
    for key, value in SUMMARY.items():
        assert history(client, run_id, key) == [(0, value)], key
    assert "l2" not in run.data.metrics and "kept_fraction" not in run.data.metrics
    # the point's cost is logged at the curve's steps too (the frontier), where the trial reports it
    assert history(client, run_id, "embed_s") == sorted((L.curve_step(r["keep_ratio"]), r["embed_s"]) for r in CURVE)
    cost = [k for k in L.CURVE_COST_METRICS if k in CURVE[0]]
    assert L.read_curve(client, run_id) == [{k: r[k] for k in L.CURVE_COLUMNS + tuple(cost)} for r in CURVE]
    assert L.read_summary(run) == SUMMARY
    assert run.data.tags[L.TAG_DEVICE] == "cpu:7"
    assert {a.path for a in client.list_artifacts(run_id, L.CURVE_ARTIFACT_DIR)} == {"curve/curve.csv",
                                                                                    "curve/curve.png"}
    csv_text = Path(client.download_artifacts(run_id, "curve/curve.csv", str(tmp_path))).read_text()
    assert csv_text == L.curve_csv(CURVE)
    model = torch.load(client.download_artifacts(run_id, "model/model.pt", str(tmp_path)), weights_only=True)
    assert model["method"] == "s3" and torch.equal(model["weights"]["w"], weights["w"])
    grid.logger.on_trial_complete(0, [], t)
    assert client.get_run(run_id).info.status == "FINISHED"
    assert grid.logger.done == 1 and grid.logger.failed == 0 and t.trial_id not in grid.logger.finishing
    assert grid.lines and grid.lines[-1].startswith("[1/3] done   s3 synthetic")
    assert "p*=0.3 valid 75.0% test 62.5% (no pruning 25.0%)" in grid.lines[-1]
    grid.logger.on_trial_complete(0, [], t)          # a second completion changes nothing
    assert grid.logger.done == 1
    # a trial restored by Tune reports its end without a start in this invocation
    t2 = trial("restored", TrialSpec("synthetic", "s3", 3, "smoke", {"chi": 2}))
    grid.logger.on_trial_result(0, [], t2, {**DoneReport(CURVE, SUMMARY, 1.0, 1).encode(), "training_iteration": 1})
    grid.logger.on_trial_complete(0, [], t2)
    assert grid.logger.done == 2 and re.search(r" in -?0s$", grid.lines[-1])  # no start: 0 s
    assert client.get_run(grid.logger.run_of["restored"]).info.status == "FINISHED"


def test_a_checkpoint_before_the_end_or_without_a_model_logs_no_model(grid):
    t = trial()
    grid.logger.on_trial_start(0, [], t)
    d = grid.root / f"early-{grid.exp}"
    d.mkdir()
    write_checkpoint_state(str(d), {"trained_model": {"w": torch.ones(1)}})
    grid.logger.on_checkpoint(0, [], t, FakeCheckpoint(str(d)))      # not finishing yet: no model
    run_id = _finish(grid, t, model_state=None)
    e = grid.root / f"nomodel-{grid.exp}"
    e.mkdir()
    write_checkpoint_state(str(e), {"final": {}})
    grid.logger.on_checkpoint(0, [], t, FakeCheckpoint(str(e)))      # finishing, but no model in it
    grid.logger.on_checkpoint(0, [], t, None)
    assert grid.client.list_artifacts(run_id, L.MODEL_ARTIFACT_DIR) == []


def test_a_failed_trial_is_failed_with_its_reason(grid, tmp_path):
    err = tmp_path / "error.txt"
    err.write_text("Traceback...\ns3core.stages.DivergenceError: special epoch 0: loss diverged\n")
    t = trial(error_file=str(err))
    grid.logger.on_trial_start(0, [], t)
    grid.logger.on_trial_error(0, [], t)
    run = grid.client.get_run(grid.logger.run_of["t0"])
    assert run.info.status == "FAILED"
    assert run.data.tags[L.TAG_FAILURE] == "s3core.stages.DivergenceError: special epoch 0: loss diverged"
    assert grid.logger.failed == 1 and grid.logger.done == 0
    assert grid.lines[-1].startswith("[1/3] FAILED s3 synthetic")
    # a trial that fails before it started still gets its run, FAILED
    grid.logger.on_trial_error(0, [], trial("t9", TrialSpec("synthetic", "clip", 0, "smoke", {})))
    assert grid.client.get_run(grid.logger.run_of["t9"]).info.status == "FAILED"
    assert grid.lines[-1].startswith("[2/3] FAILED")


def test_a_resumed_grid_reuses_the_run_and_never_logs_a_step_twice(grid):
    t = trial()
    grid.logger.on_trial_start(0, [], t)
    grid.logger.on_trial_result(0, [], t, epoch("special", 0, 0, loss=1.5))
    grid.logger.on_trial_result(0, [], t, epoch("special", 1, 1, loss=1.25))
    run_id = grid.logger.run_of["t0"]
    grid.logger.close_unfinished()
    assert grid.client.get_run(run_id).info.status == "KILLED"
    # the resumed invocation: another logger, the runs found again by trial key
    existing = tracking.trial_runs(grid.client, grid.exp, grid.parent)
    assert set(existing) == {SPEC.key()} and existing[SPEC.key()].info.run_id == run_id
    again = tracking.MlflowTrialLogger(grid.client, grid.exp, grid.parent, existing, {}, total=1, printer=grid.lines.append)
    t2 = trial("t-new")
    again.on_trial_start(0, [], t2)
    assert again.run_of["t-new"] == run_id
    assert grid.client.get_run(run_id).info.status == "RUNNING"
    assert again.logged[run_id] == {("special/loss", 0), ("special/loss", 1)}
    again.on_trial_result(0, [], t2, epoch("special", 1, 1, loss=7.0))     # replayed epoch: not logged again
    again.on_trial_result(0, [], t2, epoch("special", 2, 2, loss=1.0))
    assert history(grid.client, run_id, "special/loss") == [(0, 1.5), (1, 1.25), (2, 1.0)]
    runs = grid.client.search_runs([grid.exp], filter_string=f"tags.`{L.TAG_PARENT}` = '{grid.parent}'")
    assert len(runs) == 1


def test_a_finished_run_reused_on_resume_is_set_running_again_only_if_it_was_not(grid):
    t = trial()
    run_id = _finish(grid, t)
    grid.logger.on_trial_complete(0, [], t)
    existing = tracking.trial_runs(grid.client, grid.exp, grid.parent)
    again = tracking.MlflowTrialLogger(grid.client, grid.exp, grid.parent, existing, {}, total=1)
    again.on_trial_start(0, [], trial("t1"))
    assert grid.client.get_run(run_id).info.status == "RUNNING"
    assert ("valid_acc", 300) in again.logged[run_id] and ("best_valid_acc", 0) in again.logged[run_id]
    # a run still RUNNING (a driver killed hard) is reused as it is
    third = tracking.MlflowTrialLogger(grid.client, grid.exp, grid.parent,
                                       tracking.trial_runs(grid.client, grid.exp, grid.parent), {}, total=1)
    third.on_trial_start(0, [], trial("t2"))
    assert third.run_of["t2"] == run_id and grid.client.get_run(run_id).info.status == "RUNNING"


def test_close_unfinished_kills_only_the_running_runs_of_this_invocation(grid):
    a, b = trial("a"), trial("b", TrialSpec("synthetic", "clip", 0, "smoke", {}))
    _finish(grid, a)
    grid.logger.on_trial_complete(0, [], a)
    grid.logger.on_trial_start(0, [], b)
    other = grid.client.create_run(grid.exp).info.run_id                     # not this logger's
    grid.logger.close_unfinished(status="FAILED")
    assert grid.client.get_run(grid.logger.run_of["a"]).info.status == "FINISHED"
    assert grid.client.get_run(grid.logger.run_of["b"]).info.status == "FAILED"
    assert grid.client.get_run(other).info.status == "RUNNING"


def test_trial_runs_and_find_parent_pick_the_newest(grid):
    client = grid.client
    newer_parent = client.create_run(grid.exp, tags={L.TAG_ROLE: L.ROLE_PARENT, L.TAG_GRID_ID: "shared"},
                                      start_time=int(time.time() * 1000) + 5000).info.run_id
    client.create_run(grid.exp, tags={L.TAG_ROLE: L.ROLE_PARENT, L.TAG_GRID_ID: "shared"},
                      start_time=int(time.time() * 1000))
    client.create_run(grid.exp, tags={L.TAG_ROLE: L.ROLE_TRIAL, L.TAG_GRID_ID: "shared"},
                      start_time=int(time.time() * 1000) + 9000)
    assert tracking.find_parent(client, grid.exp, "shared").info.run_id == newer_parent
    assert tracking.find_parent(client, grid.exp, "nosuch") is None
    now = int(time.time() * 1000)
    old = client.create_run(grid.exp, tags={L.TAG_PARENT: grid.parent, L.TAG_TRIAL_KEY: "k1"}, start_time=now)
    new = client.create_run(grid.exp, tags={L.TAG_PARENT: grid.parent, L.TAG_TRIAL_KEY: "k1"}, start_time=now + 10)
    other = client.create_run(grid.exp, tags={L.TAG_PARENT: grid.parent, L.TAG_TRIAL_KEY: "k2"}, start_time=now - 10)
    client.create_run(grid.exp, tags={L.TAG_PARENT: grid.parent}, start_time=now)          # no key: left out
    client.create_run(grid.exp, tags={L.TAG_PARENT: "elsewhere", L.TAG_TRIAL_KEY: "k3"}, start_time=now)
    runs = tracking.trial_runs(client, grid.exp, grid.parent)
    assert {k: r.info.run_id for k, r in runs.items()} == {"k1": new.info.run_id, "k2": other.info.run_id}
    assert old.info.run_id != new.info.run_id


def test_the_parent_summary_is_the_mean_over_finished_trials(grid):
    def child(method, chi, status, acc=None, p=None):
        run = SimpleNamespace(info=SimpleNamespace(status=status),
                              data=SimpleNamespace(tags={L.TAG_METHOD: method}, params={"chi": str(chi)},
                                                   metrics={} if acc is None else {"test_acc_at_best": acc,
                                                                                   "best_keep_ratio": p}))
        return run
    runs = [child("s3", 2, "FINISHED", 0.5, 0.5), child("s3", 2, "FINISHED", 0.75, 1.0),
            child("s3", 2, "FAILED", 0.0, 0.1), child("s3", 2, "FINISHED"), child("s3", 4, "FINISHED", 0.25, 0.3),
            child("clip", 1, "RUNNING", 0.9, 1.0)]
    summary = tracking.log_parent_summary(grid.client, grid.parent, runs)
    assert summary == {"s3_chi2/test_acc_at_best": 0.625, "s3_chi2/best_keep_ratio": 0.75, "s3_chi2/n_trials": 2.0,
                       "s3_chi4/test_acc_at_best": 0.25, "s3_chi4/best_keep_ratio": 0.3, "s3_chi4/n_trials": 1.0}
    metrics = grid.client.get_run(grid.parent).data.metrics
    assert {k: metrics[k] for k in summary} == summary
    assert history(grid.client, grid.parent, "s3_chi2/n_trials") == [(0, 2.0)]
    assert_logged_now(grid.client, grid.parent, "s3_chi2/test_acc_at_best")
    assert tracking.log_parent_summary(grid.client, grid.parent, []) == {}


def test_get_or_create_experiment_creates_restores_and_tags(store, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    client = store.client
    name = f"fresh{next(_names)}"
    exp_id = tracking.get_or_create_experiment(client, name)
    exp = client.get_experiment(exp_id)
    assert exp.name == name and exp.tags[L.TAG_EXPERIMENT_KIND] == L.EXPERIMENT_KIND_TRAINING
    assert tracking.get_or_create_experiment(client, name) == exp_id
    client.delete_experiment(exp_id)
    assert tracking.get_or_create_experiment(client, name) == exp_id
    assert client.get_experiment(exp_id).lifecycle_stage == "active"


def test_a_new_experiment_on_a_sqlite_store_keeps_its_artifacts_beside_the_store(store, monkeypatch, tmp_path):
    """Opened from another folder, the store's artifacts land beside it, not in ./mlruns of that folder."""
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{store.root / 'mlflow.db'}"
    name = f"s3-synthetic/odd name {next(_names)}"
    exp_id = tracking.get_or_create_experiment(store.client, name, uri)
    location = store.client.get_experiment(exp_id).artifact_location
    assert location == (store.root / "mlruns" / f"s3-synthetic_odd_name_{name.rsplit(' ', 1)[1]}").as_uri()
    run = store.client.create_run(exp_id).info.run_id
    art = tmp_path / "curve.csv"
    art.write_text("p,acc\n")
    store.client.log_artifact(run, str(art))
    assert list((store.root / "mlruns").rglob("curve.csv")) and not (tmp_path / "mlruns").exists()
    assert tracking.sqlite_artifact_location("http://127.0.0.1:5000", name) is None


def test_param_str_and_is_number():
    assert tracking.param_str([1.0, 0.5]) == "[1.0, 0.5]" and tracking.param_str((1, 2)) == "[1, 2]"
    assert tracking.param_str({"a": 1}) == '{"a": 1}' and tracking.param_str(0.25) == "0.25"
    assert tracking.param_str("x" * 7000) == "x" * 6000
    assert tracking.param_str(None) == "None"
    assert tracking._is_number(1) and tracking._is_number(0.5)
    assert not tracking._is_number(True) and not tracking._is_number("1") and not tracking._is_number(None)


def test_a_final_report_from_a_train_worker_is_not_logged(grid):
    """Only the DoneReport (re-emitted by the Tune function) is logged, never the worker's FinalReport."""
    t = trial()
    grid.logger.on_trial_start(0, [], t)
    final = FinalReport(CURVE, SUMMARY, 1.0, 1)
    grid.logger.on_trial_result(0, [], t, {**final.encode(), "training_iteration": 1})
    run = grid.client.get_run(grid.logger.run_of["t0"])
    assert run.data.metrics == {} and t.trial_id not in grid.logger.finishing
