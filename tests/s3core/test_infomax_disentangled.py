"""DisentangledSSL and JointOpt (issue 21): the losses equal the authors' code, the methods train
through the pipeline, every new config field moves the loss, bad values are one-line errors, and
2 data-parallel workers give 1 process's loss and gradients (`slow`: two spawned interpreters).

The fixtures are the authors' own code run on fixed tensors (uhlerlab/DisentangledSSL at the commit
in disentangled_fixtures.json; fixtures/infomax/make_disentangled_fixtures.py says how)."""
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from s3core.config import ConfigError, S3Config
from s3core.data import SyntheticConfig, make_synthetic
from s3core.distributed import all_reduce_grads
from s3core.losses import (dssl_step1_loss, dssl_step2_loss, joint_opt_loss, orthogonality, symmetric_info_nce,
                           vmf_mean_alignment, vmf_rsample)
from s3core.methods import METHOD_NAMES, get_method
from s3core.objectives import dssl_shared_loss, dssl_specific_loss, joint_opt_objective
from s3core.pipeline import build_model, method_stages, run_trial
from s3core.stages import epoch_generator
from s3core.tensors import standardise, to_tensors

FIX = Path(__file__).parent / "fixtures" / "infomax"
HEADER = json.loads((FIX / "disentangled_fixtures.json").read_text())
ARRAYS = np.load(FIX / "disentangled_fixtures.npz", allow_pickle=False)
RTOL, ATOL = 1e-5, 1e-6


def case(name: str):
    """The fixture's tensors of one case (leaves with grad) and its settings."""
    t = {k.split("/", 1)[1]: torch.tensor(ARRAYS[k]) for k in ARRAYS.files if k.startswith(name + "/")}
    return t, HEADER["cases"][name]


def inputs(t: dict, *names):
    return [t[n].clone().requires_grad_(True) for n in names]


def close(ours: torch.Tensor, theirs: torch.Tensor, what: str):
    torch.testing.assert_close(ours.detach().float(), theirs.float(), rtol=RTOL, atol=ATOL, msg=what)


def test_the_fixtures_say_how_they_were_made():
    assert HEADER["repo"] == "https://github.com/uhlerlab/DisentangledSSL"
    assert HEADER["commit"] == "cda29ec29bf8ad85344637f643a372ba8e74363e"
    assert "make_disentangled_fixtures.py" in HEADER["command"] and HEADER["commit"] in HEADER["command"]
    assert all({"file", "function"} <= set(c) for c in HEADER["cases"].values())


@pytest.mark.parametrize("name", ["supcon_007", "supcon_02"])
def test_the_critic_is_their_supcon_on_two_views(name):
    t, c = case(name)
    a, b = inputs(t, "a", "b")
    loss = symmetric_info_nce(a, b, c["tau"])
    loss.backward()
    close(loss, t["loss"], name)
    close(a.grad, t["grad_a"], name + " grad a")
    close(b.grad, t["grad_b"], name + " grad b")


def test_the_alignment_and_the_orthogonality_are_theirs():
    t, _ = case("kl_vmf")
    mu1, mu2 = inputs(t, "mu1", "mu2")
    loss = vmf_mean_alignment(mu1, mu2)
    loss.backward()
    close(loss, t["loss"], "kl_vmf")
    close(mu1.grad, t["grad_mu1"], "kl_vmf grad")
    t, _ = case("ortho")
    a, b = inputs(t, "a", "b")
    loss = orthogonality(a, b)
    loss.backward()
    close(loss, t["loss"], "ortho")
    close(a.grad, t["grad_a"], "ortho grad a")
    close(b.grad, t["grad_b"], "ortho grad b")


@pytest.mark.parametrize("name", ["step1_beta01", "step1_beta5"])
def test_step1_is_their_mvinfomax_forward(name):
    t, c = case(name)
    z1, z2 = inputs(t, "z1", "z2")
    total, clip, skl = dssl_step1_loss({"x1": z1, "x2": z2}, {"x1": t["e1"], "x2": t["e2"]}, c["tau"], c["beta"])
    total.backward()
    close(total, t["loss"], name)
    close(clip, t["clip"], name + " clip")
    close(skl, t["skl"], name + " skl")
    close(z1.grad, t["grad_z1"], name + " grad z1")
    close(z2.grad, t["grad_z2"], name + " grad z2")


def _parts(t):
    p1, p1v, p2, p2v = inputs(t, "p1", "p1v", "p2", "p2v")
    p, pv = {"x1": p1, "x2": p2}, {"x1": p1v, "x2": p2v}
    s, sv = {"x1": t["s1"], "x2": t["s2"]}, {"x1": t["s1v"], "x2": t["s2v"]}
    return p, pv, s, sv


