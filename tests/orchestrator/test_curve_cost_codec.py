"""The curve point's cost (expert FLOPs per sample, embedding seconds) through the MLflow codec."""
import time

from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from orchestrator import mlflow_layout as L


def test_cost_metrics_round_trip_at_the_accuracy_steps(tmp_path):
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run_id = client.create_run(client.create_experiment("codec")).info.run_id
    curve = [{"keep_ratio": p, "valid_acc": 0.5 + p / 7, "test_acc": 1 / 3 + p, "valid_f1": p / 3, "test_f1": 0.1 + p,
              "expert_flops": 1234567.0 * p + 1 / 3, "embed_s": 0.1 + p / 9, "l2": 0.01, "kept_fraction": p}
             for p in (1.0, 0.5, 0.333)]
    logged = L.curve_metrics(curve)
    # the cost sits at the same step as the point's accuracies
    steps = {}
    for key, _, step in logged:
        steps.setdefault(key, set()).add(step)
    assert steps["expert_flops"] == steps["embed_s"] == steps["valid_acc"] == {1000, 500, 333}
    now = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric(k, v, now, step) for k, v, step in logged])
    back = L.read_curve(client, run_id)
    keep = ("keep_ratio", "valid_acc", "test_acc", "valid_f1", "test_f1", "expert_flops", "embed_s")
    assert back == [{k: row[k] for k in keep} for row in curve]
    csv_back = L.parse_curve_csv(L.curve_csv(curve))
    assert [r["expert_flops"] for r in csv_back] == [r["expert_flops"] for r in curve]
    assert [r["embed_s"] for r in csv_back] == [r["embed_s"] for r in curve]


def test_a_curve_without_cost_reads_back_without_it(tmp_path):
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run_id = client.create_run(client.create_experiment("codec")).info.run_id
    client.log_metric(run_id, "valid_acc", 0.7, step=500, timestamp=1)
    assert L.read_curve(client, run_id) == [{"keep_ratio": 0.5, "valid_acc": 0.7}]
