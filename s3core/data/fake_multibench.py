"""Write MultiBench-format affect pickles filled with synthetic values, at the real files' size.

No MultiBench data is on this machine; this writes files of the same layout so the whole paper
protocol (loading, cleaning, alignment, labels, the paper preset's cost) runs end to end:

    python -m s3core.data.fake_multibench --like mosei DIR              # DIR/mosei_senti_data.pkl, real size
    python -m s3core.data.fake_multibench --like mosi --scale 0.05 DIR  # 5% of the samples

What each file copies from the real one (docs/DATA.md, "Fake MultiBench files"):
- a dict {'train', 'valid', 'test'}, each {'vision', 'audio', 'text', 'labels', 'id'};
- features (N, 50, D) with the file's widths, left-zero-padded: a sample of L real steps has
  zeros at steps 0..49-L in every modality (word-aligned features share the padding);
- all-zero frames inside the real steps (vision: no face found; audio: silence), audio -inf
  entries (MultiBench sets them to 0), and a few samples whose whole text is zero (MultiBench
  drops them);
- labels (N, 1, 1) sentiment scores in [-3, 3], averages of annotators' integer ratings (multiples
  of 1/3 for MOSEI, 1/5 for MOSI) with exact zeros, or (N, 1) 0/1 labels (UR-FUNNY, MUStARD);
- the dtype the file's size implies (PROFILES below) and the split sizes.
Values are synthetic: a latent sentiment shifts the text and vision features of real steps, so a
probe learns something, but no accuracy on these files says anything about the real benchmarks.
"""
from __future__ import annotations

import argparse
import os
import pickle
import sys
import time
import uuid
from dataclasses import dataclass

import numpy as np

from .base import SPLITS, DataError
from .multibench import EXPECTED_DIMS, FILES, canonical_name

T = 50


@dataclass(frozen=True)
class Profile:
    """What a fake file copies from a real one.

    Args:
        dims: vision/audio/text widths (multibench.EXPECTED_DIMS).
        sizes: train/valid/test sample counts before MultiBench drops the samples without text.
        dtype: feature dtype. MOSEI and MUStARD: float64, the only dtype that gives their
            downloads' sizes (22856 x 50 x 409 x 8 B = 3.74 GB; 690 x 50 x 752 x 8 B = 208 MB);
            mosi_data.pkl: float32 (2199 x 50 x 325 x 4 B = 143 MB of its 154 MB).
        labels: 'sentiment' (scores in [-3, 3] on a grid of 1 / `annotators`) or 'binary' (0/1).
        zero_fraction, negative_fraction: sentiment only: the share of exact zeros and of y < 0.
        mean_len: mean number of real (word) steps of a sample, capped at T.
    """

    dims: tuple[int, int, int]
    sizes: tuple[int, int, int]
    dtype: str
    labels: str
    annotators: int = 3
    zero_fraction: float = 0.0
    negative_fraction: float = 0.5
    mean_len: float = 20.0


# Split sizes: MOSEI and MOSI as in the aligned CMU files MultiBench repackages (16326/1871/4659,
# 1284/229/686); test sizes of MOSI (686), UR-FUNNY (1058) and MUStARD (138) match FactorCL's
# published notebook outputs. UR-FUNNY's train/valid sizes and dtype, MOSI-raw's dtype, the label
# shares and the sequence lengths are assumptions (docs/DATA.md).
PROFILES = {
    "mosei_senti_data.pkl": Profile(EXPECTED_DIMS["mosei_senti_data.pkl"], (16326, 1871, 4659), "float64",
                                    "sentiment", annotators=3, zero_fraction=0.21, negative_fraction=0.27,
                                    mean_len=24.0),
    "mosei_raw.pkl": Profile(EXPECTED_DIMS["mosei_raw.pkl"], (16326, 1871, 4659), "float64", "sentiment",
                             annotators=3, zero_fraction=0.21, negative_fraction=0.27, mean_len=24.0),
    "mosi_raw.pkl": Profile(EXPECTED_DIMS["mosi_raw.pkl"], (1284, 229, 686), "float32", "sentiment",
                            annotators=5, zero_fraction=0.02, negative_fraction=0.53, mean_len=12.0),
    "mosi_data.pkl": Profile(EXPECTED_DIMS["mosi_data.pkl"], (1284, 229, 686), "float32", "sentiment",
                             annotators=5, zero_fraction=0.02, negative_fraction=0.53, mean_len=12.0),
    "humor.pkl": Profile(EXPECTED_DIMS["humor.pkl"], (7614, 980, 1058), "float32", "binary", mean_len=18.0),
    "sarcasm.pkl": Profile(EXPECTED_DIMS["sarcasm.pkl"], (414, 138, 138), "float64", "binary", mean_len=16.0),
}

NO_TEXT_FRACTION = 0.003      # samples whose text is all zero (MultiBench's drop_entry removes them)
NEG_INF_AUDIO_FRACTION = 0.02  # samples with some -inf audio values
ZERO_FRAME_SAMPLES = 0.2      # samples with some all-zero vision / audio frames among their real steps
ZERO_FRAME_RATE = 0.1         # the share of real steps zeroed in those samples


def _some(rng: np.random.Generator, n: int, fraction: float) -> np.ndarray:
    """Indices of about `fraction` of n samples, at least one: every split shows every quirk."""
    return rng.choice(n, size=max(1, int(rng.binomial(n, fraction))), replace=False)


