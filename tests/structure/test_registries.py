"""A new method or benchmark is one registry entry plus its code, with no edit to orchestrator/
(issue 19), and the report reads the method registry without torch."""
from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from s3core import methods
from s3core.config import S3Config
from s3core.data import registry as datasets
from s3core.data.synthetic import SyntheticConfig, make_synthetic
from s3core.methods import Method, Style
from s3core.stage_specs import Stage, every_param

REPO = Path(__file__).resolve().parents[2]
TINY = dict(d_model=16, n_heads=2, d_ff=32, proj_dim=8, batch_size=32, keep_ratios=(1.0, 0.5), probe_l2=(1e-2,),
            epoch_probe=False, epochs_special=2)


def alignment_loss(model, data, cfg, idx, gen):
    """A new objective: cross-modal InfoNCE on the un-augmented inputs, plus the balancing term."""
    import torch

    from s3core.losses import cross_modal_info_nce
    from s3core.tensors import standardise

    inputs, _ = data["train"].batch(idx)
    outs = model(standardise(inputs, data))
    align = cross_modal_info_nce({m: o.z for m, o in outs.items()}, cfg.tau)
    aux = torch.stack([o.aux_loss for o in outs.values()]).mean()
    return align + cfg.lambda_aux * aux, {"align": align, "aux": aux}


TOY_METHOD = Method("toy_align", (Stage("align", alignment_loss, every_param, "lr", "epochs_special"),),
                    sweeps=("batch_size",), label="toy alignment", role="baseline",
                    style=Style("tab:red", "D", ":"))


@contextlib.contextmanager
def registered(registry, entry):
    """`entry` in `registry` (s3core.methods or s3core.data.registry) for the block."""
    registry.register(entry)
    try:
        yield entry
    finally:
        registry.unregister(entry.name)


@pytest.fixture
def toy_method():
    """The whole of a new method: its loss (above) and this one entry."""
    with registered(methods, TOY_METHOD) as entry:
        yield entry


def test_a_registered_method_runs_through_the_pipeline(toy_method):
    from s3core.pipeline import method_stages, run_trial, stage_prefixes

    data = make_synthetic(SyntheticConfig(n_train=64, n_valid=32, n_test=32, seq_len=4))
    result = run_trial(data, S3Config(**TINY), "toy_align", progress=False)
    assert [(h["stage"], h["epoch"]) for h in result.history] == [("align", 0), ("align", 1)]
    assert all(np.isfinite(h["align"]) for h in result.history)
    assert [r["keep_ratio"] for r in result.curve] == [1.0, 0.5]
    assert method_stages("toy_align", S3Config(**TINY)) == [("align", 2)]
    # its stage is one of the registry's now: S3's stage-cache key leaves out no field of it
    assert "align" in {s.name for s in methods.all_stages()}
    # (and the own fields of the other methods' stages, which S3 never reads: issue 21's baselines)
    others = {f for s in methods.all_stages() if s.name not in ("special", "select") for f in s.own_fields}
    assert stage_prefixes(methods.get_method("s3"))[0][1] == {"lambda_suff", "lambda_min", "lr_select",
                                                               "epochs_select",
                                                               "select_local_entropy", "select_global_entropy"} | others


