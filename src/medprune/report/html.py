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
body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.6em}h2{margin-top:2em;border-bottom:1px solid #ccc}table{border-collapse:collapse;margin:1em 0;
font-size:.85em}th,td{border:1px solid #ccc;padding:3px 7px;text-align:right}th{background:#f2f2f2}
td:first-child,th:first-child{text-align:left}img{max-width:100%;margin:.5em 0}.note{color:#555;font-size:.9em}
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
