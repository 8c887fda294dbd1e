"""search: Optuna TPE over chi, rho, batch size, the five loss weights, tau and lr.

Command:  python run_grid.py --preset search --num-samples 40
          (cluster: ray exec clusters/gpu.yaml --tmux 'bash ~/s3/clusters/run_grid.sh --preset search ...')
Runtime:  num_samples trials per benchmark x seed; about 40 s per trial on the synthetic default
          on a 2-core CPU.
Expected: the objective is the validation accuracy at the validation-chosen keep-ratio p, so p is
          refined per trial on the validation split; test accuracy is logged but never used to
          choose. One Optuna study per (benchmark, seed), so sweeping benchmarks and seeds never
          mixes their objectives in one TPE model.
"""


def space(trial) -> dict:
    """Define-by-run search space. Returns the constants Tune should pass through unchanged."""
    trial.suggest_categorical("chi", [2, 4, 8])
    trial.suggest_categorical("rho", [2, 4, 8])
    trial.suggest_categorical("batch_size", [64, 128, 256])
    trial.suggest_float("lambda_rep", 0.1, 2.0, log=True)
    trial.suggest_float("lambda_dsc", 0.1, 2.0, log=True)
    trial.suggest_float("lambda_aux", 1e-3, 0.1, log=True)
    trial.suggest_float("lambda_suff", 0.1, 2.0, log=True)
    trial.suggest_float("lambda_min", 0.05, 2.0, log=True)
    trial.suggest_float("tau", 0.03, 0.5, log=True)
    trial.suggest_float("lr", 3e-4, 5e-3, log=True)
    return {}


def get_preset() -> dict:
    return {
        "name": "search",
        "benchmarks": ["synthetic"],
        "synthetic": {"label": "mixed"},
        "base": {"epochs_special": 6, "epochs_select": 3},
        "grid": {},
        "seeds": [0],
        "baselines": [],
        "search": {"space": space, "num_samples": 12},
    }
