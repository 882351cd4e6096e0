"""The report's clustered statistics: effective n, copies counted once, lossless rates with validation noise,
test-confirmed rates, rate labels that are true, coupled protocols named, paired verdicts per family."""

from __future__ import annotations

import zlib

import numpy as np
import pytest
from helpers import sweep_row
from hypothesis import given, settings
from hypothesis import strategies as st

from medprune.report.clustered import (
    confirmed_estimates,
    curve_identity,
    lossless_estimates,
    paired_metric_batch,
    row_at,
)
from medprune.report.markdown import results_markdown
from medprune.report.page import ReportTables, table1_cell
from medprune.report.paired import paired_comparisons
from medprune.report.tables import (
    lossless_rate,
    lossless_rates,
    lossless_summary,
    on_split,
    table1,
    with_drops,
)
from medprune.stats import VERDICTS, clustered_paired_metric
from medprune.sweep.protocols import protocol_name
from medprune.sweep.table import encode_classes

LABELS = {"val": np.array([0] * 40 + [1] * 20), "test": np.array([0] * 30 + [1] * 30)}
RATES = (0.0, 0.1, 0.2, 0.3, 0.4)


def _seeded(*key) -> np.random.Generator:
    return np.random.default_rng(zlib.crc32(repr(key).encode()))


def _row(ckpt, seed, method, sampling, rate, split, predictions, **extra):
    y = LABELS[split]
    recalls = [float((predictions[y == c] == c).mean()) for c in (0, 1)]
    row = sweep_row(
        ckpt,
        method,
        sampling,
        rate,
        split,
        seed,
        achieved_rate=rate,
        accuracy=float((predictions == y).mean()),
        balanced_accuracy=float(np.mean(recalls)),
        worst_recall=min(recalls),
        recall_a=recalls[0],
        recall_b=recalls[1],
        predictions=encode_classes(predictions),
        **extra,
    )
    if method == "baseline":
        row["labels"] = encode_classes(y)
    return row


def _flip(y: np.ndarray, wrong: int, rng: np.random.Generator) -> np.ndarray:
    """``y`` with ``wrong`` random images misclassified."""
    index = rng.permutation(y.size)[:wrong]
    out = y.copy()
    out[index] = 1 - y[index]
    return out


def _table(checkpoints=("c1", "c2", "c3"), seeds=(0, 1, 2), rates=RATES, **extra):
    """lrp/random (seeds differ) and magnitude/none (deterministic: every seed a copy) on a few checkpoints; lrp
    loses 1 image per 0.1 up to 0.3 then collapses, magnitude loses 2 per 0.1."""
    rows = []
    for c, ckpt in enumerate(checkpoints):
        for split, y in LABELS.items():
            base = _flip(y, 2 + c, _seeded(ckpt, split, "base"))
            rows.append(_row(ckpt, 0, "baseline", "none", 0.0, split, base, **extra))
            for seed in seeds:
                for method, sampling in (("lrp", "random"), ("magnitude", "none")):
                    rng = _seeded(ckpt, split, method, seed if method == "lrp" else 0)
                    order = rng.permutation(np.flatnonzero(base == y))  # images the baseline gets right
                    for rate in rates:
                        step = round(rate * 10)
                        wrong = (step if step <= 3 else 15) if method == "lrp" else 2 * step
                        predictions = base.copy()
                        predictions[order[:wrong]] = 1 - y[order[:wrong]]
                        rows.append(_row(ckpt, seed, method, sampling, rate, split, predictions, **extra))
    return rows


def test_copies_count_once_and_effective_n_is_checkpoints():
    rows = _table()
    lines = {r["method"]: r for r in table1(rows, (0.2,), n_resamples=300)}
    assert (lines["lrp"]["n"], lines["lrp"]["rows"], lines["lrp"]["copies"]) == (3, 9, 0)
    assert (lines["magnitude"]["n"], lines["magnitude"]["rows"], lines["magnitude"]["copies"]) == (3, 3, 6)
    # the three copies of magnitude change nothing: the same cell as a sweep with one selection seed
    one_seed = {r["method"]: r for r in table1(_table(seeds=(0,)), (0.2,), n_resamples=300)}
    for key in ("mean@0.20", "low@0.20", "high@0.20", "n@0.20", "rows@0.20"):
        assert lines["magnitude"][key] == one_seed["magnitude"][key]
    assert table1_cell(lines["magnitude"], "0.20").endswith("n=3 ckpt (3 rows) †")


