"""The report's HTML page: every section in reading order, with the definitions a reader needs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from medprune.report.html import fmt, image_html, page, table_html
from medprune.report.tables import PAPER_TABLE1
from medprune.stats import METHOD_NOTE
from medprune.sweep.table import BASELINE, RECOVERY_FIELDS, Row, format_rate

DEFINITIONS = (
    "<ul class='note'>"
    "<li><b>splits</b>: every choice (lossless rate, best curve, deployed rate) is made on the <b>validation</b> "
    "split; Table 1, the curves, the paired comparisons and the numbers reported at chosen points are on the "
    "<b>test</b> split (each heading says which).</li>"
    "<li><b>drop</b> = unpruned − pruned metric on the same split, absolute (0.05 = 5 percentage points); negative = "
    "pruning helped. Pruning is the paper's masked zeroing of the lowest-scored units.</li>"
    "<li><b>rate</b>: the achieved fraction of units removed (coupled members counted individually); Table 1 at a "
    "target rate uses each run's row whose achieved rate is nearest.</li>"
    "<li><b>run</b>: one (training checkpoint, selection seed); <b>n</b> = runs in a cell; † marks n &lt; 3.</li>"
    "<li><b>setting</b> = scope/normalize/sign/recalibrate; <b>paper</b> = global/none/signed/none; "
    "<b>recalibrate bn</b>: BatchNorm statistics re-estimated on training images after masking.</li>"
    "<li><b>finetune_epochs</b> / <b>distill</b> (labels <b>+ftE</b>, <b>+kd</b>): each pruned model fine-tuned E "
    "epochs with the pruned units held at exactly zero, distilled from the unpruned model for +kd; 0 / false is the "
    "paper (masking only). Rate 0 stays the unpruned model.</li>"
    "<li><b>lossless rate</b>: the largest swept rate whose validation drop of the criterion metric is ≤ the "
    "tolerance{contiguous}; <b>confirmed</b>: the test drop at that rate is within the tolerance too. "
    "<b>clinically lossless</b>: the same on the worst per-class recall drop.</li>"
    "<li><b>heatmap similarity</b>: Pearson correlation between the unpruned and the pruned model's LRP input "
    "relevance maps of the same test image (maps flattened; 1 = same pattern up to scale).</li>"
    "<li><b>controls</b>: random and weight-magnitude scores (data-free, sampling “none”) and the other controls, "
    "run through the same setting as the methods; an attribution method is only useful where it beats them.</li>"
    "</ul>"
)


@dataclass
class ReportTables:
    """The computed tables a report page shows (each a list of rows).

    Attributes:
        rows: the results table. table1: accuracy drop at target rates (test). table1_metric: drop of the lossless
        metric (test; empty when it is accuracy). clinical: worst-class recall drop (test). lossless: per run, chosen
        on val, confirmed on test. summary: lossless rates per line. paired: paired comparisons (test).
        efficiency, similarity: measured sections (may be empty). metric: the lossless metric.
    """

    rows: Sequence[Row]
    table1: Sequence[Row]
    table1_metric: Sequence[Row]
    clinical: Sequence[Row]
    lossless: Sequence[Row]
    summary: Sequence[Row]
    paired: Sequence[Row]
    efficiency: Sequence[Row] = field(default_factory=list)
    similarity: Sequence[Row] = field(default_factory=list)
    metric: str = "accuracy"


def _paper_cell(method: Any, sampling: Any, index: int) -> str:
    entry = PAPER_TABLE1.get((str(method), str(sampling)))
    return "" if entry is None else f"{entry[index][0]:.3f} ± {entry[index][1]:.2f}"


def table1_cell(row: Row, text: str) -> str:
    """``mean ± sd [low, high] n=k`` of one Table 1 cell (``†`` when n < 3)."""
    mean, std, n = row.get(f"mean@{text}"), row.get(f"std@{text}"), row.get(f"n@{text}")
    if not n:
        return "–"
    cell = f"{mean:.3f}" + ("" if std is None or std != std else f" ± {std:.3f}")
    low, high = row.get(f"low@{text}"), row.get(f"high@{text}")
    if low is not None and high is not None:
        cell += f" [{low:.3f}, {high:.3f}]"
    return cell + f" n={n}" + (" †" if n < 3 else "")


def table1_display(summary: Sequence[Row], rates: Sequence[float], with_paper: bool = True) -> list[Row]:
    """Table 1 rows as text cells ``mean ± sd [95% CI] n`` (ours) beside the paper's value."""
    rows = []
    for row in summary:
        out: Row = {k: v for k, v in row.items() if "@" not in k}
        for index, rate in enumerate(rates):
            text = format_rate(rate)[:4]
            out[f"{text} ours"] = table1_cell(row, text)
            out[f"{text} achieved"] = fmt(row.get(f"achieved@{text}"), 3)
            if with_paper:
                out[f"{text} paper"] = _paper_cell(row.get("method"), row.get("sampling"), index) if index < 4 else ""
        rows.append(out)
    return rows


def _sweep_summary(rows: Sequence[Row]) -> str:
    base = [r for r in rows if r["method"] == BASELINE]
    items = "".join(
        f"<li>{r['model']} on {r['dataset']} ({str(r['checkpoint'])[:8]}), {r.get('split') or 'test'} split: "
        f"unpruned accuracy {fmt(r['accuracy'])}, balanced accuracy {fmt(r.get('balanced_accuracy'))}, "
        f"AUROC {fmt(r.get('auroc'))}, worst-class recall {fmt(r.get('worst_recall'))} "
        f"(n = {r.get('n_images', r.get('n_test'))})</li>"
        for r in base
    )
    fields = ("checkpoint", "method", "sampling", "seed", "scope", "normalize", "sign", "recalibrate", *RECOVERY_FIELDS)
    curves = {tuple(r.get(f) for f in fields) for r in rows if r["method"] != BASELINE}
    seeds = sorted({r.get("seed") for r in rows if r["method"] != BASELINE}, key=str)
    rates = sorted({float(r["rate"]) for r in rows})
    return (
        f"<p>{len(rows)} rows: {len(curves)} curves over {len(base)} baseline(s), selection seeds {seeds}, target "
        f"rates {rates[0]:.2f}–{rates[-1]:.2f} ({len(rates)} values), each evaluated on validation and test.</p>"
        f"<ul>{items}</ul>"
    )


