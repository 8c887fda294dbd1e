"""Load a pickle of numpy arrays without letting the file run code.

A pickle is a program: every callable it invokes comes through `Unpickler.find_class`. We admit
only the handful of names that numpy arrays, numpy scalars and plain containers need, so a file
whose `__reduce__` names `os.system`, `builtins.open` or `builtins.eval` is refused before
anything runs. The MultiBench files were written with numpy 1.x, whose pickles name
`numpy.core.*`; numpy 2 moved that package to `numpy._core`, so old names are mapped to new ones.
"""
from __future__ import annotations

import os
import pickle
from typing import Any

import numpy as np

from .base import DataError

# (module, name) pairs a pickle of numpy arrays and plain containers may reference.
_ALLOWED: dict[tuple[str, str], Any] = {
    ("numpy._core.multiarray", "_reconstruct"): np._core.multiarray._reconstruct,
    ("numpy._core.multiarray", "scalar"): np._core.multiarray.scalar,
    ("numpy._core.numeric", "_frombuffer"): np._core.numeric._frombuffer,  # protocol 5
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    # protocol <= 2 stores bytes as _codecs.encode(str, 'latin1')
    ("_codecs", "encode"): __import__("_codecs").encode,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "dict"): dict,
    ("builtins", "list"): list,
    ("builtins", "tuple"): tuple,
    ("builtins", "bytearray"): bytearray,
    ("builtins", "bytes"): bytes,
    ("builtins", "complex"): complex,
}

# Old module names (numpy 1.x, Python 2) -> their current names.
_RENAMED_MODULES = {
    "numpy.core.multiarray": "numpy._core.multiarray",
    "numpy.core.numeric": "numpy._core.numeric",
    "numpy.core._multiarray_umath": "numpy._core.multiarray",
    "numpy._core._multiarray_umath": "numpy._core.multiarray",
    "__builtin__": "builtins",
}

# Complete sizes of the public MultiBench affect files (bytes, approximate), to tell a user
# with a truncated download how much is missing.
KNOWN_FILE_SIZES = {
    "mosei_senti_data.pkl": (3.73e9, "3.73 GB"),
    "humor.pkl": (1.22e9, "1.22 GB"),
    "sarcasm.pkl": (208e6, "208 MB"),
    "mosi_data.pkl": (154e6, "154 MB"),
}

DOWNLOAD_HINT = ("download it again from the links in MultiBench's README "
                 "(github.com/pliang279/MultiBench, datasets/affect/get_data.py)")


def _human_size(n: float) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{int(n)} bytes"


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, path: str):
        # latin1 lets Python-2 pickles of numpy arrays load (numpy's own recommendation).
        super().__init__(file, encoding="latin1")
        self._path = path

    def find_class(self, module: str, name: str) -> Any:
        key = (_RENAMED_MODULES.get(module, module), name)
        if key in _ALLOWED:
            return _ALLOWED[key]
        raise DataError(f"{self._path}: refusing to unpickle {module}.{name}: only numpy arrays and "
                        "plain containers are allowed; this file may be malicious")

    def persistent_load(self, pid: Any) -> Any:
        raise DataError(f"{self._path}: refusing to unpickle a persistent id: only numpy arrays and "
                        "plain containers are allowed; this file may be malicious")


def _truncated_error(path: str, detail: str) -> DataError:
    size = os.path.getsize(path)
    base = os.path.basename(path)
    if base in KNOWN_FILE_SIZES:
        expected = f"the complete {base} is about {KNOWN_FILE_SIZES[base][1]}"
    else:
        expected = "its expected size is unknown"
    return DataError(f"{path}: the pickle is truncated ({detail}): the file has {_human_size(size)} "
                     f"({size} bytes) but {expected}; the download is incomplete, {DOWNLOAD_HINT}")


def safe_load_pickle(path: str | os.PathLike) -> Any:
    """Unpickle `path`, admitting only numpy arrays, numpy scalars and plain containers.

    Args:
        path: a pickle file (e.g. MultiBench's mosi_raw.pkl).
    Returns:
        The unpickled object (for MultiBench: a dict of dicts of numpy arrays).
    Raises:
        DataError: the file is missing, names any other class or function (it may be malicious),
            is truncated (names its size and the expected size of known MultiBench files), or is
            not a pickle.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DataError(f"{path}: no such file; check the path")
    try:
        with open(path, "rb") as f:
            return _RestrictedUnpickler(f, path).load()
    except DataError:
        raise
    except EOFError:
        raise _truncated_error(path, "ran out of input") from None
    except pickle.UnpicklingError as e:
        if "truncated" in str(e):
            raise _truncated_error(path, "data ends mid-object") from None
        raise DataError(f"{path}: not a valid pickle ({str(e).splitlines()[0] if str(e) else type(e).__name__}); "
                        f"the file may be corrupt: {DOWNLOAD_HINT}") from None
    except (ValueError, TypeError, AttributeError, IndexError, KeyError, MemoryError) as e:
        # numpy raises ValueError when an array's byte string is shorter than its shape needs.
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        base = os.path.basename(path)
        if base in KNOWN_FILE_SIZES and os.path.getsize(path) < 0.99 * KNOWN_FILE_SIZES[base][0]:
            raise _truncated_error(path, msg) from None
        raise DataError(f"{path}: cannot unpickle ({type(e).__name__}: {msg}); the file may be corrupt "
                        f"or not a numpy pickle: {DOWNLOAD_HINT}") from None
