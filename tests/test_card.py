"""The model card renders every number it is given, and card.json is the record itself (strict JSON)."""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from medprune.compression.card import ClassRates, CompressionRecord, Latency, LayerChange, SearchRow, SplitMetrics
from medprune.compression.card_html import render_html
from medprune.compression.card_page import (
    decision_lines,
    format_number,
    milliseconds,
    render_markdown,
    score,
    times,
    write_card,
)

unit = st.floats(0, 1, allow_nan=False)
count = st.integers(0, 10**9)


@st.composite
def class_rates(draw: st.DrawFn, name: str) -> ClassRates:
    return ClassRates(
        name, draw(count), draw(count), draw(unit), (draw(unit), draw(unit)), draw(unit), (draw(unit), draw(unit))
    )


@st.composite
def split_metrics(draw: st.DrawFn) -> SplitMetrics:
    return SplitMetrics(
        draw(count),
        draw(unit),
        draw(unit),
        draw(st.none() | unit),
        draw(unit),
        [draw(class_rates("normal")), draw(class_rates("pneumonia"))],
    )


@st.composite
def records(draw: st.DrawFn) -> CompressionRecord:
    search = [
        SearchRow(draw(unit), draw(unit), draw(unit), draw(unit), draw(st.booleans()), {"auroc": draw(unit)})
        for _ in range(draw(st.integers(1, 4)))
    ]
    layers = [
        LayerChange(
            f"layer{i}",
            "conv",
            draw(count),
            draw(count),
            draw(count),
            draw(count),
            draw(count),
            draw(count),
        )
        for i in range(draw(st.integers(1, 4)))
    ]
    latency = [
        Latency(b, 2, draw(st.floats(0.01, 1e4)), draw(st.floats(0.01, 1e4)), draw(st.floats(0.1, 20))) for b in (1, 32)
    ]
    return CompressionRecord(
        title="resnet_small on pneumoniamnist",
        source={"checkpoint": "ckpt/model.safetensors", "params": draw(count)},
        choice={"method": "lrp", "tolerance": draw(unit), "chosen_rate": draw(unit)},
        search=search,
        totals={"units_before": draw(count), "macs_removed_fraction": draw(unit)},
        layers=layers,
        test_original=draw(split_metrics()),
        test_compressed=draw(split_metrics()),
        latency=latency,
        checks={"onnx_max_abs_diff": draw(st.floats(0, 1e-3)), "physical_equals_masked": True},
        commands=["medprune compress ckpt/model.safetensors --out out"],
        config={"tolerance": 0.01},
        hashes={"data": "ab" * 32, "weights_in": "cd" * 32},
        timings={"search": draw(st.floats(0, 1e3))},
    )


@settings(max_examples=40, deadline=None)
@given(record=records())
def test_every_number_is_rendered_in_the_format_of_its_kind(record: CompressionRecord) -> None:
    text = render_markdown(record)
    assert json.dumps(record.config, indent=2) in text  # shown verbatim as JSON
    for metrics in (record.test_original, record.test_compressed):  # metrics: three decimals
        for value in (metrics.accuracy, metrics.balanced_accuracy, metrics.auroc, metrics.worst_class_recall):
            assert score(value) in text
        for rates in metrics.per_class:
            assert f"| {score(rates.sensitivity)} | [{score(rates.sensitivity_ci[0])}, " in text
    for row in record.latency:  # latency: ms with two decimals, ratios with two and an x
        assert f"{milliseconds(row.original_ms)} -> {milliseconds(row.compressed_ms)} ms ({times(row.speedup)})" in text
    for row in record.search:  # the audit rows: format_number
        assert f"| {format_number(row.rate)} | {format_number(row.unit_rate)} |" in text
    for layer in record.layers:
        assert f"| {format_number(layer.params_before)} | {format_number(layer.params_after)} |" in text
    for key, value in {**record.totals, **record.checks, **record.timings, **record.source}.items():
        assert f"- {key}: {format_number(value)}" in text
    for digest in record.hashes.values():
        assert digest in text
    assert record.ci_method in text
    assert text.index("## Decision") < text.index("## Intended use") < text.index("## Evidence")


def test_a_binary_task_shows_each_class_once_and_a_multiclass_one_its_specificity() -> None:
    rates = [ClassRates(n, 5, 5, 0.8, (0.5, 0.9), 0.6, (0.3, 0.8)) for n in ("normal", "pneumonia", "other")]
    binary = CompressionRecord(
        "m", {}, {}, [], {}, [], SplitMetrics(10, 0.9, 0.85, None, 0.8, rates[:2]),
        SplitMetrics(10, 0.9, 0.85, None, 0.8, rates[:2]), [], {}, [], {}, {},
    )  # fmt: skip
    text = render_markdown(binary)
    table = text.split("| class | images |")[1].split("Intervals:")[0]
    assert "specificity" not in table and "shown once" in text
    assert text.count("| normal |") == 1 and text.count("| pneumonia |") == 1
    three = SplitMetrics(10, 0.9, 0.85, None, 0.8, rates)
    text = render_markdown(CompressionRecord("m", {}, {}, [], {}, [], three, three, [], {}, [], {}, {}))
    assert "| original specificity | compressed specificity |" in text and "| 0.600 | 0.600 |" in text


