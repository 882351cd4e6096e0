"""The model card of a compressed model: ``card.json`` (the record, strict JSON) and ``card.md`` (the same, readable).

The card formats the numbers it is given and computes none: every figure (costs, rates, metrics, intervals,
latencies, hashes) is measured by :mod:`medprune.runs.compress` and stored in a :class:`CompressionRecord`, so a test
can recompute each one and find it in the card. ``card.md`` is written for a person: the decision first (what shipped,
how much smaller and faster, the promise and whether test kept it, warnings), then preprocessing and intended use,
then the evidence; ``card.html`` is the same page, self-contained. One format per kind of number: percentages with
one decimal (:func:`percent`), metrics, ECE and bounds with three (:func:`score`, :func:`change`), latencies in ms
with two (:func:`milliseconds`), ratios with two and an x (:func:`times`); the audit sections (the search rows, the
choice, checks, timings) use :func:`format_number`.

>>> percent(0.64861), score(0.912345), change(-0.0017), milliseconds(0.98875), times(1.4788)
('64.9%', '0.912', '-0.002', '0.99', '1.48x')
>>> format_number(0.912345), format_number(1234567), format_number(None)
('0.9123', '1,234,567', '—')
"""

from __future__ import annotations

import base64
import html
import json
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from medprune.provenance import to_jsonable

__all__ = [
    "CI_METHOD",
    "LayerChange",
    "MACS_FLOOR_STATES",
    "SearchRow",
    "ClassRates",
    "SplitMetrics",
    "Latency",
    "CompressionRecord",
    "format_number",
    "calibration_lines",
    "quantization_lines",
    "render_markdown",
    "render_html",
    "decision_lines",
    "percent",
    "score",
    "change",
    "milliseconds",
    "times",
    "write_card",
]

#: How the per-class 95% intervals are computed (stated on the card).
CI_METHOD = "Wilson score interval, scipy.stats.binomtest(k, n).proportion_ci(confidence_level=0.95, method='wilson')"


@dataclass
class LayerChange:
    """One layer before and after compression (units are ``None`` for layers that carry no prunable units)."""

    name: str
    kind: str
    units_before: int | None
    units_after: int | None
    params_before: int
    params_after: int
    macs_before: int
    macs_after: int


#: What the MACs floor did for a search row (:attr:`SearchRow.macs_floor`).
MACS_FLOOR_STATES: tuple[str, ...] = ("off", "met", "raised", "unreachable")


@dataclass
class SearchRow:
    """One candidate rate of the search on the validation split.

    Attributes:
        rate: the candidate rate. achieved_rate: the fraction of units its masks remove.
        value, drop, within_tolerance, metrics: the validation evidence (``drop`` = baseline - value).
        unit_rate: the unit rate the masks were cut at (``rate`` unless the MACs floor raised it; rows written
            before the floor existed read as ``rate``).
        macs_removed: the fraction of the MACs the masks remove (``None``: not counted, e.g. attention heads).
        macs_floor: ``off`` (not applied), ``met`` (the masks at ``rate`` already remove ``rate`` of the MACs),
            ``raised`` (``unit_rate`` was raised until they did) or ``unreachable`` (no unit rate below 1 does: the
            largest allowed one is used).
        lower_bound: the one-sided lower confidence bound of (candidate - original) on the metric over the
            validation images (``None``: not computed, e.g. rows written before the certified rule, or AUROC).
        class_guard: why the class guard refuses this candidate (empty: every class passes).
        accepted: whether the decision rule accepts it (``None``: rows written before the rule, read as
            ``within_tolerance``).
    """

    rate: float
    achieved_rate: float
    value: float | None
    drop: float | None
    within_tolerance: bool
    metrics: dict[str, float | None] = field(default_factory=dict)
    unit_rate: float | None = None
    macs_removed: float | None = None
    macs_floor: str = "off"
    lower_bound: float | None = None
    class_guard: list[str] = field(default_factory=list)
    accepted: bool | None = None

    def __post_init__(self) -> None:
        if self.unit_rate is None:
            self.unit_rate = self.rate
        if self.accepted is None:
            self.accepted = self.within_tolerance
        if self.macs_floor not in MACS_FLOOR_STATES:
            raise ValueError(f"macs_floor={self.macs_floor!r} is not allowed; valid values: {MACS_FLOOR_STATES}")