def _labels(rng: np.random.Generator, n: int, p: Profile) -> np.ndarray:
    if p.labels == "binary":
        return rng.integers(0, 2, size=(n, 1)).astype(np.float64)
    # annotator means on a grid of 1/a in [-3, 3]: zero, or a signed magnitude, small ones likelier
    a = p.annotators
    kind = rng.choice(3, size=n, p=[p.zero_fraction, p.negative_fraction,
                                    1.0 - p.zero_fraction - p.negative_fraction])
    steps = np.arange(1, 3 * a + 1)
    weights = np.exp(-steps / (1.2 * a))
    mag = rng.choice(steps, size=n, p=weights / weights.sum()) / a
    y = np.where(kind == 0, 0.0, np.where(kind == 1, -mag, mag))
    return y.reshape(n, 1, 1).astype(np.float64)


def make_split(rng: np.random.Generator, n: int, p: Profile, split: str) -> dict:
    """One split of a fake MultiBench file, in the file's dtype."""
    dtype = np.dtype(p.dtype)
    labels = _labels(rng, n, p)
    score = labels.reshape(n)
    latent = (score if p.labels == "sentiment" else 2.0 * score - 1.0) + rng.standard_normal(n)
    lengths = np.clip(np.rint(rng.gamma(2.0, p.mean_len / 2.0, size=n)), 1, T).astype(np.int64)
    real = np.arange(T)[None, :] >= (T - lengths)[:, None]                     # (n, T), left padding
    out = {}
    for m, d, scale, signal in (("vision", p.dims[0], 1.0, 0.25), ("audio", p.dims[1], 1.0, 0.0),
                                ("text", p.dims[2], 0.4, 0.15)):
        x = rng.standard_normal((n, T, d), dtype=np.float64 if dtype == np.float64 else np.float32)
        x *= scale
        if signal:
            direction = np.random.default_rng(d).standard_normal(d)          # fixed per modality width
            direction /= np.linalg.norm(direction)
            x += (signal * latent)[:, None, None] * direction.astype(x.dtype)
        x *= real[:, :, None]                                                # left padding: exact zeros
        if m in ("vision", "audio"):
            has_gaps = np.zeros(n, dtype=bool)
            has_gaps[_some(rng, n, ZERO_FRAME_SAMPLES)] = True
            gaps = has_gaps[:, None] & real & (rng.random((n, T)) < ZERO_FRAME_RATE)
            gaps[has_gaps, T - 1] = True                                     # at least one per such sample
            x[gaps] = 0.0
        if m == "audio":
            for i in _some(rng, n, NEG_INF_AUDIO_FRACTION):
                t = rng.integers(T - lengths[i], T)
                x[i, t, rng.integers(0, d, size=3)] = -np.inf
        out[m] = x.astype(dtype, copy=False)
    out["text"][_some(rng, n, NO_TEXT_FRACTION)] = 0.0
    out["labels"] = labels.astype(np.float32 if dtype == np.float32 else np.float64)
    out["id"] = np.array([[f"{split}{i // 8:05d}", str(i % 8)] for i in range(n)])   # (video, segment)
    return {k: out[k] for k in ("vision", "audio", "text", "labels", "id")}


def write_fake(like: str, directory: str | os.PathLike, *, scale: float = 1.0, seed: int = 0,
               file: str | None = None, protocol: int = 4) -> str:
    """Write DIR/<file> in MultiBench's layout; returns its path.

    Args:
        like: 'mosi', 'mosei', 'urfunny' (or 'humor'), 'mustard' (or 'sarcasm').
        directory: created if missing. The file is written to a temporary name and renamed.
        scale: fraction of each split's real size (at least 8 samples per split).
        seed: the values, labels and lengths are a function of (file, seed, scale).
        file: which of the benchmark's files to imitate (default its first, what the loader reads).
        protocol: pickle protocol (4: what numpy-1.x-era files use; 5 avoids a copy per array).
    """
    key = canonical_name(like)
    fname = file or FILES[key][0]
    if fname not in FILES[key]:
        raise DataError(f"--file {fname} is not a {key} file; choose one of: {', '.join(FILES[key])}")
    if not (isinstance(scale, (int, float)) and 0 < scale <= 1):
        raise DataError(f"scale must lie in (0, 1], got {scale!r}")
    profile = PROFILES[fname]
    rng = np.random.default_rng([seed, int(scale * 1e6), sum(map(ord, fname))])
    data = {s: make_split(rng, max(8, int(round(n * scale))), profile, s) for s, n in zip(SPLITS, profile.sizes)}
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(os.fspath(directory), fname)
    tmp = os.path.join(os.fspath(directory), f".{fname}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "wb") as f:
            pickle.dump(data, f, protocol=protocol)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m s3core.data.fake_multibench",
                                description="Write a MultiBench-format affect pickle of synthetic values at the "
                                            "real file's size (or --scale of it).")
    p.add_argument("directory", help="where the file goes (created if missing)")
    p.add_argument("--like", required=True, help="mosi, mosei, urfunny (humor) or mustard (sarcasm)")
    p.add_argument("--scale", type=float, default=1.0, help="fraction of the real split sizes")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--file", default=None, help="which of the benchmark's files (default: the one the loader reads)")
    p.add_argument("--protocol", type=int, default=4, choices=[2, 3, 4, 5], help="pickle protocol")
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    try:
        path = write_fake(args.like, args.directory, scale=args.scale, seed=args.seed, file=args.file,
                          protocol=args.protocol)
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {path} ({os.path.getsize(path) / 1e9:.2f} GB) in {time.perf_counter() - t0:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
