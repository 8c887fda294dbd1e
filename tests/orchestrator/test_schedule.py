"""The grid's queue order (orchestrator/schedule.py): longest first, a shared stage counted once."""
import pytest

from orchestrator.contract import TrialSpec
from orchestrator.plan import GridError, Overrides, grid_trials, make_plan
from orchestrator.schedule import longest_first, marginal_passes, order_trials, trial_work
from search_spaces import load_preset


def _spec(method, seed=0, **over):
    base = {"epochs_special": 2, "epochs_select": 1, "keep_ratios": [1.0, 0.5, 0.2]}
    return TrialSpec("synthetic", method, seed, "smoke", {**base, **over})


def test_trial_work_counts_passes_by_hand():
    # s3: Stage 1 2 epochs x 3 + Stage 2 1 epoch x 3, then 3 keep-ratios
    stages, stage3 = trial_work(_spec("s3", chi=4))
    assert [p for _, p in stages] == [6, 3] and stage3 == 3
    # clip trains 2 + 1 epochs in one dense stage and probes at p = 1 only
    stages, stage3 = trial_work(_spec("clip"))
    assert [p for _, p in stages] == [9] and stage3 == 1
    stages, stage3 = trial_work(_spec("raw_probe"))
    assert stages == [] and stage3 == 1


def test_a_stage_trained_earlier_in_the_queue_is_free():
    s3, ablation = _spec("s3", chi=4), _spec("s3_no_select", chi=4)
    assert marginal_passes([s3, ablation]) == [12, 3]         # the ablation reuses s3's Stage 1
    assert marginal_passes([ablation, s3]) == [9, 6]          # or s3 reuses the ablation's
    other_seed = _spec("s3_no_select", seed=1, chi=4)
    other_chi = _spec("s3_no_select", chi=2)
    assert marginal_passes([s3, other_seed, other_chi]) == [12, 9, 9]
    # a Stage-2 sweep shares Stage 1 only; a Stage-3 sweep shares both training stages
    assert marginal_passes([s3, _spec("s3", chi=4, lr_select=5e-4)]) == [12, 6]
    assert marginal_passes([s3, _spec("s3", chi=4, prune_scope="threshold")]) == [12, 3]


def test_longest_first_puts_each_producer_before_its_reusers():
    trials = grid_trials(load_preset("default"), ("synthetic",), (0, 1), {})
    queue = longest_first(trials)
    assert sorted(t.key() for t in queue) == sorted(t.key() for t in trials)
    sizes = marginal_passes(queue)
    assert sizes == sorted(sizes, reverse=True)
    pos = {t.key(): i for i, t in enumerate(queue)}
    ablations = [t for t in trials if t.method == "s3_no_select"]
    assert ablations
    for t in ablations:
        producer = TrialSpec(t.benchmark, "s3", t.seed, t.preset, t.overrides, label_fields=("chi", "batch_size"))
        assert pos[producer.key()] < pos[t.key()]
    # ties among S3 trials: the larger chi first (it costs more per pass on the CPU)
    chis = [t.overrides["chi"] for t in queue if t.method == "s3" and t.seed == 0]
    assert chis == sorted(chis, reverse=True)
    assert queue[-1].method == "raw_probe"


def test_the_plan_queues_longest_first_by_default_and_grid_on_request():
    preset = load_preset("default")
    by_default = make_plan(preset).trials()
    as_grid = make_plan(preset, Overrides(order="grid")).trials()
    assert [t.key() for t in as_grid] == [t.key() for t in grid_trials(preset, preset.benchmarks, preset.seeds, {})]
    assert [t.key() for t in by_default] == [t.key() for t in longest_first(as_grid)]
    assert [t.key() for t in by_default] != [t.key() for t in as_grid]
    # the order is not part of the grid's identity: --resume finds the same grid either way
    assert make_plan(preset).grid_id({}) == make_plan(preset, Overrides(order="grid")).grid_id({})


def test_an_unknown_order_is_refused():
    with pytest.raises(GridError, match="longest-first"):
        make_plan(load_preset("smoke"), Overrides(order="shortest"))
    with pytest.raises(ValueError, match="grid"):
        order_trials([], "random")
