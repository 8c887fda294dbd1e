"""The curves figure (orchestrator/report/plots.plot_curves) on hand-made configs: what its
legend says and how the baselines' flat lines are drawn."""
import pandas as pd
import pytest

from orchestrator.report import plots
from s3core.methods import METHODS

P = (1.0, 0.8, 0.6, 0.4, 0.2)


def _frames():
    points = pd.DataFrame([{"run_id": f"s3-{seed}", "keep_ratio": p, "test_acc": 60.0 + seed, "valid_acc": 70.0}
                           for seed in (0, 1) for p in P])
    configs = pd.DataFrame([
        {"benchmark": "syn", "method": "s3", "chi": 4, "batch_size": None, "n_seeds": 2,
         "run_ids": ["s3-0", "s3-1"], "valid_acc_mean": 70.0, "test_acc_mean": 60.5},
        # two baselines at the same accuracy on both splits; valid differs from test
        *({"benchmark": "syn", "method": m, "chi": 1, "batch_size": None, "n_seeds": 2, "run_ids": [],
           "valid_acc_mean": 66.0, "test_acc_mean": 55.0} for m in ("focal", "factorcl")),
    ])
    return points, configs


@pytest.fixture
def figure(monkeypatch):
    captured = {}
    monkeypatch.setattr(plots, "_figure_png", lambda fig: captured.setdefault("fig", fig) and b"")
    points, configs = _frames()
    plots.plot_curves("syn", points, configs)
    yield captured["fig"]
    plots._pyplot().close(captured["fig"])


def test_the_shared_legend_gives_a_baseline_its_valid_value_too(figure):
    labels = [t.get_text() for t in figure.legends[0].get_texts()]
    focal = next(label for label in labels if label.startswith("FOCAL"))
    assert "55.00" in focal and "66.00" in focal          # test and valid: the legend serves both panels
    test_ax, valid_ax = figure.axes[:2]
    assert test_ax.get_title() == "test accuracy" and valid_ax.get_title() == "valid accuracy"
    flat = [line for line in valid_ax.get_lines() if line.get_label().startswith("FOCAL")]
    assert len(flat) == 1 and set(flat[0].get_ydata()) == {66.0}   # the valid panel draws the valid value


def test_baselines_at_equal_accuracy_stay_apart_by_their_markers(figure):
    for ax in figure.axes[:2]:
        lines = {line.get_label().split(":")[0]: line for line in ax.get_lines()
                 if line.get_label().startswith(("FOCAL", "FactorCL"))}
        assert set(lines) == {"FOCAL", "FactorCL-SSL"}
        assert lines["FOCAL"].get_marker() == METHODS["focal"].style.marker
        assert lines["FactorCL-SSL"].get_marker() == METHODS["factorcl"].style.marker

        def marked_x(line):
            return set(pd.Series(line.get_xdata())[line.get_markevery()])
        assert marked_x(lines["FOCAL"]) and marked_x(lines["FactorCL-SSL"])
        assert not marked_x(lines["FOCAL"]) & marked_x(lines["FactorCL-SSL"])   # markers at different p