@pytest.mark.parametrize("name", ["step2_lmd0", "step2_lmd05"])
def test_step2_is_their_disen_forward(name):
    t, c = case(name)
    p, pv, s, sv = _parts(t)
    total, specific, ortho = dssl_step2_loss(p, pv, s, sv, c["tau"], c["lmd"])
    total.backward()
    close(total, t["loss"], name)
    close(specific, t["specific"], name + " specific")
    close(ortho, t["ortho"], name + " ortho")
    for k, v in (("p1", p["x1"]), ("p2", p["x2"]), ("p1v", pv["x1"]), ("p2v", pv["x2"])):
        close(v.grad, t["grad_" + k], f"{name} grad {k}")


@pytest.mark.parametrize("name", ["joint_a1_lmd0", "joint_a2_lmd05"])
def test_joint_opt_is_their_jointdisen_forward(name):
    t, c = case(name)
    p, pv, s, sv = _parts(t)
    zs1, zs2, zs1v, zs2v = inputs(t, "zs1", "zs2", "zs1v", "zs2v")
    total, shared, specific, ortho = joint_opt_loss({"x1": zs1, "x2": zs2}, {"x1": zs1v, "x2": zs2v}, p, pv, s, sv,
                                                    c["tau"], c["a"], c["lmd"])
    total.backward()
    close(total, t["loss"], name)
    close(shared, t["shared"], name + " shared")
    close(specific, t["specific"], name + " specific")
    close(ortho, t["ortho"], name + " ortho")
    for k, v in (("p1", p["x1"]), ("p2v", pv["x2"]), ("zs1", zs1), ("zs2v", zs2v)):
        close(v.grad, t["grad_" + k], f"{name} grad {k}")


@pytest.mark.parametrize("name", ["vmf_m32_k1000", "vmf_m32_k5", "vmf_m8_k1000"])
def test_the_vmf_sampler_draws_as_theirs(name):
    """Their sampler's mean and spread of w = <z, loc> over 20000 draws vs ours over as many: the
    means within 5 standard errors of their difference, the spreads within 5%; unit norm."""
    t, c = case(name)
    n = int(t["n"])
    loc = t["loc"].expand(n, c["m"]).contiguous()
    z = vmf_rsample(loc, c["kappa"], torch.Generator().manual_seed(3))
    w = (z * t["loc"]).sum(-1)
    se = math.sqrt(2 / n) * float(t["w_std"])
    assert abs(float(w.mean()) - float(t["w_mean"])) < 5 * se, (float(w.mean()), float(t["w_mean"]))
    assert abs(float(w.std()) / float(t["w_std"]) - 1) < 0.05
    torch.testing.assert_close(z.norm(dim=-1).mean(), t["norm_mean"], rtol=1e-4, atol=1e-4)


def test_the_vmf_sample_carries_the_gradient_to_its_mean_and_kappa_0_is_the_mean():
    loc = torch.nn.functional.normalize(torch.randn(4, 6), dim=-1).requires_grad_(True)
    vmf_rsample(loc, 100.0, torch.Generator().manual_seed(0)).sum().backward()
    assert loc.grad is not None and loc.grad.abs().sum() > 0
    assert vmf_rsample(loc, 0.0) is loc
    a = vmf_rsample(loc, 50.0, torch.Generator().manual_seed(1))
    assert torch.equal(a, vmf_rsample(loc, 50.0, torch.Generator().manual_seed(1)))


# ------------------------------------------------------------------------------ the methods

SMALL = dict(d_model=16, n_heads=2, d_ff=32, proj_dim=8, epochs_special=1, epochs_select=1, batch_size=32,
             probe_l2=(1e-2,), epoch_probe=False, diagnostics=False)


@pytest.fixture(scope="module")
def data():
    torch.set_num_threads(1)
    return make_synthetic(SyntheticConfig(n_train=96, n_valid=48, n_test=48, seq_len=4))


def test_both_are_registered_baselines_with_their_own_style():
    assert {"disentangled_ssl", "joint_opt"} <= set(METHOD_NAMES)
    styles = {get_method(n).style for n in METHOD_NAMES if get_method(n).style.colour}
    for name, label in (("disentangled_ssl", "DisentangledSSL"), ("joint_opt", "JointOpt")):
        m = get_method(name)
        assert m.role == "baseline" and m.label == label and m.style.colour and m.style in styles
        assert sum(get_method(o).style.colour == m.style.colour for o in METHOD_NAMES) == 1
    cfg = S3Config(epochs_special=4, epochs_select=2, chi=4, proj_dim=64)
    dssl, joint = get_method("disentangled_ssl").config(cfg), get_method("joint_opt").config(cfg)
    assert method_stages("disentangled_ssl", dssl) == [("dssl_shared", 4), ("dssl_specific", 2)]
    assert method_stages("joint_opt", joint) == [("joint_opt", 6)]
    for c in (dssl, joint):
        assert (c.chi, c.rho, c.keep_ratios, c.z_split, c.weight_decay) == (1, 1, (1.0,), 32, 0.0)
    assert get_method("disentangled_ssl").config(dssl) == dssl     # converting twice changes nothing
    assert get_method("joint_opt").config(cfg.replace(z_split=16)).z_split == 16


