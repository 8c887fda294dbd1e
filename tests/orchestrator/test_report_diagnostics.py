"""The report's diagnostics (orchestrator/report/diagnostics.py) on hand-made trial rows."""
from types import SimpleNamespace

import pandas as pd

from orchestrator.report import diagnostics as diag
from orchestrator.report.document import BenchmarkSection, _evidence_blocks
from orchestrator.report.read import trial_info

GOOD = {"diag/moe_share": 0.5, "diag/local_entropy": 0.3, "diag/global_entropy": 0.9, "diag/gate_auc": 0.8,
        "diag/headroom": 0.04}
FLAT = {"diag/moe_share": 0.1, "diag/local_entropy": 0.97, "diag/global_entropy": 1.0, "diag/headroom": 0.036}


def _trials():
    return pd.DataFrame([
        {"run_id": "a", "run_name": "s3-chi4-s0", "benchmark": "syn", "method": "s3", "chi": 4, "diag": FLAT},
        {"run_id": "b", "run_name": "s3-chi4-s1", "benchmark": "syn", "method": "s3", "chi": 4,
         "diag": {**FLAT, "diag/moe_share": 0.14}},
        {"run_id": "c", "run_name": "s3-chi2-s0", "benchmark": "syn", "method": "s3", "chi": 2, "diag": GOOD},
        {"run_id": "d", "run_name": "raw", "benchmark": "syn", "method": "raw_probe", "chi": 1, "diag": {}},
        {"run_id": "e", "run_name": "clip-s0", "benchmark": "syn", "method": "clip", "chi": 1, "diag": FLAT},
    ])


def _configs(trials):
    """One configuration per (method, chi) holding all its trials (as aggregate.aggregate_configs)."""
    return pd.DataFrame([{"benchmark": b, "method": m, "chi": c, "valid_acc_mean": 50.0, "run_ids": list(g["run_id"])}
                         for (b, m, c), g in trials.groupby(["benchmark", "method", "chi"])])


def test_rows_flags_and_the_note_name_the_trials_where_pruning_cannot_act():
    rows = {r["chi"]: r for r in diag.diagnostic_rows(_trials(), "syn")}
    assert set(rows) == {1, 2, 4}                        # the raw probe logged none
    # a dense model (one expert) has nothing to prune: neither flagged nor cleared, and named by its label
    assert rows[1]["flags"] is None and diag.table_cells(rows[1])[-1] == "– (one expert)"
    assert diag.table_cells(rows[1])[0] == "clip" and diag.table_cells(rows[4])[0] == "S3"
    # no routing in a dense model: its entropies and gate AUC are no numbers; its MoE share and headroom are
    assert diag.table_cells(rows[1])[3:8] == ("0.10", "–", "–", "–", "3.6")
    assert rows[4]["n"] == 2 and abs(rows[4]["moe_share"] - 0.12) < 1e-12
    assert rows[4]["flags"] == ["MoE share 0.12 < 0.2", "local entropy 0.97 > 0.9"] and rows[2]["flags"] == []
    cells = diag.table_cells(rows[4])
    assert cells[-1].startswith("no: MoE share") and cells[-2] == "3.6" and cells[6] == "–"
    assert diag.table_cells(rows[2])[-1] == "yes"
    note = diag.note(_trials())
    assert "2 trial(s)" in note and "s3-chi4-s0" in note and "s3-chi2-s0" not in note and "clip-s0" not in note and "entropy_" in note
    assert diag.note(_trials().iloc[2:]) is None


def test_the_entropy_figure_has_a_line_per_chi_and_the_section_shows_it():
    def history(run_id, key):
        start = {"a": 0.99, "b": 0.97, "c": 0.6}[run_id]
        return [SimpleNamespace(step=s, value=start - 0.01 * i, timestamp=s) for i, s in enumerate((6, 7, 8))]

    keys = ["select/diag/local_entropy/x1/L0", "select/diag/global_entropy/x1/L0", "special/diag/local_entropy/x1/L0"]
    client = SimpleNamespace(get_run=lambda rid: SimpleNamespace(data=SimpleNamespace(metrics=dict.fromkeys(keys, 0))),
                             get_metric_history=history)
    hist = diag.entropy_histories(client, _trials(), "syn")
    assert set(hist) == {(4, "local", "x1"), (4, "global", "x1"), (2, "local", "x1"), (2, "global", "x1")}
    assert list(hist[(4, "local", "x1")].round(3)) == [0.98, 0.97, 0.96]      # mean over the two seeds
    images = {}
    out = diag.section(client, _trials(), "syn", "syn", images, _configs(_trials()))
    assert out["entropy"] == "entropy_syn.png" and images["entropy_syn.png"][:4] == b"\x89PNG"
    section = BenchmarkSection("syn", [], "c.png", None, [], **out)
    text = repr(_evidence_blocks(section))
    assert "Can pruning act?" in text and "entropy_syn.png" in text


