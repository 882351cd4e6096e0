"""Whether a compressed model keeps the original's promise, judged from paired predictions on one split.

Compress compares two models on the same images, so every question here is paired:

- :func:`paired_bound`: the one-sided lower confidence bound of ``metric(candidate) - metric(original)``, by a paired
  percentile bootstrap over the images (both models' predictions on a resampled image travel together). A candidate
  is **certified** within a tolerance ``t`` when that bound is above ``-t``: with 95% confidence it loses less than
  ``t``. A point estimate inside the tolerance is not enough: on a few hundred images one error moves balanced
  accuracy by a point or more, and the largest of several noisy candidates is biased upward (the winner's curse).
- :func:`class_guard`: no class's recall may fall by more than a stated amount, and never to zero when it was not
  zero (a model that stops predicting a class is refused whatever the average says).
- :func:`non_inferiority`: the same bound read as a verdict, "non-inferior at margin m" or "not shown", with the
  smallest margin the split certifies.
- :func:`flips` and :func:`mcnemar_exact`: the images whose prediction changed, per class and direction, and the exact
  McNemar test of whether the two models' error rates differ.

>>> labels = np.array([0] * 50 + [1] * 50)
>>> same = labels.copy()
>>> paired_bound(labels, same, same, metric="balanced_accuracy").lower_bound
0.0
>>> mcnemar_exact(newly_wrong=0, newly_right=0)
1.0
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats

__all__ = [
    "AcceptanceRule",
    "BOUND_METRICS",
    "Judgement",
    "BoundMetric",
    "ClassFlip",
    "PairedBound",
    "class_guard",
    "class_guard_allowance",
    "flips",
    "mcnemar_exact",
    "metric_of_predictions",
    "non_inferiority",
    "paired_bound",
    "smallest_certified_tolerance",
]

BoundMetric = Literal["accuracy", "balanced_accuracy", "worst_class_recall"]
#: Metrics a paired bound is computed for: each is a function of (label, prediction) pairs alone.
BOUND_METRICS: tuple[str, ...] = ("accuracy", "balanced_accuracy", "worst_class_recall")

_RNG_KEYWORD = "rng" if "rng" in inspect.signature(stats.bootstrap).parameters else "random_state"


@dataclass(frozen=True)
class PairedBound:
    """``metric(candidate) - metric(original)`` on one split with its one-sided lower confidence bound.

    Attributes:
        metric: the metric compared.
        difference: the observed difference (candidate minus original).
        lower_bound: the one-sided lower bound at ``confidence`` (``None`` with fewer than 2 images).
        confidence: the bound's confidence level (0.95: 95% of resamples lie above it).
        n_images: images the bound rests on.
        method: how it was computed.
    """

    metric: str
    difference: float
    lower_bound: float | None
    confidence: float
    n_images: int
    method: str

    def certifies(self, tolerance: float) -> bool:
        """Whether the bound shows the candidate loses less than ``tolerance`` (``lower_bound > -tolerance``)."""
        return self.lower_bound is not None and self.lower_bound > -tolerance

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON values."""
        return asdict(self)


@dataclass(frozen=True)
class ClassFlip:
    """The images of one true class whose prediction changed between the original and the candidate.

    Attributes:
        class_name: the true class.
        newly_wrong: images the original classified right and the candidate wrong (for a disease class: a missed
            disease; for the normal class: a false alarm).
        newly_right: images the original classified wrong and the candidate right.
        images: images of this class on the split.
    """

    class_name: str
    newly_wrong: int
    newly_right: int
    images: int


def _as_labels(labels: ArrayLike, original: ArrayLike, candidate: ArrayLike) -> tuple[np.ndarray, ...]:
    y, a, b = (np.asarray(v).astype(np.int64).ravel() for v in (labels, original, candidate))
    if not (y.shape == a.shape == b.shape):
        raise ValueError(f"labels and both predictions need one entry per image, got {y.size}, {a.size}, {b.size}")
    return y, a, b


def metric_of_predictions(
    labels: np.ndarray, predictions: np.ndarray, metric: str, num_classes: int | None = None
) -> np.ndarray:
    """``metric`` of predictions, vectorised over leading axes (``labels`` and ``predictions``: ``(..., images)``).

    Balanced accuracy and worst-class recall use the classes present in ``labels`` (per resample).

    >>> float(metric_of_predictions(np.array([0, 0, 1, 1]), np.array([0, 1, 1, 1]), "balanced_accuracy"))
    0.75
    """
    if metric not in BOUND_METRICS:
        raise ValueError(f"metric={metric!r} has no paired bound; valid values: {', '.join(BOUND_METRICS)}")
    correct = labels == predictions
    if metric == "accuracy":
        return correct.mean(axis=-1)
    classes = int(num_classes if num_classes is not None else labels.max() + 1)
    onehot = labels[..., None] == np.arange(classes)  # (..., images, classes)
    total = onehot.sum(axis=-2)
    hits = (onehot & correct[..., None]).sum(axis=-2)
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = np.where(total > 0, hits / np.maximum(total, 1), np.nan)
    if metric == "balanced_accuracy":
        return np.nanmean(recall, axis=-1)
    return np.nanmin(recall, axis=-1)


