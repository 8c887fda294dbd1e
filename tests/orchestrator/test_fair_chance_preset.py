"""The fair_chance search preset (issue 20.5, prepared): it plans, and every config its space
samples is a valid S3Config on the 'entangled' variant."""
import optuna

from orchestrator.plan import OptunaStudy, Overrides, make_plan
from s3core.config import S3Config
from s3core.data.synthetic import SyntheticConfig
from search_spaces import load_preset


def test_fair_chance_plans_one_study_per_data_seed_and_samples_valid_configs():
    preset = load_preset("fair_chance")
    plan = make_plan(preset, Overrides(synthetic={"seed": 2}))
    assert [type(s) for s in plan.studies] == [OptunaStudy] and plan.studies[0].num_samples == 24
    assert SyntheticConfig(**plan.data.synthetic).variant == "entangled"
    assert SyntheticConfig(**plan.data.synthetic).seed == 2
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(30):
        trial = study.ask()
        assert preset.search.space(trial) == {}
        cfg = S3Config().replace(**{**preset.base, **trial.params}).validate()
        seen.add((cfg.pooling, cfg.norm_placement, cfg.gate_renorm))
        study.tell(trial, 0.5)
    assert len(seen) > 4


def test_the_confirm_and_heldout_presets_plan_s3_alone_and_s3_with_its_comparison():
    confirm = make_plan(load_preset("fair_chance_confirm"), Overrides(synthetic={"seed": 1}))
    heldout = make_plan(load_preset("fair_chance_heldout"), Overrides(synthetic={"variant": "localized", "seed": 5},
                                                                     seeds=[5]))
    assert [s.__class__.__name__ for s in confirm.studies] == ["GridStudy"]
    assert [t.method for t in confirm.studies[0].trials] == ["s3"]
    assert sorted(t.method for t in heldout.studies[0].trials) == ["clip", "raw_probe", "s3", "s3_no_select"]
    assert {t.seed for t in heldout.studies[0].trials} == {5}
    assert SyntheticConfig(**heldout.data.synthetic).variant == "localized"
    assert load_preset("fair_chance_heldout").base == load_preset("fair_chance").base


def test_a_setting_survives_the_round_trip_through_set_and_mlflow_params():
    """scripts/fair_chance.py passes a search trial's setting to run_grid.py as --set and finds it back
    in MLflow's params (str of each value): floats, bools and strings must come back equal."""
    import importlib.util
    from pathlib import Path

    from orchestrator.cli import parse_assignments

    path = Path(__file__).resolve().parents[2] / "scripts" / "fair_chance.py"
    spec = importlib.util.spec_from_file_location("fair_chance_script", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    setting = {**script.DEFAULTS, "special_local_entropy": 0.08096384026619578, "gate_renorm": True,
               "pooling": "gate_mass", "n_layers": 2}
    flags = script.setting_flags(setting)
    parsed = parse_assignments(flags[1:])
    cfg = S3Config().replace(**parsed)
    logged = {f"params.{k}": str(getattr(cfg, k)) for k in setting}
    assert script.setting_of(logged) == setting
