"""MultiBench affect benchmarks (MOSI, MOSEI, UR-FUNNY, MUStARD) from the authors' pickles.

The pickle is read once, with `safe_load_pickle` (it cannot run code), cleaned with MultiBench's
rules and converted to an Arrow cache (cache.py); every later load memory-maps the cache. The
cache holds cleaned features, padding masks and the RAW float labels; the label rule and the
modality subset are applied at load time, so changing them never rebuilds the cache.

Cleaning, as MultiBench's datasets/affect/get_data.py does it:
- drop every sample whose text array sums to zero (MultiBench's `drop_entry`: `k.sum() == 0`,
  i.e. no text), in every key of the split;
- set audio values of -inf to 0;
- labels (N, 1, 1) or (N, 1) -> (N,).
Anything else non-finite (NaN anywhere, +inf, -inf outside audio) is an error, never repaired.

The protocol choices (docs/METHOD_NOTES.md, "Data protocol") are load-time options, recorded in
`Benchmark.meta["protocol"]`:
- label_rule: 'nonnegative' (y >= 0, FactorCL's `mosi_label`; the paper's rule, default for MOSI
  and MOSEI), 'positive' (y > 0, MultiBench's `_get_class`), 'binary' (labels already 0/1);
- modalities: default ('vision', 'text'), the paper's pair (FactorCL's modalities [0, 2]);
- source_file: one file per benchmark by default (FILES[name][0]); another candidate is read only
  when named, never as a silent fallback;
- alignment: 'text_start' (MultiBench's aligned mode: every modality's real steps are the text's
  first real step onwards, later all-zero frames included) or 'nonzero' (each modality masks its
  own all-zero steps).
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import shutil

import numpy as np

from . import cache
from .base import SPLITS, Benchmark, DataError, Split, mask_from_padding, select_modalities, validate_benchmark
from .safe_pickle import safe_load_pickle

MODALITIES = ("vision", "audio", "text")
# The paper (and FactorCL's scripts, modalities=[0, 2]) use vision and text on every benchmark.
DEFAULT_MODALITIES = ("vision", "text")
REQUIRED_KEYS = ("vision", "audio", "text", "labels")

# Canonical name -> the files a benchmark can be read from. The first is the default; another is
# read only when the user names it (source_file=...): mosi_data.pkl is a different feature set.
FILES = {
    "mosi": ("mosi_raw.pkl", "mosi_data.pkl"),
    "mosei": ("mosei_senti_data.pkl", "mosei_raw.pkl"),
    "urfunny": ("humor.pkl",),
    "mustard": ("sarcasm.pkl",),
}
ALIASES = {"ur-funny": "urfunny", "ur_funny": "urfunny", "humor": "urfunny", "sarcasm": "mustard"}

# Feature widths (vision, audio, text) per file, from MultiBench's files.
EXPECTED_DIMS = {
    "mosi_raw.pkl": (35, 74, 300),
    "mosi_data.pkl": (20, 5, 300),
    "mosei_senti_data.pkl": (35, 74, 300),
    "mosei_raw.pkl": (35, 74, 300),
    "humor.pkl": (371, 81, 300),
    "sarcasm.pkl": (371, 81, 300),
}

LABEL_RULES = ("nonnegative", "positive", "binary")
# 'nonnegative': y >= 0 -> 1 (FactorCL's `mosi_label`, multibench_model.py, "MOSI/MOSEI Training";
#   the paper binarises "following Liang et al. (2023)"): sentiment exactly 0 counts as positive.
# 'positive': y > 0 -> 1 (MultiBench's `_get_class` in datasets/affect/get_data.py).
# 'binary': labels already 0/1 (UR-FUNNY); anything else is an error.
DEFAULT_LABEL_RULE = {"mosi": "nonnegative", "mosei": "nonnegative", "urfunny": "binary", "mustard": "positive"}

ALIGNMENTS = ("text_start", "nonzero")
# 'text_start': MultiBench's Affectdataset with aligned=True (its default): every modality is cut at
#   the text's first real step, `start = text.nonzero()[0][0]`, and everything after it is input,
#   all-zero frames (no face found, silence) included.
# 'nonzero': a step of a modality is real unless all its features are 0, per modality.
DEFAULT_ALIGNMENT = "text_start"

DOWNLOAD_HINT = ("download it from the links in MultiBench's README "
                 "(github.com/pliang279/MultiBench, datasets/affect/get_data.py)")

CACHE_SUBDIR = ".s3cache"


def canonical_name(name: str) -> str:
    key = str(name).lower()
    key = ALIASES.get(key, key)
    if key not in FILES:
        raise DataError(f"unknown MultiBench benchmark '{name}'; choose one of: {', '.join(FILES)} "
                        f"(aliases: {', '.join(ALIASES)})")
    return key


def _dims_text(fname: str) -> str:
    dims = EXPECTED_DIMS.get(fname)
    return "/".join(map(str, dims)) if dims else "?"


def find_source(name: str, data_dir: str | os.PathLike, source_file: str | None = None) -> str:
    """The pickle for benchmark `name` in `data_dir`: `source_file` if given (one of FILES[name]),
    else the benchmark's default FILES[name][0]. Never another file in its place: a missing
    default names the other candidates present and the option that reads them."""
    name = canonical_name(name)
    data_dir = os.fspath(data_dir)
    if source_file is None:
        fname = FILES[name][0]
    else:
        fname = os.path.basename(os.fspath(source_file))
        if fname not in FILES[name]:
            raise DataError(f"source_file {source_file!r} is not a {name} file; choose one of: "
                            f"{', '.join(FILES[name])}")
    if not os.path.isdir(data_dir):
        raise DataError(f"data_dir {data_dir} does not exist or is not a directory; create it and "
                        f"put {fname} there ({DOWNLOAD_HINT})")
    path = os.path.join(data_dir, fname)
    if os.path.isfile(path):
        return path
    others = [f for f in FILES[name] if f != fname and os.path.isfile(os.path.join(data_dir, f))]
    if others:
        other = others[0]
        widths = (f", vision/audio/text {_dims_text(other)} instead of {_dims_text(fname)}"
                  if _dims_text(other) != _dims_text(fname) else "")
        raise DataError(f"no {fname} in {data_dir}; {other} is there (a different file{widths}): pass "
                        f"source_file='{other}' (--source-file {other}) to read it, or add {fname}")
    raise DataError(f"no {fname} in {data_dir}; {DOWNLOAD_HINT}")


def _cache_key(path: str) -> str:
    st = os.stat(path)
    ident = f"{os.path.basename(path)}|{st.st_size}|{st.st_mtime_ns}|{cache.FORMAT_VERSION}"
    return f"{os.path.basename(path)}-{hashlib.sha256(ident.encode()).hexdigest()[:16]}"


def _clean_split(path: str, split_name: str, split: object) -> tuple[Split, dict]:
    """Check one split of a MultiBench pickle and apply MultiBench's cleaning rules."""
    fname = os.path.basename(path)
    if not isinstance(split, dict):
        raise DataError(f"{path}: split '{split_name}' is a {type(split).__name__}, expected a dict with "
                        f"keys {list(REQUIRED_KEYS)}; is this a MultiBench affect file?")
    missing = [k for k in REQUIRED_KEYS if k not in split]
    if missing:
        raise DataError(f"{path}: split '{split_name}' lacks keys {missing}; expected {list(REQUIRED_KEYS)} "
                        f"(+ optional 'id'), found {sorted(map(str, split))}; is this a MultiBench affect file?")
    arrays = {}
    for k in REQUIRED_KEYS:
        a = split[k]
        if not isinstance(a, np.ndarray) or a.dtype.kind not in "fiub":
            raise DataError(f"{path}: '{split_name}/{k}' is {type(a).__name__} "
                            f"{getattr(a, 'dtype', '')}, expected a numeric numpy array")
        arrays[k] = a
    n = {k: int(a.shape[0]) if a.ndim else 0 for k, a in arrays.items()}
    if len(set(n.values())) != 1:
        raise DataError(f"{path}: split '{split_name}' has mismatched sample counts "
                        f"{', '.join(f'{k}={v}' for k, v in n.items())}; the file is inconsistent, {DOWNLOAD_HINT}")
    for m in MODALITIES:
        if arrays[m].ndim != 3:
            raise DataError(f"{path}: '{split_name}/{m}' has shape {arrays[m].shape}, expected (N, T, D)")
    found = tuple(int(arrays[m].shape[2]) for m in MODALITIES)
    expected = EXPECTED_DIMS.get(fname)
    if expected is not None and found != expected:
        raise DataError(f"{path}: split '{split_name}' has vision/audio/text dims "
                        f"{'/'.join(map(str, found))} but {fname} should have "
                        f"{'/'.join(map(str, expected))}; is this the right file?")

    labels = arrays["labels"]
    if labels.ndim > 1 and int(np.prod(labels.shape[1:])) == 1:
        labels = labels.reshape(-1)  # (N, 1, 1) or (N, 1) -> (N,)
    if labels.ndim != 1:
        raise DataError(f"{path}: '{split_name}/labels' has shape {arrays['labels'].shape}, "
                        "expected (N,), (N, 1) or (N, 1, 1)")
    labels = labels.astype(np.float64)
    if not np.isfinite(labels).all():
        raise DataError(f"{path}: '{split_name}/labels' contains NaN or Inf; the file is corrupt, {DOWNLOAD_HINT}")

    # MultiBench's drop_entry: a sample without text (its text array sums to 0) is dropped everywhere.
    text = arrays["text"]
    keep = text.reshape(text.shape[0], -1).sum(axis=1) != 0
    keep_idx = np.flatnonzero(keep)
    features = {}
    for m in MODALITIES:
        # float32 rows copied in blocks: a float64 copy of the kept rows first would double the peak
        # memory of a MOSEI-sized (3.7 GB, float64) file
        x = np.empty((len(keep_idx),) + arrays[m].shape[1:], dtype=np.float32)
        for start in range(0, len(keep_idx), 1024):
            x[start:start + 1024] = arrays[m][keep_idx[start:start + 1024]]
        if m == "audio":
            x[x == -np.inf] = 0.0  # MultiBench's rule for missing audio
        if np.isnan(x).any():
            raise DataError(f"{path}: '{split_name}/{m}' contains NaN ({int(np.isnan(x).sum())} values); "
                            "s3core does not guess a fix: clean the file or re-download it")
        if not np.isfinite(x).all():
            raise DataError(f"{path}: '{split_name}/{m}' contains Inf ({int(np.isinf(x).sum())} values; only "
                            "-inf in audio is set to 0 by MultiBench's rule); clean the file or re-download it")
        features[m] = x
    masks = {m: mask_from_padding(x) for m, x in features.items()}
    stats = {"n_raw": n["labels"], "n_dropped": int((~keep).sum())}
    return Split(features=features, masks=masks, labels=labels[keep]), stats


