"""The plan (pure: no Ray), the typed preset, the trial contract's reports and the MLflow codec."""
import dataclasses
import time
from pathlib import Path

import pytest
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from orchestrator import mlflow_layout as L
from orchestrator.contract import DoneReport, EpochReport, FailedReport, FinalReport, Report, TrialSpec
from orchestrator.plan import GridError, GridStudy, OptunaStudy, Overrides, make_plan
from s3core.config import ConfigError, S3Config
from search_spaces import Preset, PresetError, load_preset


def test_a_preset_with_an_unknown_key_fails_when_it_loads():
    raw = dict(name="x", benchmarks=["synthetic"], base={}, grid={"chi": [2]}, seeds=[0])
    assert Preset.from_dict(raw).seeds == (0,)
    with pytest.raises(PresetError, match="unknown key.*'grdi'"):
        Preset.from_dict({**raw, "grdi": {}})
    with pytest.raises(PresetError, match="lacks key.*seeds"):
        Preset.from_dict({k: v for k, v in raw.items() if k != "seeds"})
    with pytest.raises(PresetError, match="search key"):
        Preset.from_dict({**raw, "search": {"space": None, "num_samples": 2, "smaples": 3}})


def test_make_plan_merges_overrides_once_and_validates_every_trial():
    plan = make_plan(load_preset("smoke"), Overrides(seeds=(0, 1), set={"tau": 0.2}, grid={"chi": [2, 4]},
                                                     synthetic={"label": "shared"}, epochs=3))
    (study,) = plan.studies
    assert isinstance(study, GridStudy) and study.benchmark == "synthetic"
    s3 = [t for t in study.trials if t.method == "s3"]
    assert sorted((t.seed, t.overrides["chi"]) for t in s3) == [(0, 2), (0, 4), (1, 2), (1, 4)]
    assert all(t.overrides["tau"] == 0.2 and t.overrides["epochs_special"] == 3 for t in study.trials)
    assert plan.data.synthetic["label"] == "shared" and plan.data.synthetic["n_train"] == 256
    assert plan.tracking.uri.startswith("sqlite:////")
    # the grid id follows the flags and the data, not the order they were given in
    assert plan.grid_id({"synthetic": "a"}) != plan.grid_id({"synthetic": "b"})
    assert plan.grid_id({"synthetic": "a"}) == make_plan(load_preset("smoke"), Overrides(
        seeds=(0, 1), set={"tau": 0.2}, grid={"chi": [2, 4]}, synthetic={"label": "shared"}, epochs=3)
    ).grid_id({"synthetic": "a"})
    with pytest.raises(ConfigError, match="tau"):
        make_plan(load_preset("smoke"), Overrides(set={"tau": -1.0}))
    with pytest.raises(GridError, match="non-empty list"):
        make_plan(load_preset("smoke"), Overrides(grid={"chi": 4}))


def test_search_plan_is_one_optuna_study_per_benchmark_and_seed():
    plan = make_plan(load_preset("search"), Overrides(seeds=(0, 3), num_samples=5, seed_search=7))
    assert [type(s) for s in plan.studies] == [OptunaStudy, OptunaStudy]
    assert [(s.seed, s.num_samples, s.sampler_seed) for s in plan.studies] == [(0, 5, 7), (3, 5, 7)]
    assert plan.trials() == []
    with pytest.raises(GridError, match="--grid does not apply"):
        make_plan(load_preset("search"), Overrides(grid={"chi": [2]}))


def test_baselines_run_over_the_fields_their_registry_entry_sweeps():
    plan = make_plan(load_preset("paper"), Overrides(seeds=(0,)))
    by_method = {}
    for t in plan.trials():
        by_method.setdefault(t.method, []).append(t)
    assert sorted({(t.overrides["chi"], t.overrides["batch_size"]) for t in by_method["s3_no_select"]}) == \
        sorted((c, b) for c in (2, 4, 8) for b in (64, 128, 256, 512))
    assert sorted(t.overrides["batch_size"] for t in by_method["clip"]) == [64, 128, 256, 512]
    assert len(by_method["raw_probe"]) == 1


