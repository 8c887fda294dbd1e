"""evidence_s3: S3 alone at chi 2 and 4 with the `evidence` preset's data and settings, added to the
same MLflow experiment after it (the baselines and chi 8 come from `evidence`).

Command:  python run_grid.py --preset evidence --grid "chi=[8]" --experiment s3-evidence-localized
          python run_grid.py --preset evidence_s3 --experiment s3-evidence-localized
Runtime:  10 trials (2 chi x 5 seeds), about 3-4 minutes each on the shared 2-core machine (estimated
          from the chi 8 trials); NOT run yet: issue 10's study stopped at chi 8 for time
          (docs/RESULTS.md, "The evidence study").
Expected: answers "for which chi" of the inverted-U question at the cost of S3 trials only (the
          ablation at these chi was not run: issue 10's study on a shared 2-core machine).
"""
from search_spaces.evidence import get_preset as _evidence


def get_preset() -> dict:
    return {**_evidence(), "name": "evidence_s3", "grid": {"chi": [2, 4]}, "baselines": []}
