"""Bootstrap intervals and paired verdicts: reproducible, roughly nominal coverage, references, small-n handling."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score

from medprune.stats import (
    METHOD_NOTE,
    bootstrap_ci,
    correctness,
    metric_ci,
    paired_difference,
    paired_metric_difference,
)


def _grid(seed: int, runs: int = 6, images: int = 624, shift: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = (rng.random(images) < 0.62).astype(int)
    run_effect = rng.normal(0, 0.03, size=(runs, 1))
    correct = rng.random((runs, images)) < np.where(labels == 1, 0.95, 0.8) + run_effect + shift
    return correct, labels


def test_same_seed_same_interval_other_seed_other_interval() -> None:
    values = np.random.default_rng(0).normal(size=12)
    assert bootstrap_ci(values, seed=3) == bootstrap_ci(values, seed=3)
    assert bootstrap_ci(values, seed=3).low != bootstrap_ci(values, seed=4).low
    correct, labels = _grid(0)
    first = metric_ci(correct, labels, metric="balanced_accuracy", seed=5, n_resamples=500)
    assert first == metric_ci(correct, labels, metric="balanced_accuracy", seed=5, n_resamples=500)
    assert first != metric_ci(correct, labels, metric="balanced_accuracy", seed=6, n_resamples=500)


def test_mean_interval_covers_the_true_mean_at_roughly_nominal_rate() -> None:
    rng = np.random.default_rng(2024)  # seeded: the coverage count is the same on every run
    hits = 0
    trials = 200
    for trial in range(trials):
        ci = bootstrap_ci(rng.normal(0.5, 0.1, size=30), n_resamples=1000, seed=trial)
        hits += ci.low <= 0.5 <= ci.high
    assert 0.88 <= hits / trials <= 0.99


def test_two_level_interval_covers_the_true_accuracy() -> None:
    rng = np.random.default_rng(7)
    hits, trials, truth = 0, 60, 0.85
    for trial in range(trials):
        run_effect = rng.normal(0, 0.02, size=(6, 1))
        correct = rng.random((6, 300)) < truth + run_effect
        ci = metric_ci(correct, n_resamples=1000, seed=trial)
        hits += ci.low <= truth <= ci.high
    assert hits / trials >= 0.85


def test_estimates_match_reference_implementations() -> None:
    correct, labels = _grid(1)
    predictions = np.where(correct, labels, 1 - labels)
    assert np.array_equal(correctness(predictions, labels), correct)
    accuracy = metric_ci(correct, labels, n_resamples=200)
    assert accuracy.estimate == pytest.approx(correct.mean())
    balanced = metric_ci(correct, labels, metric="balanced_accuracy", n_resamples=200)
    reference = np.mean([balanced_accuracy_score(labels, p) for p in predictions])
    assert balanced.estimate == pytest.approx(reference)
    assert balanced.low < balanced.estimate < balanced.high and balanced.n == 6 and balanced.n_images == 624


def test_runs_that_disagree_widen_the_two_level_interval() -> None:
    rng = np.random.default_rng(3)
    base = rng.random(624) < 0.85
    same = np.stack([base] * 6)
    spread = np.stack([base & (rng.random(624) < keep) for keep in (1.0, 0.95, 0.9, 0.85, 0.8, 0.75)])
    width = {
        name: metric_ci(g, seed=0).high - metric_ci(g, seed=0).low for name, g in [("same", same), ("spread", spread)]
    }
    assert width["spread"] > 1.5 * width["same"]
    one = metric_ci(base, seed=0)
    assert (
        one.has_interval and "images resampled only" in one.note and one.method.endswith("images only") and one.n == 1
    )


def test_verdicts_follow_the_interval_and_the_better_direction() -> None:
    rng = np.random.default_rng(0)
    low, high = rng.normal(0.1, 0.01, 6), rng.normal(0.3, 0.01, 6)
    assert paired_difference(high, low, better="higher").verdict == "better"
    assert paired_difference(high, low, better="lower").verdict == "worse"
    assert paired_difference(low, high, better="lower").verdict == "better"
    tie = paired_difference(low + [0.05, -0.05, 0.03, -0.03, 0.01, -0.01], low, better="higher")  # mean 0
    assert tie.verdict == "not distinguishable" and tie.difference.low < 0 < tie.difference.high
    record = json.loads(json.dumps(tie.as_dict(), allow_nan=False))
    assert record["verdict"] == "not distinguishable" and record["n"] == 6
    with pytest.raises(ValueError, match="better must be"):
        paired_difference(low, high, better="up")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="a has 6 values, b has 5"):
        paired_difference(low, high[:5])


def test_paired_metric_difference_sees_a_real_gap() -> None:
    better, labels = _grid(4)
    worse, _ = _grid(4, shift=-0.08)
    result = paired_metric_difference(better, worse, labels, metric="balanced_accuracy", n_resamples=1000)
    assert result.verdict == "better" and result.difference.low > 0
    assert paired_metric_difference(better, better, labels, n_resamples=200).verdict == "not distinguishable"


def test_too_few_values_give_no_interval_and_a_reason() -> None:
    one = bootstrap_ci([0.7])
    assert one.estimate == 0.7 and one.low is None and one.high is None and "n = 1" in one.note
    none = bootstrap_ci([])
    assert none.estimate is None and none.n == 0 and none.note == "no values"
    dropped = bootstrap_ci([0.5, float("nan"), 0.7])
    assert dropped.n == 2 and "1 non-finite" in dropped.note and dropped.has_interval
    flat = bootstrap_ci([0.4, 0.4, 0.4], method="BCa")
    assert flat.low == flat.high == flat.estimate == pytest.approx(0.4)
    single = paired_difference([0.1], [0.3], better="lower")
    assert single.verdict == "not distinguishable" and "n = 1" in single.difference.note
    tiny = metric_ci(np.array([[True]]))
    assert tiny.low is None and "fewer than 2 images" in tiny.note
    assert json.loads(json.dumps(one.as_dict(), allow_nan=False))["low"] is None


def test_bad_requests_name_the_parameter() -> None:
    correct, labels = _grid(0, runs=2, images=20)
    with pytest.raises(ValueError, match="needs labels"):
        metric_ci(correct, metric="balanced_accuracy")
    with pytest.raises(ValueError, match="metric must be one of"):
        metric_ci(correct, labels, metric="auroc")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="confidence must be in"):
        bootstrap_ci([1.0, 2.0], confidence=95)
    with pytest.raises(ValueError, match="labels has 3 entries"):
        metric_ci(correct, labels[:3])
    assert "scipy.stats.bootstrap" in METHOD_NOTE and "percentile" in METHOD_NOTE
