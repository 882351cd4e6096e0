"""Datasets: one entry point, :func:`load_dataset`, giving train/val/test :class:`ImageDataset` splits.

>>> "pneumoniamnist" in available_datasets() and "kvasir" in available_datasets()
True
"""

from __future__ import annotations

from medprune.data.api import available_datasets, load_dataset
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
from medprune.data.transforms import GREY_MEAN, GREY_STD, IMAGENET_MEAN, IMAGENET_STD, ImageTransform, build_transform

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