def _lossless_table(summary: Sequence[Row], tolerances: Sequence[float]) -> str:
    columns = ["dataset", "method", "sampling", "scope", "normalize", "sign", "recalibrate", *RECOVERY_FIELDS, "n"]
    headers = list(columns)
    for tol in tolerances:
        label = f"{tol:g}"
        columns += [f"achieved@{label}", f"ci@{label}", f"test_drop@{label}", f"confirmed@{label}"]
        headers += [f"lossless rate ≤ {label} (val)", "95% CI", "test drop there", "confirmed on test"]

    def cell(row: Row, column: str) -> str:
        if column.startswith("ci@"):
            label = column[3:]
            low, high = row.get(f"low@{label}"), row.get(f"high@{label}")
            return "–" if low is None or high is None else f"[{low:.2f}, {high:.2f}]"
        if column.startswith("confirmed@"):
            return f"{row[column]:.0%}"
        if column == "n":
            return f"{row['n']}" + (" †" if row["n"] < 3 else "")
        return fmt(row.get(column))

    return table_html(summary, columns, headers, cell)


def _paired_table(paired: Sequence[Row]) -> str:
    columns = ["dataset", "scope", "normalize", "sign", "recalibrate", *RECOVERY_FIELDS, "rate", "a", "b"]
    columns += ["metric", "n", "difference", "low", "high", "verdict"]
    headers = [*columns[:-3], "95% CI low", "95% CI high", "verdict (A vs B)"]
    return table_html(paired, columns, headers)


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

    columns = ["model", "method", "sampling", "setting", "seed", "criterion", "rate", "params", "macs", "latency_ms"]
    columns += ["speedup", "masks"]
    return table_html(rows, columns, [*columns[:9], "CPU latency (ms)", "speed-up", "masks"], cell)


class PageOptions(Protocol):
    """The report settings the page shows (:class:`medprune.runs.report.ReportConfig` has them)."""

    table1_rates: Sequence[float]
    contiguous: bool
    tolerances: Sequence[float]
    latency_batch: int


def render(
    config: PageOptions,
    tables: ReportTables,
    curve_paths: Sequence[Path],
    heat_paths: Sequence[Path],
    notes: Sequence[str],
    extra: Sequence[tuple[str, str]] = (),
) -> str:
    """The full HTML document (PNG files are embedded); ``extra`` ``(heading, html)`` sections come first (a study puts
    its claims there)."""
    rates = list(config.table1_rates)
    contiguous = ", with every smaller swept rate within it too" if config.contiguous else ""
    metric = tables.metric.replace("_", " ")
    sections = [
        *extra,
        ("What was swept", _sweep_summary(tables.rows)),
        (
            "Table 1 (test split): accuracy drop at fixed pruning rates, as the paper (ours beside the paper)",
            f"<p class='note'>{METHOD_NOTE}</p>" + table_html(table1_display(list(tables.table1), rates)),
        ),
    ]
    if tables.table1_metric:
        sections.append(
            (
                f"Table 1 (test split): {metric} drop at the same rates",
                table_html(table1_display(list(tables.table1_metric), rates, False)),
            )
        )
    sections += [
        (
            "Worst-class recall drop at the same rates (test split)",
            table_html(table1_display(list(tables.clinical), rates, False)),
        ),
        (
            f"Lossless pruning rates: chosen on validation ({metric}), confirmed on test",
            _lossless_table(tables.summary, config.tolerances),
        ),
        ("Paired comparisons at the Table 1 rates (test split, matched runs)", _paired_table(tables.paired)),
        (
            "Accuracy and AUROC vs achieved pruning rate (test split, Fig. 2 style)",
            "".join(image_html(p) for p in curve_paths),
        ),
    ]
    if tables.efficiency:
        sections.append(
            (
                "Physically pruned models at the validation lossless rates: parameters, MACs (per image), CPU latency",
                "<p class='note'>Latency: median of timed forward passes, batch "
                f"{config.latency_batch}, on this machine's CPU. “coupled for removal”: the model has "
                "residual couplings the sweep did not impose, so physical removal uses coupled masks at the "
                "same rate. On a machine shared with other jobs latency is noisy (a speed-up below 1 is "
                "noise, not a slowdown); MACs and parameters are exact.</p>" + _efficiency_table(tables.efficiency),
            )
        )
    if heat_paths:
        mean = {}
        for s in tables.similarity:
            if format_rate(s["rate"]) in (format_rate(0.5),):
                mean[s["label"]] = s["pearson_mean"]
        text = ", ".join(f"{k}: {fmt(v, 2)}" for k, v in sorted(mean.items()))
        sections.append(
            (
                "Do explanations survive pruning? LRP heatmaps before and after (test images)",
                f"<p>Mean Pearson r of heatmaps at rate 0.50: {text}.</p>" + "".join(image_html(p) for p in heat_paths),
            )
        )
    sections.append(("Definitions", DEFINITIONS.format(contiguous=contiguous)))
    if notes:
        sections.append(("Notes", "<ul>" + "".join(f"<li>{n}</li>" for n in notes) + "</ul>"))
    return page("medprune report: interpretability-aware pruning", sections)
