"""The answer first: how much of the model can be removed, with which method, how sure, and what it would remove.

Per (dataset, model), :func:`answers` reads the report's tables (nothing is recomputed):

* the **recommended** run is :func:`medprune.report.tables.best_line` at the strictest tolerance (the line with the
  largest mean validation lossless rate, controls included, then its median run), the rule ``medprune demo``
  deploys with;
* the **key lines** are the lines of the recommended setting (protocol): every attribution method at the sampling of
  the best attribution line, and every control (data-free, sampling ``none``);
* per key line: its lossless rate on the report's lossless metric (validation, achieved, mean over distinct runs with
  its 95% clustered interval), the test-confirmed rate, the effective n (training checkpoints) and, for a method, its
  paired verdicts against the controls at the Table 1 rates (test);
* what pruning the recommended run at its lossless rate removes (units, parameters, MACs), read from the sweep's row
  of that run and rate (masked units; parameters and MACs as the sweep counted them under its couplings) and, when
  the report measured that very run physically, from the efficiency table.

>>> # for answer in answers(tables, 0.01): print(answer_markdown(answer))
"""

from __future__ import annotations

import html
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from medprune.options import NO_SAMPLING
from medprune.report.paired import CONTROLS, SETTING_GROUP
from medprune.report.tables import CURVE_FIELDS, best_line, on_split, protocol_label
from medprune.stats import FEW_CLUSTERS
from medprune.sweep.protocols import setting_text
from medprune.sweep.table import Row, format_rate

__all__ = ["Answer", "KeyLine", "answer_html", "answer_markdown", "answers", "interval", "key_rows", "line_name"]


@dataclass(frozen=True)
class KeyLine:
    """One line of the summary.

    Attributes:
        method, sampling: the line. control: whether ``method`` is a control. rate, low, high: mean validation
        lossless rate (achieved) and its 95% interval. confirmed, confirmed_low, confirmed_high: the test-confirmed
        rate and its interval. n: training checkpoints; rows: distinct runs; copies: runs left out as copies.
        verdict: the paired verdicts against the controls (test), as text; ``""`` for a control.
    """

    method: str
    sampling: str
    control: bool
    rate: float | None
    low: float | None
    high: float | None
    confirmed: float | None
    confirmed_low: float | None
    confirmed_high: float | None
    n: int
    rows: int
    copies: int
    verdict: str = ""

    @property
    def name(self) -> str:
        """``IG/confidence`` for a method, ``random`` or ``taylor/confidence`` for a control."""
        return line_name(self.method, self.sampling, self.control)


def line_name(method: str, sampling: str, control: bool) -> str:
    """How the summary names a line: ``IG/confidence`` (a method), ``random`` (a data-free control),
    ``taylor/confidence`` (a control that samples images).

    >>> line_name("ig", "confidence", False), line_name("random", "none", True), line_name("taylor", "random", True)
    ('IG/confidence', 'random', 'taylor/random')
    """
    if not control:
        return f"{method.upper()}/{sampling}"
    return method if sampling == NO_SAMPLING else f"{method}/{sampling}"


@dataclass(frozen=True)
class Answer:
    """The summary of one (dataset, model).

    Attributes:
        dataset, model: what it is about. metric: the lossless metric; tolerance: the tolerance the rates are read
        at. protocol, setting: the recommended setting's protocol label and setting text. sampling: the sampling of
        the attribution lines shown. lines: the key lines, methods first. recommended: the recommended run (a row
        of the per-run lossless table); recommended_control: whether it is a control. removal: what pruning it
        removes (``{}`` when the sweep has no row for it). paired_metric: the metric of the verdicts (``""`` when
        none). headline: one sentence.
    """

    dataset: str
    model: str
    metric: str
    tolerance: float
    protocol: str
    setting: str
    sampling: str
    lines: list[KeyLine]
    recommended: Row
    recommended_control: bool = False
    removal: dict[str, Any] = field(default_factory=dict)
    paired_metric: str = ""
    headline: str = ""


def interval(value: float | None, low: float | None, high: float | None, digits: int = 2) -> str:
    """``0.20 [0.00, 0.20]`` in one line (``–`` without a value; the value alone without bounds).

    >>> interval(0.0031, -0.005, 0.0162, 3)
    '0.003 [-0.005, 0.016]'
    """
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    text = f"{value:.{digits}f}"
    if low is None or high is None or any(isinstance(v, float) and math.isnan(v) for v in (low, high)):
        return text
    return f"{text} [{low:.{digits}f}, {high:.{digits}f}]"


