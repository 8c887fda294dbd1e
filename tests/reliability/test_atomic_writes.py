"""Interrupted writes leave nothing a later run would trust.

- Arrow cache (s3core/data/cache.py): a conversion killed for real (SIGKILL) half-way, or whose
  final rename fails, leaves no directory under the cache's name; the next load rebuilds it and
  returns the pickle's arrays. A cache whose file was truncated afterwards is detected and rebuilt.
- Report files (orchestrator/report/__init__.py `_atomic_write`): a failing rename keeps the previous file
  intact and leaves no temporary file. That every file of a whole report arrives this way is
  tests/orchestrator/test_report.py::test_every_report_file_arrives_by_an_atomic_rename.
- Checkpoints (orchestrator/contract.py): a save that fails partway leaves the previous checkpoint
  loadable; a checkpoint is loaded with weights_only, so a checkpoint file carrying a pickle
  payload is refused without running it. (Resuming from real checkpoints
  after a killed worker is test_faults.py::test_worker_killed_mid_trial_resumes_from_checkpoint.)
"""
from __future__ import annotations

import os
import signal
import subprocess
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from relhelp import PY, cli_env, mb_data, write_pickle

from s3core.data import cache as cache_mod
from s3core.data import load_multibench
from s3core.data import multibench as mb_mod


def expected_arrays(data: dict) -> dict:
    return {s: {"vision": data[s]["vision"], "audio": data[s]["audio"], "text": data[s]["text"],
                "labels": (data[s]["labels"].reshape(-1) >= 0).astype(np.int64)} for s in data}  # the paper's rule


def assert_matches(bench, data: dict):
    exp = expected_arrays(data)
    for s in ("train", "valid", "test"):
        for m in bench.modalities:  # MultiBench's default: vision and text
            np.testing.assert_array_equal(np.asarray(bench[s].features[m]), exp[s][m])
        np.testing.assert_array_equal(np.asarray(bench[s].labels), exp[s]["labels"])


def cache_dirs(data_dir: Path) -> list[Path]:
    root = data_dir / mb_mod.CACHE_SUBDIR
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".tmp-")) if root.exists() else []


@pytest.fixture
def mosi(tmp_path):
    data = mb_data(seed=3, n=64, t=6)
    write_pickle(tmp_path / "mosi_raw.pkl", data)
    return tmp_path, data


