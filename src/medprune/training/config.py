"""Settings and result of a training run (:mod:`medprune.training.loop`).

>>> TrainConfig(epochs=3).lr
0.001
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from torch import nn

from medprune.config import ConfigError
from medprune.models import model_spec
from medprune.runtime import resolve_device

__all__ = ["TrainConfig", "TrainResult", "SelectOn"]

SelectOn = Literal["auroc", "accuracy", "balanced_accuracy", "loss"]


@dataclass
class TrainConfig:
    """Everything a training run needs; every field can be set from YAML or ``--set key=value``.

    Attributes:
        dataset: dataset name for :func:`medprune.data.load_dataset` (e.g. ``pneumoniamnist``).
        data_root: folder holding the data (``None``: the loader's default).
        model: registered architecture (:func:`medprune.models.available_models`).
        pretrained: ImageNet initialisation; ``None`` = use it when the architecture has weights and they can be
            loaded (random init with a warning when offline), ``true`` = required, ``false`` = never.
        image_size: input side in pixels. channels: 1 or 3 channels fed to the model.
        size: MedMNIST file variant (28/64/128/224; ``None``: the loader's default).
        study_type: MURA study type filter. val_fraction, test_fraction: split sizes where a dataset has no official
            split.
        augment: the paper's training augmentation.
        epochs: training epochs. batch_size: training images per step. lr: Adam learning rate. weight_decay: Adam
            weight decay. lr_step, lr_gamma: StepLR (epochs per step, factor).
        class_weights: ``inverse`` (class weight = N / (K · n_k), the paper) or ``none``.
        select_on: validation metric that picks the kept epoch (``loss``: lowest wins, others: highest).
        bn_recalibration: before each validation, recompute BatchNorm running statistics as exact averages over
            (up to ``bn_recalibration_samples``) training images under the evaluation transform. Beyond the paper:
            with the paper's strong augmentation at 28 px the running statistics describe augmented images, and
            clean validation/test images are then mis-thresholded (PneumoniaMNIST test accuracy 0.60 → 0.90 at
            the same AUROC; docs/training.md). ``false`` = the paper recipe exactly. No effect without BatchNorm.
        bn_recalibration_samples: training images of that recalibration (``None``: all).
        max_train_samples, max_eval_samples: stratified random subsets for quick runs (``None``: all).
        seed: seeds everything (init, shuffling, augmentation, subsets).
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``. amp: float16 autocast + GradScaler on CUDA.
        num_workers: DataLoader workers (0 = main process). eval_batch_size: batch size for evaluation.
        progress: tqdm bars (shown only on a terminal). out_dir: output folder of :func:`run_train`.
    """

    dataset: str = "pneumoniamnist"
    data_root: str | None = None
    model: str = "resnet_small"
    pretrained: bool | None = None
    image_size: int = 28
    channels: int = 3
    size: int | None = None
    study_type: str | None = None
    val_fraction: float = 0.1
    test_fraction: float = 0.2
    augment: bool = True
    epochs: int = 20
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.0
    lr_step: int = 10
    lr_gamma: float = 0.1
    class_weights: Literal["inverse", "none"] = "inverse"
    select_on: SelectOn = "auroc"
    bn_recalibration: bool = True
    bn_recalibration_samples: int | None = 2048
    max_train_samples: int | None = None
    max_eval_samples: int | None = None
    seed: int = 0
    device: str = "auto"
    amp: bool = True
    num_workers: int = 0
    eval_batch_size: int = 256
    progress: bool = True
    out_dir: str = "runs/train"

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
