"""A benchmark as a directory of Arrow IPC files, memory-mapped on read (zero-copy numpy views).

Layout of a benchmark directory (the MultiBench cache and a user's own Arrow data alike):

    <dir>/train.arrow, valid.arrow, test.arrow   Arrow IPC *file* format, uncompressed, one
                                                 record batch of N rows, columns:
        features/<modality>   fixed_size_list<float32>[T*D]   row-major (T, D) per sample
        masks/<modality>      fixed_size_list<uint8>[T]       1 = real time step
        labels                int64 (class ids) or float64 (raw MultiBench labels)
    <dir>/manifest.json      written last; without it (or if it disagrees with the files) the
                             directory is not a benchmark. Keys: format, version, name,
                             modalities, shapes {modality: [T, D]}, num_classes (null for raw
                             float labels), label_dtype, splits {split: {n, file, bytes}}, meta,
                             and optionally values_checked: true, which s3core's own writers set
                             after checking every feature value is finite. A reader then skips that
                             full scan (it would page the whole cache in); without the key (a
                             directory written by other tools) every value is checked on load.

Writes are atomic: everything goes to a temporary sibling directory that is renamed into place
(os.replace) only once complete, so a crash mid-write never leaves a directory that reads as valid.
"""
from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from typing import Any

import numpy as np
import pyarrow as pa

from .base import SPLITS, Benchmark, DataError, Split, select_modalities, validate_benchmark

FORMAT = "s3core-arrow"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
_TMP_PREFIX = ".tmp-"
_STALE_TMP_SECONDS = 24 * 3600  # a temp dir this old belongs to a crashed writer


class CacheInvalid(DataError):
    """An Arrow directory is incomplete, corrupt or of another format version."""


def _jsonable(meta: dict) -> dict:
    """The JSON-serialisable items of `meta` (arrays such as synthetic factors are left out)."""
    out = {}
    for k, v in meta.items():
        try:
            json.dumps(v)
        except (TypeError, ValueError):
            continue
        out[str(k)] = v
    return out


def _split_table(split: Split, modalities: tuple[str, ...]) -> pa.Table:
    columns, names = [], []
    for m in modalities:
        x = np.ascontiguousarray(split.features[m], dtype=np.float32)  # (N, T, D)
        n, t, d = x.shape
        columns.append(pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), t * d))
        names.append(f"features/{m}")
        mk = np.ascontiguousarray(split.masks[m], dtype=np.uint8)  # (N, T)
        columns.append(pa.FixedSizeListArray.from_arrays(pa.array(mk.reshape(-1)), t))
        names.append(f"masks/{m}")
    columns.append(pa.array(np.ascontiguousarray(split.labels)))
    names.append("labels")
    return pa.Table.from_arrays(columns, names=names)


def _write_split_file(path: str, table: pa.Table) -> None:
    with pa.OSFile(path, "wb") as sink:
        # Uncompressed so that readers can memory-map and view the buffers without copying.
        with pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table, max_chunksize=max(table.num_rows, 1))


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _cleanup_stale_tmp(parent: str) -> None:
    now = time.time()
    try:
        entries = list(os.scandir(parent))
    except OSError:
        return
    for e in entries:
        if e.name.startswith(_TMP_PREFIX) and e.is_dir(follow_symlinks=False):
            try:
                if now - e.stat(follow_symlinks=False).st_mtime > _STALE_TMP_SECONDS:
                    shutil.rmtree(e.path, ignore_errors=True)
            except OSError:
                pass


