"""The answer first (medprune.report.summary) and the page's one-line cells and verdict matrix, on small tables whose
answers are known."""

from __future__ import annotations

import pytest
from helpers import sweep_row

from medprune.report.page import compact_cell, paired_matrix, table1_display
from medprune.report.paired import paired_comparisons
from medprune.report.summary import answer_html, answer_markdown, answers, interval, key_rows
from medprune.report.tables import lossless_rates, lossless_summary, table1
from medprune.runs.report import ReportConfig, run_report
from medprune.sweep.table import write_csv

RATES = (0.0, 0.1, 0.2, 0.3, 0.4)
PARAMS = 1000


def _row(checkpoint: str, method: str, sampling: str, rate: float, split: str, accuracy: float) -> dict:
    return sweep_row(
        checkpoint,
        method,
        sampling,
        rate,
        split,
        achieved_rate=rate,
        accuracy=accuracy,
        balanced_accuracy=accuracy,
        worst_recall=accuracy,
        recall_a=accuracy,
        recall_b=accuracy,
        params_removed=int(rate * PARAMS),
        params_removed_fraction=rate,
        macs_removed=int(rate * 2e6),
        macs_removed_fraction=rate,
    )


def _table(holds: dict[str, float]) -> list[dict]:
    """Two checkpoints; each line keeps the unpruned accuracy (0.9, 0.88) up to its rate in ``holds`` and loses 0.2
    above it, on both splits."""
    rows = []
    for checkpoint, base in (("c1", 0.9), ("c2", 0.88)):
        for split in ("val", "test"):
            rows.append(_row(checkpoint, "baseline", "none", 0.0, split, base))
            for line, held in holds.items():
                method, sampling = line.split("/")
                for rate in RATES[1:]:
                    rows.append(_row(checkpoint, method, sampling, rate, split, base if rate <= held else base - 0.2))
    return rows


def _answer(holds: dict[str, float], tolerance: float = 0.01):
    rows = _table(holds)
    lossless = lossless_rates(rows, (tolerance,), metric="accuracy")
    summary = lossless_summary(lossless, (tolerance,), rows=rows, n_resamples=200)
    paired = paired_comparisons(rows, (0.2, 0.3), "accuracy", n_resamples=200)
    return rows, answers(summary, lossless, paired, rows, tolerance)


def test_the_answer_names_the_method_its_rate_its_n_and_what_it_removes():
    rows, found = _answer({"lrp/random": 0.3, "ig/random": 0.1, "random/none": 0.1})
    (answer,) = found
    assert answer.metric == "accuracy" and answer.protocol == "paper" and answer.sampling == "random"
    assert [(k.method, k.control) for k in answer.lines] == [("lrp", False), ("ig", False), ("random", True)]
    lrp = answer.lines[0]
    assert lrp.rate == pytest.approx(0.3) and lrp.n == 2 and lrp.rows == 2
    assert answer.recommended["method"] == "lrp" and answer.recommended["lossless@0.01"] == pytest.approx(0.3)
    # what pruning at 0.3 removes: the sweep's validation row of that run and rate
    assert answer.removal["params_removed"] == 300 and answer.removal["macs_removed_fraction"] == pytest.approx(0.3)
    # the paired verdicts (test, at the Table 1 rates given): LRP keeps 0.9 where random lost 0.2, at 0.2 and 0.3
    assert "than random @0.20, 0.30" in lrp.verdict and answer.paired_metric == "accuracy"
    assert "No attribution method" not in answer.headline and "LRP/random prunes 0.30" in answer.headline
    page, text = answer_html(answer), answer_markdown(answer)
    for shown in ("LRP/random", "0.30 [0.30, 0.30]", "2 ckpt (2 runs) †", "300 parameters (30.0%)", "random (control)"):
        assert shown in page and shown in text
    assert "lossless rate, accuracy drop ≤ 0.01 (val)" in page
    # the key figure's rows: the answer's lines at its setting, with the baselines
    assert {r["method"] for r in key_rows(answer, rows)} == {"baseline", "lrp", "ig", "random"}


