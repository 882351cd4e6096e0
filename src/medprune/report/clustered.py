"""Clustered estimates of the report's numbers, from the rows' per-image predictions (docs/analysis-plan.md §2).

A run is one curve of one (training checkpoint, selection seed); the checkpoint is the independent unit (the cluster)
and its selection seeds the second level, so every interval here comes from :mod:`medprune.stats`'s hierarchical
bootstrap: checkpoints, then seeds within them, then the images of the split the number is read on.

- :func:`image_correctness`: a row's per-image correctness, decoded once (cached by the encoded text);
- :func:`curve_identity` / :func:`distinct`: runs of one checkpoint whose predictions are identical (a deterministic
  criterion's selection seeds) are copies, counted once;
- :func:`row_at`: the row of a curve at a target rate, never another rate's row;
- :func:`drop_estimates`: Table 1 cells (mean test drop of a line at a rate); :func:`paired_estimates`: paired
  differences of a metric; both draw once for every estimate on the same runs and images
  (:func:`paired_metric_batch`);
- :func:`lossless_estimates`: a line's mean lossless rate, each curve's rate recomputed on resampled **validation**
  images; :func:`confirmed_estimates`: its mean test-confirmed rate, recomputed on resampled test images.

>>> row_at([{"rate": 0.1, "achieved_rate": 0.1}, {"rate": 0.3, "achieved_rate": 0.3}], 0.15) is None
True
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from medprune.stats import (
    DEFAULT_RESAMPLES,
    BootstrapEstimate,
    clustered_mean,
    clustered_paired_mean,
    clustered_paired_metric,
    hierarchical_bootstrap_counts,
)
from medprune.sweep.table import Row, decode_classes, format_rate

logger = logging.getLogger(__name__)

__all__ = [
    "IMAGE_METRICS",
    "LOSSLESS_NOTE",
    "RATE_MATCH",
    "achieved",
    "confirmed_estimates",
    "curve_identity",
    "distinct",
    "drop_estimates",
    "image_correctness",
    "lossless_estimates",
    "paired_estimates",
    "paired_metric_batch",
    "row_at",
]

#: A row stands for a target rate when its nominal rate is that rate or its achieved rate lies within this distance
#: of it (half the finest grid step, 0.05): a column labelled 0.15 is never filled from a 0.10 row.
RATE_MATCH = 0.025
#: Drop columns and lossless metrics recomputable from per-image predictions (the metric each reads).
IMAGE_METRICS: dict[str, str] = {
    "drop": "accuracy",
    "drop_accuracy": "accuracy",
    "drop_balanced_accuracy": "balanced_accuracy",
    "accuracy": "accuracy",
    "balanced_accuracy": "balanced_accuracy",
    "worst_class_recall": "worst_class_recall",
}
#: How a lossless rate's interval is drawn, for the report to print beside it.
LOSSLESS_NOTE = (
    "A lossless rate's interval resamples training checkpoints, selection seeds within them and the validation "
    "images (one draw shared by every run of the line), and recomputes each curve's lossless rate from its per-image "
    "predictions on the drawn images, so it includes the noise of choosing the rate on a finite validation split. "
    "The test-confirmed rate (the chosen rate if its test drop is within the tolerance, else the largest smaller "
    "rate of that curve whose test drop is; docs/analysis-plan.md §5(a)) resamples the test images the same way, "
    "with each curve's validation choice held fixed. A curve whose lossless rate is 0 has nothing to confirm and is "
    "left out of the count of runs whose rate held on test. Without per-image predictions (or for AUROC) only "
    "checkpoints and seeds are resampled, as each row says."
)

#: Elements of one chunk of replicates x columns in the lossless statistic (memory, not results).
_CHUNK_ELEMENTS = 1 << 22


def achieved(row: Row) -> float:
    """The fraction of units a row removed (its nominal ``rate`` for tables without ``achieved_rate``)."""
    value = row.get("achieved_rate")
    return float(row["rate"]) if value is None or value == "" else float(value)


def row_at(curve: Sequence[Row], rate: float) -> Row | None:
    """The row of a curve at ``rate``: nominal rate equal to it or achieved rate within :data:`RATE_MATCH`; the one
    whose achieved rate is nearest (ties: the smaller nominal rate); ``None`` when the curve has no row there."""
    target = format_rate(rate)
    near = [r for r in curve if format_rate(r["rate"]) == target or abs(achieved(r) - rate) <= RATE_MATCH + 1e-9]
    if not near:
        return None
    return min(near, key=lambda r: (abs(achieved(r) - rate), float(r["rate"])))


@functools.lru_cache(maxsize=1 << 15)
def _correct(predictions: str, labels: str) -> np.ndarray | None:
    predicted, truth = decode_classes(predictions), decode_classes(labels)
    if predicted.shape != truth.shape:
        return None
    result = predicted == truth
    result.setflags(write=False)
    return result


@functools.lru_cache(maxsize=1 << 8)
def _classes(labels: str) -> np.ndarray:
    result = decode_classes(labels)
    result.setflags(write=False)
    return result


def image_correctness(row: Row, labels: str | None) -> np.ndarray | None:
    """Whether ``row`` classified each image right (read-only bool array, cached by the encoded text), or ``None``
    when the row has no predictions, no labels are given, or their lengths differ."""
    predictions = row.get("predictions")
    if not predictions or not labels:
        return None
    return _correct(str(predictions), str(labels))


def curve_identity(curve: Sequence[Row]) -> tuple[Any, ...]:
    """What makes two runs of one line and checkpoint the same measurement: per rate, the per-image predictions
    (else the metrics). Two selection seeds of a deterministic criterion have equal identities."""
    return tuple(
        (
            format_rate(r["rate"]),
            r.get("predictions") or tuple(str(r.get(k)) for k in ("accuracy", "balanced_accuracy", "auroc")),
        )
        for r in curve
    )


def distinct(items: Sequence[Any], key: Callable[[Any], Hashable]) -> tuple[list[Any], int]:
    """``items`` with every copy left out (an item whose ``key`` an earlier item has), and the number left out.

    >>> distinct([("c1", "x"), ("c1", "x"), ("c2", "x")], key=lambda item: item)
    ([('c1', 'x'), ('c2', 'x')], 1)
    """
    seen: set[Hashable] = set()
    kept = []
    for item in items:
        k = key(item)
        if k not in seen:
            seen.add(k)
            kept.append(item)
    return kept, len(items) - len(kept)


def _shared_labels(baselines: Sequence[Row]) -> str | None:
    """The labels text every baseline shares (``None`` when one lacks it or they differ)."""
    texts = {b.get("labels") or "" for b in baselines}
    return texts.pop() if len(texts) == 1 and "" not in texts else None


def paired_metric_batch(
    grids_a: Sequence[np.ndarray],
    grids_b: Sequence[np.ndarray],
    labels: np.ndarray,
    clusters: Sequence[Hashable],
    *,
    metric: str = "accuracy",
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> list[BootstrapEstimate]:
    """:func:`medprune.stats.clustered_paired_metric` for several comparisons on the same runs and images at once.

    Every comparison ``k`` is ``metric(grids_a[k]) - metric(grids_b[k])`` (rows x images correctness, rows in the
    order of ``clusters``). Comparisons on the same runs and images get the same resamples from the same seed, so
    one draw serves them all: the statistic is computed for every comparison on each batch of draws (as matrix
    products of the image counts) and each gets its own estimate, equal to what ``clustered_paired_metric`` gives it
    alone (tested).

    Args:
        grids_a: per comparison, A's correctness (rows x images).
        grids_b: per comparison, B's correctness on the same rows and images.
        labels: the images' labels (for ``balanced_accuracy``).
        clusters: one id per row, its training checkpoint (shared by every comparison).
        metric: ``accuracy`` or ``balanced_accuracy``.
        n_resamples: bootstrap replicates.
        seed: their seed.

    Returns:
        One estimate per comparison, in order.
    """
    if metric not in ("accuracy", "balanced_accuracy"):
        raise ValueError(f"metric must be 'accuracy' or 'balanced_accuracy', got {metric!r}")
    if not grids_a:
        return []
    diffs = np.stack(
        [
            np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
            for a, b in zip(grids_a, grids_b, strict=True)
        ]
    )
    k, rows, images = diffs.shape
    y = np.unique(np.asarray(labels), return_inverse=True)[1].ravel()
    onehot = (y[:, None] == np.arange(int(y.max()) + 1)[None, :]).astype(np.float64)
    classes = 1 if metric == "accuracy" else onehot.shape[1]
    per_image = diffs.transpose(2, 0, 1)  # (images, k, rows)
    matrix = (  # (images, k x classes x rows): one replicate's image counts times it sum each comparison per row
        per_image.reshape(images, k * rows)
        if metric == "accuracy"
        else (onehot[:, None, :, None] * per_image[:, :, None, :]).reshape(images, -1)
    )
    width = rows * classes
    values: list[np.ndarray] = []  # (b, k) per call of the statistic, the observed data first

    def statistic(row_counts: np.ndarray, drawn: np.ndarray | None) -> np.ndarray:
        assert drawn is not None  # images are always resampled here
        b = drawn.shape[0]
        counts = np.bincount((drawn + images * np.arange(b)[:, None]).ravel(), minlength=b * images)
        counts = counts.reshape(b, images).astype(np.float64)
        weights = (row_counts / row_counts.sum(axis=1, keepdims=True))[:, None, None, :]  # (b, 1, 1, rows)
        chunk = max(1, _CHUNK_ELEMENTS // (width * b))  # comparisons per matrix product (memory)
        parts = []
        for start in range(0, k, chunk):
            stop = min(start + chunk, k)
            sums = (counts @ matrix[:, start * width : stop * width]).reshape(b, stop - start, classes, rows)
            parts.append((sums * weights).sum(axis=-1))
        hits = np.concatenate(parts, axis=1)  # (b, k, classes)
        if metric == "accuracy":
            value = hits[..., 0] / images
        else:
            totals = (counts @ onehot)[:, None, :]
            with np.errstate(invalid="ignore", divide="ignore"):
                value = np.nanmean(np.where(totals > 0, hits / np.maximum(totals, 1.0), np.nan), axis=-1)
        values.append(value)
        return value[:, 0]

    first = hierarchical_bootstrap_counts(
        statistic, list(clusters), n_images=images, n_resamples=n_resamples, seed=seed
    )
    finite = len(values) > 1 and all(np.isfinite(v).all() for v in values)
    if first.estimate is None or not finite:
        # no data, or undefined or non-finite values: each comparison alone, whose estimate says what it left out
        return [
            clustered_paired_metric(a, b, labels, list(clusters), metric=metric, n_resamples=n_resamples, seed=seed)  # type: ignore[arg-type]
            for a, b in zip(grids_a, grids_b, strict=True)
        ]
    observed, replicates = values[0][0], np.concatenate(values[1:])
    return [first] + [
        BootstrapEstimate(
            float(observed[i]),
            replicates[:, i],
            first.n_clusters,
            first.n_rows,
            first.n_images,
            first.method,
            first.note,
        )
        for i in range(1, k)
    ]


def _grids(
    a_rows: Sequence[Row], b_rows: Sequence[Row], references: Sequence[Row]
) -> tuple[np.ndarray, np.ndarray, str] | None:
    """A's and B's per-image correctness (rows x images) and the shared labels, or ``None`` when a row lacks them."""
    labels = _shared_labels(references)
    if labels is None or not a_rows:
        return None
    grid_a = [image_correctness(r, labels) for r in a_rows]
    grid_b = [image_correctness(r, labels) for r in b_rows]
    if any(g is None for g in [*grid_a, *grid_b]):
        return None
    return np.stack(grid_a), np.stack(grid_b), labels  # type: ignore[arg-type]


def _batched(
    requests: Sequence[tuple[Sequence[Row], Sequence[Row], Sequence[Row]]],
    metric: str,
    fallback: Callable[[int], BootstrapEstimate],
    n_resamples: int,
    seed: int,
) -> list[tuple[BootstrapEstimate, str]]:
    """Estimates of ``metric(A) - metric(B)`` per request ``(A rows, B rows, baselines)``: from per-image predictions
    where every row has them (requests on the same runs and images share one draw), else ``fallback(index)``."""
    results: list[tuple[BootstrapEstimate, str] | None] = [None] * len(requests)
    groups: dict[tuple[Any, ...], list[tuple[int, np.ndarray, np.ndarray]]] = {}
    for i, (a_rows, b_rows, references) in enumerate(requests):
        found = _grids(a_rows, b_rows, references) if metric in ("accuracy", "balanced_accuracy") else None
        if found is None:
            results[i] = fallback(i), "checkpoints x seeds"
            continue
        grid_a, grid_b, labels = found
        design = (tuple(str(r["checkpoint"]) for r in a_rows), labels)
        groups.setdefault(design, []).append((i, grid_a, grid_b))
    for (clusters, labels), members in groups.items():
        estimates = paired_metric_batch(
            [m[1] for m in members],
            [m[2] for m in members],
            _classes(labels),
            clusters,
            metric=metric,
            n_resamples=n_resamples,
            seed=seed,
        )
        for (i, _, _), estimate in zip(members, estimates, strict=True):
            results[i] = estimate, "checkpoints x seeds x test images"
    return results  # type: ignore[return-value]


def drop_estimates(
    cells: Sequence[tuple[Sequence[Row], Sequence[Row]]],
    column: str,
    *,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> list[tuple[BootstrapEstimate, str]]:
    """Per cell ``(rows, baselines)``: the mean drop of ``column`` over the rows (one per distinct run) and its
    clustered interval, with what was resampled as text.

    From per-image predictions when ``column`` is an accuracy or balanced-accuracy drop and every row and baseline
    has them on one image set (checkpoints, seeds, test images resampled; cells on the same runs share one draw);
    else from the rows' values (checkpoints and seeds resampled).

    Args:
        cells: per cell, the rows (distinct runs; copies left out) and each row's baseline row on the same split.
        column: ``drop``, ``drop_<metric>`` or ``worst_recall_drop``.
        n_resamples: bootstrap replicates.
        seed: their seed.
    """

    def fallback(i: int) -> BootstrapEstimate:
        picked = cells[i][0]
        values = [float("nan") if r.get(column) is None else float(r[column]) for r in picked]
        return clustered_mean(values, [str(r["checkpoint"]) for r in picked], n_resamples=n_resamples, seed=seed)

    requests = [(references, picked, references) for picked, references in cells]  # drop = baseline - pruned
    return _batched(requests, IMAGE_METRICS.get(column, ""), fallback, n_resamples, seed)


def paired_estimates(
    pairs: Sequence[tuple[Sequence[Row], Sequence[Row], Sequence[Row]]],
    metric: str,
    column: str,
    *,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> list[tuple[BootstrapEstimate, str]]:
    """Per pair ``(A rows, B rows, baselines)`` matched on checkpoint, seed and images: ``metric(A) - metric(B)``
    and its clustered interval, with what was resampled as text (pairs on the same runs share one draw).

    Args:
        pairs: A's rows (one per distinct pair), B's rows on the same runs in the same order, and each run's
            baseline (for the labels).
        metric: the metric compared (higher is better); accuracy and balanced accuracy from per-image predictions.
        column: its row column (the fallback without per-image predictions).
        n_resamples: bootstrap replicates.
        seed: their seed.
    """

    def fallback(i: int) -> BootstrapEstimate:
        a_rows, b_rows, _ = pairs[i]
        values_a = [float("nan") if r.get(column) is None else float(r[column]) for r in a_rows]
        values_b = [float("nan") if r.get(column) is None else float(r[column]) for r in b_rows]
        clusters = [str(r["checkpoint"]) for r in a_rows]
        return clustered_paired_mean(values_a, values_b, clusters, n_resamples=n_resamples, seed=seed)

    return _batched(pairs, metric, fallback, n_resamples, seed)


@dataclass(frozen=True, eq=False)
class _CurveGrid:
    """Per-image correctness of a line's runs at every rate of the line, on one split's images.

    ``correct`` is (images, runs, 1 + rates): column 0 the run's baseline, then each rate (zeros where absent).
    """

    rates: np.ndarray  # (R,) nominal rates, ascending
    present: np.ndarray  # (runs, R) the run has a row at that rate
    achieved: np.ndarray  # (runs, R) achieved rate of that row (0 where absent)
    correct: np.ndarray  # (images, runs, 1 + R) float
    onehot: np.ndarray  # (images, classes) float
    metric: str

    @classmethod
    def build(cls, curves: Sequence[Sequence[Row]], references: Sequence[Row], metric: str) -> _CurveGrid | None:
        labels = _shared_labels(references)
        if labels is None or metric not in IMAGE_METRICS or not curves:
            return None
        rates = sorted({format_rate(r["rate"]) for curve in curves for r in curve}, key=float)
        index = {rate: i for i, rate in enumerate(rates)}
        y = _classes(labels)
        correct = np.zeros((y.size, len(curves), 1 + len(rates)))
        present = np.zeros((len(curves), len(rates)), dtype=bool)
        achieved_rates = np.zeros((len(curves), len(rates)))
        for j, (curve, reference) in enumerate(zip(curves, references, strict=True)):
            base = image_correctness(reference, labels)
            if base is None:
                return None
            correct[:, j, 0] = base
            for row in curve:
                grid = image_correctness(row, labels)
                if grid is None:
                    return None
                k = index[format_rate(row["rate"])]
                correct[:, j, 1 + k], present[j, k], achieved_rates[j, k] = grid, True, achieved(row)
        classes = np.unique(y)
        onehot = (y[:, None] == classes[None, :]).astype(np.float64)
        return cls(np.array([float(r) for r in rates]), present, achieved_rates, correct, onehot, metric)

    @property
    def n_images(self) -> int:
        return int(self.correct.shape[0])

    @functools.cached_property
    def matrix(self) -> np.ndarray:
        """(images, runs x columns [x classes]): what one replicate's image counts multiply."""
        images, runs, columns = self.correct.shape
        flat = self.correct.reshape(images, runs * columns)
        if IMAGE_METRICS[self.metric] == "accuracy":
            return flat
        return (flat[:, :, None] * self.onehot[:, None, :]).reshape(images, -1)

    def drops(self, image_counts: np.ndarray) -> np.ndarray:
        """The metric drop (baseline - pruned) of every run and rate on each replicate's images: (b, runs, R)."""
        images, runs, columns = self.correct.shape
        if IMAGE_METRICS[self.metric] == "accuracy":
            value = (image_counts @ self.matrix).reshape(-1, runs, columns) / images
        else:
            hits = (image_counts @ self.matrix).reshape(-1, runs, columns, self.onehot.shape[1])
            totals = (image_counts @ self.onehot)[:, None, None, :]
            both = IMAGE_METRICS[self.metric] == "balanced_accuracy"
            if (totals > 0).all():  # every class drawn (the usual case): plain mean / min over the classes
                recall = hits / totals
                value = recall.mean(axis=-1) if both else recall.min(axis=-1)
            else:  # recall over the classes present in the draw
                with np.errstate(invalid="ignore", divide="ignore"):
                    recall = np.where(totals > 0, hits / np.maximum(totals, 1.0), np.nan)
                value = np.nanmean(recall, axis=-1) if both else np.nanmin(recall, axis=-1)
        return value[:, :, :1] - value[:, :, 1:]

    def lossless(self, drops: np.ndarray, tolerance: float, contiguous: bool, cap: np.ndarray | None) -> np.ndarray:
        """Each run's rate (achieved) by the lossless rule on these drops: (b, runs).

        ``cap`` (runs,): only rates up to it count and the rule is not contiguous (the test-confirmed rate).
        """
        within = self.present & (drops <= tolerance + 1e-12)
        if cap is not None:
            within &= self.rates[None, None, :] <= cap[None, :, None] + 1e-9
        elif contiguous:
            failed = self.present & ~within
            within &= np.cumsum(failed, axis=-1) == 0
        last = within.shape[-1] - 1 - np.argmax(within[..., ::-1], axis=-1)
        chosen = np.take_along_axis(np.broadcast_to(self.achieved, within.shape), last[..., None], axis=-1)[..., 0]
        return np.where(within.any(axis=-1), chosen, 0.0)