def write_arrow_splits(directory: str | os.PathLike, *, name: str, modalities: tuple[str, ...],
                       splits: dict[str, Split], num_classes: int | None, meta: dict | None = None,
                       overwrite: bool = True, values_checked: bool = False) -> str:
    """Write splits to an Arrow benchmark directory atomically; return its path.

    Labels may be int64 class ids (num_classes given) or float64 raw labels (num_classes None,
    as the MultiBench cache stores them). With overwrite=False an existing directory is kept
    (another process finished first) and this write is discarded. values_checked=True records in the
    manifest that the caller has checked every feature value is finite, so readers skip that scan.
    """
    directory = os.path.abspath(os.fspath(directory))
    parent = os.path.dirname(directory)
    try:
        os.makedirs(parent, exist_ok=True)
    except OSError as e:
        raise DataError(f"{parent}: cannot create the directory ({e.strerror}); choose a writable "
                        "location") from None
    _cleanup_stale_tmp(parent)
    tmp = os.path.join(parent, f"{_TMP_PREFIX}{os.path.basename(directory)}-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        os.mkdir(tmp)
    except OSError as e:
        raise DataError(f"{parent}: cannot write there ({e.strerror}); choose a writable location "
                        "(for MultiBench pass cache_dir=...)") from None
    try:
        shapes: dict[str, list[int]] = {}
        split_info = {}
        for s in SPLITS:
            split = splits[s]
            for m in modalities:
                shapes.setdefault(m, [int(split.features[m].shape[1]), int(split.features[m].shape[2])])
            fname = f"{s}.arrow"
            fpath = os.path.join(tmp, fname)
            _write_split_file(fpath, _split_table(split, modalities))
            split_info[s] = {"n": len(split), "file": fname, "bytes": os.path.getsize(fpath)}
        label_dtype = "int64" if num_classes is not None else "float64"
        manifest = {
            "format": FORMAT, "version": FORMAT_VERSION, "name": name,
            "modalities": list(modalities), "shapes": shapes, "num_classes": num_classes,
            "label_dtype": label_dtype, "splits": split_info, "meta": _jsonable(meta or {}),
            "values_checked": bool(values_checked),
        }
        # The manifest goes last: a directory without it is never read as a benchmark.
        mpath = os.path.join(tmp, MANIFEST)
        with open(mpath, "w") as f:
            json.dump(manifest, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        _fsync_dir(tmp)
        if os.path.exists(directory):
            if not overwrite:
                shutil.rmtree(tmp, ignore_errors=True)
                return directory
            old = os.path.join(parent, f"{_TMP_PREFIX}old-{uuid.uuid4().hex[:8]}")
            os.replace(directory, old)
            os.replace(tmp, directory)
            shutil.rmtree(old, ignore_errors=True)
        else:
            try:
                os.replace(tmp, directory)
            except OSError:
                if not os.path.isdir(directory):
                    raise
                shutil.rmtree(tmp, ignore_errors=True)  # a concurrent writer won the race
        _fsync_dir(parent)
        return directory
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_arrow_benchmark(bench: Benchmark, directory: str | os.PathLike) -> str:
    """Write a validated Benchmark to `directory` in the Arrow layout above (atomic); return the path."""
    validate_benchmark(bench, source=os.fspath(directory))
    return write_arrow_splits(directory, name=bench.name, modalities=tuple(bench.modalities),
                              splits=bench.splits, num_classes=int(bench.num_classes), meta=bench.meta,
                              values_checked=True)


def _invalid(directory: str, why: str) -> CacheInvalid:
    return CacheInvalid(f"{directory}: not a complete s3core Arrow benchmark ({why}); rewrite it with "
                        "write_arrow_benchmark or delete it so it is rebuilt")


def read_manifest(directory: str | os.PathLike) -> dict:
    """The manifest of an Arrow benchmark directory; CacheInvalid if missing or of another version."""
    directory = os.fspath(directory)
    mpath = os.path.join(directory, MANIFEST)
    if not os.path.isfile(mpath):
        raise _invalid(directory, f"no {MANIFEST}")
    try:
        with open(mpath) as f:
            manifest = json.load(f)
    except (OSError, ValueError) as e:
        raise _invalid(directory, f"unreadable {MANIFEST}: {type(e).__name__}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise _invalid(directory, f"{MANIFEST} is not an {FORMAT} manifest")
    if manifest.get("version") != FORMAT_VERSION:
        raise _invalid(directory, f"format version {manifest.get('version')}, this s3core reads {FORMAT_VERSION}")
    for key in ("name", "modalities", "shapes", "num_classes", "label_dtype", "splits"):
        if key not in manifest:
            raise _invalid(directory, f"{MANIFEST} lacks '{key}'")
    return manifest


def read_arrow_splits(directory: str | os.PathLike) -> tuple[dict, dict[str, Split]]:
    """Memory-map an Arrow benchmark directory: (manifest, {split: Split}) with read-only zero-copy
    numpy views; labels as stored (int64 or raw float64). Raises CacheInvalid on any inconsistency."""
    directory = os.fspath(directory)
    manifest = read_manifest(directory)
    modalities = list(manifest["modalities"])
    label_dtype = np.dtype(manifest["label_dtype"])
    splits: dict[str, Split] = {}
    for s in SPLITS:
        info = manifest["splits"].get(s)
        if not isinstance(info, dict):
            raise _invalid(directory, f"manifest lacks split '{s}'")
        fpath = os.path.join(directory, str(info.get("file", "")))
        if not os.path.isfile(fpath):
            raise _invalid(directory, f"missing {info.get('file')}")
        if os.path.getsize(fpath) != info.get("bytes"):
            raise _invalid(directory, f"{info['file']} has {os.path.getsize(fpath)} bytes, "
                                      f"the manifest says {info.get('bytes')}")
        try:
            reader = pa.ipc.open_file(pa.memory_map(fpath, "r"))
            table = reader.read_all()
        except (pa.ArrowException, OSError) as e:
            raise _invalid(directory, f"{info['file']} unreadable: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
        n = int(info["n"])
        if table.num_rows != n:
            raise _invalid(directory, f"{info['file']} has {table.num_rows} rows, the manifest says {n}")
        try:
            features, masks = {}, {}
            for m in modalities:
                t, d = manifest["shapes"][m]
                features[m] = _column_values(table, f"features/{m}", np.float32).reshape(n, t, d)
                masks[m] = _column_values(table, f"masks/{m}", np.uint8).reshape(n, t).view(np.bool_)
            labels = _column_values(table, "labels", None)
        except (KeyError, ValueError, pa.ArrowException) as e:
            raise _invalid(directory, f"{info['file']} does not match the manifest: "
                                      f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
        if labels.dtype != label_dtype:
            raise _invalid(directory, f"labels are {labels.dtype}, the manifest says {label_dtype}")
        splits[s] = Split(features=features, masks=masks, labels=labels)
    return manifest, splits


_NUMPY_TYPES = {pa.float32(): np.float32, pa.float64(): np.float64, pa.uint8(): np.uint8, pa.int64(): np.int64}


def _column_values(table: pa.Table, name: str, dtype: Any) -> np.ndarray:
    """A read-only numpy view of a column's values (flattened for fixed-size lists), zero-copy.

    Built from the Arrow data buffer with np.frombuffer rather than Array.to_numpy, which imports
    pandas on first use (about 0.2 s in every fresh process that loads a benchmark)."""
    if name not in table.column_names:
        raise KeyError(f"no column '{name}'")
    col = table.column(name).combine_chunks() if table.column(name).num_chunks != 1 else table.column(name).chunk(0)
    if pa.types.is_fixed_size_list(col.type):
        if col.null_count:
            raise ValueError(f"column '{name}' has {col.null_count} null rows")
        col = col.flatten()
    np_type = _NUMPY_TYPES.get(col.type)
    if np_type is None:
        raise ValueError(f"column '{name}' has Arrow type {col.type}, expected one of "
                         f"{', '.join(map(str, _NUMPY_TYPES))}")
    if col.null_count:
        raise ValueError(f"column '{name}' has {col.null_count} null values")
    item = np.dtype(np_type).itemsize
    values = np.frombuffer(col.buffers()[1], dtype=np_type, count=len(col), offset=col.offset * item)
    if dtype is not None and values.dtype != dtype:
        raise ValueError(f"column '{name}' is {values.dtype}, expected {np.dtype(dtype)}")
    return values


def read_arrow_benchmark(directory: str | os.PathLike, *, modalities=None) -> Benchmark:
    """Read an Arrow benchmark directory written by write_arrow_benchmark (int class labels).

    Arrays are read-only memory-mapped views; copy (np.array(x)) before modifying them.
    """
    directory = os.fspath(directory)
    if not os.path.isdir(directory):
        raise DataError(f"{directory}: no such directory; pass an Arrow benchmark directory or a .npz file")
    manifest, splits = read_arrow_splits(directory)
    if manifest["num_classes"] is None or manifest["label_dtype"] != "int64":
        raise DataError(f"{directory}: labels are raw floats (a MultiBench cache); load it with "
                        "load_multibench, which applies a label rule")
    bench = Benchmark(name=str(manifest["name"]), modalities=tuple(manifest["modalities"]), splits=splits,
                      num_classes=int(manifest["num_classes"]),
                      meta={**manifest.get("meta", {}), "source": directory})
    return validate_benchmark(select_modalities(bench, modalities, source=directory), source=directory,
                              check_values=not values_checked(manifest))


def values_checked(manifest: dict) -> bool:
    """True if s3core wrote this directory after checking every feature value is finite."""
    return manifest.get("values_checked") is True
