"""evidence_s3: S3 and its no-Selection ablation at chi 2 and 4 with the `evidence` preset's data and
settings, added to the same MLflow experiment after it (the other baselines and chi 8 come from
`evidence`).

Command:  python run_grid.py --preset evidence --grid "chi=[8]" --experiment s3-evidence-localized
          python run_grid.py --preset evidence_s3 --experiment s3-evidence-localized
Runtime:  20 trials (2 chi x 5 seeds x {s3, s3_no_select}); an S3 trial took about 4 minutes at chi 8
          with 2 trials at a time on the shared 2-core machine; the ablation shares S3's Stage 1
          through the stage cache (s3core/stagecache.py), so it costs its Stage 3 only.
          docs/RESULTS.md gives what the run measured.
Expected: answers "for which chi" of the inverted-U question; the ablation at the same chi says
          whether Selection moves the peak or the level there.
"""
from search_spaces.evidence import get_preset as _evidence


def get_preset() -> dict:
    return {**_evidence(), "name": "evidence_s3", "grid": {"chi": [2, 4]}, "baselines": ["s3_no_select"]}
