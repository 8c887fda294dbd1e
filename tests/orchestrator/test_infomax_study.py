"""Issue 21.4, prepared: the infomax_study preset plans S3 at chi 4 against every InfoMax baseline, and
scripts/disentangled_synthetic.py writes the authors' synthetic task in a layout s3core's `arrays`
loader reads (the parts that need the authors' code run only in the smoke run, not here)."""
import importlib.util
from collections import Counter
from pathlib import Path

import numpy as np

from orchestrator.plan import GridStudy, Overrides, make_plan
from s3core.data.arrays import load_arrays
from s3core.data.synthetic import SyntheticConfig
from s3core.methods import methods_of_family
from search_spaces import load_preset

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "disentangled_synthetic.py"


def _script():
    spec = importlib.util.spec_from_file_location("disentangled_synthetic", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_infomax_study_plans_s3_at_chi_4_against_each_infomax_method_over_5_seeds():
    preset = load_preset("infomax_study")
    plan = make_plan(preset, Overrides(synthetic={"variant": "nuisance"}))
    assert [type(s) for s in plan.studies] == [GridStudy]
    trials = plan.studies[0].trials
    methods = Counter(t.method for t in trials)
    assert set(methods) == {"s3", "s3_no_select", "clip", "raw_probe", *methods_of_family("infomax")}
    assert set(methods_of_family("infomax")) == {"disentangled_ssl", "joint_opt", "focal", "factorcl"}
    assert set(methods.values()) == {5} and {t.seed for t in trials} == {0, 1, 2, 3, 4}
    assert SyntheticConfig(**plan.data.synthetic).variant == "nuisance"
    evidence = load_preset("evidence").base
    for t in trials:
        assert t.overrides["chi"] == 4
        for field in ("epochs_special", "epochs_select", "epoch_probe", "keep_ratios", "factorcl_critic_hidden"):
            assert t.overrides[field] == evidence[field], field


def test_the_authors_task_written_as_arrays_loads_with_their_split_and_vectors_as_length_one_sequences(tmp_path):
    script = _script()
    rng = np.random.default_rng(0)
    n = 50
    x, y = rng.normal(size=(n, 100)), rng.normal(size=(n, 100))
    labels = (rng.random(n) > 0.5).astype(float)  # theirs are float 0/1
    labels[:2] = [0.0, 1.0]
    train_idx, test_idx = rng.permutation(n)[:40], rng.permutation(n)[40:]
    valid_idx = script.valid_subset(train_idx, 0.1)
    assert list(valid_idx) == list(train_idx[:4])
    path = tmp_path / "label1.npz"
    np.savez(path, **script.arrays_layout(x, y, labels, train_idx, valid_idx, test_idx))
    bench = load_arrays(path)
    assert bench.modalities == ("x", "y") and bench.num_classes == 2
    train = bench.splits["train"]
    assert train.features["x"].shape == (40, 1, 100) and train.masks["x"].all()
    np.testing.assert_allclose(train.features["y"][:, 0], y[train_idx].astype(np.float32))
    np.testing.assert_array_equal(train.labels, labels[train_idx].astype(np.int64))
    np.testing.assert_array_equal(bench.splits["test"].labels, labels[test_idx].astype(np.int64))


def test_ours_reads_the_test_accuracy_at_p_1_from_s3cores_json():
    script = _script()
    summary = {"curve": [{"keep_ratio": 0.5, "test_acc": 0.9}, {"keep_ratio": 1.0, "test_acc": 0.6}]}
    assert script.test_accuracy(summary) == 0.6


def test_every_variant_the_study_names_is_a_valid_synthetic_config():
    for variant in ("localized", "nuisance", "entangled"):
        plan = make_plan(load_preset("infomax_study"), Overrides(synthetic={"variant": variant}))
        assert SyntheticConfig(**plan.data.synthetic).variant == variant


def test_ours_epochs_match_theirs_per_method_and_refuse_a_mix():
    """`ours --epochs E` trains as long as `theirs --epochs E`: DisentangledSSL E + E (their step 1 and
    step 2), the one-step methods E in all (epochs_special + epochs_select = E)."""
    import argparse

    import pytest

    script = _script()
    args = argparse.Namespace(epochs=30, epochs_special=None, epochs_select=None)
    assert script.epoch_flags("disentangled_ssl", args) == ["--epochs-special", "30", "--epochs-select", "30"]
    for method in ("joint_opt", "focal", "factorcl"):
        assert script.epoch_flags(method, args) == ["--epochs-special", "30", "--epochs-select", "0"]
    explicit = argparse.Namespace(epochs=None, epochs_special=4, epochs_select=0)
    assert script.epoch_flags("focal", explicit) == ["--epochs-special", "4", "--epochs-select", "0"]
    with pytest.raises(SystemExit, match="not both"):
        script.epoch_flags("focal", argparse.Namespace(epochs=3, epochs_special=4, epochs_select=None))


def test_the_labels_do_not_reach_the_infomax_training(tmp_path):
    """`ours --train-once` trains once on label 1's file and probes the others with that model: sound
    only if the InfoMax methods' training never reads the labels. Two files that differ only in their
    labels must give bit-identical trained weights (and, when the labels differ, different probes)."""
    import torch

    from s3core.config import S3Config
    from s3core.data.arrays import load_arrays
    from s3core.pipeline import run_trial

    script = _script()
    rng = np.random.default_rng(1)
    n = 48
    x, y = rng.normal(size=(n, 6)), rng.normal(size=(n, 6))
    idx = np.arange(n)
    paths = []
    for k in (1, 2):
        labels = (x[:, 0] > 0) if k == 1 else (y[:, 1] > 0)
        paths.append(tmp_path / f"label{k}.npz")
        np.savez(paths[-1], **script.arrays_layout(x, y, labels.astype(float), idx[:32], idx[32:40], idx[40:]))
    cfg = S3Config(d_model=8, n_heads=2, d_ff=16, proj_dim=8, batch_size=16, epochs_special=1, epochs_select=1,
                   epoch_probe=False, factorcl_critic_hidden=8, seed=3)
    for method in script.OURS:
        a, b = (run_trial(load_arrays(p), cfg, method, progress=False) for p in paths)
        wa, wb = a.model.state_dict(), b.model.state_dict()
        assert wa.keys() == wb.keys()
        for name in wa:
            assert torch.equal(wa[name], wb[name]), (method, name)
        assert [h["loss"] for h in a.history] == [h["loss"] for h in b.history], method
