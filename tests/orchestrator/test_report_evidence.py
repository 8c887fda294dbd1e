"""The report's evidence (orchestrator.report.evidence, plots): paired statistics by seed, the
accuracy-compute frontier, the expert tables and heatmaps, on frames built here (no MLflow)."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from orchestrator.report import evidence, plots
from orchestrator.report.__init__ import _expert_panels
from orchestrator.report.aggregate import aggregate_configs
from s3core.analysis import ExpertUsageAccumulator

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
BENCH = "synthetic"
SEEDS = (0, 1, 2, 3, 4)
PS = (1.0, 0.5, 0.1)
# per (method, chi): test accuracy (percent) at p* by seed, and expert FLOPs at p = 1
S3_ACC = {0: 80.0, 1: 82.0, 2: 81.0, 3: 83.0, 4: 79.0}
CLIP_ACC = {s: a - 3.0 + 0.5 * (s % 2) for s, a in S3_ACC.items()}     # S3 - CLIP = 3.0 or 2.5: clearly above 0
ABL_ACC = {s: a + (0.4 if s % 2 else -0.4) for s, a in S3_ACC.items()}  # S3 - ablation = -0.4 / +0.4: covers 0


def _frames():
    scores, points = [], []
    def add(method, chi, accs, flops):
        for seed, acc in accs.items():
            run_id = f"{method}-{chi}-{seed}"
            ps = PS if method in ("s3", "s3_no_select") else (1.0,)
            scores.append({"run_id": run_id, "run_name": run_id, "benchmark": BENCH, "method": method, "chi": chi,
                           "batch_size": 128, "seed": seed, "config_key": f"{method}-{chi}", "best_keep_ratio": 0.5,
                           "valid_acc_at_best": acc, "test_acc_at_best": acc, "test_acc_no_prune": acc,
                           "valid_acc_no_prune": acc, "test_acc_best_on_test": acc, "keep_ratio_best_on_test": 1.0,
                           "n_points": len(ps)})
            for p in ps:
                points.append({"run_id": run_id, "benchmark": BENCH, "keep_ratio": p, "test_acc": acc - (1 - p),
                               "valid_acc": acc, "expert_flops": np.nan if flops is None else flops * p * (1 + 0.01 * seed),
                               "seed": seed})
    add("s3", 4, S3_ACC, 1e6)
    add("s3_no_select", 4, ABL_ACC, 1e6)
    add("clip", 1, CLIP_ACC, 1e6)
    add("raw_probe", 1, {s: 70.0 for s in SEEDS}, None)
    scores, points = pd.DataFrame(scores), pd.DataFrame(points)
    return scores, points, aggregate_configs(scores, points)


def test_paired_rows_pair_by_seed_and_say_when_the_interval_covers_zero():
    scores, points, configs = _frames()
    rows = {r["other"]: r for r in evidence.paired_rows(BENCH, scores, configs)}
    clip = rows["clip"]
    d = [S3_ACC[s] - CLIP_ACC[s] for s in SEEDS]
    assert clip["n"] == 5 and clip["mean"] == pytest.approx(np.mean(d))
    half = 2.776445 * np.std(d, ddof=1) / math.sqrt(5)      # t_{0.975, 4}
    assert (clip["low"], clip["high"]) == pytest.approx((np.mean(d) - half, np.mean(d) + half), rel=1e-5)
    assert clip["verdict"] == "S3 χ=4 higher"
    ablation = rows["s3 without Stage 2 χ=4"]
    assert ablation["low"] < 0 < ablation["high"] and ablation["verdict"] == "no measurable difference"
    assert rows["linear probe on raw features"]["mean"] == pytest.approx(np.mean(list(S3_ACC.values())) - 70.0)
    # a seed the other side lacks is not paired
    fewer = scores[~((scores["method"] == "clip") & (scores["seed"] == 4))]
    rows = {r["other"]: r for r in evidence.paired_rows(BENCH, fewer, aggregate_configs(fewer, points))}
    assert rows["clip"]["n"] == 4


def test_frontier_points_average_over_seeds_and_plot():
    scores, points, configs = _frames()
    frontier = evidence.frontier_points(BENCH, points, configs)
    s3 = frontier[frontier["label"] == "S3 χ=4"].set_index("keep_ratio")
    assert s3.loc[0.5, "expert_flops"] == pytest.approx(0.5e6 * 1.02) and s3.loc[0.5, "n"] == 5   # mean over seeds
    assert s3.loc[0.1, "test_acc"] == pytest.approx(np.mean(list(S3_ACC.values())) - 0.9)
    assert frontier[frontier["method"] == "raw_probe"]["expert_flops"].isna().all()
    png = plots.plot_frontier(BENCH, frontier)
    assert png.startswith(PNG_MAGIC)
    # no FLOPs logged at all (trials from before the frontier): no plot
    assert plots.plot_frontier(BENCH, frontier.assign(expert_flops=np.nan)) is None


def _analysis(keep_ratio: float, seed: int):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, 40)
    acc = ExpertUsageAccumulator(("x1", "x2"), 1, 4, 2, labels, 2, keep_ratio)
    import torch
    for m in ("x1", "x2"):
        logits = torch.as_tensor(rng.standard_normal((40, 4)), dtype=torch.float32)
        logits[:, 0] += torch.as_tensor(labels * 3.0)       # expert 0 for class 1
        sample, step = torch.arange(40), torch.zeros(40, dtype=torch.long)
        acc.add(m, 0, logits, sample, step, "full")
        acc.add(m, 0, logits, sample, step, "pruned")
    return acc.result()


def test_expert_metric_rows_and_heatmaps():
    scores, points, configs = _frames()
    trials = scores.assign(experts=[{"dsc/x1-x2/L0": 0.1 * (i % 5), "usage_entropy/x1/L0": 0.9}
                                    for i in range(len(scores))])
    rows = evidence.expert_metric_rows(BENCH, trials, configs, [r"^dsc/"])
    assert [r["key"] for r in rows] == ["dsc/x1-x2/L0"]
    mean, std, n = rows[0]["s3"]
    assert n == 5 and mean == pytest.approx(np.mean([0.0, 0.1, 0.2, 0.3, 0.4]))
    assert rows[0]["s3_no_select"][2] == 5
    arrays = {("s3", 4): (0, _analysis(0.5, 0)), ("s3_no_select", 4): (0, _analysis(1.0, 1))}
    panels = _expert_panels(arrays, 4)
    assert [p[2] for p in panels] == ["usage", "usage", "usage_at_p"]
    png = plots.plot_expert_usage("synthetic χ=4", panels)
    assert png.startswith(PNG_MAGIC)
    assert plots.plot_expert_usage("x", []) is None


def test_build_report_reads_the_expert_arrays_and_writes_the_evidence(tmp_path):
    """A store as the orchestrator writes it (curve with FLOPs, summary, experts/ metrics and the
    npz artifact): the report has the paired table, the frontier and one heatmap per chi."""
    import time

    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    from orchestrator import mlflow_layout as layout
    from orchestrator.report import build_report

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.create_experiment("s3-synthetic", artifact_location=(tmp_path / "artifacts").as_uri())
    now = int(time.time() * 1000)
    for method, chi, accs in (("s3", 4, S3_ACC), ("s3_no_select", 4, ABL_ACC), ("clip", 1, CLIP_ACC)):
        for seed in (0, 1, 2):
            acc = accs[seed] / 100
            ps = PS if chi > 1 else (1.0,)
            run_id = client.create_run(exp, tags={layout.TAG_ROLE: layout.ROLE_TRIAL, layout.TAG_METHOD: method,
                                                  layout.TAG_SEED: str(seed), layout.TAG_BENCHMARK: "synthetic"},
                                       run_name=f"{method}-{seed}").info.run_id
            curve = [{"keep_ratio": p, "valid_acc": acc, "test_acc": acc - 0.01 * (1 - p), "valid_f1": acc,
                      "test_f1": acc, "expert_flops": 1e6 * p, "embed_s": 0.1} for p in ps]
            summary = {"best_keep_ratio": ps[0], "best_valid_acc": acc, "test_acc_at_best": acc,
                       "test_f1_at_best": acc, "test_acc_no_prune": acc, "valid_acc_no_prune": acc}
            metrics = [Metric(k, v, now, s) for k, v, s in layout.curve_metrics(curve)]
            metrics += [Metric(k, v, now, 0) for k, v in summary.items()]
            if chi > 1:
                analysis = _analysis(0.5, seed)
                metrics += [Metric(layout.EXPERTS_PREFIX + k, v, now, 0) for k, v in analysis.to_metrics().items()]
                analysis.save(tmp_path / layout.EXPERTS_FILE)
                client.log_artifact(run_id, str(tmp_path / layout.EXPERTS_FILE), layout.EXPERTS_ARTIFACT_DIR)
            client.log_batch(run_id, metrics=metrics, params=[Param("chi", str(chi)), Param("seed", str(seed)),
                                                              Param("method", method)])
            client.set_terminated(run_id)
    result = build_report(client, ["s3-synthetic"], tmp_path / "report", progress=None)
    names = {p.name for p in result.paths}
    assert {"frontier_synthetic.png", "experts_synthetic_chi4.png"} <= names
    text = (tmp_path / "report" / "report.md").read_text()
    assert "Paired differences over seeds" in text and "no measurable difference" in text
    assert "dsc/x1-x2/L0" in text
    assert "no raw-feature reference row" in text     # synthetic without raw_probe: the note


def test_curve_rows_pair_each_p_with_p1_by_seed():
    scores, points, configs = _frames()
    bump = {0: 1.2, 1: 0.8, 2: 1.0, 3: 1.1, 4: 0.9}               # p = 0.5: about +1, clearly above
    wobble = {0: 0.5, 1: -0.5, 2: 0.5, 3: -0.5, 4: 0.0}           # p = 0.1: covers 0
    s3 = points["run_id"].str.startswith("s3-")
    for p, delta in ((0.5, bump), (0.1, wobble)):
        rows = s3 & (points["keep_ratio"] == p)
        points.loc[rows, "test_acc"] = [S3_ACC[s] + delta[s] for s in points.loc[rows, "seed"]]
    rows = [r for r in evidence.curve_rows(BENCH, points, configs) if r["label"] == "S3 χ=4"]
    by_p = {r["keep_ratio"]: r for r in rows}
    assert [r["keep_ratio"] for r in rows] == [1.0, 0.5, 0.1]
    assert by_p[1.0]["diff"] is None and by_p[1.0]["n"] == 5
    assert by_p[1.0]["mean"] == pytest.approx(np.mean(list(S3_ACC.values())))
    assert by_p[0.5]["diff"] == pytest.approx(1.0) and by_p[0.5]["low"] > 0 and by_p[0.5]["verdict"] == "p = 0.5 higher"
    assert by_p[0.1]["low"] < 0 < by_p[0.1]["high"] and by_p[0.1]["verdict"] == "no measurable difference"
    assert by_p[0.5]["std"] == pytest.approx(np.std([S3_ACC[s] + bump[s] for s in SEEDS], ddof=1))
    # the ablation has its own rows, the dense baselines none
    labels = {r["label"] for r in evidence.curve_rows(BENCH, points, configs)}
    assert labels == {"S3 χ=4", "s3 without Stage 2 χ=4"}
