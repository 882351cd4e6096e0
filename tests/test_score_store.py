"""Score files: computed once, reused, validated against the model, provenance complete."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch

import medprune.scoring.selection as selection_module
from medprune.data.base import ArrayStore, ImageDataset
from medprune.models import create_model
from medprune.models.units import unit_groups
from medprune.provenance import model_checksum
from medprune.scoring.registry import score
from medprune.scoring.request import ScoreRecipe, ScoreRequest
from medprune.scoring.selection import load_images
from medprune.scoring.store import ScoreStore, compute_scores, load_scores

#: Two samples per class: small and fast.
TWO = ScoreRecipe(n_per_class=2)


@pytest.fixture()
def train_split() -> ImageDataset:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(24, 16, 16), dtype=np.uint8)
    labels = np.array([0, 1, 2] * 7 + [0, 1, 0])
    return ImageDataset(ArrayStore(images, "mem[train]"), labels, ["a", "b", "c"], image_size=16, train=True)


@pytest.fixture()
def model() -> torch.nn.Module:
    return create_model("vgg_small", num_classes=3, image_size=16)


def test_scores_are_saved_with_provenance_and_reused(tmp_path, train_split, model, caplog):
    request = ScoreRequest("ig", "confidence", seed=1, recipe=TWO, options={"steps": 3})
    record = compute_scores(model, train_split, request, cache_dir=tmp_path)
    assert record.path is not None and record.path.is_file() and record.path.with_suffix(".json").is_file()
    groups = {g.name: g.num_units for g in unit_groups(model)}
    assert {k: v.numel() for k, v in record.scores.items()} == groups
    prov = json.loads(record.path.with_suffix(".json").read_text())
    assert prov["model_checksum"] == model_checksum(model)
    assert prov["unit_groups"] == groups
    assert prov["selection"]["per_class_counts"] == {"0": 2, "1": 2, "2": 2}
    assert prov["request"]["options"] == {"steps": 3} and prov["resolved_options"]["rule"] == "trapezoid"
    assert prov["versions"]["torch"] and prov["versions"]["safetensors"]
    assert prov["dataset_fingerprint"] and prov["wall_time_s"] >= 0
    # the saved scores are exactly score() on the selected samples
    picked = prov["selection"]["indices"]
    direct = score(model, load_images(train_split, picked), torch.tensor(prov["selection"]["labels"]), "ig", steps=3)
    for name, values in direct.items():
        torch.testing.assert_close(record.scores[name], values)
    with caplog.at_level(logging.INFO):
        again = compute_scores(
            model,
            train_split,
            ScoreRequest("ig", "confidence", 1, TWO, options={"steps": 3}),
            cache_dir=tmp_path,
        )
    assert "reusing" in caplog.text
    assert again.path == record.path and again.reused and not record.reused
    assert all(torch.equal(again.scores[k], record.scores[k]) for k in groups)
    assert len(list(tmp_path.glob("*.safetensors"))) == 1


def test_a_different_request_or_model_gets_a_different_file(tmp_path, train_split, model):
    base = compute_scores(model, train_split, ScoreRequest("activation", "random", 0, TWO), cache_dir=tmp_path).path
    other_seed = compute_scores(
        model, train_split, ScoreRequest("activation", "random", 5, TWO), cache_dir=tmp_path
    ).path
    other_model = create_model("vgg_small", num_classes=3, image_size=16)
    other = compute_scores(
        other_model,
        train_split,
        ScoreRequest("activation", "random", 0, TWO),
        cache_dir=tmp_path,
    )
    assert len({base, other_seed, other.path}) == 3


def test_data_free_methods_ignore_the_sampling(tmp_path, train_split, model):
    a = compute_scores(model, train_split, ScoreRequest("random", "random", seed=3), cache_dir=tmp_path)
    b = compute_scores(model, train_split, ScoreRequest("random", "clustering", seed=3), cache_dir=tmp_path)
    assert a.path == b.path and "datafree" in a.path.name
    assert a.provenance["selection"] is None


def test_scores_for_another_model_are_refused_naming_the_group(tmp_path, train_split, model):
    record = compute_scores(model, train_split, ScoreRequest("magnitude"), cache_dir=tmp_path)
    assert set(load_scores(record.path, model).scores) == {g.name for g in unit_groups(model)}
    narrower = create_model("vgg_small", num_classes=3, image_size=16)
    narrower.features[0] = torch.nn.Conv2d(3, 8, 3, padding=1)
    with pytest.raises(ValueError, match="unit group 'features.0' has \\(16,\\) scores but this model has 8 units"):
        load_scores(record.path, narrower)
    with pytest.raises(ValueError, match="no scores for unit group 'conv1'"):
        load_scores(record.path, create_model("resnet_small", num_classes=3, image_size=16))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_scores(tmp_path / "missing.safetensors")


def test_bad_requests_name_the_valid_values(train_split, model):
    with pytest.raises(ValueError, match="valid methods: .*ig"):
        compute_scores(model, train_split, ScoreRequest("gradcam"))
    with pytest.raises(ValueError, match="valid samplings: random, confidence, clustering"):
        compute_scores(model, train_split, ScoreRequest("ig", "entropy"))
    with pytest.raises(ValueError, match="unknown option\\(s\\) \\['stepz'\\] for method 'ig'"):
        compute_scores(model, train_split, ScoreRequest("ig", options={"stepz": 3}))


def test_without_cache_dir_nothing_is_written(tmp_path, train_split, model, monkeypatch):
    monkeypatch.chdir(tmp_path)
    record = compute_scores(model, train_split, ScoreRequest("taylor", "random", recipe=ScoreRecipe(n_per_class=1)))
    assert record.path is None and not list(tmp_path.iterdir())
    assert record.provenance["selection"]["per_class_counts"] == {"0": 1, "1": 1, "2": 1}


def test_score_store_reuses_files_and_records_what_it_reused(tmp_path, train_split, model):
    store = ScoreStore(model, train_split, tmp_path, n_per_class=2, seed=1)
    first = store.scores("random", "none")
    assert store.reused == set() and set(store.files) == {"random/none"}
    again = ScoreStore(model, train_split, tmp_path, n_per_class=2, seed=1)
    second = again.scores("random", "none")
    assert again.reused == {"random/none"} and again.files == store.files
    assert all(torch.equal(first[k], second[k]) for k in first)
    other_seed = again.scores("random", "none", seed=2)
    assert again.files["random/none/2"] != again.files["random/none"] and "random/none/2" not in again.reused
    assert any(not torch.equal(first[k], other_seed[k]) for k in first)
    with pytest.raises(ValueError, match="another model"):
        ScoreStore(model, train_split, tmp_path, n_per_class=2, seed=1, checksum="0" * 64).scores("random", "none")


def test_methods_scored_on_the_same_selection_select_once(tmp_path, train_split, model, monkeypatch):
    calls = []
    original = selection_module.select_samples

    def counted(*args, **kwargs):
        calls.append(args[2:4])
        return original(*args, **kwargs)

    monkeypatch.setattr(selection_module, "select_samples", counted)
    store = ScoreStore(model, train_split, tmp_path, n_per_class=2, seed=1)
    records = [store.record(method, "confidence") for method in ("lrp", "taylor", "ig")]
    assert calls == [("confidence", 2)]  # one forward pass over the training split, not one per method
    assert len({json.dumps(r.provenance["selection"]) for r in records}) == 1
    store.record("lrp", "confidence", seed=2)
    assert calls == [("confidence", 2), ("confidence", 2)]  # a new selection seed selects again


def test_a_verified_checksum_is_not_hashed_again(tmp_path, train_split, model, monkeypatch):
    checksum = model_checksum(model)
    hashed = []
    monkeypatch.setattr("medprune.scoring.store.model_checksum", lambda m: hashed.append(m) or checksum)
    store = ScoreStore(model, train_split, tmp_path, n_per_class=2, checksum=checksum, checksum_verified=True)
    record = store.record("lrp", "random")
    assert hashed == [] and record.provenance["model_checksum"] == checksum
    # unverified (the default): every request hashes the model, so a wrong checksum is caught
    ScoreStore(model, train_split, tmp_path, n_per_class=2, checksum=checksum).record("taylor", "random")
    assert len(hashed) == 1