@dataclass
class ClassRates:
    """Sensitivity (recall of the class) and specificity (recall of the rest) of one class, with 95% intervals."""

    name: str
    positives: int
    negatives: int
    sensitivity: float | None
    sensitivity_ci: tuple[float | None, float | None]
    specificity: float | None
    specificity_ci: tuple[float | None, float | None]


@dataclass
class SplitMetrics:
    """Headline metrics and per-class rates of one model on one split (the card shows the test split)."""

    n: int
    accuracy: float | None
    balanced_accuracy: float | None
    auroc: float | None
    worst_class_recall: float | None
    per_class: list[ClassRates] = field(default_factory=list)


@dataclass
class Latency:
    """CPU latency (milliseconds per batch) of the original and the compressed model, timed interleaved.

    Attributes:
        batch, threads: the batch size and torch threads. original_ms, compressed_ms: median wall time.
        speedup: original_ms / compressed_ms. original_iqr_ms, compressed_iqr_ms: interquartile range of the wall
            times. original_cpu_ms, compressed_cpu_ms: median process CPU time. repeats: timed passes of each.
        flag: why the figure should not be believed ("" when it passed the sanity check).
    """

    batch: int
    threads: int
    original_ms: float
    compressed_ms: float
    speedup: float | None
    original_iqr_ms: tuple[float, float] | None = None
    compressed_iqr_ms: tuple[float, float] | None = None
    original_cpu_ms: float | None = None
    compressed_cpu_ms: float | None = None
    repeats: int | None = None
    flag: str = ""