def test_rows_follow_the_registry_order_not_the_alphabet():
    # registry order: s3, s3_no_select, clip, ..., disentangled_ssl, joint_opt, focal, factorcl
    trials = pd.DataFrame([{"run_id": m, "run_name": m, "benchmark": "syn", "method": m, "chi": chi, "diag": GOOD}
                           for m, chi in (("focal", 1), ("clip", 1), ("s3", 4), ("disentangled_ssl", 1),
                                          ("s3", 2), ("factorcl", 1))])
    order = [(r["method"], r["chi"]) for r in diag.diagnostic_rows(trials, "syn")]
    assert order == [("s3", 2), ("s3", 4), ("clip", 1), ("disentangled_ssl", 1), ("focal", 1), ("factorcl", 1)]


def test_rows_and_entropy_are_of_the_configuration_the_table_shows_not_every_batch_size():
    # S3 chi=4 at two batch sizes, two seeds each; batch 64 is best on validation
    trials = pd.DataFrame([{"run_id": f"b{b}-s{s}", "run_name": f"s3-b{b}-s{s}", "benchmark": "syn", "method": "s3",
                            "chi": 4, "diag": GOOD if b == 64 else FLAT} for b in (64, 256) for s in (0, 1)])
    configs = pd.DataFrame([{"benchmark": "syn", "method": "s3", "chi": 4, "valid_acc_mean": acc,
                             "run_ids": [f"b{b}-s0", f"b{b}-s1"]} for b, acc in ((64, 70.0), (256, 60.0))])
    (row,) = diag.diagnostic_rows(trials, "syn", configs)
    assert row["n"] == 2 and row["moe_share"] == GOOD["diag/moe_share"] and row["flags"] == []

    def history(run_id, key):
        return [SimpleNamespace(step=0, value=0.2 if run_id.startswith("b64") else 0.9, timestamp=0)]
    client = SimpleNamespace(get_run=lambda rid: SimpleNamespace(data=SimpleNamespace(
        metrics={"select/diag/local_entropy/x1/L0": 0})), get_metric_history=history)
    assert list(diag.entropy_histories(client, trials, "syn", configs)[(4, "local", "x1")]) == [0.2]


def test_s3_at_chi_1_routes_among_rho_experts_and_is_flagged_a_dense_model_is_not():
    trials = pd.DataFrame([
        {"run_id": "a", "run_name": "s3-chi1", "benchmark": "syn", "method": "s3", "chi": 1, "n_experts": 4, "diag": FLAT},
        {"run_id": "b", "run_name": "clip", "benchmark": "syn", "method": "clip", "chi": 1, "n_experts": 1, "diag": FLAT},
    ])
    rows = {r["method"]: r for r in diag.diagnostic_rows(trials, "syn")}
    assert rows["s3"]["flags"] == ["MoE share 0.10 < 0.2", "local entropy 0.97 > 0.9"]
    assert rows["clip"]["flags"] is None
    assert [name for name, _ in diag.flagged_trials(trials)] == ["s3-chi1"]


def test_trial_info_counts_chi_times_rho_experts():
    run = SimpleNamespace(data=SimpleNamespace(tags={}, params={"chi": "1", "rho": "4", "method": "s3"}),
                          info=SimpleNamespace(run_id="r", run_name="r", status="FINISHED"))
    assert trial_info(run, "s3-synthetic")["n_experts"] == 4
    run.data.params.update(chi="1", rho="1")
    assert trial_info(run, "s3-synthetic")["n_experts"] == 1
