"""Methods as a registry: one entry each, and nothing else switches on a method's name."""
import pytest
import torch

from s3core.config import ConfigError, S3Config
from s3core.data import SyntheticConfig, make_synthetic
from s3core.methods import METHOD_NAMES, METHODS, Method, get_method
from s3core.pipeline import build_model, method_stages, run_trial


def test_the_registry_holds_each_methods_stages_config_and_sweeps():
    assert METHOD_NAMES[:5] == ("s3", "s3_no_select", "clip", "supervised", "raw_probe")
    assert {"disentangled_ssl", "joint_opt"} <= set(METHOD_NAMES)   # issue 21 (tests/s3core/test_infomax_disentangled.py)
    assert {"focal", "factorcl"} <= set(METHOD_NAMES)   # issue 21 (tests/s3core/test_infomax_focal_factorcl.py)
    cfg = S3Config(epochs_special=4, epochs_select=2)
    assert method_stages("s3", cfg) == [("special", 4), ("select", 2)]
    assert method_stages("s3_no_select", cfg) == [("special", 4)]
    assert method_stages("clip", get_method("clip").config(cfg)) == [("special", 6)]
    assert method_stages("supervised", get_method("supervised").config(cfg)) == [("supervised", 6)]
    clip = get_method("clip").config(cfg)
    assert (clip.chi, clip.rho, clip.lambda_rep, clip.keep_ratios) == (1, 1, 0.0, (1.0,))
    assert get_method("supervised").config(cfg).lambda_rep == cfg.lambda_rep
    assert get_method("s3").config(cfg) is cfg
    assert get_method("s3").sweeps is None and get_method("s3_no_select").sweeps[:2] == ("chi", "batch_size")
    assert get_method("clip").sweeps[0] == "batch_size" and get_method("raw_probe").sweeps == ()
    assert METHODS["s3"].stages[1].trains("encoders.x1.blocks.0.ffn.router.weight")
    assert not METHODS["s3"].stages[1].trains("encoders.x1.input_proj.weight")
    with pytest.raises(ConfigError, match="choose one of"):
        get_method("simclr")


def test_the_supervised_head_is_a_real_submodule():
    data = make_synthetic(SyntheticConfig(n_train=64, n_valid=32, n_test=32, seq_len=4))
    cfg = get_method("supervised").config(S3Config(d_model=16, n_heads=2, d_ff=32, proj_dim=8))
    model = build_model(data, cfg, "supervised")
    assert isinstance(model.task_head, torch.nn.Linear)
    assert any(name.startswith("task_head.") for name in model.state_dict())
    assert build_model(data, S3Config(d_model=16, n_heads=2, d_ff=32, proj_dim=8), "s3").task_head is None


def test_a_new_method_is_one_registry_entry(monkeypatch):
    """A router-only method with no Stage 1: registered, it runs through run_trial unchanged."""
    from s3core import methods
    from s3core.stages import SELECTION

    monkeypatch.setitem(methods.METHODS, "select_only", Method("select_only", (SELECTION,), sweeps=()))
    data = make_synthetic(SyntheticConfig(n_train=64, n_valid=32, n_test=32, seq_len=4))
    cfg = S3Config(d_model=16, n_heads=2, d_ff=32, proj_dim=8, epochs_select=1, batch_size=32, keep_ratios=(1.0, 0.5),
                   probe_l2=(1e-2,), epoch_probe=False)
    result = run_trial(data, cfg, "select_only", progress=False)
    assert [h["stage"] for h in result.history] == ["select"]
    assert len(result.curve) == 2


def test_the_raw_feature_reference_trains_nothing_and_probes_the_raw_means():
    from s3core.analysis import raw_feature_probe

    data = make_synthetic(SyntheticConfig(n_train=128, n_valid=64, n_test=64, seq_len=4))
    cfg = S3Config(probe_l2=(1e-3, 1e-2))
    result = run_trial(data, cfg, "raw_probe", progress=False)
    assert result.history == [] and [r["keep_ratio"] for r in result.curve] == [1.0]
    ref = raw_feature_probe(data, l2_grid=(1e-3, 1e-2))
    assert result.curve[0]["test_acc"] == ref.test_acc and result.curve[0]["valid_acc"] == ref.valid_acc


def test_methods_without_experts_log_chi_1_whatever_the_grid_says():
    """raw_probe has no encoder and clip/supervised are dense: their logged config (what the report's
    chi column reads) must not carry the grid's granularity."""
    from s3core.config import S3Config
    from s3core.methods import get_method
    for name in ("raw_probe", "clip", "supervised"):
        assert get_method(name).config(S3Config(chi=4)).chi == 1, name
    assert get_method("s3").config(S3Config(chi=4)).chi == 4


def test_factorcl_keeps_one_z_whatever_split_a_trial_asks_for():
    """FactorCL cuts its five MI blocks from one normalised z; a trial's z_split (the other InfoMax
    baselines' shared/private parts) must not reach it."""
    assert get_method("factorcl").config(S3Config(z_split=8)).z_split == 0
    assert get_method("focal").config(S3Config(z_split=8)).z_split == S3Config().proj_dim // 2
