"""The report's tables as Markdown (``results.md``): for docs/results.md and anyone reading results in a terminal.

Every table heading names its split: Table 1 and the paired verdicts are on test; lossless rates are chosen on
validation and confirmed on test.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from medprune.report.html import fmt
from medprune.report.page import ReportTables, table1_cell
from medprune.stats import METHOD_NOTE
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
    text = setting_text(row)
    name = row.get("protocol") or ""
    return f"{name} ({text})" if name else text


def _table1(rows: Sequence[Row], rates: Sequence[float]) -> str:
    labels = [format_rate(r)[:4] for r in rates]
    shown = [
        {
            "line": f"{r['method']} / {r['sampling']}",
            "setting": _setting(r),
            **{label: table1_cell(r, label) for label in labels},
            **{f"ach {label}": fmt(r.get(f"achieved@{label}"), 2) for label in labels},
        }
        for r in rows
    ]
    columns = ["line", "setting", *labels, *[f"ach {label}" for label in labels]]
    headers = ["method / sampling", "setting", *[f"drop @{label}" for label in labels]]
    headers += [f"achieved @{label}" for label in labels]
    return markdown_table(shown, columns, headers)


def results_markdown(
    tables: ReportTables, rates: Sequence[float], tolerances: Sequence[float], title: str = "Results"
) -> str:
    """Markdown of Table 1 per protocol (test), lossless rates (val -> test) and the paired verdicts (test)."""
    parts = [f"## {title}\n"]
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
    for protocol in protocols:
        name = protocol or "other settings"
        rows = [r for r in tables.table1 if str(r.get("protocol") or "") == protocol]
        parts.append(f"### Table 1, {name}: accuracy drop (test split; mean ± sd [95% CI] n; † n < 3)\n")
        parts.append(_table1(rows, rates))
        metric_rows = [r for r in tables.table1_metric if str(r.get("protocol") or "") == protocol]
        if metric_rows:
            parts.append(f"### Table 1, {name}: {tables.metric} drop (test split)\n")
            parts.append(_table1(metric_rows, rates))
    parts.append(f"### Lossless rates on {tables.metric}: chosen on validation, confirmed on test\n")
    summary = []
    for row in tables.summary:
        out: Row = {"line": f"{row['method']} / {row['sampling']}", "setting": _setting(row), "n": str(row["n"])}
        for tol in tolerances:
            label = f"{tol:g}"
            low, high = row.get(f"low@{label}"), row.get(f"high@{label}")
            interval = "" if low is None or high is None else f" [{low:.2f}, {high:.2f}]"
            out[f"rate {label}"] = f"{fmt(row[f'achieved@{label}'], 2)}{interval}"
            out[f"test {label}"] = f"{fmt(row[f'test_drop@{label}'])} ({row[f'confirmed@{label}']:.0%} confirmed)"
        summary.append(out)
    columns = ["line", "setting", "n"]
    for tol in tolerances:
        columns += [f"rate {tol:g}", f"test {tol:g}"]
    headers = ["method / sampling", "setting", "runs"]
    for tol in tolerances:
        headers += [f"lossless rate, drop ≤ {tol:g} (val) [95% CI]", "test drop there (runs within tolerance)"]
    parts.append(markdown_table(summary, columns, headers))
    parts.append("### Paired comparisons at the Table 1 rates (test split, matched checkpoint x seed runs)\n")
    verdicts = Counter(str(r["verdict"]) for r in tables.paired)
    parts.append(", ".join(f"{k}: {v}" for k, v in sorted(verdicts.items())) + "\n")
    shown = [{**r, "setting": _setting(r), "ci": _interval(r)} for r in tables.paired]
    parts.append(
        markdown_table(
            shown,
            ["dataset", "setting", "rate", "a", "b", "metric", "n", "difference", "ci", "verdict"],
            ["dataset", "setting", "rate", "A", "B", "metric", "runs", "mean A − B", "95% CI", "verdict"],
        )
    )
    parts.append(f"_Method:_ {METHOD_NOTE}\n")
    return "\n".join(parts)


def _interval(row: Row) -> str:
    low, high = row.get("low"), row.get("high")
    return "–" if low is None or high is None else f"[{low:.3f}, {high:.3f}]"