def _same_setting(row: Row, reference: Row) -> bool:
    return all(str(row.get(f)) == str(reference.get(f)) for f in SETTING_GROUP)


def _number(value: Any) -> float | None:
    if value is None or value == "":
        return None
    number = float(value)
    return None if math.isnan(number) else number


def _verdict_text(paired: Sequence[Row], line: Row, metric: str) -> str:
    """The paired verdicts of one method line against the controls, grouped by verdict, with their rates."""
    mine = [
        p
        for p in paired
        if p["a"] == f"{line['method']}/{line['sampling']}"
        and str(p["b"]).split("/")[-1] in (NO_SAMPLING, str(line["sampling"]))
        and p["metric"] == metric
        and _same_setting(p, line)
        and str(p.get("protocol")) == protocol_label(line)
    ]
    if not mine:
        return "no paired comparison"
    by_verdict: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for p in sorted(mine, key=lambda p: float(p["rate"])):
        control = str(p["b"]).removesuffix(f"/{NO_SAMPLING}")
        by_verdict[str(p["verdict"])][control].append(format_rate(p["rate"])[:4])
    parts = []
    for verdict in ("better", "worse", "equivalent"):
        if verdict in by_verdict:
            items = "; ".join(f"{control} @{', '.join(rates)}" for control, rates in by_verdict[verdict].items())
            parts.append(f"{verdict} than {items}" if verdict != "equivalent" else f"equivalent to {items}")
    undecided = sum(len(r) for r in by_verdict.get("inconclusive", {}).values())
    if undecided:
        parts.append(f"inconclusive in {undecided} of {len(mine)}")
    return "; ".join(parts)


def _key_line(row: Row, paired: Sequence[Row], metric: str, label: str, controls: Sequence[str]) -> KeyLine:
    control = str(row["method"]) in controls
    return KeyLine(
        method=str(row["method"]),
        sampling=str(row["sampling"]),
        control=control,
        rate=_number(row.get(f"achieved@{label}")),
        low=_number(row.get(f"low@{label}")),
        high=_number(row.get(f"high@{label}")),
        confirmed=_number(row.get(f"confirmed_rate@{label}")),
        confirmed_low=_number(row.get(f"confirmed_low@{label}")),
        confirmed_high=_number(row.get(f"confirmed_high@{label}")),
        n=int(row.get("n") or 0),
        rows=int(row.get("rows") or 0),
        copies=int(row.get("copies") or 0),
        verdict="" if control else _verdict_text(paired, row, metric),
    )


def _removal(rows: Sequence[Row], run: Row, rate: float, efficiency: Sequence[Row]) -> dict[str, Any]:
    """What the recommended run removes at its (nominal) lossless ``rate``: the sweep's validation row there, and the
    physically pruned model of the efficiency table when it is this very run and rate."""
    if rate <= 0:
        return {}
    match = [
        r
        for r in on_split(rows, "val")
        if format_rate(r["rate"]) == format_rate(rate)
        and all(str(r.get(f)) == str(run.get(f)) for f in CURVE_FIELDS[:-1])
    ]
    if not match:
        return {}
    row = match[0]
    out: dict[str, Any] = {"rate": rate, "achieved": _number(row.get("achieved_rate"))}
    for column in ("params_removed", "params_removed_fraction", "macs_removed", "macs_removed_fraction"):
        out[column] = _number(row.get(column))
    unpruned = next((e for e in efficiency if e["method"] == "unpruned" and e["checkpoint"] == run["checkpoint"]), None)
    physical = next(
        (
            e
            for e in efficiency
            if e["method"] == run["method"]
            and e["sampling"] == run["sampling"]
            and e.get("setting") == setting_text(run)
            and str(e.get("seed")) == str(run.get("seed"))
            and e["checkpoint"] == run["checkpoint"]
            and format_rate(e["rate"]) == format_rate(rate)
        ),
        None,
    )
    if physical is not None and unpruned is not None:
        out["physical"] = {k: (unpruned[k], physical[k]) for k in ("params", "macs")}
    return out


def key_rows(answer: Answer, rows: Sequence[Row]) -> list[Row]:
    """The results rows of ``answer``'s key lines (its setting, the attribution lines' sampling and the controls)
    with their baselines: what the key figure draws."""
    names = {(line.method, line.sampling) for line in answer.lines}
    reference = answer.recommended
    return [
        r
        for r in rows
        if str(r["dataset"]) == answer.dataset
        and str(r.get("model")) == answer.model
        and (
            r["method"] == "baseline"
            or ((str(r["method"]), str(r["sampling"])) in names and _same_setting(r, reference))
        )
    ]