@dataclass
class CompressionRecord:
    """Everything the card shows.

    Attributes:
        title: one line naming the model and the dataset.
        source: the input (checkpoint path, architecture, dataset, ...), shown as given.
        choice: how the rate was chosen (method, metric, tolerance, chosen and achieved rate, recovery), as given.
        search: the validation rows the choice read.
        totals: units / params / MACs before and after and the fractions removed, as measured.
        layers: per-layer changes.
        test_original, test_compressed: final test metrics (the test split is read only for these).
        latency: CPU latency rows (batch 1 and 32).
        checks: numerical checks (masked vs physical, ONNX vs PyTorch max |difference|).
        commands: the commands that produced the model.
        config: the resolved configuration.
        hashes: SHA-256 of the data, the input and output weights and the ONNX file.
        ci_method: how the intervals were computed.
        timings: seconds per stage.
        warnings: what a person must see first (shown at the top of the card).
        promise: the test evidence (:func:`medprune.compression.evidence.promise_on_test`): non-inferiority at
            the tolerance, flips per class, McNemar.
        calibration: ECE (binning stated) of the original and compressed model on test, the reliability diagram,
            and the temperature fitted on validation when asked (:mod:`medprune.deploy.calibration`).
        quantization: the int8 model: scheme, calibration images, the decision on validation, runtime equivalence
            on validation and test, ONNX Runtime latency (empty: not asked).
        base_model: what the model was derived from: ``name`` and ``sha256`` of the input checkpoint's weights.
        relation: how it was derived: ``pruned`` or ``pruned+quantized`` (the int8 model shipped).
        preprocessing: what an input must look like (size, channels, normalisation), from the checkpoint's sidecar.
    """

    title: str
    source: dict[str, Any]
    choice: dict[str, Any]
    search: list[SearchRow]
    totals: dict[str, float | int]
    layers: list[LayerChange]
    test_original: SplitMetrics
    test_compressed: SplitMetrics
    latency: list[Latency]
    checks: dict[str, float | bool | None]
    commands: list[str]
    config: dict[str, Any]
    hashes: dict[str, str | None]
    ci_method: str = CI_METHOD
    timings: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    promise: dict[str, Any] = field(default_factory=dict)
    calibration: dict[str, Any] = field(default_factory=dict)
    quantization: dict[str, Any] = field(default_factory=dict)
    base_model: dict[str, Any] = field(default_factory=dict)
    relation: str = "pruned"
    preprocessing: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The strict-JSON content of ``card.json``."""
        return to_jsonable(asdict(self))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CompressionRecord:
        """The record of a ``card.json`` (one written before a field existed reads it as its default), e.g. to
        render an older card again."""
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}

        def split(metrics: dict[str, Any]) -> SplitMetrics:
            rates = [
                ClassRates(
                    **{**c, "sensitivity_ci": tuple(c["sensitivity_ci"]), "specificity_ci": tuple(c["specificity_ci"])}
                )
                for c in metrics["per_class"]
            ]
            return SplitMetrics(**{**metrics, "per_class": rates})

        def latency(row: dict[str, Any]) -> Latency:
            ranges = {k: tuple(row[k]) for k in ("original_iqr_ms", "compressed_iqr_ms") if row.get(k) is not None}
            return Latency(**{**row, **ranges})

        values.update(
            search=[SearchRow(**row) for row in data["search"]],
            layers=[LayerChange(**row) for row in data["layers"]],
            test_original=split(data["test_original"]),
            test_compressed=split(data["test_compressed"]),
            latency=[latency(row) for row in data["latency"]],
        )
        return cls(**values)


def format_number(value: Any) -> str:
    """How the card writes a number: ints with thousands separators, floats with 4 decimals (2 from 100 on)."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.2f}" if abs(value) >= 100 else f"{value:.4f}"
    return str(value)


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += [
        "| " + " | ".join(cell if isinstance(cell, str) else format_number(cell) for cell in row) + " |" for row in rows
    ]
    return lines + [""]


def _pairs(mapping: dict[str, Any]) -> list[str]:
    return [f"- {key}: {format_number(value)}" for key, value in mapping.items()] + [""]


def percent(value: float | None) -> str:
    """A fraction as a percentage with one decimal (``0.6486`` -> ``64.9%``)."""
    return "—" if value is None else f"{100 * value:.1f}%"


def score(value: float | None) -> str:
    """A metric, probability, ECE or bound with three decimals."""
    return "—" if value is None else f"{value:.3f}"


def change(value: float | None) -> str:
    """A signed change of a metric with three decimals (``-0.002``)."""
    return "—" if value is None else f"{value:+.3f}"


def milliseconds(value: float | None) -> str:
    """A latency in milliseconds with two decimals (the small models of MedMNIST run well under 1 ms per image)."""
    return "—" if value is None else f"{value:.2f}"


def times(value: float | None) -> str:
    """A ratio (speed-up, size) with two decimals and an x."""
    return "—" if value is None else f"{value:.2f}x"


def _interval(bounds: tuple[float | None, float | None] | list[float | None]) -> str:
    return f"[{score(bounds[0])}, {score(bounds[1])}]"


