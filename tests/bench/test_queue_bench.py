"""bench/queue_bench: the summary and the table from run rows (no Ray here)."""
from bench.queue_bench import queue_report, summarize


def _run(order, wall, fixed, use=0.9, tail=3.0, makespan=30.0):
    return {"order": order, "round": 0, "wall": wall, "fixed": fixed, "makespan": makespan, "use": use,
            "tail": tail, "starts": ["a", "b", "c"]}


def test_speedup_is_the_reference_over_the_net_wall_time_median_over_runs():
    runs = [_run("grid", 40.0, 10.0), _run("grid", 50.0, 10.0), _run("grid", 45.0, 10.0),
            _run("longest-first", 35.0, 10.0)]
    s = summarize(runs, reference_s=60.0)
    assert s["grid"]["speedups"] == [2.0, 1.5, 60.0 / 35.0]
    assert s["grid"]["speedup"] == 60.0 / 35.0 and s["grid"]["runs"] == 3
    assert s["longest-first"]["speedup"] == 60.0 / 25.0 and s["longest-first"]["net"] == 25.0


def test_the_report_says_whether_the_target_is_met():
    res = {"workload": "w", "trials": 4, "reference_s": 40.0, "reference_runs": [39.0, 41.0], "load": ["1", "2"],
           "runs": [_run("grid", 40.0, 10.0), _run("longest-first", 36.0, 10.0)]}
    res["summary"] = summarize(res["runs"], 40.0)
    text = "\n".join(queue_report(res))
    assert "| grid | 1 | **1.33x**" in text and "| longest-first | 1 | **1.54x**" in text
    assert "**missed** (best order 1.54x)" in text
    res["summary"] = summarize([_run("longest-first", 34.0, 10.0)], 40.0)
    assert "**met**" in "\n".join(queue_report(res))
