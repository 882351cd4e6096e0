"""One self-contained HTML page: tables as HTML, PNGs embedded as base64 (no external files needed)."""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from medprune.sweep.table import Row

STYLE = """
body{font-family:system-ui,sans-serif;max-width:1250px;margin:.6em auto;padding:0 1em;color:#222;font-size:15px}
h1{font-size:1.35em;margin:.3em 0}h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;margin:.6em 0;font-size:.82em}th,td{border:1px solid #ccc;padding:2px 6px;
text-align:right;white-space:nowrap}th{background:#f2f2f2;white-space:normal;vertical-align:bottom}
td:first-child,th:first-child{text-align:left}img{max-width:100%;margin:.3em 0}.note{color:#555;font-size:.88em}
.scroll{overflow-x:auto}details{margin:.5em 0}summary{cursor:pointer;color:#1f4e79}
.answer{border:1px solid #9ab;background:#f6f9fc;padding:.3em .8em;margin:.3em 0}.answer p{margin:.3em 0}
.answer table{margin:.3em 0}.answer td:last-child{white-space:normal;text-align:left}tr.control td{color:#555}
td.better{background:#dff0d8}td.worse{background:#f2dede}td.equivalent{background:#eef}
"""


def fmt(value: Any, digits: int = 3) -> str:
    """A table cell: floats rounded, NaN/None as an en dash."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def table_html(
    rows: Sequence[Row],
    columns: Sequence[str] | None = None,
    headers: Sequence[str] | None = None,
    cell: Callable[[Row, str], str] | None = None,
) -> str:
    """An HTML table of ``rows`` (columns default to the first row's keys)."""
    if not rows:
        return '<p class="note">(no rows)</p>'
    columns = list(columns or rows[0].keys())
    headers = list(headers or columns)
    render = cell or (lambda row, column: fmt(row.get(column)))
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(render(row, c))}</td>" for c in columns) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def details(summary: str, content: str, link: str = "", opened: bool = False) -> str:
    """``content`` folded under ``summary`` (HTML text), with a link to the file ``link`` (a CSV beside the page)."""
    href = f" (<a href='{html.escape(link)}'>{html.escape(link)}</a>)" if link else ""
    return (
        f"<details{' open' if opened else ''}><summary>{summary}{href}</summary>"
        f"<div class='scroll'>{content}</div></details>"
    )


def image_html(path: str | Path, alt: str = "") -> str:
    """An ``<img>`` with the PNG embedded as a base64 data URI."""
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(alt or Path(path).stem)}" src="data:image/png;base64,{data}">'


def page(title: str, sections: Sequence[tuple[str, str]], intro: str = "") -> str:
    """The whole document: a title, an optional intro paragraph and ``(heading, html)`` sections."""
    parts = [
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
        f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>",
    ]
    if intro:
        parts.append(f"<p>{intro}</p>")
    for heading, content in sections:
        parts.append(f"<h2>{html.escape(heading)}</h2>\n{content}")
    parts.append("</body></html>")
    return "\n".join(parts)
