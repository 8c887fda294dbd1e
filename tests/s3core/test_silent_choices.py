"""The paper's silent choices as S3Config fields (issue 20): each default is the behaviour from
before the field (the rest of the suite, unchanged, checks that: p = 1 exact, the stage cache's
bit-identity), each other value changes the model, and a bad value is refused in one line."""
import pytest
import torch

from s3core.config import ConfigError, S3Config
from s3core.data import SyntheticConfig, make_synthetic
from s3core.encoder import pool
from s3core.pipeline import build_model
from s3core.stages import epoch_generator, select_loss, special_loss
from s3core.tensors import standardise, to_tensors

TINY = S3Config(d_model=16, n_layers=2, n_heads=2, d_ff=32, chi=2, rho=2, proj_dim=8, batch_size=32,
                epoch_probe=False)


@pytest.fixture(scope="module")
def data():
    return to_tensors(make_synthetic(SyntheticConfig(n_train=64, n_valid=32, n_test=32, seq_len=5, dims=(6, 5),
                                                     pad_fraction=0.3, seed=3)))


def _z(data, cfg, keep_ratio=1.0):
    model = build_model(data, cfg, "s3").eval()
    inputs, _ = data["valid"].batch(torch.arange(32))
    with torch.no_grad():
        outs = model(standardise(inputs, data), keep_ratio=keep_ratio)
    return torch.cat([outs[m].z for m in data.modalities], 1)


@pytest.mark.parametrize("change", [dict(gate_renorm=True), dict(pooling="gate_mass"), dict(pooling="last"),
                                    dict(norm_placement="post"), dict(router_init_std=0.5)])
def test_each_architecture_setting_changes_the_embedding(data, change):
    base, other = _z(data, TINY), _z(data, TINY.replace(**change))
    assert base.shape == other.shape and torch.isfinite(other).all()
    assert not torch.allclose(base, other, atol=1e-4), change


def test_defaults_are_the_previous_model(data):
    """Default values spelled out give the same numbers as the defaults (the fields are plain
    switches, and the default branch is the code from before them)."""
    spelled = TINY.replace(gate_renorm=False, pooling="mean", norm_placement="pre", router_init_std=0.02,
                           special_local_entropy=0.0, select_local_entropy=0.0)
    assert torch.equal(_z(data, TINY, 0.5), _z(data, spelled, 0.5))


@pytest.mark.parametrize("field,loss", [("special_local_entropy", special_loss), ("special_global_entropy", special_loss),
                                        ("select_local_entropy", select_loss), ("select_global_entropy", select_loss)])
def test_each_entropy_weight_changes_its_stage_loss_and_router_gradient(data, field, loss):
    idx = torch.arange(32)

    def run(cfg):
        model = build_model(data, cfg, "s3")
        total, _ = loss(model, data, cfg, idx, epoch_generator(0, "t", 0, "cpu"))
        total.backward()
        return total.detach(), model.encoders["x1"].blocks[0].ffn.router.weight.grad.clone()

    t0, g0 = run(TINY)
    t1, g1 = run(TINY.replace(**{field: 1.0}))
    assert t0 != t1 and not torch.allclose(g0, g1)


def test_gate_renorm_makes_each_tokens_kept_gates_sum_to_one():
    from s3core.moe import MoEFFN

    layer = MoEFFN(TINY.replace(gate_renorm=True).moe())
    layer.want_gate_mass = True
    x = torch.randn(3, 5, 16)
    with torch.no_grad():
        out = layer(x)
        ref = MoEFFN(TINY.moe())
        ref.load_state_dict(layer.state_dict())
        ref.want_gate_mass = True
        plain = ref(x)
    assert (plain.gate_mass < 1).all()              # top-2 of 4 softmax gates: less than 1
    assert torch.allclose(out.gate_mass, plain.gate_mass)   # the mass is of the raw gates
    assert not torch.allclose(out.output, plain.output)


def test_pool_by_hand():
    h = torch.arange(2 * 3 * 2, dtype=torch.float32).view(2, 3, 2)
    mask = torch.tensor([[False, True, True], [True, True, False]])
    assert torch.equal(pool(h, mask, "mean"), torch.tensor([[3.0, 4.0], [7.0, 8.0]]))
    assert torch.equal(pool(h, mask, "last"), torch.stack([h[0, 2], h[1, 1]]))
    mass = torch.tensor([[5.0, 0.0, 1.0], [0.0, 0.0, 0.0]])     # sample 1: every pair pruned
    assert torch.equal(pool(h, mask, "gate_mass", mass), torch.stack([h[0, 2], torch.zeros(2)]))


@pytest.mark.parametrize("change", [dict(pooling="max"), dict(norm_placement="sandwich"),
                                    dict(select_local_entropy=-1.0), dict(router_init_std=float("nan"))])
def test_bad_values_are_refused_in_one_line(change):
    with pytest.raises(ConfigError) as err:
        TINY.replace(**change).validate()
    assert "\n" not in str(err.value) and next(iter(change)) in str(err.value)


SILENT = {"special_local_entropy": 1.0, "special_global_entropy": 1.0, "gate_renorm": True, "pooling": "last",
          "norm_placement": "post", "router_init_std": 0.5, "n_layers": 1}


@pytest.mark.parametrize("method", ["clip", "supervised"])
@pytest.mark.parametrize("field", sorted(SILENT))
def test_a_dense_method_sweeps_exactly_the_silent_choices_that_change_it(data, method, field):
    """The registry's sweeps (issue 20): a dense encoder (one expert, gate 1) changes with depth,
    norm placement and pooling, and not at all with the routing fields, so a grid over those runs
    it once, not once per value."""
    from s3core.methods import get_method

    m = get_method(method)

    def run(cfg):
        cfg = m.config(cfg)
        torch.manual_seed(0)
        model = build_model(data, cfg, method)
        total, _ = m.stages[0].loss(model, data, cfg, torch.arange(32), epoch_generator(0, "t", 0, "cpu"))
        return total.detach(), _z(data, cfg)

    (l0, z0), (l1, z1) = run(TINY), run(TINY.replace(**{field: SILENT[field]}))
    changes = not (torch.equal(l0, l1) and torch.equal(z0, z1))
    assert changes == (field in m.sweeps), (field, m.sweeps)
