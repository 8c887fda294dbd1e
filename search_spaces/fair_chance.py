"""fair_chance: Optuna TPE over the paper's silent choices (issue 20) on the 'entangled' variant.

Command:  python scripts/fair_chance.py search --root fair_chance --num-samples 16
          (one Optuna study per data seed, the search on data seeds 0-2 only; each is
          python run_grid.py --preset fair_chance --synthetic seed=D --num-samples 16 --experiment s3-fair-search-dD;
          then `confirm`, `choose`, `heldout`, `table`: scripts/fair_chance.py, docs/RESULTS.md)
Choosing: the objective is each trial's validation accuracy at its validation-chosen p (as in the
          `search` preset); the winner is the setting with the best mean of that objective over the
          three data seeds: re-run each study's best 3 settings on the other two data seeds
          (--preset fair_chance_confirm --set ...), never looking at test accuracy. The held-out study then runs
          the winner and today's defaults on data seeds 3-7 ('entangled' and 'localized').
Runtime:  num_samples trials per data seed (24 here, 16 in the study that ran: docs/RESULTS.md); an S3
          trial at these settings took 66-80 s on the 2-core machine with two trials at once.
Expected: written before any run: if the paper's mechanism needs confident routing and a MoE branch
          that dominates the residual, the search moves towards large entropy weights, gate
          renormalisation or gate-mass pooling, and its winner's curve rises below p = 1 on
          'entangled' (the raw probe's input-masking headroom there is +9 points, seed 0).
Fixed for cost, before any result: epochs 3 + 2, chi 4, epoch_probe off, 6 keep-ratios.
"""


def space(trial) -> dict:
    """Define-by-run space over the silent choices (s3core.config, issue 20 block)."""
    trial.suggest_float("special_local_entropy", 1e-3, 3.0, log=True)
    trial.suggest_float("select_local_entropy", 1e-3, 3.0, log=True)
    trial.suggest_float("special_global_entropy", 1e-3, 1.0, log=True)
    trial.suggest_float("select_global_entropy", 1e-3, 1.0, log=True)
    trial.suggest_categorical("gate_renorm", [False, True])
    trial.suggest_categorical("pooling", ["mean", "gate_mass", "last"])
    trial.suggest_categorical("norm_placement", ["pre", "post"])
    trial.suggest_float("router_init_std", 0.005, 1.0, log=True)
    trial.suggest_categorical("n_layers", [1, 2])
    return {}


def get_preset() -> dict:
    return {
        "name": "fair_chance",
        "benchmarks": ["synthetic"],
        "synthetic": {"variant": "entangled"},
        "base": {"epochs_special": 3, "epochs_select": 2, "epoch_probe": False, "chi": 4,
                 "keep_ratios": [1.0, 0.8, 0.6, 0.4, 0.2, 0.1]},
        "grid": {},
        "seeds": [0],
        "baselines": [],
        "search": {"space": space, "num_samples": 24},
    }
