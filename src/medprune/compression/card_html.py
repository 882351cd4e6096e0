"""``card.html``: the card's Markdown as one self-contained HTML page (its PNGs embedded), converting the subset of
Markdown the card uses: headings, warnings (block quotes), lists, tables, images, code blocks, bold and code spans.

>>> page = render_html("## Decision", ".")
>>> "<h2>Decision</h2>" in page and page.startswith("<!DOCTYPE html>")
True
"""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path

__all__ = ["HTML_STYLE", "render_html"]

#: The card page's style (one self-contained file: images embedded).
HTML_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222;line-height:1.4}"
    "h2{border-bottom:1px solid #ccc;margin-top:1.6em}table{border-collapse:collapse;margin:.8em 0;font-size:.85em}"
    "th,td{border:1px solid #ccc;padding:3px 7px;text-align:right}th{background:#f2f2f2}"
    "td:first-child,th:first-child{text-align:left}blockquote{background:#fff4e5;border-left:4px solid #e69500;"
    "margin:.5em 0;padding:.4em .8em}img{max-width:100%}pre{background:#f6f6f6;padding:.6em;overflow-x:auto}"
)


def _inline(text: str) -> str:
    out = html.escape(text, quote=False)
    out = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", out)
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", out)


def _image(alt: str, name: str, folder: Path) -> str:
    path = folder / name
    if not path.is_file():
        return f"<p>({html.escape(alt)}: {html.escape(name)} missing)</p>"
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<p><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}"></p>'


def render_html(markdown: str, folder: str | Path) -> str:
    """``card.html``: the same card as ``card.md`` (the subset of Markdown it uses: headings, warnings, lists,
    tables, images, code blocks) as one self-contained page, its PNGs from ``folder`` embedded."""
    body: list[str] = []
    lines = markdown.split("\n")
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("```"):
            end = lines.index("```", i + 1)
            body.append("<pre>" + html.escape("\n".join(lines[i + 1 : end])) + "</pre>")
            i = end + 1
            continue
        if line.startswith("|"):
            rows = []
            while i < len(lines) and lines[i].startswith("|"):
                rows.append([cell.strip() for cell in lines[i].strip().strip("|").split(" | ")])
                i += 1
            head = "".join(f"<th>{_inline(c)}</th>" for c in rows[0])
            cells = ["<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in row) + "</tr>" for row in rows[2:]]
            body.append(f"<table><tr>{head}</tr>{''.join(cells)}</table>")
            continue
        if line.startswith("- "):
            items = []
            while i < len(lines) and lines[i].startswith("- "):
                items.append(f"<li>{_inline(lines[i][2:])}</li>")
                i += 1
            body.append(f"<ul>{''.join(items)}</ul>")
            continue
        heading = re.match(r"(#{1,3}) (.*)", line)
        image = re.fullmatch(r"!\[(.*?)\]\((.*?)\)", line)
        if heading:
            level = len(heading.group(1))
            body.append(f"<h{level}>{_inline(heading.group(2))}</h{level}>")
        elif image:
            body.append(_image(image.group(1), image.group(2), Path(folder)))
        elif line.startswith("> "):
            body.append(f"<blockquote>{_inline(line[2:])}</blockquote>")
        elif line.strip():
            body.append(f"<p>{_inline(line)}</p>")
        i += 1
    title = html.escape(lines[0].lstrip("# ")) if lines else "Model card"
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
        f"<style>{HTML_STYLE}</style></head><body>" + "\n".join(body) + "</body></html>\n"
    )
