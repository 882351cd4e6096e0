"""Folder-per-class layouts (folder, kvasir, cpn) on small image trees written here with PIL."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from medprune.data import (
    DatasetError,
    DatasetNotFoundError,
    ImageReadError,
    load_dataset,
    stack_samples,
    verify_images,
)
from medprune.data.folders import CPN_CLASSES, KVASIR_CLASSES


def write_images(folder: Path, n: int, *, mode: str = "RGB", ext: str = "png", seed: int = 0) -> list[Path]:
    """``n`` small random images (sizes vary) in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for k in range(n):
        shape = (10 + k % 3, 12) + ((3,) if mode == "RGB" else ())
        path = folder / f"img{k:03d}.{ext}"
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode=mode).save(path)
        paths.append(path)
    return paths


@pytest.fixture()
def three_classes(tmp_path: Path) -> Path:
    for k, name in enumerate(["beta", "alpha", "gamma"]):
        write_images(tmp_path / "ds" / name, 10, seed=k)
    (tmp_path / "ds" / "alpha" / "notes.txt").write_text("not an image")
    (tmp_path / "ds" / ".hidden").mkdir()
    return tmp_path / "ds"


def test_folder_stratified_split(three_classes: Path) -> None:
    splits = load_dataset("folder", three_classes, image_size=16)
    assert splits.class_names == ["alpha", "beta", "gamma"]
    assert (len(splits.train), len(splits.val), len(splits.test)) == (21, 3, 6)
    for part, per_class in ((splits.train, 7), (splits.val, 1), (splits.test, 2)):
        assert part.class_counts().tolist() == [per_class] * 3
    sources = [s.source(i) for s in (splits.train, splits.val, splits.test) for i in range(len(s))]
    assert len(set(sources)) == 30, "splits must be disjoint and cover every image"
    for i in range(len(splits.test)):  # labels follow the class folder of each file
        assert Path(splits.test.source(i)).parent.name == splits.class_names[splits.test.labels[i]]
    image, label = splits.train[0]
    assert image.shape == (3, 16, 16) and image.dtype == torch.float32 and isinstance(label, int)
    again = load_dataset("folder", three_classes, image_size=16)
    other_seed = load_dataset("folder", three_classes, image_size=16, seed=1)
    assert again.fingerprint == splits.fingerprint and other_seed.fingerprint != splits.fingerprint
    assert [again.test.source(i) for i in range(6)] == [splits.test.source(i) for i in range(6)]
    assert [other_seed.test.source(i) for i in range(6)] != [splits.test.source(i) for i in range(6)]
    batch, labels = next(iter(DataLoader(splits.train, batch_size=8, shuffle=True)))
    assert batch.shape == (8, 3, 16, 16) and labels.dtype == torch.int64


def test_subset_and_stack_keep_labels(three_classes: Path) -> None:
    splits = load_dataset("folder", three_classes, image_size=16)
    sub = splits.train.subset([5, 0, 20])
    assert sub.labels.tolist() == [splits.train.labels[5], splits.train.labels[0], splits.train.labels[20]]
    assert sub.source(2) == splits.train.source(20) and sub.train
    images, labels = stack_samples(splits.train, [5, 0, 20])
    assert labels.tolist() == sub.labels.tolist() and images.shape == (3, 3, 16, 16)
    assert torch.equal(images[0], splits.train.with_transform(False)[5][0]), "stack_samples uses the eval transform"


def test_given_splits(tmp_path: Path) -> None:
    for split, n in (("train", 8), ("valid", 3), ("test", 4)):
        for name in ("cats", "dogs"):
            write_images(tmp_path / split / name, n)
    splits = load_dataset("folder", tmp_path, image_size=8)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (16, 6, 8)
    assert all("/valid/" in splits.val.source(i) for i in range(len(splits.val)))
    (tmp_path / "valid").rename(tmp_path / "spare")
    carved = load_dataset("folder", tmp_path, image_size=8, val_fraction=0.25)
    assert (len(carved.train), len(carved.val), len(carved.test)) == (12, 4, 8)
    assert all("/train/" in carved.val.source(i) for i in range(len(carved.val)))