def answers(
    summary: Sequence[Row],
    lossless: Sequence[Row],
    paired: Sequence[Row],
    rows: Sequence[Row],
    tolerance: float,
    *,
    controls: Sequence[str] = CONTROLS,
    efficiency: Sequence[Row] = (),
) -> list[Answer]:
    """One :class:`Answer` per (dataset, model) of the lossless tables.

    Args:
        summary: lossless rates per line (:func:`medprune.report.tables.lossless_summary`).
        lossless: lossless rates per run (:func:`medprune.report.tables.lossless_rates`).
        paired: paired comparisons (:func:`medprune.report.paired.paired_comparisons`); the verdicts shown are on the
            lossless metric when it was compared, else on the first metric compared.
        rows: the results table (for what the recommended run removes).
        tolerance: the tolerance to read the lossless rates at (one the tables were computed with).
        controls: the methods that are controls.
        efficiency: the efficiency rows, if measured.
    """
    label = f"{tolerance:g}"
    groups: dict[tuple[str, str], list[Row]] = defaultdict(list)
    for run in lossless:
        groups[(str(run["dataset"]), str(run.get("model")))].append(run)
    result = []
    for (dataset, model), runs in sorted(groups.items()):
        metric = str(runs[0].get("metric") or "accuracy")
        recommended = best_line(runs, tolerance)
        methods = [r for r in runs if str(r["method"]) not in controls and _same_setting(r, recommended)]
        sampling = str((best_line(methods, tolerance) if methods else recommended)["sampling"])
        compared = sorted({str(p["metric"]) for p in paired})
        paired_metric = metric if metric in compared else (compared[0] if compared else "")
        lines = [
            _key_line(s, paired, paired_metric, label, controls)
            for s in summary
            if str(s["dataset"]) == dataset
            and str(s.get("model")) == model
            and _same_setting(s, recommended)
            and str(s["sampling"]) in (sampling, NO_SAMPLING)
        ]
        lines.sort(key=lambda k: (k.control, -(k.rate or 0.0), k.method))
        rate = float(recommended[f"lossless@{label}"])
        answer = Answer(
            dataset=dataset,
            model=model,
            metric=metric,
            tolerance=tolerance,
            protocol=protocol_label(recommended),
            setting=setting_text(recommended),
            sampling=sampling,
            lines=lines,
            recommended=recommended,
            recommended_control=str(recommended["method"]) in controls,
            removal=_removal(rows, recommended, rate, efficiency),
            paired_metric=paired_metric,
        )
        result.append(_with_headline(answer))
    return result


def _with_headline(answer: Answer) -> Answer:
    """The answer with its one-sentence headline: the best attribution line against the best control."""
    methods = [k for k in answer.lines if not k.control]
    controls = [k for k in answer.lines if k.control]
    metric = answer.metric.replace("_", " ")
    within = f"within {answer.tolerance:g} of unpruned {metric} (validation)"
    parts = []
    if methods:
        best = methods[0]
        parts.append(f"{best.name} prunes {interval(best.rate, best.low, best.high)} of units {within}")
    if controls:
        control = max(controls, key=lambda k: k.rate or 0.0)
        parts.append(f"the best control, {control.name}, {interval(control.rate, control.low, control.high)}")
    n = max((k.n for k in answer.lines), default=0)
    text = "; ".join(parts) + f" (n = {n} training checkpoint{'s' if n != 1 else ''})."
    if methods and controls and (methods[0].rate or 0.0) <= max(k.rate or 0.0 for k in controls):
        text += " No attribution method prunes further than a control here."
    return Answer(**{**answer.__dict__, "headline": text})


def _n(line: KeyLine) -> str:
    """``1 ckpt (3 runs) †``: checkpoints, distinct runs and copies; a control whose seeds are all copies is
    data-free (one run per checkpoint)."""
    copies = f"; {line.copies} seeds are copies" if line.copies else ""
    few = " †" if line.n < FEW_CLUSTERS else ""
    return f"{line.n} ckpt ({line.rows} run{'s' if line.rows != 1 else ''}{copies}){few}"