def convert_pickle(path: str, cache_path: str) -> str:
    """Read a MultiBench pickle safely, clean it and write the Arrow cache at `cache_path`."""
    data = safe_load_pickle(path)
    if not isinstance(data, dict) or any(s not in data for s in SPLITS):
        found = sorted(map(str, data)) if isinstance(data, dict) else type(data).__name__
        raise DataError(f"{path}: expected a dict with keys {list(SPLITS)}, found {found}; "
                        f"is this a MultiBench affect file? ({DOWNLOAD_HINT})")
    splits, stats = {}, {}
    for s in SPLITS:
        splits[s], stats[s] = _clean_split(path, s, data[s])
        if len(splits[s]) == 0:
            raise DataError(f"{path}: split '{s}' has no sample with text; the file is empty or corrupt, "
                            f"{DOWNLOAD_HINT}")
    del data
    st = os.stat(path)
    meta = {"source_file": os.path.basename(path), "source_size": st.st_size,
            "source_mtime_ns": st.st_mtime_ns, "cleaning": stats}
    return cache.write_arrow_splits(cache_path, name=os.path.basename(path), modalities=MODALITIES,
                                    splits=splits, num_classes=None, meta=meta, overwrite=True,
                                    values_checked=True)  # _clean_split refused any NaN / Inf


