"""default: what `python run_grid.py` runs with no arguments.

Command:  python run_grid.py
Runtime:  16 trials (S3 x 3 chi, the ablation x 3 chi, CLIP, raw-feature probe; 2 seeds), 2 at a time;
          the README gives the measured time of this command.
Expected: the synthetic benchmark whose label depends on modality x1's unique factor, where a
          contrastive-only representation is blind by construction (the paper's Proposition 2.5).
          S3 (chi in {2, 4, 8}, 2 seeds) should beat the CLIP-style baseline at the
          validation-chosen p; docs/RESULTS.md records the measured figures. The accuracy-vs-p
          curves land in MLflow (metrics valid_acc/test_acc against keep_ratio; step = p in
          per mille) and in ./report.
"""


def get_preset() -> dict:
    return {
        "name": "default",
        "benchmarks": ["synthetic"],
        "synthetic": {"label": "unique"},
        "base": {"epochs_special": 6, "epochs_select": 3, "batch_size": 128},
        "grid": {"chi": [2, 4, 8]},
        "seeds": [0, 1],
        "baselines": ["clip", "s3_no_select", "raw_probe"],
        "search": None,
    }
