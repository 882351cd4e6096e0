"""Split helpers: partitions, stratification, patient-disjointness, determinism."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medprune.data import DatasetError
from medprune.data.splitting import group_split, stratified_split
from medprune.provenance import fingerprint


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(30, 300),
    n_groups=st.integers(12, 40),
    n_classes=st.integers(2, 5),
    fraction=st.floats(0.1, 0.3),
    seed=st.integers(0, 1000),
)
def test_group_split_is_patient_disjoint_partition(
    n: int, n_groups: int, n_classes: int, fraction: float, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    groups, labels = rng.integers(0, n_groups, n), rng.integers(0, n_classes, n)
    kept, held = group_split(labels, groups, fraction, seed)
    assert np.array_equal(np.sort(np.concatenate([kept, held])), np.arange(n))
    assert len(np.intersect1d(groups[kept], groups[held])) == 0
    assert 0 < len(held) < n
    again = group_split(labels, groups, fraction, seed)
    assert np.array_equal(again[1], held)


def test_group_split_size_and_balance() -> None:
    rng = np.random.default_rng(0)
    groups, labels = rng.integers(0, 500, 5000), rng.integers(0, 4, 5000)
    _, held = group_split(labels, groups, 0.1, seed=0)
    assert 0.08 < len(held) / 5000 < 0.12
    per_class = np.bincount(labels[held], minlength=4) / np.bincount(labels, minlength=4)
    assert per_class.min() > 0.07 and per_class.max() < 0.13
    _, other = group_split(labels, groups, 0.1, seed=1)
    assert not np.array_equal(held, other)


def test_stratified_split() -> None:
    labels = np.array([0] * 50 + [1] * 30 + [2] * 3)
    train, val, test = stratified_split(labels, 0.1, 0.2, seed=0)
    assert np.array_equal(np.sort(np.concatenate([train, val, test])), np.arange(len(labels)))
    assert np.bincount(labels[test]).tolist() == [10, 6, 1] and np.bincount(labels[val]).tolist() == [5, 3, 1]
    assert np.bincount(labels[train]).tolist() == [35, 21, 1]
    with pytest.raises(DatasetError, match="val_fraction \\+ test_fraction must be < 1"):
        stratified_split(labels, 0.5, 0.5, seed=0)
    with pytest.raises(DatasetError, match="test_fraction must be a number in \\[0, 1\\), got -0.1"):
        stratified_split(labels, 0.1, -0.1, seed=0)


def test_fingerprint_separates_parts() -> None:
    assert fingerprint(["ab", "c"]) != fingerprint(["a", "bc"])
    assert fingerprint([1, (0.1, 0)]) == fingerprint([1, (0.1, 0)])
