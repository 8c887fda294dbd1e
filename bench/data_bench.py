"""Section 3: loading a MOSEI-sized MultiBench pickle vs the Arrow cache.

Every load runs in its own subprocess (bench.memprobe) so that its peak RSS is its own. The
pickle is our own synthetic file, written in MultiBench's layout ({split: {vision, audio, text,
labels, id}}), so plain pickle.load is safe to run on it as a reference.
"""
from __future__ import annotations

import os
import shutil
import statistics
import tempfile
import time

from .common import run_child

# MOSEI (mosei_senti_data.pkl): 16326 / 1871 / 4659 samples, 50 steps, vision 35, audio 74, text 300
MOSEI_SPLITS = {"train": 16326, "valid": 1871, "test": 4659}
MOSEI_DIMS = {"vision": 35, "audio": 74, "text": 300}
STEPS = 50


def _scaled_splits(total: int) -> dict[str, int]:
    full = sum(MOSEI_SPLITS.values())
    return {s: max(2, round(n * total / full)) for s, n in MOSEI_SPLITS.items()}


def pickle_bytes(splits: dict[str, int]) -> int:
    n = sum(splits.values())
    return n * STEPS * sum(MOSEI_DIMS.values()) * 4 + n * 8


# ---------------------------------------------------------------- child side (in a subprocess)

def _write(a: dict) -> dict:
    # child side: a measured process imports what its action needs and nothing else (peak RSS)
    import pickle

    import numpy as np
    rng = np.random.default_rng(0)
    data = {}
    for s, n in a["splits"].items():
        split = {}
        pad = rng.integers(0, 20, size=n)                     # MultiBench pads on the left with zeros
        pad[rng.random(n) < 0.5] = 0
        steps = np.arange(STEPS)[None, :]
        real = (steps >= pad[:, None])[:, :, None]
        for m, d in MOSEI_DIMS.items():
            x = rng.standard_normal((n, STEPS, d), dtype=np.float32)
            x *= real
            if m == "audio":
                x[rng.random(x.shape) < 1e-4] = -np.inf        # cleaned to 0 by MultiBench's rule
            split[m] = x
        split["labels"] = rng.uniform(-3, 3, size=(n, 1, 1)).astype(np.float32)
        split["id"] = np.array([f"s{i}" for i in range(n)])
        data[s] = split
    t0 = time.perf_counter()
    with open(a["path"], "wb") as f:
        pickle.dump(data, f, protocol=4)
    return {"seconds": time.perf_counter() - t0, "bytes": os.path.getsize(a["path"])}


def child(a: dict) -> dict:
    """One measured action in a fresh process: time and growth of peak RSS over the post-import peak."""
    import numpy as np  # (imports are not measured)

    from bench.common import maxrss_mib, reset_peak_rss, rss_mib
    from s3core.data import load_multibench, safe_load_pickle
    action = a["case"]
    if action == "write":
        return _write(a)
    reset_peak_rss()
    base = rss_mib()
    t0 = time.perf_counter()
    if action in ("safe_load", "safe_load_touch"):
        obj = safe_load_pickle(a["path"])
        if action == "safe_load_touch":  # the same full read as cache_load_touch, for a like-for-like ratio
            total = 0.0
            for sp in obj.values():
                for m in MOSEI_DIMS:
                    total += float(sp[m].sum(dtype=np.float64))
    elif action == "pickle_load":
        import pickle   # as above: only what this action measures
        with open(a["path"], "rb") as f:
            obj = pickle.load(f)  # our own file, written above: safe to unpickle
    elif action in ("convert", "cache_load", "cache_load_touch"):
        obj = load_multibench("mosei", a["dir"], cache_dir=a["cache_dir"])
        if action == "cache_load_touch":  # read every feature value once (the pages come in)
            total = 0.0
            for sp in obj.splits.values():
                for x in sp.features.values():
                    total += float(x.sum(dtype=np.float64))
    else:
        raise ValueError(action)
    dt = time.perf_counter() - t0
    del obj
    return {"seconds": dt, "base_mib": base, "peak_mib": maxrss_mib(), "delta_mib": maxrss_mib() - base}


# ---------------------------------------------------------------- parent side

def bench_data(total_samples: int = sum(MOSEI_SPLITS.values()), repeats: int = 2, cache_repeats: int = 3,
               tmp_root: str = "/tmp") -> dict:
    """Write the pickle in a temp dir under tmp_root, measure the loads, delete the dir."""
    splits = _scaled_splits(total_samples)
    need = pickle_bytes(splits)
    notes = []
    free = shutil.disk_usage(tmp_root).free
    # the pickle + the Arrow cache (about the same size) + a margin
    if free < 3 * need:
        scale = free / (3 * need)
        splits = _scaled_splits(max(100, int(total_samples * scale)))
        notes.append(f"only {free / 2**30:.1f} GiB free under {tmp_root}: scaled down to "
                     f"{sum(splits.values())} samples")
        need = pickle_bytes(splits)
    avail = _mem_available()
    if avail is not None and avail < 4 * need:
        scale = avail / (4 * need)
        splits = _scaled_splits(max(100, int(sum(splits.values()) * scale)))
        notes.append(f"only {avail / 2**30:.1f} GiB memory available: scaled down to "
                     f"{sum(splits.values())} samples")
    n = sum(splits.values())
    if n != sum(MOSEI_SPLITS.values()):
        notes.append(f"{n} samples, not MOSEI's {sum(MOSEI_SPLITS.values())}"
                     + (" (--quick)" if not notes else ""))
    tmp = tempfile.mkdtemp(prefix="s3bench-data-", dir=tmp_root)
    try:
        data_dir = os.path.join(tmp, "data")
        os.makedirs(data_dir)
        path = os.path.join(data_dir, "mosei_senti_data.pkl")
        cache_dir = os.path.join(tmp, "cache")
        res = {"splits": splits, "samples": n, "steps": STEPS, "dims": dict(MOSEI_DIMS), "notes": notes}
        res["write"] = run_child("bench.memprobe", {"case": "write", "path": path, "splits": splits})
        runs = {"safe_load": [], "pickle_load": [], "safe_load_touch": []}
        for _ in range(repeats):
            for k in runs:
                runs[k].append(run_child("bench.memprobe", {"case": k, "path": path}))
        res["convert"] = run_child("bench.memprobe", {"case": "convert", "dir": data_dir, "cache_dir": cache_dir})
        res["cache_bytes"] = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(cache_dir) for f in fs)
        runs["cache_load"], runs["cache_load_touch"] = [], []
        for _ in range(cache_repeats):
            for k in ("cache_load", "cache_load_touch"):
                runs[k].append(run_child("bench.memprobe", {"case": k, "dir": data_dir, "cache_dir": cache_dir}))
        res["loads"] = {k: {"seconds": statistics.median(r["seconds"] for r in v),
                            "delta_mib": max(r["delta_mib"] for r in v), "repeats": len(v),
                            "all_seconds": [r["seconds"] for r in v]} for k, v in runs.items()}
        return res
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _mem_available() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None
