"""The calibration table quoted in bench/compress_calibration_results.md is the one its committed CSV gives."""

from __future__ import annotations

import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_calibration_table_is_generated_from_the_committed_csv() -> None:
    spec = importlib.util.spec_from_file_location("compress_calibration", REPO / "bench" / "compress_calibration.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    document = (REPO / "bench" / "compress_calibration_results.md").read_text()
    for name in ("compress_calibration.csv", "compress_calibration_pneumoniamnist_cpu.csv"):
        rows = module.read_csv(REPO / "docs" / "results" / name)
        assert rows, f"{name} holds per-run rows"
        assert module.markdown_table(rows) in document
        for row in rows:  # a shipped run's verdict: its test drop against its rule's tolerance
            if row["shipped"] == "True":
                assert (float(row["test_drop"]) <= module.RULES[row["rule"]][0] + 1e-9) == (row["kept"] == "True")
