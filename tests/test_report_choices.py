"""Choices read validation rows only; CIs are reproducible; Table 1 uses achieved rates; pairs are matched runs."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import sweep_row

from medprune.report.paired import paired_comparisons
from medprune.report.tables import best_curve, best_line, lossless_rates, table1
from medprune.sweep.table import encode_classes

LABELS = np.array([0] * 30 + [1] * 30)


def _row(ckpt, seed, method, sampling, rate, split, correct, achieved=None):
    rng = np.random.default_rng(abs(hash((ckpt, seed, method, rate, split))) % 2**32)
    right = rng.permutation(LABELS.size) < correct * LABELS.size
    predictions = np.where(right, LABELS, 1 - LABELS)
    row = sweep_row(
        ckpt,
        method,
        sampling,
        rate,
        split,
        seed,
        sign="signed" if method != "baseline" else "none",
        scope="global" if method != "baseline" else "none",
        achieved_rate=rate if achieved is None else achieved,
        accuracy=float(right.mean()),
        balanced_accuracy=float(right.mean()),
        auroc=0.9,
        worst_recall=float(right.mean()),
        recall_a=float(right.mean()),
        predictions=encode_classes(predictions),
    )
    if method == "baseline":
        row["labels"] = encode_classes(LABELS)
    return row


def _table():
    rows = []
    for ckpt in ("c1", "c2"):
        for split in ("val", "test"):
            rows.append(_row(ckpt, 0, "baseline", "none", 0.0, split, 0.9))
        for seed in (0, 1, 2):
            for split in ("val", "test"):
                # lrp keeps accuracy to rate 0.3 on both splits; random collapses from 0.2
                for rate, acc in [(0.0, 0.9), (0.1, 0.9), (0.2, 0.9), (0.3, 0.9), (0.4, 0.6)]:
                    rows.append(_row(ckpt, seed, "lrp", "random", rate, split, acc, achieved=rate + 0.01))
                for rate, acc in [(0.0, 0.9), (0.1, 0.9), (0.2, 0.5), (0.3, 0.5), (0.4, 0.5)]:
                    rows.append(_row(ckpt, seed, "random", "none", rate, split, acc))
    return rows


def _choices(rows):
    lossless = lossless_rates(rows, (0.02, 0.1), metric="balanced_accuracy")
    return (
        [(r["method"], r["checkpoint"], r["seed"], r["lossless@0.02"], r["lossless@0.1"]) for r in lossless],
        {k: best_line(lossless, 0.02)[k] for k in ("method", "checkpoint", "seed")},
        {k: best_curve(lossless, 0.1)[k] for k in ("method", "checkpoint", "seed")},
    )


def test_corrupting_test_metrics_leaves_every_choice_unchanged():
    rows = _table()
    before = _choices(rows)
    corrupted = [
        {**r, "accuracy": 0.0, "balanced_accuracy": 1.0, "worst_recall": 0.0, "predictions": r["predictions"][::-1]}
        if r["split"] == "test" and r["method"] != "baseline"
        else r
        for r in rows
    ]
    assert _choices(corrupted) == before
    assert before[1]["method"] == "lrp" and {r[3] for r in before[0] if r[0] == "lrp"} == {0.3}
    # the test numbers at the chosen rate are reported (and do change)
    chosen = lossless_rates(corrupted, (0.02,), metric="balanced_accuracy")[0]
    assert chosen["test@0.02"] == 1.0 and chosen["val@0.02"] == pytest.approx(0.9)


def test_bootstrap_intervals_are_reproducible_for_a_fixed_seed():
    rows = _table()
    first = table1(rows, (0.4,), n_resamples=500, seed=3)
    again = table1(rows, (0.4,), n_resamples=500, seed=3)
    other = table1(rows, (0.4,), n_resamples=500, seed=4)
    lrp = [r for r in first if r["method"] == "lrp"][0]
    # 2 training checkpoints x 3 selection seeds: the effective n is 2, beside the 6 runs
    assert lrp["n"] == 2 and lrp["rows"] == 6 and lrp["n@0.40"] == 2 and lrp["rows@0.40"] == 6
    assert lrp["ci@0.40"] == "checkpoints x seeds x test images"
    assert lrp["low@0.40"] < lrp["mean@0.40"] < lrp["high@0.40"]
    assert [(r["low@0.40"], r["high@0.40"]) for r in first] == [(r["low@0.40"], r["high@0.40"]) for r in again]
    assert [(r["low@0.40"], r["high@0.40"]) for r in first] != [(r["low@0.40"], r["high@0.40"]) for r in other]


def test_table1_uses_the_row_nearest_in_achieved_rate():
    rows = _table()
    # lrp's achieved rates are nominal + 0.01: at target 0.39 the row of nominal 0.4 (achieved 0.41) is nearest
    lrp = [r for r in table1(rows, (0.39, 0.35), n_resamples=200) if r["method"] == "lrp"][0]
    assert lrp["achieved@0.39"] == pytest.approx(0.41) and lrp["mean@0.39"] == pytest.approx(0.3)
    # at 0.35 no row is within 0.025 (achieved 0.31 and 0.41): the cell stays empty rather than borrow a neighbour
    assert lrp["n@0.35"] == 0 and lrp["low@0.35"] is None and lrp["ci@0.35"] == "no row at 0.35"


def test_paired_verdicts_use_matched_runs_only():
    rows = _table()
    rows = [r for r in rows if not (r["method"] == "random" and r["checkpoint"] == "c2" and r["seed"] == 2)]
    paired = paired_comparisons(rows, (0.2, 0.1), metric="accuracy", n_resamples=500)
    at_02 = [p for p in paired if p["rate"] == 0.2 and p["a"] == "lrp/random" and p["b"] == "random/none"][0]
    assert at_02["rows"] == 5 and at_02["n"] == 2  # (c2, seed 2) has no random curve: left out of the pairs
    assert at_02["difference"] == pytest.approx(0.4) and at_02["verdict"] == "better"
    at_01 = [p for p in paired if p["rate"] == 0.1 and p["a"] == "lrp/random"][0]
    # equal accuracy on different images of 60, 2 checkpoints: neither a difference nor equivalence within 1 point
    assert at_01["difference"] == pytest.approx(0.0) and at_01["verdict"] == "inconclusive"
    assert at_01["family"] == "d / paper / rate 0.10 / accuracy" and at_01["family_size"] == 1
