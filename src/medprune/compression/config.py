"""The options of ``medprune compress`` (:class:`CompressConfig`) and what a run produced (:class:`CompressResult`)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from torch import Tensor, nn

from medprune.compression.card import CompressionRecord
from medprune.compression.evidence import (
    METRICS,
    Metric,
)
from medprune.options import Normalize, Scope, Sign, TargetMode
from medprune.pruning.masks import check_rate
from medprune.recovery.finetune import FinetuneSettings

__all__ = ["CompressConfig", "CompressResult", "SEARCH_FILE", "SearchRecovery"]

SEARCH_FILE = "search.jsonl"
SearchRecovery = Literal["recalibrate", "finetune"]


@dataclass
class CompressConfig:
    """Options of ``medprune compress``.

    Attributes:
        checkpoint: the trained model (``model.safetensors`` or its stem). out: output folder.
        method, sampling, n_per_class, seed, target: the score request (as for ``medprune score``).
        scope, normalize, sign, min_keep: the ranking. Default global / none / signed: of the 24 settings of the
            validation setting search it gave LRP (the default method) the largest lossless rate on both datasets
            (docs/results.md §3); couplings are always used (the model is removed physically).
        metric: what the tolerance is read on: ``balanced_accuracy``, ``accuracy``, ``auroc`` or
            ``worst_class_recall`` (the lowest per-class sensitivity: "clinically lossless").
        tolerance: largest allowed drop of ``metric`` on validation (0.01 = 1 point).
        rates: candidate rates, tried in increasing order. rate: a fixed rate (no search; still checked on
            validation).
        macs_floor: a candidate rate r removes at least r of the units and at least r of the MACs: when the masks at
            unit rate r remove less than r of the MACs (a global ranking prunes the cheap late layers of a VGG
            first), the same ranking is cut deeper, at the smallest unit rate that removes r of the MACs (the search
            rows and the card show the unit rate used and the MACs removed). Off: a rate is a fraction of units only.
        patience: consecutive failing candidates that end the search (``None``: try every candidate, the default: on
            a few hundred validation images one borderline failure is noise, not a trend).
        recalibration_samples: clean training images for BatchNorm recalibration (0: no recalibration).
        search_recovery: what each search candidate gets: ``finetune`` (default: recalibration plus the same
            fine-tuning as the chosen rate gets, so validation judges the model that ships) or ``recalibrate``
            (recalibration only; faster, finds much smaller rates).
        finetune_epochs: fine-tuning epochs (0: recalibration only; ``None``: enough epochs for ``finetune_steps``
            optimiser steps over the training images, so small and large datasets get the same budget).
        finetune_steps: the step budget ``finetune_epochs=None`` stands for.
        distill, distill_temperature, distill_weight: distillation from the unpruned model; default pure (weight 1,
            no label targets): the student learns to reproduce the approved model (why: docs/method.md, "Compress").
        lr, batch_size: fine-tuning optimiser (the training recipe's Adam). augment: fine-tune with the training
            augmentation (default off; ``None``: as the checkpoint was trained, ``train_config.augment``).
        max_train_samples: fine-tune on a stratified random subset of this many training images (``None``: all).
        rounds: iterative pruning rounds (1: one-shot).
        latency_threads, latency_repeats: CPU latency measurement. data_root, dataset: where the data is
            (default: as recorded in the checkpoint). device: ``cpu`` or ``cuda``. overwrite: start the folder afresh.
    """

    checkpoint: str = ""
    out: str = "runs/compress"
    method: str = "lrp"
    sampling: str = "clustering"
    n_per_class: int = 10
    seed: int = 0
    sign: Sign = "signed"
    target: TargetMode = "true"
    scope: Scope = "global"
    normalize: Normalize = "none"
    min_keep: int = 1
    metric: Metric = "balanced_accuracy"
    tolerance: float = 0.01
    rates: list[float] = field(default_factory=lambda: [0.3, 0.5, 0.6, 0.7, 0.8, 0.9])
    rate: float | None = None
    macs_floor: bool = True
    patience: int | None = None
    recalibration_samples: int = 512
    search_recovery: SearchRecovery = "finetune"
    finetune_epochs: int | None = None
    finetune_steps: int = 300
    distill: bool = True
    distill_temperature: float = 4.0
    distill_weight: float = 1.0
    lr: float = 1e-3
    batch_size: int = 32
    augment: bool | None = False
    max_train_samples: int | None = None
    rounds: int = 1
    latency_threads: int = 2
    latency_repeats: int = 20
    data_root: str | None = None
    dataset: str | None = None
    device: str = "cpu"
    overwrite: bool = False

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise ValueError(f"metric={self.metric!r} is not allowed; valid values: {', '.join(METRICS)}")
        if self.search_recovery not in ("recalibrate", "finetune"):
            raise ValueError(
                f"search_recovery={self.search_recovery!r} is not allowed; valid values: recalibrate, finetune"
            )
        if not 0 <= self.tolerance < 1:
            raise ValueError(f"tolerance must be in [0, 1), got {self.tolerance!r}")
        for rate in [*self.rates, *([] if self.rate is None else [self.rate])]:
            check_rate(rate)
        if self.rate is None and not self.rates:
            raise ValueError("rates is empty and no fixed rate is given; give rates=[...] or rate=R")
        for name in ("patience", "rounds", "batch_size", "latency_threads", "latency_repeats", "finetune_steps"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        if self.max_train_samples is not None and self.max_train_samples < 2:
            raise ValueError(f"max_train_samples must be >= 2 or None, got {self.max_train_samples!r}")
        for name in ("finetune_epochs", "recalibration_samples"):
            if (getattr(self, name) or 0) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if self.search_recovery == "finetune" and self.finetune_epochs == 0:
            raise ValueError("search_recovery=finetune needs finetune_epochs >= 1")
        self.settings()  # lr, distillation values

    def epochs_for(self, train_images: int) -> int:
        """Fine-tuning epochs: ``finetune_epochs``, or (``None``) the fewest that give ``finetune_steps`` steps.

        >>> CompressConfig(batch_size=32, finetune_steps=300).epochs_for(4708), CompressConfig().epochs_for(546)
        (3, 17)
        """
        if self.finetune_epochs is not None:
            return self.finetune_epochs
        steps_per_epoch = max(1, math.ceil(train_images / self.batch_size))
        return max(1, math.ceil(self.finetune_steps / steps_per_epoch))

    def settings(self, epochs: int = 0) -> FinetuneSettings:
        """The fine-tuning settings these options describe (``epochs`` from :meth:`epochs_for`)."""
        return FinetuneSettings(
            epochs=epochs,
            lr=self.lr,
            batch_size=self.batch_size,
            distill_temperature=self.distill_temperature,
            distill_weight=self.distill_weight,
            recalibrate_samples=None,
            seed=self.seed,
        )


@dataclass
class CompressResult:
    """What ``run_compress`` produced: the chosen rate, the record behind the card and the files written."""

    rate: float
    masks: dict[str, Tensor]
    record: CompressionRecord
    model: nn.Module
    files: dict[str, str] = field(default_factory=dict)