def _test_section(original: SplitMetrics, compressed: SplitMetrics) -> list[str]:
    lines = ["### Test split (final evaluation; read once, after every choice)", ""]
    lines += _table(
        ["model", "images", "accuracy", "balanced accuracy", "AUROC", "worst-class recall"],
        [
            [label, m.n, score(m.accuracy), score(m.balanced_accuracy), score(m.auroc), score(m.worst_class_recall)]
            for label, m in (("original", original), ("compressed", compressed))
        ],
    )
    binary = len(original.per_class) == 2
    rows = []
    for before, after in zip(original.per_class, compressed.per_class):
        row = [before.name, before.positives, score(before.sensitivity), _interval(before.sensitivity_ci)]
        row += [score(after.sensitivity), _interval(after.sensitivity_ci)]
        delta = (
            None if before.sensitivity is None or after.sensitivity is None else after.sensitivity - before.sensitivity
        )
        row.append(change(delta))
        if not binary:  # a binary task's specificity of one class is the other's sensitivity: shown once
            row += [score(before.specificity), score(after.specificity)]
        rows.append(row)
    header = ["class", "images", "original recall", "95% CI", "compressed recall", "95% CI", "change"]
    header += [] if binary else ["original specificity", "compressed specificity"]
    note = " (binary task: each class's specificity is the other's recall, so each is shown once)" if binary else ""
    lines += [f"Recall (sensitivity) per class, 95% intervals{note}:", ""]
    lines += _table(header, rows)
    return lines


def _promise_lines(promise: dict[str, Any]) -> list[str]:
    """Non-inferiority on test, then the flips."""
    lines = [f"### Promise on test (margin {score(promise['margin'])}; {promise['method']})", ""]
    for metric, verdict in promise["non-inferiority"].items():
        detail = ""
        if "difference" in verdict:
            detail = (
                f" (change {change(verdict['difference'])}, lower bound {change(verdict['lower bound'])}; smallest "
                f"margin certified {score(verdict['smallest margin certified'])})"
            )
        lines.append(f"- {metric.replace('_', ' ')}: {verdict['verdict']}{detail}")
    lines += ["", f"Test images whose prediction changed (exact McNemar p = {score(promise['mcnemar p'])}):", ""]
    lines += _table(
        ["true class", "images", "newly wrong", "newly right"],
        [[f["class_name"], f["images"], f["newly_wrong"], f["newly_right"]] for f in promise["flips"]],
    )
    if promise.get("gallery"):
        lines += [f"![test images whose prediction changed]({promise['gallery']})", ""]
    return lines


def calibration_lines(calibration: dict[str, Any]) -> list[str]:
    """ECE per model (binning stated), the fitted temperature and the reliability diagram."""
    lines = [f"### Calibration on {calibration['split']} ({calibration['images']} images)", ""]
    lines += [f"Expected calibration error (ECE): {calibration['binning']}.", ""]
    lines += _table(["model", "ECE"], [[label, score(value)] for label, value in calibration["ece"].items()])
    if calibration.get("temperature") is not None:
        lines += [
            f"Temperature {calibration['temperature']:.3f} fitted on {calibration['temperature fitted on']}: divide "
            "the logits by it before the softmax (predictions do not change).",
            "",
        ]
    return lines + [f"![reliability diagram]({calibration['diagram']})", ""]


def _latency_of(rows: list[dict[str, Any]], batch: int, model: str) -> float | None:
    return next((r["median ms"] for r in rows if r["batch"] == batch and r["model"] == model), None)


