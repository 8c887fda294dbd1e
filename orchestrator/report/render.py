"""One document model, two thin renderers (Markdown, HTML).

The report is built once as a Document (a title and a list of typed blocks, see
orchestrator.report.document); to_markdown and to_html only translate each block, so the two
files always hold the same content. Text is a string or a tuple of strings and Code spans.
"""
from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from typing import Union


@dataclass(frozen=True)
class Code:
    """An inline code span (a URI, a run name)."""

    text: str


Text = Union[str, Code, tuple]   # a tuple holds str and Code parts, rendered one after the other


@dataclass(frozen=True)
class Heading:
    text: str
    level: int = 2


@dataclass(frozen=True)
class Paragraph:
    """kind: "plain"; "note" (a warning the reader must not miss); "aside" (a minor remark)."""

    text: Text
    kind: str = "plain"


@dataclass(frozen=True)
class Bullets:
    items: tuple[Text, ...]


@dataclass(frozen=True)
class Table:
    header: tuple[str, ...]
    rows: tuple[tuple[Text, ...], ...]


@dataclass(frozen=True)
class Image:
    """A PNG written next to the document: linked from Markdown, embedded in HTML."""

    name: str
    alt: str


Block = Union[Heading, Paragraph, Bullets, Table, Image]


@dataclass
class Document:
    title: str
    blocks: list[Block] = field(default_factory=list)


def parts(text: Text) -> tuple:
    """A Text as a tuple of str / Code parts."""
    return text if isinstance(text, tuple) else (text,)


# ----------------------------------------------------------------------------- Markdown

def _md_text(text: Text, in_table: bool = False) -> str:
    out = []
    for part in parts(text):
        if isinstance(part, Code):
            fence = "``" if "`" in part.text else "`"
            out.append(f"{fence}{part.text}{fence}")
        else:
            out.append(part)
    joined = "".join(out)
    return joined.replace("|", "\\|").replace("\n", " ") if in_table else joined


def _md_block(block: Block) -> str:
    if isinstance(block, Heading):
        return f"{'#' * block.level} {block.text}"
    if isinstance(block, Paragraph):
        text = _md_text(block.text)
        return {"note": f"> **Note:** {text}", "aside": f"_{text}_"}.get(block.kind, text)
    if isinstance(block, Bullets):
        return "\n".join(f"- {_md_text(item)}" for item in block.items)
    if isinstance(block, Table):
        lines = ["| " + " | ".join(_md_text(h, True) for h in block.header) + " |",
                 "|" + "---|" * len(block.header)]
        lines += ["| " + " | ".join(_md_text(c, True) for c in row) + " |" for row in block.rows]
        return "\n".join(lines)
    if isinstance(block, Image):
        return f"![{block.alt}]({block.name})"
    raise TypeError(f"unknown block {type(block).__name__}")


def to_markdown(document: Document) -> str:
    """The document as Markdown; images are linked by file name."""
    return "\n\n".join([f"# {document.title}"] + [_md_block(b) for b in document.blocks]) + "\n"


# ----------------------------------------------------------------------------- HTML

STYLE = ("body{font-family:sans-serif;margin:2em;max-width:1400px}"
         "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #bbb;"
         "padding:4px 8px;text-align:right}td:first-child,th{text-align:left}"
         "img{max-width:100%}.note{background:#fff4d6;padding:6px 10px;border-left:4px "
         "solid #e0a800}code{background:#f2f2f2}")


def _html_text(text: Text) -> str:
    return "".join(f"<code>{html.escape(p.text)}</code>" if isinstance(p, Code) else html.escape(p)
                    for p in parts(text))


def _html_block(block: Block, images: dict[str, bytes]) -> str:
    if isinstance(block, Heading):
        return f"<h{block.level}>{html.escape(block.text)}</h{block.level}>"
    if isinstance(block, Paragraph):
        text = _html_text(block.text)
        return {"note": f"<p class='note'><strong>Note:</strong> {text}</p>",
                "aside": f"<p><em>{text}</em></p>"}.get(block.kind, f"<p>{text}</p>")
    if isinstance(block, Bullets):
        return "<ul>" + "".join(f"<li>{_html_text(item)}</li>" for item in block.items) + "</ul>"
    if isinstance(block, Table):
        rows = ["<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in block.header) + "</tr>"]
        rows += ["<tr>" + "".join(f"<td>{_html_text(c)}</td>" for c in row) + "</tr>" for row in block.rows]
        return "<table>" + "\n".join(rows) + "</table>"
    if isinstance(block, Image):
        data = base64.b64encode(images[block.name]).decode("ascii")
        return (f'<a href="{html.escape(block.name)}"><img alt="{html.escape(block.alt)}" '
                f'src="data:image/png;base64,{data}"></a>')
    raise TypeError(f"unknown block {type(block).__name__}")


def to_html(document: Document, images: dict[str, bytes]) -> str:
    """The document as one self-contained HTML page.

    Args:
        images: PNG bytes by Image.name, embedded as data URIs (each also links its file).
    """
    title = html.escape(document.title)
    head = (f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title>"
            f"<style>{STYLE}</style></head><body>\n<h1>{title}</h1>")
    return "\n".join([head] + [_html_block(b, images) for b in document.blocks] + ["</body></html>"]) + "\n"
