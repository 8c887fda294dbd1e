"""The stage cache (s3core/stagecache.py): a reused stage is bit-identical to a fresh one; any
field a stage reads, the code and the data change its key; a killed writer leaves nothing a
reader takes; two claimants of one key train it once."""
import copy
import dataclasses
import json
import os
import threading
import time

import pytest
import torch

from s3core.config import S3Config
from s3core.data import SyntheticConfig, make_synthetic
from s3core.data.base import content_digest
from s3core.pipeline import checkpoint_state, run_trial
from s3core.stagecache import STAGE3_ONLY_FIELDS, LockFileClaims, StageCache
from s3core.stages import SELECTION, SPECIALIZATION
from s3core.tensors import to_tensors

# dropout > 0: the global RNG stream matters, so a reuse must restore it; epoch_probe: the history
# holds valid_acc, which the per-epoch probe computes
TINY = S3Config(d_model=16, n_layers=1, n_heads=2, d_ff=32, chi=2, rho=2, proj_dim=8, batch_size=32,
                epochs_special=2, epochs_select=2, eval_batch_size=64, epoch_probe=True, dropout=0.1,
                keep_ratios=(1.0, 0.5), probe_l2=(1e-2,), probe_backend="torch")
TIMING = ("time_s", "embed_s")


@pytest.fixture(scope="module")
def bench():
    return make_synthetic(SyntheticConfig(n_train=96, n_valid=48, n_test=48, seq_len=4, dims=(6, 5),
                                          pad_fraction=0.3, seed=3))


@pytest.fixture(scope="module")
def data(bench):
    return to_tensors(bench)


def cache_at(path, bench, **kw) -> StageCache:
    return StageCache(str(path), content_digest(bench), **kw)


def strip(rows):
    return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]


def assert_same(a, b):
    assert strip(a.history) == strip(b.history)
    assert strip(a.curve) == strip(b.curve)
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert sa.keys() == sb.keys()
    for name in sa:
        assert torch.equal(sa[name], sb[name]), name


@pytest.fixture(scope="module")
def fresh(data):
    return run_trial(data, TINY, "s3", progress=False)


def test_reused_stages_are_bit_identical_to_fresh_ones(data, bench, fresh, tmp_path):
    cache = cache_at(tmp_path, bench, producer={"trial": "first"})
    first = run_trial(data, TINY, "s3", progress=False, stage_cache=cache)
    assert [e["status"] for e in cache.events] == ["trained", "trained"]
    assert_same(first, fresh)
    second_cache = cache_at(tmp_path, bench, producer={"trial": "second"})
    second = run_trial(data, TINY, "s3", progress=False, stage_cache=second_cache)
    assert [(e["stage"], e["status"]) for e in second_cache.events] == [("special", "reused"), ("select", "reused")]
    assert second_cache.events[0]["from"] == {"trial": "first"}
    assert_same(second, fresh)


def test_a_stage2_sweep_and_the_ablation_reuse_stage_1(data, bench, tmp_path):
    run_trial(data, TINY, "s3", progress=False, stage_cache=cache_at(tmp_path, bench))
    other = TINY.replace(lambda_suff=0.3, lr_select=5e-3)
    cache = cache_at(tmp_path, bench)
    swept = run_trial(data, other, "s3", progress=False, stage_cache=cache)
    assert [e["status"] for e in cache.events] == ["reused", "trained"]
    assert_same(swept, run_trial(data, other, "s3", progress=False))
    cache = cache_at(tmp_path, bench)
    ablation = run_trial(data, TINY, "s3_no_select", progress=False, stage_cache=cache)
    assert [e["status"] for e in cache.events] == ["reused"]
    assert_same(ablation, run_trial(data, TINY, "s3_no_select", progress=False))


def test_a_stage3_only_change_reuses_both_stages(data, bench, fresh, tmp_path):
    run_trial(data, TINY, "s3", progress=False, stage_cache=cache_at(tmp_path, bench))
    cfg = TINY.replace(keep_ratios=(1.0, 0.3), prune_scope="threshold", probe="factorcl")
    cache = cache_at(tmp_path, bench)
    res = run_trial(data, cfg, "s3", progress=False, stage_cache=cache)
    assert [e["status"] for e in cache.events] == ["reused", "reused"]
    ref = run_trial(data, cfg, "s3", progress=False)
    assert_same(res, ref)


