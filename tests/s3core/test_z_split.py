"""S3Config.z_split (issue 21): the head's output as a shared and a private part, each on its own
unit sphere, for the InfoMax baselines; 0 (the default) is the single normalised z of before."""
import pytest
import torch

from s3core.config import ConfigError, S3Config
from s3core.data import SyntheticConfig, make_synthetic
from s3core.encoder import normalise_parts
from s3core.pipeline import build_model
from s3core.tensors import standardise, to_tensors

TINY = S3Config(d_model=16, n_layers=1, n_heads=2, d_ff=32, chi=1, rho=1, proj_dim=8, batch_size=32,
                epoch_probe=False)


def _outs(cfg):
    data = to_tensors(make_synthetic(SyntheticConfig(n_train=32, n_valid=16, n_test=16, seq_len=4, dims=(5, 3),
                                                     seed=1)))
    torch.manual_seed(0)
    model = build_model(data, cfg, "clip").eval()
    inputs, _ = data["valid"].batch(torch.arange(16))
    with torch.no_grad():
        return model(standardise(inputs, data))


def test_each_part_is_on_its_own_unit_sphere_and_the_split_only_renormalises():
    whole, split = _outs(TINY), _outs(TINY.replace(z_split=3))
    for m in whole:
        z = split[m].z
        assert z.shape == whole[m].z.shape
        torch.testing.assert_close(z[:, :3].norm(dim=1), torch.ones(16))
        torch.testing.assert_close(z[:, 3:].norm(dim=1), torch.ones(16))
        # same weights (same seed, same shapes): each part is the whole z's part, rescaled
        torch.testing.assert_close(z[:, :3], torch.nn.functional.normalize(whole[m].z[:, :3], dim=1))
        assert not torch.allclose(z, whole[m].z)


def test_zero_is_the_single_normalised_z():
    u = torch.randn(5, 8)
    torch.testing.assert_close(normalise_parts(u, 0), torch.nn.functional.normalize(u, dim=1), rtol=0, atol=0)


@pytest.mark.parametrize("bad", [-1, 8, 9, 2.5, True])
def test_a_bad_split_is_one_line(bad):
    with pytest.raises(ConfigError, match="z_split must be an integer in \\[0, proj_dim = 8\\)") as e:
        S3Config(proj_dim=8, z_split=bad).validate()
    assert "\n" not in str(e.value)