def test_kvasir_names_case_insensitive(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "kvasir"
    for k, name in enumerate(KVASIR_CLASSES):
        write_images(root / (name.upper() if k % 2 else name), 5, ext="jpg", seed=k)
    monkeypatch.setenv("MEDPRUNE_DATA", str(tmp_path))
    splits = load_dataset("KVASIR", image_size=12)
    assert splits.class_names == KVASIR_CLASSES and len(splits.class_names) == 8
    assert splits.train[0][0].shape == (3, 12, 12)
    (root / "polyps").rename(root / "polyp")
    with pytest.raises(DatasetError, match=r"missing \['polyps'\], unexpected \['polyp'\]"):
        load_dataset("kvasir", root)


def test_cpn_grey_images(tmp_path: Path) -> None:
    for k, name in enumerate(["covid", "Normal", "PNEUMONIA"]):
        write_images(tmp_path / name, 6, mode="L", seed=k)
    splits = load_dataset("cpn", tmp_path, image_size=20)
    assert splits.class_names == CPN_CLASSES
    image, _ = splits.val[0]
    assert image.shape == (3, 20, 20)
    # grey fed as 3 identical channels before normalisation: de-normalised channels agree
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    pixels = image * std[:, None, None] + mean[:, None, None]
    torch.testing.assert_close(pixels[0], pixels[1], atol=1e-5, rtol=0)
    torch.testing.assert_close(pixels[0], pixels[2], atol=1e-5, rtol=0)
    grey = load_dataset("cpn", tmp_path, image_size=20, channels=1)
    assert grey.in_channels == 1 and grey.val[0][0].shape == (1, 20, 20)


def test_rgb_to_one_channel(three_classes: Path) -> None:
    splits = load_dataset("folder", three_classes, image_size=16, channels=1)
    assert splits.train[0][0].shape == (1, 16, 16) and splits.test[0][0].shape == (1, 16, 16)


def test_empty_class_folder_is_named(three_classes: Path) -> None:
    (three_classes / "delta").mkdir()
    (three_classes / "delta" / "readme.txt").write_text("x")
    with pytest.raises(DatasetError, match=r"class folder .*delta \(class 'delta'\) has no images"):
        load_dataset("folder", three_classes)


def test_corrupt_image_names_the_file(three_classes: Path) -> None:
    bad = three_classes / "beta" / "img004.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    splits = load_dataset("folder", three_classes, image_size=16)
    everything = [(s, i) for s in (splits.train, splits.val, splits.test) for i in range(len(s))]
    part, index = next((s, i) for s, i in everything if s.source(i) == str(bad))
    with pytest.raises(ImageReadError, match=f"cannot read image {bad}"):
        part[index]
    with pytest.raises(ImageReadError, match=r"1 unreadable image\(s\): .*img004\.png"):
        verify_images(part)


def test_missing_folders_say_what_to_do(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MEDPRUNE_DATA", raising=False)
    with pytest.raises(DatasetNotFoundError, match="pass --data-root"):
        load_dataset("folder")
    with pytest.raises(DatasetNotFoundError, match="does not exist: put one folder per class"):
        load_dataset("cpn", tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetNotFoundError, match="no class folders in"):
        load_dataset("folder", tmp_path / "empty")
    with pytest.raises(DatasetError, match="size=64 applies to MedMNIST files only"):
        load_dataset("folder", tmp_path, size=64)
    with pytest.raises(DatasetError, match="val_fraction"):
        load_dataset("folder", tmp_path, val_fraction=1.5)


def test_read_image_modes(tmp_path: Path) -> None:
    from medprune.data import read_image

    rgb = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    cases = {
        "grey.png": (Image.fromarray(rgb[..., 0], mode="L"), 1),
        "rgba.png": (Image.fromarray(np.dstack([rgb, rgb[..., :1]]), mode="RGBA"), 3),
        "palette.png": (Image.fromarray(rgb, mode="RGB").convert("P"), 3),
        "deep.png": (Image.fromarray(rgb[..., 0].astype(np.uint16) * 257), 1),
    }
    for name, (image, channels) in cases.items():
        image.save(tmp_path / name)
        tensor = read_image(tmp_path / name)
        assert tensor.dtype == torch.uint8 and tensor.shape == (channels, 5, 7), name
    assert torch.equal(read_image(tmp_path / "deep.png")[0], torch.from_numpy(rgb[..., 0])), "16-bit scaled to 8-bit"
    assert torch.equal(read_image(tmp_path / "rgba.png"), torch.from_numpy(rgb).permute(2, 0, 1))