#: One lossless rule: (tolerance, contiguous, cap per run or ``None``).
_Rule = tuple[float, bool, "np.ndarray | None"]


def _line_rates(
    grid: _CurveGrid, clusters: Sequence[str], rules: Sequence[_Rule], n_resamples: int, seed: int
) -> list[BootstrapEstimate]:
    """The line's mean rate under each rule, from one draw: the drops are computed once per batch of replicates and
    every rule read from them (each estimate is what a draw for that rule alone would give)."""
    images = grid.n_images
    chunk = max(1, _CHUNK_ELEMENTS // max(grid.matrix.shape[1], images))
    values: list[np.ndarray] = []  # (b, rules) per call of the statistic, the observed data first

    def statistic(row_counts: np.ndarray, drawn: np.ndarray | None) -> np.ndarray:
        assert drawn is not None  # images are always resampled here
        result = np.empty((row_counts.shape[0], len(rules)))
        for start in range(0, row_counts.shape[0], chunk):
            part = drawn[start : start + chunk]
            b = part.shape[0]
            counts = np.bincount((part + images * np.arange(b)[:, None]).ravel(), minlength=b * images)
            drops = grid.drops(counts.reshape(b, images).astype(np.float64))
            weights = row_counts[start : start + chunk]
            for j, (tolerance, contiguous, cap) in enumerate(rules):
                rates = grid.lossless(drops, tolerance, contiguous, cap)
                result[start : start + b, j] = (weights * rates).sum(axis=1) / weights.sum(axis=1)
        values.append(result)
        return result[:, 0]

    first = hierarchical_bootstrap_counts(statistic, clusters, n_images=images, n_resamples=n_resamples, seed=seed)
    if first.estimate is None or len(values) < 2:
        return [first] * len(rules)
    observed, replicates = values[0][0], np.concatenate(values[1:])
    return [first] + [
        BootstrapEstimate(
            float(observed[j]),
            replicates[:, j],
            first.n_clusters,
            first.n_rows,
            first.n_images,
            first.method,
            first.note,
        )
        for j in range(1, len(rules))
    ]


def lossless_estimates(
    curves: Sequence[Sequence[Row]],
    references: Sequence[Row],
    *,
    metric: str,
    tolerances: Sequence[float],
    contiguous: bool = True,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> list[BootstrapEstimate] | None:
    """A line's mean lossless rate (achieved) over its distinct runs at each tolerance, validation images resampled.

    Each replicate draws checkpoints, seeds within them and the validation images, and recomputes every drawn run's
    lossless rate (:func:`medprune.report.tables.lossless_rate`'s rule) from its per-image predictions on the drawn
    images.

    Args:
        curves: the validation rows of each distinct run of the line (copies left out).
        references: each run's validation baseline row, in the same order.
        metric: the lossless metric (``accuracy``, ``balanced_accuracy`` or ``worst_class_recall``).
        tolerances: allowed drops of the metric (one estimate each).
        contiguous: every smaller rate within the tolerance too.
        n_resamples: bootstrap replicates.
        seed: their seed.

    Returns:
        One estimate per tolerance, or ``None`` when per-image predictions are missing, the images differ or the
        metric cannot be recomputed from predictions (AUROC).
    """
    grid = _CurveGrid.build(curves, references, metric)
    if grid is None or not tolerances:
        return None
    clusters = [str(c[0]["checkpoint"]) for c in curves]
    return _line_rates(grid, clusters, [(t, contiguous, None) for t in tolerances], n_resamples, seed)


def confirmed_estimates(
    curves: Sequence[Sequence[Row]],
    references: Sequence[Row],
    chosen: Sequence[Sequence[float]],
    *,
    metric: str,
    tolerances: Sequence[float],
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> list[BootstrapEstimate] | None:
    """A line's mean test-confirmed rate at each tolerance: per run, the largest rate up to its validation choice
    whose test drop is within the tolerance (0 when none, or when the choice is 0), test images resampled with the
    choices fixed.

    Args:
        curves: the test rows of each distinct run (copies left out).
        references: each run's test baseline row, in the same order.
        chosen: per tolerance, each run's validation lossless rate (nominal).
        metric: the lossless metric.
        tolerances: allowed drops (one estimate each).
        n_resamples: bootstrap replicates.
        seed: their seed.

    Returns:
        One estimate per tolerance, or ``None`` as :func:`lossless_estimates`.
    """
    grid = _CurveGrid.build(curves, references, metric)
    if grid is None or not tolerances:
        return None
    caps = [np.asarray(c, dtype=np.float64) for c in chosen]
    rules = [(t, False, np.where(cap > 0, cap, -1.0)) for t, cap in zip(tolerances, caps, strict=True)]  # 0: none
    clusters = [str(c[0]["checkpoint"]) for c in curves]
    return _line_rates(grid, clusters, rules, n_resamples, seed)
