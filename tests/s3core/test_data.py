"""Tests of s3core.data: synthetic data, safe pickles, MultiBench files + Arrow cache, user arrays.

MultiBench fixtures are tiny pickles in the real layout: {split: {vision, audio, text, labels[, id]}}.
"""
from __future__ import annotations

import json
import os
import pickle
import time

import numpy as np
import pytest

from s3core.data import (BENCHMARKS, Benchmark, DataError, SyntheticConfig, load_arrays, load_benchmark,
                         load_multibench, make_synthetic, safe_load_pickle, write_arrow_benchmark)
from s3core.data import cache as cache_mod
from s3core.data import multibench as mb_mod
from s3core.data.base import content_digest

SPLITS = ("train", "valid", "test")
T = 3


def one_line(err: pytest.ExceptionInfo) -> str:
    msg = str(err.value)
    assert "\n" not in msg, msg
    return msg


# ----------------------------------------------------------------------------------------------
# MultiBench fixtures


def mb_split(rng, n=8, dims=(35, 74, 300), labels=None, with_id=False):
    v, a, t = (rng.standard_normal((n, T, d)).astype(np.float32) for d in dims)
    if labels is None:
        labels = rng.standard_normal((n, 1, 1))
    split = {"vision": v, "audio": a, "text": t, "labels": labels}
    if with_id:
        split["id"] = np.array([f"clip{i}" for i in range(n)])
    return split


def mb_data(seed=0, n=8, dims=(35, 74, 300), with_id=False):
    rng = np.random.default_rng(seed)
    return {s: mb_split(rng, n=n, dims=dims, with_id=with_id) for s in SPLITS}


def write_pickle(path, obj, protocol=pickle.DEFAULT_PROTOCOL):
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=protocol)
    return str(path)


@pytest.fixture
def mosi_dir(tmp_path):
    data = mb_data(with_id=True)
    write_pickle(tmp_path / "mosi_raw.pkl", data)
    return tmp_path, data


# ----------------------------------------------------------------------------------------------
# synthetic


def _linear_acc(x_train, y_train, x_test, y_test):
    """Accuracy of a least-squares linear classifier (with bias) trained on train, scored on test."""
    add_bias = lambda x: np.concatenate([x.reshape(len(x), -1), np.ones((len(x), 1))], axis=1)
    beta, *_ = np.linalg.lstsq(add_bias(x_train), 2.0 * y_train - 1.0, rcond=None)
    return float(((add_bias(x_test) @ beta > 0) == y_test).mean())


def test_synthetic_shapes_dtypes_and_speed():
    t0 = time.perf_counter()
    bench = make_synthetic(SyntheticConfig())
    assert time.perf_counter() - t0 < 1.0
    assert bench.modalities == ("x1", "x2") and bench.num_classes == 2
    assert bench.dims == {"x1": 16, "x2": 24} and bench.seq_lens == {"x1": 8, "x2": 8}
    assert [len(bench[s]) for s in SPLITS] == [2000, 500, 500]
    tr = bench["train"]
    assert tr.features["x1"].dtype == np.float32 and tr.masks["x1"].dtype == np.bool_
    assert tr.labels.dtype == np.int64 and tr.masks["x1"].all()
    assert 0.4 < tr.labels.mean() < 0.6  # roughly balanced
    assert bench.meta["factors"]["train"]["shared"].shape == (2000, 4)


def test_synthetic_deterministic_by_seed():
    a, b, c = (make_synthetic(SyntheticConfig(n_train=50, n_valid=20, n_test=20, seed=s)) for s in (3, 3, 4))
    for s in SPLITS:
        for m in a.modalities:
            np.testing.assert_array_equal(a[s].features[m], b[s].features[m])
        np.testing.assert_array_equal(a[s].labels, b[s].labels)
    assert not np.array_equal(a["train"].features["x1"], c["train"].features["x1"])


@pytest.mark.parametrize("label, from_shared, from_unique1, from_both", [
    ("shared", "high", "chance", "high"),
    ("unique", "chance", "high", "high"),
    ("mixed", "partial", "partial", "high"),
])
def test_synthetic_label_depends_on_named_factors(label, from_shared, from_unique1, from_both):
    bench = make_synthetic(SyntheticConfig(label=label))
    f_tr, f_te = bench.meta["factors"]["train"], bench.meta["factors"]["test"]
    y_tr, y_te = bench["train"].labels, bench["test"].labels

    def acc(names):
        pick = lambda f: np.concatenate([f[n] for n in names], axis=1)
        return _linear_acc(pick(f_tr), y_tr, pick(f_te), y_te)

    expect = {"high": lambda a: a > 0.97, "chance": lambda a: a < 0.62, "partial": lambda a: 0.6 < a < 0.95}
    assert expect[from_shared](acc(["shared"]))
    assert expect[from_unique1](acc(["x1"]))
    assert expect[from_both](acc(["shared", "x1"]))
    assert acc(["x2"]) < 0.62  # modality 2's unique factor never drives the label


