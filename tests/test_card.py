"""The model card renders every number it is given, and card.json is the record itself (strict JSON)."""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from medprune.compression.card import (
    ClassRates,
    CompressionRecord,
    Latency,
    LayerChange,
    SearchRow,
    SplitMetrics,
    format_number,
    render_markdown,
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


def _numbers(value: object) -> list[float | int]:
    if isinstance(value, dict):
        return [n for v in value.values() for n in _numbers(v)]
    if isinstance(value, (list, tuple)):
        return [n for v in value for n in _numbers(v)]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return [value]
    return []


@settings(max_examples=40, deadline=None)
@given(record=records())
def test_every_number_is_rendered(record: CompressionRecord) -> None:
    text = render_markdown(record)
    fields = asdict(record)
    config = fields.pop("config")  # shown verbatim as JSON
    assert json.dumps(config, indent=2) in text
    numbers = _numbers(fields)
    assert len(numbers) > 40
    for number in numbers:
        assert format_number(number) in text, number
    for digest in record.hashes.values():
        assert digest in text
    assert record.ci_method in text


@settings(max_examples=10, deadline=None)
@given(record=records())
def test_card_json_is_the_record(record: CompressionRecord, tmp_path_factory) -> None:  # noqa: ANN001
    out = tmp_path_factory.mktemp("card")
    json_path, md_path = write_card(record, out)
    loaded = json.loads(json_path.read_text(), parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))
    expected = json.loads(json.dumps(asdict(record)))  # tuples become lists
    assert loaded == expected
    assert md_path.read_text() == render_markdown(record)


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
    assert "0.4900" in md_path.read_text() and "| a |" in md_path.read_text()
