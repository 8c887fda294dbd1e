"""default: what `python run_grid.py` runs with no arguments.

Command:  python run_grid.py
Runtime:  24 trials (S3 x 3 chi, the ablation x 3 chi, CLIP, the four InfoMax baselines, raw-feature
          probe; 2 seeds), 2 at a time; the README gives the measured time of this command.
          Fixed for cost: FactorCL's critics 64 wide (factorcl_critic_hidden; the authors' 512 cost 2.30 s per
          batch of 128 against CLIP's 0.042 on one thread, 64 cost 0.141: docs/METHOD_NOTES.md, FactorCL).
Expected: the synthetic benchmark whose label depends on modality x1's unique factor, where a
          contrastive-only representation is blind by construction (the paper's Proposition 2.5).
          S3 (chi in {2, 4, 8}, 2 seeds) should beat the CLIP-style baseline at the
          validation-chosen p; docs/RESULTS.md records the measured figures. The accuracy-vs-p
          curves land in MLflow (metrics valid_acc/test_acc against keep_ratio; step = p in
          per mille) and in ./report.
"""

from s3core.methods import methods_of_family


def get_preset() -> dict:
    return {
        "name": "default",
        "benchmarks": ["synthetic"],
        "synthetic": {"label": "unique"},
        "base": {"epochs_special": 6, "epochs_select": 3, "batch_size": 128, "factorcl_critic_hidden": 64},
        "grid": {"chi": [2, 4, 8]},
        "seeds": [0, 1],
        "baselines": ["clip", *methods_of_family("infomax"), "s3_no_select", "raw_probe"],
        "search": None,
    }