def _remove_stale_caches(cache_root: str, source_name: str, keep: str) -> None:
    """Delete caches of older versions of the same source file (they are never valid again)."""
    prefix = f"{source_name}-"
    try:
        entries = list(os.scandir(cache_root))
    except OSError:
        return
    for e in entries:
        if not e.name.startswith(prefix) or e.name in (keep, f"{keep}.lock"):
            continue
        if len(e.name) == len(prefix) + 16 and e.is_dir(follow_symlinks=False):
            shutil.rmtree(e.path, ignore_errors=True)
        elif len(e.name) == len(prefix) + 16 + len(".lock") and e.name.endswith(".lock"):
            try:
                os.remove(e.path)
            except OSError:
                pass


@contextlib.contextmanager
def _convert_lock(cache_root: str, cache_name: str):
    """An exclusive advisory lock (POSIX flock) on <cache_root>/<cache_name>.lock; a no-op elsewhere."""
    try:
        os.makedirs(cache_root, exist_ok=True)
    except OSError as e:
        raise DataError(f"{cache_root}: cannot create the cache directory ({e.strerror}); "
                        "pass cache_dir= a writable folder") from None
    try:
        import fcntl   # POSIX only
    except ImportError:  # not POSIX: atomic renames alone keep the cache consistent
        yield
        return
    with open(os.path.join(cache_root, f"{cache_name}.lock"), "a") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def apply_label_rule(raw: np.ndarray, rule: str, source: str) -> np.ndarray:
    """Raw float labels (N,) -> int64 class ids by the named rule (see LABEL_RULES)."""
    if rule == "positive":
        return (raw > 0).astype(np.int64)
    if rule == "nonnegative":
        return (raw >= 0).astype(np.int64)
    if rule == "binary":
        bad = raw[(raw != 0) & (raw != 1)]
        if bad.size:
            raise DataError(f"{source}: label_rule='binary' needs 0/1 labels but found values such as "
                            f"{bad[0]:g}; use label_rule='positive' or 'nonnegative'")
        return raw.astype(np.int64)
    raise DataError(f"unknown label_rule {rule!r}; choose one of: {', '.join(LABEL_RULES)}")


