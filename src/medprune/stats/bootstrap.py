"""Bootstrap intervals over runs taken as independent (scipy.stats.bootstrap), paired comparisons, and Wilson
intervals of proportions (:func:`wilson_interval`, the model card's per-class rates).

Three questions, one function each:

- :func:`bootstrap_ci`: how sure is a mean over runs (one value per checkpoint x selection seed)?
- :func:`metric_ci`: how sure is a metric whose noise comes from two sources, the test images and the runs? Given the
  per-run, per-image correctness (runs x images), a two-level bootstrap resamples images (the same images for every
  run: the runs share one test set) and, independently, runs, and recomputes the mean metric over the resampled grid.
- :func:`paired_difference` / :func:`paired_metric_difference`: is method A better than method B on matched runs
  (same checkpoint, same selection seed)? The mean paired difference with its CI and a verdict: ``better`` or
  ``worse`` when the CI excludes 0, else ``not distinguishable``.

These functions resample runs as if each run were an independent draw. Selection seeds of one training checkpoint
are not (some are exact copies), so when a checkpoint contributes several runs these intervals are too narrow: the
independent unit is the training checkpoint. :mod:`medprune.stats.hierarchical` resamples checkpoints, then runs
within them, then images (:func:`medprune.stats.hierarchical.clustered_mean` and its siblings); use it wherever
several selection seeds share a checkpoint.

Every interval is reproducible for a fixed ``seed``. Fewer than two values (runs, or images) give no interval: the
bounds are ``None`` and ``note`` says why (never an exception). :data:`METHOD_NOTE` states the method for a report.

>>> ci = bootstrap_ci([0.81, 0.84, 0.86, 0.83], seed=0)
>>> round(ci.estimate, 3), ci.low <= ci.estimate <= ci.high, ci.n
(0.835, True, 4)
>>> paired_difference([0.10, 0.12, 0.08], [0.20, 0.25, 0.22], better="lower", seed=0).verdict
'better'
"""

from __future__ import annotations

import inspect
import logging
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats

logger = logging.getLogger(__name__)

__all__ = [
    "METHOD_NOTE",
    "METRICS",
    "DEFAULT_RESAMPLES",
    "ConfidenceInterval",
    "PairedComparison",
    "PairedVerdict",
    "bootstrap_ci",
    "metric_ci",
    "paired_difference",
    "paired_metric_difference",
    "correctness",
    "wilson_interval",
]

Metric = Literal["accuracy", "balanced_accuracy"]
METRICS: tuple[str, ...] = ("accuracy", "balanced_accuracy")
Better = Literal["higher", "lower"]
#: The verdict of a paired comparison (``not distinguishable`` when its interval holds 0).
PairedVerdict = Literal["better", "worse", "not distinguishable"]
BootstrapMethod = Literal["percentile", "basic", "BCa"]

DEFAULT_RESAMPLES = 4000

#: How every interval of this module is computed, for a report to print beside its tables.
METHOD_NOTE = (
    "Confidence intervals are nonparametric bootstrap intervals (scipy.stats.bootstrap, percentile method, "
    f"{DEFAULT_RESAMPLES} resamples, fixed seed). A mean over runs resamples the runs (one value per training "
    "checkpoint x selection seed) as if every run were an independent draw. Selection seeds of one training checkpoint "
    "are not independent (some are exact copies), so where a checkpoint contributes several runs these intervals are "
    "too narrow: the independent unit is the training checkpoint. A test metric resamples at two levels: the test "
    "images (the same resampled images for every run, since the runs share one test set) and, independently, the "
    "runs; the statistic is the metric averaged over the resampled runs (balanced accuracy: the mean per-class recall "
    "over the classes present); resampling both levels counts part of the image noise twice. A paired "
    "difference A - B resamples matched (checkpoint, seed) pairs (and, for test metrics, images shared by A and B); "
    "the verdict is 'better' or 'worse' when its interval excludes 0, else 'not distinguishable'. With fewer than "
    "2 runs (or images) no interval is given; with 1 run a test metric resamples images only. With few runs "
    "(n < 5) bootstrap intervals are too narrow: read them as a lower bound on the uncertainty."
)


