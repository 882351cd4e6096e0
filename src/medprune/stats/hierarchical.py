"""Clustered (hierarchical) bootstrap: intervals whose effective n is the number of independent training checkpoints.

A study's rows are runs, one per (training checkpoint, selection seed); the seeds of one checkpoint share its weights,
so they are not independent draws (a deterministic selection criterion even gives exact copies). Resampling rows as
if they were independent (:func:`medprune.stats.bootstrap.bootstrap_ci`) then makes intervals too narrow. Here one
bootstrap replicate draws, in turn:

1. the training checkpoints (clusters), with replacement, as many as there are;
2. within every drawn checkpoint, its rows (selection seeds), with replacement, as many as it has;
3. when the statistic reads test images, the images, with replacement; one draw shared by every row, since the rows
   share one test split.

The result is a :class:`BootstrapEstimate`: the point estimate and the bootstrap distribution of the statistic, from
which the percentile interval (:meth:`BootstrapEstimate.interval`), a two-sided bootstrap p-value
(:meth:`BootstrapEstimate.p_value`) and an equivalence (TOST) p-value (:meth:`BootstrapEstimate.tost_p`) follow;
:mod:`medprune.stats.verdicts` turns them into verdicts over a family of comparisons.

:func:`hierarchical_bootstrap` takes any statistic of the drawn row and image indices (one Python call per replicate);
:func:`hierarchical_bootstrap_counts` takes a vectorised statistic of draw counts (one call per batch of replicates).
The common cases are built on the latter: :func:`clustered_mean` / :func:`clustered_paired_mean` (one value per row)
and :func:`clustered_metric` / :func:`clustered_paired_metric` (per-row, per-image correctness).

>>> values = [0.80, 0.80, 0.81, 0.70, 0.71, 0.70, 0.75, 0.76, 0.75]   # 3 checkpoints x 3 selection seeds
>>> est = clustered_mean(values, [0, 0, 0, 1, 1, 1, 2, 2, 2], n_resamples=999, seed=0)
>>> round(est.estimate, 3), est.n_clusters, est.n_rows, est.replicates.shape
(0.753, 3, 9, (999,))
>>> ci = est.interval(0.95)
>>> ci.low < est.estimate < ci.high, ci.n, ci.n_rows
(True, 3, 9)
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from medprune.stats.bootstrap import DEFAULT_RESAMPLES, METRICS, ConfidenceInterval, Metric

logger = logging.getLogger(__name__)

__all__ = [
    "CLUSTERED_METHOD_NOTE",
    "FEW_CLUSTERS",
    "BootstrapEstimate",
    "hierarchical_bootstrap",
    "hierarchical_bootstrap_counts",
    "clustered_mean",
    "clustered_paired_mean",
    "clustered_metric",
    "clustered_paired_metric",
    "tail_probability",
]


def tail_probability(replicates: np.ndarray, in_tail: np.ndarray) -> float:
    """A bootstrap tail probability, ``(count + 1) / (B + 1)`` over ``B`` replicates (never exactly 0): the one
    convention of every p-value in :mod:`medprune.stats` and the study's claims.

    >>> tail_probability(np.array([-1.0, 0.5, 2.0]), np.array([-1.0, 0.5, 2.0]) <= 0)
    0.5
    """
    return float((int(np.count_nonzero(in_tail)) + 1) / (np.asarray(replicates).size + 1))


#: Below this many training checkpoints a clustered interval is too narrow: a lower bound on the uncertainty.
FEW_CLUSTERS = 5

#: How a clustered interval is computed, for a report to print beside its tables.
CLUSTERED_METHOD_NOTE = (
    "Intervals are hierarchical (clustered) bootstrap percentile intervals "
    f"({DEFAULT_RESAMPLES} resamples unless stated, fixed seed). Each resample draws the training checkpoints with "
    "replacement, then the selection seeds (runs) within each drawn checkpoint with replacement, then, for test "
    "metrics, the test images with replacement (one draw shared by every run, since the runs share one test split), "
    "and recomputes the statistic (a mean over runs; a test metric averaged over runs; or a paired difference A - B "
    "on the same runs and images). Selection seeds of one checkpoint share its weights and are not independent "
    "(runs that are exact copies are counted once), so n is the number of independent training checkpoints, not "
    "the number of runs. Resampling both checkpoints and images counts part of the image noise twice (a "
    "checkpoint's result already carries it), so test-metric intervals err on the wide side. With one checkpoint "
    "only runs and images are resampled and checkpoint-to-checkpoint "
    f"variation is not included. With fewer than {FEW_CLUSTERS} checkpoints the intervals are too narrow: read "
    "them as a lower bound on the uncertainty; up to a few tens of checkpoints a percentile interval of a mean still "
    "covers somewhat less than its nominal level."
)

#: A vectorised statistic: (row draw counts (b, rows), image indices (b, images) or None) -> one value per replicate.
CountStatistic = Callable[[np.ndarray, "np.ndarray | None"], np.ndarray]
#: A plain statistic: (drawn row indices, drawn image indices or None) -> one value.
RowStatistic = Callable[[np.ndarray, "np.ndarray | None"], float]

#: Upper bound on the elements of one batch's (replicates x rows or images) arrays (memory, not results).
_BATCH_ELEMENTS = 1 << 21


@dataclass(frozen=True, eq=False)
class BootstrapEstimate:
    """A statistic on the data as observed and its bootstrap distribution (compared by identity, not value).

    Attributes:
        estimate: the statistic on all rows and images (``None`` with no data).
        replicates: the statistic on each bootstrap resample, finite, read-only (empty with no data).
        n_clusters: the effective n: independent training checkpoints behind the estimate.
        n_rows: rows (runs, one per checkpoint x selection seed) behind it.
        n_images: test images per row, for image-level statistics (``None`` otherwise).
        method: how the replicates were drawn (levels, resamples, seed).
        note: what was simplified or left out ("" when nothing), e.g. one checkpoint only.

    >>> est = BootstrapEstimate(0.02, np.linspace(-0.01, 0.05, 999), n_clusters=6, n_rows=18)
    >>> est.p_value() < 0.5, est.tost_p(0.1) < 0.01, est.interval(0.9).n
    (True, True, 6)
    """

    estimate: float | None
    replicates: np.ndarray
    n_clusters: int
    n_rows: int
    n_images: int | None = None
    method: str = ""
    note: str = ""

    def __post_init__(self) -> None:
        replicates = np.array(self.replicates, dtype=np.float64).ravel()
        if not np.isfinite(replicates).all():
            raise ValueError("replicates must be finite (leave out non-finite replicates and say so in note)")
        replicates.setflags(write=False)
        object.__setattr__(self, "replicates", replicates)

    @property
    def n_resamples(self) -> int:
        """Number of bootstrap replicates."""
        return int(self.replicates.size)

    @property
    def has_replicates(self) -> bool:
        """Whether there is a bootstrap distribution (and a point estimate) to read an interval or test from."""
        return self.estimate is not None and self.replicates.size > 0

    def interval(self, confidence: float = 0.95) -> ConfidenceInterval:
        """The percentile interval at ``confidence``; ``n`` is the effective n (checkpoints), ``n_rows`` the rows.

        Args:
            confidence: two-sided confidence level in (0, 1).

        Returns:
            The interval (bounds ``None`` without replicates).
        """
        _check_confidence(confidence)
        low = high = None
        if self.has_replicates:
            tail = (1.0 - confidence) / 2.0
            low, high = (float(q) for q in np.quantile(self.replicates, [tail, 1.0 - tail]))
        return ConfidenceInterval(
            self.estimate,
            low,
            high,
            self.n_clusters,
            float(confidence),
            self.method,
            self.note,
            self.n_images,
            self.n_rows,
        )

    def p_value(self, null: float = 0.0) -> float:
        """Two-sided bootstrap p-value of ``statistic == null``: ``2 * min(P(rep <= null), P(rep >= null))``.

        Each tail is ``(count + 1) / (B + 1)`` over ``B`` replicates, the result clipped to ``[1 / (B + 1), 1]``;
        1.0 without replicates (no evidence).
        """
        b = self.replicates.size
        if not self.has_replicates:
            return 1.0
        below = tail_probability(self.replicates, self.replicates <= null)
        above = tail_probability(self.replicates, self.replicates >= null)
        return float(np.clip(2.0 * min(below, above), 1.0 / (b + 1), 1.0))

    def tost_p(self, margin: float) -> float:
        """Equivalence p-value (two one-sided tests) of ``-margin < statistic < margin``.

        ``max(P(rep <= -margin), P(rep >= margin))``, each ``(count + 1) / (B + 1)``, clipped to ``[1 / (B + 1), 1]``;
        1.0 without replicates. Below ``alpha`` exactly when (up to the replicates' granularity) the percentile
        interval at confidence ``1 - 2 * alpha`` lies inside ``(-margin, margin)``.

        Raises:
            ValueError: a negative or non-finite margin.
        """
        _check_margin(margin)
        b = self.replicates.size
        if not self.has_replicates:
            return 1.0
        below = tail_probability(self.replicates, self.replicates <= -margin)
        above = tail_probability(self.replicates, self.replicates >= margin)
        return float(np.clip(max(below, above), 1.0 / (b + 1), 1.0))

    def as_dict(self, confidence: float = 0.95) -> dict[str, Any]:
        """Plain, strict-JSON-safe summary (no replicates): estimate, interval at ``confidence``, p, sizes, method."""
        ci = self.interval(confidence)
        return {
            "estimate": self.estimate,
            "low": ci.low,
            "high": ci.high,
            "confidence": ci.confidence,
            "p": self.p_value(),
            "n_clusters": self.n_clusters,
            "n_rows": self.n_rows,
            "n_images": self.n_images,
            "n_resamples": self.n_resamples,
            "method": self.method,
            "note": self.note,
        }


def hierarchical_bootstrap(
    statistic: RowStatistic,
    clusters: Iterable[Hashable],
    *,
    n_images: int | None = None,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> BootstrapEstimate:
    """Bootstrap any statistic: checkpoints, then rows within them, then (if ``n_images``) images, with replacement.

    One Python call of ``statistic`` per replicate: for means and test metrics prefer the vectorised wrappers
    (:func:`clustered_mean`, :func:`clustered_metric`, ...) or :func:`hierarchical_bootstrap_counts`, which draw the
    same resamples for the same seed.

    Args:
        statistic: ``statistic(rows, images) -> float``; ``rows`` holds the drawn row indices (repeats allowed,
            grouped by row, so the statistic must not depend on their order), ``images`` the drawn image indices
            (``None`` without ``n_images``). On the observed data it gets every row and image once.
        clusters: one id per row (any hashable: an int, a string, a tuple), the training checkpoint of that row.
        n_images: test images shared by the rows, resampled once per replicate for every row; ``None``: no images.
        n_resamples: bootstrap replicates.
        seed: seed of the resampling (same seed and data shape, same replicates).

    Returns:
        The estimate and its replicates (non-finite replicates left out, said in ``note``). With no rows (or no
        images): estimate ``None``, no replicates. With one checkpoint: rows (and images) resampled only, said in
        ``note``.

    >>> values = np.array([1.0, 1.2, 3.0, 3.1])
    >>> est = hierarchical_bootstrap(lambda rows, images: values[rows].mean(), ["a", "a", "b", "b"], n_resamples=99)
    >>> est.estimate, est.n_clusters, len(est.replicates)
    (2.075, 2, 99)
    """
    design = _Design.from_ids(clusters)
    _check_request(n_resamples, n_images)
    all_rows = np.arange(design.n_rows)

    def batched(row_counts: np.ndarray, images: np.ndarray | None) -> np.ndarray:
        values = np.empty(row_counts.shape[0])
        for i, counts in enumerate(row_counts):
            values[i] = statistic(np.repeat(all_rows, counts), None if images is None else images[i])
        return values

    return _run(batched, design, n_images, n_resamples, seed)


def hierarchical_bootstrap_counts(
    statistic: CountStatistic,
    clusters: Iterable[Hashable],
    *,
    n_images: int | None = None,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> BootstrapEstimate:
    """:func:`hierarchical_bootstrap` for a vectorised statistic: one call per batch of replicates.

    Args:
        statistic: ``statistic(row_counts, images) -> values``: ``row_counts`` (b, rows) says how often each row was
            drawn in each of ``b`` replicates (all ones for the observed data), ``images`` (b, n_images) holds the
            drawn image indices (``arange`` for the observed data; ``None`` without ``n_images``); returns ``b``
            values.
        clusters: one id per row, the training checkpoint of that row.
        n_images: test images shared by the rows; ``None``: no images.
        n_resamples: bootstrap replicates.
        seed: seed of the resampling; the draws equal :func:`hierarchical_bootstrap`'s for the same seed.

    Returns:
        The estimate and its replicates, as :func:`hierarchical_bootstrap`.
    """
    design = _Design.from_ids(clusters)
    _check_request(n_resamples, n_images)
    return _run(statistic, design, n_images, n_resamples, seed)


def clustered_mean(
    values: ArrayLike, clusters: Iterable[Hashable], *, n_resamples: int = DEFAULT_RESAMPLES, seed: int = 0
) -> BootstrapEstimate:
    """Mean of one value per row (e.g. a lossless rate per (checkpoint, seed)), checkpoints then rows resampled.

    Rows that are exact duplicates within a checkpoint (a deterministic selection criterion gives every selection
    seed the same result) carry no new information: pass them once, or they weigh that checkpoint more and narrow
    nothing honestly.

    Args:
        values: one number per row; rows with a non-finite value are left out (said in ``note``).
        clusters: one id per row, its training checkpoint.
        n_resamples: bootstrap replicates.
        seed: seed of the resampling.

    Returns:
        The mean over rows and its clustered bootstrap distribution.

    >>> est = clustered_mean([0.5, 0.5, 0.7, 0.7], ["ckpt0", "ckpt0", "ckpt1", "ckpt1"], n_resamples=200)
    >>> est.estimate, np.unique(np.round(est.replicates, 6)).tolist()
    (0.6, [0.5, 0.6, 0.7])
    """
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"values must be one number per row (1-D), got shape {x.shape}")
    ids = _ids(clusters, x.size, "values")
    keep = np.isfinite(x)
    note = f"{x.size - int(keep.sum())} non-finite value(s) left out" if not keep.all() else ""
    x = x[keep]
    design = _Design.from_ids([c for c, k in zip(ids, keep, strict=True) if k])
    _check_request(n_resamples, None)

    def mean(row_counts: np.ndarray, images: np.ndarray | None) -> np.ndarray:
        return (row_counts @ x) / row_counts.sum(axis=1)

    return _run(mean, design, None, n_resamples, seed, note)


def clustered_paired_mean(
    a: ArrayLike,
    b: ArrayLike,
    clusters: Iterable[Hashable],
    *,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> BootstrapEstimate:
    """Mean paired difference ``a - b`` over rows matched on (checkpoint, seed), clustered on checkpoints.

    Args:
        a: one value per row for method A.
        b: method B's value on the same rows, in the same order; pairs with a non-finite value are left out.
        clusters: one id per row, its training checkpoint.
        n_resamples: bootstrap replicates.
        seed: seed of the resampling.

    Returns:
        The mean of ``a - b`` and its clustered bootstrap distribution (see :func:`clustered_mean`).

    >>> est = clustered_paired_mean([0.9, 0.8, 0.7], [0.8, 0.7, 0.6], [0, 1, 2], n_resamples=99)
    >>> round(est.estimate, 6), bool(np.allclose(est.replicates, 0.1))
    (0.1, True)
    """
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.ndim != 1 or x.shape != y.shape:
        raise ValueError(f"clustered_paired_mean needs matched rows: a has shape {x.shape}, b has {y.shape}")
    with np.errstate(invalid="ignore"):
        difference = x - y
    return clustered_mean(difference, clusters, n_resamples=n_resamples, seed=seed)


def clustered_metric(
    correct: ArrayLike,
    labels: ArrayLike | None,
    clusters: Iterable[Hashable],
    *,
    metric: Metric = "accuracy",
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> BootstrapEstimate:
    """A test metric averaged over rows; checkpoints, rows within them and test images resampled (vectorised).

    Args:
        correct: bool/0-1 array (rows x images): whether row ``r`` classified image ``i`` correctly (see
            :func:`medprune.stats.bootstrap.correctness`). Pass rows that are exact copies within a checkpoint once.
        labels: the test labels (images,); needed for ``balanced_accuracy`` (``None`` is fine for ``accuracy``).
        clusters: one id per row, its training checkpoint.
        metric: ``accuracy`` or ``balanced_accuracy`` (mean recall over the classes present in the resample).
        n_resamples: bootstrap replicates.
        seed: seed of the resampling.

    Returns:
        The metric averaged over rows (``n_images`` set) and its clustered bootstrap distribution.

    >>> rng = np.random.default_rng(0)
    >>> est = clustered_metric(rng.random((6, 300)) < 0.9, None, [0, 0, 1, 1, 2, 2], n_resamples=500)
    >>> ci = est.interval()
    >>> ci.low < est.estimate < ci.high, ci.n, ci.n_rows, ci.n_images
    (True, 3, 6, 300)
    """
    grid = _grid(correct, "correct")
    return _metric_estimate(grid, labels, clusters, metric, n_resamples, seed)


def clustered_paired_metric(
    correct_a: ArrayLike,
    correct_b: ArrayLike,
    labels: ArrayLike | None,
    clusters: Iterable[Hashable],
    *,
    metric: Metric = "accuracy",
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> BootstrapEstimate:
    """``metric(A) - metric(B)`` on rows matched on (checkpoint, seed) and the same images, resampled together.

    Args:
        correct_a: rows x images correctness of method A.
        correct_b: the same for method B, row ``r`` matched with A's row ``r`` (same checkpoint and seed).
        labels: the test labels; needed for ``balanced_accuracy``.
        clusters: one id per row, its training checkpoint.
        metric: ``accuracy`` or ``balanced_accuracy``.
        n_resamples: bootstrap replicates.
        seed: seed of the resampling.

    Returns:
        The mean metric of A minus that of B and its clustered bootstrap distribution.
    """
    a, b = _grid(correct_a, "correct_a"), _grid(correct_b, "correct_b")
    if a.shape != b.shape:
        raise ValueError(f"paired rows need equal shapes (rows x images): correct_a {a.shape}, correct_b {b.shape}")
    # both metrics are linear in the per-image correctness given one image draw, so the difference is the metric
    # of the difference grid (the classes present are the same for A and B)
    return _metric_estimate(a - b, labels, clusters, metric, n_resamples, seed)


@dataclass(frozen=True)
class _Design:
    """Rows grouped by training checkpoint: ``members[c]`` are the row indices of checkpoint ``c``."""

    n_rows: int
    members: tuple[np.ndarray, ...]

    @classmethod
    def from_ids(cls, clusters: Iterable[Hashable]) -> _Design:
        if isinstance(clusters, np.ndarray) and clusters.ndim != 1:
            raise ValueError(f"clusters must be one id per row (1-D), got shape {clusters.shape}")
        index: dict[Hashable, int] = {}
        try:
            owner = [index.setdefault(c, len(index)) for c in clusters]
        except TypeError as error:
            raise ValueError(f"clusters must be hashable ids (int, str, tuple): {error}") from error
        owner_array = np.asarray(owner, dtype=np.int64)
        members = tuple(np.flatnonzero(owner_array == c) for c in range(len(index)))
        return cls(len(owner), members)


def _ids(clusters: Iterable[Hashable], n_rows: int, what: str) -> list[Hashable]:
    if isinstance(clusters, np.ndarray) and clusters.ndim != 1:
        raise ValueError(f"clusters must be one id per row (1-D), got shape {clusters.shape}")
    ids = list(clusters)
    if len(ids) != n_rows:
        raise ValueError(f"clusters must give one id per row: {what} has {n_rows} rows, clusters has {len(ids)} ids")
    return ids


def _draws(
    design: _Design, n_images: int | None, n_resamples: int, seed: int
) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
    """Batches of (row draw counts (b, rows), image indices (b, images) or None), the same for the same seed."""
    rng = np.random.default_rng(seed)
    k = len(design.members)
    batch = max(1, min(n_resamples, _BATCH_ELEMENTS // max(design.n_rows, n_images or 0, k, 1)))
    for start in range(0, n_resamples, batch):
        b = min(batch, n_resamples - start)
        picks = rng.integers(0, k, size=(b, k)) + k * np.arange(b)[:, None]
        times = np.bincount(picks.ravel(), minlength=b * k).reshape(b, k)  # draws of each checkpoint
        counts = np.zeros((b, design.n_rows), dtype=np.int64)
        for c, rows in enumerate(design.members):  # times[:, c] copies of checkpoint c, each drawing rows.size rows
            counts[:, rows] = rng.multinomial(times[:, c] * rows.size, np.full(rows.size, 1.0 / rows.size))
        images = rng.integers(0, n_images, size=(b, n_images)) if n_images else None
        yield counts, images


def _run(
    statistic: CountStatistic,
    design: _Design,
    n_images: int | None,
    n_resamples: int,
    seed: int,
    note: str = "",
) -> BootstrapEstimate:
    k, rows = len(design.members), design.n_rows
    levels = ["training checkpoints", "runs within them"] + (["test images"] if n_images is not None else [])
    method = f"hierarchical bootstrap ({', '.join(levels)}), percentile, {n_resamples} resamples, seed {seed}"
    if rows == 0 or n_images == 0:
        why = "no rows" if rows == 0 else "no test images"
        return BootstrapEstimate(None, np.empty(0), k, rows, n_images, method, _join(note, why))
    observed = statistic(np.ones((1, rows), dtype=np.int64), None if n_images is None else np.arange(n_images)[None])
    estimate = float(np.asarray(observed, dtype=np.float64).ravel()[0])
    if not np.isfinite(estimate):
        return BootstrapEstimate(None, np.empty(0), k, rows, n_images, method, _join(note, "statistic undefined"))
    replicates = np.concatenate(
        [np.asarray(statistic(c, i), dtype=np.float64).ravel() for c, i in _draws(design, n_images, n_resamples, seed)]
    )
    if replicates.size != n_resamples:
        raise ValueError(f"statistic returned {replicates.size} values for {n_resamples} resamples")
    finite = np.isfinite(replicates)
    if not finite.all():
        note = _join(note, f"{n_resamples - int(finite.sum())} non-finite replicate(s) left out")
        replicates = replicates[finite]
    if k == 1:
        resampled = "runs and test images" if n_images is not None else "runs"
        note = _join(note, f"1 training checkpoint: {resampled} resampled only (checkpoint variation not included)")
    elif k < FEW_CLUSTERS:
        note = _join(note, f"{k} training checkpoints (< {FEW_CLUSTERS}): too narrow, a lower bound on the uncertainty")
    return BootstrapEstimate(estimate, replicates, k, rows, n_images, method, note)


def _metric_estimate(
    grid: np.ndarray,
    labels: ArrayLike | None,
    clusters: Iterable[Hashable],
    metric: str,
    n_resamples: int,
    seed: int,
) -> BootstrapEstimate:
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    rows, images = grid.shape
    if metric == "balanced_accuracy" and labels is None:
        raise ValueError("metric='balanced_accuracy' needs labels (one per test image)")
    y = np.zeros(images, dtype=np.int64) if labels is None else np.unique(np.asarray(labels), return_inverse=True)[1]
    if y.size != images:
        raise ValueError(f"labels has {y.size} entries but correct has {images} images per row")
    design = _Design.from_ids(_ids(clusters, rows, "correct"))
    _check_request(n_resamples, images)
    onehot = (y.ravel()[:, None] == np.arange(int(y.max()) + 1 if y.size else 0)).astype(np.float64)

    def value(row_counts: np.ndarray, drawn: np.ndarray | None) -> np.ndarray:
        assert drawn is not None  # images are always resampled here
        b = drawn.shape[0]
        image_counts = np.bincount((drawn + images * np.arange(b)[:, None]).ravel(), minlength=b * images)
        image_counts = image_counts.reshape(b, images).astype(np.float64)
        per_image = (row_counts @ grid) / row_counts.sum(axis=1, keepdims=True)  # mean over drawn rows: (b, images)
        weighted = per_image * image_counts
        if metric == "accuracy":
            return weighted.sum(axis=1) / images
        hits, total = weighted @ onehot, image_counts @ onehot  # (b, classes)
        with np.errstate(invalid="ignore", divide="ignore"):
            recall = np.where(total > 0, hits / total, np.nan)
        return np.nanmean(recall, axis=1)

    return _run(value, design, images, n_resamples, seed)


def _grid(correct: ArrayLike, name: str) -> np.ndarray:
    grid = np.asarray(correct)
    if grid.ndim == 1:
        grid = grid[None]
    if grid.ndim != 2:
        raise ValueError(f"{name} must be rows x images (2-D), got shape {grid.shape}")
    return grid.astype(np.float64)


def _check_request(n_resamples: int, n_images: int | None) -> None:
    if isinstance(n_resamples, bool) or not isinstance(n_resamples, (int, np.integer)) or n_resamples < 1:
        raise ValueError(f"n_resamples must be a positive int, got {n_resamples!r}")
    if n_images is not None and (isinstance(n_images, bool) or not isinstance(n_images, (int, np.integer))):
        raise ValueError(f"n_images must be None or an int >= 0, got {n_images!r}")
    if n_images is not None and n_images < 0:
        raise ValueError(f"n_images must be None or an int >= 0, got {n_images!r}")


def _check_confidence(confidence: float) -> None:
    if not (isinstance(confidence, (int, float)) and 0.0 < float(confidence) < 1.0):
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")


def _check_margin(margin: float) -> None:
    if not (isinstance(margin, (int, float)) and np.isfinite(margin) and margin >= 0):
        raise ValueError(f"margin must be a finite number >= 0, got {margin!r}")


def _join(*parts: str) -> str:
    return "; ".join(p for p in parts if p)
