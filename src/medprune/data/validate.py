"""Checks run before any work, so bad data fails in seconds naming the file, not after an epoch.

- :func:`npz_array` and :func:`integer_labels`: arrays read from an ``.npz`` without pickles (an object array is
  refused naming the file and array) and labels that are whole numbers (``0.5`` is refused, never truncated).
- :func:`check_splits`: every split a command needs holds samples; an empty one is named with where it came from.
- :func:`verify_image_files`: a fast decode of every image file (JPEGs at reduced scale: every byte is still read),
  remembered by a fingerprint of the paths, sizes and modification times, so an unchanged dataset is checked once.
- :func:`validate_splits`: all of it for a :class:`~medprune.data.DatasetSplits`.

>>> integer_labels(np.array([0.0, 1.0, 2.0]), "x.npz: train_labels")
array([0, 1, 2])
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from medprune.data.base import ArrayStore, DatasetSplits, FileStore, ImageDataset
from medprune.data.errors import DatasetError, ImageReadError

logger = logging.getLogger(__name__)

__all__ = [
    "SPLITS",
    "ENV_CACHE",
    "cache_dir",
    "npz_array",
    "integer_labels",
    "split_origin",
    "check_splits",
    "image_problem",
    "verify_image_files",
    "validate_splits",
]

SPLITS: tuple[str, ...] = ("train", "val", "test")
#: Environment variable naming medprune's cache folder (default: ``$XDG_CACHE_HOME/medprune`` or ``~/.cache/medprune``).
ENV_CACHE = "MEDPRUNE_CACHE"
_DRAFT_SIDE = 64


def cache_dir() -> Path:
    """medprune's cache folder: ``$MEDPRUNE_CACHE``, else ``$XDG_CACHE_HOME/medprune``, else ``~/.cache/medprune``."""
    if os.environ.get(ENV_CACHE):
        return Path(os.environ[ENV_CACHE]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "medprune"


def npz_array(archive: Any, key: str, path: str | Path) -> np.ndarray:
    """``archive[key]`` of an opened ``np.load`` archive, with every failure a :class:`DatasetError` naming both.

    Raises:
        DatasetError: the array is missing, holds Python objects (never unpickled: that can run code) or is damaged.
    """
    if key not in archive.files:
        raise DatasetError(f"{path} has no array {key!r} (arrays: {', '.join(archive.files)})")
    try:
        return archive[key]
    except ValueError as error:
        if "allow_pickle" in str(error) or "Object arrays" in str(error):
            raise DatasetError(
                f"{path}: array {key!r} holds Python objects (dtype object); medprune never unpickles data (it can run "
                "code): save it as an integer (labels) or uint8 (images) array"
            ) from None
        raise DatasetError(f"{path}: array {key!r} cannot be read: {error}") from None
    except Exception as error:  # zipfile.BadZipFile, zlib.error, EOFError, OSError on a damaged member
        raise DatasetError(f"{path}: array {key!r} cannot be read ({type(error).__name__}: {error})") from None


def integer_labels(labels: np.ndarray, where: str) -> np.ndarray:
    """``labels`` as int64, refusing anything that is not a whole number (never truncates ``0.5`` to ``0``).

    Args:
        labels: any numeric array.
        where: how the message names the array, e.g. ``"x.npz: train_labels"``.

    Raises:
        DatasetError: non-numeric dtype, NaN/inf or a fractional value (the first one is named).
    """
    labels = np.asarray(labels)
    if labels.dtype.kind in "iub":
        return labels.astype(np.int64)
    if labels.dtype.kind != "f":
        raise DatasetError(f"{where}: labels must be integers, got dtype {labels.dtype}")
    flat = labels.reshape(-1)
    bad = np.flatnonzero(~np.isfinite(flat) | (flat != np.round(flat)))
    if len(bad):
        i = int(bad[0])
        raise DatasetError(
            f"{where}: labels must be whole numbers (class indices), but label [{i}] is {flat[i]!r} "
            f"({len(bad)} such labels); medprune does not round or truncate labels"
        )
    return labels.astype(np.int64)


def split_origin(dataset: ImageDataset) -> str:
    """Where a split's samples come from: ``file.npz[test]`` for arrays, the common folder for image files."""
    store = dataset.store
    if isinstance(store, ArrayStore):
        return store.origin
    if isinstance(store, FileStore) and store.paths:
        return os.path.commonpath(store.paths) if len(store.paths) > 1 else store.paths[0]
    return type(store).__name__


def check_splits(splits: DatasetSplits, required: Iterable[str] = SPLITS) -> None:
    """Refuse empty splits among ``required``, naming the split, the dataset and where its samples come from.

    Raises:
        DatasetError: a required split holds no samples, or ``required`` names an unknown split.
    """
    for name in required:
        if name not in SPLITS:
            raise DatasetError(f"unknown split {name!r}; valid splits: {', '.join(SPLITS)}")
        dataset: ImageDataset = getattr(splits, name)
        if len(dataset) == 0:
            raise DatasetError(
                f"dataset {splits.name!r}: the {name} split is empty (source: {split_origin(dataset)}); it needs at "
                f"least one sample (splits: {', '.join(f'{s} {len(getattr(splits, s))}' for s in SPLITS)})"
            )


def image_problem(path: str | Path) -> str | None:
    """Why an image file cannot be decoded (missing, empty, truncated, not an image), or ``None`` when it can."""
    try:
        with Image.open(path) as image:
            image.draft(image.mode, (_DRAFT_SIDE, _DRAFT_SIDE))  # JPEG: decode at 1/2..1/8 scale, reading all bytes
            image.load()
    except Exception as error:  # PIL raises OSError, ValueError, SyntaxError, DecompressionBombError, ...
        return f"{type(error).__name__}: {error}"
    return None


def _listing_digest(paths: Sequence[str]) -> str:
    digest = hashlib.sha256()
    for path in sorted(set(paths)):
        try:
            stat = os.stat(path)
            digest.update(f"{path}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
        except OSError:
            digest.update(f"{path}|missing\n".encode())
    return digest.hexdigest()


def verify_image_files(paths: Sequence[str | Path], cache: str | Path | None = None) -> int:
    """Decode every file once (fast: see :func:`image_problem`); one error lists every unreadable file.

    A successful check is remembered in ``<cache>/image-checks/<fingerprint>.json`` (fingerprint: sorted paths, sizes
    and modification times), so the same unchanged files are not decoded again.

    Args:
        paths: image files.
        cache: cache folder (default :func:`cache_dir`); an unwritable cache only costs the re-check.

    Returns:
        How many files were decoded (0 when the cache already vouched for them).

    Raises:
        ImageReadError: naming up to 10 unreadable files and how many there are.
    """
    names = [str(p) for p in paths]
    if not names:
        return 0
    marker = Path(cache if cache is not None else cache_dir()) / "image-checks" / f"{_listing_digest(names)}.json"
    if marker.is_file():
        logger.debug("images: %d files unchanged since their check (%s)", len(names), marker)
        return 0
    started = time.perf_counter()
    bad = [f"{name} ({problem})" for name in sorted(set(names)) if (problem := image_problem(name)) is not None]
    if bad:
        more = f" (and {len(bad) - 10} more)" if len(bad) > 10 else ""
        raise ImageReadError(f"{len(bad)} unreadable image(s): " + "; ".join(bad[:10]) + more)
    seconds = time.perf_counter() - started
    logger.info("images: %d files decode (checked in %.1f s)", len(set(names)), seconds)
    try:
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(json.dumps({"files": len(set(names)), "seconds": round(seconds, 3)}) + "\n")
    except OSError as error:
        logger.debug("could not remember the image check in %s: %s", marker, error)
    return len(set(names))


def validate_splits(
    splits: DatasetSplits,
    required: Iterable[str] = SPLITS,
    *,
    images: bool = True,
    cache: str | Path | None = None,
) -> None:
    """Everything checkable before work: ``required`` splits non-empty, then every image file of every split decodes.

    In-memory images (MedMNIST) were checked when loaded (dtype, shape, labels); image files are decoded once here
    (:func:`verify_image_files`, cached).

    Raises:
        DatasetError: an empty required split (named with its source).
        ImageReadError: unreadable image files (named).
    """
    check_splits(splits, required)
    if not images:
        return
    files: list[str] = []
    for name in SPLITS:
        dataset: ImageDataset = getattr(splits, name)
        if isinstance(dataset.store, FileStore):
            files.extend(dataset.store.paths[int(j)] for j in dataset.indices)
    verify_image_files(files, cache)
