"""evidence: the study of issue 10 on the synthetic variants built to test S3's mechanism.

Command:  python run_grid.py --preset evidence --experiment s3-evidence-localized --report-dir report-evidence
          (another variant: --synthetic variant=nuisance --experiment s3-evidence-nuisance)
Runtime:  per seed 13 trials (S3 at chi 2, 4, 8; the no-Selection ablation at the same chi; CLIP-style;
          the four InfoMax baselines (issue 21, added after the study of issue 10 ran; FactorCL's critics
          64 wide for cost, as in `default`); supervised; the raw-feature probe); docs/RESULTS.md gives
          the measured time and what was run.
Expected: written before the study, from the mechanism (s3core/data/synthetic.py): on 'localized' 40 of
          50 steps carry nuisance only, so if Selection scores them low, lowering p should first drop
          them (accuracy flat or rising, the kept pairs' share on event steps rising) and then relevant
          pairs (accuracy falling): an inverted U. A flat curve, or no difference between S3 and the
          ablation, is reported as such. Every trial also logs the expert FLOPs per sample of each p
          and the expert analysis (DSC, usage per class, factor R2, event share).
Fixed here for cost, before any result, never tuned on results: the library's defaults except
          epochs 3 + 2 (defaults 6 + 3; the dense baselines train 5, the same budget), epoch_probe off
          (the per-epoch probe only feeds Tune's progress line) and 6 keep-ratios from 1.0 to 0.1. On
          the shared 2-core machine one S3 trial at the defaults took about 8 minutes (Stage 1 epochs
          of 35-50 s under a load average of 10-12): 5 seeds of every method did not fit otherwise.
"""

from s3core.methods import methods_of_family


def get_preset() -> dict:
    return {
        "name": "evidence",
        "benchmarks": ["synthetic"],
        "synthetic": {"variant": "localized"},
        "base": {"epochs_special": 3, "epochs_select": 2, "epoch_probe": False,
                 "keep_ratios": [1.0, 0.8, 0.6, 0.4, 0.2, 0.1], "factorcl_critic_hidden": 64},
        "grid": {"chi": [2, 4, 8]},
        "seeds": [0, 1, 2, 3, 4],
        "baselines": ["s3_no_select", "clip", *methods_of_family("infomax"), "supervised", "raw_probe"],
        "search": None,
    }
