"""The model card of a compressed model: ``card.json`` (the record, strict JSON) and ``card.md`` (the same, readable).

The card formats the numbers it is given and computes none: every figure (costs, rates, metrics, intervals,
latencies, hashes) is measured by :mod:`medprune.runs.compress` and stored in a :class:`CompressionRecord`, so a test
can recompute each one and find it in the card. Every number in ``card.md`` goes through :func:`format_number`.

>>> format_number(0.912345), format_number(1234567), format_number(None)
('0.9123', '1,234,567', '—')
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
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


def _ci(bounds: tuple[float | None, float | None]) -> str:
    return f"[{format_number(bounds[0])}, {format_number(bounds[1])}]"


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += [
        "| " + " | ".join(cell if isinstance(cell, str) else format_number(cell) for cell in row) + " |" for row in rows
    ]
    return lines + [""]


def _pairs(mapping: dict[str, Any]) -> list[str]:
    return [f"- {key}: {format_number(value)}" for key, value in mapping.items()] + [""]


def _test_section(original: SplitMetrics, compressed: SplitMetrics) -> list[str]:
    lines = ["## Test split (final evaluation; read once, after every choice)", ""]
    lines += _table(
        ["model", "n", "accuracy", "balanced accuracy", "AUROC", "worst-class recall"],
        [
            [label, m.n, m.accuracy, m.balanced_accuracy, m.auroc, m.worst_class_recall]
            for label, m in (("original", original), ("compressed", compressed))
        ],
    )
    rows = []
    for label, m in (("original", original), ("compressed", compressed)):
        for c in m.per_class:
            rows.append(
                [
                    label,
                    c.name,
                    c.positives,
                    c.negatives,
                    c.sensitivity,
                    _ci(c.sensitivity_ci),
                    c.specificity,
                    _ci(c.specificity_ci),
                ]
            )
    lines += ["Per class (95% intervals):", ""]
    lines += _table(
        ["model", "class", "positives", "negatives", "sensitivity", "95% CI", "specificity", "95% CI"], rows
    )
    return lines


def _promise_lines(promise: dict[str, Any]) -> list[str]:
    """The card's answer first: non-inferiority on test, then the flips."""
    lines = [f"## Promise on test (margin {format_number(promise['margin'])}; {promise['method']})", ""]
    for metric, verdict in promise["non-inferiority"].items():
        detail = ""
        if "difference" in verdict:
            detail = (
                f" (change {format_number(verdict['difference'])}, lower bound "
                f"{format_number(verdict['lower bound'])}; smallest margin certified "
                f"{format_number(verdict['smallest margin certified'])})"
            )
        lines.append(f"- {metric.replace('_', ' ')}: {verdict['verdict']}{detail}")
    lines += [
        "",
        f"Test images whose prediction changed (exact McNemar p = {format_number(promise['mcnemar p'])}):",
        "",
    ]
    lines += _table(
        ["true class", "images", "newly wrong", "newly right"],
        [[f["class_name"], f["images"], f["newly_wrong"], f["newly_right"]] for f in promise["flips"]],
    )
    if promise.get("gallery"):
        lines += [f"![test images whose prediction changed]({promise['gallery']})", ""]
    return lines


def calibration_lines(calibration: dict[str, Any]) -> list[str]:
    """ECE per model on test (binning stated), the fitted temperature and the reliability diagram."""
    lines = [f"## Calibration on {calibration['split']} ({calibration['images']} images)", ""]
    lines += [f"Expected calibration error: {calibration['binning']}.", ""]
    lines += _table(["model", "ECE"], [[label, value] for label, value in calibration["ece"].items()])
    if calibration.get("temperature") is not None:
        lines += [
            f"Temperature {format_number(calibration['temperature'])} fitted on "
            f"{calibration['temperature fitted on']}: divide the logits by it before the softmax (predictions do "
            "not change).",
            "",
        ]
    return lines + [f"![reliability diagram]({calibration['diagram']})", ""]