def test_a_control_that_prunes_as_far_is_said_and_recommended():
    _, (answer,) = _answer({"lrp/random": 0.1, "random/none": 0.3})
    assert answer.recommended["method"] == "random"
    assert answer.headline.endswith("No attribution method prunes further than a control here.")
    assert "Recommended:</b> random, setting paper" in answer_html(answer)


def test_nothing_removed_at_a_lossless_rate_of_zero():
    _, (answer,) = _answer({"lrp/random": 0.0, "random/none": 0.0})
    assert answer.removal == {} and "It removes</b> nothing (lossless rate 0)" in answer_html(answer)


def test_one_line_cells_say_their_rate_and_never_fill_a_missing_one():
    rows = _table({"lrp/random": 0.3, "random/none": 0.1})
    lines = table1(rows, (0.15, 0.3), n_resamples=200)
    lrp = next(r for r in lines if r["method"] == "lrp")
    assert compact_cell(lrp, "0.15") == "no row at 0.15"  # the sweep has 0.1 and 0.2, never 0.15
    assert compact_cell(lrp, "0.30").startswith("0.000 [")
    assert compact_cell({**lrp, "achieved@0.30": 0.32}, "0.30").endswith("(achieved 0.32)")
    shown = table1_display(lines, (0.15, 0.3))
    assert "drop at rate 0.30 (test) [95% CI]" in shown[0] and not any("0.15" in k for k in shown[0])
    assert all("\n" not in str(v) for row in shown for v in row.values())
    assert interval(None, 0.1, 0.2) == "–" and interval(0.5, None, None) == "0.50"


def test_the_verdict_matrix_has_a_row_per_pair_and_a_column_per_rate():
    rows = _table({"lrp/random": 0.3, "ig/random": 0.1, "random/none": 0.1})
    paired = paired_comparisons(rows, (0.2, 0.3), "accuracy", n_resamples=200)
    ((title, table),) = paired_matrix(paired)
    assert title == "m on d, paper, test accuracy"
    assert table.count("<tr>") == 1 + 2 and "<th>rate 0.20</th><th>rate 0.30</th>" in table
    assert "lrp/random vs random (2 ckpt)" in table and "class='better'" in table


def test_a_control_that_samples_images_shows_at_the_answers_sampling_only():
    _, (answer,) = _answer({"lrp/random": 0.3, "taylor/random": 0.1, "taylor/confidence": 0.2, "random/none": 0.1})
    assert [k.name for k in answer.lines] == ["LRP/random", "random", "taylor/random"]
    assert "taylor/random @0.20, 0.30" in answer.lines[0].verdict and "confidence" not in answer.lines[0].verdict


def test_a_bare_table_gets_the_answer_first_and_its_key_figure(tmp_path):
    rows = [
        {k: v for k, v in r.items() if k != "balanced_accuracy"}
        for r in _table({"lrp/random": 0.3, "random/none": 0.1})
    ]
    write_csv(rows, tmp_path / "results.csv")
    config = ReportConfig(
        results=[str(tmp_path / "results.csv")],
        out=str(tmp_path / "report"),
        lossless_metric="accuracy",
        paired_metrics=["accuracy"],
        n_resamples=200,
    )
    result = run_report(config)
    page = result.html.read_text(encoding="utf-8")
    assert page.index("class='answer'") < page.index('alt="key figure: m on d"') < page.index("What was swept")
    assert "LRP/random prunes 0.30" in page and "bare table" in page  # no efficiency or heatmaps, and it says so
    key = tmp_path / "report" / "key_m_d.png"
    assert key in result.figures and key.stat().st_size > 5000  # accuracy only: the balanced-accuracy panel is left out
    assert "The answer" in result.markdown.read_text(encoding="utf-8").split("### Table 1")[0]