@dataclass(frozen=True)
class ConfidenceInterval:
    """A point estimate with its bootstrap confidence interval.

    Attributes:
        estimate: the statistic on the data as observed (``None`` with no data).
        low: lower bound, ``None`` when no interval could be computed (see ``note``).
        high: upper bound, ``None`` likewise.
        n: the effective sample size: runs (values, pairs or curves) for the functions of this module, which take runs
            as independent; independent training checkpoints (clusters) for a clustered estimate.
        confidence: the confidence level, e.g. 0.95.
        method: how the interval was computed (e.g. ``"bootstrap percentile, 4000 resamples, seed 0"``).
        note: why there is no interval, or what was simplified ("" when nothing).
        n_images: test images per run, for image-level metrics (``None`` otherwise).
        n_rows: rows (runs) behind a clustered estimate, where ``n`` counts clusters (``None`` otherwise).
    """

    estimate: float | None
    low: float | None
    high: float | None
    n: int
    confidence: float
    method: str
    note: str = ""
    n_images: int | None = None
    n_rows: int | None = None

    @property
    def has_interval(self) -> bool:
        """Whether both bounds exist."""
        return self.low is not None and self.high is not None

    def as_dict(self) -> dict[str, Any]:
        """Plain, strict-JSON-safe values (``None`` for a missing bound, never NaN)."""
        return asdict(self)


@dataclass(frozen=True)
class PairedComparison:
    """Mean paired difference ``a - b`` with its interval and a verdict on ``a`` relative to ``b``.

    Attributes:
        difference: the interval of the mean of ``a - b``.
        better: which direction of the quantity is better (``higher`` for accuracy, ``lower`` for a drop).
        verdict: ``better`` / ``worse`` (``a`` than ``b``; the interval excludes 0) or ``not distinguishable``.
    """

    difference: ConfidenceInterval
    better: Better
    verdict: PairedVerdict

    def as_dict(self) -> dict[str, Any]:
        """Flat, strict-JSON-safe values: ``difference``, ``low``, ``high``, ``n``, ... plus ``better``, ``verdict``."""
        values = self.difference.as_dict()
        values["difference"] = values.pop("estimate")
        return {**values, "better": self.better, "verdict": self.verdict}


def bootstrap_ci(
    values: ArrayLike,
    *,
    confidence: float = 0.95,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    method: BootstrapMethod = "percentile",
) -> ConfidenceInterval:
    """Bootstrap CI of the mean of ``values`` (one value per run); non-finite values are left out (and said so).

    Args:
        values: one number per run (e.g. the accuracy drop of each checkpoint x selection seed).
        confidence: confidence level in (0, 1).
        n_resamples: bootstrap resamples.
        seed: seed of the resampling (same seed, same interval).
        method: scipy's interval method (``percentile``, ``basic`` or ``BCa``).

    Returns:
        The mean and its interval; bounds ``None`` for fewer than 2 finite values.
    """
    _check(confidence, n_resamples, method)
    x = np.asarray(values, dtype=np.float64).ravel()
    finite = x[np.isfinite(x)]
    note = f"{x.size - finite.size} non-finite value(s) left out" if finite.size < x.size else ""
    describe = _describe(method, n_resamples, seed)
    if finite.size == 0:
        return ConfidenceInterval(None, None, None, 0, confidence, describe, _join(note, "no values"))
    estimate = float(finite.mean())
    if finite.size < 2:
        return ConfidenceInterval(estimate, None, None, 1, confidence, describe, _join(note, "n = 1: no interval"))
    if np.ptp(finite) == 0:  # every resample has the same mean (and BCa would be undefined)
        return ConfidenceInterval(estimate, estimate, estimate, int(finite.size), confidence, describe, note)
    low, high = _bootstrap((finite,), lambda v, axis: v.mean(axis=axis), confidence, n_resamples, seed, method)
    if low is None:
        note = _join(note, f"the {method} interval is undefined for these values")
    return ConfidenceInterval(estimate, low, high, int(finite.size), confidence, describe, note)


def paired_difference(
    a: ArrayLike,
    b: ArrayLike,
    *,
    better: Better = "higher",
    confidence: float = 0.95,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    method: BootstrapMethod = "percentile",
) -> PairedComparison:
    """Mean paired difference ``a - b`` over matched runs, its bootstrap CI and whether ``a`` is better than ``b``.

    Args:
        a: one value per run of method A (e.g. accuracy drop per (checkpoint, selection seed)).
        b: method B's values on the same runs, in the same order. Pairs with a non-finite value are left out.
        better: ``higher`` if larger values are better (accuracy), ``lower`` if smaller are (a drop, a loss).
        confidence: confidence level in (0, 1).
        n_resamples: bootstrap resamples (the pairs are resampled together).
        seed: seed of the resampling.
        method: scipy's interval method.

    Returns:
        A :class:`PairedComparison`; with fewer than 2 pairs the verdict is ``not distinguishable`` (note says why).

    Raises:
        ValueError: ``a`` and ``b`` of different lengths, or ``better`` not ``higher`` / ``lower``.
    """
    if better not in ("higher", "lower"):
        raise ValueError(f"better must be 'higher' or 'lower', got {better!r}")
    x, y = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    if x.shape != y.shape:
        raise ValueError(f"paired_difference needs matched runs: a has {x.size} values, b has {y.size}")
    interval = bootstrap_ci(x - y, confidence=confidence, n_resamples=n_resamples, seed=seed, method=method)
    return PairedComparison(interval, better, _verdict(interval, better))


