"""The paper table's InfoMax row (issue 21): the S3 paper's InfoMax figure beside each InfoMax
baseline (its registry family), FactorCL's own published figure beside FactorCL, labelled with its
source, and the figures no row shows listed below the table."""
import pandas as pd

from orchestrator import paper_numbers as pn
from orchestrator.report.aggregate import paper_table, unmatched_paper_numbers


def _displays(method, chi=1, benchmark="mosei"):
    return [pn.labelled(n) for n in pn.paper_numbers_matching(benchmark, method, chi, pn.BEST)]


def test_each_infomax_baseline_gets_the_s3_papers_infomax_row_and_factorcl_its_own_published_figure():
    assert _displays("factorcl") == ["74-76", "74.88 [FactorCL paper]"]
    for method in ("focal", "disentangled_ssl", "joint_opt"):
        assert _displays(method) == ["74-76"], method
    assert _displays("clip") == ["~74.5"]
    assert _displays("factorcl", benchmark="mustard") == ["55.80 [FactorCL paper]"]   # no S3-paper figure there
    assert _displays("focal", benchmark="synthetic") == []


def test_the_table_shows_them_and_lists_what_no_row_shows():
    configs = pd.DataFrame([dict(benchmark="mosei", method=m, chi=c, valid_acc_mean=70.0, test_acc_mean=70.0)
                            for m, c in (("s3", 8), ("factorcl", 1), ("focal", 1))])
    rows = {r["method"]: r for r in paper_table(configs)}
    assert rows["factorcl"]["paper_best"] == "74-76; 74.88 [FactorCL paper]"
    assert rows["focal"]["paper_best"] == "74-76" and rows["s3"]["paper_no_prune"] == "75.78"
    unmatched = unmatched_paper_numbers("mosei", list(rows.values()))
    assert any(line.startswith("simclr: 71.03 [FactorCL paper]") for line in unmatched)
    assert not any("InfoMax" in line for line in unmatched)            # shown beside the baselines
    assert any(line.startswith("clip: ~74.5") for line in unmatched)    # no clip row in this table


def test_the_presets_run_the_four_infomax_baselines_on_the_grid_of_the_clip_baseline():
    from orchestrator.plan import grid_trials
    from s3core.methods import methods_of_family
    from search_spaces import load_preset

    assert methods_of_family("infomax") == ("disentangled_ssl", "joint_opt", "focal", "factorcl")
    for name in ("default", "paper", "evidence"):
        preset = load_preset(name)
        trials = grid_trials(preset, preset.benchmarks, preset.seeds, {})
        clip = sorted(sorted(t.overrides.items()) for t in trials if t.method == "clip")
        for method in methods_of_family("infomax"):
            assert sorted(sorted(t.overrides.items()) for t in trials if t.method == method) == clip, (name, method)
