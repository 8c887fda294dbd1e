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
