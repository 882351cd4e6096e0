"""Explanation drift on the card: the per-class summary of per-image heatmap correlations, a bounded seeded sample,
and a model LRP refuses skipped with the reason on the card instead of a crash."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from medprune.compression.card import CompressionRecord, SplitMetrics
from medprune.compression.card_page import render_markdown
from medprune.deploy.explanations import drift_summary, explanation_drift
from medprune.report.heatmaps import pearson, pick_images, relevance


class Spectral(nn.Module):
    """A model with an operation LRP has no rule for (a 2-D FFT)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.fft.fft2(self.conv(x)).real.mean((2, 3)))


def tiny_cnn(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(24, 3)
    ).eval()


def record_with(explanations: dict) -> CompressionRecord:
    empty = SplitMetrics(n=0, accuracy=None, balanced_accuracy=None, auroc=None, worst_class_recall=None)
    return CompressionRecord("m", {}, {}, [], {}, [], empty, empty, [], {}, [], {}, {}, explanations=explanations)


def test_summary_of_constructed_correlations() -> None:
    r = np.array([0.2, 0.4, 0.6, 0.8, np.nan, 1.0, 0.0])
    labels = np.array([0, 0, 0, 0, 1, 1, 1])
    summary = drift_summary(r, labels, ["a", "b", "c"])
    a, b = summary["per_class"]  # class c has no image: no row
    assert (a["class"], a["n"], a["finite"]) == ("a", 4, 4)
    assert a["median"] == pytest.approx(0.5) and a["IQR"] == pytest.approx([0.35, 0.65])
    assert a["mean"] == pytest.approx(0.5) and a["mean 95% CI"][0] <= 0.5 <= a["mean 95% CI"][1]
    assert (b["n"], b["finite"], b["median"]) == (3, 2, pytest.approx(0.5))  # the constant map's NaN left out
    assert summary["all"]["finite"] == 6 and summary["all"]["mean"] == pytest.approx(0.5)


def test_drift_uses_a_bounded_seeded_sample_and_recomputes() -> None:
    images = torch.randn(40, 3, 8, 8)
    labels = torch.tensor([0] * 20 + [1] * 15 + [2] * 5)
    original, other = tiny_cnn(0), tiny_cnn(1)
    record = explanation_drift(original, other, images, labels, ["a", "b", "c"], per_class=4, seed=3)
    assert record["indices"] == pick_images(labels.numpy(), 4, seed=3) and len(record["indices"]) == 12
    x, y = images[record["indices"]], labels[record["indices"]]
    r = pearson(relevance(original, x, y), relevance(other, x, y))
    assert record["per_image"] == pytest.approx(r.tolist())
    for c, row in enumerate(record["per_class"]):
        assert row["median"] == pytest.approx(float(np.median(r[y.numpy() == c])))
    same = explanation_drift(original, original, images, labels, ["a", "b", "c"], per_class=2)
    assert same["all"]["median"] == pytest.approx(1.0) and same["all"]["n"] == 6
    text = render_markdown(record_with(record))
    assert "### Explanations on test" in text and "up to 4 test images per class" in text
    assert f"| a | 4 | 4 | {record['per_class'][0]['median']:.3f} |" in text
    assert "- **Explanations (test, up to 4 images per class):**" in text


def test_a_model_lrp_cannot_explain_is_skipped_and_said_so() -> None:
    images, labels = torch.randn(6, 3, 8, 8), torch.tensor([0, 1] * 3)
    record = explanation_drift(Spectral(), Spectral(), images, labels, ["a", "b"])
    assert "fft" in record["skipped"] and "per_class" not in record
    text = render_markdown(record_with(record))
    assert "- **Explanations:** not measured (LRP could not explain the model" in text
    assert "Not measured: LRP could not explain the model" in text
