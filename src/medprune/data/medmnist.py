"""MedMNIST (v2/v3, 2-D, single-label subsets) from the official ``.npz`` files, kept in memory as uint8 tensors.

Files: ``{flag}.npz`` (28 px) or ``{flag}_{size}.npz`` (MedMNIST+ 64/128/224) at ``<root>/<file>`` or
``<root>/<flag>/<file>``. Root: the argument, else ``$MEDPRUNE_DATA``, else the ``medmnist`` package's default root.
Missing files are downloaded with the ``medmnist`` package when the network is reachable; offline, the error says
which file to put where. Official train/val/test splits; class names from ``medmnist.INFO[flag]["label"]``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from medprune.data.base import ArrayStore
from medprune.data.errors import DatasetError, DatasetNotFoundError
from medprune.data.registry import LoadOptions, RawDataset, RawSplit
from medprune.data.validate import integer_labels, npz_array
from medprune.provenance import file_sha256, fingerprint, online

logger = logging.getLogger(__name__)

MEDMNIST_SIZES = (28, 64, 128, 224)
_DOWNLOAD_HOST = "zenodo.org"


def _info() -> dict:
    try:
        from medmnist import INFO
    except ImportError as error:
        raise DatasetError(
            "MedMNIST datasets need the medmnist package: pip install 'medprune[medmnist]' (or medmnist)"
        ) from error
    return INFO


def medmnist_flags() -> list[str]:
    """The 2-D single-label MedMNIST flags (empty when the ``medmnist`` package is not installed)."""
    try:
        info = _info()
    except DatasetError:
        return []
    return sorted(flag for flag, item in info.items() if _usable(flag, item) is None)


def is_medmnist_flag(name: str) -> bool:
    """Whether ``name`` is any MedMNIST flag (usable or not), e.g. ``pneumoniamnist`` or ``chestmnist``."""
    try:
        return name in _info()
    except DatasetError:
        return name.endswith("mnist") or name.endswith("mnist3d")


def _usable(flag: str, item: dict) -> str | None:
    """Why ``flag`` cannot be used (``None`` when it can)."""
    if flag.endswith("3d"):
        return "it is a 3-D dataset; medprune handles 2-D images only"
    if "multi-label" in item["task"]:
        return f"its task is {item['task']!r}; medprune handles single-label classification only"
    return None


def medmnist_filename(flag: str, size: int) -> str:
    """``pneumoniamnist.npz`` for 28 px, ``pneumoniamnist_224.npz`` for 224 px."""
    return f"{flag}.npz" if size == 28 else f"{flag}_{size}.npz"


def _default_medmnist_root() -> Path:
    try:
        from medmnist.info import DEFAULT_ROOT
    except ImportError:  # pragma: no cover - medmnist absent is reported by _info()
        DEFAULT_ROOT = os.path.join(os.path.expanduser("~"), ".medmnist")
    return Path(DEFAULT_ROOT)


def find_medmnist_file(flag: str, size: int, root: Path | None, download: bool = True) -> Path:
    """Path of the ``.npz`` file, downloading it into ``root`` when absent and the network is reachable."""
    info = _info()[flag]
    root_dir = root if root is not None else _default_medmnist_root()
    filename = medmnist_filename(flag, size)
    candidates = [root_dir / filename, root_dir / flag / filename]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    url = info[f"url{'' if size == 28 else f'_{size}'}"]
    where = f"put {filename} (from {url}) at {candidates[0]} or {candidates[1]}"
    if not download or not online(_DOWNLOAD_HOST):
        raise DatasetNotFoundError(
            f"MedMNIST file {filename} not found (looked for {candidates[0]} and {candidates[1]}) and the download "
            f"host {_DOWNLOAD_HOST} cannot be reached: {where}, "
            "or pass --data-root (data_root= from Python) / set MEDPRUNE_DATA to its folder"
        )
    import medmnist

    logger.info("downloading %s into %s", filename, root_dir)
    try:
        root_dir.mkdir(parents=True, exist_ok=True)
        getattr(medmnist, info["python_class"])(split="test", root=str(root_dir), size=size, download=True)
    except Exception as error:  # medmnist wraps every failure in RuntimeError; mkdir may raise OSError
        raise DatasetNotFoundError(f"downloading {filename} into {root_dir} failed ({error}); {where}") from error
    return candidates[0]


def load_medmnist(flag: str, root: Path | None, options: LoadOptions) -> RawDataset:
    """Official splits of MedMNIST subset ``flag`` (see the module docstring)."""
    info = _info()
    if flag not in info:
        raise DatasetError(f"unknown MedMNIST flag {flag!r}; valid: {', '.join(medmnist_flags())}")
    reason = _usable(flag, info[flag])
    if reason is not None:
        raise DatasetError(f"MedMNIST subset {flag!r} is not supported: {reason}")
    size = 28 if options.size is None else options.size
    if size not in MEDMNIST_SIZES:
        raise DatasetError(f"MedMNIST size must be one of {MEDMNIST_SIZES}, got {options.size!r}")
    path = find_medmnist_file(flag, size, root)
    class_names = [info[flag]["label"][str(k)] for k in range(len(info[flag]["label"]))]
    splits = {}
    try:
        archive = np.load(path)
    except Exception as error:
        raise DatasetError(f"cannot read MedMNIST file {path}: {type(error).__name__}: {error}") from error
    with archive:
        for split in ("train", "val", "test"):
            images = npz_array(archive, f"{split}_images", path)
            labels = npz_array(archive, f"{split}_labels", path)
            if labels.ndim == 2 and labels.shape[1] != 1:
                raise DatasetError(f"{path}: {split}_labels is {labels.shape}, multi-label; single-label only")
            labels = integer_labels(labels.reshape(-1), f"{path}: {split}_labels")
            if len(labels) != len(images):
                raise DatasetError(f"{path}: {len(images)} {split}_images but {len(labels)} {split}_labels")
            bad = np.flatnonzero((labels < 0) | (labels >= len(class_names)))
            if len(bad):
                raise DatasetError(
                    f"{path}: {split}_labels[{int(bad[0])}] = {int(labels[bad[0]])} is out of range for the "
                    f"{len(class_names)} classes {class_names} ({len(bad)} bad labels)"
                )
            splits[split] = RawSplit(ArrayStore(images, origin=f"{path}[{split}]"), labels)
    digest = fingerprint(["medmnist", flag, size, "official-splits", file_sha256(path, cache=True)])
    return RawDataset(splits["train"], splits["val"], splits["test"], class_names, digest)
