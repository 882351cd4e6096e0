"""Sample selection: random / confidence / clustering on a dataset whose answers are known, and on PneumoniaMNIST."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch
from torch import nn

import medprune.scoring.selection as selection_module
from medprune.scoring.selection import Selection, cached_selection, select_samples, selection_file


class ConstantImages(torch.utils.data.Dataset):
    """Sample i is a 1×2×2 image filled with ``values[i]``; honours the ImageDataset interface selection uses."""

    def __init__(self, values, labels, train: bool = True) -> None:
        self.values = torch.as_tensor(values, dtype=torch.float32)
        self.labels = np.asarray(labels, dtype=np.int64)
        self.class_names = ["a", "b", "c"]
        self.train = train
        self.loaded: list[int] = []

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        self.loaded.append(int(i))
        assert not self.train, "selection must read the training split through the evaluation transform"
        return self.values[i].expand(1, 2, 2).clone(), int(self.labels[i])

    def with_transform(self, train: bool) -> ConstantImages:
        view = ConstantImages(self.values, self.labels, train)
        view.loaded = self.loaded
        return view


def _model() -> nn.Module:
    """logits = (v, −v, 0) for a constant image v; the penultimate feature is v itself."""
    head = nn.Linear(1, 3)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[1.0], [-1.0], [0.0]]))
        head.bias.zero_()
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), head).train()


# class 0: two tight groups of values; class 1: spread values; class 2: only two samples
VALUES = [0.0, 0.1, 0.2, 5.0, 5.1, 5.2, 9.0, -3.0, 1.0, -1.0, 2.0, 0.5, 7.0]
LABELS = [0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2]


def test_confidence_takes_the_most_confident_samples_of_each_class():
    sel = select_samples(_model(), ConstantImages(VALUES, LABELS), "confidence", n_per_class=2, batch_size=3)
    # class 0: largest v (9.0, 5.2); class 1: smallest v (-3.0, -1.0); class 2 has only 2 -> both
    assert sel.indices == [6, 5, 7, 9, 11, 12]
    assert sel.labels == [0, 0, 1, 1, 2, 2]
    assert sel.per_class_counts == {0: 2, 1: 2, 2: 2}


def test_clustering_takes_the_sample_nearest_each_centroid():
    values = VALUES[:6] + VALUES[7:]  # class 0 = two tight groups {0, .1, .2} and {5, 5.1, 5.2}
    labels = LABELS[:6] + LABELS[7:]
    model = _model()
    sel = select_samples(model, ConstantImages(values, labels), "clustering", n_per_class=2, seed=0)
    assert sorted(sel.indices[:2]) == [1, 4]  # the middle of each group
    assert len(set(sel.indices)) == len(sel.indices)
    assert sel.per_class_counts == {0: 2, 1: 2, 2: 2}
    assert model.training  # mode restored


def test_random_is_seeded_within_class_and_short_classes_say_so(caplog):
    data = ConstantImages(VALUES, LABELS)
    with caplog.at_level(logging.WARNING):
        a = select_samples(_model(), data, "random", n_per_class=3, seed=1)
    b = select_samples(_model(), data, "random", n_per_class=3, seed=1)
    assert a.indices == b.indices
    assert a.per_class_counts == {0: 3, 1: 3, 2: 2}
    assert all(LABELS[i] == label for i, label in zip(a.indices, a.labels))
    assert any("class 2 has 2 training sample(s)" in note for note in a.notes)
    assert "fewer than n_per_class=3" in caplog.text
    draws = {tuple(select_samples(_model(), data, "random", n_per_class=3, seed=s).indices[:3]) for s in range(8)}
    assert len(draws) > 1


def test_candidate_limit_scans_a_seeded_subset_and_reports_it():
    data = ConstantImages(VALUES, LABELS)
    sel = select_samples(_model(), data, "confidence", n_per_class=1, candidate_limit=3, seed=0)
    assert sel.candidates_per_class == {0: 3, 1: 3, 2: 2}
    assert any("scanned a seeded random 3 of 7" in note for note in sel.notes)
    assert len(set(data.loaded)) == 3 + 3 + 2


def test_bad_arguments_are_refused():
    data = ConstantImages(VALUES, LABELS)
    with pytest.raises(ValueError, match="random, confidence, clustering"):
        select_samples(_model(), data, "entropy")
    with pytest.raises(ValueError, match="n_per_class must be a positive int"):
        select_samples(_model(), data, "random", n_per_class=0)


def test_real_training_split(data_root):
    from medprune.data import load_dataset
    from medprune.models import create_model

    splits = load_dataset("pneumoniamnist", data_root, image_size=28)
    model = create_model("resnet_small", num_classes=2, image_size=28)
    for strategy in ("confidence", "clustering"):
        sel = select_samples(model, splits.train, strategy, n_per_class=4, seed=0, candidate_limit=64)
        assert sel.per_class_counts == {0: 4, 1: 4}
        assert len(set(sel.indices)) == 8
        assert list(splits.train.labels[sel.indices]) == sel.labels == [0] * 4 + [1] * 4
        assert sel.candidates_per_class == {0: 64, 1: 64}


def test_cached_selection_is_computed_once_and_read_back_unchanged(tmp_path, monkeypatch):
    data, identity, tmp_path = ConstantImages(VALUES, LABELS), {"model": "m1", "data": "d1"}, tmp_path / "new"
    first = cached_selection(_model(), data, "clustering", 2, 3, cache_dir=tmp_path, identity=identity)
    assert first == select_samples(_model(), data, "clustering", n_per_class=2, seed=3)
    path = selection_file(tmp_path, "clustering", 2, 3, None, identity)
    assert path.is_file() and [p.name for p in tmp_path.iterdir()] == [path.name]

    def refuse(*args, **kwargs):
        raise AssertionError("a saved selection must be read back, not recomputed")

    monkeypatch.setattr(selection_module, "select_samples", refuse)
    again = cached_selection(_model(), data, "clustering", 2, 3, cache_dir=tmp_path, identity=identity)
    assert again == first and again.per_class_counts == {0: 2, 1: 2, 2: 2}
    # another seed, model or candidate cap is another file (and here would need computing)
    for changed in ({"seed": 4}, {"identity": {"model": "m2", "data": "d1"}}, {"candidate_limit": 3}):
        args = {"seed": 3, "identity": identity, "candidate_limit": None, **changed}
        with pytest.raises(AssertionError, match="read back"):
            cached_selection(_model(), data, "clustering", 2, cache_dir=tmp_path, **args)


def test_an_unreadable_selection_file_is_recomputed_and_replaced(tmp_path, caplog):
    data, identity = ConstantImages(VALUES, LABELS), {"model": "m", "data": "d"}
    path = selection_file(tmp_path, "confidence", 2, 0, None, identity)
    path.write_text('{"format": "medprune-selection/1", "selection": {"indices": [')  # a write cut short
    with caplog.at_level(logging.WARNING, logger="medprune.scoring.selection"):
        sel = cached_selection(_model(), data, "confidence", 2, 0, cache_dir=tmp_path, identity=identity)
    assert sel.indices == [6, 5, 7, 9, 11, 12] and "unreadable" in caplog.text
    assert Selection.from_dict(json.loads(path.read_text())["selection"]) == sel


def test_without_a_cache_dir_nothing_is_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    sel = cached_selection(_model(), ConstantImages(VALUES, LABELS), "random", 2, 0, cache_dir=None, identity={})
    assert sel.per_class_counts == {0: 2, 1: 2, 2: 2} and not list(tmp_path.iterdir())
