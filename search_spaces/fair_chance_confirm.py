"""fair_chance_confirm: one S3 setting of the fair_chance search on one 'entangled' data seed, to re-run
each study's best settings on the other two search seeds (choosing the winner on data seeds 0-2 only).

Command:  python run_grid.py --preset fair_chance_confirm --synthetic seed=D --set FIELD=VALUE ...
          (scripts/fair_chance.py confirm runs it for every study's best 3 settings; docs/RESULTS.md)
Runtime:  one S3 trial at fair_chance's settings: 66-80 s on the 2-core machine (2 trials at once).
Expected: a setting whose validation accuracy at p* holds on data it was not searched on; its mean
          over the three search seeds chooses the winner, never a test accuracy.
"""
from search_spaces.fair_chance import get_preset as _fair_chance


def get_preset() -> dict:
    return {**_fair_chance(), "name": "fair_chance_confirm", "search": None, "baselines": []}
