"""Compress's decision rule on constructed predictions: the paired bound, the class guard, non-inferiority, McNemar."""

from __future__ import annotations

import numpy as np
import pytest

from medprune.compression.decision import (
    class_guard,
    flips,
    mcnemar_exact,
    metric_of_predictions,
    non_inferiority,
    paired_bound,
    smallest_certified_tolerance,
)

BALANCED = np.array([0] * 50 + [1] * 50)


def _changed(labels: np.ndarray, newly_wrong: list[int], newly_right: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """An original that is wrong on ``newly_right`` and a candidate wrong on ``newly_wrong`` instead."""
    original, candidate = labels.copy(), labels.copy()
    original[newly_right] = 1 - labels[newly_right]
    candidate[newly_wrong] = 1 - labels[newly_wrong]
    return original, candidate


def test_point_estimate_within_tolerance_but_bound_not_is_refused() -> None:
    original, candidate = _changed(BALANCED, newly_wrong=[0, 1, 2, 60, 61], newly_right=[3, 4, 62, 63, 64])
    bound = paired_bound(BALANCED, original, candidate, metric="balanced_accuracy")
    assert bound.difference == pytest.approx(0.0)  # the point rule would accept: no drop at all
    assert bound.lower_bound is not None and bound.lower_bound < -0.01
    assert not bound.certifies(0.01)
    assert bound.certifies(-bound.lower_bound + 1e-9)


def test_identical_predictions_bound_is_zero_and_certify_any_tolerance() -> None:
    bound = paired_bound(BALANCED, BALANCED, BALANCED)
    assert (bound.difference, bound.lower_bound) == (0.0, 0.0)
    assert bound.certifies(1e-9)


def test_bound_is_reproducible_and_below_the_estimate() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 400)
    original = np.where(rng.random(400) < 0.85, labels, (labels + 1) % 3)
    candidate = np.where(rng.random(400) < 0.8, labels, (labels + 2) % 3)
    first = paired_bound(labels, original, candidate, metric="balanced_accuracy", seed=3)
    second = paired_bound(labels, original, candidate, metric="balanced_accuracy", seed=3)
    assert first == second
    assert first.lower_bound < first.difference
    expected = metric_of_predictions(labels, candidate, "balanced_accuracy") - metric_of_predictions(
        labels, original, "balanced_accuracy"
    )
    assert first.difference == pytest.approx(float(expected))


def test_non_inferiority_on_constructed_cases() -> None:
    # clearly inferior: 30 of 100 images newly wrong
    original, candidate = _changed(BALANCED, newly_wrong=list(range(15)) + list(range(50, 65)), newly_right=[])
    inferior = paired_bound(BALANCED, original, candidate, metric="accuracy")
    assert non_inferiority(inferior, 0.05) == "not shown"
    assert inferior.lower_bound < -0.2
    # clearly fine: 5,000 images, 3 newly wrong and 3 newly right
    large = np.array([0] * 2500 + [1] * 2500)
    original, candidate = _changed(large, newly_wrong=[0, 1, 2600], newly_right=[3, 2601, 2602])
    fine = paired_bound(large, original, candidate, metric="accuracy")
    assert non_inferiority(fine, 0.01) == "non-inferior at margin 0.01"
    # undecidable: the same flips on 100 images cannot certify 1 point
    original, candidate = _changed(BALANCED, newly_wrong=[0, 1, 60], newly_right=[3, 61, 62])
    undecided = paired_bound(BALANCED, original, candidate, metric="accuracy")
    assert non_inferiority(undecided, 0.01) == "not shown"
    assert smallest_certified_tolerance([undecided]) > 0.01
    assert smallest_certified_tolerance([inferior, fine]) == pytest.approx(max(0.0, -fine.lower_bound), abs=1e-6)


def test_class_guard_refuses_a_model_that_stops_predicting_a_class() -> None:
    labels = np.array([0] * 40 + [1] * 40 + [2] * 5)
    original = labels.copy()
    original[80:84] = 0  # class 2 recall 0.2
    candidate = labels.copy()
    candidate[80:85] = 0  # class 2 never predicted: recall 0.0; balanced accuracy falls by only 0.067
    reasons = class_guard(labels, original, candidate, ["a", "b", "c"], max_recall_drop=0.5)
    assert reasons == ["c: recall 0.20 -> 0.00 (never predicted correctly any more)"]
    assert class_guard(labels, original, original, ["a", "b", "c"], max_recall_drop=0.0) == []
    dropped = labels.copy()
    dropped[:10] = 1  # class a recall 1.0 -> 0.75
    assert class_guard(labels, labels, dropped, ["a", "b", "c"], max_recall_drop=0.2) == [
        "a: recall 1.00 -> 0.75 (falls by more than 0.20)"
    ]


def test_worst_class_recall_bound_sees_the_lost_class() -> None:
    labels = np.array([0] * 40 + [1] * 40 + [2] * 5)
    candidate = labels.copy()
    candidate[80:85] = 0
    bound = paired_bound(labels, labels, candidate, metric="worst_class_recall")
    assert bound.difference == pytest.approx(-1.0)


def test_flips_count_per_class_and_direction() -> None:
    original, candidate = _changed(BALANCED, newly_wrong=[0, 1, 60], newly_right=[3, 61, 62])
    rows = flips(BALANCED, original, candidate, ["normal", "pneumonia"])
    assert [(r.class_name, r.newly_wrong, r.newly_right, r.images) for r in rows] == [
        ("normal", 2, 1, 50),
        ("pneumonia", 1, 2, 50),
    ]


def test_mcnemar_exact_on_a_known_table() -> None:
    # b = 10, c = 2: two-sided exact p = 2 * P(X <= 2 | n = 12, p = 0.5) = 2 * 79 / 4096
    assert mcnemar_exact(newly_wrong=10, newly_right=2) == pytest.approx(2 * 79 / 4096)
    assert mcnemar_exact(newly_wrong=0, newly_right=0) == 1.0
    assert mcnemar_exact(newly_wrong=3, newly_right=3) == pytest.approx(1.0)


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match="one entry per image"):
        paired_bound(BALANCED, BALANCED[:10], BALANCED)
    with pytest.raises(ValueError, match="valid values"):
        paired_bound(BALANCED, BALANCED, BALANCED[::-1], metric="auroc")


def test_class_guard_allows_one_image_in_a_class_too_small_to_resolve_the_guard() -> None:
    labels = np.array([0] * 100 + [1] * 8)
    one_error, two_errors = labels.copy(), labels.copy()
    one_error[100] = 0  # 8-image class: recall 1.0 -> 0.875, a drop of 0.125 > 0.10, but only one image
    two_errors[100:102] = 0  # 1.0 -> 0.75
    assert class_guard(labels, labels, one_error, ["a", "b"], max_recall_drop=0.1) == []
    assert class_guard(labels, labels, two_errors, ["a", "b"], max_recall_drop=0.1) == [
        "b: recall 1.00 -> 0.75 (falls by more than 0.12, one of its 8 images)"
    ]
    large = np.array([0] * 100 + [1] * 100)
    eleven = large.copy()
    eleven[100:111] = 0  # 100-image class: 0.11 > 0.10 refused as before
    assert class_guard(large, large, eleven, ["a", "b"], max_recall_drop=0.1) == [
        "b: recall 1.00 -> 0.89 (falls by more than 0.10)"
    ]