def paired_bound(
    labels: ArrayLike,
    original: ArrayLike,
    candidate: ArrayLike,
    *,
    metric: str = "balanced_accuracy",
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
) -> PairedBound:
    """The one-sided lower confidence bound of ``metric(candidate) - metric(original)`` over the same images.

    Args:
        labels: true class per image.
        original: the original model's predicted class per image.
        candidate: the candidate's predicted class per image (same images, same order).
        metric: one of :data:`BOUND_METRICS`.
        confidence: one-sided confidence level in (0, 1).
        n_resamples: bootstrap resamples (percentile method, images resampled with replacement, pairs kept).
        seed: seed of the resampling (the same inputs give the same bound).

    Returns:
        A :class:`PairedBound`. Identical predictions give a bound of exactly 0.

    >>> y = np.array([0] * 40 + [1] * 40)
    >>> worse = y.copy(); worse[:8] = 1  # eight normal images now called diseased
    >>> bound = paired_bound(y, y, worse, metric="accuracy")
    >>> round(bound.difference, 3), bound.lower_bound < bound.difference, bound.certifies(0.01)
    (-0.1, True, False)
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    y, a, b = _as_labels(labels, original, candidate)
    classes = int(max(y.max(initial=0), a.max(initial=0), b.max(initial=0))) + 1
    method = f"paired bootstrap over images, percentile, one-sided, {n_resamples} resamples, seed {seed}"

    def statistic(index: np.ndarray, axis: int = -1) -> np.ndarray:
        ys = y[index]
        return metric_of_predictions(ys, b[index], metric, classes) - metric_of_predictions(
            ys, a[index], metric, classes
        )

    difference = float(statistic(np.arange(y.size)))
    if y.size < 2:
        return PairedBound(metric, difference, None, confidence, int(y.size), method)
    if np.array_equal(a, b):  # no image changed: every resample differs by exactly 0
        return PairedBound(metric, difference, 0.0, confidence, int(y.size), method)
    result = stats.bootstrap(
        (np.arange(y.size),),
        statistic,
        n_resamples=n_resamples,
        batch=min(n_resamples, 500),
        vectorized=True,
        confidence_level=confidence,
        alternative="greater",
        method="percentile",
        **{_RNG_KEYWORD: np.random.default_rng(seed)},
    )
    low = float(result.confidence_interval.low)
    return PairedBound(metric, difference, low if math.isfinite(low) else None, confidence, int(y.size), method)


def smallest_certified_tolerance(bounds: Sequence[PairedBound]) -> float | None:
    """The smallest tolerance at which at least one of ``bounds`` is certified (``None`` with no bound at all).

    >>> smallest_certified_tolerance([PairedBound("accuracy", -0.01, -0.031, 0.95, 500, "")])
    0.031
    """
    lows = [b.lower_bound for b in bounds if b.lower_bound is not None]
    if not lows:
        return None
    return round(max(0.0, -max(lows)), 6)


def class_guard(
    labels: ArrayLike,
    original: ArrayLike,
    candidate: ArrayLike,
    class_names: Sequence[str],
    *,
    max_recall_drop: float,
) -> list[str]:
    """Why the candidate is refused for a class (an empty list: every class passes).

    A class fails when its recall falls to zero when it was not zero, or falls by more than the larger of
    ``max_recall_drop`` and one image of that class (:func:`class_guard_allowance`): a class of 8 validation images
    moves 0.125 per image, so a guard of 0.10 would refuse every single error there, a finer line than the split can
    draw. The allowance is stated in the refusal.

    >>> y = np.array([0, 0, 1, 1]); original = np.array([0, 0, 1, 0]); candidate = np.array([0, 0, 0, 0])
    >>> class_guard(y, original, candidate, ["normal", "pneumonia"], max_recall_drop=0.6)
    ['pneumonia: recall 0.50 -> 0.00 (never predicted correctly any more)']
    """
    y, a, b = _as_labels(labels, original, candidate)
    reasons = []
    for index, name in enumerate(class_names):
        members = y == index
        if not members.any():
            continue
        before, after = float((a[members] == index).mean()), float((b[members] == index).mean())
        allowance = class_guard_allowance(max_recall_drop, int(members.sum()))
        if before > 0 and after == 0:
            reasons.append(f"{name}: recall {before:.2f} -> 0.00 (never predicted correctly any more)")
        elif before - after > allowance + 1e-12:
            why = f"falls by more than {allowance:.2f}"
            if allowance > max_recall_drop:
                why += f", one of its {int(members.sum())} images"
            reasons.append(f"{name}: recall {before:.2f} -> {after:.2f} ({why})")
    return reasons


def class_guard_allowance(max_recall_drop: float, images: int) -> float:
    """The recall drop the class guard allows a class of ``images`` validation images: the stated guard, or one
    image's worth of recall where a single image moves it by more.

    >>> class_guard_allowance(0.1, 200), class_guard_allowance(0.1, 8)
    (0.1, 0.125)
    """
    return max(max_recall_drop, 1.0 / images) if images > 0 else max_recall_drop


def non_inferiority(bound: PairedBound, margin: float) -> str:
    """``"non-inferior at margin m"`` when the bound certifies ``margin``, else ``"not shown"``.

    >>> non_inferiority(PairedBound("accuracy", 0.0, -0.004, 0.95, 600, ""), 0.01)
    'non-inferior at margin 0.01'
    """
    return f"non-inferior at margin {margin:g}" if bound.certifies(margin) else "not shown"


def flips(labels: ArrayLike, original: ArrayLike, candidate: ArrayLike, class_names: Sequence[str]) -> list[ClassFlip]:
    """Per true class, the images whose correctness changed between ``original`` and ``candidate``."""
    y, a, b = _as_labels(labels, original, candidate)
    rows = []
    for index, name in enumerate(class_names):
        members = y == index
        right_a, right_b = a[members] == index, b[members] == index
        rows.append(
            ClassFlip(
                class_name=str(name),
                newly_wrong=int((right_a & ~right_b).sum()),
                newly_right=int((~right_a & right_b).sum()),
                images=int(members.sum()),
            )
        )
    return rows


def mcnemar_exact(*, newly_wrong: int, newly_right: int) -> float:
    """Two-sided exact McNemar p-value: the discordant pairs against a fair coin (``scipy.stats.binomtest``).

    >>> round(mcnemar_exact(newly_wrong=10, newly_right=2), 4)
    0.0386
    """
    discordant = newly_wrong + newly_right
    if discordant == 0:
        return 1.0
    return float(stats.binomtest(newly_wrong, discordant, 0.5).pvalue)


@dataclass(frozen=True)
class Judgement:
    """What the decision rule made of one candidate.

    Attributes:
        lower_bound: the one-sided lower bound of (candidate - original) on the metric (``None`` for the point
            rule on a metric without a bound).
        class_guard: why the class guard refuses it (empty: every class passes).
        accepted: whether the rule accepts it.
    """

    lower_bound: float | None
    class_guard: list[str] = field(default_factory=list)
    accepted: bool = False


@dataclass(frozen=True)
class AcceptanceRule:
    """When compress accepts a candidate on the validation split.

    Attributes:
        metric: what the tolerance is read on.
        tolerance: the largest drop promised (0.01 = 1 point).
        rule: ``certified`` (the paired lower bound above ``-tolerance``) or ``point`` (the observed drop within
            ``tolerance``: uncertified).
        confidence: the bound's one-sided confidence.
        max_class_recall_drop: the class guard (:func:`class_guard`), applied under both rules.
        n_resamples: bootstrap resamples of the bound. seed: its seed (fixed: the same inputs, the same bound).
    """

    metric: str
    tolerance: float
    rule: Literal["certified", "point"] = "certified"
    confidence: float = 0.95
    max_class_recall_drop: float = 0.1
    n_resamples: int = 2000
    seed: int = 0

    def within_tolerance(self, drop: float | None) -> bool:
        """Whether an observed drop is within the tolerance (the point rule's test)."""
        return drop is not None and drop <= self.tolerance + 1e-12

    def judge(
        self,
        labels: ArrayLike,
        original: ArrayLike,
        candidate: ArrayLike,
        class_names: Sequence[str],
        drop: float | None,
    ) -> Judgement:
        """Judge a candidate from both models' predicted classes on the same validation images.

        Args:
            labels: true classes. original, candidate: predicted classes of the unpruned model and the candidate.
            class_names: the classes, in label order.
            drop: the observed drop of ``metric`` (baseline - candidate), as the point rule reads it.

        >>> y = np.array([0] * 30 + [1] * 30)
        >>> AcceptanceRule("balanced_accuracy", 0.01).judge(y, y, y, ["a", "b"], 0.0).accepted
        True
        """
        bound = None
        if self.metric in BOUND_METRICS:
            bound = paired_bound(
                labels,
                original,
                candidate,
                metric=self.metric,
                confidence=self.confidence,
                n_resamples=self.n_resamples,
                seed=self.seed,
            ).lower_bound
        guard = class_guard(labels, original, candidate, class_names, max_recall_drop=self.max_class_recall_drop)
        if self.rule == "certified":
            passes = bound is not None and bound > -self.tolerance
        else:
            passes = self.within_tolerance(drop)
        return Judgement(bound, guard, passes and not guard)
