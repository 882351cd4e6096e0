"""``run_train(config)``: the whole training pipeline, seed → data → model →
:func:`medprune.training.loop.train` → files.

:class:`TrainConfig` and :class:`TrainResult` are defined beside the loop (:mod:`medprune.training.config`), which
records the config in every checkpoint; they are re-exported here so a run needs one import.

>>> config = TrainConfig(model="resnet_small", epochs=1, max_train_samples=64)  # doctest: +SKIP
>>> result = run_train(config)  # doctest: +SKIP
"""

from __future__ import annotations

import logging
from pathlib import Path

from torch import nn

from medprune.config import save_config
from medprune.data import DatasetSplits, load_dataset
from medprune.data.validate import validate_splits
from medprune.models import create_model, model_spec
from medprune.rundir import RunDir
from medprune.runtime import resolve_device, seed_everything
from medprune.training.config import TrainConfig, TrainResult
from medprune.training.loop import train
from medprune.training.memory import check_batch_memory

logger = logging.getLogger(__name__)

#: TrainConfig fields that may change when a run folder is reused (where it is, how the run is shown and batched);
#: ``out_dir`` is the name ``out`` had in folders recorded before.
COSMETIC: tuple[str, ...] = ("out", "out_dir", "device", "progress", "num_workers", "eval_batch_size")

__all__ = ["TrainConfig", "TrainResult", "check_memory", "load_training_data", "resolve_pretrained", "run_train"]


def resolve_pretrained(config: TrainConfig, in_channels: int) -> bool:
    """Whether to start from ImageNet weights: as configured, else only paper models on 3-channel input."""
    if config.pretrained is not None:
        return config.pretrained
    return bool(model_spec(config.model).paper) and in_channels == 3


def load_training_data(config: TrainConfig) -> DatasetSplits:
    """The dataset splits of ``config`` (with the training augmentation when ``config.augment``)."""
    splits = load_dataset(
        config.dataset,
        config.data_root,
        image_size=config.image_size,
        channels=config.channels,
        size=config.size,
        val_fraction=config.val_fraction,
        test_fraction=config.test_fraction,
        seed=config.seed,
        augment=config.augment,
        study_type=config.study_type,
    )
    counts = {name: len(getattr(splits, name)) for name in ("train", "val", "test")}
    logger.info(
        "data: %s %s, classes %s, fingerprint %s", splits.name, counts, splits.class_names, splits.fingerprint[:12]
    )
    return splits


def build_model(config: TrainConfig, splits: DatasetSplits) -> tuple[nn.Module, bool]:
    """The untrained model for ``splits``, and whether it starts from pretrained weights.

    Raises:
        ValueError: pretrained weights were required (``pretrained: true``) but cannot be loaded.
    """
    build = dict(num_classes=len(splits.class_names), in_channels=splits.in_channels, image_size=splits.image_size)
    pretrained = resolve_pretrained(config, splits.in_channels)
    try:
        model = create_model(config.model, pretrained=pretrained, **build)
    except RuntimeError as error:
        if config.pretrained:  # explicitly required
            raise ValueError(str(error)) from error
        logger.warning("pretrained weights unavailable (%s); training %s from random init", error, config.model)
        pretrained = False
        model = create_model(config.model, pretrained=False, **build)
    logger.info(
        "model: %s (pretrained=%s), %d parameters", config.model, pretrained, sum(p.numel() for p in model.parameters())
    )
    return model, pretrained


def check_memory(config: TrainConfig) -> None:
    """Refuse, before any data is read or file written, a training or evaluation batch of ``config`` whose estimated
    memory exceeds what the device has (:func:`medprune.training.memory.check_batch_memory`; the class count is not
    known before the data is read: two are assumed, a lower bound).

    Raises:
        LimitError: naming the request, the estimate and the memory available.
    """
    device = resolve_device(config.device)
    sizes = dict(num_classes=2, image_size=config.image_size, in_channels=config.channels, device=device)
    what = f"--image-size {config.image_size}"
    check_batch_memory(config.model, batch_size=config.batch_size, training=True, what=what, **sizes)
    check_batch_memory(config.model, batch_size=config.eval_batch_size, training=False, what=what, **sizes)


def run_train(config: TrainConfig) -> TrainResult:
    """Train as ``config`` says and write into ``config.out``.

    Options are checked when ``config`` is built (:class:`TrainConfig`); the folder is then taken with
    :class:`~medprune.rundir.RunDir` (one writer; another run's folder is refused unless ``config.overwrite``, which
    moves its content aside). Every split must be non-empty and every image file decodable before the first epoch.
    Writes ``config.yaml`` (the resolved config) first, then ``history.csv``, ``model.safetensors``, ``model.json``
    and ``metrics.json``.
    """
    check_memory(config)
    out = Path(config.out)
    with RunDir(out, "train", config, cosmetic=COSMETIC, overwrite=config.overwrite):
        save_config(config, out)
        seed_everything(config.seed)
        splits = load_training_data(config)
        validate_splits(splits)
        model, pretrained = build_model(config, splits)
        seed_everything(config.seed)  # same init/shuffle stream whatever the data loader consumed
        return train(model, splits, config, out, extra={"pretrained": pretrained})
