"""The MLflow codec (orchestrator.mlflow_layout) value by value, with a stand-in client (no store,
so it is fast enough to run once per mutant). Written to kill the mutants that survived
scripts/mutation.sh (docs/RELIABILITY.md, "Mutation testing")."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from orchestrator import mlflow_layout as L
from s3core.config import ConfigError


class StubClient:
    """get_metric_history of the run "run" from a dict {key: [(step, value, timestamp), ...]} in
    logging order; any other run has no metrics."""

    def __init__(self, histories):
        self.histories = histories

    def get_metric_history(self, run_id, key):
        if run_id != "run":
            return []
        return [SimpleNamespace(key=key, step=s, value=v, timestamp=t) for s, v, t in self.histories.get(key, [])]


def test_default_tracking_uri_is_the_env_var_else_an_absolute_sqlite_store(monkeypatch, tmp_path):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://tracking:5000")
    assert L.default_tracking_uri() == "http://tracking:5000"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "")
    monkeypatch.chdir(tmp_path)
    assert L.default_tracking_uri() == f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}"
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert L.default_tracking_uri() == f"sqlite:///{Path(tmp_path).resolve()}/mlflow.db"


def test_experiment_name_and_metric_keys():
    assert L.experiment_name("mosi") == "s3-mosi"
    assert L.experiment_name("mosi", "mine") == "mine"
    assert L.epoch_metric_key("select", "suff") == "select/suff"


@pytest.mark.parametrize("p, step", [(1.0, 1000), (0.001, 1), (0.3, 300), (0.1 + 0.2, 300), (0.999, 999)])
def test_curve_step_is_p_in_per_mille(p, step):
    assert L.curve_step(p) == step and isinstance(L.curve_step(p), int)


@pytest.mark.parametrize("p", [0.0, -0.5, 1.001, 2.0, 0.0004, 0.3001, 0.50001])
def test_curve_step_refuses_what_it_cannot_hold(p):
    with pytest.raises(ConfigError, match=r"not a multiple of 1/1000 in \(0, 1\]; round it to 0.001"):
        L.curve_step(p)


def test_curve_metrics_is_every_curve_column_at_its_step():
    curve = [{"keep_ratio": 1.0, "valid_acc": 1, "test_acc": 0.5, "valid_f1": 0.25, "test_f1": 0.125, "l2": 3.0},
             {"keep_ratio": 0.5, "valid_acc": 0.75}]
    out = L.curve_metrics(curve)
    assert out == [("keep_ratio", 1.0, 1000), ("valid_acc", 1.0, 1000), ("test_acc", 0.5, 1000),
                   ("valid_f1", 0.25, 1000), ("test_f1", 0.125, 1000),
                   ("keep_ratio", 0.5, 500), ("valid_acc", 0.75, 500)]
    assert all(type(v) is float for _, v, _ in out)
    with pytest.raises(ConfigError, match=r"repeats a keep-ratio: \[0.5, 0.5\]"):
        L.curve_metrics([{"keep_ratio": 0.5}, {"keep_ratio": 0.5}])
    assert L.curve_metrics([]) == []


def test_read_curve_keeps_the_latest_value_of_a_step_and_sorts_p_descending():
    client = StubClient({
        "keep_ratio": [(500, 0.5, 1), (1000, 1.0, 1)],
        "valid_acc": [(500, 0.25, 1), (500, 0.5, 3), (500, 0.125, 2), (1000, 0.75, 1), (1000, 0.875, 1)],
        "test_acc": [(1000, 0.625, 5)],
        "valid_f1": [(250, 0.1, 1)],         # a step without keep_ratio: p = step / 1000
    })
    assert L.read_curve(client, "run") == [
        {"keep_ratio": 1.0, "valid_acc": 0.875, "test_acc": 0.625},
        {"keep_ratio": 0.5, "valid_acc": 0.5},
        {"keep_ratio": 0.25, "valid_f1": 0.1},
    ]
    # keep_ratio's own steps do not make rows: a row needs a curve metric
    assert L.read_curve(StubClient({"keep_ratio": [(500, 0.5, 1)]}), "run") == []
    # the logged keep_ratio wins over step / 1000 (it is exact)
    assert L.read_curve(StubClient({"keep_ratio": [(333, 0.333, 1)], "test_f1": [(333, 0.5, 1)]}), "run") == \
        [{"keep_ratio": 0.333, "test_f1": 0.5}]


def test_read_summary_takes_the_summary_metrics_only():
    run = SimpleNamespace(data=SimpleNamespace(metrics={"best_keep_ratio": 0.3, "test_acc_at_best": 0.5,
                                                        "valid_acc": 0.9, "special/loss": 1.0}))
    assert L.read_summary(run) == {"best_keep_ratio": 0.3, "test_acc_at_best": 0.5}


def test_curve_csv_columns_values_and_inverse():
    curve = [{"keep_ratio": 1.0, "valid_acc": 0.1 + 0.2, "test_acc": 1 / 3, "valid_f1": 0.5, "test_f1": 0.25,
              "l2": 0.01, "embed_s": 2, "probe_iters": 7},
             {"keep_ratio": 0.5, "valid_acc": 0.5, "test_acc": 0.5, "valid_f1": 0.5, "test_f1": 0.5,
              "l2": 0.1, "embed_s": 1.5}]
    text = L.curve_csv(curve)
    lines = text.split("\n")
    assert lines[0] == "keep_ratio,valid_acc,test_acc,valid_f1,test_f1,l2,embed_s"
    assert lines[1] == f"1.0,{0.1 + 0.2!r},{1 / 3!r},0.5,0.25,0.01,2.0"
    assert lines[2] == "0.5,0.5,0.5,0.5,0.5,0.1,1.5" and lines[3] == "" and len(lines) == 4
    back = L.parse_curve_csv(text)
    assert back[0]["valid_acc"] == 0.1 + 0.2 and back[0]["test_acc"] == 1 / 3 and back[1]["embed_s"] == 1.5
    assert L.curve_csv([]) == "keep_ratio,valid_acc,test_acc,valid_f1,test_f1\n"
    assert L.parse_curve_csv(L.curve_csv([])) == []
    # a row missing a column leaves its cell empty rather than shifting the others
    partial = L.curve_csv([{"keep_ratio": 0.5, "test_acc": 0.25}])
    assert partial.split("\n")[1] == "0.5,,0.25,,"
