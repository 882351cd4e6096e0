"""Evaluation: class probabilities from a model, and clinical metrics computed from them with NumPy.

The pruning sweep evaluates hundreds of models, so :func:`metrics_from_predictions` is plain NumPy (AUROC by the
Mann-Whitney rank statistic); the tests check every number against scikit-learn. Undefined values (the sensitivity
of a class absent from the labels, an AUROC with one class only) are ``None`` with an entry in ``notes``, never NaN,
so the result is always valid JSON.

>>> probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
>>> m = metrics_from_predictions(probs, np.array([0, 1, 1, 1]), ["normal", "pneumonia"])
>>> m["accuracy"], m["auroc"]
(0.75, 1.0)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from scipy.stats import rankdata
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from medprune.runtime import autocast, eval_mode, model_device

__all__ = [
    "predict",
    "metrics_from_predictions",
    "evaluate",
    "binary_auroc",
    "iterate_batches",
    "summary_line",
    "SUMMARY_KEYS",
]

#: The scalar metrics worth one line in a log or a table.
SUMMARY_KEYS = ("accuracy", "balanced_accuracy", "macro_f1", "auroc")

DataSource = Dataset | DataLoader | tuple[Tensor, Tensor | np.ndarray]


def iterate_batches(data: DataSource, batch_size: int) -> Any:
    """``(inputs, labels)`` batches in order from a Dataset, a DataLoader (as is) or an ``(inputs, labels)`` tuple."""
    if isinstance(data, DataLoader):
        return data
    if isinstance(data, tuple):
        if len(data) != 2:
            raise ValueError(f"data as a tuple must be (inputs, labels), got {len(data)} items")
        inputs, labels = data
        labels = torch.as_tensor(np.asarray(labels))
        if len(inputs) != len(labels):
            raise ValueError(f"inputs and labels differ in length: {len(inputs)} vs {len(labels)}")
        return ((inputs[i : i + batch_size], labels[i : i + batch_size]) for i in range(0, len(inputs), batch_size))
    if isinstance(data, Dataset):
        return DataLoader(data, batch_size=batch_size, shuffle=False, num_workers=0)
    raise TypeError(f"data must be a Dataset, a DataLoader or an (inputs, labels) tuple, got {type(data).__name__}")


def predict(
    model: nn.Module,
    data: DataSource,
    batch_size: int = 256,
    device: str | torch.device | None = None,
    amp: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Softmax probabilities of ``model`` over a dataset, in dataset order.

    The model is put in eval mode for the pass and its previous mode restored afterwards.

    Args:
        model: a classifier returning logits.
        data: a Dataset of ``(image, label)``, a DataLoader over one (not shuffled), or a pre-stacked
            ``(inputs, labels)`` tuple (fastest when the same images are evaluated many times).
        batch_size: images per forward pass (ignored for a DataLoader).
        device: where to run; ``None`` keeps the model's current device.
        amp: float16 autocast for the forward passes when running on CUDA (ignored on the CPU, where the result is
            the same as without it, bit for bit); the softmax is taken in float64 either way.

    Returns:
        ``(probs, labels)``: float64 array N×K (rows sum to 1) and int64 array N.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    target = torch.device(device) if device is not None else model_device(model)
    if device is not None:
        model.to(target)
    probs: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    with eval_mode(model), torch.inference_mode(), autocast(target, amp):
        for inputs, batch_labels in iterate_batches(data, batch_size):
            logits = model(inputs.to(target, non_blocking=True))
            probs.append(torch.softmax(logits.double(), dim=1).cpu().numpy())
            labels.append(np.asarray(batch_labels).reshape(-1).astype(np.int64))
    if not probs:
        raise ValueError("cannot predict on an empty dataset")
    return np.concatenate(probs), np.concatenate(labels)


def binary_auroc(scores: np.ndarray, positives: np.ndarray) -> float | None:
    """AUROC of ``scores`` for the boolean ``positives`` (ties count one half); ``None`` if one class is missing."""
    positives = np.asarray(positives, dtype=bool)
    n_pos = int(positives.sum())
    n_neg = positives.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = rankdata(scores)
    return float((ranks[positives].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _ratio(numerator: float, denominator: float) -> float | None:
    return float(numerator / denominator) if denominator > 0 else None


def metrics_from_predictions(
    probs: np.ndarray, labels: np.ndarray, class_names: Sequence[str] | None = None
) -> dict[str, Any]:
    """Accuracy, balanced accuracy, macro-F1, AUROC, per-class sensitivity/specificity and the confusion matrix.

    Definitions (each matches scikit-learn; see ``tests/test_metrics.py``):

    - ``balanced_accuracy``: mean sensitivity over the classes present in ``labels``.
    - ``macro_f1``: mean F1 over the classes present in ``labels`` or predictions (F1 = 0 where undefined).
    - ``auroc``: binary tasks: AUROC of the positive class (index 1). More classes: macro mean of one-vs-rest
      AUROCs over the classes present in ``labels``.
    - ``worst_class_recall``: the lowest sensitivity (recall) over the classes present in ``labels``.
    - ``confusion_matrix[i][j]``: samples of true class ``i`` predicted as ``j``.

    Args:
        probs: N×K class probabilities (or any scores; the prediction is the row argmax).
        labels: N integer labels in ``[0, K)``.
        class_names: K names (default ``"0"`` … ``"K-1"``).

    Returns:
        A JSON-serialisable dict; undefined values are ``None`` and explained in ``notes``.
    """
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels).reshape(-1)
    if probs.ndim != 2 or probs.shape[1] < 2:
        raise ValueError(f"probs must be an N×K array with K >= 2, got shape {probs.shape}")
    n, k = probs.shape
    if labels.shape[0] != n:
        raise ValueError(f"probs has {n} rows but labels has {labels.shape[0]} entries")
    if n == 0:
        raise ValueError("cannot compute metrics on zero samples")
    if not np.issubdtype(labels.dtype, np.integer):
        if not np.all(np.equal(np.mod(labels, 1), 0)):
            raise ValueError("labels must be integers")
        labels = labels.astype(np.int64)
    if labels.min() < 0 or labels.max() >= k:
        raise ValueError(f"labels must lie in [0, {k}), got range [{labels.min()}, {labels.max()}]")
    names = [str(i) for i in range(k)] if class_names is None else [str(c) for c in class_names]
    if len(names) != k:
        raise ValueError(f"class_names has {len(names)} entries but probs has {k} columns")

    preds = probs.argmax(axis=1)
    confusion = np.bincount(labels * k + preds, minlength=k * k).reshape(k, k)
    tp = np.diag(confusion).astype(np.float64)
    support = confusion.sum(axis=1)
    predicted = confusion.sum(axis=0)
    notes: list[str] = []

    per_class: dict[str, dict[str, Any]] = {}
    aurocs: list[float] = []
    f1s: list[float] = []
    recalls: list[float] = []
    for c, name in enumerate(names):
        fn = support[c] - tp[c]
        fp = predicted[c] - tp[c]
        tn = n - support[c] - fp
        sensitivity = _ratio(tp[c], support[c])
        precision = _ratio(tp[c], predicted[c])
        f1 = _ratio(2 * tp[c], 2 * tp[c] + fp + fn)
        auroc = binary_auroc(probs[:, c], labels == c)
        per_class[name] = {
            "support": int(support[c]),
            "sensitivity": sensitivity,
            "specificity": _ratio(tn, n - support[c]),
            "precision": precision if precision is not None else (0.0 if support[c] else None),
            "f1": f1,
            "auroc": auroc,
        }
        if support[c] == 0:
            notes.append(f"class {name!r} is absent from the labels: its sensitivity and AUROC are undefined (None)")
        else:
            recalls.append(sensitivity)  # type: ignore[arg-type]
            if auroc is not None:
                aurocs.append(auroc)
        if support[c] or predicted[c]:
            f1s.append(f1 or 0.0)

    if k == 2:
        overall_auroc = per_class[names[1]]["auroc"]
        if overall_auroc is None:
            notes.append("AUROC is undefined: the labels hold one class only")
    else:
        overall_auroc = float(np.mean(aurocs)) if aurocs else None
        if overall_auroc is None:
            notes.append("AUROC is undefined: the labels hold one class only")
        elif len(aurocs) < k:
            notes.append(f"macro AUROC averages the {len(aurocs)} classes present in the labels out of {k}")

    return {
        "n": int(n),
        "accuracy": float(tp.sum() / n),
        "balanced_accuracy": float(np.mean(recalls)),
        "macro_f1": float(np.mean(f1s)),
        "auroc": overall_auroc,
        "worst_class_recall": float(min(recalls)),
        "per_class": per_class,
        "confusion_matrix": confusion.tolist(),
        "class_names": names,
        "notes": notes,
    }


def evaluate(
    model: nn.Module,
    data: DataSource,
    class_names: Sequence[str] | None = None,
    batch_size: int = 256,
    device: str | torch.device | None = None,
    amp: bool = False,
) -> dict[str, Any]:
    """:func:`predict` then :func:`metrics_from_predictions`, plus the mean negative log-likelihood as ``loss``.

    Args:
        model: a classifier returning logits.
        data: as for :func:`predict`.
        class_names: names of the K classes (default: ``data.class_names`` when present, else indices).
        batch_size: images per forward pass.
        device: where to run; ``None`` keeps the model's device.
        amp: float16 autocast on CUDA (as for :func:`predict`).
    """
    probs, labels = predict(model, data, batch_size=batch_size, device=device, amp=amp)
    if class_names is None:
        class_names = getattr(data, "class_names", None)
    result = metrics_from_predictions(probs, labels, class_names)
    picked = probs[np.arange(len(labels)), labels]
    result["loss"] = float(-np.log(np.clip(picked, 1e-12, None)).mean())
    return result


def summary_line(metrics: dict[str, Any], prefix: str = "") -> str:
    """``"acc 0.912 bal_acc 0.897 f1 0.901 auroc 0.963"`` for a log line (``-`` for undefined values)."""
    short = {"accuracy": "acc", "balanced_accuracy": "bal_acc", "macro_f1": "f1", "auroc": "auroc"}
    parts = []
    for key in SUMMARY_KEYS:
        value = metrics.get(key)
        parts.append(f"{prefix}{short[key]} {'-' if value is None else f'{value:.4f}'}")
    return " ".join(parts)
