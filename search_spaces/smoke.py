"""smoke: the whole pipeline in seconds, for CI and a first look.

Command:  python run_grid.py --preset smoke
Runtime:  about 1 minute on a 2-core CPU (most of it Ray and Ray Train start-up).
Expected: 2 trials (S3 at chi=2 and the CLIP baseline) FINISHED in MLflow, each with a
          10-point (S3) or 1-point (CLIP) curve; accuracies are near chance to ~0.8 at this size:
          it checks plumbing, not the method.
"""


def get_preset() -> dict:
    return {
        "name": "smoke",
        "benchmarks": ["synthetic"],
        "synthetic": {"n_train": 256, "n_valid": 128, "n_test": 128, "seq_len": 4, "label": "unique"},
        "base": {"d_model": 16, "n_layers": 1, "n_heads": 2, "d_ff": 32, "proj_dim": 16, "epochs_special": 2,
                 "epochs_select": 1, "batch_size": 64, "eval_batch_size": 128, "probe_l2": [1e-2]},
        "grid": {"chi": [2]},
        "seeds": [0],
        "baselines": ["clip"],
        "search": None,
    }