def test_conversion_killed_midway_is_rebuilt(mosi):
    data_dir, data = mosi
    ready = data_dir / "split-written"
    # A real conversion in a child process, held after its first split file is on disk, then SIGKILLed.
    script = textwrap.dedent(f"""
        import time
        from s3core.data import cache, load_multibench
        real = cache._write_split_file
        def slow_write(path, table):
            real(path, table)
            open({str(ready)!r}, "w").close()
            time.sleep(120)
        cache._write_split_file = slow_write
        load_multibench("mosi", {str(data_dir)!r})
    """)
    proc = subprocess.Popen([PY, "-c", script], env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not ready.exists():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the conversion never started"
            time.sleep(0.1)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # half a conversion is on disk, but only under a temporary name nobody reads
    root = data_dir / mb_mod.CACHE_SUBDIR
    assert any(p.name.startswith(".tmp-") for p in root.iterdir())
    assert cache_dirs(data_dir) == []

    bench = load_multibench("mosi", data_dir)
    assert_matches(bench, data)
    (cache_dir,) = cache_dirs(data_dir)
    cache_mod.read_arrow_splits(cache_dir)  # a complete, self-consistent cache


def test_failed_rename_leaves_no_cache_and_next_load_rebuilds(mosi, monkeypatch):
    data_dir, data = mosi
    calls = []

    def failing_replace(src, dst):
        calls.append((src, dst))
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(cache_mod.os, "replace", failing_replace)
    with pytest.raises(OSError):
        load_multibench("mosi", data_dir)
    assert calls, "the cache is not written through os.replace"
    monkeypatch.undo()
    root = data_dir / mb_mod.CACHE_SUBDIR
    assert cache_dirs(data_dir) == []
    assert not any(p.name.startswith(".tmp-") for p in root.iterdir()), "the temporary directory was left"
    assert_matches(load_multibench("mosi", data_dir), data)


def test_truncated_cache_file_is_detected_and_rebuilt(mosi):
    data_dir, data = mosi
    load_multibench("mosi", data_dir)
    (cache_dir,) = cache_dirs(data_dir)
    arrow = cache_dir / "train.arrow"
    raw = arrow.read_bytes()
    arrow.write_bytes(raw[: len(raw) // 3])  # e.g. a disk-full copy of the cache
    with pytest.raises(cache_mod.CacheInvalid):
        cache_mod.read_arrow_splits(cache_dir)
    assert_matches(load_multibench("mosi", data_dir), data)
    assert (cache_dir / "train.arrow").stat().st_size == len(raw)


def test_report_file_write_is_atomic(tmp_path, monkeypatch):
    from orchestrator import report

    target = tmp_path / "out" / "index.html"
    report._atomic_write(target, b"<html>old complete report</html>")

    def failing_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(report.os, "replace", failing_replace)
    with pytest.raises(OSError):
        report._atomic_write(target, b"<html>new report" + b"x" * 100_000)
    monkeypatch.undo()
    assert target.read_bytes() == b"<html>old complete report</html>"
    assert sorted(p.name for p in target.parent.iterdir()) == ["index.html"], "a temporary file was left"
    # and a successful write replaces the whole file
    report._atomic_write(target, b"<html>new</html>")
    assert target.read_bytes() == b"<html>new</html>"
    assert sorted(p.name for p in target.parent.iterdir()) == ["index.html"]


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_checkpoint_with_code_payload_is_refused(tmp_path):
    import pickle

    from orchestrator.contract import CHECKPOINT_FILE, load_checkpoint_state

    marker = tmp_path / "PAYLOAD_RAN"
    with open(tmp_path / CHECKPOINT_FILE, "wb") as f:
        pickle.dump({"epoch": 1, "x": _Payload(marker)}, f)
    with pytest.raises(Exception) as err:
        load_checkpoint_state(str(tmp_path))
    assert "weights_only" in str(err.value) or "Unsupported" in str(err.value)
    assert not marker.exists()


def test_a_checkpoint_save_that_fails_partway_leaves_the_old_checkpoint_loadable(tmp_path, monkeypatch):
    """torch.save dies after writing some bytes (disk full, a kill): the checkpoint a restarted
    worker would load is still the previous, complete one. The writer is
    orchestrator/contract.py's write_checkpoint_state."""
    import torch

    from orchestrator.contract import load_checkpoint_state, write_checkpoint_state

    old = {"stage": "special", "epoch": 1, "w": torch.arange(6.0)}
    write_checkpoint_state(str(tmp_path), old)

    def save_that_dies_partway(obj, f, *args, **kwargs):
        if hasattr(f, "write"):
            f.write(b"\x80\x04partial checkpoint")
        else:
            with open(f, "wb") as fh:
                fh.write(b"\x80\x04partial checkpoint")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", save_that_dies_partway)
    with pytest.raises(OSError):
        write_checkpoint_state(str(tmp_path), {"stage": "special", "epoch": 2, "w": torch.zeros(6)})
    monkeypatch.undo()
    back = load_checkpoint_state(str(tmp_path))
    assert back["epoch"] == 1 and torch.equal(back["w"], old["w"])
    # no temporary file is left beside it (Ray would upload it with the checkpoint directory)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.pt"]
    # and a save that succeeds replaces it whole
    write_checkpoint_state(str(tmp_path), {"stage": "select", "epoch": 0, "w": torch.ones(6)})
    assert load_checkpoint_state(str(tmp_path))["stage"] == "select"