def test_excluded_fields_really_leave_the_stages_alone(data, fresh):
    """The exclusions are claims about the code: changing every Stage-3-only field, and for
    Stage 1 every field of Stage 2's own, leaves the trained stages bit-identical."""
    changed = {"keep_ratios": (1.0, 0.2), "prune_scope": "threshold", "probe": "factorcl",
               "probe_max_iter": 7, "probe_l2": (1e-3, 1.0)}
    assert set(changed) == set(STAGE3_ONLY_FIELDS)
    res = run_trial(data, TINY.replace(**changed), "s3", progress=False)
    assert strip(res.history) == strip(fresh.history)
    for name, value in res.model.state_dict().items():
        assert torch.equal(value, fresh.model.state_dict()[name]), name
    own = {"lambda_suff": 0.2, "lambda_min": 2.0, "lr_select": 7e-3, "epochs_select": 1,
           "select_local_entropy": 0.5, "select_global_entropy": 0.25}
    assert set(own) == set(SELECTION.own_fields)
    a = run_trial(data, TINY.replace(epochs_select=0), "s3", progress=False)
    b = run_trial(data, TINY.replace(**{**own, "epochs_select": 0}), "s3", progress=False)
    assert strip(a.history) == strip(b.history)
    for name, value in a.model.state_dict().items():
        assert torch.equal(value, b.model.state_dict()[name]), name


def _other_value(value):
    if isinstance(value, bool):
        return not value
    if value is None:
        return 64
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return value * 2 + 0.125
    if isinstance(value, str):
        return value + "x"
    if isinstance(value, tuple):
        return value + (0.5,)
    raise AssertionError(type(value))


def test_every_field_a_stage_reads_the_code_and_the_data_change_the_key(tmp_path):
    cache = StageCache(str(tmp_path), "d" * 64, code="c" * 32)
    stage1 = lambda c, cfg: c.key(cfg, ["special"], set(SELECTION.own_fields), None)[0]   # noqa: E731
    stage2 = lambda c, cfg: c.key(cfg, ["special", "select"], set(), None)[0]            # noqa: E731
    base1, base2 = stage1(cache, TINY), stage2(cache, TINY)
    # written out, not read from the module: widening an exclusion must fail here
    assert set(STAGE3_ONLY_FIELDS) == {"keep_ratios", "prune_scope", "probe", "probe_max_iter", "probe_l2"}
    assert set(SELECTION.own_fields) == {"lambda_suff", "lambda_min", "lr_select", "epochs_select",
                                         "select_local_entropy", "select_global_entropy"}
    assert SPECIALIZATION.own_fields == ()
    for f in dataclasses.fields(S3Config):
        cfg = dataclasses.replace(TINY, **{f.name: _other_value(getattr(TINY, f.name))})
        if f.name in STAGE3_ONLY_FIELDS:
            assert stage1(cache, cfg) == base1 and stage2(cache, cfg) == base2, f.name
        elif f.name in SELECTION.own_fields:
            assert stage1(cache, cfg) == base1, f.name
            assert stage2(cache, cfg) != base2, f.name
        else:
            assert stage1(cache, cfg) != base1, f.name
            assert stage2(cache, cfg) != base2, f.name
    assert stage1(dataclasses.replace(cache, code="e" * 32), TINY) != base1
    assert stage1(dataclasses.replace(cache, data_digest="e" * 64), TINY) != base1
    assert cache.key(TINY, ["special"], set(SELECTION.own_fields), "head")[0] != base1
    assert cache.key(TINY, ["supervised"], set(SELECTION.own_fields), None)[0] != base1


def test_a_changed_code_or_data_misses_in_a_real_trial(data, bench, tmp_path):
    run_trial(data, TINY, "s3_no_select", progress=False, stage_cache=cache_at(tmp_path, bench))
    for cache in (cache_at(tmp_path, bench, code="0" * 32), StageCache(str(tmp_path), "f" * 64)):
        run_trial(data, TINY, "s3_no_select", progress=False, stage_cache=cache)
        assert [e["status"] for e in cache.events] == ["trained"]


def test_a_killed_writer_leaves_no_entry(data, bench, tmp_path, monkeypatch):
    cache = cache_at(tmp_path, bench)
    real_save = torch.save

    def save_half_then_die(obj, f, *a, **kw):
        f.write(b"half a checkpoint")
        raise KeyboardInterrupt("killed mid-write")

    monkeypatch.setattr(torch, "save", save_half_then_die)
    with pytest.raises(KeyboardInterrupt):
        run_trial(data, TINY, "s3_no_select", progress=False, stage_cache=cache)
    monkeypatch.setattr(torch, "save", real_save)
    assert sorted(os.listdir(tmp_path)) == []          # no entry, no temporary, no lock
    # a writer killed by SIGKILL cannot clean up: its temporary directory is never taken
    assert cache.events == []
    partial = tmp_path / ".tmp-deadbeef-0000"
    partial.mkdir()
    (partial / "state.pt").write_bytes(b"half")
    again = cache_at(tmp_path, bench)
    run_trial(data, TINY, "s3_no_select", progress=False, stage_cache=again)
    assert [e["status"] for e in again.events] == ["trained"]


