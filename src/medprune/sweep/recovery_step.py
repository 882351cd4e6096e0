"""Fine-tuning and distillation as sweep variants: what a curve does after masking besides BatchNorm recalibration.

A :class:`Recovery` is part of a curve's key. With ``finetune_epochs == 0`` (the default, and the paper) nothing
happens after masking but the setting's ``recalibrate``. With ``finetune_epochs > 0`` every pruned rate gets its own
model (:func:`recovered_model`): a copy of the unpruned model with the pruned units zeroed, its BatchNorm statistics
re-estimated when the setting recalibrates, then fine-tuned by :func:`medprune.recovery.finetune.finetune` with the
pruned units held at exactly zero (optionally distilled from the unpruned model), and recalibrated once more on the same
clean images when the setting recalibrates. The unpruned model is never changed; rate-0 rows stay the unpruned model.

Fine-tuning is a function of the selection seed: the training subset (``samples``, stratified) and every epoch's
shuffling, augmentation and dropout are drawn from it, so the same sweep gives the same rows.

>>> Recovery(finetune_epochs=2, distill=True).label()
'+ft2+kd'
>>> Recovery().columns()
{'finetune_epochs': 0, 'distill': False}
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from medprune.config import ConfigError
from medprune.recovery.finetune import FinetuneSettings, finetune
from medprune.runtime import model_device
from medprune.sweep.table import RECOVERY_DEFAULTS, Row, recovery_label
from medprune.training.loop import limit_dataset

logger = logging.getLogger(__name__)

__all__ = ["Recovery", "recovered_model", "recovery_variants"]


@dataclass(frozen=True)
class Recovery:
    """Fine-tuning after masking (the sweep keys ``finetune_epochs``, ``distill``, ``finetune_*``, ``distill_*``).

    Attributes:
        finetune_epochs: epochs of fine-tuning after masking (0: none, the paper).
        distill: distil from the unpruned model (needs ``finetune_epochs >= 1``).
        lr, batch_size: the optimiser (the training recipe's Adam,
            :class:`~medprune.recovery.finetune.FinetuneSettings`).
        samples: fine-tune on a stratified subset of this many training images drawn with the selection seed
            (``None``: all of them).
        distill_temperature, distill_weight: the distillation term ``w * T^2 * KL`` beside ``(1 - w) * CE``.
    """

    finetune_epochs: int = 0
    distill: bool = False
    lr: float = 1e-3
    batch_size: int = 32
    samples: int | None = None
    distill_temperature: float = 4.0
    distill_weight: float = 1.0

    def __post_init__(self) -> None:
        def refuse(key: str, value: Any, allowed: str) -> None:
            raise ConfigError(f"{key}={value!r} is not allowed; valid values: {allowed}")

        if isinstance(self.finetune_epochs, bool) or not isinstance(self.finetune_epochs, int):
            refuse("finetune_epochs", self.finetune_epochs, "ints >= 0")
        if self.finetune_epochs < 0:
            refuse("finetune_epochs", self.finetune_epochs, "ints >= 0")
        if not isinstance(self.distill, bool):
            refuse("distill", self.distill, "true, false")
        if self.distill and self.finetune_epochs == 0:
            raise ConfigError("distill=True needs finetune_epochs >= 1 (distillation is a fine-tuning loss)")
        if isinstance(self.lr, bool) or not isinstance(self.lr, (int, float)) or not 0 < self.lr < 1:
            refuse("finetune_lr", self.lr, "numbers in (0, 1)")
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 2:
            refuse("finetune_batch_size", self.batch_size, "ints >= 2")
        if self.samples is not None and (
            isinstance(self.samples, bool) or not isinstance(self.samples, int) or self.samples < 2
        ):
            refuse("finetune_samples", self.samples, "ints >= 2, or null (every training image)")
        temperature = self.distill_temperature
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not temperature > 0:
            refuse("distill_temperature", temperature, "numbers > 0")
        weight = self.distill_weight
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0 <= weight <= 1:
            refuse("distill_weight", weight, "numbers in [0, 1]")

    @property
    def active(self) -> bool:
        """Whether masked models are fine-tuned."""
        return self.finetune_epochs > 0

    def columns(self) -> Row:
        """The row fields of this recovery: epochs and distillation always, the recipe when it fine-tunes."""
        if not self.active:
            return dict(RECOVERY_DEFAULTS)
        out: Row = {
            "finetune_epochs": self.finetune_epochs,
            "distill": self.distill,
            "finetune_lr": float(self.lr),
            "finetune_batch_size": self.batch_size,
            "finetune_samples": self.samples,
        }
        if self.distill:
            out.update(distill_temperature=float(self.distill_temperature), distill_weight=float(self.distill_weight))
        return out

    def label(self) -> str:
        """``""``, ``+ft<E>`` or ``+ft<E>+kd`` (:func:`medprune.sweep.table.recovery_label`)."""
        return recovery_label(self.columns())

    def settings(self, seed: int) -> FinetuneSettings:
        """This recovery's :class:`~medprune.recovery.finetune.FinetuneSettings` (the sweep recalibrates)."""
        return FinetuneSettings(
            epochs=self.finetune_epochs,
            lr=float(self.lr),
            batch_size=self.batch_size,
            distill_temperature=float(self.distill_temperature),
            distill_weight=float(self.distill_weight),
            recalibrate_samples=None,
            seed=seed,
        )


