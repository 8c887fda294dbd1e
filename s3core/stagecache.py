"""Content-addressed stage results: a grid never trains the same stage twice.

A training stage's result (the model after it, the global RNG streams, and the trial's history
so far) is stored under a key that hashes everything it depends on:

- the data: the benchmark's content digest (s3core.data.base.content_digest), from the caller;
- the code: a SHA-256 of s3core's own source files plus the torch / numpy / scikit-learn
  versions (`code_digest`). Not the git commit: a commit says nothing about uncommitted edits
  (``s3.code_version`` is ``<sha>-dirty`` for any of them), and a false hit would pass results
  of other code off as this code's. Content also survives commits that leave s3core alone;
- the method's stages up to and including this one (their names) and its task head;
- the config: every S3Config field except those only Stage 3 reads (STAGE3_ONLY_FIELDS) and
  those only a *later* training stage reads (each Stage's ``own_fields``). Everything else is
  in, execution fields too (device, dispatch, bf16: they change the numbers), and the seed;
- the number of data-parallel workers (DDP changes how losses are summed), and torch's intra-op thread count (it changes
  the rounding of float sums).

A wrong exclusion would be a false hit that silently corrupts results, a wrong inclusion only a
miss, so the exclusions are few and each is tested (tests/s3core/test_stagecache.py: changing an
excluded field leaves the stage's output bit-identical).

Entries are directories ``<root>/<key>/`` (``state.pt``: model weights, RNG, history; ``meta.json``:
what the key hashed and who wrote it), read and written through pyarrow.fs, so the root is a local
or NFS path or a URI (``s3://bucket/runs/stage-cache``). An entry is whole or absent: on a local or
NFS path it is written into a temporary directory and renamed into place in one rename; on an
object store each file is one PUT (an object appears whole or not at all) and ``meta.json`` is
written last, so a reader (who looks for ``meta.json`` first) never takes a half-written entry. A
writer killed half-way leaves only a ``.tmp-*`` directory, or a ``state.pt`` without its
``meta.json``, that no reader takes.

Two trials that need the same stage at once: the first *claims* the key, trains, stores, releases;
the second waits for the entry. Who hands out claims is a small interface (`Claims`) the caller
provides: the orchestrator gives one that every node of a Ray cluster sees (a named actor of the
grid's driver). Without one, a local root uses ``<root>/<key>.lock`` files (O_EXCL), shared by
every process of a machine; a URI root then has no claims, and two trials may train one stage
twice. The holder refreshes its claim every `heartbeat_s`; a claim not refreshed for
`stale_after_s` (its holder died), or a lock file of a dead process on this host, is stale and
taken over. Claims save duplicate work only; correctness never rests on them (an entry is
complete or absent, and two writers of one key write the same content). The orchestrator's queue
(orchestrator/schedule.py) puts the trial that trains a shared stage ahead of those that reuse it,
so such waits are rare.

Data-parallel trials (DDP) use the cache too: rank 0 looks up, claims and writes (with every
rank's RNG streams), every rank loads; the ranks follow rank 0's decision (see s3core.pipeline).

Pure PyTorch and pyarrow: no Ray, no MLflow. The orchestrator passes the root (under the grid's
storage) and its claims.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Protocol

import pyarrow.fs as pafs
import torch

from s3core.config import S3Config

FORMAT = 1
STATE_FILE = "state.pt"
META_FILE = "meta.json"

# Read by Stage 3 (sparsify + the final probe) and by no training stage: quick_valid_acc, the
# per-epoch probe, uses its own l2 and max_iter, p = 1 and no pruning scope. eval_batch_size,
# probe_backend and epoch_probe stay in the key: the per-epoch probe in the history reads them.
STAGE3_ONLY_FIELDS = ("keep_ratios", "prune_scope", "probe", "probe_max_iter", "probe_l2")


def code_digest() -> str:
    """SHA-256 (32 hex) of every .py file of the s3core package (path and bytes) and the versions
    of the libraries whose numerics a stage uses."""
    h = hashlib.sha256()
    root = Path(__file__).resolve().parent
    for path in sorted(root.rglob("*.py")):
        h.update(str(path.relative_to(root)).encode() + b"\0")
        h.update(path.read_bytes() + b"\0")
    versions = {"torch": torch.__version__}
    for name in ("numpy", "sklearn"):
        try:
            versions[name] = __import__(name).__version__
        except ImportError:
            versions[name] = None
    h.update(json.dumps(versions, sort_keys=True).encode())
    return h.hexdigest()[:32]


def key_fields(cfg: S3Config, stage_names: list[str], later_own_fields: set[str]) -> dict:
    """The config fields the key of a stage prefix hashes: all but Stage 3's and later stages' own."""
    drop = set(STAGE3_ONLY_FIELDS) | later_own_fields
    return {f.name: getattr(cfg, f.name) for f in fields(cfg) if f.name not in drop}


def _canon(value) -> str:
    return json.dumps(value, sort_keys=True, default=repr)


class Claims(Protocol):
    """Who trains a key: a claim every process that shares the cache sees. `holder` is a token
    unique to one claim. acquire: True when the caller now holds the key (or the last holder's
    claim went stale); refresh: the holder is alive; release: done (stored or failed)."""

    def acquire(self, key: str, holder: str, info: dict) -> bool: ...

    def refresh(self, key: str, holder: str) -> None: ...

    def release(self, key: str, holder: str) -> None: ...


class NoClaims:
    """Every caller trains (a URI root without shared claims): duplicate work, never a wrong result."""

    def acquire(self, key: str, holder: str, info: dict) -> bool:
        return True

    def refresh(self, key: str, holder: str) -> None:
        pass

    def release(self, key: str, holder: str) -> None:
        pass


class LockFileClaims:
    """``<root>/<key>.lock`` files taken with O_EXCL: shared by the processes of one machine (and of
    an NFS mount). A lock not refreshed for stale_after_s, or of a dead process on this host, is stale."""

    def __init__(self, root: str, stale_after_s: float):
        self.root, self.stale_after_s = Path(root), stale_after_s

    def _lock(self, key: str) -> Path:
        return self.root / f"{key}.lock"

    def _stale(self, path: Path) -> str | None:
        """The lock's text when it is stale (holder gone), else None."""
        try:
            text = path.read_text()
            age = time.time() - path.stat().st_mtime
        except FileNotFoundError:
            return None
        try:
            info = json.loads(text)
        except ValueError:      # a holder between create and write: give it stale_after_s
            info = {}
        if age > self.stale_after_s:
            return text
        if info.get("host") == socket.gethostname() and info.get("pid"):
            try:
                os.kill(int(info["pid"]), 0)
            except ProcessLookupError:
                return text
            except PermissionError:
                pass
        return None

    def acquire(self, key: str, holder: str, info: dict) -> bool:
        path = self._lock(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            stale = self._stale(path)
            if stale is not None:
                with contextlib.suppress(FileNotFoundError):
                    if path.read_text() == stale:    # still the stale one, not a new holder's
                        path.unlink()
            return False
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "token": holder, "producer": info}))
        return True

    def _held_by(self, key: str, holder: str) -> bool:
        """Whether the lock is `holder`'s: a holder whose lock went stale and was taken over must not
        refresh or delete its successor's (the filesystem has no compare-and-delete; this narrows
        the window to between the read and the unlink)."""
        try:
            return json.loads(self._lock(key).read_text()).get("token") == holder
        except (OSError, ValueError):
            return False

    def refresh(self, key: str, holder: str) -> None:
        if self._held_by(key, holder):
            with contextlib.suppress(OSError):
                os.utime(self._lock(key))

    def release(self, key: str, holder: str) -> None:
        if self._held_by(key, holder):
            with contextlib.suppress(FileNotFoundError):
                self._lock(key).unlink()


