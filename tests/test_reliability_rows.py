"""Issue 14, item 1 (second line of defence): a row log written twice over still yields each row once."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medprune.sweep.table import RowLog, row_id, row_key


def _row(rate: float, accuracy: float) -> dict:
    row = {"checkpoint": "ab12", "dataset": "d", "method": "lrp", "sampling": "random", "rate": rate}
    return {**row, "row_id": row_id(row), "accuracy": accuracy}


def test_duplicated_log_yields_each_row_once_last_wins(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    log = RowLog(tmp_path / "rows.jsonl")
    first = [_row(r, 0.5) for r in (0.0, 0.1, 0.2)]
    second = [_row(r, 0.9) for r in (0.0, 0.1, 0.2)]
    text = "".join(json.dumps(r) + "\n" for r in first + second)
    log.path.write_text(text + json.dumps(_row(0.3, 0.1))[:20])  # two writers' rows, then a kill mid-line
    with caplog.at_level(logging.WARNING, logger="medprune.sweep.table"):
        rows = log.read()
    assert [r["rate"] for r in rows] == [0.0, 0.1, 0.2]
    assert [r["accuracy"] for r in rows] == [0.9, 0.9, 0.9]
    assert "3 duplicated row(s)" in caplog.text and "partial last line" in caplog.text
    assert len(log.finished()) == 3


def test_a_line_that_is_not_a_row_names_the_log_and_line(tmp_path: Path) -> None:
    log = RowLog(tmp_path / "rows.jsonl")
    log.path.write_bytes(json.dumps(_row(0.1, 0.5)).encode() + b"\n[1, 2]\n" + json.dumps(_row(0.2, 0.5)).encode())
    with pytest.raises(ValueError, match=r"rows\.jsonl line 2 is not a row"):
        log.read()
    log.path.write_bytes(b"\xff\xfe\n" + json.dumps(_row(0.2, 0.5)).encode() + b"\n")
    with pytest.raises(ValueError, match=r"rows\.jsonl line 1 is not valid JSON"):
        log.read()


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([0.0, 0.1, 0.2, 0.3, 0.5]), st.floats(0, 1)), min_size=1, max_size=30))
def test_read_keeps_one_row_per_id_and_the_last_value(tmp_path_factory: pytest.TempPathFactory, writes: list) -> None:
    log = RowLog(tmp_path_factory.mktemp("log") / "rows.jsonl")
    for rate, accuracy in writes:
        log.append(_row(rate, accuracy))
    rows = log.read()
    keys = [row_key(r) for r in rows]
    assert len(keys) == len(set(keys)) == len({rate for rate, _ in writes})
    last = {rate: accuracy for rate, accuracy in writes}
    assert {r["rate"]: r["accuracy"] for r in rows} == last
