"""Settings and result of a training run (:mod:`medprune.training.loop`).

>>> TrainConfig(epochs=3).lr
0.001
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from torch import nn

from medprune.config import ConfigError, option
from medprune.models import model_spec
from medprune.rundir.output import OutputFolder, output_folder
from medprune.runtime import resolve_device

__all__ = ["MAX_EPOCHS", "MAX_IMAGE_SIZE", "TrainConfig", "TrainResult", "SelectOn", "max_workers"]

SelectOn = Literal["auroc", "accuracy", "balanced_accuracy", "loss"]

#: Bounds of a training request (:func:`medprune.config.check_limits`; ``--no-limits`` lifts them): the paper trains
#: 20-100 epochs; a side of 4096 px is beyond every medical dataset medprune reads (the memory check before a run
#: refuses what does not fit in any case).
MAX_EPOCHS = 10_000
MAX_IMAGE_SIZE = 4096


def max_workers() -> int:
    """The most DataLoader workers a run may ask for: four per CPU core of this machine."""
    return 4 * (os.cpu_count() or 1)


@dataclass
class TrainConfig(OutputFolder):
    """Everything a training run needs; every field can be set from YAML or ``--set key=value``."""

    out: str = output_folder("runs/train", aliases=("out_dir",))

    dataset: str = option("pneumoniamnist", help="dataset name for medprune.data.load_dataset (e.g. pneumoniamnist)")
    data_root: str | None = option(None, help="folder holding the data", shown_default="the loader's default")
    model: str = option("resnet_small", help="registered architecture (medprune.models.available_models)")
    pretrained: bool | None = option(
        None,
        help=(
            "ImageNet initialisation; None = use it when the architecture has weights and "
            "they can be loaded (random init with a warning when offline), true = required, "
            "false = never"
        ),
    )
    image_size: int = option(28, help="input side in pixels", limit=MAX_IMAGE_SIZE)
    channels: int = option(3, help="1 or 3 channels fed to the model")
    size: int | None = option(None, help="MedMNIST file variant (28/64/128/224; None: the loader's default)")
    study_type: str | None = option(None, help="MURA study type filter")
    val_fraction: float = option(0.1, help="split sizes where a dataset has no official split")
    test_fraction: float = option(0.2, help="split sizes where a dataset has no official split")
    augment: bool = option(True, help="the paper's training augmentation")
    epochs: int = option(20, help="training epochs", limit=MAX_EPOCHS)
    batch_size: int = option(32, help="training images per step")
    lr: float = option(1e-3, help="Adam learning rate")
    weight_decay: float = option(0.0, help="Adam weight decay")
    lr_step: int = option(10, help="StepLR (epochs per step, factor)")
    lr_gamma: float = option(0.1, help="StepLR (epochs per step, factor)")
    class_weights: Literal["inverse", "none"] = option(
        "inverse", help="inverse (class weight = N / (K · n_k), the paper) or none"
    )
    select_on: SelectOn = option(
        "auroc", help="validation metric that picks the kept epoch (loss: lowest wins, others: highest)"
    )
    bn_recalibration: bool = option(
        True,
        help=(
            "before each validation, recompute BatchNorm running statistics as exact averages"
            " over (up to bn_recalibration_samples) training images under the evaluation "
            "transform. Beyond the paper: with the paper's strong augmentation at 28 px the "
            "running statistics describe augmented images, and clean validation/test images "
            "are then mis-thresholded (PneumoniaMNIST test accuracy 0.60 → 0.90 at the same "
            "AUROC; docs/training.md). false = the paper recipe exactly. No effect without "
            "BatchNorm"
        ),
    )
    bn_recalibration_samples: int | None = option(2048, help="training images of that recalibration (None: all)")
    max_train_samples: int | None = option(None, help="stratified random subsets for quick runs", shown_default="all")
    max_eval_samples: int | None = option(None, help="stratified random subsets for quick runs", shown_default="all")
    seed: int = option(0, help="seeds everything (init, shuffling, augmentation, subsets)")
    device: str = option("auto", help="auto, cpu, cuda or cuda:N")
    amp: bool = option(True, help="float16 autocast + GradScaler on CUDA")
    num_workers: int = option(0, help="DataLoader workers (0 = main process)", limit=max_workers)
    eval_batch_size: int = option(256, help="batch size for evaluation")
    progress: bool = option(True, help="tqdm bars (shown only on a terminal)")

    def __post_init__(self) -> None:
        positive = ("epochs", "batch_size", "lr_step", "image_size", "eval_batch_size")
        for name in positive:
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        if self.lr <= 0 or self.weight_decay < 0 or not 0 < self.lr_gamma <= 1:
            raise ConfigError(
                f"need lr > 0, weight_decay >= 0, 0 < lr_gamma <= 1; got {self.lr}, "
                f"{self.weight_decay}, {self.lr_gamma}"
            )
        if self.channels not in (1, 3):
            raise ConfigError(f"channels={self.channels!r} is not allowed; valid values: 1, 3")
        for name in ("max_train_samples", "max_eval_samples", "bn_recalibration_samples"):
            if getattr(self, name) is not None and getattr(self, name) < 2:
                raise ConfigError(f"{name} must be >= 2 or None, got {getattr(self, name)!r}")
        if self.num_workers < 0 or self.seed < 0:
            raise ConfigError(f"num_workers and seed must be >= 0, got {self.num_workers}, {self.seed}")
        model_spec(self.model)  # unknown names raise with the valid list
        if self.device != "auto":
            resolve_device(self.device)


@dataclass
class TrainResult:
    """What a training run produced.

    Attributes:
        model: the model with the best-validation weights loaded, in eval mode.
        history: one dict per epoch (the rows of ``history.csv``).
        best_epoch: 1-based epoch whose weights were kept. best_score: its validation ``select_on`` value.
        val_metrics, test_metrics: full metrics of the kept model (:func:`medprune.metrics.evaluate`).
        out_dir: where files were written (``None``: nothing written). checkpoint: the weights file.
        wall_time_s: seconds for the whole loop including evaluation.
    """

    model: nn.Module
    history: list[dict[str, Any]]
    best_epoch: int
    best_score: float
    val_metrics: dict[str, Any]
    test_metrics: dict[str, Any]
    out_dir: Path | None = None
    checkpoint: Path | None = None
    wall_time_s: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The JSON content of ``metrics.json``."""
        return {
            "best_epoch": self.best_epoch,
            "best_score": self.best_score,
            "epochs_run": len(self.history),
            "wall_time_s": round(self.wall_time_s, 2),
            "val": self.val_metrics,
            "test": self.test_metrics,
            **self.extra,
        }