def _filesystem(root: str):
    """(pyarrow filesystem, path) of a local path or a URI."""
    if "://" in root:
        return pafs.FileSystem.from_uri(root)
    return pafs.LocalFileSystem(), str(Path(root).resolve())


@dataclass
class StageCache:
    """A directory of stage results, shared by every trial of a grid (and by later grids).

    Args:
        root: a local or NFS path, or a URI (s3://bucket/prefix): shared storage on a cluster.
        data_digest: the benchmark's content digest (content_digest / orchestrator data_fingerprint).
        producer: who this process is (e.g. {"trial_key", "trial", "parent_run"}), written into
            every entry it stores so a trial that reuses it can say from which run it came.
        code: the code digest (default: code_digest() of this checkout).
        stale_after_s: a claim not refreshed for this long is stale (its holder died elsewhere).
        heartbeat_s: how often a holder refreshes its claim.
        poll_s: how often a waiter looks for the entry.
        claims: who hands out claims (Claims); default: lock files for a local root, none for a URI.
        filesystem: a pyarrow filesystem to reach `root` with (then `root` is its path there);
            default: from the root (pyarrow.fs.FileSystem.from_uri).
    """

    root: str
    data_digest: str
    producer: dict = field(default_factory=dict)
    code: str = field(default_factory=code_digest)
    stale_after_s: float = 120.0
    heartbeat_s: float = 10.0
    poll_s: float = 0.5
    events: list = field(default_factory=list)   # one dict per cached stage of the last trial
    claims: Claims | None = None
    filesystem: object = None

    # ------------------------------------------------------------------------------ keys

    def key(self, cfg: S3Config, stage_names: list[str], later_own_fields: set[str], head: str | None,
            world: int = 1) -> tuple[str, dict]:
        """(key, what it hashes) of the result after the stages `stage_names` (in order)."""
        # the torch thread count too: a float sum's rounding depends on it (1 and 2 threads gave losses
        # 2e-7 apart after 6 epochs here), and a hit must be bit-identical to training it now
        ident = {"format": FORMAT, "data": self.data_digest, "code": self.code, "stages": list(stage_names),
                 "head": head, "world": world, "threads": torch.get_num_threads(),
                 "config": key_fields(cfg, stage_names, later_own_fields)}
        return hashlib.sha256(_canon(ident).encode()).hexdigest()[:32], ident

    def _fs(self):
        """(pyarrow filesystem, root path in it, whether it renames directories: a local/NFS path)."""
        if not hasattr(self, "_fs_cache"):
            fs, path = (self.filesystem, self.root) if self.filesystem is not None else _filesystem(self.root)
            self._fs_cache = (fs, path.rstrip("/"), isinstance(fs, pafs.LocalFileSystem))
        return self._fs_cache

    def _claims(self) -> Claims:
        if self.claims is not None:
            return self.claims
        fs, path, local = self._fs()
        return LockFileClaims(path, self.stale_after_s) if local else NoClaims()

    # ----------------------------------------------------------------------- read / write

    def load(self, key: str) -> dict | None:
        """The entry stored under `key`, or None. An entry is whole or nothing: its meta.json is
        written last (or the whole directory renamed into place)."""
        fs, root, _ = self._fs()
        try:
            with fs.open_input_stream(f"{root}/{key}/{META_FILE}") as f:
                meta = json.loads(f.read())
            with fs.open_input_stream(f"{root}/{key}/{STATE_FILE}") as f:
                blob = f.read()
        except FileNotFoundError:
            return None
        # weights_only: an entry is data, possibly written by another machine; loading runs no code
        state = torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
        state["meta"] = meta
        return state

    def store(self, key: str, state: dict, ident: dict) -> bool:
        """Write `state` under `key`, whole or not at all. False when another writer got there first."""
        buf = io.BytesIO()
        torch.save(state, buf)          # before anything is written: a failure here leaves nothing
        meta = _canon({"key": key, "ident": ident, "producer": self.producer, "written_at": time.time()}).encode()
        fs, root, local = self._fs()
        final = f"{root}/{key}"
        if not local:
            # an object store: one PUT per file, meta.json (what readers look for) last
            if fs.get_file_info(f"{final}/{META_FILE}").type != pafs.FileType.NotFound:
                return False
            fs.create_dir(final)
            with fs.open_output_stream(f"{final}/{STATE_FILE}") as f:
                f.write(buf.getvalue())
            with fs.open_output_stream(f"{final}/{META_FILE}") as f:
                f.write(meta)
            return True
        tmp = f"{root}/.tmp-{key}-{uuid.uuid4().hex[:8]}"
        fs.create_dir(tmp)
        try:
            for name, blob in ((STATE_FILE, buf.getvalue()), (META_FILE, meta)):
                with fs.open_output_stream(f"{tmp}/{name}") as f:
                    f.write(blob)
            try:
                fs.move(tmp, final)             # one rename: readers see all of it or nothing
            except OSError:
                if fs.get_file_info(final).type == pafs.FileType.Directory:   # another writer stored the key first
                    return False
                raise
            return True
        finally:
            if fs.get_file_info(tmp).type != pafs.FileType.NotFound:
                fs.delete_dir(tmp)

    # ---------------------------------------------------------------------------- claims

    @contextlib.contextmanager
    def claim(self, key: str):
        """Yield the stored entry, or None when this caller must train the stage (it then holds the
        key's claim until the block ends; store() inside the block). Waits while another holds it."""
        claims, holder = self._claims(), uuid.uuid4().hex
        while True:
            entry = self.load(key)
            if entry is not None:
                yield entry
                return
            if claims.acquire(key, holder, self.producer):
                break
            time.sleep(self.poll_s)
        stop = threading.Event()

        def heartbeat():
            while not stop.wait(self.heartbeat_s):
                with contextlib.suppress(Exception):
                    claims.refresh(key, holder)

        beat = threading.Thread(target=heartbeat, daemon=True, name="stagecache-heartbeat")
        beat.start()
        try:
            entry = self.load(key)       # stored between our last look and the claim
            yield entry
        finally:
            stop.set()
            beat.join()
            with contextlib.suppress(Exception):
                claims.release(key, holder)


def rng_state() -> dict:
    """The global RNG streams (torch, and CUDA once initialised): what pipeline.restore_rng sets back."""
    state = {"torch_rng": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda_rng"] = torch.cuda.get_rng_state_all()
    return state


__all__ = ["StageCache", "Claims", "NoClaims", "LockFileClaims", "STAGE3_ONLY_FIELDS", "code_digest", "key_fields", "rng_state"]
