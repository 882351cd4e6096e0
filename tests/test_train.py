"""Training loop on a synthetic, learnable dataset: files, best-epoch selection, determinism, validation."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

from medprune.checkpoint import load_checkpoint
from medprune.config import ConfigError, build_config
from medprune.data.splitting import limit_dataset
from medprune.metrics import evaluate
from medprune.models import create_model
from medprune.provenance import model_checksum
from medprune.recovery.recalibration import recalibrate_batchnorm
from medprune.runs.train import TrainConfig, resolve_pretrained
from medprune.runtime import seed_everything
from medprune.training.loop import class_weights, train


class FakeImages(Dataset):
    """Class 1 images are brighter in the centre; imbalanced 1:3 like PneumoniaMNIST."""

    def __init__(self, n: int, seed: int) -> None:
        rng = np.random.default_rng(seed)
        self.labels = (rng.random(n) < 0.75).astype(np.int64)
        images = rng.normal(size=(n, 1, 12, 12)).astype(np.float32)
        images[:, :, 4:8, 4:8] += 1.5 * self.labels[:, None, None, None]
        self.images = torch.from_numpy(images)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return self.images[i], int(self.labels[i])

    def subset(self, indices):
        out = FakeImages.__new__(FakeImages)
        out.labels, out.images = self.labels[indices], self.images[indices]
        return out


@dataclass
class FakeSplits:
    train: FakeImages
    val: FakeImages
    test: FakeImages
    class_names: tuple = ("normal", "pneumonia")
    in_channels: int = 1
    image_size: int = 12
    name: str = "fake"
    fingerprint: str = "f00"


@pytest.fixture(autouse=True)
def _one_thread():
    """One intra-op thread: on a shared 2-core machine OpenMP spin-waiting makes 2 threads many times slower."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def splits():
    return FakeSplits(FakeImages(96, 0), FakeImages(40, 1), FakeImages(40, 2))


def _config(**kw):
    base = dict(model="resnet_small", epochs=3, batch_size=16, lr_step=2, image_size=12, channels=1, progress=False)
    return TrainConfig(**{**base, **kw})


def _model(seed=0):
    seed_everything(seed)
    return create_model("resnet_small", num_classes=2, in_channels=1, image_size=12)


def test_train_writes_files_and_keeps_best_epoch(tmp_path, splits):
    result = train(_model(), splits, _config(), tmp_path)
    assert {p.name for p in tmp_path.iterdir()} >= {"history.csv", "metrics.json", "model.json", "model.safetensors"}
    rows = list(csv.DictReader((tmp_path / "history.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert [float(r["lr"]) for r in rows] == pytest.approx([1e-3, 1e-3, 1e-4])  # StepLR every lr_step epochs
    aurocs = [float(r["val_auroc"]) for r in rows]
    assert result.best_epoch == int(np.argmax(aurocs)) + 1 and result.best_score == pytest.approx(max(aurocs))
    assert result.test_metrics["auroc"] > 0.8, "the synthetic task is easy; training must learn it"
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["best_epoch"] == result.best_epoch and saved["test"]["accuracy"] == result.test_metrics["accuracy"]
    loaded, meta = load_checkpoint(tmp_path / "model")
    assert meta["class_names"] == ["normal", "pneumonia"] and meta["dataset"]["fingerprint"] == "f00"
    assert meta["train_config"]["epochs"] == 3 and meta["metrics"]["best_epoch"] == result.best_epoch
    assert model_checksum(loaded) == model_checksum(result.model.cpu())
    again = evaluate(loaded, splits.test, ["normal", "pneumonia"])
    assert again["accuracy"] == result.test_metrics["accuracy"]


def test_same_seed_same_weights_and_loss_selection(splits):
    first = train(_model(), splits, _config(epochs=2, select_on="loss", max_train_samples=48), None)
    second = train(_model(), splits, _config(epochs=2, select_on="loss", max_train_samples=48), None)
    assert model_checksum(first.model) == model_checksum(second.model)
    losses = [row["val_loss"] for row in first.history]
    assert first.best_epoch == int(np.argmin(losses)) + 1 and first.best_score == pytest.approx(min(losses))
    assert first.out_dir is None and first.checkpoint is None


def test_class_weights_and_limit_dataset(splits):
    weights = class_weights(np.array([0, 0, 1, 1, 1, 1, 1, 1]), 3)
    assert weights.tolist() == pytest.approx([8 / 6, 8 / 18, 0.0])
    small = limit_dataset(splits.train, 20, seed=0)
    assert len(small) == 20 and set(small.labels) == {0, 1}
    assert abs(small.labels.mean() - splits.train.labels.mean()) < 0.1  # stratified
    assert limit_dataset(splits.train, None, 0) is splits.train


@pytest.mark.parametrize(
    "overrides,match",
    [
        ({"epochs": "0"}, "epochs must be >= 1"),
        ({"channels": "2"}, "channels=2 is not allowed; valid values: 1, 3"),
        ({"select_on": "f1"}, "valid values: auroc, accuracy, balanced_accuracy, loss"),
        ({"model": "resnet9000"}, "unknown model 'resnet9000'; valid models:"),
        ({"lr_gamma": "2"}, "0 < lr_gamma <= 1"),
        ({"max_train_samples": "1"}, "max_train_samples must be >= 2"),
        ({"epoch": "3"}, r"unknown option\(s\) \['epoch'\]"),
    ],
)
def test_bad_config_is_refused(overrides, match):
    with pytest.raises((ConfigError, ValueError), match=match):
        build_config(TrainConfig, overrides=overrides)


def test_pretrained_auto_only_for_paper_models_with_rgb():
    assert resolve_pretrained(_config(), 3) is False  # resnet_small has no weights
    assert resolve_pretrained(_config(model="resnet50"), 1) is False  # ImageNet weights need 3 channels
    assert resolve_pretrained(_config(model="resnet50"), 3) is True
    assert resolve_pretrained(_config(model="resnet50", pretrained=False), 3) is False


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_mixed_precision_trains(splits):
    result = train(_model(), splits, _config(epochs=2, device="cuda", amp=True), None)
    assert next(result.model.parameters()).is_cuda
    assert all(np.isfinite(row["train_loss"]) for row in result.history)
    assert result.test_metrics["auroc"] > 0.7


def test_training_recalibration_gives_exact_statistics_and_restores_state():
    model = _model().train()
    x = torch.randn(40, 1, 12, 12)
    momentum = model.bn1.momentum
    assert recalibrate_batchnorm(model, (x, torch.zeros(40, dtype=torch.long)), batch_size=40) == sum(
        isinstance(m, torch.nn.BatchNorm2d) for m in model.modules()
    )
    with torch.no_grad():
        features = model.conv1(x)
    torch.testing.assert_close(model.bn1.running_mean, features.mean((0, 2, 3)))
    torch.testing.assert_close(model.bn1.running_var, features.var((0, 2, 3), unbiased=True))
    assert model.training and model.bn1.momentum == momentum
    assert recalibrate_batchnorm(torch.nn.Sequential(torch.nn.Linear(2, 2)), (x, x)) == 0