def test_a_rate_the_sweep_did_not_run_is_never_filled_from_another():
    rows = _table(rates=(0.0, 0.1, 0.2))
    lrp = [r for r in table1(rows, (0.15, 0.2), n_resamples=100) if r["method"] == "lrp"][0]
    assert lrp["n@0.15"] == 0 and lrp["low@0.15"] is None and table1_cell(lrp, "0.15") == "no 0.15"
    assert lrp["n@0.20"] == 3 and lrp["achieved@0.20"] == pytest.approx(0.2)
    text = results_markdown(
        ReportTables(rows, table1(rows, (0.15, 0.2), n_resamples=100), [], [], [], [], []), (0.15, 0.2), (0.05,)
    )
    assert "drop @0.15" not in text and "drop @0.20" in text and "No run has a row at rate 0.15" in text
    # a curve whose achieved rate misses the target by more than half a grid step has no row there either
    curve = [{"rate": 0.1, "achieved_rate": 0.11}, {"rate": 0.2, "achieved_rate": 0.19}]
    assert row_at(curve, 0.15) is None and row_at(curve, 0.2)["rate"] == 0.2 and row_at(curve, 0.12)["rate"] == 0.1


def test_protocol_names_say_coupled():
    paper = {"scope": "global", "normalize": "none", "sign": "signed", "recalibrate": "none"}
    assert protocol_name(paper) == "paper" and protocol_name({**paper, "couplings": "True"}) == "paper+coupled"
    rows = _table(seeds=(0,), couplings=True)
    lines = table1(rows, (0.2,), n_resamples=50)
    assert {r["protocol"] for r in lines} == {"paper+coupled"}
    text = results_markdown(ReportTables(rows, lines, [], [], [], [], []), (0.2,), (0.05,))
    assert "Table 1, paper+coupled:" in text and "Table 1, paper:" not in text


@settings(max_examples=40, deadline=None)
@given(
    drops=st.lists(st.integers(0, 6), min_size=4, max_size=4),
    tolerance=st.sampled_from([0.0, 1 / 60, 2 / 60, 0.05]),
    contiguous=st.booleans(),
    metric=st.sampled_from(["accuracy", "balanced_accuracy", "worst_class_recall"]),
)
def test_vectorised_lossless_rule_agrees_with_lossless_rate(drops, tolerance, contiguous, metric):
    """On the observed images the bootstrap's recomputed rate is :func:`lossless_rate` of the rows' own metrics."""
    y = LABELS["val"]
    base = y.copy()
    reference = _row("c", 0, "baseline", "none", 0.0, "val", base)
    curve = [_row("c", 0, "lrp", "random", 0.0, "val", base)]
    for i, wrong in enumerate(drops, start=1):
        predictions = base.copy()
        predictions[:wrong] = 1 - y[:wrong]  # the first images are of class 0
        curve.append(_row("c", 0, "lrp", "random", 0.1 * i, "val", predictions))
    expected = lossless_rate(with_drops([reference, *curve])[1:], tolerance, f"drop_{metric}", contiguous)
    estimates = lossless_estimates(
        [curve], [reference], metric=metric, tolerances=[tolerance, 1.0], contiguous=contiguous, n_resamples=20
    )
    assert estimates is not None and estimates[0].estimate == pytest.approx(expected)
    assert estimates[1].estimate == pytest.approx(0.4)  # a second tolerance read from the same draw


def test_lossless_interval_includes_validation_noise():
    """One checkpoint, one run: resampling runs alone gives a zero-width interval; the validation images do not."""
    rows = _table(checkpoints=("c1",), seeds=(0,))
    lossless = lossless_rates(rows, (1 / 60 + 1e-9,), metric="accuracy")
    [lrp] = [
        r for r in lossless_summary(lossless, (1 / 60 + 1e-9,), rows=rows, n_resamples=400) if r["method"] == "lrp"
    ]
    label = f"{1 / 60 + 1e-9:g}"
    assert lrp["ci@" + label] == "checkpoints x seeds x validation images"
    assert lrp["achieved@" + label] == pytest.approx(0.1)  # 1 image of 60 per 0.1: within 1/60 at 0.1 only
    assert lrp["low@" + label] < lrp["achieved@" + label] or lrp["high@" + label] > lrp["achieved@" + label]
    runs_only = [r for r in lossless_summary(lossless, (1 / 60 + 1e-9,)) if r["method"] == "lrp"][0]
    assert runs_only["ci@" + label] == "checkpoints x seeds" and runs_only["low@" + label] == runs_only["high@" + label]


