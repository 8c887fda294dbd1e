from bench.slot_timeline import timeline


def test_the_timeline_places_trials_on_the_slot_that_frees_first_and_measures_the_idle_tail():
    # 2 slots: a (0-10) and b (0-4) start together; c starts when b ends, d when c ends; a long last
    t = timeline([(100, 110, "a"), (100, 104, "b"), (104, 106, "c"), (106, 130, "d")], slots=2)
    assert [(name, s, e, slot) for s, e, slot, name in t["rows"]] == [
        ("b", 0, 4, 0), ("a", 0, 10, 1), ("c", 4, 6, 0), ("d", 6, 30, 0)]
    assert t["makespan"] == 30 and t["busy"] == 40
    assert t["use"] == 40 / 60
    assert t["tail"] == 20          # slot 0 idle from 10 to 30: one long trial last