def recovery_variants(epochs: Sequence[int], distill: Sequence[bool], **recipe: Any) -> list[Recovery]:
    """The recoveries a sweep compares: every (epochs, distill) pair, in order, without duplicates.

    Distillation is a fine-tuning loss, so ``epochs == 0`` gives one variant (no fine-tuning) whatever ``distill``.

    Args:
        epochs: the ``finetune_epochs`` list. distill: the ``distill`` list.
        recipe: the :class:`Recovery` recipe fields (``lr``, ``batch_size``, ``samples``, ``distill_*``).

    Raises:
        ConfigError: an empty list, an entry that is not an int >= 0 (epochs) or a bool (distill), a bad recipe
            value, or ``distill`` true while no entry of ``epochs`` fine-tunes.

    >>> [r.label() for r in recovery_variants([0, 2], [False, True])]
    ['', '+ft2', '+ft2+kd']
    """
    for key, values in (("finetune_epochs", epochs), ("distill", distill)):
        if not isinstance(values, (list, tuple)) or not values:
            kind = "ints >= 0" if key == "finetune_epochs" else "true / false"
            raise ConfigError(f"{key}={values!r} is not allowed; valid values: a non-empty list of {kind}")
    for entry in epochs:
        Recovery(finetune_epochs=entry, **recipe)  # refuses a bad entry or recipe value, naming it
    for entry in distill:
        if not isinstance(entry, bool):
            raise ConfigError(f"distill entry {entry!r} is not allowed; valid values: true, false")
    if any(distill) and not any(e > 0 for e in epochs):
        raise ConfigError(
            f"distill={list(distill)} needs a finetune_epochs entry >= 1, got finetune_epochs={list(epochs)} "
            "(distillation is a fine-tuning loss)"
        )
    variants = (Recovery(e, d and e > 0, **recipe) for e in epochs for d in distill)
    return list(dict.fromkeys(variants))


def recovered_model(
    model: nn.Module,
    masks: Mapping[str, Tensor],
    recovery: Recovery,
    train: Any,
    *,
    seed: int,
    recalibration: Tensor | None = None,
) -> nn.Module:
    """A fine-tuned copy of ``model`` masked with ``masks`` (pruned units exactly zero), on ``model``'s device.

    Args:
        model: the unpruned model (also the distillation teacher); not changed.
        masks: ``{group: BoolTensor(units)}`` (True = keep).
        recovery: epochs, distillation and recipe (``recovery.active`` must hold).
        train: the training split (training transform); ``recovery.samples`` of it are used.
        seed: the selection seed (training subset, shuffling, augmentation, dropout).
        recalibration: clean images whose BatchNorm statistics are re-estimated after fine-tuning (``None``: the
            setting does not recalibrate). Not before it: training-mode BatchNorm normalises by batch statistics
            and the exact recalibration afterwards replaces the running ones, so a first pass would change nothing.
    """
    if not recovery.active:
        raise ValueError("recovered_model needs finetune_epochs >= 1")
    if train is None:
        raise ValueError("fine-tuning needs the training split (SweepInputs.train)")
    device = model_device(model)
    with torch.enable_grad():  # sweeps run under no_grad
        result = finetune(  # masks a copy of ``model`` itself
            model,
            masks,
            limit_dataset(train, recovery.samples, seed),
            settings=recovery.settings(seed),
            teacher=model if recovery.distill else None,
            recalibration_data=recalibration,
            device=device,
        )
    logger.debug("fine-tuned %s: %s", recovery.label(), result.history[-1] if result.history else "no epoch")
    return result.model.to(device).eval()