def test_summary_estimate_is_the_mean_of_the_runs_and_copies_are_left_out():
    rows = _table()
    lossless = lossless_rates(rows, (0.05,), metric="balanced_accuracy")
    copies = [r for r in lossless if r["copy_of"] is not None]
    assert len(copies) == 6 and {r["method"] for r in copies} == {"magnitude"} and {r["copy_of"] for r in copies} == {0}
    summary = {r["method"]: r for r in lossless_summary(lossless, (0.05,), rows=rows, n_resamples=300)}
    for method, line in summary.items():
        distinct_runs = [r for r in lossless if r["method"] == method and r["copy_of"] is None]
        assert line["achieved@0.05"] == pytest.approx(np.mean([r["achieved@0.05"] for r in distinct_runs]))
        assert line["confirmed_rate@0.05"] == pytest.approx(np.mean([r["confirmed_rate@0.05"] for r in distinct_runs]))
        assert line["low@0.05"] <= line["achieved@0.05"] <= line["high@0.05"]
    assert (summary["magnitude"]["n"], summary["magnitude"]["rows"], summary["magnitude"]["copies"]) == (3, 3, 6)


def test_test_confirmed_rate_falls_back_to_the_largest_smaller_rate_within_tolerance():
    rows = _table(checkpoints=("c1",), seeds=(0,))
    # on test, lrp at 0.3 loses 8 images instead of 3 (beyond 0.05 of 60), 0.2 still 2
    for row in rows:
        if row["split"] == "test" and row["method"] == "lrp" and row["rate"] == 0.3:
            y = LABELS["test"]
            predictions = np.where(np.arange(y.size) < 8, 1 - y, y)
            row.update(_row("c1", 0, "lrp", "random", 0.3, "test", predictions))
    [lrp] = [r for r in lossless_rates(rows, (0.05,), metric="accuracy") if r["method"] == "lrp"]
    assert lrp["lossless@0.05"] == pytest.approx(0.3) and lrp["confirmed@0.05"] is False
    assert lrp["confirmed_rate@0.05"] == pytest.approx(0.2)
    test_rows = with_drops(on_split(rows, "test"))
    curve = [r for r in test_rows if r["method"] == "lrp"]
    reference = [r for r in test_rows if r["method"] == "baseline"][0]
    estimates = confirmed_estimates(
        [curve], [reference], [[0.3], [0.0]], metric="accuracy", tolerances=[0.05, 0.05], n_resamples=50
    )
    assert estimates is not None and estimates[0].estimate == pytest.approx(0.2)
    assert estimates[1].estimate == 0.0 and not estimates[1].replicates.any()  # a choice of 0 confirms nothing


def test_a_lossless_rate_of_zero_is_never_reported_as_confirmed():
    rows = _table(seeds=(0,))
    # tolerance 0: lrp loses an image at 0.1, magnitude two: both lossless rates are 0
    lossless = lossless_rates(rows, (0.0,), metric="accuracy")
    assert {r["lossless@0"] for r in lossless} == {0.0} and {r["confirmed@0"] for r in lossless} == {None}
    summary = lossless_summary(lossless, (0.0,), rows=rows, n_resamples=100)
    assert all(r["chosen@0"] == 0 and r["confirmed@0"] is None for r in summary)
    text = results_markdown(ReportTables(rows, [], [], [], lossless, summary, []), (0.3,), (0.0,))
    assert "100%" not in text and "nothing to confirm" in text


def _paired_rows():
    """Three checkpoints: lrp beats random by 10 images of 60 at 0.3; taylor copies lrp's predictions exactly."""
    rows = []
    for ckpt in ("c1", "c2", "c3"):
        y = LABELS["test"]
        base = _flip(y, 3, _seeded(ckpt, "base"))
        rows.append(_row(ckpt, 0, "baseline", "none", 0.0, "test", base))
        for seed in (0, 1):
            order = _seeded(ckpt, seed).permutation(np.flatnonzero(base == y))
            for method, sampling, wrong in (("lrp", "random", 2), ("random", "none", 12), ("taylor", "none", 2)):
                predictions = base.copy()
                predictions[order[:wrong]] = 1 - y[order[:wrong]]
                rows.append(_row(ckpt, seed, method, sampling, 0.3, "test", predictions))
    return rows


