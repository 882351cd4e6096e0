"""The clustered bootstrap: coverage with checkpoint-level variance, the resampling levels, references, edge cases."""

from __future__ import annotations

import doctest
import json

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score

import medprune.stats
import medprune.stats.hierarchical
from medprune.stats import (
    CLUSTERED_METHOD_NOTE,
    METHOD_NOTE,
    BootstrapEstimate,
    bootstrap_ci,
    clustered_mean,
    clustered_metric,
    clustered_paired_mean,
    clustered_paired_metric,
    decide,
    hierarchical_bootstrap,
    hierarchical_bootstrap_counts,
)


def _study(rng: np.random.Generator, checkpoints: int, seeds: int, truth: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """One value per (checkpoint, seed): checkpoint effects dominate, seeds of a checkpoint are near-copies."""
    ids = np.repeat(np.arange(checkpoints), seeds)
    values = truth + rng.normal(0, 0.05, checkpoints)[ids] + rng.normal(0, 0.002, ids.size)
    return values, ids


def _misses(intervals: list[tuple[float, float]], truth: float) -> tuple[float, float]:
    """Fractions of intervals entirely below and entirely above the truth."""
    lows, highs = np.array(intervals).T
    return float(np.mean(highs < truth)), float(np.mean(lows > truth))


def test_clustered_interval_covers_where_the_run_level_interval_does_not() -> None:
    """6 checkpoints x 3 near-copy seeds, 400 seeded studies: the run-level bootstrap takes the 18 rows as
    independent and covers ~65%; the clustered one resamples the 6 checkpoints. The percentile bootstrap of a mean of K
    clusters is itself narrow for small K (by sqrt((K - 1) / K), and z where t is due): at K = 6 theory predicts 87%
    and long simulations give 85-87%, so the bound below (0.78) sits 4 standard errors (1.8% at 400 studies) under it.
    At 20 checkpoints that bias is small (theory 93%, simulated tails 2-4.5% each): each tail must stay <= 6%, about
    3 standard errors (0.9%) above the expected ~3.5%."""
    rng = np.random.default_rng(1)
    studies, truth = 400, 0.5
    old, new, many = [], [], []
    for study in range(studies):
        values, ids = _study(rng, 6, 3, truth)
        ci = bootstrap_ci(values, n_resamples=999, seed=study)
        old.append((ci.low, ci.high))
        clustered = clustered_mean(values, ids, n_resamples=999, seed=study).interval(0.95)
        new.append((clustered.low, clustered.high))
        assert clustered.n == 6 and clustered.n_rows == 18
        values, ids = _study(rng, 20, 3, truth)
        wide = clustered_mean(values, ids, n_resamples=999, seed=study).interval(0.95)
        many.append((wide.low, wide.high))
    old_cover, new_cover = 1 - sum(_misses(old, truth)), 1 - sum(_misses(new, truth))
    assert old_cover < 0.75
    assert new_cover >= 0.78 and new_cover > old_cover + 0.12
    below, above = _misses(many, truth)
    assert below <= 0.06 and above <= 0.06 and 1 - below - above >= 0.90


def test_clustered_metric_covers_the_true_accuracy() -> None:
    """Rows x images grids with checkpoint effects (seeds flip ~2% of a checkpoint's answers), 15 checkpoints: the
    clustered two-level interval covers the population accuracy. Resampling checkpoints and images counts part of the
    image noise twice (a checkpoint's accuracy already carries it), so it errs wide: 97-99% in longer simulations;
    with 150 studies (standard error ~1.5%) the bound 0.90 catches an interval that lost either level."""
    rng = np.random.default_rng(11)
    truth, hits, studies = 0.85, 0, 150
    for study in range(studies):
        effect = rng.normal(0, 0.04, 15)
        base = rng.random((15, 200)) < truth + effect[:, None]
        ids = np.repeat(np.arange(15), 3)
        rows = base[ids]
        flip = rng.random(rows.shape) < 0.02
        rows = np.where(flip, rng.random(rows.shape) < truth + effect[ids][:, None], rows)
        ci = clustered_metric(rows, None, ids, n_resamples=999, seed=study).interval()
        hits += ci.low <= truth <= ci.high
    assert hits / studies >= 0.90


def test_checkpoints_are_drawn_whole_then_rows_within_them() -> None:
    # two checkpoints with constant values: a replicate holds 0, 1 or 2 copies of checkpoint "b" -> 0, 0.5 or 1
    values = [0.0, 0.0, 0.0, 1.0, 1.0, 1.0]
    est = clustered_mean(values, ["a", "a", "a", "b", "b", "b"], n_resamples=4000, seed=1)
    levels, counts = np.unique(est.replicates, return_counts=True)
    assert levels.tolist() == [0.0, 0.5, 1.0]
    assert counts / counts.sum() == pytest.approx([0.25, 0.5, 0.25], abs=0.03)
    # one checkpoint with rows [0, 1]: the rows are resampled -> 0, 0.5, 1 with 1/4, 1/2, 1/4; said in the note
    one = clustered_mean([0.0, 1.0], [7, 7], n_resamples=4000, seed=2)
    levels, counts = np.unique(one.replicates, return_counts=True)
    assert levels.tolist() == [0.0, 0.5, 1.0] and counts / counts.sum() == pytest.approx([0.25, 0.5, 0.25], abs=0.03)
    assert (
        one.n_clusters == 1 and "1 training checkpoint" in one.note and "checkpoint variation not included" in one.note
    )
    assert one.interval().has_interval


def test_unequal_checkpoints_draw_each_copy_with_its_own_rows() -> None:
    sizes = {"a": 1, "b": 2, "c": 4}
    ids = [c for c, n in sizes.items() for _ in range(n)]
    drawn: list[int] = []

    def statistic(rows: np.ndarray, images: np.ndarray | None) -> float:
        drawn.append(rows.size)
        assert images is None and np.all(np.diff(rows) >= 0)
        return float(rows.size)

    est = hierarchical_bootstrap(statistic, ids, n_resamples=500, seed=0)
    assert drawn[0] == 7  # the observed data: every row once
    # each replicate draws 3 checkpoints and, per copy, as many rows as that checkpoint has: sizes sum to 3 to 12
    assert set(est.replicates.tolist()) <= {float(a + b + c) for a in (1, 2, 4) for b in (1, 2, 4) for c in (1, 2, 4)}
    assert est.replicates.mean() == pytest.approx(7, abs=0.3)


def test_vectorised_wrappers_match_the_plain_statistic_for_the_same_seed() -> None:
    rng = np.random.default_rng(5)
    ids = np.repeat(["c0", "c1", "c2", "c3"], [3, 2, 3, 1])
    values = rng.normal(size=ids.size)
    fast = clustered_mean(values, ids, n_resamples=300, seed=9)
    slow = hierarchical_bootstrap(lambda rows, images: values[rows].mean(), ids, n_resamples=300, seed=9)
    assert fast.estimate == pytest.approx(values.mean()) and slow.estimate == pytest.approx(values.mean())
    np.testing.assert_allclose(fast.replicates, slow.replicates, rtol=1e-12)

    labels = (rng.random(120) < 0.3).astype(int)
    correct = rng.random((ids.size, 120)) < np.where(labels == 1, 0.7, 0.9)
    predictions = np.where(correct, labels, 1 - labels)

    def balanced(rows: np.ndarray, images: np.ndarray | None) -> float:
        assert images is not None and images.shape == (120,)
        return float(np.mean([balanced_accuracy_score(labels[images], predictions[r, images]) for r in rows]))

    reference = hierarchical_bootstrap(balanced, ids, n_images=120, n_resamples=40, seed=3)
    vectorised = clustered_metric(correct, labels, ids, metric="balanced_accuracy", n_resamples=40, seed=3)
    assert vectorised.estimate == pytest.approx(reference.estimate)
    np.testing.assert_allclose(vectorised.replicates, reference.replicates, rtol=1e-10)
    accuracy = clustered_metric(correct, labels, ids, n_resamples=40, seed=3)
    assert accuracy.estimate == pytest.approx(correct.mean())

    counts = hierarchical_bootstrap_counts(lambda c, i: (c @ values) / c.sum(axis=1), ids, n_resamples=300, seed=9)
    np.testing.assert_allclose(counts.replicates, fast.replicates, rtol=1e-12)


def test_paired_metric_of_identical_methods_is_exactly_zero() -> None:
    rng = np.random.default_rng(0)
    labels = (rng.random(80) < 0.5).astype(int)
    grid = rng.random((6, 80)) < 0.8
    ids = [0, 0, 0, 1, 1, 1]
    for metric in ("accuracy", "balanced_accuracy"):
        same = clustered_paired_metric(grid, grid.copy(), labels, ids, metric=metric, n_resamples=500, seed=0)
        ci = same.interval()
        assert same.estimate == 0.0 and np.all(same.replicates == 0.0) and (ci.low, ci.high) == (0.0, 0.0)
        assert same.p_value() == 1.0
        assert decide(same, margin=0.0) == "inconclusive"
        assert decide(same, margin=0.01) == "equivalent"


def test_paired_metric_is_the_difference_of_the_metrics_on_shared_draws() -> None:
    rng = np.random.default_rng(4)
    labels = rng.integers(0, 3, 150)
    ids = np.repeat(np.arange(5), 2)
    a = rng.random((10, 150)) < 0.85
    b = rng.random((10, 150)) < 0.75
    for metric in ("accuracy", "balanced_accuracy"):
        kw = {"metric": metric, "n_resamples": 400, "seed": 8}
        paired = clustered_paired_metric(a, b, labels, ids, **kw)  # type: ignore[arg-type]
        alone_a, alone_b = clustered_metric(a, labels, ids, **kw), clustered_metric(b, labels, ids, **kw)  # type: ignore[arg-type]
        assert paired.estimate == pytest.approx(alone_a.estimate - alone_b.estimate)
        np.testing.assert_allclose(paired.replicates, alone_a.replicates - alone_b.replicates, atol=1e-12)
        assert decide(paired, margin=0.01) == "better" and paired.interval().low > 0


def test_paired_mean_subtracts_matched_rows_and_drops_broken_pairs() -> None:
    a = np.array([0.9, 0.8, np.nan, 0.7, 0.6])
    b = np.array([0.8, 0.7, 0.5, 0.6, 0.5])
    est = clustered_paired_mean(a, b, [0, 0, 1, 1, 2], n_resamples=200)
    assert est.estimate == pytest.approx(0.1) and est.n_rows == 4 and est.n_clusters == 3
    assert "1 non-finite value(s) left out" in est.note and "3 training checkpoints" in est.note
    with pytest.raises(ValueError, match="matched rows"):
        clustered_paired_mean(a, b[:4], [0, 0, 1, 1, 2])


def test_same_seed_same_replicates_other_seed_other_replicates() -> None:
    values, ids = _study(np.random.default_rng(1), 6, 3)
    first = clustered_mean(values, ids, n_resamples=800, seed=4)
    assert np.array_equal(first.replicates, clustered_mean(values, ids, n_resamples=800, seed=4).replicates)
    assert not np.array_equal(first.replicates, clustered_mean(values, ids, n_resamples=800, seed=5).replicates)
    grid = np.random.default_rng(2).random((18, 50)) < 0.8
    one = clustered_metric(grid, None, ids, n_resamples=300, seed=1)
    assert np.array_equal(one.replicates, clustered_metric(grid, None, ids, n_resamples=300, seed=1).replicates)
    assert first.replicates.shape == (800,) and not first.replicates.flags.writeable


def test_no_rows_or_no_images_give_no_estimate_and_no_crash() -> None:
    empty = clustered_mean([], [], n_resamples=100)
    assert empty.estimate is None and empty.replicates.size == 0 and empty.n_clusters == 0 and empty.n_rows == 0
    assert "no rows" in empty.note and not empty.has_replicates
    ci = empty.interval()
    assert ci.low is None and ci.high is None and ci.n == 0
    assert empty.p_value() == 1.0 and empty.tost_p(0.1) == 1.0 and decide(empty, margin=0.1) == "inconclusive"
    assert json.loads(json.dumps(empty.as_dict(), allow_nan=False))["estimate"] is None
    no_images = clustered_metric(np.zeros((2, 0), dtype=bool), None, [0, 1], n_resamples=10)
    assert no_images.estimate is None and "no test images" in no_images.note
    nothing = hierarchical_bootstrap(lambda rows, images: 1.0, [], n_resamples=10)
    assert nothing.estimate is None and nothing.replicates.size == 0


def test_p_values_and_interval_follow_the_documented_formulas() -> None:
    est = BootstrapEstimate(5.0, np.arange(1.0, 10.0), n_clusters=4, n_rows=12, method="hand-made")
    assert est.p_value() == pytest.approx(2 * 1 / 10)  # no replicate <= 0: (0 + 1) / (9 + 1), doubled
    assert est.p_value(null=5.0) == pytest.approx(1.0)  # (5 + 1) / 10 each side, doubled, clipped
    assert est.tost_p(2.0) == pytest.approx((8 + 1) / 10)  # 8 replicates >= 2
    assert est.tost_p(10.0) == pytest.approx(1 / 10)  # none beyond either margin
    ci = est.interval(0.8)
    assert (ci.low, ci.high) == pytest.approx(tuple(np.quantile(np.arange(1.0, 10.0), [0.1, 0.9])))
    assert ci.n == 4 and ci.n_rows == 12 and ci.confidence == 0.8 and ci.method == "hand-made"
    record = json.loads(json.dumps(est.as_dict(0.8), allow_nan=False))
    assert record["n_clusters"] == 4 and record["n_resamples"] == 9 and record["low"] == pytest.approx(ci.low)
    with pytest.raises(ValueError, match="finite"):
        BootstrapEstimate(0.0, np.array([0.0, np.nan]), 1, 1)
    with pytest.raises(ValueError, match="margin must be"):
        est.tost_p(-1.0)
    with pytest.raises(ValueError, match="confidence must be in"):
        est.interval(95)


def test_tost_below_alpha_matches_the_narrower_interval_inside_the_margin() -> None:
    rng = np.random.default_rng(6)
    # the 90% interval of N(centre, 0.005) spans centre +/- 0.0082: inside +/-0.015 for |centre| < 0.0068
    for centre, inside in [(-0.02, False), (-0.012, False), (0.0, True), (0.003, True), (0.012, False)]:
        est = BootstrapEstimate(centre, rng.normal(centre, 0.005, 3999), 6, 18)
        ci = est.interval(0.90)
        assert (-0.015 < ci.low and ci.high < 0.015) == inside  # type: ignore[operator]
        assert (est.tost_p(0.015) < 0.05) == inside


def test_bad_requests_name_the_parameter() -> None:
    with pytest.raises(ValueError, match="one id per row: values has 3 rows, clusters has 2"):
        clustered_mean([1.0, 2.0, 3.0], [0, 1])
    with pytest.raises(ValueError, match="n_resamples must be"):
        clustered_mean([1.0, 2.0], [0, 1], n_resamples=0)
    with pytest.raises(ValueError, match="metric must be one of"):
        clustered_metric(np.ones((2, 3)), None, [0, 1], metric="auroc")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="needs labels"):
        clustered_metric(np.ones((2, 3)), None, [0, 1], metric="balanced_accuracy")
    with pytest.raises(ValueError, match="labels has 2 entries"):
        clustered_metric(np.ones((2, 3)), [0, 1], [0, 1])
    with pytest.raises(ValueError, match="clusters must be one id per row"):
        clustered_mean([1.0, 2.0], np.zeros((2, 1)))
    with pytest.raises(ValueError, match="n_images must be"):
        hierarchical_bootstrap(lambda rows, images: 0.0, [0], n_images=-1)


def test_method_notes_say_what_is_independent() -> None:
    assert "training checkpoints" in CLUSTERED_METHOD_NOTE and "lower bound" in CLUSTERED_METHOD_NOTE
    assert "then the selection seeds" in CLUSTERED_METHOD_NOTE and "test images" in CLUSTERED_METHOD_NOTE
    assert "not independent" in METHOD_NOTE and "too narrow" in METHOD_NOTE
    est = clustered_mean([0.1, 0.2, 0.3, 0.4], [0, 0, 1, 1], n_resamples=50, seed=3)
    assert (
        "2 training checkpoints (< 5)" in est.note and "training checkpoints" in est.method and "seed 3" in est.method
    )


@pytest.mark.parametrize("module", [medprune.stats, medprune.stats.hierarchical])
def test_examples_in_the_docstrings_hold(module: object) -> None:
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)  # type: ignore[arg-type]
    assert result.attempted > 0 and result.failed == 0