def align_masks(masks: dict[str, np.ndarray], alignment: str, source: str = "") -> dict[str, np.ndarray]:
    """Per-modality padding masks (N, T) -> the masks of `alignment` (see ALIGNMENTS).

    'text_start' (MultiBench's aligned mode): a step is real from the text's first real step on,
    in every modality, whatever its values (MultiBench slices `x[start:]` for every modality,
    `start = text.nonzero()[0][0]`, and pads after). 'nonzero': the masks unchanged.
    """
    if alignment == "nonzero":
        return dict(masks)
    if alignment != "text_start":
        raise DataError(f"{source + ': ' if source else ''}unknown alignment {alignment!r}; choose one of: "
                        f"{', '.join(ALIGNMENTS)}")
    if "text" not in masks or any(mk.shape != masks["text"].shape for mk in masks.values()):
        raise DataError(f"{source + ': ' if source else ''}alignment='text_start' needs a text modality and every "
                        "modality on the text's time steps; pass alignment='nonzero'")
    started = np.logical_or.accumulate(masks["text"], axis=1)     # (N, T): True from the first text step on
    started.flags.writeable = False
    return {m: started for m in masks}


def load_multibench(name: str, data_dir: str | os.PathLike, *, modalities=None, label_rule: str | None = None,
                    cache_dir: str | os.PathLike | None = None, source_file: str | None = None,
                    alignment: str | None = None) -> Benchmark:
    """Load a MultiBench affect benchmark as a validated Benchmark.

    Args:
        name: 'mosi', 'mosei', 'urfunny' (or 'ur-funny', 'humor'), 'mustard' (or 'sarcasm').
        data_dir: the folder holding the MultiBench pickle.
        modalities: a subset (>= 2, in the order given) of ('vision', 'audio', 'text'), or 'all';
            default DEFAULT_MODALITIES = ('vision', 'text'), the paper's.
        label_rule: 'nonnegative' (y >= 0), 'positive' (y > 0) or 'binary' (labels already 0/1);
            default per benchmark (DEFAULT_LABEL_RULE).
        cache_dir: where the Arrow cache lives; default <data_dir>/.s3cache.
        source_file: which of FILES[name] to read; default FILES[name][0]. Nothing else is read in
            its place.
        alignment: 'text_start' (default, MultiBench's aligned mode) or 'nonzero' (ALIGNMENTS).
    Returns:
        A Benchmark with binary labels whose arrays are read-only views of the memory-mapped cache.
        meta["protocol"] holds the settings used (label_rule, modalities, source_file, alignment)
        as strings, ready to log.
    """
    key = canonical_name(name)
    rule = label_rule if label_rule is not None else DEFAULT_LABEL_RULE[key]
    if rule not in LABEL_RULES:
        raise DataError(f"unknown label_rule {rule!r}; choose one of: {', '.join(LABEL_RULES)}")
    alignment = DEFAULT_ALIGNMENT if alignment is None else alignment
    if alignment not in ALIGNMENTS:
        raise DataError(f"unknown alignment {alignment!r}; choose one of: {', '.join(ALIGNMENTS)}")
    if modalities is None:
        modalities = DEFAULT_MODALITIES
    elif modalities == "all" or (not isinstance(modalities, str) and list(modalities) == ["all"]):
        modalities = MODALITIES
    mods = [modalities] if isinstance(modalities, str) else list(modalities)
    unknown = [m for m in mods if m not in MODALITIES]
    if unknown:
        raise DataError(f"unknown modalities {unknown} for {key}; choose two or more of {list(MODALITIES)} "
                        "(or 'all')")
    data_dir = os.path.expanduser(os.fspath(data_dir))
    source = find_source(key, data_dir, source_file)
    cache_root = os.fspath(cache_dir) if cache_dir is not None else os.path.join(os.fspath(data_dir), CACHE_SUBDIR)
    cache_name = _cache_key(source)
    cache_path = os.path.join(cache_root, cache_name)

    try:
        manifest, raw_splits = cache.read_arrow_splits(cache_path)
    except cache.CacheInvalid:
        # No cache yet, or a partial/corrupt/old one: (re)build it from the pickle. The lock makes
        # concurrent processes on one node (parallel trials) convert once; the others wait, then read.
        with _convert_lock(cache_root, cache_name):
            try:
                manifest, raw_splits = cache.read_arrow_splits(cache_path)
            except cache.CacheInvalid:
                convert_pickle(source, cache_path)
                manifest, raw_splits = cache.read_arrow_splits(cache_path)
                _remove_stale_caches(cache_root, os.path.basename(source), keep=cache_name)

    # label rule and alignment are applied here, at load time: changing them never rebuilds the cache
    splits = {s: Split(features=sp.features, masks=align_masks(sp.masks, alignment, source),
                       labels=apply_label_rule(sp.labels, rule, source))
              for s, sp in raw_splits.items()}
    protocol = {"label_rule": rule, "modalities": ",".join(mods), "source_file": os.path.basename(source),
                "alignment": alignment}
    meta = {"source": source, "cache": cache_path, "label_rule": rule, "protocol": protocol,
            "cleaning": manifest.get("meta", {}).get("cleaning", {})}
    bench = Benchmark(name=key, modalities=MODALITIES, splits=splits, num_classes=2, meta=meta)
    bench = select_modalities(bench, mods, source=source)
    return validate_benchmark(bench, source=source, check_values=not cache.values_checked(manifest))