def correctness(predictions: ArrayLike, labels: ArrayLike) -> np.ndarray:
    """``predictions == labels`` as a bool array (runs x images), labels broadcast over runs."""
    return np.asarray(predictions) == np.asarray(labels)


def metric_ci(
    correct: ArrayLike,
    labels: ArrayLike | None = None,
    *,
    metric: Metric = "accuracy",
    confidence: float = 0.95,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> ConfidenceInterval:
    """Two-level bootstrap CI of a test metric averaged over runs: images (shared by all runs) and runs resampled.

    Args:
        correct: bool/0-1 array (runs x images): whether run ``r`` classified test image ``i`` correctly (see
            :func:`correctness`). A 1-D array is one run.
        labels: the test labels (images,); needed for ``balanced_accuracy``.
        metric: ``accuracy`` or ``balanced_accuracy`` (mean recall over the classes present in the resample).
        confidence: confidence level in (0, 1).
        n_resamples: bootstrap resamples.
        seed: seed of the resampling.

    Returns:
        The metric averaged over runs and its interval (``n`` = runs, ``n_images``); with one run only images are
        resampled (said in ``note``); with fewer than 2 images no interval.

    >>> rng = np.random.default_rng(0)
    >>> ci = metric_ci(rng.random((6, 624)) < 0.9, seed=0)
    >>> ci.low < ci.estimate < ci.high
    True
    """
    grid = _grid(correct, "correct")[None]
    return _grid_ci(grid, labels, metric, confidence, n_resamples, seed)


def paired_metric_difference(
    correct_a: ArrayLike,
    correct_b: ArrayLike,
    labels: ArrayLike | None = None,
    *,
    metric: Metric = "accuracy",
    better: Better = "higher",
    confidence: float = 0.95,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> PairedComparison:
    """Paired two-level comparison of a test metric: A - B with matched runs and images resampled together.

    Args:
        correct_a: runs x images correctness of method A.
        correct_b: the same for method B, run ``r`` matched with A's run ``r`` (same checkpoint and seed).
        labels: the test labels; needed for ``balanced_accuracy``.
        metric: ``accuracy`` or ``balanced_accuracy``.
        better: which direction of the metric is better (``higher`` for these metrics).
        confidence: confidence level in (0, 1).
        n_resamples: bootstrap resamples.
        seed: seed of the resampling.

    Returns:
        A :class:`PairedComparison` of the mean metric of A minus that of B.
    """
    if better not in ("higher", "lower"):
        raise ValueError(f"better must be 'higher' or 'lower', got {better!r}")
    a, b = _grid(correct_a, "correct_a"), _grid(correct_b, "correct_b")
    if a.shape != b.shape:
        raise ValueError(f"paired runs need equal shapes (runs x images): correct_a {a.shape}, correct_b {b.shape}")
    interval = _grid_ci(np.stack([a, b]), labels, metric, confidence, n_resamples, seed)
    return PairedComparison(interval, better, _verdict(interval, better))


def _grid(correct: ArrayLike, name: str) -> np.ndarray:
    grid = np.asarray(correct)
    if grid.ndim == 1:
        grid = grid[None]
    if grid.ndim != 2:
        raise ValueError(f"{name} must be runs x images (2-D), got shape {grid.shape}")
    return grid.astype(np.float64)


def _grid_ci(
    grids: np.ndarray, labels: ArrayLike | None, metric: str, confidence: float, n_resamples: int, seed: int
) -> ConfidenceInterval:
    """Interval of ``metric(grids[0]) - metric(grids[1])`` (or of ``metric(grids[0])`` for one grid)."""
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    _check(confidence, n_resamples, "percentile")
    _, runs, images = grids.shape
    if metric == "balanced_accuracy" and labels is None:
        raise ValueError("metric='balanced_accuracy' needs labels (one per test image)")
    y = np.zeros(images, dtype=np.int64) if labels is None else np.unique(np.asarray(labels), return_inverse=True)[1]
    if y.size != images:
        raise ValueError(f"labels has {y.size} entries but correct has {images} images per run")
    classes = int(y.max()) + 1 if y.size else 0
    signs = np.array([1.0, -1.0])[: grids.shape[0]]
    describe = _describe("percentile", n_resamples, seed) + ", two levels (images, runs)"

    def statistic(image_index: np.ndarray, run_index: np.ndarray | None = None, axis: int = -1) -> np.ndarray:
        if run_index is None:  # one run: images only
            per_image = grids[:, 0, :]
            per_image = np.broadcast_to(per_image[:, None, :], (grids.shape[0], *image_index.shape[:-1], images))
        else:  # mean over the resampled runs, as run counts @ grid: (k, ..., images)
            counts = (run_index[..., None] == np.arange(runs)).sum(axis=-2) / runs
            per_image = np.einsum("...r,kri->k...i", counts, grids)
        drawn = np.take_along_axis(per_image, np.broadcast_to(image_index, per_image.shape), axis=-1)
        if metric == "accuracy":
            value = drawn.mean(axis=-1)
        else:
            onehot = y[image_index][..., None] == np.arange(classes)  # (..., images, classes)
            hits = np.einsum("k...i,...ic->k...c", drawn, onehot)
            total = onehot.sum(axis=-2)
            with np.errstate(invalid="ignore", divide="ignore"):
                recall = hits / total
            value = np.nanmean(np.where(total > 0, recall, np.nan), axis=-1)
        return np.tensordot(signs, value, axes=1)

    estimate = float(statistic(np.arange(images), np.arange(runs)))
    if images < 2:
        return ConfidenceInterval(estimate, None, None, runs, confidence, describe, "fewer than 2 images", images)
    note = ""
    if runs == 1:
        note = "1 run: test images resampled only (run-to-run variation not included)"
        describe = describe.replace("two levels (images, runs)", "images only")
        data: tuple[np.ndarray, ...] = (np.arange(images),)
    else:
        data = (np.arange(images), np.arange(runs))
    low, high = _bootstrap(data, statistic, confidence, n_resamples, seed, "percentile")
    return ConfidenceInterval(estimate, low, high, runs, confidence, describe, note, images)


def _bootstrap(
    data: tuple[np.ndarray, ...],
    statistic: Callable[..., np.ndarray],
    confidence: float,
    n_resamples: int,
    seed: int,
    method: str,
) -> tuple[float | None, float | None]:
    rng = np.random.default_rng(seed)
    result = stats.bootstrap(
        data,
        statistic,
        n_resamples=n_resamples,
        batch=min(n_resamples, 1000),
        vectorized=True,
        paired=False,
        confidence_level=confidence,
        method=method,
        **{_RNG_KEYWORD: rng},
    )
    low, high = float(result.confidence_interval.low), float(result.confidence_interval.high)
    if not (math.isfinite(low) and math.isfinite(high)):  # e.g. BCa on values that are all equal
        return None, None
    return low, high


_RNG_KEYWORD = "rng" if "rng" in inspect.signature(stats.bootstrap).parameters else "random_state"


def _verdict(interval: ConfidenceInterval, better: Better) -> PairedVerdict:
    if not interval.has_interval:
        return "not distinguishable"
    if interval.low > 0:  # type: ignore[operator]
        return "better" if better == "higher" else "worse"
    if interval.high < 0:  # type: ignore[operator]
        return "worse" if better == "higher" else "better"
    return "not distinguishable"


def _check(confidence: float, n_resamples: int, method: str) -> None:
    if not (isinstance(confidence, (int, float)) and 0.0 < float(confidence) < 1.0):
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    if isinstance(n_resamples, bool) or not isinstance(n_resamples, int) or n_resamples < 1:
        raise ValueError(f"n_resamples must be a positive int, got {n_resamples!r}")
    if method not in ("percentile", "basic", "BCa"):
        raise ValueError(f"method must be one of ('percentile', 'basic', 'BCa'), got {method!r}")


def _describe(method: str, n_resamples: int, seed: int) -> str:
    return f"bootstrap {method}, {n_resamples} resamples, seed {seed}"


def _join(*parts: str) -> str:
    return "; ".join(p for p in parts if p)


def wilson_interval(successes: int, trials: int, confidence: float = 0.95) -> tuple[float | None, float | None]:
    """Wilson score interval of a proportion (``scipy.stats.binomtest(...).proportion_ci(method="wilson")``);
    ``(None, None)`` without trials.

    >>> [round(x, 4) for x in wilson_interval(8, 10)]
    [0.4902, 0.9433]
    """
    if trials <= 0:
        return (None, None)
    ci = stats.binomtest(int(successes), int(trials)).proportion_ci(confidence_level=confidence, method="wilson")
    return (float(ci.low), float(ci.high))
