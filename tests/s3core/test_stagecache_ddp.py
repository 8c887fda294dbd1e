"""The stage cache in data-parallel trials (2 CPU workers, gloo, no Ray): rank 0 looks up, claims and
writes (with every rank's RNG streams), every rank loads, and a reused stage gives each rank exactly
what training it there gives. Slow: two spawned interpreters import torch (see test_distributed.py)."""
from __future__ import annotations

import os

import pytest
import torch
import torch.multiprocessing as mp

from s3core.config import S3Config
from s3core.data import SyntheticConfig, make_synthetic
from s3core.data.base import content_digest

pytestmark = pytest.mark.slow

# dropout: each rank draws its own masks, so a reuse must give each rank its own RNG streams back
CFG = S3Config(d_model=16, n_layers=1, n_heads=2, d_ff=32, chi=2, rho=2, proj_dim=8, batch_size=21,
               epochs_special=2, epochs_select=1, eval_batch_size=64, epoch_probe=False, dropout=0.1,
               keep_ratios=(1.0,), probe_l2=(1e-2,), probe_backend="torch")
TIMING = ("time_s", "embed_s")


def _bench():
    return make_synthetic(SyntheticConfig(n_train=63, n_valid=32, n_test=32, seq_len=4, dims=(6, 5), seed=3))


def _worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    from s3core.pipeline import run_trial
    from s3core.stagecache import StageCache

    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        bench, other = _bench(), CFG.replace(lambda_min=0.25)
        root = os.path.join(out_dir, "cache")
        out = {}
        for name, cfg, cached in (("first", CFG, True), ("reuse", other, True), ("fresh", other, False)):
            cache = StageCache(root, content_digest(bench), producer={"trial": name}) if cached else None
            result = run_trial(bench, cfg, "s3", progress=False, stage_cache=cache)
            out[name] = {"history": [{k: v for k, v in h.items() if k not in TIMING} for h in result.history],
                         "model": result.model.state_dict(), "events": cache.events if cache else [],
                         "rng": torch.get_rng_state()}
        torch.save(out, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        torch.distributed.destroy_process_group()


def test_ddp_ranks_reuse_a_stage_rank_0_wrote_bit_identically(tmp_path):
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2)]
    entries = [d for d in os.listdir(tmp_path / "cache") if not d.endswith(".lock")]
    assert len(entries) == 3, entries    # special, special+select of the first trial, and the second's select
    state = torch.load(tmp_path / "cache" / sorted(entries)[0] / "state.pt", weights_only=True)
    assert len(state["ranks"]) == 2, "rank 0 wrote every rank's RNG streams"
    for rank, out in enumerate(ranks):
        assert [(e["stage"], e["status"]) for e in out["first"]["events"]] == [("special", "trained"),
                                                                              ("select", "trained")]
        assert [(e["stage"], e["status"]) for e in out["reuse"]["events"]] == [("special", "reused"),
                                                                              ("select", "trained")]
        assert out["reuse"]["events"][0]["from"] == {"trial": "first"}
        # on every rank: the reused Stage 1 and the Stage 2 after it are exactly those trained fresh
        assert out["reuse"]["history"] == out["fresh"]["history"], rank
        for k, v in out["fresh"]["model"].items():
            assert torch.equal(out["reuse"]["model"][k], v), (rank, k)
        assert torch.equal(out["reuse"]["rng"], out["fresh"]["rng"]), rank
