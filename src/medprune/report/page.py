"""The report's HTML page: every section in reading order, with the definitions a reader needs."""

from __future__ import annotations

import html
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from medprune.report.clustered import LOSSLESS_NOTE
from medprune.report.html import details, fmt, image_html, page, table_html
from medprune.report.summary import Answer, answer_html, interval
from medprune.report.tables import PAPER_TABLE1, TABLE1_RATES, protocol_label
from medprune.stats import CLUSTERED_METHOD_NOTE, FEW_CLUSTERS, VERDICT_NOTE, VERDICTS
from medprune.sweep.protocols import setting_text
from medprune.sweep.table import BASELINE, RECOVERY_FIELDS, Row, format_rate

#: What Table 1's cells hold, for a heading or a note.
TABLE1_CELL = (
    "mean over checkpoints [95% clustered CI] at the column's rate (the achieved rate beside it when it differs), "
    "n = training checkpoints (runs behind them); "
    f"† fewer than {FEW_CLUSTERS} checkpoints (the interval is a lower bound on the uncertainty)"
)

DEFINITIONS = (
    "<ul class='note'>"
    "<li><b>splits</b>: every choice (lossless rate, best curve, deployed rate) is made on the <b>validation</b> "
    "split; Table 1, the curves, the paired comparisons and the numbers reported at chosen points are on the "
    "<b>test</b> split (each heading says which).</li>"
    "<li><b>drop</b> = unpruned − pruned metric on the same split, absolute (0.05 = 5 percentage points); negative = "
    "pruning helped. Pruning is the paper's masked zeroing of the lowest-scored units.</li>"
    "<li><b>rate</b>: the achieved fraction of units removed (coupled members counted individually); a column "
    "labelled with a rate holds only rows at that rate (nominal rate, or achieved rate within 0.025 of it): a rate "
    "the sweep did not run is left out, never filled from a neighbouring rate.</li>"
    "<li><b>run</b>: one (training checkpoint, selection seed). <b>n</b> = independent training checkpoints behind "
    "a number (the effective n), shown beside the runs (rows) behind it; runs of one checkpoint with identical "
    "predictions (a deterministic criterion's selection seeds) are copies and count once. † marks fewer than "
    f"{FEW_CLUSTERS} checkpoints.</li>"
    "<li><b>setting</b> = scope/normalize/sign/recalibrate; <b>paper</b> = global/none/signed/none with residual "
    "writers pruned independently, as in the paper; <b>+coupled</b>: residual writers pruned together (a coupled "
    "set ranked by the sum of its members' scores, so not the paper's protocol); "
    "<b>recalibrate bn</b>: BatchNorm statistics re-estimated on training images after masking.</li>"
    "<li><b>finetune_epochs</b> / <b>distill</b> (labels <b>+ftE</b>, <b>+kd</b>): each pruned model fine-tuned E "
    "epochs with the pruned units held at exactly zero, distilled from the unpruned model for +kd; 0 / false is the "
    "paper (masking only). Rate 0 stays the unpruned model.</li>"
    "<li><b>lossless rate</b>: the largest swept rate whose validation drop of the criterion metric is ≤ the "
    "tolerance{contiguous}; <b>test-confirmed rate</b>: that rate if its test drop is within the tolerance too, else "
    "the largest smaller rate of the curve whose test drop is; <b>confirmed on test</b>: of the runs whose lossless "
    "rate is above 0, how many keep it on test (a rate of 0 has nothing to confirm). "
    "<b>clinically lossless</b>: the same on the worst per-class recall drop.</li>"
    "<li><b>verdicts</b> (paired comparisons): <b>better</b> / <b>worse</b> when the family-corrected test excludes "
    "no difference, <b>equivalent</b> when the difference lies within the equivalence margin, else "
    "<b>inconclusive</b> (not evidence of no effect). A <b>family</b> is every method-vs-control comparison of one "
    "dataset, protocol, rate and metric, corrected together (Holm).</li>"
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


def n_text(n: int, rows: int, copies: int = 0) -> str:
    """The effective n beside the rows: ``5 ckpt (10 rows)``, ``2 ckpt (2 rows; 4 copies) †``."""
    extra = f"; {copies} copies" if copies else ""
    return f"{n} ckpt ({rows} rows{extra})" + (" †" if n < FEW_CLUSTERS else "")


def table1_cell(row: Row, text: str) -> str:
    """``mean ± sd [low, high] n=k ckpt (r rows)`` of one Table 1 cell (``†`` with fewer than
    :data:`~medprune.stats.FEW_CLUSTERS` checkpoints; ``no <rate>`` when no run has a row at that rate)."""
    mean, std, n = row.get(f"mean@{text}"), row.get(f"std@{text}"), row.get(f"n@{text}")
    if not n:
        return f"no {text}"
    cell = "–" if mean is None or mean != mean else f"{mean:.3f}"
    cell += "" if std is None or std != std else f" ± {std:.3f}"
    low, high = row.get(f"low@{text}"), row.get(f"high@{text}")
    if low is not None and high is not None:
        cell += f" [{low:.3f}, {high:.3f}]"
    return f"{cell} n={n_text(int(n), int(row.get(f'rows@{text}') or 0))}"


def swept_rates(summary: Sequence[Row], rates: Sequence[float]) -> list[float]:
    """The ``rates`` at which some line of ``summary`` has a row (a rate nobody ran is left out of the table)."""
    return [r for r in rates if any(row.get(f"n@{format_rate(r)[:4]}") for row in summary)]


def missing_rates_note(summary: Sequence[Row], rates: Sequence[float]) -> str:
    """A sentence naming the rates left out because no run has a row there (``""`` when none)."""
    missing = [format_rate(r)[:4] for r in rates if r not in swept_rates(summary, rates)]
    return (
        f"No run has a row at rate {', '.join(missing)}: left out (never filled from another rate)." if missing else ""
    )


def table1_display(summary: Sequence[Row], rates: Sequence[float], with_paper: bool = True) -> list[Row]:
    """Table 1 rows as one-line text cells at the swept ``rates``: the line, its protocol (setting), its effective n,
    then per rate ``mean [95% CI]`` (test), with the achieved rate when it is not the column's and the cell's n when
    it is not the line's; the paper's value beside ours (``with_paper``)."""
    rows = []
    for row in summary:
        sampling = str(row.get("sampling"))
        out: Row = {
            "line": f"{row.get('method')}" + ("" if sampling == "none" else f"/{sampling}"),
            "protocol": f"{protocol_label(row)} ({setting_text(row)})",
            "n": n_text(int(row.get("n") or 0), int(row.get("rows") or 0), int(row.get("copies") or 0)),
        }
        for rate in swept_rates(summary, rates):
            text = format_rate(rate)[:4]
            out[f"drop at rate {text} (test) [95% CI]"] = compact_cell(row, text)
            if with_paper:
                paper_texts = [format_rate(r) for r in TABLE1_RATES]
                index = paper_texts.index(format_rate(rate)) if format_rate(rate) in paper_texts else None
                out[f"paper at {text}"] = (
                    "" if index is None else _paper_cell(row.get("method"), row.get("sampling"), index)
                )
        rows.append(out)
    return rows


def compact_cell(row: Row, text: str) -> str:
    """One Table 1 cell in one line: ``0.003 [-0.005, 0.016]``, ``(achieved 0.31)`` when the rows' mean achieved rate
    is off the column's rate by more than 0.005, ``n=2`` when fewer checkpoints than the line's have a row there,
    ``no row at 0.15`` when none has."""
    mean, n = row.get(f"mean@{text}"), row.get(f"n@{text}")
    if not n:
        return f"no row at {text}"
    cell = interval(mean, row.get(f"low@{text}"), row.get(f"high@{text}"), 3)
    reached = row.get(f"achieved@{text}")
    if reached is not None and abs(float(reached) - float(text)) > 0.005:
        cell += f" (achieved {float(reached):.2f})"
    if int(n) != int(row.get("n") or 0):
        cell += f" n={n}"
    return cell


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


def interval_text(low: float | None, high: float | None, digits: int = 2) -> str:
    """``[low, high]`` or an en dash without bounds."""
    return "–" if low is None or high is None else f"[{low:.{digits}f}, {high:.{digits}f}]"


def lossless_cells(row: Row, label: str) -> dict[str, str]:
    """Text cells of one tolerance of a lossless summary row: the rate with its CI, the test-confirmed rate with its
    CI, the mean test drop at the chosen rates, and how many chosen rates held on test."""
    chosen = int(row.get(f"chosen@{label}") or 0)
    confirmed = row.get(f"confirmed@{label}")
    held = round(float(confirmed) * chosen) if confirmed is not None and chosen else 0
    return {
        "rate": f"{fmt(row.get(f'achieved@{label}'), 2)} "
        f"{interval_text(row.get(f'low@{label}'), row.get(f'high@{label}'))}",
        "confirmed_rate": (
            f"{fmt(row.get(f'confirmed_rate@{label}'), 2)} "
            f"{interval_text(row.get(f'confirmed_low@{label}'), row.get(f'confirmed_high@{label}'))}"
        ),
        "test_drop": fmt(row.get(f"test_drop@{label}")) if chosen else "–",
        "held": f"{held} of {chosen}" if chosen else "– (rate 0: nothing to confirm)",
    }


def lossless_headers(label: str, metric: str) -> list[str]:
    """Headers of :func:`lossless_cells`' four columns."""
    return [
        f"lossless rate, {metric} drop ≤ {label} (val) [95% CI]",
        "test-confirmed rate [95% CI]",
        "test drop at the val rate",
        "runs whose rate > 0 held on test",
    ]


def _lossless_table(summary: Sequence[Row], tolerances: Sequence[float], metric: str) -> str:
    columns = ["dataset", "model", "method", "sampling", "protocol", "n"]
    headers = ["dataset", "model", "method", "sampling", "protocol", "n"]
    shown = []
    for row in summary:
        out: Row = {c: row.get(c) for c in columns[:4]}
        out["protocol"] = f"{protocol_label(row)}"
        out["n"] = n_text(int(row["n"]), int(row.get("rows") or row["n"]), int(row.get("copies") or 0))
        for tol in tolerances:
            out.update({f"{k}@{tol:g}": v for k, v in lossless_cells(row, f"{tol:g}").items()})
        shown.append(out)
    for tol in tolerances:
        columns += [f"{k}@{tol:g}" for k in ("rate", "confirmed_rate", "test_drop", "held")]
        headers += lossless_headers(f"{tol:g}", metric)
    return table_html(shown, columns, headers, lambda row, column: str(row.get(column, "")))


def paired_family(row: Row) -> str:
    """The family of a paired verdict with its size and the confidence of its simultaneous intervals."""
    return f"{row['family']} (m = {row['family_size']}, {100 * float(row['confidence']):.2f}% intervals)"


def _paired_table(paired: Sequence[Row]) -> str:
    def cell(row: Row, column: str) -> str:
        if column == "n":
            return n_text(int(row["n"]), int(row.get("rows") or 0), int(row.get("copies") or 0))
        if column == "interval":
            return interval_text(row.get("low"), row.get("high"), 3)
        if column == "family":
            return paired_family(row)
        if column in ("p_holm", "tost_p_holm"):
            return f"{float(row[column]):.3g}"
        return fmt(row.get(column))

    columns = ["family", "model", "a", "b", "n", "difference", "interval", "p_holm", "tost_p_holm", "verdict"]
    headers = ["family", "model", "A", "B", "n", "mean A − B", "simultaneous CI", "Holm p", "TOST Holm p"]
    return table_html(paired, columns, [*headers, "verdict (A vs B)"], cell)


def _efficiency_table(rows: Sequence[Row]) -> str:
    """Parameters and MACs of the physically pruned models, with the fraction removed from their checkpoint's
    unpruned model; latency stays in the CSV (a median without spread on a shared CPU is not shown)."""
    unpruned = {r["checkpoint"]: r for r in rows if r["method"] == "unpruned"}

    def cell(row: Row, column: str) -> str:
        value = row.get(column)
        base = unpruned.get(row.get("checkpoint"))
        if column in ("params", "macs") and value is not None:
            text = f"{value / 1e6:.3f} M" if column == "params" else f"{value / 1e6:.2f} M"
            if base is not None and row["method"] != "unpruned" and base.get(column):
                text += f" (−{100 * (1 - value / base[column]):.1f}%)"
            return text
        if column == "rate":
            return "0" if value in (None, 0, 0.0) else f"{float(value):.2f}"
        return fmt(value, 2)

    columns = ["model", "method", "sampling", "setting", "seed", "criterion", "rate", "params", "macs", "masks"]
    headers = [*columns[:5], "rate chosen on", "rate (nominal)", "parameters", "MACs per image", "masks"]
    return table_html(rows, columns, headers, cell)


def paired_matrix(paired: Sequence[Row]) -> list[tuple[str, str]]:
    """The paired verdicts as matrices, one per (dataset, model, protocol, metric): a row per method-vs-control pair,
    a column per rate, each cell ``verdict mean A − B`` (test). Returns ``(title, html)`` pairs."""
    groups: dict[tuple[str, ...], list[Row]] = {}
    for row in paired:
        key = (str(row.get("dataset")), str(row.get("model")), str(row["protocol"]), str(row["metric"]))
        groups.setdefault(key, []).append(row)
    result = []
    for (dataset, model, protocol, metric), members in groups.items():
        rates = sorted({format_rate(r["rate"])[:4] for r in members})
        pairs: dict[tuple[str, str], dict[str, Row]] = {}
        for row in members:
            pairs.setdefault((str(row["a"]), str(row["b"])), {})[format_rate(row["rate"])[:4]] = row
        head = "<th>A vs B (n = checkpoints)</th>" + "".join(f"<th>rate {r}</th>" for r in rates)
        body = []
        for (a, b), cells in sorted(pairs.items()):
            first = next(iter(cells.values()))
            label = f"{a} vs {b.split('/')[0]} ({first['n']} ckpt)"
            tds = []
            for rate in rates:
                row = cells.get(rate)
                if row is None:
                    tds.append("<td>–</td>")
                    continue
                verdict = str(row["verdict"])
                tds.append(f"<td class='{verdict}'>{verdict} {float(row['difference']):+.3f}</td>")
            body.append(f"<tr><td>{html.escape(label)}</td>{''.join(tds)}</tr>")
        title = f"{model} on {dataset}, {protocol}, test {metric.replace('_', ' ')}"
        table = f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
        result.append((title, table))
    return result


def paired_note(paired: Sequence[Row], method: bool = True) -> str:
    """What the paired verdicts are (margin, families, what is compared) and how many of each, as text; ``method``:
    with :data:`~medprune.stats.VERDICT_NOTE` (how a verdict is reached) at the end."""
    if not paired:
        return "No method and control share a run at these rates: no paired comparison."
    margins = sorted({float(r["margin"]) for r in paired})
    counts = Counter(str(r["verdict"]) for r in paired)
    families = len({r["family"] for r in paired})
    floors = {r["family"]: n for r in paired for n in str(r.get("note") or "").split("; ") if "attainable" in n}
    example = next(iter(floors.items()), None)
    warning = (
        f" In {len(floors)} of these families the resamples cannot resolve a corrected difference (e.g. "
        f"'{example[0]}': {example[1]}), so the absence of 'better' / 'worse' there is not evidence of no difference."
        if example
        else ""
    )
    return (
        f"{len(paired)} comparisons in {families} families: "
        + ", ".join(f"{k} {counts[k]}" for k in VERDICTS if counts[k])
        + "."
        + warning
        + f" Equivalence margin ±{', '.join(f'{m:g}' for m in margins)} of the metric (report option "
        "equivalence_margin). Every attribution method is compared with every control on the runs both have "
        "(same checkpoint, selection seed and test images); methods are not compared among themselves here."
        + (" " + VERDICT_NOTE if method else "")
    )


class PageOptions(Protocol):
    """The report settings the page shows (:class:`medprune.runs.report.ReportConfig` has them)."""

    table1_rates: Sequence[float]
    contiguous: bool
    tolerances: Sequence[float]
    latency_batch: int


def _similarity_table(similarity: Sequence[Row]) -> str:
    """Mean Pearson r per curve (rows) and rate (columns)."""
    rates = sorted({format_rate(r["rate"])[:4] for r in similarity})
    lines: dict[str, dict[str, Any]] = {}
    for row in similarity:
        lines.setdefault(str(row["label"]), {})[format_rate(row["rate"])[:4]] = row["pearson_mean"]
    shown = [{"curve": label, **{f"r @{k}": fmt(v.get(k), 2) for k in rates}} for label, v in sorted(lines.items())]
    return table_html(shown, cell=lambda row, column: str(row.get(column, "")))


#: Rows above which a folded table stays in its CSV only (the page embeds everything it shows: a study's thousands of
#: paired rows would weigh more than its figures).
FOLD_LIMIT = 400


def folded(summary: str, rows: Sequence[Row], table: Callable[[Sequence[Row]], str], link: str) -> str:
    """``table(rows)`` folded under ``summary`` with its CSV linked; only the link when there are more than
    :data:`FOLD_LIMIT` rows."""
    if len(rows) > FOLD_LIMIT:
        return (
            f"<p>{html.escape(summary)}: {len(rows)} rows, more than the page shows ({FOLD_LIMIT}), in "
            f"<a href='{html.escape(link)}'>{html.escape(link)}</a>.</p>"
        )
    return details(html.escape(summary), table(rows), link)


def render(
    config: PageOptions,
    tables: ReportTables,
    curve_paths: Sequence[Path],
    heat_paths: Sequence[Path],
    notes: Sequence[str],
    extra: Sequence[tuple[str, str]] = (),
    *,
    answers: Sequence[Answer] = (),
    key_figures: Sequence[Path | None] = (),
    recall_figures: Sequence[Path] = (),
) -> str:
    """The full HTML document (PNG files are embedded): ``extra`` ``(heading, html)`` sections first (a study puts its
    claims there), then the answer (:mod:`medprune.report.summary`) with the key figure, the other figures, and the
    tables last, long ones folded with their CSV linked."""
    rates = list(config.table1_rates)
    contiguous = ", with every smaller swept rate within it too" if config.contiguous else ""
    metric = tables.metric.replace("_", " ")
    missing = missing_rates_note(tables.table1, rates)
    sections = list(extra)
    if answers:
        blocks = []
        for i, answer in enumerate(answers):
            blocks.append(answer_html(answer))
            figure = key_figures[i] if i < len(key_figures) else None
            if figure is not None:
                blocks.append(image_html(figure, f"key figure: {answer.model} on {answer.dataset}"))
        sections.append(
            (
                "The answer: how much can be pruned, with which method, how sure",
                "".join(blocks)
                + "<p class='note'>Lossless rates are chosen on validation; the figure, the confirmed rates and the "
                "paired verdicts are on test. Bands: 95% clustered bootstrap interval of the change from unpruned "
                "(checkpoints × seeds × test images). Methods solid, controls dashed.</p>",
            )
        )
    sections.append(("What was swept", _sweep_summary(tables.rows)))
    if recall_figures:
        sections.append(
            (
                "Per-class recall vs achieved pruning rate (test split; the answer's lines)",
                "".join(image_html(p) for p in recall_figures),
            )
        )
    if tables.paired:
        matrices = paired_matrix(tables.paired)
        shown = "".join(f"<h3>{html.escape(t)}</h3>{m}" for t, m in matrices[:2])
        rest = "".join(f"<h3>{html.escape(t)}</h3>{m}" for t, m in matrices[2:])
        sections.append(
            (
                "Paired comparisons with the controls at the Table 1 rates (test split, verdicts corrected per family)",
                f"<p class='note'>{html.escape(paired_note(tables.paired, method=False))}</p>"
                + details("How a verdict is reached", f"<p class='note'>{html.escape(VERDICT_NOTE)}</p>")
                + f"<div class='scroll'>{shown}</div>"
                + (details(f"{len(matrices) - 2} more matrices", rest) if rest else "")
                + folded(
                    f"All {len(tables.paired)} comparisons, one row each", tables.paired, _paired_table, "paired.csv"
                ),
            )
        )
    if heat_paths:
        sections.append(
            (
                "Do explanations survive pruning? LRP heatmaps of the answer's method and a control (test images)",
                "".join(image_html(p) for p in heat_paths)
                + details(
                    "Mean Pearson r of every curve's heatmaps with the unpruned model's, per rate",
                    _similarity_table(tables.similarity),
                    "heatmap_similarity.csv",
                ),
            )
        )
    sections.append(
        (
            "Every curve: accuracy and AUROC vs achieved pruning rate (test split; band: min–max over runs)",
            details(f"{len(curve_paths)} figures", "".join(image_html(p) for p in curve_paths)),
        )
    )
    sections.append(
        (
            f"Lossless pruning rates on {metric}, every line: chosen on validation, confirmed on test",
            details("How the intervals are computed", f"<p class='note'>{html.escape(LOSSLESS_NOTE)}</p>")
            + folded(
                f"{len(tables.summary)} lines",
                tables.summary,
                lambda rows: _lossless_table(rows, config.tolerances, metric),
                "lossless_summary.csv",
            ),
        )
    )
    tables_html = [
        details(
            "Table 1 (test split): accuracy drop at fixed pruning rates, ours beside the paper's",
            table_html(table1_display(list(tables.table1), rates)),
            "table1.csv",
        )
    ]
    if tables.table1_metric:
        tables_html.append(
            details(
                f"Table 1 (test split): {metric} drop at the same rates",
                table_html(table1_display(list(tables.table1_metric), rates, False)),
                f"table1_{tables.metric}.csv",
            )
        )
    tables_html.append(
        details(
            "Worst-class recall drop at the same rates (test split)",
            table_html(table1_display(list(tables.clinical), rates, False)),
            "table1_worst_class_recall.csv",
        )
    )
    sections.append(
        (
            "Table 1: drop at fixed pruning rates (test split)",
            f"<p class='note'>Cells: mean drop over checkpoints [95% clustered CI] at the column's rate; n = training "
            f"checkpoints (runs behind them). {html.escape(missing)}</p>"
            + details("How the intervals are computed", f"<p class='note'>{html.escape(CLUSTERED_METHOD_NOTE)}</p>")
            + "".join(tables_html),
        )
    )
    if tables.efficiency:
        sections.append(
            (
                "Physically pruned models at the validation lossless rates: parameters and MACs per image",
                "<p class='note'>“adjusted for removal”: physical removal uses the masks it can match at the same rate "
                "(residual writers the sweep did not couple are coupled; groups it cannot shrink exactly, such as "
                "LayerNorm'd or concatenated channels, are kept whole; grouped convolutions lose as many channels in "
                "every group). MACs and parameters are exact. CPU latency "
                f"(median of timed passes, batch {config.latency_batch}) is in efficiency.csv, not shown: it was "
                "timed once per model on a shared machine, without a spread.</p>"
                + details(f"{len(tables.efficiency)} models", _efficiency_table(tables.efficiency), "efficiency.csv"),
            )
        )
    sections.append(("Definitions", DEFINITIONS.format(contiguous=contiguous)))
    if notes:
        sections.append(("Notes", "<ul>" + "".join(f"<li>{n}</li>" for n in notes) + "</ul>"))
    return page("medprune report: interpretability-aware pruning", sections)
