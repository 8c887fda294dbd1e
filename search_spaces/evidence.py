"""evidence: the study of issue 10 on the synthetic variants built to test S3's mechanism.

Command:  python run_grid.py --preset evidence --experiment s3-evidence-localized --report-dir report-evidence
          (another variant: --synthetic variant=nuisance --experiment s3-evidence-nuisance)
Runtime:  per seed 9 trials (S3 at chi 2, 4, 8; the no-Selection ablation at the same chi; CLIP-style;
          supervised; the raw-feature probe); docs/RESULTS.md gives the measured time and what was run.
Expected: written before the study, from the mechanism (s3core/data/synthetic.py): on 'localized' 40 of
          50 steps carry nuisance only, so if Selection scores them low, lowering p should first drop
          them (accuracy flat or rising, the kept pairs' share on event steps rising) and then relevant
          pairs (accuracy falling): an inverted U. A flat curve, or no difference between S3 and the
          ablation, is reported as such. Every trial also logs the expert FLOPs per sample of each p
          and the expert analysis (DSC, usage per class, factor R2, event share).
Fixed here, not tuned on the results: the library's defaults except epoch_probe (off: the per-epoch
          probe only feeds Tune's progress line, and on a shared 2-core machine it costs minutes) and
          the keep-ratios (6 points from 1.0 to 0.1, to fit the sweep in the time we had).
"""


def get_preset() -> dict:
    return {
        "name": "evidence",
        "benchmarks": ["synthetic"],
        "synthetic": {"variant": "localized"},
        "base": {"epoch_probe": False, "keep_ratios": [1.0, 0.8, 0.6, 0.4, 0.2, 0.1]},
        "grid": {"chi": [2, 4, 8]},
        "seeds": [0, 1, 2, 3, 4],
        "baselines": ["s3_no_select", "clip", "supervised", "raw_probe"],
        "search": None,
    }
