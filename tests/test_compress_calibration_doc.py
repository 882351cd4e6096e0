"""The calibration tables quoted in bench/compress_calibration_results.md are the ones its committed CSV gives."""

from __future__ import annotations

from helpers import REPO, load_script


def _bench():
    return load_script("bench/compress_calibration.py")


def test_calibration_tables_are_generated_from_the_committed_csv() -> None:
    module = _bench()
    document = (REPO / "bench" / "compress_calibration_results.md").read_text()
    rows = module.read_csv(REPO / "docs" / "results" / "compress_calibration_cpu.csv")
    assert rows, "the CSV holds per-run rows"
    for table in (module.markdown_table(rows), module.pooled_table(rows), module.certifiable_table(rows)):
        assert table in document
    for row in rows:  # a shipped run's verdict: its test drop against its rule's tolerance
        if row["shipped"] == "True":
            assert (float(row["test_drop"]) <= module.RULES[row["rule"]][0] + 1e-9) == (row["kept"] == "True")
        else:
            assert module.is_decision(row["refusal"]), "a refusal in the CSV is the rule's, not a failed run"
