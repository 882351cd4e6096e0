"""The report's tables as Markdown (``results.md``): for docs/results.md and anyone reading results in a terminal.

Every table heading names its split: Table 1 and the paired verdicts are on test; lossless rates are chosen on
validation and confirmed on test. Every number shows its effective n (training checkpoints) beside its rows, and
every verdict its family.
"""

from __future__ import annotations

from collections.abc import Sequence

from medprune.report.clustered import LOSSLESS_NOTE
from medprune.report.html import fmt
from medprune.report.page import (
    TABLE1_CELL,
    ReportTables,
    compact_cell,
    interval_text,
    lossless_cells,
    lossless_headers,
    missing_rates_note,
    n_text,
    paired_family,
    paired_note,
    swept_rates,
)
from medprune.report.summary import Answer, answer_markdown
from medprune.report.tables import protocol_label
from medprune.stats import CLUSTERED_METHOD_NOTE
from medprune.sweep.protocols import setting_text
from medprune.sweep.table import Row, format_rate

__all__ = ["markdown_table", "results_markdown"]


def markdown_table(rows: Sequence[Row], columns: Sequence[str], headers: Sequence[str] | None = None) -> str:
    """A GitHub Markdown table of ``rows`` (cells through :func:`medprune.report.html.fmt` unless already text)."""
    if not rows:
        return "_(no rows)_\n"
    headers = list(headers or columns)
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for row in rows:
        cells = [row.get(c) if isinstance(row.get(c), str) else fmt(row.get(c)) for c in columns]
        lines.append("| " + " | ".join(str(c).replace("|", "/") for c in cells) + " |")
    return "\n".join(lines) + "\n"


def _setting(row: Row) -> str:
    name = row.get("protocol") or ""
    return f"{name} ({setting_text(row)})" if name else protocol_label(row)


def _table1(rows: Sequence[Row], rates: Sequence[float]) -> str:
    labels = [format_rate(r)[:4] for r in swept_rates(rows, rates)]
    shown = [
        {
            "line": f"{r['method']} / {r['sampling']}",
            "setting": _setting(r),
            "n": n_text(int(r.get("n") or 0), int(r.get("rows") or 0), int(r.get("copies") or 0)),
            **{label: compact_cell(r, label) for label in labels},
        }
        for r in rows
    ]
    columns = ["line", "setting", "n", *labels]
    headers = ["method / sampling", "setting", "n", *[f"drop @{label} [95% CI]" for label in labels]]
    return markdown_table(shown, columns, headers)


def results_markdown(
    tables: ReportTables,
    rates: Sequence[float],
    tolerances: Sequence[float],
    title: str = "Results",
    answers: Sequence[Answer] = (),
) -> str:
    """Markdown of the answer (:mod:`medprune.report.summary`) first, then Table 1 per protocol (test), lossless rates
    (val -> test) and the paired verdicts (test)."""
    parts = [f"## {title}\n"]
    if answers:
        parts.append("### The answer: how much can be pruned, with which method, how sure\n")
        parts += [answer_markdown(a) for a in answers]
    datasets = sorted({str(r["dataset"]) for r in tables.rows})
    baselines = [r for r in tables.rows if r["method"] == "baseline"]
    parts.append(
        "Unpruned: "
        + "; ".join(
            f"{r['dataset']} {str(r['checkpoint'])[:8]} {r.get('split', 'test')} accuracy {fmt(r['accuracy'])}, "
            f"AUROC {fmt(r.get('auroc'))}"
            for r in baselines
        )
        + f" (datasets: {', '.join(datasets)}).\n"
    )
    protocols = sorted({str(r.get("protocol") or "") for r in tables.table1}, key=lambda p: (p != "paper", p))
    missing = missing_rates_note(tables.table1, rates)
    for protocol in protocols:
        name = protocol or "other settings"
        rows = [r for r in tables.table1 if str(r.get("protocol") or "") == protocol]
        parts.append(f"### Table 1, {name}: accuracy drop (test split; {TABLE1_CELL})\n")
        parts.append(_table1(rows, rates))
        metric_rows = [r for r in tables.table1_metric if str(r.get("protocol") or "") == protocol]
        if metric_rows:
            parts.append(f"### Table 1, {name}: {tables.metric.replace('_', ' ')} drop (test split)\n")
            parts.append(_table1(metric_rows, rates))
    if missing:
        parts.append(missing + "\n")
    metric = tables.metric.replace("_", " ")
    parts.append(f"### Lossless rates on {metric}: chosen on validation, confirmed on test\n")
    summary = []
    for row in tables.summary:
        out: Row = {
            "line": f"{row['method']} / {row['sampling']}",
            "model": str(row.get("model") or ""),
            "setting": f"{protocol_label(row)} ({setting_text(row)})",
            "n": n_text(int(row["n"]), int(row.get("rows") or row["n"]), int(row.get("copies") or 0)),
        }
        for tol in tolerances:
            out.update({f"{k}@{tol:g}": v for k, v in lossless_cells(row, f"{tol:g}").items()})
        summary.append(out)
    columns = ["line", "model", "setting", "n"]
    headers = ["method / sampling", "model", "setting", "n"]
    for tol in tolerances:
        columns += [f"{k}@{tol:g}" for k in ("rate", "confirmed_rate", "test_drop", "held")]
        headers += lossless_headers(f"{tol:g}", metric)
    parts.append(markdown_table(summary, columns, headers))
    parts.append("### Paired comparisons at the Table 1 rates (test split, matched runs, verdicts per family)\n")
    parts.append(paired_note(tables.paired) + "\n")
    shown = [
        {
            **r,
            "family": paired_family(r),
            "n": n_text(int(r["n"]), int(r.get("rows") or 0), int(r.get("copies") or 0)),
            "ci": _interval(r),
            "p_holm": f"{float(r['p_holm']):.3g}",
        }
        for r in tables.paired
    ]
    parts.append(
        markdown_table(
            shown,
            ["family", "model", "a", "b", "n", "difference", "ci", "p_holm", "verdict"],
            ["family", "model", "A", "B", "n", "mean A − B", "simultaneous CI", "Holm p", "verdict"],
        )
    )
    parts.append(f"_Method:_ {CLUSTERED_METHOD_NOTE}\n")
    parts.append(f"_Lossless rates:_ {LOSSLESS_NOTE}\n")
    return "\n".join(parts)


def _interval(row: Row) -> str:
    return interval_text(row.get("low"), row.get("high"), 3)
