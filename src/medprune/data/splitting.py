"""Seeded splits: stratified by class; patient-disjoint when patients are known."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from medprune.data.errors import DatasetError

logger = logging.getLogger(__name__)


def check_fraction(name: str, value: float) -> float:
    """``value`` as a float in [0, 1); otherwise a :class:`DatasetError` naming the parameter."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= float(value) < 1.0:
        raise DatasetError(f"{name} must be a number in [0, 1), got {value!r}")
    return float(value)


def stratified_split(
    labels: np.ndarray, val_fraction: float, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices (train, val, test), each class split in the given proportions of its own size.

    Per class of n samples: ``round(n * test_fraction)`` go to test and ``round(n * val_fraction)`` to val, but at
    least one each when the fraction is positive and the class has 3 or more samples; train keeps at least one.

    >>> tr, va, te = stratified_split(np.array([0] * 10 + [1] * 10), 0.1, 0.2, seed=0)
    >>> len(tr), len(va), len(te)
    (14, 2, 4)
    """
    val_fraction = check_fraction("val_fraction", val_fraction)
    test_fraction = check_fraction("test_fraction", test_fraction)
    if val_fraction + test_fraction >= 1.0:
        raise DatasetError(f"val_fraction + test_fraction must be < 1, got {val_fraction} + {test_fraction}")
    rng = np.random.default_rng(seed)
    parts: tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]] = ([], [], [])
    for cls in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == cls))
        n = len(members)
        n_test = int(round(n * test_fraction))
        n_val = int(round(n * val_fraction))
        if n >= 3:
            n_test = max(n_test, 1 if test_fraction > 0 else 0)
            n_val = max(n_val, 1 if val_fraction > 0 else 0)
        while n_test + n_val > n - 1 and (n_test or n_val):  # keep at least one training sample
            if n_test >= n_val:
                n_test -= 1
            else:
                n_val -= 1
        parts[2].append(members[:n_test])
        parts[1].append(members[n_test : n_test + n_val])
        parts[0].append(members[n_test + n_val :])
    train, val, test = (np.sort(np.concatenate(p)).astype(np.int64) if p else np.zeros(0, np.int64) for p in parts)
    return train, val, test


def group_split(
    labels: np.ndarray, groups: np.ndarray, fraction: float, seed: int, *, what: str = "patients"
) -> tuple[np.ndarray, np.ndarray]:
    """Indices (kept, held out): about ``fraction`` of the samples of each class held out, whole groups only.

    Groups (patients) are visited in a seeded random order; a group is held out when that brings the held-out
    per-class counts closer to ``fraction`` × the class counts (L1 distance). No group is on both sides, so leakage is
    impossible by construction.

    >>> kept, held = group_split(np.array([0, 0, 1, 1] * 5), np.repeat(np.arange(10), 2), 0.2, seed=0)
    >>> len(held), len(np.intersect1d(np.repeat(np.arange(10), 2)[kept], np.repeat(np.arange(10), 2)[held]))
    (4, 0)
    """
    fraction = check_fraction("val_fraction", fraction)
    everything = np.arange(len(labels), dtype=np.int64)
    if fraction == 0.0 or len(labels) == 0:
        return everything, np.zeros(0, np.int64)
    classes, label_idx = np.unique(labels, return_inverse=True)
    names, group_idx = np.unique(groups, return_inverse=True)
    per_group = np.zeros((len(names), len(classes)), dtype=np.int64)
    np.add.at(per_group, (group_idx, label_idx), 1)
    target = fraction * per_group.sum(axis=0)
    held_counts = np.zeros(len(classes))
    held_groups = np.zeros(len(names), dtype=bool)
    for g in np.random.default_rng(seed).permutation(len(names)):
        candidate = held_counts + per_group[g]
        if np.abs(candidate - target).sum() < np.abs(held_counts - target).sum():
            held_counts, held_groups[g] = candidate, True
    if not held_groups.any():
        raise DatasetError(
            f"cannot hold out {fraction:.0%} of {len(labels)} training images by {what}: no whole set of the "
            f"{len(names)} {what} comes close; raise val_fraction or use more data"
        )
    held = held_groups[group_idx]
    return everything[~held], everything[held]


def limit_dataset(dataset: Any, max_samples: int | None, seed: int) -> Any:
    """A stratified, seeded subset of at most ``max_samples`` items (every present class keeps >= 1); else as is.

    ``dataset`` needs ``labels`` and ``subset(indices)`` (an :class:`~medprune.data.base.ImageDataset`)."""
    if max_samples is None or max_samples >= len(dataset):
        return dataset
    labels = np.asarray(dataset.labels)
    rng = np.random.default_rng(seed)
    chosen: list[np.ndarray] = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        take = max(1, round(max_samples * len(members) / len(labels)))
        chosen.append(rng.permutation(members)[:take])
    return dataset.subset(np.sort(np.concatenate(chosen))[: max(max_samples, len(chosen))])
