"""Samples and splits: :class:`ImageDataset` (labels in memory, images decoded on read) and :class:`DatasetSplits`.

An :class:`ImageDataset` is a view (``indices``) on an :class:`ImageStore` — uint8 arrays in memory
(:class:`ArrayStore`, MedMNIST) or image files (:class:`FileStore`) — plus one transform. ``subset`` and
``with_transform`` return new views on the same store; nothing is copied.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from medprune.data.errors import DatasetError, ImageReadError
from medprune.data.transforms import ImageTransform, build_transform, single_thread

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".webp")
_GREY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}


class ImageStore(Protocol):
    """Where images come from: ``load(j)`` gives image ``j`` as a uint8 C×H×W tensor (C = 1 or 3)."""

    def __len__(self) -> int: ...

    def load(self, j: int) -> Tensor: ...

    def source(self, j: int) -> str: ...


class ArrayStore:
    """Images held in memory as one uint8 N×C×H×W tensor (C = 1 or 3).

    Args:
        images: uint8 array N×H×W (grey) or N×H×W×3 (RGB), or a tensor already N×C×H×W.
        origin: how :meth:`source` names sample ``j``: ``f"{origin}[{j}]"``, e.g. ``"x.npz[train]"``.
    """

    def __init__(self, images: np.ndarray | Tensor, origin: str) -> None:
        if isinstance(images, np.ndarray):
            if images.dtype != np.uint8:
                raise DatasetError(f"{origin}: images must be uint8, got {images.dtype}")
            if images.ndim == 3:
                images = images[:, None]
            elif images.ndim == 4 and images.shape[-1] in (1, 3):
                images = images.transpose(0, 3, 1, 2)
            else:
                raise DatasetError(f"{origin}: expected images N×H×W or N×H×W×3, got shape {images.shape}")
            images = torch.from_numpy(np.ascontiguousarray(images))
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] not in (1, 3):
            raise DatasetError(f"{origin}: expected a uint8 N×C×H×W tensor (C 1 or 3), got {tuple(images.shape)}")
        self.images = images
        self.origin = origin

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def load(self, j: int) -> Tensor:
        return self.images[j]

    def source(self, j: int) -> str:
        return f"{self.origin}[{j}]"


class FileStore:
    """Image files decoded with PIL on every read: grey files give 1 channel, anything else 3 (RGB).

    A file that cannot be decoded raises :class:`ImageReadError` naming it (at first read; use
    :func:`verify_images` to check all files up front).
    """

    def __init__(self, paths: Sequence[str | Path]) -> None:
        self.paths = [str(p) for p in paths]

    def __len__(self) -> int:
        return len(self.paths)

    def load(self, j: int) -> Tensor:
        return read_image(self.paths[j])

    def source(self, j: int) -> str:
        return self.paths[j]


def read_image(path: str | Path) -> Tensor:
    """Decode one image file to a uint8 C×H×W tensor: 1 channel for grey images, else 3 (RGB; alpha dropped).

    Raises:
        ImageReadError: the file is missing, truncated, corrupt or not an image; the message names it.
    """
    try:
        with Image.open(path) as image:
            image.load()
            if image.mode in _GREY_MODES:
                if image.mode in ("I", "F") or image.mode.startswith("I;16"):
                    array = np.asarray(image, dtype=np.float64)
                    peak = 65535.0 if array.max(initial=0) > 255 else 255.0
                    array = np.clip(array / peak * 255.0 + 0.5, 0, 255).astype(np.uint8)
                else:
                    array = np.asarray(image.convert("L"), dtype=np.uint8)
                return torch.from_numpy(array.copy())[None]
            array = np.asarray(image.convert("RGB"), dtype=np.uint8)
    except Exception as error:  # PIL raises OSError, ValueError, SyntaxError, DecompressionBombError, ...
        raise ImageReadError(f"cannot read image {path}: {type(error).__name__}: {error}") from error
    return torch.from_numpy(array.transpose(2, 0, 1).copy())


class ImageDataset(Dataset):
    """Labelled images of one split: ``dataset[i] -> (float32 C×H×W normalised, int label)``.

    Attributes:
        labels: int64 array, one label per sample, readable without decoding any image.
        class_names: names of the labels ``0 .. len(class_names) - 1``.
        image_size: side of the returned images.
        channels: channels of the returned images (1 or 3).
        train: whether the training transform is used.
        augment: whether the training transform augments (``False``: it equals the eval transform).
    """

    def __init__(
        self,
        store: ImageStore,
        labels: np.ndarray | Sequence[int],
        class_names: Sequence[str],
        *,
        image_size: int,
        channels: int = 3,
        train: bool = False,
        augment: bool = True,
        indices: np.ndarray | Sequence[int] | None = None,
    ) -> None:
        self.store = store
        self.class_names = list(class_names)
        if indices is None:
            indices = np.arange(len(store), dtype=np.int64)
        self.indices = np.asarray(indices, dtype=np.int64)
        all_labels = np.asarray(labels)
        if all_labels.ndim != 1 or len(all_labels) != len(store):
            raise DatasetError(f"need one label per stored image: {len(store)} images, labels {all_labels.shape}")
        if len(self.indices) and (self.indices.min() < 0 or self.indices.max() >= len(store)):
            raise DatasetError(f"indices out of range 0..{len(store) - 1}")
        self._all_labels = all_labels.astype(np.int64)
        self.labels = self._all_labels[self.indices]
        bad = np.flatnonzero((self.labels < 0) | (self.labels >= len(self.class_names)))
        if len(bad):
            i = int(bad[0])
            raise DatasetError(
                f"label {int(self.labels[i])} of {store.source(int(self.indices[i]))} is out of range: "
                f"{len(self.class_names)} classes {self.class_names} ({len(bad)} bad labels in all)"
            )
        self.image_size = image_size
        self.channels = channels
        self.train = bool(train)
        self.augment = bool(augment)
        self.transform: ImageTransform = build_transform(image_size, channels, self.train and self.augment)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        j = int(self.indices[i])
        with single_thread():
            return self.transform(self.store.load(j)), int(self._all_labels[j])

    def __getitems__(self, positions: list[int]) -> list[tuple[Tensor, int]]:
        """Several samples at once (``DataLoader`` calls this per batch): in-memory images are transformed as one
        batch, each with its own random augmentation, which is many times faster than one by one."""
        js = self.indices[np.asarray(positions, dtype=np.int64)]
        labels = self._all_labels[js].tolist()
        if isinstance(self.store, ArrayStore) and len(js) > 1:
            with single_thread():
                batch = self.transform.batch(self.store.images.index_select(0, torch.from_numpy(js)))
            return list(zip(batch.unbind(0), labels))
        with single_thread():
            return [(self.transform(self.store.load(int(j))), label) for j, label in zip(js, labels)]

    def source(self, i: int) -> str:
        """Where sample ``i`` comes from: a file path, or ``'file.npz[split][j]'``."""
        return self.store.source(int(self.indices[i]))

    def _view(self, indices: np.ndarray, train: bool) -> ImageDataset:
        return ImageDataset(
            self.store,
            self._all_labels,
            self.class_names,
            image_size=self.image_size,
            channels=self.channels,
            train=train,
            augment=self.augment,
            indices=indices,
        )

    def with_transform(self, train: bool) -> ImageDataset:
        """The same samples with the training (``True``) or evaluation (``False``) transform."""
        return self._view(self.indices, train)

    def subset(self, indices: Sequence[int] | np.ndarray | Tensor) -> ImageDataset:
        """The samples at positions ``indices`` of this dataset (labels, sources and transform follow)."""
        idx = np.asarray(indices.cpu() if isinstance(indices, Tensor) else indices, dtype=np.int64).reshape(-1)
        if len(idx) and (idx.min() < -len(self) or idx.max() >= len(self)):
            raise IndexError(f"subset indices out of range for a dataset of {len(self)} samples")
        return self._view(self.indices[idx], self.train)

    def class_counts(self) -> np.ndarray:
        """Samples per class, int64 array of length ``len(class_names)``."""
        return np.bincount(self.labels, minlength=len(self.class_names)).astype(np.int64)

    def __repr__(self) -> str:
        return (
            f"ImageDataset({len(self)} samples, {len(self.class_names)} classes, {self.channels}×{self.image_size}"
            f"×{self.image_size}, train={self.train}, augment={self.augment})"
        )


def stack_samples(
    dataset: ImageDataset, indices: Sequence[int] | np.ndarray | Tensor, *, augment: bool = False
) -> tuple[Tensor, Tensor]:
    """Images N×C×H×W and int64 labels N of the samples at ``indices``.

    Uses the evaluation transform (deterministic) unless ``augment=True`` — what scoring and sample selection want
    even when handed the training split.

    >>> # images, labels = stack_samples(splits.train, [0, 5, 9])
    """
    view = dataset.subset(indices).with_transform(train=augment)
    if len(view) == 0:
        return torch.empty(0, view.channels, view.image_size, view.image_size), torch.empty(0, dtype=torch.int64)
    chunks = [
        torch.stack([image for image, _ in view.__getitems__(list(range(start, min(start + 512, len(view)))))])
        for start in range(0, len(view), 512)
    ]  # in-memory images are transformed 512 at a time (batched), files one by one
    return torch.cat(chunks), torch.from_numpy(view.labels.copy())


def verify_images(dataset: ImageDataset) -> None:
    """Decode every image of ``dataset`` once; raise one :class:`ImageReadError` listing all unreadable files."""
    bad: list[str] = []
    for i in range(len(dataset)):
        try:
            dataset.store.load(int(dataset.indices[i]))
        except ImageReadError as error:
            bad.append(str(error))
    if bad:
        more = f" (and {len(bad) - 10} more)" if len(bad) > 10 else ""
        raise ImageReadError(f"{len(bad)} unreadable image(s): " + "; ".join(bad[:10]) + more)


@dataclass
class DatasetSplits:
    """Train/val/test splits of one dataset and what a model needs to know about them.

    Attributes:
        train: training split, training transform (augmentation unless ``augment=False``).
        val: validation split, evaluation transform.
        test: test split, evaluation transform.
        class_names: label ``k`` is ``class_names[k]``.
        in_channels: channels fed to the model (1 or 3).
        image_size: side of the (square) images fed to the model.
        name: dataset name as given to :func:`~medprune.data.load_dataset` (normalised).
        fingerprint: sha256 over the source file(s) or listing and the split parameters.
    """

    train: ImageDataset
    val: ImageDataset
    test: ImageDataset
    class_names: list[str]
    in_channels: int
    image_size: int
    name: str
    fingerprint: str

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def summary(self) -> dict:
        """JSON-friendly counts: ``{"name", "fingerprint", ..., "splits": {split: {"total", "per_class"}}}``."""
        splits = {}
        for split_name in ("train", "val", "test"):
            dataset: ImageDataset = getattr(self, split_name)
            counts = dataset.class_counts()
            splits[split_name] = {
                "total": len(dataset),
                "per_class": {name: int(c) for name, c in zip(self.class_names, counts)},
            }
        return {
            "name": self.name,
            "fingerprint": self.fingerprint,
            "class_names": list(self.class_names),
            "in_channels": self.in_channels,
            "image_size": self.image_size,
            "splits": splits,
        }
