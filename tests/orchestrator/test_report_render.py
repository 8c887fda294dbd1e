"""One document model, two renderers: Markdown and HTML carry the same content, in the same order."""
from __future__ import annotations

import html
import math

from orchestrator.report.document import (NO_PAPER_NOTE, PAPER_NOTE, PAPER_SOURCE, TABLE_HEADER, TEST_TEST_P, TEST_VALID_P,
                                          BenchmarkSection, build_document)
from orchestrator.report.render import Bullets, Code, Document, Heading, Image, Paragraph, Table, parts, to_html, \
    to_markdown

PNG = b"\x89PNG\r\n\x1a\nfake"


def leaves(document: Document) -> list[tuple[str, bool]]:
    """Every piece of text of the document in order, with whether it sits in a table cell."""
    out = [(document.title, False)]
    for block in document.blocks:
        if isinstance(block, Heading):
            out.append((block.text, False))
        elif isinstance(block, Paragraph):
            out += [(p.text if isinstance(p, Code) else p, False) for p in parts(block.text)]
        elif isinstance(block, Bullets):
            out += [(p.text if isinstance(p, Code) else p, False) for item in block.items for p in parts(item)]
        elif isinstance(block, Table):
            out += [(h, True) for h in block.header]
            out += [(p.text if isinstance(p, Code) else p, True) for row in block.rows for c in row for p in parts(c)]
        elif isinstance(block, Image):
            out.append((block.name, False))
    return [(text, in_table) for text, in_table in out if text]


def assert_in_order(rendered: str, pieces: list[str]) -> None:
    at = 0
    for piece in pieces:
        found = rendered.find(piece, at)
        assert found >= 0, f"{piece!r} missing after position {at}"
        at = found + len(piece)


def assert_same_content(document: Document, images: dict[str, bytes]) -> tuple[str, str]:
    markdown, page = to_markdown(document), to_html(document, images)
    pieces = leaves(document)
    assert_in_order(markdown, [t.replace("|", "\\|").replace("\n", " ") if cell else t for t, cell in pieces])
    assert_in_order(page, [html.escape(t) for t, _ in pieces])
    return markdown, page


def test_every_block_kind_renders_the_same_text_in_both_formats():
    document = Document("A <title> & more", [
        Bullets(("plain item", ("uri: ", Code("sqlite:////a|b.db")))),
        Paragraph("text with <angle> & 'quotes'"),
        Paragraph("watch out", kind="note"),
        Paragraph("a remark", kind="aside"),
        Heading("section"),
        Table(("a|b", "c"), (("x | y", (Code("run"), " (id)")), ("line\nbreak", "<b>"))),
        Image("curves.png", "curves"),
    ])
    markdown, page = assert_same_content(document, {"curves.png": PNG})
    assert "> **Note:** watch out" in markdown and "<strong>Note:</strong> watch out" in page
    assert "_a remark_" in markdown and "<em>a remark</em>" in page
    assert "`sqlite:////a|b.db`" in markdown and "<code>sqlite:////a|b.db</code>" in page
    assert "| x \\| y | `run` (id) |" in markdown
    assert markdown.count("\n| ") == 3 and page.count("<tr>") == 3   # header + 2 rows in each
    assert "![curves](curves.png)" in markdown and 'href="curves.png"' in page and "base64," in page
    assert "<b>" not in page   # cell text is escaped, never markup


def _row(method: str, label: str, chi: int, batch_size) -> dict:
    return dict(method=method, label=label, chi=chi, batch_size=batch_size, n_configs=2, n_seeds=3,
                test_acc_mean=75.5, test_acc_std=2.1213, keep_ratio_mean=0.4, valid_acc_mean=79.75,
                valid_acc_std=0.35, test_acc_best_on_test_mean=80.09, test_acc_best_on_test_std=2.69,
                keep_ratio_best_on_test_mean=0.6, test_acc_no_prune_mean=75.95, test_acc_no_prune_std=math.nan,
                paper_best="77.95 (p~0.3)", paper_no_prune=None)


def test_the_report_document_renders_the_same_content_in_both_formats():
    sections = [BenchmarkSection("mosei", [_row("s3", "S3", 8, 64), _row("clip", "clip", 1, None)],
                                 curves="curves_mosei.png", batch=None, unmatched=["infomax: 74-76 (InfoMax)"])]
    failed = [dict(run_id="0123456789abcdef", run_name="s3_chi8_s2", method="s3", chi=8, batch_size=64, seed=2,
                   failure_reason="CUDA out of memory | twice\nin Stage 1")]
    document = build_document(tracking_uri="sqlite:////tmp/mlflow.db", experiments=["s3-mosei", "s3-mosi"],
                              parent_run_id="abc", counts={"FINISHED": 4, "FAILED": 1}, notes=["partial results"],
                              sections=sections, failed=failed)
    markdown, page = assert_same_content(document, {"curves_mosei.png": PNG})
    for text in (markdown, page):
        assert "75.50 ± 2.12" in text and "80.09 ± 2.69" in text and "64 (best of 2)" in text
        assert "Batch-size plot skipped" in text and "partial results" in text
    tables = [b for b in document.blocks if isinstance(b, Table)]
    assert tables[0].header == TABLE_HEADER and TEST_VALID_P in TABLE_HEADER and TEST_TEST_P in TABLE_HEADER
    assert [len(row) for row in tables[0].rows] == [len(TABLE_HEADER)] * 2
    assert markdown.count("\n| ") == page.count("<tr>") == 3 + 2   # results: header + 2; failed: header + 1


def test_the_paper_note_names_its_source_and_only_where_the_paper_has_numbers():
    def section(benchmark: str, paper_best) -> BenchmarkSection:
        return BenchmarkSection(benchmark, [{**_row("s3", "S3", 8, 64), "paper_best": paper_best}],
                                curves=f"curves_{benchmark}.png", batch=None, unmatched=[])

    document = build_document(tracking_uri="uri", experiments=["s3-mosei"], parent_run_id=None, counts={},
                              notes=[], sections=[section("mosei", "77.95 (p~0.3)"), section("synthetic", None)],
                              failed=[])
    markdown = to_markdown(document)
    mosei, synthetic = markdown.split("## mosei", 1)[1].split("## synthetic")
    assert PAPER_NOTE in mosei and PAPER_SOURCE in PAPER_NOTE and TEST_TEST_P in PAPER_NOTE
    assert PAPER_NOTE not in synthetic and NO_PAPER_NOTE in synthetic
