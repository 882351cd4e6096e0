"""The card for a person: ``card.md`` rendered from a :class:`~medprune.compression.card.CompressionRecord`, and
:func:`write_card`, which writes ``card.json``, ``card.md`` and ``card.html`` (:mod:`medprune.compression.card_html`).

The page formats the numbers it is given and computes none. The decision first (what shipped, how much smaller and
faster, the promise and whether test kept it, warnings), then preprocessing and intended use, then the evidence. One
format per kind of number: percentages with one decimal (:func:`percent`), metrics, ECE, correlations and bounds with
three (:func:`score`, :func:`change`), latencies in ms with two (:func:`milliseconds`), ratios with two and an x
(:func:`times`); the audit sections (the search rows, the choice, checks, timings) use :func:`format_number`.

>>> percent(0.64861), score(0.912345), change(-0.0017), milliseconds(0.98875), times(1.4788)
('64.9%', '0.912', '-0.002', '0.99', '1.48x')
>>> format_number(0.912345), format_number(1234567), format_number(None)
('0.9123', '1,234,567', '—')
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from medprune.compression.card import CompressionRecord, SplitMetrics
from medprune.compression.card_html import render_html
from medprune.deploy.runtimes import latency_ms
from medprune.provenance import to_jsonable

__all__ = [
    "format_number",
    "percent",
    "score",
    "change",
    "milliseconds",
    "times",
    "decision_lines",
    "calibration_lines",
    "quantization_lines",
    "explanation_lines",
    "render_markdown",
    "write_card",
]


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


def _threads(count: Any) -> str:
    return f"{count} thread" if str(count) == "1" else f"{count} threads"


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


def _r_range(bounds: list[float] | None) -> str:
    return "—" if bounds is None else _interval(bounds)


def explanation_lines(explanations: dict[str, Any]) -> list[str]:
    """Explanation drift on test: the method, the sample, and per class the median r with its IQR and the mean r
    with its bootstrap interval (or why it was not measured)."""
    lines = ["### Explanations on test: the compressed model's heatmaps against the original's", ""]
    if explanations.get("skipped"):
        return lines + [f"Not measured: {explanations['skipped']}.", ""]
    lines += [
        f"Method: {explanations['method']}. Images: up to {explanations['images per class']} test images per class, "
        f"drawn with seed {explanations['seed']}. Interval: {explanations['interval']}. Pearson r: 1 = the same "
        f"pattern up to scale, 0 = unrelated. Note: {explanations['note']}.",
        "",
    ]
    lines += _table(
        ["class", "images", "with an r", "median r", "IQR", "mean r", "95% interval of the mean"],
        [
            [row["class"], row["n"], row["finite"], score(row["median"]), _r_range(row["IQR"])]
            + [score(row["mean"]), _r_range(row["mean 95% CI"])]
            for row in [*explanations["per_class"], explanations["all"]]
        ],
    )
    return lines


def _explanation_decision(explanations: dict[str, Any]) -> str:
    if explanations.get("skipped"):
        return f"- **Explanations:** not measured ({explanations['skipped']})."
    per_class = "; ".join(
        f"{row['class']} {score(row['median'])} {_r_range(row['IQR'])}" for row in explanations["per_class"]
    )
    return (
        f"- **Explanations (test, up to {explanations['images per class']} images per class):** heatmap Pearson r "
        f"against the original's, median [IQR] over images: {per_class} (one checkpoint)."
    )


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
        lines.append(f"- **Faster (PyTorch CPU, {_threads(threads)}, median):** " + "; ".join(faster) + ".")
    if quantization.get("latency"):
        rows = quantization["latency"]
        ort = []
        for batch in sorted({r["batch"] for r in rows}):
            base_ms = latency_ms(rows, batch, "original fp32")
            steps = [latency_ms(rows, batch, m) for m in ("compressed fp32", "compressed int8")]
            ort.append(
                f"batch {batch}: {milliseconds(base_ms)} -> {milliseconds(steps[0])} (fp32) -> "
                f"{milliseconds(steps[1])} ms (int8, {times(base_ms / steps[1] if base_ms and steps[1] else None)})"
            )
        lines.append(f"- **Faster (ONNX Runtime, {_threads(rows[0]['threads'])}, median):** " + "; ".join(ort) + ".")
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
    if record.explanations:
        lines.append(_explanation_decision(record.explanations))
    if record.removal.get("fixed groups"):
        lines.append(_removal_line(record.removal))
    if record.folding:
        lines.append(_folding_line(record.folding, record.checks))
    return lines + [""]


def _folding_line(folding: dict[str, Any], checks: dict[str, Any]) -> str:
    """That BatchNorm was folded, apart from pruning (one line)."""
    difference = checks.get("folded vs masked max |difference|")
    return (
        f"- **BatchNorm folded (not pruning):** {format_number(folding['BatchNorm layers folded'])} BatchNorm "
        f"layer(s) folded into the convolution before each, for eager PyTorch inference "
        f"({format_number(folding['BatchNorm layers left'])} left). The sizes above are removal's "
        f"({format_number(folding['params after removal'])} parameters); the shipped model holds "
        f"{format_number(folding['params shipped'])}, its {format_number(folding['BatchNorm parameters folded'])} "
        f"BatchNorm parameters now in the convolutions' weights and "
        f"{format_number(folding['convolution biases added'])} added biases. Every other figure is the folded model's; "
        f"folded vs masked max |difference| "
        f"{'—' if difference is None else f'{difference:.1e}'} (tolerance {folding['tolerance']:g})."
    )


#: Fixed groups named on the decision line (the rest are counted).
NAMED_GROUPS = 3


def _removal_line(removal: dict[str, Any]) -> str:
    """Which units compress could not remove, and why (one line)."""
    fixed = removal["fixed groups"]
    kept = removal["units"] - removal["removable units"]
    named = "; ".join(f"`{name}` ({reason})" for name, reason in list(fixed.items())[:NAMED_GROUPS])
    more = f"; and {len(fixed) - NAMED_GROUPS} more" if len(fixed) > NAMED_GROUPS else ""
    return (
        f"- **Not removable:** physical removal keeps {len(fixed)} unit group(s) whole ({format_number(kept)} of "
        f"{format_number(removal['units'])} units; rates count the other {format_number(removal['removable units'])}): "
        f"{named}{more}."
    )


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
    if record.explanations:
        lines += explanation_lines(record.explanations)
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
    if record.folding:
        lines += ["### BatchNorm folding (after removal; not counted in the sizes above)", "", *_pairs(record.folding)]
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
