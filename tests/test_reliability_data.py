"""Issue 14, items 4-6 at the library level: bad data and bad sidecars/configs refused up front, naming the file."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medprune.checkpoint import load_checkpoint, read_meta, save_checkpoint
from medprune.config import ConfigError, build_config
from medprune.data import DatasetError, ImageReadError, load_dataset
from medprune.data.validate import check_splits, validate_splits, verify_image_files
from medprune.models import create_model


@dataclass
class TrainConfig:
    epochs: int = 1
    lr: float = 0.1
    seed: int = 0


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDPRUNE_OFFLINE", "1")


def small_breastmnist(data_root: Path, folder: Path, n: int = 12, **replace: np.ndarray) -> Path:
    """``breastmnist.npz`` with the first ``n`` real samples of each split and the arrays in ``replace`` swapped in."""
    with np.load(data_root / "breastmnist" / "breastmnist.npz") as real:
        arrays = {key: real[key][:n] for key in real.files}
    arrays.update(replace)
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(folder / "breastmnist.npz", **arrays)
    return folder / "breastmnist.npz"


def test_fractional_labels_are_refused_not_truncated(data_root: Path, tmp_path: Path) -> None:
    labels = np.array([[0.0], [1.0], [0.5]] * 4)
    path = small_breastmnist(data_root, tmp_path, train_labels=labels)
    with pytest.raises(DatasetError) as error:
        load_dataset("breastmnist", tmp_path)
    assert str(path) in str(error.value) and "train_labels" in str(error.value) and "0.5" in str(error.value)
    whole = small_breastmnist(data_root, tmp_path, train_labels=np.array([[0.0], [1.0]] * 6))
    assert load_dataset("breastmnist", whole.parent).train.labels.tolist() == [0, 1] * 6


def test_object_array_labels_name_the_file_and_array(data_root: Path, tmp_path: Path) -> None:
    labels = np.array([[0], [1], "x"] * 4, dtype=object)
    path = small_breastmnist(data_root, tmp_path, val_labels=labels)
    with pytest.raises(DatasetError) as error:
        load_dataset("breastmnist", tmp_path)
    message = str(error.value)
    assert str(path) in message and "'val_labels'" in message and "dtype object" in message


def test_empty_test_split_is_named_with_its_file(data_root: Path, tmp_path: Path) -> None:
    empty = {"test_images": np.zeros((0, 28, 28), np.uint8), "test_labels": np.zeros((0, 1), np.uint8)}
    path = small_breastmnist(data_root, tmp_path, **empty)
    splits = load_dataset("breastmnist", tmp_path)
    check_splits(splits, ["train", "val"])  # not required: no error
    with pytest.raises(DatasetError) as error:
        check_splits(splits)
    assert "the test split is empty" in str(error.value) and f"{path}[test]" in str(error.value)


def _image_tree(root: Path) -> list[Path]:
    rng = np.random.default_rng(0)
    paths = []
    for name in ("a", "b"):
        (root / name).mkdir(parents=True)
        for k in range(6):
            path = root / name / f"{k}.png"
            Image.fromarray(rng.integers(0, 256, (16, 16), dtype=np.uint8)).save(path)
            paths.append(path)
    return paths


def test_corrupt_and_empty_images_are_named_before_work(tmp_path: Path) -> None:
    paths = _image_tree(tmp_path / "ds")
    cache = tmp_path / "cache"
    splits = load_dataset("folder", tmp_path / "ds", image_size=16, val_fraction=0.2, test_fraction=0.2)
    validate_splits(splits, cache=cache)
    paths[1].write_bytes(b"")
    paths[7].write_bytes(paths[7].read_bytes()[:60])
    with pytest.raises(ImageReadError) as error:
        validate_splits(splits, cache=cache)
    assert "2 unreadable image(s)" in str(error.value)
    assert str(paths[1]) in str(error.value) and str(paths[7]) in str(error.value)


def test_image_check_is_remembered_until_a_file_changes(tmp_path: Path) -> None:
    paths = _image_tree(tmp_path / "ds")
    cache = tmp_path / "cache"
    assert verify_image_files(paths, cache) == len(paths)
    assert verify_image_files(paths, cache) == 0  # unchanged: not decoded again
    paths[0].write_bytes(b"not an image")
    os.utime(paths[0], ns=(time.time_ns(), time.time_ns() + 10**9))
    with pytest.raises(ImageReadError, match=str(paths[0])):
        verify_image_files(paths, cache)


@pytest.fixture()
def checkpoint(tmp_path: Path) -> Path:
    model = create_model("resnet_small", num_classes=2, in_channels=3, image_size=28)
    save_checkpoint(tmp_path / "ck" / "model", model, {"class_names": ["a", "b"]})
    return tmp_path / "ck" / "model.json"


def _edit(sidecar: Path, change) -> None:
    meta = json.loads(sidecar.read_text())
    change(meta)
    sidecar.write_text(json.dumps(meta))


def test_extra_model_key_names_the_key_and_the_allowed_ones(checkpoint: Path) -> None:
    _edit(checkpoint, lambda meta: meta["model"].update(pretrained=True, depth=3))
    with pytest.raises(ValueError) as error:
        load_checkpoint(checkpoint)
    assert str(checkpoint) in str(error.value) and "['depth', 'pretrained']" in str(error.value)
    assert "allowed: name, num_classes, in_channels, image_size" in str(error.value)


def test_weights_file_outside_the_checkpoint_folder_is_refused(checkpoint: Path) -> None:
    (checkpoint.parent.parent / "x").write_bytes(b"weights elsewhere")
    for escape in ("../x", "/etc/passwd", "sub/model.safetensors", ""):
        _edit(checkpoint, lambda meta, escape=escape: meta.update(weights_file=escape))
        with pytest.raises(ValueError, match=f"{checkpoint}: weights_file must be a file name"):
            read_meta(checkpoint)


def test_non_utf8_sidecar_names_the_file(checkpoint: Path) -> None:
    checkpoint.write_bytes(b'{"format": "\xff\xfe"}')
    with pytest.raises(ValueError, match=f"{checkpoint}: not UTF-8"):
        read_meta(checkpoint)


def test_malformed_yaml_names_the_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "train.yaml"
    path.write_text("epochs: 2\nlr: [0.1\nseed: 3\n")
    with pytest.raises(ConfigError) as error:
        build_config(TrainConfig, path)
    assert f"config file {path}, line 3" in str(error.value) and "<unicode string>" not in str(error.value)
    path.write_bytes(b"epochs: \xff\n")
    with pytest.raises(ConfigError, match=f"config file {path} is not UTF-8"):
        build_config(TrainConfig, path)
