"""Checkpoints: round trip, sidecar contents, refusal of pickles, tampered weights and incomplete sidecars."""

from __future__ import annotations

import json
import os
import pickle

import pytest
import torch

from medprune.checkpoint import FORMAT, load_checkpoint, read_meta, save_checkpoint
from medprune.checkpoint import io as checkpoint
from medprune.models import create_model
from medprune.provenance import model_checksum


@pytest.fixture()
def model():
    torch.manual_seed(0)
    return create_model("resnet_small", num_classes=3, in_channels=1, image_size=16)


def _meta():
    return {
        "class_names": ["a", "b", "c"],
        "normalization": {"mean": [0.5], "std": [0.25]},
        "train_config": {"epochs": 1, "lr": 1e-3},
        "dataset": {"name": "fake", "fingerprint": "abc"},
        "metrics": {"accuracy": 0.5, "auroc": float("nan")},
    }


def test_round_trip_restores_weights_and_outputs(tmp_path, model):
    with torch.no_grad():
        model.bn1.running_mean.add_(0.3)  # buffers must survive too
    path = save_checkpoint(tmp_path / "run" / "model.safetensors", model, _meta())
    assert path == tmp_path / "run" / "model.safetensors" and (tmp_path / "run" / "model.json").is_file()
    loaded, meta = load_checkpoint(tmp_path / "run" / "model")
    x = torch.randn(4, 1, 16, 16)
    model.eval()
    torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)
    assert model_checksum(loaded) == model_checksum(model) == meta["model_checksum"]
    assert loaded.medprune_spec == model.medprune_spec
    assert not loaded.training


def test_sidecar_holds_provenance(tmp_path, model):
    save_checkpoint(tmp_path / "m", model, _meta())
    meta = json.loads((tmp_path / "m.json").read_text())
    assert meta["format"] == FORMAT
    assert meta["model"] == {"name": "resnet_small", "num_classes": 3, "in_channels": 1, "image_size": 16}
    assert meta["class_names"] == ["a", "b", "c"] and meta["image_size"] == 16 and meta["in_channels"] == 1
    assert meta["normalization"]["std"] == [0.25] and meta["dataset"]["fingerprint"] == "abc"
    assert meta["metrics"]["auroc"] is None  # NaN never reaches the JSON
    assert set(meta["versions"]) >= {"torch", "torchvision", "timm", "medprune"}
    assert len(meta["weights_sha256"]) == 64 and meta["created"].endswith("+00:00")
    assert read_meta(tmp_path / "m.safetensors")["weights_file"] == "m.safetensors"


def test_checksum_is_deterministic_and_sensitive(model):
    first = model_checksum(model)
    assert first == model_checksum(model)
    with torch.no_grad():
        model.fc.bias[0] += 1e-6
    assert model_checksum(model) != first


class _Exploit:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("suffix", [".pt", ".pth", ".pkl"])
def test_pickle_files_are_refused_and_never_executed(tmp_path, suffix):
    marker = tmp_path / "pwned"
    evil = tmp_path / f"model{suffix}"
    evil.write_bytes(pickle.dumps(_Exploit(str(marker))))
    # the pickle really would run code if loaded the unsafe way (checked on a copy, then the marker removed)
    probe = tmp_path / "probe"
    pickle.loads(pickle.dumps(_Exploit(str(probe))))  # noqa: S301 - deliberate, proves the payload is live
    assert probe.exists()
    with pytest.raises(ValueError, match=rf"refusing a pickle-based checkpoint \({suffix}\)"):
        load_checkpoint(evil)
    assert not marker.exists()


def test_pickle_bytes_under_a_safetensors_name_are_refused(tmp_path, model):
    save_checkpoint(tmp_path / "m", model, _meta())
    marker = tmp_path / "pwned"
    (tmp_path / "m.safetensors").write_bytes(pickle.dumps(_Exploit(str(marker))))
    with pytest.raises(ValueError, match="m.safetensors: SHA-256"):
        load_checkpoint(tmp_path / "m")
    meta = json.loads((tmp_path / "m.json").read_text())
    import hashlib

    meta["weights_sha256"] = hashlib.sha256((tmp_path / "m.safetensors").read_bytes()).hexdigest()
    (tmp_path / "m.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        load_checkpoint(tmp_path / "m")
    assert not marker.exists()


def test_incomplete_sidecar_is_refused_naming_the_file(tmp_path, model):
    save_checkpoint(tmp_path / "m", model, _meta())
    meta = json.loads((tmp_path / "m.json").read_text())
    del meta["class_names"], meta["weights_sha256"]
    (tmp_path / "m.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"m\.json: missing checkpoint field\(s\) \['weights_sha256', 'class_names'\]"):
        load_checkpoint(tmp_path / "m")
    (tmp_path / "m.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"m\.json: not valid JSON"):
        load_checkpoint(tmp_path / "m")


def test_weights_that_do_not_fit_are_refused(tmp_path, model):
    save_checkpoint(tmp_path / "m", model, _meta())
    other = create_model("vgg_small", num_classes=3, in_channels=1, image_size=16)
    save_checkpoint(tmp_path / "other", other, _meta())
    meta = json.loads((tmp_path / "m.json").read_text())
    other_meta = json.loads((tmp_path / "other.json").read_text())
    meta["weights_file"], meta["weights_sha256"] = "other.safetensors", other_meta["weights_sha256"]
    (tmp_path / "m.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"other\.safetensors: weights do not fit 'resnet_small'"):
        load_checkpoint(tmp_path / "m")


def test_missing_files_and_bad_save_inputs(tmp_path, model):
    with pytest.raises(FileNotFoundError, match="nothing.json"):
        load_checkpoint(tmp_path / "nothing")
    with pytest.raises(ValueError, match="class_names has 2 entries"):
        save_checkpoint(tmp_path / "m", model, {"class_names": ["a", "b"]})
    with pytest.raises(ValueError, match="medprune_spec"):
        save_checkpoint(tmp_path / "m", torch.nn.Linear(2, 2), {})
    with pytest.raises(ValueError, match="set by save_checkpoint itself"):
        save_checkpoint(tmp_path / "m", model, {"weights_sha256": "x"})


def test_pruned_checkpoint_calls_apply_structure(tmp_path, model, monkeypatch):
    calls = []

    def apply_structure(m, structure):
        calls.append(structure)
        m.fc = torch.nn.Linear(128, 3)  # stand-in for the real shrinking
        return m

    monkeypatch.setattr(checkpoint, "apply_structure", apply_structure)
    save_checkpoint(tmp_path / "p", model, {**_meta(), "pruned": {"layer1.0.conv1": 8}})
    loaded, meta = load_checkpoint(tmp_path / "p")
    assert calls == [{"layer1.0.conv1": 8}]
    assert model_checksum(loaded) == meta["model_checksum"]