def test_paired_verdicts_are_decided_within_their_family():
    paired = paired_comparisons(_paired_rows(), (0.3, 0.5), metric="accuracy", n_resamples=500)
    assert {p["rate"] for p in paired} == {0.3}  # no row at 0.5: no comparison there
    by_control = {p["b"]: p for p in paired}
    assert set(by_control) == {"random/none", "taylor/none"}  # methods vs controls only
    assert {p["family"] for p in paired} == {"d / paper / rate 0.30 / accuracy"}
    assert all(p["family_size"] == 2 and p["verdict"] in VERDICTS for p in paired)
    assert by_control["random/none"]["verdict"] == "better" and by_control["random/none"]["n"] == 3
    assert by_control["taylor/none"]["verdict"] == "equivalent"  # identical predictions: A - B is 0 in every resample
    assert by_control["taylor/none"]["difference"] == 0.0
    # p-values are Holm-adjusted over the family, the interval simultaneous at 1 - 0.05 / 2
    assert all(p["p_holm"] >= p["p"] and p["confidence"] == pytest.approx(0.975) for p in paired)
    strict = paired_comparisons(_paired_rows(), (0.3,), metric="accuracy", n_resamples=500, margin=0.0)
    assert {p["b"]: p["verdict"] for p in strict}["taylor/none"] == "inconclusive"


def test_curve_identity_tells_copies_from_runs():
    rows = [r for r in _table(checkpoints=("c1",)) if r["split"] == "val" and r["method"] != "baseline"]
    identity = {
        (r["method"], r["seed"]): curve_identity(
            [x for x in rows if (x["method"], x["seed"]) == (r["method"], r["seed"])]
        )
        for r in rows
    }
    assert identity[("magnitude", 0)] == identity[("magnitude", 2)]
    assert identity[("lrp", 0)] != identity[("lrp", 1)]


@pytest.mark.parametrize("metric", ["accuracy", "balanced_accuracy"])
def test_one_draw_for_many_comparisons_equals_each_alone(metric):
    """The batched estimator against the reference, :func:`medprune.stats.clustered_paired_metric`, per comparison."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 50)
    clusters = ["c1", "c1", "c2", "c3", "c3", "c3"]
    grids_a = [rng.random((6, 50)) < p for p in (0.9, 0.7, 0.8)]
    grids_b = [rng.random((6, 50)) < p for p in (0.6, 0.7, 0.85)]
    batch = paired_metric_batch(grids_a, grids_b, labels, clusters, metric=metric, n_resamples=300, seed=4)
    for a, b, estimate in zip(grids_a, grids_b, batch, strict=True):
        alone = clustered_paired_metric(a, b, labels, clusters, metric=metric, n_resamples=300, seed=4)
        assert estimate.estimate == pytest.approx(alone.estimate, abs=1e-12)
        np.testing.assert_allclose(estimate.replicates, alone.replicates, atol=1e-12)
        assert (estimate.n_clusters, estimate.n_rows, estimate.n_images) == (3, 6, 50)
        assert (estimate.method, estimate.note) == (alone.method, alone.note)


def test_tolerances_read_from_one_draw_equal_each_alone():
    rows = _table(seeds=(0, 1))
    val = with_drops(on_split(rows, "val"))
    references = {r["checkpoint"]: r for r in val if r["method"] == "baseline"}
    curves = [
        [r for r in val if (r["method"], r["checkpoint"], r["seed"]) == ("lrp", c, s)]
        for c in ("c1", "c2", "c3")
        for s in (0, 1)
    ]
    refs = [references[c[0]["checkpoint"]] for c in curves]
    both = lossless_estimates(curves, refs, metric="balanced_accuracy", tolerances=[0.02, 0.05], n_resamples=200)
    alone = lossless_estimates(curves, refs, metric="balanced_accuracy", tolerances=[0.05], n_resamples=200)
    assert both is not None and alone is not None
    assert both[1].estimate == alone[0].estimate and np.array_equal(both[1].replicates, alone[0].replicates)
    assert both[1].note == alone[0].note and both[0].estimate <= both[1].estimate


def test_a_family_too_large_for_its_resamples_says_no_difference_is_attainable():
    """Two comparisons and 30 resamples: Holm's smallest p is 2 x 2/31 > 0.05, so even lrp's 10-image lead over random
    cannot be called 'better'; the rows and the report say why."""
    rows = _paired_rows()
    coarse = {p["b"]: p for p in paired_comparisons(rows, (0.3,), metric="accuracy", n_resamples=30)}
    assert coarse["random/none"]["verdict"] == "inconclusive" and coarse["random/none"]["p_holm"] >= 0.05
    assert "no better/worse attainable" in coarse["random/none"]["note"] and ">= 80" in coarse["random/none"]["note"]
    text = results_markdown(ReportTables(rows, [], [], [], [], [], list(coarse.values())), (0.3,), (0.05,))
    assert "cannot resolve a corrected difference" in text
    fine = {p["b"]: p for p in paired_comparisons(rows, (0.3,), metric="accuracy", n_resamples=80)}
    assert fine["random/none"]["verdict"] == "better" and "attainable" not in fine["random/none"]["note"]
