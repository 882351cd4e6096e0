"""MedMNIST loading on the real files (``data_root`` fixture) and on small npz files written here."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from medprune.data import (
    GREY_MEAN,
    GREY_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    DatasetError,
    DatasetNotFoundError,
    available_datasets,
    load_dataset,
    stack_samples,
)


@pytest.mark.parametrize(
    ("flag", "counts", "per_class", "names"),
    [
        ("pneumoniamnist", (4708, 524, 624), (1214, 3494), ["normal", "pneumonia"]),
        ("breastmnist", (546, 78, 156), (147, 399), ["malignant", "normal, benign"]),
    ],
)
def test_official_splits(data_root: Path, flag: str, counts: tuple, per_class: tuple, names: list) -> None:
    splits = load_dataset(flag, data_root)
    assert (len(splits.train), len(splits.val), len(splits.test)) == counts
    assert splits.class_names == names
    assert splits.in_channels == 3 and splits.image_size == 28 and splits.name == flag
    assert splits.train.labels.dtype == np.int64 and splits.train.labels.shape == (counts[0],)
    assert tuple(splits.train.class_counts()) == per_class
    summary = splits.summary()
    assert summary["splits"]["test"]["total"] == counts[2]
    assert sum(summary["splits"]["train"]["per_class"].values()) == counts[0]
    image, label = splits.test[0]
    assert image.shape == (3, 28, 28) and image.dtype == torch.float32 and label in (0, 1)
    assert splits.test.source(5).endswith(f"{flag}.npz[test][5]")
    assert len(splits.fingerprint) == 64


def test_eval_images_are_normalised_raw_pixels(data_root: Path) -> None:
    path = data_root / "pneumoniamnist" / "pneumoniamnist.npz"
    raw = np.load(path)["test_images"][:8].astype(np.float32) / 255.0
    rgb = load_dataset("pneumoniamnist", data_root)
    images, labels = stack_samples(rgb.test, range(8))
    assert images.shape == (8, 3, 28, 28) and labels.tolist() == rgb.test.labels[:8].tolist()
    for c in range(3):
        expected = (torch.from_numpy(raw) - IMAGENET_MEAN[c]) / IMAGENET_STD[c]
        torch.testing.assert_close(images[:, c], expected, atol=1e-5, rtol=0)
    grey = load_dataset("pneumoniamnist", data_root, channels=1)
    assert grey.in_channels == 1
    images1, _ = stack_samples(grey.test, range(8))
    torch.testing.assert_close(images1[:, 0], (torch.from_numpy(raw) - GREY_MEAN[0]) / GREY_STD[0], atol=1e-5, rtol=0)
    # whole-split statistics: de-normalising recovers the pixel mean of the file
    all_images, _ = stack_samples(rgb.val, range(len(rgb.val)))
    pixel_mean = np.load(path)["val_images"].mean() / 255.0
    assert abs(float(all_images[:, 0].mean()) * IMAGENET_STD[0] + IMAGENET_MEAN[0] - pixel_mean) < 1e-4


def test_image_size_and_augmentation(data_root: Path) -> None:
    splits = load_dataset("breastmnist", data_root, image_size=40)
    assert splits.train[0][0].shape == (3, 40, 40) and splits.val[0][0].shape == (3, 40, 40)
    first, second = splits.train[3][0], splits.train[3][0]
    assert not torch.equal(first, second), "training transform should augment"
    assert torch.equal(splits.val[3][0], splits.val[3][0]), "eval transform must be deterministic"
    plain = load_dataset("breastmnist", data_root, image_size=40, augment=False)
    assert torch.equal(plain.train[3][0], plain.train.with_transform(False)[3][0])
    assert plain.fingerprint == splits.fingerprint


def test_both_file_layouts_and_env_root(data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shutil.copy(data_root / "breastmnist" / "breastmnist.npz", tmp_path / "breastmnist.npz")
    flat = load_dataset("BreastMNIST", tmp_path)
    nested = load_dataset("breastmnist", data_root)
    assert flat.fingerprint == nested.fingerprint
    assert np.array_equal(flat.test.labels, nested.test.labels)
    monkeypatch.setenv("MEDPRUNE_DATA", str(tmp_path))
    assert len(load_dataset("breastmnist").train) == 546


def test_missing_file_offline_says_what_to_put_where(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDPRUNE_OFFLINE", "1")
    with pytest.raises(DatasetNotFoundError, match=r"dermamnist_64\.npz.*dermamnist_64\.npz") as info:
        load_dataset("dermamnist", tmp_path, size=64)
    assert str(tmp_path) in str(info.value) and isinstance(info.value, FileNotFoundError)


def _write_npz(path: Path, labels: np.ndarray, n: int = 4, drop: str | None = None) -> None:
    rng = np.random.default_rng(0)
    arrays = {}
    for split in ("train", "val", "test"):
        arrays[f"{split}_images"] = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        arrays[f"{split}_labels"] = labels.astype(np.uint8)
    arrays.pop(drop, None)
    np.savez(path, **arrays)


def test_bad_files(tmp_path: Path) -> None:
    _write_npz(tmp_path / "breastmnist.npz", np.array([[0], [1], [7], [1]]))
    with pytest.raises(DatasetError, match=r"breastmnist\.npz: train_labels\[2\] = 7 is out of range"):
        load_dataset("breastmnist", tmp_path)
    _write_npz(tmp_path / "breastmnist.npz", np.array([[0], [1], [0], [1]]), drop="val_labels")
    with pytest.raises(DatasetError, match="no array 'val_labels'"):
        load_dataset("breastmnist", tmp_path)
    (tmp_path / "breastmnist.npz").write_bytes(b"not a zip")
    with pytest.raises(DatasetError, match="cannot read MedMNIST file"):
        load_dataset("breastmnist", tmp_path)


def test_refusals() -> None:
    with pytest.raises(DatasetError, match="single-label"):
        load_dataset("chestmnist")
    with pytest.raises(DatasetError, match="3-D"):
        load_dataset("organmnist3d")
    with pytest.raises(DatasetError, match=r"size must be one of \(28, 64, 128, 224\)"):
        load_dataset("breastmnist", size=100)
    with pytest.raises(DatasetError, match="unknown dataset 'imagenet'; valid datasets: .*pneumoniamnist"):
        load_dataset("imagenet")
    with pytest.raises(DatasetError, match="study_type"):
        load_dataset("breastmnist", study_type="XR_WRIST")
    assert "chestmnist" not in available_datasets() and "breastmnist" in available_datasets()


def test_download_when_absent(data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import medmnist

    import medprune.data.medmnist as mm

    calls = []

    class FakeBreastMNIST:  # stands in for the network: "downloads" by copying the real file
        def __init__(self, split: str, root: str, size: int, download: bool) -> None:
            calls.append((root, size, download))
            shutil.copy(data_root / "breastmnist" / "breastmnist.npz", Path(root) / "breastmnist.npz")

    monkeypatch.delenv("MEDPRUNE_DATA", raising=False)
    monkeypatch.setattr(mm, "online", lambda host: True)
    monkeypatch.setattr(mm, "_default_medmnist_root", lambda: tmp_path / "default")
    monkeypatch.setattr(medmnist, "BreastMNIST", FakeBreastMNIST)
    splits = load_dataset("breastmnist")
    assert calls == [(str(tmp_path / "default"), 28, True)] and len(splits.train) == 546
    assert (tmp_path / "default" / "breastmnist.npz").is_file()

    def failing(**kwargs: object) -> None:
        raise RuntimeError("Automatic download failed!")

    monkeypatch.setattr(medmnist, "BreastMNIST", failing)
    with pytest.raises(DatasetNotFoundError, match=r"downloading breastmnist_64\.npz into .* failed"):
        load_dataset("breastmnist", tmp_path / "other", size=64)
