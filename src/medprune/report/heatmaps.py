"""Do explanations survive pruning? LRP input heatmaps of the same test images before and after pruning.

Similarity measure: the **Pearson correlation** between the unpruned and the pruned model's LRP input relevance maps
of the same image (maps flattened, channels summed; 1 = same pattern up to scale, 0 = unrelated). A constant map
has no defined correlation and gives NaN.

Pruned models are the masked ones (``apply_masks``), whose outputs equal the physically pruned model's.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from torch import Tensor, nn

from medprune.pruning import apply_masks
from medprune.scoring.lrp import input_relevance

logger = logging.getLogger(__name__)


def pearson(a: np.ndarray | Tensor, b: np.ndarray | Tensor) -> np.ndarray:
    """Per-sample Pearson correlation of two (N, ...) stacks of maps (flattened per sample).

    >>> x = np.random.default_rng(0).normal(size=(3, 4, 4))
    >>> np.round(pearson(x, 2 * x + 1), 6).tolist()
    [1.0, 1.0, 1.0]
    """
    a = np.asarray(a, dtype=np.float64).reshape(len(a), -1)
    b = np.asarray(b, dtype=np.float64).reshape(len(b), -1)
    if a.shape != b.shape:
        raise ValueError(f"maps differ in shape: {a.shape} vs {b.shape}")
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    denominator = np.sqrt((a * a).sum(axis=1) * (b * b).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, (a * b).sum(axis=1) / np.where(denominator > 0, denominator, 1), np.nan)


def relevance(model: nn.Module, inputs: Tensor, targets: Tensor, **options: Any) -> np.ndarray:
    """LRP input heatmaps (N, H, W) of ``model`` (``medprune.scoring.lrp.input_relevance``) as a NumPy array."""
    try:
        return input_relevance(model, inputs, targets, **options).detach().cpu().numpy()
    except RuntimeError as error:  # the lean hooks can fail on heavily pruned models: retry with zennit's own
        if options.get("fast") is False:
            raise
        logger.warning("LRP heatmap failed with the fast hooks (%s); retrying with fast=False", error)
        return input_relevance(model, inputs, targets, **{**options, "fast": False}).detach().cpu().numpy()


def heatmaps_under_masks(
    model: nn.Module,
    inputs: Tensor,
    targets: Tensor,
    masks_by_label: Mapping[str, Mapping[str, Tensor]],
    **options: Any,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Heatmaps of the unpruned model and of each masked variant, and each variant's per-image Pearson r.

    Returns:
        ``(maps, correlations)``: ``maps["unpruned"]`` then one (N, H, W) array per label; ``correlations[label]``
        is an (N,) array.
    """
    maps = {"unpruned": relevance(model, inputs, targets, **options)}
    correlations: dict[str, np.ndarray] = {}
    for label, masks in masks_by_label.items():
        with apply_masks(model, masks):
            maps[label] = relevance(model, inputs, targets, **options)
        correlations[label] = pearson(maps["unpruned"], maps[label])
    return maps, correlations


def similarity_curve(
    model: nn.Module,
    inputs: Tensor,
    targets: Tensor,
    masks_at: Mapping[float, Mapping[str, Tensor]],
    label: str,
    reference: np.ndarray | None = None,
    **options: Any,
) -> list[dict[str, Any]]:
    """Mean and std over images of the heatmap Pearson r at each rate of one curve.

    Args:
        model: the unpruned model.
        inputs, targets: the test images and the classes explained.
        masks_at: ``{rate: masks}``.
        label: the curve's label (e.g. ``"LRP clustering"``).
        reference: unpruned heatmaps, if already computed.

    Returns:
        One row per rate: ``label``, ``rate``, ``pearson_mean``, ``pearson_std``, ``n``.
    """
    reference = relevance(model, inputs, targets, **options) if reference is None else reference
    rows = []
    for rate, masks in sorted(masks_at.items()):
        try:
            with apply_masks(model, masks):
                r = pearson(reference, relevance(model, inputs, targets, **options))
        except RuntimeError as error:
            logger.warning("%s at rate %.2f: no LRP heatmap (%s); similarity left out", label, rate, error)
            r = np.full(len(inputs), np.nan)
        finite = r[np.isfinite(r)]
        rows.append(
            {
                "label": label,
                "rate": float(rate),
                "n": int(finite.size),
                "pearson_mean": float(finite.mean()) if finite.size else float("nan"),
                "pearson_std": float(finite.std()) if finite.size else float("nan"),
            }
        )
    return rows


def pick_images(labels: Sequence[int] | np.ndarray, per_class: int, seed: int = 0) -> list[int]:
    """``per_class`` test indices of every class (seeded), in class order, for the heatmap figure."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    chosen: list[int] = []
    for c in np.unique(labels):
        where = np.flatnonzero(labels == c)
        chosen.extend(int(i) for i in np.sort(rng.choice(where, size=min(per_class, where.size), replace=False)))
    return chosen