def test_synthetic_features_carry_the_factors():
    # A label from Z_1 is readable from modality x1's features only; a label from Z_s from both.
    uniq = make_synthetic(SyntheticConfig(label="unique"))
    shared = make_synthetic(SyntheticConfig(label="shared"))

    def feat_acc(bench, m):
        return _linear_acc(bench["train"].features[m], bench["train"].labels,
                           bench["test"].features[m], bench["test"].labels)

    assert feat_acc(uniq, "x1") > 0.8 and feat_acc(uniq, "x2") < 0.62
    assert feat_acc(shared, "x1") > 0.8 and feat_acc(shared, "x2") > 0.8


def test_synthetic_three_modalities_and_padding():
    bench = make_synthetic(SyntheticConfig(n_train=200, n_valid=50, n_test=50, dims=(4, 5, 6), pad_fraction=0.5))
    assert bench.modalities == ("x1", "x2", "x3")
    x, mask = bench["train"].features["x3"], bench["train"].masks["x3"]
    assert 0.1 < (~mask[:, 0]).mean() < 0.9
    # padding is on the left: once a step is real, every later step is real
    assert (np.diff(mask.astype(int), axis=1) >= 0).all()
    np.testing.assert_array_equal(x[~mask], 0.0)


@pytest.mark.parametrize("kwargs", [dict(dims=(16,)), dict(label="both"), dict(n_train=0), dict(pad_fraction=2.0)])
def test_synthetic_bad_config(kwargs):
    with pytest.raises(DataError) as err:
        make_synthetic(SyntheticConfig(**kwargs))
    one_line(err)


# ----------------------------------------------------------------------------------------------
# safe pickle


class _Payload:
    """Pickles as a call fn(*args): what a malicious file does."""

    def __init__(self, fn, *args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


@pytest.mark.parametrize("kind", ["os.system", "builtins.open", "builtins.eval"])
def test_malicious_pickle_is_refused_and_runs_nothing(tmp_path, kind):
    marker = tmp_path / "pwned"
    payload = {
        "os.system": _Payload(os.system, f"touch {marker}"),
        "builtins.open": _Payload(open, str(marker), "w"),
        "builtins.eval": _Payload(eval, f"open({str(marker)!r}, 'w').close()"),
    }[kind]
    path = write_pickle(tmp_path / "mosi_raw.pkl", {"train": {"vision": np.zeros(2), "x": payload}})
    with pytest.raises(DataError) as err:
        safe_load_pickle(path)
    msg = one_line(err)
    assert "refusing to unpickle" in msg and "may be malicious" in msg and path in msg
    assert not marker.exists()
    # and through the MultiBench loader too
    with pytest.raises(DataError):
        load_multibench("mosi", tmp_path)
    assert not marker.exists()


@pytest.mark.parametrize("protocol", range(0, pickle.HIGHEST_PROTOCOL + 1))
def test_safe_pickle_reads_numpy_and_containers(tmp_path, protocol):
    obj = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": [np.float64(1.5), (1, "x")],
           "c": {1, 2}, "d": np.array(["ab", "c"]), "e": np.int64(3)}
    out = safe_load_pickle(write_pickle(tmp_path / "x.pkl", obj, protocol=protocol))
    np.testing.assert_array_equal(out["a"], obj["a"])
    assert out["b"] == obj["b"] and out["c"] == {1, 2} and list(out["d"]) == ["ab", "c"] and out["e"] == 3


def test_safe_pickle_maps_numpy1_names(tmp_path):
    # numpy 1.x pickles name numpy.core.multiarray; emulate one (protocol 2 stores names as text).
    raw = pickle.dumps({"x": np.arange(4.0), "s": np.float32(2)}, protocol=2).replace(b"numpy._core", b"numpy.core")
    assert b"numpy.core.multiarray" in raw
    (tmp_path / "old.pkl").write_bytes(raw)
    out = safe_load_pickle(tmp_path / "old.pkl")
    np.testing.assert_array_equal(out["x"], np.arange(4.0))


