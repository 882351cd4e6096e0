"""scripts/support_compress.py (compress end to end on every architecture of the support matrix) on one fast
architecture, and the committed docs/support-compress.md it generated."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from helpers import REPO, load_script


@pytest.fixture(scope="module")
def script():  # noqa: ANN201 - the script as a module
    return load_script("scripts/support_compress.py")


def test_a_mobilenet_is_compressed_end_to_end(script, tmp_path: Path, data_root: Path) -> None:  # noqa: ANN001
    row = script.run_one("torchvision:mobilenet_v3_small", 32, tmp_path, str(data_root))
    assert row.outcome == "shipped" and row.method == "lrp", row
    assert re.fullmatch(r"\d+%", row.units) and re.fullmatch(r"\d+\.\d\dM -> \d+\.\d\dM", row.params)
    text = script.markdown([row], row.seconds)
    assert "Compressed end to end: 1 of 1 architectures; failed: 0." in text


def test_a_refusal_is_one_line_and_a_crash_is_reported_as_failed(
    script,
    tmp_path: Path,
    data_root: Path,
    monkeypatch: pytest.MonkeyPatch,  # noqa: ANN001
) -> None:
    refused = script.run_one("torchvision:shufflenet_v2_x0_5", 32, tmp_path, str(data_root))
    assert refused.outcome.startswith("refused: physical removal") and "\n" not in refused.outcome

    def crash(*args: object, **kwargs: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(script, "compress", crash)
    crashed = script.run_one("torchvision:mobilenet_v2", 32, tmp_path, str(data_root))
    assert crashed.outcome == "FAILED: RuntimeError: a bug"


def test_the_committed_table_covers_the_matrix_without_a_failure(script) -> None:  # noqa: ANN001
    text = (REPO / "docs" / "support-compress.md").read_text()
    rows = [line for line in text.splitlines() if line.startswith("| `")]
    assert {line.split("`")[1] for line in rows} == {arch for arch, _ in script.support_matrix.ARCHITECTURES}
    assert "| FAILED" not in text
    shipped = [line for line in rows if "| shipped |" in line]
    summary = re.search(r"Compressed end to end: (\d+) of (\d+) architectures; failed: 0\.", text)
    assert summary is not None and int(summary.group(1)) == len(shipped) and int(summary.group(2)) == len(rows)
    assert len(shipped) >= 20  # issue 25: compress with a tiny budget on at least 20 architectures
