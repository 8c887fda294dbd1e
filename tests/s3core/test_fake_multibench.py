"""The fake MultiBench writer (s3core.data.fake_multibench): the real layout, read by the real loader."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from s3core.data import DataError, load_benchmark, safe_load_pickle
from s3core.data import fake_multibench as fake
from s3core.data import multibench as mb

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.parametrize("like", ["mosei", "mosi", "urfunny", "mustard"])
def test_small_fake_file_has_the_real_layout_and_loads(tmp_path, like):
    path = fake.write_fake(like, tmp_path, scale=0.01, seed=1)
    fname = mb.FILES[like][0]
    assert os.path.basename(path) == fname and os.listdir(tmp_path) == [fname]  # no temp file left
    profile = fake.PROFILES[fname]
    raw = safe_load_pickle(path)
    assert set(raw) == {"train", "valid", "test"}
    for split, n_real in zip(("train", "valid", "test"), profile.sizes):
        s = raw[split]
        assert set(s) == {"vision", "audio", "text", "labels", "id"}
        n = max(8, round(n_real * 0.01))
        for m, d in zip(("vision", "audio", "text"), profile.dims):
            assert s[m].shape == (n, 50, d) and s[m].dtype == np.dtype(profile.dtype)
        assert s["labels"].shape == ((n, 1, 1) if profile.labels == "sentiment" else (n, 1))
        # left padding: once a sample's text starts it has a step at the end (no right padding)
        real = np.any(s["text"] != 0, axis=2)
        has_text = real.any(1)
        assert real[has_text, -1].all()
    bench = load_benchmark(like, data_dir=tmp_path, modalities="all")
    assert bench.dims == dict(zip(("vision", "audio", "text"), profile.dims))
    assert bench.meta["protocol"]["source_file"] == fname


def test_fake_mosei_has_the_quirks_the_loader_handles(tmp_path):
    fake.write_fake("mosei", tmp_path, scale=0.03, seed=0)
    raw = safe_load_pickle(tmp_path / "mosei_senti_data.pkl")
    tr = raw["train"]
    y = tr["labels"].reshape(-1)
    assert 0.15 < np.mean(y == 0) < 0.27                       # exact zeros: where the label rules differ
    assert np.allclose(y * 3, np.rint(y * 3)) and y.min() >= -3 and y.max() <= 3
    assert np.isneginf(tr["audio"]).any()                       # MultiBench sets these to 0
    no_text = ~np.any(tr["text"].reshape(len(y), -1) != 0, axis=1)
    assert no_text.sum() >= 1                                   # MultiBench drops these
    real = np.any(tr["text"] != 0, axis=2)
    zero_vision_inside = real & ~np.any(tr["vision"] != 0, axis=2)
    assert zero_vision_inside.any()                             # where the two alignments differ
    bench = load_benchmark("mosei", data_dir=tmp_path, modalities="all")
    assert len(bench["train"]) == len(y) - no_text.sum()
    assert np.isfinite(np.asarray(bench["train"].features["audio"])).all()
    labels = np.asarray(bench["train"].labels)
    assert labels.mean() == pytest.approx(np.mean(y[~no_text] >= 0))          # the paper's y >= 0
    positive = load_benchmark("mosei", data_dir=tmp_path, label_rule="positive")
    assert np.asarray(positive["train"].labels).mean() < labels.mean() - 0.15


def test_real_size_profiles_match_the_downloads():
    """The dtype and sizes in PROFILES give the published download sizes (MULTIBENCH_FORMAT.md)."""
    def nbytes(fname):
        p = fake.PROFILES[fname]
        return sum(p.sizes) * 50 * sum(p.dims) * np.dtype(p.dtype).itemsize
    assert nbytes("mosei_senti_data.pkl") == pytest.approx(3.73e9, rel=0.01)
    assert nbytes("sarcasm.pkl") == pytest.approx(208e6, rel=0.01)
    assert nbytes("mosi_data.pkl") < 154e6
    assert fake.PROFILES["mosei_senti_data.pkl"].sizes == (16326, 1871, 4659)


def test_cli_writes_and_refuses_bad_arguments(tmp_path):
    env = {**os.environ, "PYTHONPATH": REPO}
    ok = subprocess.run([sys.executable, "-m", "s3core.data.fake_multibench", "--like", "sarcasm", "--scale", "0.05",
                         str(tmp_path)], capture_output=True, text=True, env=env)
    assert ok.returncode == 0, ok.stderr
    assert "sarcasm.pkl" in ok.stdout and (tmp_path / "sarcasm.pkl").exists()
    bad = subprocess.run([sys.executable, "-m", "s3core.data.fake_multibench", "--like", "mosi", "--file",
                          "humor.pkl", str(tmp_path)], capture_output=True, text=True, env=env)
    assert bad.returncode == 2 and "not a mosi file" in bad.stderr
    with pytest.raises(DataError, match="scale"):
        fake.write_fake("mosi", tmp_path, scale=2.0)
