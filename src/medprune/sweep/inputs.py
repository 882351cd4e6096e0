"""What a sweep reads for one checkpoint: the model with its data split as trained, the score store of its request
fields, and the clean training images BatchNorm recalibration uses. Shared by the sweep runner and by
:mod:`medprune.sweep.artifacts` (re-opening a finished sweep), so both read exactly the same inputs."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from medprune.checkpoint.with_data import CheckpointData, load_with_splits
from medprune.data import DatasetSplits, stack_samples
from medprune.data.validate import validate_splits
from medprune.recovery.recalibration import recalibration_subset
from medprune.scoring.store import ScoreStore
from medprune.sweep.config import SweepConfig

__all__ = ["load_for_sweep", "recalibration_images", "score_store"]

logger = logging.getLogger(__name__)


def load_for_sweep(path: str, config: SweepConfig) -> CheckpointData:
    """The checkpoint's model and meta, and its dataset split the way it was trained (checked by fingerprint); the
    training split and every evaluated split must hold samples and readable images. Fine-tuning reads the training
    images without augmentation, as ``medprune compress`` does by default, so recovered curves match what it ships."""
    loaded = load_with_splits(
        path,
        augment=False,
        device=config.device,
        dataset=config.dataset,
        data_root=config.data_root,
        label=f"checkpoint {path}",
        override_is_same_data=True,
    )
    validate_splits(loaded.splits, ["train", *config.splits])
    return loaded


def score_store(
    model: nn.Module,
    splits: DatasetSplits,
    config: SweepConfig,
    cache: Path,
    checksum: str | None = None,
    sign: str | None = None,
) -> ScoreStore:
    """The :class:`ScoreStore` of one swept model: its training split and the sweep's request fields (``sign``
    overrides the config's, for settings that aggregate otherwise). Seeds are passed per call."""
    return ScoreStore(
        model,
        splits.train,
        cache,
        n_per_class=config.scoring.n_per_class,
        seed=config.seeds[0],
        sign=sign or config.scoring.sign,
        target=config.scoring.target,
        method_options=config.method_options,
        device=config.device,
        batch_size=config.score_batch_size,
        checksum=checksum,
    )


def recalibration_images(splits: DatasetSplits, samples: int, seed: int) -> torch.Tensor:
    """``samples`` training images (evaluation transform) picked with ``seed``, stacked: the one picker of training,
    sweep and compress (:func:`medprune.recovery.recalibration.recalibration_subset`, stratified by class)."""
    train = splits.train
    if samples > len(train):
        logger.warning("recalibrate_samples=%d but the training split has %d images; using all", samples, len(train))
    picked = recalibration_subset(train, samples, seed)
    return stack_samples(picked, range(len(picked)))[0]