def quantization_lines(quantization: dict[str, Any]) -> list[str]:
    """The int8 model: the decision on validation, equivalence across runtimes, ONNX Runtime latency."""
    judged = quantization["validation"]
    verdict = "shipped" if quantization["shipped"] else f"not shipped: {quantization['why not']}"
    lines = [f"### int8 (ONNX Runtime static quantization): {verdict}", ""]
    lines += [
        f"- scheme: {quantization['format']}; weights {quantization['weights']}; activations "
        f"{quantization['activations']} ({quantization['calibration method']} over "
        f"{quantization['calibration']['images']} {quantization['calibration']['source']})",
        f"- validation ({judged['rule']} rule against the original model, {judged['metric'].replace('_', ' ')}, "
        f"tolerance {score(judged['tolerance'])}): {score(judged['value'])} against {score(judged['baseline'])} "
        f"(drop {score(judged['drop'])}, lower bound of the change {change(judged['lower bound'])})",
        f"- file: `{quantization['file']}` ({format_number(quantization['bytes']['int8'])} bytes; fp32 "
        f"{format_number(quantization['bytes']['fp32'])} bytes)",
        "",
    ]
    for split, runtimes in quantization.get("equivalence", {}).items():
        lines += [f"Equivalence across runtimes on {split} (against PyTorch fp32):", ""]
        lines += _table(
            ["runtime", "max abs logit difference", "prediction agreement", "accuracy", "change", "balanced accuracy"]
            + ["change", "recall change per class"],
            [
                [
                    label,
                    f"{row['max |logit difference|']:.2e}",
                    percent(row["agreement"]),
                    score(row["accuracy"]),
                    change(row["accuracy change"]),
                    score(row["balanced_accuracy"]),
                    change(row["balanced_accuracy change"]),
                    ", ".join(f"{c['class']} {change(c['sensitivity change'])}" for c in row["per_class"]),
                ]
                for label, row in runtimes.items()
            ],
        )
    if quantization.get("promise"):
        verdicts = quantization["promise"]["non-inferiority"]
        lines += [
            "int8 against the original on test: "
            + "; ".join(f"{m.replace('_', ' ')} {v['verdict']}" for m, v in verdicts.items()),
            "",
        ]
    if quantization.get("latency"):
        lines += ["ONNX Runtime CPU latency (ms per batch; the models timed interleaved after warm-up):", ""]
        lines += _table(
            ["batch", "threads", "repeats", "model", "median ms", "IQR ms"],
            [
                [
                    r["batch"],
                    r["threads"],
                    r["repeats"],
                    r["model"],
                    milliseconds(r["median ms"]),
                    f"[{milliseconds(r['IQR ms'][0])}, {milliseconds(r['IQR ms'][1])}]",
                ]
                for r in quantization["latency"]
            ],
        )
    return lines


def decision_lines(record: CompressionRecord) -> list[str]:
    """The card's first section: what shipped, how much smaller and faster, the promise and whether test kept it,
    the warnings."""
    lines = ["## Decision", ""]
    lines += [f"> **Warning:** {w}" for w in record.warnings] + ([""] if record.warnings else [])
    quantization = record.quantization
    int8 = bool(quantization.get("shipped"))
    shipped = f"the int8 model `{quantization['file']}`" if int8 else "the compressed fp32 model `model.onnx`"
    base = record.base_model
    derived = (
        f" ({record.relation} from `{base.get('name')}`, SHA-256 `{str(base.get('sha256'))[:12]}…`)" if base else ""
    )
    lines.append(f"- **Shipped:** {shipped}{derived}.")
    totals = record.totals
    if totals:
        lines.append(
            f"- **Smaller:** {percent(totals.get('params removed (fraction)'))} of the parameters "
            f"({format_number(totals.get('params before'))} -> {format_number(totals.get('params after'))}) and "
            f"{percent(totals.get('MACs removed (fraction)'))} of the multiply-accumulates removed"
            + (
                f"; int8 file {times(quantization['bytes']['fp32'] / quantization['bytes']['int8'])} smaller than "
                "the fp32 one"
                if int8
                else ""
            )
            + "."
        )
    faster = [
        f"batch {x.batch}: {milliseconds(x.original_ms)} -> {milliseconds(x.compressed_ms)} ms ({times(x.speedup)})"
        for x in record.latency
    ]
    if faster:
        threads = record.latency[0].threads
        lines.append(f"- **Faster (PyTorch CPU, {threads} threads, median):** " + "; ".join(faster) + ".")
    if quantization.get("latency"):
        rows = quantization["latency"]
        ort = []
        for batch in sorted({r["batch"] for r in rows}):
            base_ms = _latency_of(rows, batch, "original fp32")
            steps = [_latency_of(rows, batch, m) for m in ("compressed fp32", "compressed int8")]
            ort.append(
                f"batch {batch}: {milliseconds(base_ms)} -> {milliseconds(steps[0])} (fp32) -> "
                f"{milliseconds(steps[1])} ms (int8, {times(base_ms / steps[1] if base_ms and steps[1] else None)})"
            )
        lines.append(f"- **Faster (ONNX Runtime, {rows[0]['threads']} threads, median):** " + "; ".join(ort) + ".")
    choice, promise = record.choice, record.promise
    if choice.get("metric") is not None:
        metric = str(choice["metric"]).replace("_", " ")
        lines.append(
            f"- **Promise:** {metric} at most {score(choice.get('tolerance'))} below the original's; "
            f"{choice.get('decision rule', '')} (validation)."
        )
    if promise:
        verdict = promise["non-inferiority"].get(choice.get("metric"), {})
        lines.append(
            f"- **Kept on test?** {_verdict(verdict)} (change {change(verdict.get('difference'))}, "
            f"{promise['confidence']:.0%} lower bound {change(verdict.get('lower bound'))}; "
            f"{sum(f['newly_wrong'] for f in promise['flips'])} test images newly wrong, "
            f"{sum(f['newly_right'] for f in promise['flips'])} newly right)."
        )
    if int8 and quantization.get("promise"):
        verdict = quantization["promise"]["non-inferiority"].get(choice.get("metric"), {})
        lines.append(
            f"- **int8 on test:** {_verdict(verdict)} (change against the original "
            f"{change(verdict.get('difference'))}, lower bound {change(verdict.get('lower bound'))})."
        )
    elif quantization:
        lines.append(f"- **int8 not shipped:** {quantization['why not']}.")
    if record.calibration:
        ece = record.calibration["ece"]
        lines.append(
            f"- **Calibration (test ECE, {record.calibration['bins']} bins):** "
            + ", ".join(f"{label} {score(v)}" for label, v in ece.items())
            + "."
        )
    return lines + [""]