@pytest.mark.parametrize("fname, expected", [("mosi_data.pkl", "154 MB"), ("mosei_senti_data.pkl", "3.73 GB"),
                                             ("other.pkl", "unknown")])
def test_truncated_pickle_message(tmp_path, fname, expected):
    raw = pickle.dumps(mb_data(n=4))
    cut = raw[: len(raw) // 2]
    (tmp_path / fname).write_bytes(cut)
    with pytest.raises(DataError) as err:
        safe_load_pickle(tmp_path / fname)
    msg = one_line(err)
    assert "truncated" in msg and str(len(cut)) in msg and expected in msg and "download" in msg


def test_not_a_pickle(tmp_path):
    (tmp_path / "junk.pkl").write_bytes(b"this is not a pickle at all")
    with pytest.raises(DataError) as err:
        safe_load_pickle(tmp_path / "junk.pkl")
    assert "junk.pkl" in one_line(err)


# ----------------------------------------------------------------------------------------------
# MultiBench loader


def test_multibench_cleaning_rules(tmp_path):
    data = mb_data(n=6, with_id=True)
    tr = data["train"]
    tr["text"][1] = 0.0  # no text: dropped from every key
    tr["audio"][2, 0, :3] = -np.inf  # missing audio -> 0
    tr["vision"][3, :2] = 0.0  # left padding -> masked
    tr["labels"] = np.array([0.5, -1.0, 0.0, 2.0, -0.2, 1.0]).reshape(6, 1, 1)
    data["valid"]["labels"] = data["valid"]["labels"].reshape(6, 1)  # (N, 1) also accepted
    write_pickle(tmp_path / "mosi_raw.pkl", data)
    bench = load_multibench("mosi", tmp_path, modalities="all", label_rule="positive", alignment="nonzero")
    assert len(bench["train"]) == 5 and len(bench["valid"]) == 6
    x = bench["train"]
    np.testing.assert_array_equal(x.features["text"], np.delete(tr["text"], 1, axis=0))
    assert x.features["audio"][1, 0, :3].tolist() == [0.0, 0.0, 0.0]  # sample 2 moved to row 1
    np.testing.assert_array_equal(x.features["audio"][1, 0, 3:], tr["audio"][2, 0, 3:])
    assert x.masks["vision"][2].tolist() == [False, False, True]
    assert x.labels.tolist() == [1, 0, 1, 0, 1]  # y > 0: sentiment 0 is negative
    assert bench.meta["cleaning"]["train"] == {"n_raw": 6, "n_dropped": 1}
    assert bench.modalities == ("vision", "audio", "text") and bench.num_classes == 2


@pytest.mark.parametrize("name", ["mosi", "mosei"])
@pytest.mark.parametrize("rule, expected", [("positive", [1, 0, 0, 1]), ("nonnegative", [1, 0, 1, 1]),
                                            (None, [1, 0, 1, 1])])
def test_label_rules(tmp_path, name, rule, expected):
    """The default for MOSI and MOSEI is the paper's (FactorCL's mosi_label): y >= 0 -> 1, so a
    sentiment of exactly 0 is positive; MultiBench's y > 0 stays one option away."""
    data = mb_data(n=4)
    for s in SPLITS:
        data[s]["labels"] = np.array([[0.4], [-2.0], [0.0], [3.0]])
    write_pickle(tmp_path / mb_mod.FILES[name][0], data)
    bench = load_multibench(name, tmp_path, label_rule=rule)
    assert bench["test"].labels.tolist() == expected
    assert bench.meta["label_rule"] == (rule or "nonnegative")
    assert bench.meta["protocol"]["label_rule"] == (rule or "nonnegative")


def mb_data_dims(data, dims):
    rng = np.random.default_rng(1)
    for s in SPLITS:
        n = data[s]["labels"].shape[0]
        for m, d in zip(("vision", "audio", "text"), dims):
            data[s][m] = rng.standard_normal((n, T, d)).astype(np.float32)
    return data


@pytest.mark.parametrize("name", ["urfunny", "ur-funny", "humor"])
def test_urfunny_binary_default(tmp_path, name):
    data = mb_data_dims(mb_data(n=4), (371, 81, 300))
    for s in SPLITS:
        data[s]["labels"] = np.array([[[1.0]], [[0.0]], [[1.0]], [[0.0]]])
    write_pickle(tmp_path / "humor.pkl", data)
    bench = load_benchmark(name, data_dir=tmp_path)
    assert bench.name == "urfunny" and bench["train"].labels.tolist() == [1, 0, 1, 0]
    assert bench.meta["label_rule"] == "binary"


def test_binary_rule_rejects_non_binary(tmp_path):
    data = mb_data_dims(mb_data(n=4), (371, 81, 300))
    write_pickle(tmp_path / "sarcasm.pkl", data)
    assert load_benchmark("sarcasm", data_dir=tmp_path).name == "mustard"  # 'positive' by default
    with pytest.raises(DataError) as err:
        load_multibench("mustard", tmp_path, label_rule="binary")
    assert "0/1" in one_line(err) and "sarcasm.pkl" in str(err.value)


@pytest.mark.parametrize("mods", [("vision", "text"), ("text", "audio"), ("audio", "vision", "text")])
def test_modality_subsets(mosi_dir, mods):
    tmp_path, data = mosi_dir
    bench = load_multibench("mosi", tmp_path, modalities=mods)
    assert bench.modalities == mods and set(bench["train"].features) == set(mods)
    np.testing.assert_array_equal(bench["valid"].features[mods[0]], data["valid"][mods[0]])


def test_no_silent_fallback_to_another_file(tmp_path):
    """Only mosi_data.pkl (20/5/300) present: the default mosi_raw.pkl is missing, and the other
    file is read only when named; the error says which option reads it."""
    write_pickle(tmp_path / "mosi_data.pkl", mb_data_dims(mb_data(n=4), (20, 5, 300)))
    with pytest.raises(DataError) as err:
        load_multibench("mosi", tmp_path)
    msg = one_line(err)
    assert "no mosi_raw.pkl" in msg and "source_file='mosi_data.pkl'" in msg and "20/5/300" in msg
    bench = load_multibench("mosi", tmp_path, source_file="mosi_data.pkl", modalities="all")
    assert bench.dims == {"vision": 20, "audio": 5, "text": 300}
    assert bench.meta["protocol"]["source_file"] == "mosi_data.pkl"
    write_pickle(tmp_path / "mosi_raw.pkl", mb_data(n=4))
    assert load_multibench("mosi", tmp_path).meta["protocol"]["source_file"] == "mosi_raw.pkl"
    # MOSEI likewise: mosei_raw.pkl alone is not read in place of mosei_senti_data.pkl
    write_pickle(tmp_path / "mosei_raw.pkl", mb_data(n=4))
    with pytest.raises(DataError) as err:
        load_benchmark("mosei", data_dir=tmp_path)
    assert "no mosei_senti_data.pkl" in one_line(err) and "source_file='mosei_raw.pkl'" in one_line(err)
    bench = load_benchmark("mosei", data_dir=tmp_path, source_file="mosei_raw.pkl")
    assert bench.meta["source"].endswith("mosei_raw.pkl") and "mosei_raw.pkl" in bench.describe()
    with pytest.raises(DataError) as err:
        load_benchmark("mosei", data_dir=tmp_path, source_file="mosi_raw.pkl")
    assert "choose one of: mosei_senti_data.pkl, mosei_raw.pkl" in one_line(err)


@pytest.mark.parametrize("name", ["mosi", "mosei", "urfunny", "mustard"])
def test_multibench_defaults_to_vision_and_text_audio_one_option_away(tmp_path, name):
    fname = mb_mod.FILES[name][0]
    data = mb_data_dims(mb_data(n=4), mb_mod.EXPECTED_DIMS[fname])
    for s in SPLITS:
        data[s]["labels"] = np.array([[1.0], [0.0], [1.0], [0.0]])
    write_pickle(tmp_path / fname, data)
    bench = load_benchmark(name, data_dir=tmp_path)
    assert bench.modalities == ("vision", "text") and set(bench["train"].features) == {"vision", "text"}
    assert bench.meta["protocol"]["modalities"] == "vision,text"
    assert load_benchmark(name, data_dir=tmp_path, modalities="all").modalities == ("vision", "audio", "text")
    assert load_benchmark(name, data_dir=tmp_path, modalities=["vision", "audio", "text"]).meta["protocol"][
        "modalities"] == "vision,audio,text"


def test_protocol_is_recorded_and_printed(mosi_dir):
    tmp_path, _ = mosi_dir
    bench = load_multibench("mosi", tmp_path)
    assert bench.meta["protocol"] == {"label_rule": "nonnegative", "modalities": "vision,text",
                                      "source_file": "mosi_raw.pkl", "alignment": "text_start"}
    line = bench.describe()
    for part in ("mosi_raw.pkl", "nonnegative", "text_start", "vision", "8/8/8"):
        assert part in line, (part, line)


# ----------------------------------------------------------------------------------------------
# Arrow cache


def _cache_entries(data_dir):
    """Cache directories under their final names (not temp dirs, not lock files)."""
    root = data_dir / ".s3cache"
    return sorted(e for e in os.listdir(root) if not e.startswith(".tmp-") and not e.endswith(".lock"))


def test_cache_built_once_and_reused(mosi_dir, monkeypatch):
    tmp_path, _ = mosi_dir
    first = load_multibench("mosi", tmp_path)
    cache_dirs = _cache_entries(tmp_path)
    assert len(cache_dirs) == 1 and first.meta["cache"].startswith(str(tmp_path / ".s3cache"))

    def boom(path):
        raise AssertionError("the pickle was read again")

    monkeypatch.setattr(mb_mod, "safe_load_pickle", boom)
    second = load_multibench("mosi", tmp_path, label_rule="nonnegative", modalities=("text", "vision"))
    for s in SPLITS:
        for m in second.modalities:
            np.testing.assert_array_equal(first[s].features[m], second[s].features[m])
            np.testing.assert_array_equal(first[s].masks[m], second[s].masks[m])
    # zero-copy: arrays are read-only views of the memory-mapped Arrow file
    x = second["train"].features["text"]
    assert not x.flags.writeable and not x.flags.owndata
    assert _cache_entries(tmp_path) == cache_dirs


def test_cache_invalidated_when_source_changes(mosi_dir):
    tmp_path, _ = mosi_dir
    old = load_multibench("mosi", tmp_path)
    new_data = mb_data(seed=7)
    path = write_pickle(tmp_path / "mosi_raw.pkl", new_data)
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # ensure a new mtime
    new = load_multibench("mosi", tmp_path)
    assert new.meta["cache"] != old.meta["cache"]
    np.testing.assert_array_equal(new["train"].features["vision"], new_data["train"]["vision"])
    assert _cache_entries(tmp_path) == [os.path.basename(new.meta["cache"])]  # stale one removed
    assert sorted(os.listdir(tmp_path / ".s3cache")) == sorted([os.path.basename(new.meta["cache"]),
                                                               os.path.basename(new.meta["cache"]) + ".lock"])


def test_cache_dir_option(mosi_dir, tmp_path_factory):
    tmp_path, _ = mosi_dir
    elsewhere = tmp_path_factory.mktemp("cache")
    bench = load_benchmark("mosi", data_dir=tmp_path, cache_dir=elsewhere)
    assert bench.meta["cache"].startswith(str(elsewhere)) and not (tmp_path / ".s3cache").exists()


def test_crash_mid_write_leaves_no_trusted_cache(mosi_dir, monkeypatch):
    tmp_path, data = mosi_dir
    real_write = cache_mod._write_split_file

    def crash_on_valid(path, table):
        if path.endswith("valid.arrow"):
            with open(path, "wb") as f:
                f.write(b"ARROW1\x00\x00partial")
            raise KeyboardInterrupt("simulated crash")
        real_write(path, table)

    monkeypatch.setattr(cache_mod, "_write_split_file", crash_on_valid)
    # like kill -9: the writer gets no chance to clean up its temp directory
    monkeypatch.setattr(cache_mod.shutil, "rmtree", lambda *a, **k: None)
    with pytest.raises(KeyboardInterrupt):
        load_multibench("mosi", tmp_path)
    assert any(e.startswith(".tmp-") for e in os.listdir(tmp_path / ".s3cache"))  # the debris
    assert _cache_entries(tmp_path) == []  # nothing under a final name, so nothing to trust
    monkeypatch.undo()
    bench = load_multibench("mosi", tmp_path, modalities="all")
    np.testing.assert_array_equal(bench["test"].features["audio"], data["test"]["audio"])


@pytest.mark.parametrize("damage", ["truncate", "no_manifest", "bad_manifest", "old_version"])
def test_corrupt_cache_is_rebuilt(mosi_dir, damage):
    tmp_path, data = mosi_dir
    cache_path = load_multibench("mosi", tmp_path).meta["cache"]
    manifest = os.path.join(cache_path, "manifest.json")
    if damage == "truncate":
        with open(os.path.join(cache_path, "train.arrow"), "r+b") as f:
            f.truncate(100)
    elif damage == "no_manifest":
        os.remove(manifest)
    elif damage == "bad_manifest":
        with open(manifest, "w") as f:
            f.write("{not json")
    else:
        text = open(manifest).read().replace('"version": 1', '"version": 0')
        with open(manifest, "w") as f:
            f.write(text)
    bench = load_multibench("mosi", tmp_path)
    np.testing.assert_array_equal(bench["train"].features["text"], data["train"]["text"])


# ----------------------------------------------------------------------------------------------
# user arrays


def _npz_arrays(n=(6, 3, 3), classes=3):
    rng = np.random.default_rng(0)
    arrays = {}
    for s, k in zip(SPLITS, n):
        arrays[f"{s}_audio"] = rng.standard_normal((k, 4, 5))
        arrays[f"{s}_image"] = rng.standard_normal((k, 7)).astype(np.float32)  # vector -> (N, 1, 7)
        arrays[f"{s}_labels"] = np.arange(k) % classes
        arrays[f"{s}_audio_mask"] = np.ones((k, 4), bool)
    arrays["train_audio_mask"][0, :2] = False
    return arrays


def test_npz_round_trip(tmp_path):
    arrays = _npz_arrays()
    np.savez(tmp_path / "mine.npz", **arrays)
    bench = load_arrays(tmp_path / "mine.npz")
    assert bench.modalities == ("audio", "image") and bench.num_classes == 3
    assert bench.dims == {"audio": 5, "image": 7} and bench.seq_lens == {"audio": 4, "image": 1}
    np.testing.assert_array_equal(bench["train"].features["audio"], arrays["train_audio"].astype(np.float32))
    assert bench["train"].masks["audio"][0].tolist() == [False, False, True, True]
    assert bench["train"].masks["image"].all() and bench["valid"].labels.dtype == np.int64
    # via load_benchmark, with a modality subset in a chosen order
    sub = load_benchmark("arrays", data_dir=tmp_path / "mine.npz", modalities=["image", "audio"])
    assert sub.modalities == ("image", "audio")


def test_arrow_round_trip(tmp_path):
    bench = make_synthetic(SyntheticConfig(n_train=40, n_valid=10, n_test=10, dims=(3, 4, 5), pad_fraction=0.3))
    write_arrow_benchmark(bench, tmp_path / "arrow")
    back = load_arrays(tmp_path / "arrow")
    assert back.modalities == bench.modalities and back.num_classes == bench.num_classes
    for s in SPLITS:
        for m in bench.modalities:
            np.testing.assert_array_equal(back[s].features[m], bench[s].features[m])
            np.testing.assert_array_equal(back[s].masks[m], bench[s].masks[m])
        np.testing.assert_array_equal(back[s].labels, bench[s].labels)
    assert back.meta["config"]["seed"] == 0  # JSON-able meta survives; factor arrays are left out
    # overwriting an existing directory is atomic and complete
    write_arrow_benchmark(make_synthetic(SyntheticConfig(n_train=5, n_valid=5, n_test=5)), tmp_path / "arrow")
    assert len(load_benchmark("arrays", data_dir=tmp_path / "arrow")["train"]) == 5


def _put_nan_in_train(directory):
    """Overwrite one feature value of train.arrow with NaN in place (same byte size)."""
    path = directory / "train.arrow"
    blob = bytearray(path.read_bytes())
    one = np.float32(0.123456789).tobytes()
    at = blob.find(one)
    assert at >= 0
    blob[at:at + 4] = np.float32("nan").tobytes()
    path.write_bytes(bytes(blob))


@pytest.mark.parametrize("flag", [True, None], ids=["written-by-s3core", "written-by-other-tools"])
def test_arrow_finiteness_scan_only_when_the_writer_did_not_check(tmp_path, flag):
    """s3core's writers check every value before writing and say so in the manifest (values_checked),
    so loads skip the full scan that would page the whole cache in; a directory from other tools
    (no such key) is scanned on every load and NaN is refused."""
    bench = make_synthetic(SyntheticConfig(n_train=40, n_valid=10, n_test=10, dims=(3, 4, 5)))
    bench["train"].features["x1"][3, 0, 0] = 0.123456789
    write_arrow_benchmark(bench, tmp_path / "arrow")
    manifest_path = tmp_path / "arrow" / cache_mod.MANIFEST
    manifest = json.loads(manifest_path.read_text())
    assert manifest["values_checked"] is True
    if flag is None:
        del manifest["values_checked"]
        manifest_path.write_text(json.dumps(manifest))
    _put_nan_in_train(tmp_path / "arrow")
    if flag:
        back = load_arrays(tmp_path / "arrow")   # trusted: the scan was skipped
        assert np.isnan(back["train"].features["x1"][3, 0, 0])
    else:
        with pytest.raises(DataError, match="NaN or Inf"):
            load_arrays(tmp_path / "arrow")


def test_multibench_cache_records_the_value_check(mosi_dir):
    tmp_path, _ = mosi_dir
    cache_path = load_multibench("mosi", tmp_path).meta["cache"]
    assert cache_mod.read_manifest(cache_path)["values_checked"] is True


def test_multibench_cache_is_not_a_user_arrow_dir(mosi_dir):
    tmp_path, _ = mosi_dir
    cache_path = load_multibench("mosi", tmp_path).meta["cache"]
    with pytest.raises(DataError) as err:
        load_arrays(cache_path)
    assert "load_multibench" in one_line(err)


# ----------------------------------------------------------------------------------------------
# errors: every one is a single line that names the file (if any) and the fix


def _mb_case(tmp_path, case):
    """Write a broken MultiBench file for `case`; return (name, data_dir, kwargs, expected substrings)."""
    data = mb_data(n=4)
    fname, name, kwargs = "mosi_raw.pkl", "mosi", {}
    if case == "missing_dir":
        return name, tmp_path / "nope", kwargs, ["nope", "does not exist", "MultiBench"]
    if case == "missing_file":
        return name, tmp_path, kwargs, ["no mosi_raw.pkl", "get_data.py"]
    if case == "top_keys":
        data = {"training": data["train"], "valid": data["valid"], "test": data["test"]}
        expect = ["'train', 'valid', 'test'", "training"]
    elif case == "split_keys":
        data["valid"].pop("audio")
        expect = ["lacks keys ['audio']", "'vision', 'audio', 'text', 'labels'"]
    elif case == "dims":
        fname = "mosi_data.pkl"  # 35/74/300 arrays in a file that should hold 20/5/300
        kwargs = {"source_file": "mosi_data.pkl"}
        expect = ["mosi_data.pkl", "35/74/300", "20/5/300"]
    elif case == "nan":
        data["test"]["vision"][0, 0, 0] = np.nan
        expect = ["NaN", "test/vision"]
    elif case == "inf_text":
        data["train"]["text"][0, 0, 0] = -np.inf
        expect = ["Inf", "train/text"]
    elif case == "mismatched_n":
        data["train"]["audio"] = data["train"]["audio"][:3]
        expect = ["mismatched sample counts", "audio=3", "vision=4"]
    elif case == "label_rule":
        kwargs = {"label_rule": "sign"}
        expect = ["unknown label_rule", "nonnegative, positive, binary"]
    elif case == "alignment":
        kwargs = {"alignment": "left"}
        expect = ["unknown alignment", "text_start, nonzero"]
    elif case == "source_file":
        kwargs = {"source_file": "humor.pkl"}
        expect = ["humor.pkl", "not a mosi file", "mosi_raw.pkl, mosi_data.pkl"]
    elif case == "modality":
        kwargs = {"modalities": ["vision", "smell"]}
        expect = ["smell", "vision"]
    elif case == "one_modality":
        kwargs = {"modalities": ["text"]}
        expect = ["at least 2 modalities"]
    elif case == "not_dict":
        data = [1, 2, 3]
        expect = ["'train', 'valid', 'test'"]
    else:
        raise AssertionError(case)
    write_pickle(tmp_path / fname, data)
    return name, tmp_path, kwargs, expect


MB_CASES = ["missing_dir", "missing_file", "top_keys", "split_keys", "dims", "nan", "inf_text",
            "mismatched_n", "label_rule", "alignment", "source_file", "modality", "one_modality", "not_dict"]


@pytest.mark.parametrize("case", MB_CASES)
def test_multibench_errors(tmp_path, case):
    name, data_dir, kwargs, expect = _mb_case(tmp_path, case)
    with pytest.raises(DataError) as err:
        load_multibench(name, data_dir, **kwargs)
    msg = one_line(err)
    for part in expect:
        assert part in msg, (part, msg)


def _npz_case(tmp_path, case):
    arrays = _npz_arrays()
    if case == "missing":
        return tmp_path / "absent.npz", ["absent.npz", "no such file"]
    if case == "wrong_keys":
        arrays["trian_audio"] = arrays.pop("train_audio")
        expect = ["trian_audio", "<split>_<modality>"]
    elif case == "no_labels":
        arrays.pop("test_labels")
        expect = ["test_labels", "found"]
    elif case == "lengths":
        arrays["valid_image"] = arrays["valid_image"][:2]
        expect = ["valid_image", "2 samples", "3"]
    elif case == "nan":
        arrays["test_audio"][0, 0, 0] = np.nan
        expect = ["test_audio", "NaN"]
    elif case == "inf":
        arrays["test_image"][0, 0] = np.inf
        expect = ["test_image", "Inf"]
    elif case == "float_labels":
        arrays["train_labels"] = arrays["train_labels"].astype(np.float64)
        expect = ["train_labels", "integer", "astype"]
    elif case == "object":
        arrays["train_image"] = np.array([{"a": 1}] * 6, dtype=object)
        expect = ["train_image"]
    elif case == "modalities_differ":
        arrays.pop("valid_image")
        expect = ["valid", "image"]
    elif case == "bad_mask":
        arrays["train_audio_mask"] = np.ones((6, 3), bool)
        expect = ["train_audio_mask", "(6, 4)"]
    elif case == "one_modality":
        for s in SPLITS:
            arrays.pop(f"{s}_image")
        expect = ["at least 2"]
    elif case == "negative_labels":
        arrays["valid_labels"] = arrays["valid_labels"] - 1
        expect = ["valid_labels", "negative"]
    else:
        raise AssertionError(case)
    np.savez(tmp_path / "bad.npz", **arrays)
    return tmp_path / "bad.npz", expect


NPZ_CASES = ["missing", "wrong_keys", "no_labels", "lengths", "nan", "inf", "float_labels", "object",
             "modalities_differ", "bad_mask", "one_modality", "negative_labels"]


@pytest.mark.parametrize("case", NPZ_CASES)
def test_npz_errors(tmp_path, case):
    path, expect = _npz_case(tmp_path, case)
    with pytest.raises(DataError) as err:
        load_arrays(path)
    msg = one_line(err)
    assert str(path) in msg
    for part in expect:
        assert part in msg, (part, msg)


@pytest.mark.parametrize("kwargs, expect", [
    (dict(name="cifar"), "unknown benchmark 'cifar'; choose one of: synthetic, mosi"),
    (dict(name="mosi"), "needs data_dir"),
    (dict(name="arrays"), "needs data_dir"),
    (dict(name="synthetic", label_rule="positive"), "label_rule applies only"),
    (dict(name="synthetic", alignment="nonzero"), "alignment applies only"),
    (dict(name="arrays", data_dir="x.npz", source_file="a.pkl"), "source_file applies only"),
    (dict(name="synthetic", synthetic={"n_trian": 3}), "unknown synthetic config fields"),
    (dict(name="synthetic", modalities=["x1", "x9"]), "unknown modalities ['x9']"),
])
def test_load_benchmark_errors(kwargs, expect):
    with pytest.raises(DataError) as err:
        load_benchmark(**kwargs)
    assert expect in one_line(err)


def test_every_listed_benchmark_is_one_load_benchmark_knows():
    assert set(BENCHMARKS) >= {"synthetic", "mosi", "mosei", "urfunny", "mustard", "arrays"}
    for name in BENCHMARKS:
        if name == "synthetic":
            continue
        with pytest.raises(DataError) as err:
            load_benchmark(name)            # known: it asks for its files, not for another name
        assert "needs data_dir" in one_line(err), name


def test_load_benchmark_synthetic():
    a = load_benchmark("synthetic", seed=1)
    b = load_benchmark("synthetic", synthetic={"seed": 1, "dims": [16, 24]})
    np.testing.assert_array_equal(a["train"].features["x2"], b["train"].features["x2"])
    assert isinstance(a, Benchmark) and a.meta["config"]["seed"] == 1


def test_s3core_never_imports_orchestration_libraries():
    """s3core is a plain PyTorch library: importing every one of its modules pulls in no Ray, Optuna
    or MLflow (README)."""
    import subprocess
    import sys
    code = ("import importlib, pkgutil, sys, s3core\n"
            "mods = [m.name for m in pkgutil.walk_packages(s3core.__path__, 's3core.')]\n"
            "assert len(mods) > 10, mods\n"
            "for m in mods: importlib.import_module(m)\n"
            "bad = [m for m in ('ray', 'optuna', 'mlflow') if m in sys.modules]\n"
            "sys.exit(f'imported {bad}' if bad else 0)")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    proc = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
