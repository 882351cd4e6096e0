"""The registry of dataset layouts: each layout turns a root folder into raw train/val/test samples.

A layout loader is ``loader(root, options) -> RawDataset``; :func:`medprune.data.load_dataset` adds the transforms.
Register a new layout with ``@register_layout("name")``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medprune.data.base import ImageStore

ENV_ROOT = "MEDPRUNE_DATA"


@dataclass(frozen=True)
class LoadOptions:
    """The parameters of :func:`~medprune.data.load_dataset` that layouts may use (see its docstring)."""

    image_size: int = 28
    channels: int = 3
    size: int | None = None
    val_fraction: float = 0.1
    test_fraction: float = 0.2
    seed: int = 0
    augment: bool = True
    study_type: str | None = None


@dataclass
class RawSplit:
    """One split before transforms: the samples ``indices`` of ``store`` (all of it when ``None``) and the labels of
    every stored sample."""

    store: ImageStore
    labels: np.ndarray
    indices: np.ndarray | None = None


@dataclass
class RawDataset:
    """What a layout loader returns. ``fingerprint`` covers the source (file hash or listing) and split parameters."""

    train: RawSplit
    val: RawSplit
    test: RawSplit
    class_names: list[str]
    fingerprint: str
    notes: list[str] = field(default_factory=list)


Loader = Callable[[Path | None, LoadOptions], RawDataset]
_LAYOUTS: dict[str, Loader] = {}


def register_layout(name: str) -> Callable[[Loader], Loader]:
    """Decorator registering a layout loader under ``name`` (lower case)."""

    def decorate(loader: Loader) -> Loader:
        if name in _LAYOUTS:
            raise ValueError(f"dataset layout {name!r} is already registered")
        _LAYOUTS[name] = loader
        return loader

    return decorate


def layouts() -> dict[str, Loader]:
    """The registered layouts (a copy)."""
    return dict(_LAYOUTS)


def default_root(root: str | Path | None) -> Path | None:
    """``root`` if given, else ``$MEDPRUNE_DATA`` if set, else ``None``."""
    if root is not None:
        return Path(root).expanduser()
    env = os.environ.get(ENV_ROOT)
    return Path(env).expanduser() if env else None
