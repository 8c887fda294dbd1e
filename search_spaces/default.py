"""default: what `python run_grid.py` runs with no arguments.

Command:  python run_grid.py
Runtime:  about 6-9 minutes on a 2-core CPU (10 trials, 2 at a time).
Expected: the synthetic benchmark whose label depends on modality x1's unique factor, where a
          contrastive-only representation is blind by construction (the paper's Proposition 2.5).
          S3 (chi in {2, 4, 8}, 2 seeds) should beat the CLIP-style baseline at the
          validation-chosen p; docs/RESULTS.md records the measured figures. The accuracy-vs-p
          curves land in MLflow (metric valid_acc/test_acc against step = 100 p) and in ./report.
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
