"""bench/report.write_report: measuring one section keeps the others' figures, marked as carried."""
from bench.report import TITLES, write_report

RES = {"machine": {"cpu": "x"}, "command": "python -m bench --only probe", "profile": "full",
       "date": "2026-11-28 16:00 UTC", "load_start": "1 / 1 / 1", "sections_run": ["probe"]}


def test_a_section_not_run_is_carried_over_with_the_run_that_measured_it(tmp_path):
    out = tmp_path / "RESULTS.md"
    previous = "\n".join(["# s3core benchmarks", "", "- Command: `python -m bench` (profile `full`)",
                          "- Date: 2026-11-25 06:58 UTC", "", f"## {TITLES['moe']}", "", "| chi | ratio |",
                          "| 8 | 1.75x |", "", f"## {TITLES['data']}", "", "_Not run in this invocation (x)._", "",
                          "## What changed in s3core/moe.py", "", "text"])
    write_report(RES, str(out), previous)
    text = out.read_text()
    moe = text[text.index(f"## {TITLES['moe']}"):text.index(f"## {TITLES['pruning']}")]
    assert "| 8 | 1.75x |" in moe
    assert "Carried over from an earlier run (`python -m bench` (profile `full`), 2026-11-25 06:58 UTC)" in moe
    data = text[text.index(f"## {TITLES['data']}"):text.index(f"## {TITLES['orchestration']}")]
    assert "Carried over" not in data and "Not run in this invocation" in data
    # carried again: still one note, naming the run that measured it
    write_report({**RES, "date": "2026-11-29 10:00 UTC"}, str(out), text)
    again = out.read_text()
    moe = again[again.index(f"## {TITLES['moe']}"):again.index(f"## {TITLES['pruning']}")]
    assert moe.count("Carried over") == 1 and "2026-11-25 06:58 UTC" in moe and "| 8 | 1.75x |" in moe
