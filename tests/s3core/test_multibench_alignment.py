"""Time alignment of MultiBench affect data, checked against MultiBench's own loader.

MultiBench's `get_dataloader` (datasets/affect/get_data.py, class `Affectdataset.__getitem__`,
aligned=True, its default) cuts every modality of a sample at the text's first real step,
`start = text.nonzero()[0][0]`, keeps everything after it (all-zero frames included), then
`_process_1` right-pads the batch and returns each sequence's length. A sample's real steps in
s3core are `features[m][i][masks[m][i]]`; with alignment='text_start' they must be exactly
MultiBench's `x[start:]`.

Two tests:
- `test_text_start_alignment_by_hand` always runs: the expected steps are written out by hand
  from that reading of get_data.py.
- `test_text_start_alignment_matches_multibench_get_dataloader` runs MultiBench's own loader when
  the environment variable MULTIBENCH_SRC names a MultiBench checkout (the folder holding
  datasets/affect/get_data.py); it imports torchtext, h5py and MultiBench's robustness package
  only for paths not taken here, so those are stood in by empty modules. Skipped otherwise.
"""
from __future__ import annotations

import importlib.util
import os
import pickle
import sys
import types

import numpy as np
import pytest

from s3core.data import load_multibench

SPLITS = ("train", "valid", "test")
T = 6
DIMS = {"vision": 35, "audio": 74, "text": 300}


def _tricky_split(rng, n=5):
    """Left-padded samples with the cases where the two alignments differ."""
    starts = [0, 2, 4, 1, 3][:n]
    split = {m: np.zeros((n, T, d), np.float32) for m, d in DIMS.items()}
    for i, s in enumerate(starts):
        for m in DIMS:
            split[m][i, s:] = rng.standard_normal((T - s, DIMS[m])).astype(np.float32)
    split["vision"][0, 3] = 0.0          # no face found mid-clip: an input in MultiBench
    split["audio"][1, 2:4] = 0.0         # silence right at the text's start
    split["vision"][2, 1:4] = 1.5        # vision before the text starts: cut by MultiBench
    split["audio"][3, 5, :4] = -np.inf   # missing audio -> 0, still a real step
    split["text"][4, 4] = 0.0            # a zero word vector inside the text: still a step
    split["labels"] = np.array([0.0, -1.0, 2.0, 1 / 3, -0.6])[:n].reshape(n, 1, 1)
    return split, starts


def _write(tmp_path, seed=0):
    rng = np.random.default_rng(seed)
    data, starts = {}, {}
    for s in SPLITS:
        data[s], starts[s] = _tricky_split(rng)
    path = tmp_path / "mosi_raw.pkl"
    with open(path, "wb") as f:
        pickle.dump(data, f)
    return path, data, starts


def _real_steps(split, m, i):
    return np.asarray(split.features[m][i])[np.asarray(split.masks[m][i])]


def test_text_start_alignment_by_hand(tmp_path):
    _, data, starts = _write(tmp_path)
    bench = load_multibench("mosi", tmp_path, modalities="all")
    assert bench.meta["protocol"]["alignment"] == "text_start"
    for s in SPLITS:
        for i, start in enumerate(starts[s]):
            for m in DIMS:
                expected = data[s][m][i, start:].copy()
                expected[expected == -np.inf] = 0.0
                np.testing.assert_array_equal(_real_steps(bench[s], m, i), expected)
    # 'nonzero' (the per-modality mask) differs exactly where the file has zero or early frames
    own = load_multibench("mosi", tmp_path, modalities="all", alignment="nonzero")
    assert own["train"].masks["vision"][0].tolist() == [True, True, True, False, True, True]
    assert own["train"].masks["vision"][2].tolist() == [False, True, True, True, True, True]
    assert bench["train"].masks["vision"][2].tolist() == [False, False, False, False, True, True]
    assert own["train"].masks["text"][4].tolist() == [False, False, False, True, False, True]


def _multibench_affect_module(monkeypatch, src: str):
    """MultiBench's datasets/affect/get_data.py, imported with its unused imports stood in."""
    path = os.path.join(src, "datasets", "affect", "get_data.py")
    if not os.path.isfile(path):
        pytest.fail(f"MULTIBENCH_SRC={src} has no datasets/affect/get_data.py")
    robustness = types.ModuleType("robustness")
    text_robust = types.ModuleType("robustness.text_robust")
    text_robust.add_text_noise = None
    ts_robust = types.ModuleType("robustness.timeseries_robust")
    ts_robust.add_timeseries_noise = None
    for name, mod in (("h5py", types.ModuleType("h5py")), ("torchtext", types.ModuleType("torchtext")),
                      ("robustness", robustness), ("robustness.text_robust", text_robust),
                      ("robustness.timeseries_robust", ts_robust)):
        monkeypatch.setitem(sys.modules, name, mod)
    spec = importlib.util.spec_from_file_location("multibench_affect_get_data", path)
    module = importlib.util.module_from_spec(spec)
    old = np.seterr()
    try:
        spec.loader.exec_module(module)
    finally:
        np.seterr(**old)  # the module sets a process-wide numpy error state on import
    return module


@pytest.mark.skipif(not os.environ.get("MULTIBENCH_SRC"),
                    reason="set MULTIBENCH_SRC to a MultiBench checkout to compare with its get_dataloader")
def test_text_start_alignment_matches_multibench_get_dataloader(tmp_path, monkeypatch):
    path, data, _ = _write(tmp_path, seed=1)
    # a sample without text: both loaders drop it
    with open(path, "rb") as f:
        raw = pickle.load(f)
    raw["train"]["text"][1] = 0.0
    with open(path, "wb") as f:
        pickle.dump(raw, f)
    module = _multibench_affect_module(monkeypatch, os.environ["MULTIBENCH_SRC"])
    loaders = module.get_dataloader(str(path), batch_size=64, train_shuffle=False, num_workers=0,
                                    data_type="mosi")
    ours = load_multibench("mosi", tmp_path, modalities="all")
    for split_name, loader in zip(SPLITS, loaders):
        (inputs, lengths, _, labels), = list(loader)     # one batch holds the split
        split = ours[split_name]
        assert len(split) == inputs[0].shape[0]
        # task=None: MultiBench returns the raw score; the paper's rule is y >= 0
        np.testing.assert_array_equal(split.labels, (labels.numpy().reshape(-1) >= 0).astype(np.int64))
        for j, m in enumerate(("vision", "audio", "text")):
            for i in range(len(split)):
                theirs = inputs[j][i, :int(lengths[j][i])].numpy()
                np.testing.assert_array_equal(_real_steps(split, m, i), theirs, err_msg=f"{split_name}/{m}/{i}")
