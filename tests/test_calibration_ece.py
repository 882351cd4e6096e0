"""ECE and the reliability bins on constructed examples whose values are known by hand, against a per-image reference
loop, and temperature scaling recovering a known temperature."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import softmax

from medprune.deploy.calibration import (
    ECE_BINS,
    expected_calibration_error,
    fit_temperature,
    plot_reliability,
    reliability_bins,
    softmax_with_temperature,
)


def test_ece_of_a_constructed_example_is_known() -> None:
    # 10 images at confidence 0.9, 7 right: |0.7 - 0.9| = 0.2 in one bin
    probs = np.array([[0.9, 0.1]] * 10)
    labels = np.array([0] * 7 + [1] * 3)
    assert expected_calibration_error(probs, labels) == pytest.approx(0.2)
    # add 10 images at 0.6 (bin (0.6-ish]) with 6 right: that bin is perfect; ECE = 10/20 * 0.2 = 0.1
    probs2 = np.vstack([probs, [[0.4, 0.6]] * 10])
    labels2 = np.concatenate([labels, [1] * 6 + [0] * 4])
    assert expected_calibration_error(probs2, labels2) == pytest.approx(0.1)
    # three classes, two bins: conf 0.5 (bin (0.4, 0.6] of 5) all wrong, conf 1.0 all right -> 8/16 * 0.5 = 0.25
    probs3 = np.array([[0.5, 0.25, 0.25]] * 8 + [[0.0, 1.0, 0.0]] * 8)
    labels3 = np.array([1] * 8 + [1] * 8)
    assert expected_calibration_error(probs3, labels3, bins=5) == pytest.approx(0.25)


def test_bin_edges_are_right_closed() -> None:
    # a confidence of exactly 0.6 with 5 bins belongs to (0.4, 0.6], not (0.6, 0.8]
    rows = reliability_bins(np.array([[0.6, 0.4]]), np.array([0]), bins=5)
    assert [r.count for r in rows] == [0, 0, 1, 0, 0]
    assert rows[2].low == pytest.approx(0.4) and rows[2].high == pytest.approx(0.6)
    assert len(reliability_bins(np.array([[0.6, 0.4]]), np.array([0]))) == ECE_BINS


def _reference_ece(probs: np.ndarray, labels: np.ndarray, bins: int) -> float:
    """Per-image loop: the textbook definition, written independently of the module."""
    total = 0.0
    for b in range(bins):
        low, high = b / bins, (b + 1) / bins
        members = [i for i in range(len(probs)) if (low < probs[i].max() <= high) or (b == 0 and probs[i].max() == 0)]
        if members:
            acc = np.mean([probs[i].argmax() == labels[i] for i in members])
            conf = np.mean([probs[i].max() for i in members])
            total += len(members) / len(probs) * abs(acc - conf)
    return total


@settings(max_examples=40, deadline=None)
@given(
    st.integers(1, 60).flatmap(
        lambda n: st.tuples(
            st.lists(st.lists(st.floats(-6, 6), min_size=3, max_size=3), min_size=n, max_size=n),
            st.lists(st.integers(0, 2), min_size=n, max_size=n),
            st.integers(1, 20),
        )
    )
)
def test_ece_matches_the_reference_loop_and_lies_in_0_1(case: tuple) -> None:
    logits, labels, bins = case
    probs, y = softmax(np.array(logits), axis=1), np.array(labels)
    ece = expected_calibration_error(probs, y, bins)
    assert 0 <= ece <= 1
    assert ece == pytest.approx(_reference_ece(probs, y, bins), abs=1e-12)
    assert sum(r.count for r in reliability_bins(probs, y, bins)) == len(y)


def test_temperature_scaling_recovers_a_known_temperature_and_keeps_predictions() -> None:
    rng = np.random.default_rng(0)
    true_logits = rng.normal(0, 2, size=(4000, 3))
    labels = np.array([rng.choice(3, p=p) for p in softmax(true_logits, axis=1)])  # calibrated at T = 1
    overconfident = 3.0 * true_logits  # the model's logits: 3x too sharp
    temperature = fit_temperature(overconfident, labels)
    assert temperature == pytest.approx(3.0, rel=0.1)
    scaled = softmax_with_temperature(overconfident, temperature)
    before = expected_calibration_error(softmax(overconfident, axis=1), labels)
    assert expected_calibration_error(scaled, labels) < before
    assert (scaled.argmax(1) == overconfident.argmax(1)).all()


def test_bad_inputs_are_refused_naming_the_problem() -> None:
    with pytest.raises(ValueError, match="sum to 1"):
        expected_calibration_error(np.array([[0.5, 0.6]]), np.array([0]))
    with pytest.raises(ValueError, match="bins"):
        expected_calibration_error(np.array([[0.5, 0.5]]), np.array([0]), bins=0)
    with pytest.raises(ValueError, match="temperature"):
        softmax_with_temperature(np.zeros((1, 2)), 0.0)


def test_reliability_diagram_is_a_png(tmp_path: Path) -> None:
    probs = softmax(np.random.default_rng(1).normal(size=(50, 2)), axis=1)
    labels = np.arange(50) % 2
    path = plot_reliability(
        {"a": reliability_bins(probs, labels), "b": reliability_bins(probs, 1 - labels)}, tmp_path / "r.png", "test"
    )
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
