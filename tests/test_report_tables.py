"""Table 1, drops and lossless rates on hand-made tables whose answers are known."""

from __future__ import annotations

import math

import pytest

from medprune.report.tables import best_curve, lossless_rate, lossless_rates, table1, with_drops


def _row(ckpt, method, sampling, rate, acc, recalls=(1.0, 1.0), dataset="d", split="test", **extra):
    return {
        "model": "m",
        "dataset": dataset,
        "checkpoint": ckpt,
        "method": method,
        "sampling": sampling,
        "sign": "signed",
        "target": "true",
        "n_per_class": 10,
        "seed": 0,
        "scope": "global",
        "normalize": "none",
        "rate": rate,
        "accuracy": acc,
        "recall_a": recalls[0],
        "recall_b": recalls[1],
        "split": split,
        **extra,
    }


def _table():
    rows = [_row("m1", "baseline", "none", 0.0, 0.90, (0.9, 0.9)), _row("m2", "baseline", "none", 0.0, 0.80)]
    # m1/lrp: drops 0, 0.02, 0.10 at 0.15/0.30/0.50; m2/lrp: drops 0.02, 0.04, 0.20
    for rate, a1, a2 in [(0.0, 0.90, 0.80), (0.15, 0.90, 0.78), (0.30, 0.88, 0.76), (0.50, 0.80, 0.60)]:
        rows.append(_row("m1", "lrp", "random", rate, a1, (0.9, 0.9 - (0.9 - a1) * 3)))
        rows.append(_row("m2", "lrp", "random", rate, a2))
    for rate, acc in [(0.0, 0.90), (0.15, 0.70), (0.30, 0.60)]:
        rows.append(_row("m1", "random", "none", rate, acc))
    return rows + [{**r, "split": "val"} for r in rows]  # the same numbers on validation


def test_drops_against_own_baseline():
    drops = {(r["checkpoint"], r["method"], r["rate"]): r for r in with_drops(_table())}
    assert drops[("m1", "lrp", 0.30)]["drop"] == pytest.approx(0.02)
    assert drops[("m2", "lrp", 0.50)]["drop"] == pytest.approx(0.20)
    # worst class: recall_b fell from 0.9 to 0.9 - 0.02 * 3
    assert drops[("m1", "lrp", 0.30)]["worst_recall_drop"] == pytest.approx(0.06)


def test_table1_mean_and_sample_std():
    rows = {(r["method"], r["sampling"]): r for r in table1(_table())}
    lrp = rows[("lrp", "random")]
    assert lrp["n"] == 2 and lrp["rows"] == 2 and lrp["protocol"] == "paper"
    assert lrp["mean@0.15"] == pytest.approx(0.01)
    assert lrp["std@0.15"] == pytest.approx(math.sqrt(2) * 0.01)  # sd over the 2 checkpoints of (0, 0.02)
    assert lrp["mean@0.50"] == pytest.approx(0.15)
    # no row at 0.70: the cell stays empty (never filled from the 0.50 rows under a 0.70 label)
    assert lrp["n@0.70"] == 0 and lrp["mean@0.70"] is None and lrp["low@0.70"] is None
    control = rows[("random", "none")]
    assert control["mean@0.30"] == pytest.approx(0.30) and control["std@0.30"] is None  # one checkpoint: no sd


def test_table1_splits_on_varying_variants():
    rows = _table() + [_row("m1", "lrp", "random", r, 0.9, scope="layer") for r in (0.0, 0.15)]
    groups = table1(rows)
    assert {(g["method"], g.get("scope")) for g in groups} >= {("lrp", "global"), ("lrp", "layer")}


def test_missing_baseline_is_refused():
    with pytest.raises(ValueError, match="no baseline"):
        with_drops([_row("m9", "lrp", "random", 0.1, 0.5)])


@pytest.mark.parametrize(
    ("drops", "tol", "contiguous", "expected"),
    [
        ([0.0, 0.0, 0.004, 0.02, 0.004], 0.01, True, 0.2),
        ([0.0, 0.0, 0.004, 0.02, 0.004], 0.01, False, 0.4),
        ([0.0, 0.03, 0.04], 0.01, True, 0.0),
        ([0.0, -0.01, 0.05], 0.05, True, 0.2),  # exactly at the tolerance counts
    ],
)
def test_lossless_rate_known_answers(drops, tol, contiguous, expected):
    curve = [{"rate": 0.1 * i, "drop": d} for i, d in enumerate(drops)]
    assert lossless_rate(curve, tol, contiguous=contiguous) == pytest.approx(expected)


def test_lossless_and_clinical_rates_per_curve():
    result = {(r["checkpoint"], r["method"]): r for r in lossless_rates(_table(), tolerances=(0.01, 0.05))}
    m1 = result[("m1", "lrp")]
    assert m1["lossless@0.01"] == pytest.approx(0.15)
    assert m1["lossless@0.05"] == pytest.approx(0.30)
    assert m1["accuracy@lossless@0.05"] == pytest.approx(0.88)
    # worst-class recall drops 0.06 at 0.30: clinically lossless at 5% is only 0.15
    assert m1["clinical@0.05"] == pytest.approx(0.15)
    assert result[("m1", "random")]["lossless@0.05"] == 0.0
    best = best_curve(list(result.values()), 0.05)
    assert (best["checkpoint"], best["method"]) == ("m1", "lrp")
