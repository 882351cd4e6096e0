"""The report's HTML page: every section in reading order, with the definitions a reader needs."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from medprune.report.html import fmt, image_html, page, table_html
from medprune.report.tables import PAPER_TABLE1
from medprune.sweep.table import BASELINE, Row, format_rate

DEFINITIONS = (
    "<ul class='note'>"
    "<li><b>drop</b> = unpruned accuracy − pruned accuracy on the test split, absolute (0.05 = 5 percentage points); "
    "negative = pruning helped. Pruning is the paper's masked zeroing of the lowest-scored units.</li>"
    "<li><b>Table 1</b>: mean ± sample standard deviation (ddof = 1) of the drop over every curve in a cell "
    "(model × dataset); no ± when a cell holds one curve. The paper's values (4 datasets × 3 models) are beside ours."
    "</li><li><b>lossless rate</b>: the largest swept rate whose accuracy drop is ≤ the tolerance{contiguous}. "
    "<b>clinically lossless</b>: the same on the worst per-class recall drop (max over classes of recall lost).</li>"
    "<li><b>heatmap similarity</b>: Pearson correlation between the unpruned and the pruned model's LRP input "
    "relevance maps of the same test image (maps flattened; 1 = same pattern up to scale).</li>"
    "<li><b>controls</b>: random and weight-magnitude scores (data-free, sampling “none”); an attribution method is "
    "only useful where it beats them.</li></ul>"
)


def _paper_cell(method: Any, sampling: Any, index: int) -> str:
    entry = PAPER_TABLE1.get((str(method), str(sampling)))
    return "" if entry is None else f"{entry[index][0]:.3f} ± {entry[index][1]:.2f}"


def table1_display(summary: Sequence[Row], rates: Sequence[float], with_paper: bool = True) -> list[Row]:
    """Table 1 rows as text cells ``mean ± std`` (ours) beside the paper's value."""
    rows = []
    for row in summary:
        out: Row = {k: v for k, v in row.items() if "@" not in k}
        for index, rate in enumerate(rates):
            text = format_rate(rate)[:4]
            mean, std, n = row.get(f"mean@{text}"), row.get(f"std@{text}"), row.get(f"n@{text}")
            cell = "–" if not n else f"{mean:.3f}" + ("" if std != std else f" ± {std:.3f}")
            out[f"{text} ours"] = cell
            if with_paper:
                out[f"{text} paper"] = _paper_cell(row.get("method"), row.get("sampling"), index) if index < 4 else ""
        rows.append(out)
    return rows


def _sweep_summary(rows: Sequence[Row]) -> str:
    base = [r for r in rows if r["method"] == BASELINE]
    items = "".join(
        f"<li>{r['model']} on {r['dataset']} ({str(r['checkpoint'])[:8]}): unpruned accuracy {fmt(r['accuracy'])}, "
        f"balanced accuracy {fmt(r.get('balanced_accuracy'))}, AUROC {fmt(r.get('auroc'))}, "
        f"worst-class recall {fmt(r.get('worst_recall'))} (n = {r.get('n_test')})</li>"
        for r in base
    )
    curves = {(r["checkpoint"], r["method"], r["sampling"]) for r in rows if r["method"] != BASELINE}
    rates = sorted({float(r["rate"]) for r in rows})
    return (
        f"<p>{len(rows)} rows: {len(curves)} curves over {len(base)} model(s), rates {rates[0]:.2f}–"
        f"{rates[-1]:.2f} ({len(rates)} values).</p><ul>{items}</ul>"
    )


def _lossless_table(lossless: Sequence[Row], tolerances: Sequence[float]) -> str:
    columns = ["model", "dataset", "method", "sampling", "baseline_accuracy"]
    headers = list(columns)
    for tol in tolerances:
        columns += [f"lossless@{tol:g}", f"accuracy@lossless@{tol:g}", f"clinical@{tol:g}"]
        headers += [f"lossless rate (drop ≤ {tol:g})", "accuracy there", f"clinically lossless (≤ {tol:g})"]
    return table_html(lossless, columns, headers)


def _efficiency_table(rows: Sequence[Row]) -> str:
    def cell(row: Row, column: str) -> str:
        value = row.get(column)
        if column == "params" and value is not None:
            return f"{value / 1e6:.3f} M"
        if column == "macs" and value is not None:
            return f"{value / 1e6:.2f} M"
        if column == "speedup":
            return "" if value is None else f"{value:.2f}×"
        return fmt(value, 2)

    columns = ["model", "method", "sampling", "criterion", "rate", "params", "macs", "latency_ms", "speedup", "masks"]
    return table_html(rows, columns, [*columns[:7], "CPU latency (ms)", "speed-up", "masks"], cell)


class PageOptions(Protocol):
    """The report settings the page shows (:class:`medprune.runs.report.ReportConfig` has them)."""

    table1_rates: Sequence[float]
    contiguous: bool
    tolerances: Sequence[float]
    latency_batch: int


def render(
    config: PageOptions,
    rows: Sequence[Row],
    summary: Sequence[Row],
    clinical: Sequence[Row],
    lossless: Sequence[Row],
    efficiency: Sequence[Row],
    curve_paths: Sequence[Path],
    heat_paths: Sequence[Path],
    similarity: Sequence[Row],
    notes: Sequence[str],
) -> str:
    """The full HTML document (PNG files are embedded)."""
    rates = list(config.table1_rates)
    contiguous = ", with every smaller swept rate within it too" if config.contiguous else ""
    sections = [
        ("What was swept", _sweep_summary(rows)),
        (
            "Table 1: accuracy drop at fixed pruning rates (ours beside the paper)",
            table_html(table1_display(list(summary), rates)),
        ),
        ("Worst-class recall drop at the same rates", table_html(table1_display(list(clinical), rates, False))),
        ("Lossless pruning rates", _lossless_table(lossless, config.tolerances)),
        ("Accuracy vs pruning rate (Fig. 2 style)", "".join(image_html(p) for p in curve_paths)),
    ]
    if efficiency:
        sections.append(
            (
                "Physically pruned models: parameters, MACs (per image), CPU latency",
                "<p class='note'>Latency: median of timed forward passes, batch "
                f"{config.latency_batch}, on this machine's CPU. “coupled for removal”: the model has "
                "residual couplings the sweep did not impose, so physical removal uses coupled masks at the "
                "same rate. On a machine shared with other jobs latency is noisy (a speed-up below 1 is "
                "noise, not a slowdown); MACs and parameters are exact.</p>" + _efficiency_table(efficiency),
            )
        )
    if heat_paths:
        mean = {}
        for s in similarity:
            if format_rate(s["rate"]) in (format_rate(0.5),):
                mean[s["label"]] = s["pearson_mean"]
        text = ", ".join(f"{k}: {fmt(v, 2)}" for k, v in sorted(mean.items()))
        sections.append(
            (
                "Do explanations survive pruning? LRP heatmaps before and after",
                f"<p>Mean Pearson r of heatmaps at rate 0.50: {text}.</p>" + "".join(image_html(p) for p in heat_paths),
            )
        )
    sections.append(("Definitions", DEFINITIONS.format(contiguous=contiguous)))
    if notes:
        sections.append(("Notes", "<ul>" + "".join(f"<li>{n}</li>" for n in notes) + "</ul>"))
    return page("medprune report: interpretability-aware pruning", sections)
