"""The one entry point: :func:`load_dataset` (name → :class:`DatasetSplits`) and :func:`available_datasets`."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from medprune.data import csv_layouts as _csv_layouts  # noqa: F401  (registers fetal_planes, mura)
from medprune.data import folders as _folders  # noqa: F401  (registers folder, kvasir, cpn)
from medprune.data.base import DatasetSplits, ImageDataset
from medprune.data.errors import DatasetError
from medprune.data.medmnist import is_medmnist_flag, load_medmnist, medmnist_flags
from medprune.data.registry import ENV_ROOT, LoadOptions, RawSplit, default_root, layouts
from medprune.data.splitting import check_fraction

logger = logging.getLogger(__name__)

_ALIASES = {"fetal_planes_db": "fetal_planes", "fetal": "fetal_planes", "mura_v1.1": "mura"}


def available_datasets() -> list[str]:
    """Names accepted by :func:`load_dataset`: the file layouts, then every 2-D single-label MedMNIST flag."""
    return sorted(layouts()) + medmnist_flags()


def _normalise_name(name: str) -> str:
    if not isinstance(name, str) or not name.strip():
        raise DatasetError(f"dataset name must be a non-empty string, got {name!r}")
    key = name.strip().lower().replace("-", "_")
    return _ALIASES.get(key, key)


def load_dataset(
    name: str,
    root: str | Path | None = None,
    *,
    image_size: int = 28,
    channels: int = 3,
    size: int | None = None,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    seed: int = 0,
    augment: bool = True,
    study_type: str | None = None,
) -> DatasetSplits:
    """Load a dataset as train/val/test splits with class names.

    Args:
        name: a layout (``folder``, ``kvasir``, ``cpn``, ``fetal_planes``, ``mura``) or a MedMNIST flag
            (``pneumoniamnist``, ``breastmnist``, ...); case-insensitive. See :func:`available_datasets`.
        root: the dataset's folder (layouts also look in ``<root>/<name>``). Default: ``$MEDPRUNE_DATA/<name>`` for
            layouts; for MedMNIST ``$MEDPRUNE_DATA``, else the ``medmnist`` package's default root.
        image_size: side of the square images fed to the model (images are resized).
        channels: 3 (grey images repeated, ImageNet mean/std) or 1 (RGB converted to grey, grey mean/std).
        size: MedMNIST file resolution (28, 64, 128 or 224; default 28). MedMNIST only.
        val_fraction: share of samples put in val. Folders without given splits: of the whole dataset (stratified);
            official train/test splits (FETAL_PLANES_DB, MURA, folders with train/test): of the training images,
            carved patient-disjoint where patients are known. Unused by MedMNIST (official val split).
        test_fraction: share of the whole dataset put in test, for folders without given splits only.
        seed: seed of every carved split.
        augment: ``False`` gives the training split the evaluation transform.
        study_type: MURA only: keep one study type (``XR_WRIST`` or ``wrist``).

    Returns:
        :class:`DatasetSplits`; ``fingerprint`` changes with the source files or split parameters.

    Raises:
        DatasetError: unknown name, bad parameter or bad content; DatasetNotFoundError (also a
            ``FileNotFoundError``) when files are missing, saying what to put where.

    >>> splits = load_dataset("breastmnist", image_size=28)  # doctest: +SKIP
    >>> splits.class_names, len(splits.train)  # doctest: +SKIP
    (['malignant', 'normal, benign'], 546)
    """
    key = _normalise_name(name)
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise DatasetError(f"image_size must be a positive int, got {image_size!r}")
    if channels not in (1, 3) or isinstance(channels, bool):
        raise DatasetError(f"channels must be 1 or 3, got {channels!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise DatasetError(f"seed must be a non-negative int, got {seed!r}")
    check_fraction("val_fraction", val_fraction)
    check_fraction("test_fraction", test_fraction)
    if val_fraction + test_fraction >= 1.0:
        raise DatasetError(f"val_fraction + test_fraction must be < 1, got {val_fraction} + {test_fraction}")
    options = LoadOptions(image_size, channels, size, val_fraction, test_fraction, seed, bool(augment), study_type)
    registered = layouts()
    is_medmnist = key not in registered and is_medmnist_flag(key)
    if key not in registered and not is_medmnist:
        raise DatasetError(f"unknown dataset {name!r}; valid datasets: {', '.join(available_datasets())}")
    if size is not None and not is_medmnist:
        raise DatasetError(f"size={size!r} applies to MedMNIST files only; {key!r} images are resized to image_size")
    if study_type is not None and key != "mura":
        raise DatasetError(f"study_type={study_type!r} applies to 'mura' only, not {key!r}")
    if is_medmnist:
        if size is None and image_size > 28:
            logger.info(
                "%s: 28-px file resized to %d px; --set size=64/128/224 reads the MedMNIST+ files", key, image_size
            )
        raw = load_medmnist(key, default_root(root), options)
    else:
        env = os.environ.get(ENV_ROOT)
        layout_root = Path(root).expanduser() if root is not None else (Path(env) / key if env else None)
        raw = registered[key](layout_root, options)

    def make(split: RawSplit, train: bool) -> ImageDataset:
        return ImageDataset(
            split.store,
            split.labels,
            raw.class_names,
            image_size=image_size,
            channels=channels,
            train=train,
            augment=augment,
            indices=split.indices,
        )

    splits = DatasetSplits(
        train=make(raw.train, True),
        val=make(raw.val, False),
        test=make(raw.test, False),
        class_names=list(raw.class_names),
        in_channels=channels,
        image_size=image_size,
        name=key,
        fingerprint=raw.fingerprint,
    )
    for note in raw.notes:
        logger.warning("%s: %s", key, note)
    logger.info(
        "dataset %s: train %d / val %d / test %d, %d classes, %d×%d×%d, fingerprint %s",
        key,
        len(splits.train),
        len(splits.val),
        len(splits.test),
        len(raw.class_names),
        channels,
        image_size,
        image_size,
        raw.fingerprint[:12],
    )
    return splits
