"""fair_chance_heldout: the held-out study of issue 20 on fresh data seeds 3-7: S3, the no-Selection
ablation, CLIP-style and the raw-feature probe at one setting (the search's winner, or the defaults).

Command:  python run_grid.py --preset fair_chance_heldout --synthetic variant=V seed=D --seeds D [--set ...]
          (scripts/fair_chance.py heldout runs the 5 seeds x 2 variants x {winner, defaults}; docs/RESULTS.md)
Runtime:  per call S3 (66-80 s), the ablation (Stage 3 only: it reuses S3's Stage 1 through the stage
          cache), CLIP-style (5 dense epochs) and the raw probe (seconds): about 3 minutes.
Expected: written before the run: if the search found a setting in which pruning can act, S3's curve at
          that setting rises below p = 1 on 'entangled' (input-masking headroom there: +9 points with the
          raw probe, seed 0) and S3 beats its ablation; at the defaults, flat as in the evidence study.
"""
from search_spaces.fair_chance_confirm import get_preset as _confirm


def get_preset() -> dict:
    return {**_confirm(), "name": "fair_chance_heldout", "baselines": ["s3_no_select", "clip", "raw_probe"]}
