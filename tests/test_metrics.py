"""Metrics: every number checked against scikit-learn; predict on datasets, loaders and tensors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from sklearn.metrics import (
    balanced_accuracy_score,
    confusion_matrix,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
)
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from medprune.metrics import evaluate, metrics_from_predictions, predict, summary_line


def _random_case(seed: int, n: int, k: int, ties: bool = False) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, k, size=n)
    logits = rng.normal(size=(n, k)) + 1.5 * np.eye(k)[labels]
    if ties:
        logits = np.round(logits)
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return probs, labels


@pytest.mark.parametrize("seed,n,k,ties", [(0, 200, 2, False), (1, 57, 2, True), (2, 300, 4, False), (3, 90, 8, True)])
def test_matches_sklearn(seed, n, k, ties):
    probs, labels = _random_case(seed, n, k, ties)
    preds = probs.argmax(1)
    m = metrics_from_predictions(probs, labels)
    assert m["accuracy"] == pytest.approx(np.mean(preds == labels))
    assert m["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(labels, preds))
    assert m["macro_f1"] == pytest.approx(f1_score(labels, preds, average="macro", zero_division=0))
    assert m["confusion_matrix"] == confusion_matrix(labels, preds, labels=range(k)).tolist()
    if k == 2:
        assert m["auroc"] == pytest.approx(roc_auc_score(labels, probs[:, 1]))
    else:
        assert m["auroc"] == pytest.approx(roc_auc_score(labels, probs, multi_class="ovr", average="macro"))
    recalls = recall_score(labels, preds, average=None, labels=range(k), zero_division=0)
    precisions = precision_score(labels, preds, average=None, labels=range(k), zero_division=0)
    for c in range(k):
        entry = m["per_class"][str(c)]
        assert entry["sensitivity"] == pytest.approx(recalls[c])
        specificity = recall_score(labels != c, preds != c)
        assert entry["specificity"] == pytest.approx(specificity)
        assert entry["precision"] == pytest.approx(precisions[c])
        assert entry["auroc"] == pytest.approx(roc_auc_score(labels == c, probs[:, c]))
    assert m["worst_class_recall"] == pytest.approx(recalls.min())
    assert m["notes"] == []


@pytest.mark.filterwarnings("ignore:y_pred contains classes")
def test_absent_class_gives_none_and_a_note_not_nan():
    probs, labels = _random_case(4, 120, 3)
    labels[labels == 2] = 0  # class 2 never occurs in the labels
    m = metrics_from_predictions(probs, labels, ["a", "b", "c"])
    text = json.dumps(m, allow_nan=False)  # raises on NaN/inf
    assert "NaN" not in text
    assert m["per_class"]["c"]["sensitivity"] is None and m["per_class"]["c"]["auroc"] is None
    assert any("'c' is absent" in note for note in m["notes"])
    preds = probs.argmax(1)
    assert m["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(labels, preds))
    assert m["macro_f1"] == pytest.approx(f1_score(labels, preds, average="macro", zero_division=0))
    present = [roc_auc_score(labels == c, probs[:, c]) for c in (0, 1)]
    assert m["auroc"] == pytest.approx(np.mean(present))


def test_binary_single_class_auroc_is_none():
    probs = np.array([[0.2, 0.8], [0.6, 0.4]])
    m = metrics_from_predictions(probs, np.array([1, 1]), ["neg", "pos"])
    assert m["auroc"] is None and m["accuracy"] == 0.5
    assert any("one class only" in note for note in m["notes"])


@pytest.mark.parametrize(
    "probs,labels,names,match",
    [
        (np.ones((3, 1)), np.zeros(3, int), None, "K >= 2"),
        (np.ones((3, 2)), np.zeros(2, int), None, "3 rows but labels has 2"),
        (np.ones((3, 2)), np.array([0, 1, 2]), None, r"labels must lie in \[0, 2\)"),
        (np.ones((3, 2)), np.zeros(3, int), ["a"], "class_names has 1"),
    ],
)
def test_bad_inputs_are_refused(probs, labels, names, match):
    with pytest.raises(ValueError, match=match):
        metrics_from_predictions(probs, labels, names)


def test_predict_same_on_dataset_loader_and_tensors_and_restores_mode():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 3), nn.Dropout(0.5)).train()
    x = torch.randn(50, 3, 2, 2)
    y = torch.randint(0, 3, (50,))
    dataset = TensorDataset(x, y)
    p1, l1 = predict(model, dataset, batch_size=7)
    p2, l2 = predict(model, DataLoader(dataset, batch_size=16), batch_size=7)
    p3, l3 = predict(model, (x, y.numpy()), batch_size=64)
    assert model.training, "predict must restore train mode"
    np.testing.assert_allclose(p1, p2, atol=1e-6)
    np.testing.assert_allclose(p1, p3, atol=1e-6)
    assert (l1 == y.numpy()).all() and (l2 == l1).all() and (l3 == l1).all()
    np.testing.assert_allclose(p1.sum(1), 1.0, atol=1e-9)


def test_evaluate_adds_loss_and_summary_line():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    x, y = torch.randn(40, 1, 2, 2), torch.randint(0, 2, (40,))
    m = evaluate(model, (x, y), class_names=["n", "p"])
    probs, labels = predict(model, (x, y))
    assert m["loss"] == pytest.approx(-np.log(probs[np.arange(40), labels]).mean())
    assert m["class_names"] == ["n", "p"]
    assert summary_line(m).startswith("acc ")


def test_metrics_are_fast_enough_for_sweeps():
    import time

    probs, labels = _random_case(5, 5000, 8)
    start = time.perf_counter()
    for _ in range(20):
        metrics_from_predictions(probs, labels)
    assert (time.perf_counter() - start) / 20 < 0.05
