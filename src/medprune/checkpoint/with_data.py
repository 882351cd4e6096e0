"""A checkpoint with the data it was trained on: :func:`load_with_splits`, :func:`splits_for_checkpoint`.

Used by ``medprune evaluate``, ``score``, ``prune``, ``sweep`` and the report, so that all of them load a model and
re-create the data it was trained on the same way.
"""

from __future__ import annotations

import logging
from typing import Any, NamedTuple

import torch
from torch import nn

from medprune.checkpoint.io import load_checkpoint
from medprune.config import ConfigError
from medprune.data import DatasetSplits, load_dataset

logger = logging.getLogger(__name__)

__all__ = ["CheckpointData", "load_with_splits", "recorded_dataset_name", "splits_for_checkpoint"]

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
    augment: bool = False,
) -> DatasetSplits:
    """The dataset splits a checkpoint was trained on, re-created from its sidecar meta (no augmentation by default).

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
        augment: give the training split the training augmentation (for fine-tuning); evaluation views never augment.

    Raises:
        ConfigError: no dataset given nor recorded.
        ValueError: the dataset's class names differ from the checkpoint's.
    """
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
        augment=augment,
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


class CheckpointData(NamedTuple):
    """A loaded checkpoint: the model (eval mode, on the requested device), its sidecar meta and its dataset splits."""

    model: nn.Module
    meta: dict[str, Any]
    splits: DatasetSplits


def load_with_splits(
    path: str,
    *,
    device: str | torch.device = "cpu",
    dataset: str | None = None,
    data_root: str | None = None,
    label: str = "the checkpoint",
    dataset_hint: str = "dataset=<name>",
    override_is_same_data: bool = False,
    augment: bool = False,
) -> CheckpointData:
    """Load the checkpoint at ``path`` and re-create its dataset splits (:func:`splits_for_checkpoint`'s keywords)."""
    model, meta = load_checkpoint(path, device=device)
    splits = splits_for_checkpoint(
        meta,
        dataset=dataset,
        data_root=data_root,
        label=label,
        dataset_hint=dataset_hint,
        override_is_same_data=override_is_same_data,
        augment=augment,
    )
    return CheckpointData(model, meta, splits)
