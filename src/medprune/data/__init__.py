"""Datasets: one entry point, :func:`load_dataset`, giving train/val/test :class:`ImageDataset` splits.

Layout (data flows top to bottom):

- ``api.py``: :func:`load_dataset`, :func:`available_datasets` (names: layouts + MedMNIST flags).
- ``medmnist.py``, ``folders.py`` (folder, kvasir, cpn), ``csv_layouts.py`` (fetal_planes, mura): one loader per
  layout, registered with :func:`register_layout`, each returning raw samples + split indices + a fingerprint.
- ``splitting.py``: seeded stratified and patient-disjoint splits (fingerprints: :mod:`medprune.provenance`).
- ``base.py``: :class:`ImageDataset` (a view on an in-memory or file :class:`ImageStore`), :class:`DatasetSplits`,
  :func:`stack_samples`, :func:`verify_images`.
- ``transforms.py`` / ``batch_augment.py``: the paper's transforms, per image and (for DataLoader batches of
  in-memory images) per batch; ``augmentation.py``: their settings (crop, rotation, jitter, ImageNet statistics).
- ``errors.py``: :class:`DatasetError` (a ``ValueError``), :class:`DatasetNotFoundError` (also a
  ``FileNotFoundError``), :class:`ImageReadError`.

Typical use::

    splits = load_dataset("pneumoniamnist", image_size=28)          # root: $MEDPRUNE_DATA or medmnist's default
    loader = DataLoader(splits.train, batch_size=32, shuffle=True)  # augmented; splits.val/test are not
    weights = 1.0 / splits.train.class_counts()                     # inverse class frequency
    images, labels = stack_samples(splits.train, [0, 7, 9])         # eval transform, for scoring

>>> "pneumoniamnist" in available_datasets() and "kvasir" in available_datasets()
True
"""

from __future__ import annotations

from medprune.data.api import available_datasets, load_dataset
from medprune.data.augmentation import GREY_MEAN, GREY_STD, IMAGENET_MEAN, IMAGENET_STD
from medprune.data.base import (
    ArrayStore,
    DatasetSplits,
    FileStore,
    ImageDataset,
    ImageStore,
    read_image,
    stack_samples,
    verify_images,
)
from medprune.data.errors import DatasetError, DatasetNotFoundError, ImageReadError
from medprune.data.registry import LoadOptions, RawDataset, RawSplit, register_layout
from medprune.data.transforms import ImageTransform, build_transform

__all__ = [
    "GREY_MEAN",
    "GREY_STD",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ArrayStore",
    "DatasetError",
    "DatasetNotFoundError",
    "DatasetSplits",
    "FileStore",
    "ImageDataset",
    "ImageReadError",
    "ImageStore",
    "ImageTransform",
    "LoadOptions",
    "RawDataset",
    "RawSplit",
    "available_datasets",
    "build_transform",
    "load_dataset",
    "read_image",
    "register_layout",
    "stack_samples",
    "verify_images",
]