@pytest.mark.parametrize("report", [
    EpochReport("select", 2, 7, {"loss": 0.125, "suff": 1 / 3, "valid_acc": 0.8125}),
    FinalReport([{"keep_ratio": 0.333, "valid_acc": 0.1 + 0.2, "test_acc": float("nan")}],
                {"best_valid_acc": 0.75}, 12.5, 9, "cpu"),
    DoneReport([{"keep_ratio": 1.0, "valid_acc": 0.5}], {"best_valid_acc": 0.5}, 1.0, 1),
    FailedReport("DivergenceError: special epoch 0: loss diverged"),
])
def test_reports_encode_and_decode_exactly(report):
    encoded = report.encode()
    assert set(encoded) == {"kind", "objective", "payload"}
    back = Report.decode({**encoded, "training_iteration": 3, "time_this_iter_s": 0.1})
    assert type(back) is type(report)
    # NaN != NaN: compare the JSON forms
    assert back.encode() == encoded
    assert Report.decode({"kind": "epoch"}) is None and Report.decode({"objective": 1.0}) is None


def test_epoch_objective_is_valid_acc_and_final_objective_is_best_valid():
    assert EpochReport("special", 0, 0, {"valid_acc": 0.6}).encode()["objective"] == 0.6
    assert FinalReport([], {"best_valid_acc": 0.7}, 1.0, 1).encode()["objective"] == 0.7


KEEP_RATIOS = (1.0, 0.5, 0.33, 0.333, 0.125)


def test_curve_codec_round_trip_is_exact(tmp_path):
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run_id = client.create_run(client.create_experiment("codec")).info.run_id
    curve = [{"keep_ratio": p, "valid_acc": 0.5 + p / 7, "test_acc": 1 / 3 + p, "valid_f1": p / 3, "test_f1": 0.1 + p}
             for p in KEEP_RATIOS]
    now = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric(k, v, now, step) for k, v, step in L.curve_metrics(curve)])
    back = L.read_curve(client, run_id)
    assert back == sorted(curve, key=lambda r: -r["keep_ratio"])
    # the CSV artifact round-trips bit-identically too
    assert L.parse_curve_csv(L.curve_csv(curve)) == curve


def test_codec_refuses_a_p_it_cannot_store_exactly():
    assert [L.curve_step(p) for p in KEEP_RATIOS] == [1000, 500, 330, 333, 125]
    with pytest.raises(ConfigError, match="1/1000"):
        L.curve_step(0.1234)
    with pytest.raises(ConfigError, match="finer than 1/1000"):
        S3Config(keep_ratios=(1.0, 0.3333)).validate()
    with pytest.raises(ConfigError, match="repeats"):
        S3Config(keep_ratios=(0.5, 0.5)).validate()
    S3Config(keep_ratios=KEEP_RATIOS).validate()


def test_a_resumed_trial_reads_back_its_latest_value_per_step(tmp_path):
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run_id = client.create_run(client.create_experiment("codec")).info.run_id
    client.log_metric(run_id, "valid_acc", 0.1, step=500, timestamp=1)
    client.log_metric(run_id, "valid_acc", 0.7, step=500, timestamp=2)
    assert L.read_curve(client, run_id) == [{"keep_ratio": 0.5, "valid_acc": 0.7}]


def test_trial_spec_is_plain_data():
    spec = TrialSpec("synthetic", "s3", 0, "smoke", {"chi": 2})
    assert TrialSpec.from_config({"spec": dataclasses.asdict(spec)}) == spec


def test_the_optuna_study_lives_beside_a_sqlite_store_else_in_the_storage_path(tmp_path):
    assert L.sqlite_path("sqlite:////abs/dir/mlflow.db") == Path("/abs/dir/mlflow.db")
    assert L.sqlite_path("sqlite:///rel/mlflow.db") == Path("rel/mlflow.db")
    assert L.sqlite_path("http://127.0.0.1:5000") is None and L.sqlite_path("sqlite:/x.db") is None

    def storage(**o):
        return make_plan(load_preset("search"), Overrides(**o)).optuna_storage()
    store = tmp_path / "store" / "mlflow.db"
    assert storage(tracking_uri=f"sqlite:///{store}", storage_path="s3://b/runs") == f"sqlite:///{store.parent / 'optuna.db'}"
    assert storage(tracking_uri="http://127.0.0.1:5000", storage_path=str(tmp_path / "runs")) == \
        f"sqlite:///{tmp_path / 'runs' / 'optuna.db'}"
    assert storage(tracking_uri="http://127.0.0.1:5000", storage_path="s3://b/runs") is None