def _verdict(verdict: dict[str, Any]) -> str:
    """A test verdict as a sentence: "not shown" alone reads as if nothing was tested."""
    text = verdict.get("verdict", "not shown")
    return "no: non-inferiority not shown" if text == "not shown" else f"yes: {text}"


def _preprocessing_lines(preprocessing: dict[str, Any]) -> list[str]:
    if not preprocessing:
        return []
    lines = ["## Preprocessing", "", f"- input: {preprocessing['input']}", f"- output: {preprocessing['output']}"]
    return lines + [f"- {step}" for step in preprocessing["steps"]] + [""]


def _intended_use_lines(record: CompressionRecord) -> list[str]:
    dataset = record.source.get("dataset", "its dataset")
    classes = ", ".join(c.name for c in record.test_compressed.per_class)
    return [
        "## Intended use and limitations",
        "",
        f"- Intended use: research on the compression of medical image classifiers; the model sorts "
        f"{dataset} images into {classes}. It is not a medical device and must not be used for diagnosis.",
        f"- Evidence comes only from the {dataset} splits ({format_number(record.source.get('validation images'))} "
        f"validation images chose the model, {format_number(record.source.get('test images'))} test images "
        "checked it once): other scanners, sites, populations, resolutions or preprocessing are untested.",
        "- The promise is about the original model's errors, not about clinical accuracy: the compressed model is "
        "at most as good as the model it came from.",
        "- Per-class recall on small classes has wide intervals (see the 95% intervals below); read them before "
        "relying on a class.",
        "",
    ]