def quantization_lines(quantization: dict[str, Any]) -> list[str]:
    """The int8 model: the decision on validation, equivalence across runtimes, ONNX Runtime latency."""
    judged = quantization["validation"]
    verdict = "shipped" if quantization["shipped"] else f"not shipped: {quantization['why not']}"
    lines = [f"## int8 (ONNX Runtime static quantization): {verdict}", ""]
    lines += [
        f"- scheme: {quantization['format']}; weights {quantization['weights']}; activations "
        f"{quantization['activations']} ({quantization['calibration method']} over "
        f"{quantization['calibration']['images']} {quantization['calibration']['source']})",
        f"- validation ({judged['rule']} rule against the original model, {judged['metric'].replace('_', ' ')}, "
        f"tolerance {format_number(judged['tolerance'])}): value {format_number(judged['value'])}, drop "
        f"{format_number(judged['drop'])}, lower bound {format_number(judged['lower bound'])}",
        f"- file: `{quantization['file']}` ({format_number(quantization['bytes']['int8'])} bytes; fp32 "
        f"{format_number(quantization['bytes']['fp32'])} bytes)",
        "",
    ]
    for split, runtimes in quantization.get("equivalence", {}).items():
        lines += [f"Equivalence across runtimes on {split} (against PyTorch fp32):", ""]
        lines += _table(
            ["runtime", "max |logit difference|", "prediction agreement", "accuracy", "change", "balanced accuracy"]
            + ["change", "per-class sensitivity change"],
            [
                [
                    label,
                    row["max |logit difference|"],
                    row["agreement"],
                    row["accuracy"],
                    row["accuracy change"],
                    row["balanced_accuracy"],
                    row["balanced_accuracy change"],
                    ", ".join(f"{c['class']} {format_number(c['sensitivity change'])}" for c in row["per_class"]),
                ]
                for label, row in runtimes.items()
            ],
        )
    if quantization.get("latency"):
        lines += ["ONNX Runtime CPU latency (ms per batch, models timed interleaved after warm-up):", ""]
        lines += _table(
            ["batch", "threads", "repeats", "model", "median ms", "IQR"],
            [
                [r["batch"], r["threads"], r["repeats"], r["model"], r["median ms"], _ci(tuple(r["IQR ms"]))]
                for r in quantization["latency"]
            ],
        )
    return lines


def render_markdown(record: CompressionRecord) -> str:
    """``card.md``: every number of ``record`` through :func:`format_number`, in tables."""
    lines = [f"# Model card: {record.title}", ""]
    if record.warnings:
        lines += [*[f"> **Warning:** {w}" for w in record.warnings], ""]
    if record.promise:
        lines += _promise_lines(record.promise)
    lines += ["## Source", "", *_pairs(record.source)]
    lines += ["## Choice (made on the validation split)", "", *_pairs(record.choice)]
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
    lines += ["## Size", "", *_pairs(record.totals)]
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
    lines += _test_section(record.test_original, record.test_compressed)
    lines += [f"Intervals: {record.ci_method}.", ""]
    lines += ["## CPU latency (ms per batch; original and compressed timed interleaved after warm-up)", ""]
    lines += _table(
        ["batch", "threads", "repeats", "original ms (median)", "IQR", "CPU ms", "compressed ms (median)", "IQR"]
        + ["CPU ms", "speed-up", "sanity"],
        [
            [
                x.batch,
                x.threads,
                x.repeats,
                x.original_ms,
                _ci(x.original_iqr_ms or (None, None)),
                x.original_cpu_ms,
                x.compressed_ms,
                _ci(x.compressed_iqr_ms or (None, None)),
                x.compressed_cpu_ms,
                x.speedup,
                x.flag or "ok",
            ]
            for x in record.latency
        ],
    )
    if record.calibration:
        lines += calibration_lines(record.calibration)
    if record.quantization:
        lines += quantization_lines(record.quantization)
    lines += ["## Checks", "", *_pairs(record.checks)]
    if record.timings:
        lines += ["## Time (seconds)", "", *_pairs(record.timings)]
    lines += ["## Hashes (SHA-256)", "", *[f"- {k}: `{v}`" for k, v in record.hashes.items()], ""]
    lines += ["## Commands", "", "```", *record.commands, "```", ""]
    lines += ["## Configuration", "", "```json", json.dumps(to_jsonable(record.config), indent=2), "```", ""]
    return "\n".join(lines)


def write_card(record: CompressionRecord, out_dir: str | Path) -> tuple[Path, Path]:
    """Write ``card.json`` and ``card.md`` into ``out_dir``; returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out / "card.json", out / "card.md"
    json_path.write_text(json.dumps(record.to_dict(), indent=2, allow_nan=False) + "\n")
    md_path.write_text(render_markdown(record))
    return json_path, md_path