def test_decision_section_reads_the_measured_numbers() -> None:
    rates = [ClassRates(n, 5, 5, 0.8, (0.5, 0.9), 0.6, (0.3, 0.8)) for n in ("a", "b")]
    metrics = SplitMetrics(10, 0.9, 0.85, None, 0.8, rates)
    totals = {"params before": 1000, "params after": 250, "params removed (fraction)": 0.75}
    totals["MACs removed (fraction)"] = 0.6486
    verdict = {"verdict": "non-inferior at margin 0.02", "difference": -0.0017, "lower bound": -0.0122}
    promise = {"non-inferiority": {"balanced_accuracy": verdict}, "confidence": 0.95, "margin": 0.02}
    promise.update(flips=[{"newly_wrong": 3, "newly_right": 1}], method="m", **{"mcnemar p": 0.625})
    promise["flips"][0].update(class_name="a", images=5)
    record = CompressionRecord(
        "m", {}, {"metric": "balanced_accuracy", "tolerance": 0.02}, [], totals, [], metrics, metrics,
        [Latency(1, 2, 0.98875, 0.66861, 1.4788)], {}, [], {}, {}, warnings=["look"], promise=promise,
        base_model={"name": "model.safetensors", "sha256": "ab" * 32},
    )  # fmt: skip
    decision = decision_lines(record)
    text = "\n".join(decision)
    assert "> **Warning:** look" in text
    assert "75.0% of the parameters (1,000 -> 250)" in text and "64.9% of the multiply-accumulates" in text
    assert "batch 1: 0.99 -> 0.67 ms (1.48x)" in text
    assert "yes: non-inferior at margin 0.02 (change -0.002, 95% lower bound -0.012; 3 test images newly wrong" in text
    verdict["verdict"] = "not shown"
    assert "**Kept on test?** no: non-inferiority not shown (change" in "\n".join(decision_lines(record))
    assert "pruned from `model.safetensors`, SHA-256 `abababababab…`" in text
    assert "Not removable" not in text  # nothing recorded: no line


def test_decision_names_the_units_compress_could_not_remove() -> None:
    metrics = SplitMetrics(10, 0.9, 0.85, None, 0.8, [])
    fixed = {f"blocks.{i}.attn": "heads feed a reshape" for i in range(5)}
    removal = {"units": 1200, "removable units": 1000, "removable share": 1000 / 1200, "fixed groups": fixed}
    record = CompressionRecord("m", {}, {}, [], {}, [], metrics, metrics, [], {}, [], {}, {}, removal=removal)
    line = next(x for x in decision_lines(record) if "Not removable" in x)
    assert "keeps 5 unit group(s) whole (200 of 1,200 units; rates count the other 1,000)" in line
    assert "`blocks.0.attn` (heads feed a reshape)" in line and "`blocks.2.attn`" in line
    assert "`blocks.3.attn`" not in line and line.endswith("; and 2 more.")
    assert CompressionRecord.from_dict(record.to_dict()).removal == removal


@settings(max_examples=10, deadline=None)
@given(record=records())
def test_card_json_is_the_record(record: CompressionRecord, tmp_path_factory) -> None:  # noqa: ANN001
    out = tmp_path_factory.mktemp("card")
    json_path, md_path = write_card(record, out)
    loaded = json.loads(json_path.read_text(), parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))
    expected = json.loads(json.dumps(asdict(record)))  # tuples become lists
    assert loaded == expected
    assert md_path.read_text() == render_markdown(record)
    page = (out / "card.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and "<h2>Decision</h2>" in page and page.count("<table>") >= 3


def test_format_number() -> None:
    assert format_number(0.91234) == "0.9123"
    assert format_number(1234.5678) == "1,234.57"
    assert format_number(3) == "3" and format_number(10**6) == "1,000,000"
    assert format_number(None) == "—" and format_number(True) == "yes"
    assert format_number(math.pi) == "3.1416"


def test_write_card_creates_the_folder(tmp_path: Path) -> None:
    metrics = SplitMetrics(10, 0.9, 0.85, None, 0.8, [ClassRates("a", 5, 5, 0.8, (0.49, 0.94), 0.9, (0.6, 0.98))])
    record = CompressionRecord(
        "m", {}, {}, [], {}, [], metrics, metrics, [], {}, ["cmd"], {}, {"data": None}, timings={}
    )
    json_path, md_path = write_card(record, tmp_path / "deep" / "out")
    assert json.loads(json_path.read_text())["test_original"]["per_class"][0]["sensitivity_ci"] == [0.49, 0.94]
    assert "[0.490, 0.940]" in md_path.read_text() and "| a |" in md_path.read_text()


def test_html_embeds_the_images_and_escapes_text(tmp_path: Path) -> None:
    (tmp_path / "r.png").write_bytes(b"\x89PNG\r\n\x1a\nxyz")
    page = render_html(
        "# T <x>\n\n> **Warning:** a & b\n\n- one `code`\n\n![d](r.png)\n\n| a | b |\n|---|---|\n| 1 | 2 |", tmp_path
    )
    assert "<h1>T &lt;x&gt;</h1>" in page and "<blockquote><strong>Warning:</strong> a &amp; b</blockquote>" in page
    assert "<li>one <code>code</code></li>" in page and "data:image/png;base64,iVBORw0KGgp4eXo=" in page
    assert "<table><tr><th>a</th><th>b</th></tr><tr><td>1</td><td>2</td></tr></table>" in page