def _recommended_text(answer: Answer) -> str:
    run = answer.recommended
    rate = float(run[f"lossless@{answer.tolerance:g}"])
    name = line_name(str(run["method"]), str(run["sampling"]), answer.recommended_control)
    return (
        f"{name}, setting {answer.protocol} ({answer.setting}), checkpoint {str(run['checkpoint'])[:8]}, selection "
        f"seed {run.get('seed')}, rate {rate:.2f} (the line with the largest mean validation lossless rate at "
        f"{answer.tolerance:g}, controls included; its median run)"
    )


def _removal_text(answer: Answer) -> str:
    removal = answer.removal
    if not removal:
        rate = float(answer.recommended[f"lossless@{answer.tolerance:g}"])
        return "nothing (lossless rate 0)" if rate <= 0 else "not in the sweep's rows"
    parts = []
    if removal.get("achieved") is not None:
        parts.append(f"{100 * removal['achieved']:.1f}% of prunable units")
    if removal.get("params_removed") is not None:
        fraction = removal.get("params_removed_fraction")
        parts.append(f"{removal['params_removed']:,.0f} parameters" + (f" ({100 * fraction:.1f}%)" if fraction else ""))
    if removal.get("macs_removed") is not None:
        fraction = removal.get("macs_removed_fraction")
        share = f" ({100 * fraction:.1f}%)" if fraction else ""
        parts.append(f"{removal['macs_removed'] / 1e6:.2f} M MACs per image{share}")
    text = ", ".join(parts) + " (the sweep's masks, validation row)"
    physical = removal.get("physical")
    if physical:
        (p0, p1), (m0, m1) = physical["params"], physical["macs"]
        text += (
            f"; physically removed: parameters {p0 / 1e6:.3f} M → {p1 / 1e6:.3f} M, "
            f"MACs {m0 / 1e6:.2f} M → {m1 / 1e6:.2f} M per image"
        )
    return text


def _headers(answer: Answer) -> list[str]:
    metric = answer.metric.replace("_", " ")
    verdict_metric = answer.paired_metric.replace("_", " ") or "–"
    return [
        "line",
        f"lossless rate, {metric} drop ≤ {answer.tolerance:g} (val) [95% CI]",
        "test-confirmed rate [95% CI]",
        "n (independent checkpoints)",
        f"vs controls (test {verdict_metric}, paired, at the Table 1 rates)",
    ]


def _cells(line: KeyLine) -> list[str]:
    return [
        line.name + (" (control)" if line.control else ""),
        interval(line.rate, line.low, line.high),
        interval(line.confirmed, line.confirmed_low, line.confirmed_high),
        _n(line),
        line.verdict or "–",
    ]


def answer_html(answer: Answer) -> str:
    """The summary block: headline, recommended setting, what it removes, and one row per key line."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in _headers(answer))
    body = "".join(
        f"<tr class='{'control' if line.control else 'method'}'>"
        + "".join(f"<td>{html.escape(c)}</td>" for c in _cells(line))
        + "</tr>"
        for line in answer.lines
    )
    return (
        f"<div class='answer' id='answer-{html.escape(answer.dataset)}-{html.escape(answer.model)}'>"
        f"<p class='headline'><b>{html.escape(answer.model)} on {html.escape(answer.dataset)}:</b> "
        f"{html.escape(answer.headline)}</p>"
        f"<p><b>Recommended:</b> {html.escape(_recommended_text(answer))}. <b>It removes</b> "
        f"{html.escape(_removal_text(answer))}.</p>"
        f"<table class='compact'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
        f"{_footnote(answer)}</div>"
    )


def _footnote(answer: Answer, markdown: bool = False) -> str:
    """The † note when some line rests on fewer than :data:`~medprune.stats.FEW_CLUSTERS` checkpoints."""
    if not any(line.n < FEW_CLUSTERS for line in answer.lines):
        return ""
    text = (
        f"† fewer than {FEW_CLUSTERS} training checkpoints: the intervals resample runs and images only and are a "
        "lower bound on the uncertainty; seeds of one checkpoint are not independent."
    )
    return f"\n_{text}_\n" if markdown else f"<p class='note'>{html.escape(text)}</p>"


def answer_markdown(answer: Answer) -> str:
    """:func:`answer_html` as Markdown."""
    headers = _headers(answer)
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(c.replace("|", "/") for c in _cells(line)) + " |" for line in answer.lines]
    return (
        f"**{answer.model} on {answer.dataset}:** {answer.headline}\n\n"
        f"**Recommended:** {_recommended_text(answer)}. **It removes** {_removal_text(answer)}.\n\n"
        + "\n".join(lines)
        + "\n"
        + _footnote(answer, markdown=True)
    )