@pytest.mark.parametrize("name", ["disentangled_ssl", "joint_opt"])
def test_each_trains_through_the_pipeline_and_probes_shared_and_private(data, name):
    result = run_trial(data, S3Config(**SMALL), name, progress=False)
    stages = [s.name for s in get_method(name).stages]
    assert [h["stage"] for h in result.history] == [s for s in stages for _ in range(1 if name == "disentangled_ssl" else 2)]
    assert [r["keep_ratio"] for r in result.curve] == [1.0] and 0 <= result.curve[0]["test_acc"] <= 1
    tensors = to_tensors(data, "cpu")
    with torch.no_grad():
        z = result.model(standardise(tensors["train"].batch(torch.arange(5))[0], tensors))
    for o in z.values():   # both parts on their unit spheres: what the probe sees, concatenated
        torch.testing.assert_close(o.z[:, :4].norm(dim=1), torch.ones(5))
        torch.testing.assert_close(o.z[:, 4:].norm(dim=1), torch.ones(5))


def test_step2_changes_only_the_private_rows(data):
    """DisentangledSSL step 2 trains the last projection layer; its shared rows and every other
    parameter stay bit-identical (the shared parts are frozen, as the authors')."""
    cfg = get_method("disentangled_ssl").config(S3Config(**{**SMALL, "epochs_select": 0}))
    after1 = run_trial(data, cfg, "disentangled_ssl", progress=False).model.state_dict()
    after2 = run_trial(data, cfg.replace(dssl_epochs_step2=2), "disentangled_ssl", progress=False).model.state_dict()
    changed = {k for k in after1 if not torch.equal(after1[k], after2[k])}
    assert changed == {f"encoders.{m}.head.2.{p}" for m in ("x1", "x2") for p in ("weight", "bias")}
    for m in ("x1", "x2"):
        w1, w2 = after1[f"encoders.{m}.head.2.weight"], after2[f"encoders.{m}.head.2.weight"]
        assert torch.equal(w1[:4], w2[:4]) and not torch.equal(w1[4:], w2[4:])


# each new field, changed, moves its method's batch loss (fixed model, batch and random stream)
FIELD_CHANGES = [("dssl_shared_loss", "infomax_tau", 0.5), ("dssl_shared_loss", "infomax_kappa", 5.0),
                 ("dssl_shared_loss", "dssl_beta", 3.0), ("dssl_specific_loss", "infomax_tau", 0.5),
                 ("dssl_specific_loss", "dssl_lambda", 2.0), ("joint_opt_objective", "infomax_tau", 0.5),
                 ("joint_opt_objective", "infomax_kappa", 5.0), ("joint_opt_objective", "joint_a", 3.0),
                 ("joint_opt_objective", "joint_lambda", 2.0)]
OBJECTIVES = {"dssl_shared_loss": dssl_shared_loss, "dssl_specific_loss": dssl_specific_loss,
              "joint_opt_objective": joint_opt_objective}


@pytest.mark.parametrize("objective,field,value", FIELD_CHANGES)
def test_each_new_field_changes_the_loss(data, objective, field, value):
    cfg = get_method("joint_opt").config(S3Config(**SMALL))
    tensors = to_tensors(data, "cpu")
    torch.manual_seed(0)
    model = build_model(tensors, cfg, "joint_opt")
    idx = torch.arange(32)

    def loss(c):
        return float(OBJECTIVES[objective](model, tensors, c, idx, torch.Generator().manual_seed(5))[0].detach())
    assert loss(cfg) == loss(cfg)
    assert loss(cfg.replace(**{field: value})) != loss(cfg), field


def test_the_epochs_of_step2_are_its_own_field(data):
    cfg = get_method("disentangled_ssl").config(S3Config(**{**SMALL, "epochs_select": 2}))
    assert cfg.dssl_epochs_step2 == 2 and cfg.epochs_select == 0


