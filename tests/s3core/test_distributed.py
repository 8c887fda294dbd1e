"""Data parallelism keeps the batch (s3core/distributed.py): 2 CPU workers (gloo, no Ray) give the
loss and the gradients of 1 process on the same whole batch, for every training loss, and one
epoch of Stage 1 ends with the same losses and the same model.

The two-process tests are `slow` (two spawned interpreters import torch: about 90 s on this
shared 2-core machine under load); CI runs them with -m slow."""
from __future__ import annotations

import os

import pytest
import torch
import torch.multiprocessing as mp

from s3core.config import S3Config
from s3core.data import SyntheticConfig, make_synthetic
from s3core.distributed import share_sizes
from s3core.pipeline import build_model
from s3core.stages import epoch_generator, select_loss, special_loss, specialize, supervised_loss
from s3core.tensors import to_tensors

CFG = S3Config(d_model=16, n_layers=2, n_heads=2, d_ff=32, chi=2, rho=2, proj_dim=8, batch_size=21,
               epochs_special=1, epoch_probe=False, aug_noise=0.3, aug_step_drop=0.3, lambda_aux=0.5)
LOSSES = {"special": special_loss, "select": select_loss, "supervised": supervised_loss}


def _data():
    return to_tensors(make_synthetic(SyntheticConfig(n_train=63, n_valid=16, n_test=16, seq_len=5, dims=(6, 7),
                                                     pad_fraction=0.4, seed=2)))


def _grads(loss_name: str, world: int) -> dict:
    """Loss and gradients of one batch of 21 (not divisible by 2: shares of 11 and 10)."""
    from s3core.distributed import all_reduce_grads, batch_wide_routing_stats

    data = _data()
    method = "supervised" if loss_name == "supervised" else "s3"
    model = build_model(data, CFG, method)
    idx = torch.arange(5, 26)
    gen = epoch_generator(0, "special", 0, "cpu")
    with batch_wide_routing_stats(model):
        loss, _ = LOSSES[loss_name](model, data, CFG, idx, gen)
    loss.backward()
    params = [p for p in model.parameters()]
    if world > 1:
        all_reduce_grads(params)
    return {"loss": loss.detach(), **{n: p.grad.clone() for n, p in model.named_parameters()}}


def _epoch(world: int) -> dict:
    """One Stage 1 epoch (3 AdamW steps): its mean losses and the trained model's embeddings.
    (Not the raw parameters: attention's key bias has no effect on the output, its gradient is
    rounding noise, and AdamW turns noise into steps of size lr.)"""
    from s3core.tensors import embed

    data = _data()
    model = build_model(data, CFG, "s3")
    (metrics,) = specialize(model, data, CFG, progress=False)
    z = embed(model, data, "valid", 1.0, 16)[0]
    return {"z": z, **{k: torch.tensor(v) for k, v in metrics.items() if k != "time_s"}}


def _worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        results = {name: _grads(name, world) for name in LOSSES}
        results["epoch"] = _epoch(world)
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        torch.distributed.destroy_process_group()


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    mp.spawn(_worker, args=(2, str(out / "init"), str(out)), nprocs=2, join=True)
    return [torch.load(out / f"rank{r}.pt") for r in range(2)]


def test_share_sizes_cover_the_batch():
    assert share_sizes(21, 2) == [11, 10] and share_sizes(4, 3) == [2, 1, 1] and sum(share_sizes(512, 4)) == 512


@pytest.mark.slow
@pytest.mark.parametrize("loss_name", list(LOSSES))
def test_two_workers_give_the_whole_batch_loss_and_gradients(two_workers, loss_name):
    torch.set_num_threads(1)
    single = _grads(loss_name, 1)
    for rank in range(2):
        got = two_workers[rank][loss_name]
        torch.testing.assert_close(got["loss"], single["loss"], rtol=1e-5, atol=1e-6)
        assert set(got) == set(single)
        for name in single:
            torch.testing.assert_close(got[name], single[name], rtol=1e-4, atol=1e-6, msg=f"{loss_name}: {name}")


@pytest.mark.slow
def test_two_workers_train_one_epoch_like_one_process(two_workers):
    torch.set_num_threads(1)
    single = _epoch(1)
    for rank in range(2):
        for name, value in single.items():
            torch.testing.assert_close(two_workers[rank]["epoch"][name], value, rtol=1e-4, atol=1e-5,
                                       msg=name, check_dtype=False)
