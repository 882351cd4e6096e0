"""Rebuild a checkpoint's dataset splits from its sidecar meta: :func:`splits_for_checkpoint`.

Used by ``medprune evaluate``, ``medprune score`` and the sweep (and through it ``medprune prune``), so that all of
them re-create the data a model was trained on the same way.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from medprune.config import ConfigError

if TYPE_CHECKING:
    from medprune.data import DatasetSplits

logger = logging.getLogger(__name__)

__all__ = ["recorded_dataset_name", "splits_for_checkpoint"]

#: ``train_config`` keys passed on to :func:`medprune.data.load_dataset` to re-create the training split.
SPLIT_KEYS: tuple[str, ...] = ("size", "val_fraction", "test_fraction", "seed", "study_type")


def recorded_dataset_name(meta: dict[str, Any]) -> str | None:
    """The dataset a checkpoint was trained on: ``meta["dataset"]["name"]``, else ``train_config["dataset"]``."""
    recorded = meta.get("dataset") if isinstance(meta.get("dataset"), dict) else {}
    return recorded.get("name") or (meta.get("train_config") or {}).get("dataset")


def splits_for_checkpoint(
    meta: dict[str, Any],
    *,
    dataset: str | None = None,
    data_root: str | None = None,
    label: str = "the checkpoint",
    dataset_hint: str = "dataset=<name>",
    override_is_same_data: bool = False,
) -> DatasetSplits:
    """The dataset splits a checkpoint was trained on, re-created from its sidecar meta (no augmentation).

    The dataset name is ``dataset``, else the one recorded in ``meta["dataset"]["name"]``, else
    ``meta["train_config"]["dataset"]``. Image size and channels are the checkpoint's. The recorded split parameters
    (``size``, ``val_fraction``, ``test_fraction``, ``seed``, ``study_type``) are used when the dataset is the
    recorded one, and the recorded fingerprint is then checked (a mismatch is logged as a warning).

    Args:
        meta: the checkpoint's sidecar (as from :func:`medprune.checkpoint.load_checkpoint`).
        dataset: dataset name overriding the recorded one.
        data_root: data folder; ``None`` means the training run's (``train_config["data_root"]``).
        label: how messages name the checkpoint (``"the checkpoint"``, ``"checkpoint runs/x/model.safetensors"``).
        dataset_hint: how messages tell the user to pass a dataset (``"dataset=<name>"``, ``"--dataset NAME"``).
        override_is_same_data: ``True``: an explicit ``dataset`` is taken to be the training data under another
            name, so the recorded split parameters apply to it as well, and the fingerprint is checked only when no
            ``dataset`` is given. ``False``: they apply (and the check is made) only when the name equals the
            recorded one.

    Raises:
        ConfigError: no dataset given nor recorded.
        ValueError: the dataset's class names differ from the checkpoint's.
    """
    from medprune.data import load_dataset

    recorded = meta.get("dataset") if isinstance(meta.get("dataset"), dict) else {}
    trained = meta.get("train_config") or {}
    recorded_name = recorded_dataset_name(meta)
    name = dataset or recorded_name
    if not name:
        raise ConfigError(f"{label} records no dataset; pass {dataset_hint}")
    same = dataset is None if override_is_same_data else name == recorded_name
    kwargs = {k: trained[k] for k in SPLIT_KEYS if k in trained}
    root = data_root if data_root is not None else trained.get("data_root")
    splits = load_dataset(
        name,
        root,
        image_size=int(meta["image_size"]),
        channels=int(meta["in_channels"]),
        augment=False,
        **(kwargs if same or override_is_same_data else {}),
    )
    if list(splits.class_names) != [str(c) for c in meta["class_names"]]:
        raise ValueError(
            f"dataset {name!r} has classes {splits.class_names} but {label} was trained on {meta['class_names']}; "
            f"pass the right dataset ({dataset_hint})"
        )
    fingerprint = recorded.get("fingerprint")
    if same and fingerprint and fingerprint != splits.fingerprint:
        logger.warning(
            "dataset %s (fingerprint %s) differs from the one %s was trained on (%s)",
            name,
            splits.fingerprint[:12],
            label,
            fingerprint[:12],
        )
    return splits