@pytest.mark.parametrize("field,value,match", [
    ("infomax_tau", 0.0, "infomax_tau must be a positive number"),
    ("infomax_tau", float("nan"), "infomax_tau must be a positive number"),
    ("infomax_kappa", -1.0, "infomax_kappa must be a number >= 0"),
    ("dssl_beta", -0.1, "dssl_beta must be a number >= 0"),
    ("dssl_lambda", float("inf"), "dssl_lambda must be a number >= 0"),
    ("joint_a", -2.0, "joint_a must be a number >= 0"),
    ("joint_lambda", -1.0, "joint_lambda must be a number >= 0"),
    ("dssl_epochs_step2", -1, "dssl_epochs_step2 must be an integer >= 0"),
])
def test_bad_values_are_one_line_errors(field, value, match):
    with pytest.raises(ConfigError, match=match) as err:
        S3Config(**{field: value}).validate()
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("method", ["disentangled_ssl", "joint_opt", "focal"])
def test_a_shared_part_too_narrow_fails_when_the_config_is_made(method):
    """z_split 1 (FOCAL: proj_dim 3, half of it 1) fails when the method's config is made, one line,
    so a grid fails in make_plan before Ray starts, not at the trial's first batch."""
    bad = {"proj_dim": 3} if method == "focal" else {"z_split": 1}
    with pytest.raises(ConfigError, match="2 <= z_split < proj_dim") as err:
        get_method(method).config(S3Config(**bad))
    assert "\n" not in str(err.value)
    assert get_method(method).config(S3Config(proj_dim=8)).z_split == 4


def test_a_grid_with_a_too_narrow_shared_part_fails_when_planned():
    from orchestrator.plan import Overrides, make_plan
    from search_spaces import load_preset

    with pytest.raises(ConfigError, match="2 <= z_split < proj_dim"):
        make_plan(load_preset("infomax_study"), Overrides(set={"z_split": 1}))


def test_without_a_split_or_a_second_modality_the_objective_says_what_to_do(data):
    tensors = to_tensors(data, "cpu")
    cfg = S3Config(**SMALL)
    model = build_model(tensors, cfg, "joint_opt")
    with pytest.raises(ConfigError, match="z_split = proj_dim // 2"):
        joint_opt_objective(model, tensors, cfg, torch.arange(8), torch.Generator().manual_seed(0))


def test_the_stage_cache_claims_are_true(data):
    """A field a stage claims (Stage.own_fields) is read by no other stage: changing step 2's own
    fields leaves step 1 bit-identical, and changing DisentangledSSL's fields leaves JointOpt so."""
    def state(name, **changes):
        res = run_trial(data, S3Config(**{**SMALL, **changes}), name, progress=False)
        return res.model.state_dict(), [{k: v for k, v in h.items() if k != "time_s"} for h in res.history]

    def same(a, b):
        assert a[1] == b[1] and all(torch.equal(v, b[0][k]) for k, v in a[0].items())

    same(state("disentangled_ssl", epochs_select=0), state("disentangled_ssl", epochs_select=0, dssl_lambda=2.0))
    same(state("joint_opt"), state("joint_opt", dssl_beta=3.0, dssl_lambda=2.0, dssl_epochs_step2=5))


# ------------------------------------------------------------------------------ data parallel

DDP_CFG = get_method("joint_opt").config(S3Config(d_model=16, n_layers=2, n_heads=2, d_ff=32, proj_dim=8, batch_size=21,
                                                  epoch_probe=False, aug_noise=0.3, aug_step_drop=0.3))


def _ddp_grads(name: str, world: int) -> dict:
    """Loss and gradients of one batch of 21 (shares of 11 and 10), as tests/s3core/test_distributed.py."""
    data = to_tensors(make_synthetic(SyntheticConfig(n_train=63, n_valid=16, n_test=16, seq_len=5, dims=(6, 7),
                                                     pad_fraction=0.4, seed=2)))
    torch.manual_seed(0)
    model = build_model(data, DDP_CFG, "joint_opt")
    loss, _ = OBJECTIVES[name](model, data, DDP_CFG, torch.arange(5, 26), epoch_generator(0, "special", 0, "cpu"))
    loss.backward()
    if world > 1:
        all_reduce_grads(list(model.parameters()))
    return {"loss": loss.detach(), **{n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}}


def _ddp_worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        torch.save({name: _ddp_grads(name, world) for name in OBJECTIVES}, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.slow
def test_two_workers_give_the_whole_batch_loss_and_gradients(tmp_path):
    """The vMF samples and views are drawn after the gather, from the same stream on every worker."""
    mp.spawn(_ddp_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    torch.set_num_threads(1)
    for name in OBJECTIVES:
        single = _ddp_grads(name, 1)
        for rank in range(2):
            got = torch.load(tmp_path / f"rank{rank}.pt")[name]
            assert set(got) == set(single), name
            for key in single:
                torch.testing.assert_close(got[key], single[key], rtol=1e-4, atol=1e-6, msg=f"{name}: {key}")
