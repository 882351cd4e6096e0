"""Explanation drift: do the shipped model's heatmaps still look like the original's on the same test images?

Method (the sweep report's, :mod:`medprune.report.heatmaps`): LRP input heatmaps of the original and the compressed
model for the same images, each explaining the image's **true class**; per image, the Pearson correlation of the two
maps (1 = the same pattern up to scale, 0 = unrelated; a constant map gives none and is left out). Images: up to
``per_class`` test images of every class, drawn with ``seed`` (:func:`~medprune.report.heatmaps.pick_images`), so
the cost is bounded (two LRP passes over at most ``per_class x classes`` images).

Spread: per class, the median and interquartile range over images, and the mean with a percentile-bootstrap 95%
interval over images. These describe images of ONE checkpoint: they say how much the heatmaps of this model moved,
not how another training run would fare.

A model LRP cannot explain (an architecture without rules) is not an error here: the record says why it was skipped.

>>> # explanation_drift(original, compressed, test_images, test_labels, ["normal", "pneumonia"])["per_class"]
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from medprune.report.heatmaps import pearson, pick_images, relevance
from medprune.stats import bootstrap_ci

logger = logging.getLogger(__name__)

__all__ = ["EXPLANATION_METHOD", "IMAGES_PER_CLASS", "drift_summary", "explanation_drift"]

#: How the heatmaps and their similarity are computed (stated on the card).
EXPLANATION_METHOD = (
    "LRP input heatmaps (medprune.scoring.lrp.input_relevance, default composite) of the true class, channels summed; "
    "per image the Pearson r between the original's and the compressed model's map"
)
#: Test images per class whose heatmaps are compared (fewer where a class has fewer).
IMAGES_PER_CLASS = 8
#: Resamples of the bootstrap interval of the mean r.
RESAMPLES = 2000


def drift_summary(correlations: np.ndarray, labels: np.ndarray, names: Sequence[str], seed: int = 0) -> dict[str, Any]:
    """Per-class and pooled spread of per-image heatmap correlations.

    Args:
        correlations: (N,) Pearson r per image (NaN where a map was constant). labels: (N,) true classes.
        names: class names. seed: seed of the bootstrap resampling.

    Returns:
        ``per_class``: one row per class with images (``n``), ``finite`` (images with an r), ``median``, ``IQR``
        (25th, 75th percentile), ``mean`` and ``mean 95% CI`` (percentile bootstrap over images); ``all``: the same
        row over every image.

    >>> drift_summary(np.array([1.0, 0.5, 0.0, 1.0]), np.array([0, 0, 1, 1]), ["a", "b"])["per_class"][0]["median"]
    0.75
    """
    correlations, labels = np.asarray(correlations, dtype=np.float64), np.asarray(labels)
    rows = [_row(name, correlations[labels == c], seed) for c, name in enumerate(names) if (labels == c).any()]
    return {"per_class": rows, "all": _row("all", correlations, seed)}


def _row(name: str, values: np.ndarray, seed: int) -> dict[str, Any]:
    finite = values[np.isfinite(values)]
    row: dict[str, Any] = {"class": name, "n": int(values.size), "finite": int(finite.size)}
    if not finite.size:
        return {**row, "median": None, "IQR": None, "mean": None, "mean 95% CI": None}
    interval = bootstrap_ci(finite, n_resamples=RESAMPLES, seed=seed)
    low, high = np.percentile(finite, [25, 75])
    return {
        **row,
        "median": float(np.median(finite)),
        "IQR": [float(low), float(high)],
        "mean": float(finite.mean()),
        "mean 95% CI": [interval.low, interval.high] if interval.has_interval else None,
    }


def explanation_drift(
    original: nn.Module,
    compressed: nn.Module,
    images: Tensor,
    labels: Tensor,
    names: Sequence[str],
    *,
    per_class: int = IMAGES_PER_CLASS,
    seed: int = 0,
) -> dict[str, Any]:
    """Heatmap similarity of ``compressed`` to ``original`` on a seeded, bounded sample of ``images`` per class.

    Args:
        original, compressed: the two models (CPU; their train/eval mode is restored).
        images, labels: the split (the card uses test) and its true classes. names: class names.
        per_class: images per class (at most). seed: draws the images and seeds the bootstrap.

    Returns:
        The card's ``explanations`` record: ``method``, ``images per class``, ``seed``, ``interval``, ``indices``
        (of the images used), ``per_image`` r, :func:`drift_summary`'s ``per_class`` and ``all``, and ``note``; or,
        when LRP cannot explain one of the models, ``skipped`` (why) with the method and sample size.
    """
    record: dict[str, Any] = {
        "method": EXPLANATION_METHOD,
        "images per class": per_class,
        "seed": seed,
        "interval": f"95% percentile bootstrap of the mean over images, {RESAMPLES} resamples, seed {seed}",
    }
    indices = pick_images(labels.numpy(), per_class, seed=seed)
    x, y = images[indices], labels[indices]
    try:
        with torch.enable_grad():
            maps = [relevance(model, x, y) for model in (original, compressed)]
    except Exception as error:  # noqa: BLE001 - any refusal of the explainer skips this evidence, never the card
        logger.warning("explanation drift skipped: LRP cannot explain this model (%s)", error)
        return {**record, "skipped": f"LRP could not explain the model ({type(error).__name__}: {error})"}
    r = pearson(*maps)
    return {
        **record,
        "indices": indices,
        "per_image": [None if not np.isfinite(v) else float(v) for v in r],
        **drift_summary(r, y.numpy(), names, seed=seed),
        "note": "a per-image statistic on one checkpoint: the spread is over images, not over training runs",
    }