def render_markdown(record: CompressionRecord) -> str:
    """``card.md``: the decision first, then preprocessing and intended use, then the evidence. Percentages have one
    decimal, metrics three, latencies two (ms); the audit sections (search rows, choice, checks) use
    :func:`format_number`."""
    lines = [f"# Model card: {record.title}", ""]
    lines += decision_lines(record)
    lines += _preprocessing_lines(record.preprocessing)
    lines += _intended_use_lines(record)
    lines += ["## Evidence", ""]
    lines += _test_section(record.test_original, record.test_compressed)
    lines += [f"Intervals: {record.ci_method}.", ""]
    if record.promise:
        lines += _promise_lines(record.promise)
    if record.calibration:
        lines += calibration_lines(record.calibration)
    if record.quantization:
        lines += quantization_lines(record.quantization)
    lines += ["### Source", "", *_pairs(record.source)]
    lines += ["### Choice (made on the validation split)", "", *_pairs(record.choice)]
    keys = sorted({k for row in record.search for k in row.metrics})
    lines += ["Validation evidence (every candidate rate tried):", ""]
    if any(r.macs_floor != "off" for r in record.search):
        lines += [
            "A candidate rate r removes at least r of the units and r of the MACs: the unit rate is raised until the "
            "masks remove r of the MACs (MACs floor `raised`; `unreachable`: no unit rate below 1 does).",
            "",
        ]
    header = ["rate", "unit rate", "units removed", "MACs removed", "MACs floor", "value", "drop", "lower bound"]
    header += ["class guard", "accepted"]
    lines += _table(
        [*header, *keys],
        [
            [
                r.rate,
                r.unit_rate,
                r.achieved_rate,
                r.macs_removed,
                r.macs_floor,
                r.value,
                r.drop,
                r.lower_bound,
                "; ".join(r.class_guard) or "passes",
                r.accepted,
                *[r.metrics.get(k) for k in keys],
            ]
            for r in record.search
        ],
    )
    lines += ["### Size", "", *_pairs(record.totals)]
    lines += _table(
        ["layer", "kind", "units before", "units after", "params before", "params after", "MACs before", "MACs after"],
        [
            [
                f"`{c.name}`",
                c.kind,
                c.units_before,
                c.units_after,
                c.params_before,
                c.params_after,
                c.macs_before,
                c.macs_after,
            ]
            for c in record.layers
        ],
    )
    lines += ["### PyTorch CPU latency (ms per batch; original and compressed timed interleaved after warm-up)", ""]
    lines += _table(
        ["batch", "threads", "repeats", "original ms (median)", "IQR", "CPU ms", "compressed ms (median)", "IQR"]
        + ["CPU ms", "speed-up", "sanity"],
        [
            [
                x.batch,
                x.threads,
                x.repeats,
                milliseconds(x.original_ms),
                _ms_range(x.original_iqr_ms),
                milliseconds(x.original_cpu_ms),
                milliseconds(x.compressed_ms),
                _ms_range(x.compressed_iqr_ms),
                milliseconds(x.compressed_cpu_ms),
                times(x.speedup),
                x.flag or "ok",
            ]
            for x in record.latency
        ],
    )
    lines += ["### Checks", "", *_pairs(record.checks)]
    if record.timings:
        lines += ["### Time (seconds)", "", *_pairs(record.timings)]
    lines += ["### Hashes (SHA-256)", "", *[f"- {k}: `{v}`" for k, v in record.hashes.items()], ""]
    lines += ["### Commands", "", "```", *record.commands, "```", ""]
    lines += ["### Configuration", "", "```json", json.dumps(to_jsonable(record.config), indent=2), "```", ""]
    return "\n".join(lines)


def _ms_range(bounds: tuple[float, float] | None) -> str:
    return "—" if bounds is None else f"[{milliseconds(bounds[0])}, {milliseconds(bounds[1])}]"


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


def write_card(record: CompressionRecord, out_dir: str | Path) -> tuple[Path, Path]:
    """Write ``card.json``, ``card.md`` and ``card.html`` into ``out_dir``; returns the paths of the first two."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out / "card.json", out / "card.md"
    json_path.write_text(json.dumps(record.to_dict(), indent=2, allow_nan=False) + "\n")
    markdown = render_markdown(record)
    md_path.write_text(markdown)
    (out / "card.html").write_text(render_html(markdown, out))
    return json_path, md_path
