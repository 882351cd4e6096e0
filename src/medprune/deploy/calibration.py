"""Calibration of a classifier's confidence: expected calibration error, reliability bins, temperature scaling.

Pure functions of arrays (logits or probabilities and true classes), so every number is reproducible from the saved
predictions. The confidence of an image is its top-class probability; the bins are equal-width on [0, 1], bin ``b``
holding confidences in ``(b / B, (b + 1) / B]`` (the first also holds 0). ECE is the image-weighted mean of
``|accuracy - mean confidence|`` over the bins (top-label ECE, Guo et al. 2017).

>>> probs = np.array([[0.9, 0.1]] * 10)
>>> labels = np.array([0] * 7 + [1] * 3)  # 70% right at 90% confidence
>>> round(expected_calibration_error(probs, labels), 6)
0.2
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from numpy.typing import ArrayLike
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax, softmax

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

__all__ = [
    "ECE_BINS",
    "ReliabilityBin",
    "expected_calibration_error",
    "reliability_bins",
    "fit_temperature",
    "softmax_with_temperature",
    "plot_reliability",
    "calibration_summary",
]

#: Equal-width confidence bins of the card's ECE and reliability diagram.
ECE_BINS = 15
#: The temperatures :func:`fit_temperature` searches (log-spaced bounds).
TEMPERATURE_RANGE = (0.05, 20.0)


@dataclass(frozen=True)
class ReliabilityBin:
    """One confidence bin: its edges, how many images fall in it, their mean confidence and their accuracy (``None``
    for an empty bin)."""

    low: float
    high: float
    count: int
    confidence: float | None
    accuracy: float | None


def _checked(probs: ArrayLike, labels: ArrayLike, bins: int) -> tuple[np.ndarray, np.ndarray]:
    p, y = np.asarray(probs, dtype=np.float64), np.asarray(labels).astype(np.int64)
    if p.ndim != 2 or len(p) != len(y) or len(p) == 0:
        raise ValueError(f"probs must be (N, K) with N = len(labels) > 0, got {p.shape} and {y.shape}")
    if not np.isfinite(p).all() or (p < 0).any() or not np.allclose(p.sum(axis=1), 1, atol=1e-4):
        raise ValueError("probs must be finite rows of class probabilities that sum to 1")
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    return p, y


def reliability_bins(probs: ArrayLike, labels: ArrayLike, bins: int = ECE_BINS) -> list[ReliabilityBin]:
    """The reliability diagram's bins of top-class confidence (equal width on [0, 1]).

    Args:
        probs: (N, K) class probabilities. labels: the N true classes. bins: how many bins.
    """
    p, y = _checked(probs, labels, bins)
    confidence, correct = p.max(axis=1), (p.argmax(axis=1) == y)
    # bin b holds (b/B, (b+1)/B]; a confidence of exactly 0 goes to the first bin
    index = np.clip(np.ceil(confidence * bins).astype(np.int64) - 1, 0, bins - 1)
    rows = []
    for b in range(bins):
        inside = index == b
        count = int(inside.sum())
        rows.append(
            ReliabilityBin(
                low=b / bins,
                high=(b + 1) / bins,
                count=count,
                confidence=float(confidence[inside].mean()) if count else None,
                accuracy=float(correct[inside].mean()) if count else None,
            )
        )
    return rows


def expected_calibration_error(probs: ArrayLike, labels: ArrayLike, bins: int = ECE_BINS) -> float:
    """Top-label ECE with ``bins`` equal-width bins: sum over bins of (images in it / N) * |accuracy - confidence|.

    Args:
        probs: (N, K) class probabilities. labels: the N true classes. bins: how many bins.
    """
    rows = reliability_bins(probs, labels, bins)
    n = sum(r.count for r in rows)
    return float(sum(r.count / n * abs(r.accuracy - r.confidence) for r in rows if r.count))


def softmax_with_temperature(logits: ArrayLike, temperature: float = 1.0) -> np.ndarray:
    """Class probabilities of ``logits / temperature`` (float64)."""
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    return softmax(np.asarray(logits, dtype=np.float64) / temperature, axis=1)


def fit_temperature(logits: ArrayLike, labels: ArrayLike) -> float:
    """The temperature T > 0 that minimises the negative log-likelihood of ``softmax(logits / T)`` (Guo et al. 2017),
    searched on log T within :data:`TEMPERATURE_RANGE`. Scaling never changes a prediction, only its confidence.

    Args:
        logits: (N, K) logits of the split the temperature is fitted on (validation). labels: its true classes.
    """
    z, y = np.asarray(logits, dtype=np.float64), np.asarray(labels).astype(np.int64)
    if z.ndim != 2 or len(z) != len(y) or len(z) == 0 or not np.isfinite(z).all():
        raise ValueError(f"logits must be finite (N, K) with N = len(labels) > 0, got {z.shape} and {y.shape}")

    def nll(log_t: float) -> float:
        return float(-log_softmax(z / np.exp(log_t), axis=1)[np.arange(len(y)), y].mean())

    low, high = np.log(TEMPERATURE_RANGE[0]), np.log(TEMPERATURE_RANGE[1])
    found = minimize_scalar(nll, bounds=(low, high), method="bounded", options={"xatol": 1e-6})
    return float(np.exp(found.x))


def plot_reliability(curves: dict[str, list[ReliabilityBin]], path: str | Path, title: str) -> Path:
    """A reliability diagram (PNG): accuracy against mean confidence per non-empty bin, one line per model, the
    diagonal for perfect calibration and the share of images per bin underneath.

    Args:
        curves: label (e.g. ``original (ECE 0.031)``) -> its bins. path: the PNG to write. title: the figure title.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure, (top, bottom) = plt.subplots(
        2, 1, figsize=(5, 6), sharex=True, gridspec_kw={"height_ratios": [3, 1]}, constrained_layout=True
    )
    top.plot([0, 1], [0, 1], color="grey", linestyle=":", label="perfect calibration")
    width = 1 / max(len(rows) for rows in curves.values()) / (len(curves) + 1)
    for k, (label, rows) in enumerate(curves.items()):
        filled = [r for r in rows if r.count]
        top.plot([r.confidence for r in filled], [r.accuracy for r in filled], marker="o", label=label)
        total = sum(r.count for r in rows)
        bottom.bar([r.low + (k + 0.5) * width for r in rows], [r.count / total for r in rows], width=width, label=label)
    top.set(ylabel="accuracy", xlim=(0, 1), ylim=(0, 1), title=title)
    top.legend(loc="upper left", fontsize="small")
    bottom.set(xlabel="confidence (top-class probability)", ylabel="share of images")
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def calibration_summary(
    probabilities: Mapping[str, np.ndarray], labels: ArrayLike, *, bins: int, diagram: str | Path, title: str
) -> dict[str, Any]:
    """ECE of each model's probabilities on one split and their reliability diagram (written to ``diagram``).

    Args:
        probabilities: model label -> (N, K) probabilities on the split. labels: its true classes. bins: equal-width
            bins. diagram: the PNG to write. title: the figure title.

    Returns:
        ``binning`` (stated in words), ``bins``, ``images``, ``ece`` (label -> value), ``reliability`` (label -> bins
        as dicts) and ``diagram`` (the PNG's file name).
    """
    curves = {label: reliability_bins(p, labels, bins) for label, p in probabilities.items()}
    ece = {label: expected_calibration_error(p, labels, bins) for label, p in probabilities.items()}
    plot_reliability({f"{label} (ECE {ece[label]:.3f})": rows for label, rows in curves.items()}, diagram, title)
    return {
        "binning": f"{bins} equal-width bins of top-class confidence on [0, 1], weighted by images (top-label ECE)",
        "bins": bins,
        "images": int(len(np.asarray(labels))),
        "ece": ece,
        "reliability": {label: [asdict(r) for r in rows] for label, rows in curves.items()},
        "diagram": Path(diagram).name,
    }
