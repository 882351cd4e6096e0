"""The one fine-tuning recipe: what happens to a masked model after pruning (sweep curves and compress alike).

A :class:`FinetuneRecipe` holds the recovery options a user sets: epochs (or a step budget), distillation, the
optimiser, the training subset and augmentation. The optimiser and schedule beyond these (Adam without weight decay,
StepLR x0.1 every 10 epochs, class-weighted cross-entropy) are the training recipe's (docs/method.md §1) and fixed.

>>> FinetuneRecipe().epochs_for(4708), FinetuneRecipe(epochs=2).epochs_for(4708)
(3, 2)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from medprune.config import ConfigError, option

__all__ = ["FinetuneRecipe"]


@dataclass(frozen=True)
class FinetuneRecipe:
    """Fine-tuning after masking.

    Attributes:
        epochs: fine-tuning epochs (0: recalibration only; ``None``: enough epochs for ``steps`` optimiser steps over
            the training images, so small and large datasets get the same budget).
        steps: the optimiser-step budget ``epochs=None`` stands for.
        distill: distil from the unpruned model (``w * T^2 * KL`` beside ``(1 - w) * CE``); only used when it
            fine-tunes.
        lr: the learning rate of the training recipe's Adam.
        batch_size: fine-tuning batch size.
        samples: fine-tune on a stratified subset of this many training images (``None``: all of them).
        distill_temperature: the softmax temperature T of the distillation term.
        distill_weight: the weight w of the distillation term.
        augment: fine-tune with the training augmentation (``None``: as the checkpoint was trained).
    """

    epochs: int | None = option(
        None,
        help="fine-tuning epochs (0: recalibration only)",
        shown_default="enough epochs for `steps` optimiser steps",
        limit=10_000,
    )
    steps: int = option(300, help="the optimiser-step budget that epochs=null stands for", limit=100_000)
    distill: bool = option(True, help="distil from the unpruned model")
    lr: float = option(1e-3, help="learning rate of the fine-tuning Adam, in (0, 1)")
    batch_size: int = option(32, help="fine-tuning batch size (>= 2)")
    samples: int | None = option(
        None, help="fine-tune on a stratified subset of this many training images", shown_default="all"
    )
    distill_temperature: float = option(4.0, help="softmax temperature T of the distillation term (> 0)")
    distill_weight: float = option(1.0, help="weight w of the distillation term, in [0, 1]")
    augment: bool | None = option(
        False, help="fine-tune with the training augmentation", shown_default="as the checkpoint was trained"
    )

    def __post_init__(self) -> None:
        def refuse(key: str, value: Any, allowed: str) -> None:
            raise ConfigError(f"{key}={value!r} is not allowed; valid values: {allowed}")

        def is_int(value: Any) -> bool:
            return isinstance(value, int) and not isinstance(value, bool)

        def is_number(value: Any) -> bool:
            return isinstance(value, (int, float)) and not isinstance(value, bool)

        if self.epochs is not None and (not is_int(self.epochs) or self.epochs < 0):
            refuse("epochs", self.epochs, "ints >= 0, or null (enough epochs for `steps`)")
        if not is_int(self.steps) or self.steps < 1:
            refuse("steps", self.steps, "ints >= 1")
        if not isinstance(self.distill, bool):
            refuse("distill", self.distill, "true, false")
        if not is_number(self.lr) or not 0 < self.lr < 1:
            refuse("lr", self.lr, "numbers in (0, 1)")
        if not is_int(self.batch_size) or self.batch_size < 2:
            refuse("batch_size", self.batch_size, "ints >= 2")
        if self.samples is not None and (not is_int(self.samples) or self.samples < 2):
            refuse("samples", self.samples, "ints >= 2, or null (every training image)")
        if not is_number(self.distill_temperature) or not self.distill_temperature > 0:
            refuse("distill_temperature", self.distill_temperature, "numbers > 0")
        if not is_number(self.distill_weight) or not 0 <= self.distill_weight <= 1:
            refuse("distill_weight", self.distill_weight, "numbers in [0, 1]")
        if self.augment is not None and not isinstance(self.augment, bool):
            refuse("augment", self.augment, "true, false, or null (as the checkpoint was trained)")

    def epochs_for(self, train_images: int) -> int:
        """Fine-tuning epochs: ``epochs``, or (``None``) the fewest that give ``steps`` optimiser steps.

        Args:
            train_images: the number of images fine-tuned on (after ``samples``).

        >>> FinetuneRecipe(batch_size=32, steps=300).epochs_for(4708), FinetuneRecipe().epochs_for(546)
        (3, 17)
        """
        if self.epochs is not None:
            return self.epochs
        steps_per_epoch = max(1, math.ceil(train_images / self.batch_size))
        return max(1, math.ceil(self.steps / steps_per_epoch))