def test_a_registered_method_is_planned_scheduled_and_reported(toy_method):
    from orchestrator.plan import Overrides, make_plan
    from orchestrator.report import aggregate, evidence, plots
    from orchestrator.schedule import trial_work
    from search_spaces import Preset

    preset = Preset("toy", ("synthetic",), {k: list(v) if isinstance(v, tuple) else v for k, v in TINY.items()},
                    {"chi": [2, 4], "batch_size": [16, 32]}, (0,), baselines=("toy_align",))
    trials = make_plan(preset, Overrides()).trials()
    toy = [t for t in trials if t.method == "toy_align"]
    assert len(toy) == 2 and sorted(t.overrides["batch_size"] for t in toy) == [16, 32]   # its sweeps
    assert "chi" not in toy[0].overrides or toy[0].overrides["chi"] == S3Config().chi
    assert trial_work(toy[0]) == ([(trial_work(toy[0])[0][0][0], 3 * 2)], 2)

    rows = []
    for method, chi, acc in (("s3", 4, 80.0), ("toy_align", 4, 75.0)):
        for seed in range(3):
            rows.append({"run_id": f"{method}-{seed}", "benchmark": "synthetic", "method": method, "chi": chi,
                         "config_key": method, "valid_acc_mean": acc, "seed": seed, "test_acc_at_best": acc + seed,
                         "keep_ratio": 1.0, "test_acc": acc, "expert_flops": 1e6})
    frame = pd.DataFrame(rows)
    configs = pd.DataFrame([{"benchmark": "synthetic", "method": m, "chi": c, "valid_acc_mean": a,
                             "run_ids": [f"{m}-{s}" for s in range(3)]}
                            for m, c, a in (("s3", 4, 80.0), ("toy_align", 4, 75.0))])
    assert aggregate.method_label("toy_align") == "toy alignment"
    assert plots._reference_methods(configs) == [("toy_align", "tab:red", ":")]
    paired = evidence.paired_rows("synthetic", frame, configs)
    assert [(r["other"], r["mean"]) for r in paired] == [("toy alignment", pytest.approx(5.0))]
    frontier = evidence.frontier_points("synthetic", frame, configs)
    assert set(frontier["label"]) == {"S3 χ=4", "toy alignment"}
    assert plots.plot_frontier("synthetic", frontier)[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_method_needs_a_known_role_and_a_free_name(toy_method):
    with pytest.raises(ValueError, match="role must be one of"):
        Method("x", (), role="control")
    with pytest.raises(ValueError, match="registered already"):
        methods.register(TOY_METHOD)


def test_importing_the_report_loads_no_torch():
    code = ("import sys, orchestrator.report, orchestrator.report.cli, orchestrator.paper_numbers; "
            "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


# ------------------------------------------------------------------------------------- datasets

def load_toy(name: str, data_dir, modalities, *, noise: float = 0.5) -> "datasets.Benchmark":
    """A new loader: two vector modalities whose class shows through Gaussian noise."""
    from s3core.data.base import Benchmark, Split, select_modalities, validate_benchmark

    rng = np.random.default_rng(0)
    splits = {}
    for split, n in (("train", 192), ("valid", 64), ("test", 64)):
        labels = rng.integers(0, 2, n)
        feats = {m: (labels[:, None, None] * 2.0 - 1.0 + noise * rng.standard_normal((n, 3, d))).astype(np.float32)
                 for m, d in (("left", 5), ("right", 7))}
        splits[split] = Split(feats, {m: np.ones((n, 3), bool) for m in feats}, labels.astype(np.int64))
    bench = Benchmark(name, ("left", "right"), splits, 2, {"source": f"toy loader, noise {noise}"})
    return validate_benchmark(select_modalities(bench, modalities, source=name), source=name)


TOY_DATASET = datasets.Dataset("toy", load_toy, aliases=("toy-data",), options=("noise",),
                               paper=(datasets.PaperNumber("s3", datasets.BEST, 55.5, chi=2, keep_ratio=0.5),))


@pytest.fixture
def toy_dataset():
    with registered(datasets, TOY_DATASET) as entry:
        yield entry


def test_a_registered_dataset_loads_by_name_alias_and_options(toy_dataset):
    from orchestrator import paper_numbers
    from orchestrator.cli import build_parser

    assert datasets.load_benchmark("TOY-DATA").num_classes == 2
    noisy = datasets.load_for_grid("toy", options={"noise": 3.0, "synthetic": {"n_train": 10}, "label_rule": None})
    assert noisy["train"].features["left"].std() > datasets.load_benchmark("toy")["train"].features["left"].std()
    with pytest.raises(datasets.DataError, match="noise applies only to the toy benchmark"):
        datasets.load_benchmark("synthetic", noise=1.0)
    with pytest.raises(datasets.DataError, match="label_rule applies only"):
        datasets.load_for_grid("toy", options={"label_rule": "positive"})
    assert paper_numbers.paper_number("toy", "s3", 2, paper_numbers.BEST).accuracy == 55.5
    assert "toy" in build_parser().format_help()


GRID_SCRIPT = textwrap.dedent("""
    import sys
    sys.path.insert(0, {tests!r})
    from test_registries import TOY_DATASET
    from s3core.data.registry import register
    from orchestrator.cli import main

    register(TOY_DATASET)
    sys.exit(main(sys.argv[1:]))
""")


def test_a_grid_runs_on_a_registered_dataset(tmp_path, toy_dataset):
    """The dataset is registered in the driver only: the grid loads data there and ships it to the
    trials. Its own loader option reaches it through --data-option, with no flag of its own."""
    script = tmp_path / "grid_on_toy.py"
    script.write_text(GRID_SCRIPT.format(tests=str(Path(__file__).parent)))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("RAY_ADDRESS", None)
    env.pop("MLFLOW_TRACKING_URI", None)
    args = ["--preset", "smoke", "--benchmark", "toy", "--num-cpus", "2", "--executor", "direct", "--verbose", "0",
            "--set", "keep_ratios=[1.0,0.5]", "epochs_special=1", "epochs_select=1", "--data-option", "noise=0.25",
            "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}", "--storage-path", str(tmp_path / "runs"),
            "--report-dir", str(tmp_path / "report")]
    proc = subprocess.run([sys.executable, str(script), *args], cwd=tmp_path, capture_output=True, text=True,
                          timeout=600, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    from mlflow.tracking import MlflowClient

    from orchestrator import mlflow_layout as L

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("s3-toy")
    runs = client.search_runs([experiment.experiment_id], f"tags.{L.TAG_ROLE} = '{L.ROLE_TRIAL}'")
    assert sorted(r.data.tags[L.TAG_METHOD] for r in runs) == ["clip", "s3"]
    assert {r.info.status for r in runs} == {"FINISHED"}
    assert {r.data.tags[L.TAG_BENCHMARK] for r in runs} == {"toy"}
    parent = client.get_run(runs[0].data.tags[L.TAG_PARENT])
    assert json.loads(parent.data.params["data.benchmarks"]) == ["toy"]
    assert json.loads(parent.data.params["data.options"]) == {"noise": 0.25}   # the entry's own option
    assert "source toy loader, noise 0.25" in proc.stdout + proc.stderr       # reached its loader
    report = (tmp_path / "report" / "report.md").read_text()
    assert "55.50 (p~0.5)" in report          # the entry's paper figure, beside S3 at chi 2