def test_two_claimants_train_once_and_a_stale_lock_is_taken_over(tmp_path):
    cache = StageCache(str(tmp_path), "d" * 64, code="c" * 32, poll_s=0.01)
    trained, results = [], {}

    def worker(name):
        with cache.claim("k") as entry:
            if entry is None:
                trained.append(name)
                time.sleep(0.3)
                cache.store("k", {"model": {"w": torch.ones(2)}, "history": []}, {})
                results[name] = "trained"
            else:
                results[name] = "reused"

    threads = [threading.Thread(target=worker, args=(n,)) for n in ("a", "b", "c")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(trained) == 1 and sorted(results.values()) == ["reused", "reused", "trained"]
    assert not (tmp_path / "k.lock").exists()
    # a lock of a dead process on this host, and one not refreshed for stale_after_s
    dead = {"pid": 2 ** 22 + 12345, "host": os.uname().nodename, "token": "t"}
    for lock, age in ((dead, 0), ({"pid": os.getpid(), "host": "elsewhere", "token": "u"}, 1000)):
        (tmp_path / "j.lock").write_text(json.dumps(lock))
        os.utime(tmp_path / "j.lock", (time.time() - age, time.time() - age))
        cache.stale_after_s = 100
        t0 = time.perf_counter()
        with cache.claim("j") as entry:
            assert entry is None
        assert time.perf_counter() - t0 < 2
    # a live holder is waited for, not taken over
    (tmp_path / "h.lock").write_text(json.dumps({"pid": os.getpid(), "host": os.uname().nodename, "token": "v"}))
    done = threading.Event()

    def late_store():
        time.sleep(0.3)
        cache.store("h", {"model": {}, "history": []}, {})
        done.set()

    threading.Thread(target=late_store).start()
    with cache.claim("h") as entry:
        assert entry is not None and done.is_set()


def test_a_checkpoint_taken_during_a_replay_resumes_after_the_reused_stage(data, bench, fresh, tmp_path):
    run_trial(data, TINY, "s3", progress=False, stage_cache=cache_at(tmp_path, bench))
    # another lambda_min: stage 1 is replayed from the cache, stage 2 trains
    cache = cache_at(tmp_path, bench)
    states = []
    run_trial(data, TINY.replace(lambda_min=0.25), "s3", progress=False, stage_cache=cache,
              on_epoch=lambda ev: states.append(copy.deepcopy(checkpoint_state(ev))))
    first = states[0]                      # stage 1 epoch 0, replayed with the model after stage 1
    assert (first["stage"], first["epoch"]) == ("special", TINY.epochs_special - 1)
    resumed = run_trial(data, TINY.replace(lambda_min=0.25), "s3", progress=False, resume=first)
    ref = run_trial(data, TINY.replace(lambda_min=0.25), "s3", progress=False)
    assert_same(resumed, ref)


def test_a_lock_file_is_refreshed_and_released_only_by_its_holder(tmp_path):
    """As the claim broker: a holder whose lock went stale and was taken over neither deletes nor
    refreshes its successor's lock."""
    claims = LockFileClaims(str(tmp_path), stale_after_s=100)
    lock = tmp_path / "k.lock"
    assert claims.acquire("k", "a", {}) and not claims.acquire("k", "b", {})
    claims.release("k", "b")                          # not b's to release
    assert lock.exists() and not claims.acquire("k", "b", {})
    os.utime(lock, (time.time() - 1000, time.time() - 1000))   # a stopped refreshing: stale
    assert not claims.acquire("k", "b", {})           # removes the stale lock ...
    assert claims.acquire("k", "b", {})               # ... and takes it over
    os.utime(lock, (time.time() - 50, time.time() - 50))
    claims.refresh("k", "a")                          # a's late heartbeat does not touch b's lock
    assert time.time() - lock.stat().st_mtime > 40
    claims.release("k", "a")                          # nor does its late release delete it
    assert json.loads(lock.read_text())["token"] == "b" and not claims.acquire("k", "a", {})
    claims.refresh("k", "b")
    assert time.time() - lock.stat().st_mtime < 40
    claims.release("k", "b")
    assert not lock.exists() and claims.acquire("k", "a", {})
