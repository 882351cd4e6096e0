"""Fine-tuning and distillation as sweep variants: what a curve does after masking besides BatchNorm recalibration.

A :class:`Recovery` is part of a curve's key: fine-tuning epochs and distillation over the sweep's
:class:`~medprune.recovery.recipe.FinetuneRecipe`. With ``finetune_epochs == 0`` (the default, and the paper)
nothing happens after masking but the setting's ``recalibrate``. With ``finetune_epochs > 0`` every pruned rate gets
its own model (:func:`recovered_model`, over :func:`medprune.recovery.finetune.recover`, the one recovery compress
also uses): a copy of the unpruned model with the pruned units zeroed, fine-tuned with the pruned units held at
exactly zero (optionally distilled from the unpruned model), then recalibrated on the setting's clean images when the
setting recalibrates. The unpruned model is never changed; rate-0 rows stay the unpruned model.

Fine-tuning is a function of the selection seed: the training subset (``samples``, stratified) and every epoch's
shuffling, augmentation and dropout are drawn from it, so the same sweep gives the same rows.

>>> Recovery.of(finetune_epochs=2, distill=True).label()
'+ft2+kd'
>>> Recovery().columns()
{'finetune_epochs': 0, 'distill': False}
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from torch import Tensor, nn

from medprune.config import ConfigError
from medprune.recovery.finetune import recover
from medprune.recovery.recipe import FinetuneRecipe
from medprune.sweep.table import RECOVERY_DEFAULTS, Row, recovery_label

logger = logging.getLogger(__name__)

__all__ = ["Recovery", "recovered_model", "recovery_variants"]


#: The recipe of a sweep that sets none: the sweep's own defaults (no distillation unless asked).
SWEEP_RECIPE = FinetuneRecipe(epochs=0, distill=False)


@dataclass(frozen=True)
class Recovery:
    """Fine-tuning after masking, for one curve: the sweep's recipe with this curve's epochs and distillation.

    Build it with :meth:`of` (the sweep's grid axes ``finetune_epochs`` x ``distill`` over its recipe); the recipe's
    ``epochs`` is then the curve's epoch count (0: no fine-tuning, the paper).

    Attributes:
        recipe: the whole fine-tuning recipe of this curve.
    """

    recipe: FinetuneRecipe = SWEEP_RECIPE

    def __post_init__(self) -> None:
        if not isinstance(self.recipe, FinetuneRecipe):
            raise TypeError(f"recipe must be a FinetuneRecipe, got {type(self.recipe).__name__}")
        if self.recipe.epochs is None:
            raise ConfigError("finetune_epochs=None is not allowed in a sweep; valid values: ints >= 0")
        if self.recipe.distill and self.recipe.epochs == 0:
            raise ConfigError("distill=True needs finetune_epochs >= 1 (distillation is a fine-tuning loss)")

    @classmethod
    def of(cls, finetune_epochs: int = 0, distill: bool = False, recipe: FinetuneRecipe = SWEEP_RECIPE) -> Recovery:
        """The recovery of one grid point, its values checked and named by their sweep keys.

        Raises:
            ConfigError: ``finetune_epochs`` not an int >= 0, ``distill`` not a bool, or distillation without epochs.
        """
        if isinstance(finetune_epochs, bool) or not isinstance(finetune_epochs, int) or finetune_epochs < 0:
            raise ConfigError(f"finetune_epochs={finetune_epochs!r} is not allowed; valid values: ints >= 0")
        if not isinstance(distill, bool):
            raise ConfigError(f"distill={distill!r} is not allowed; valid values: true, false")
        return cls(replace(recipe, epochs=finetune_epochs, distill=distill))

    @property
    def finetune_epochs(self) -> int:
        """Epochs of fine-tuning after masking (0: none)."""
        return int(self.recipe.epochs or 0)

    @property
    def distill(self) -> bool:
        """Whether the fine-tuning distils from the unpruned model."""
        return self.recipe.distill

    def finetune_recipe(self) -> FinetuneRecipe:
        """The recipe this curve fine-tunes with."""
        return self.recipe

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
            "finetune_lr": float(self.recipe.lr),
            "finetune_batch_size": self.recipe.batch_size,
            "finetune_samples": self.recipe.samples,
        }
        if self.distill:
            recipe = self.recipe
            out.update(
                distill_temperature=float(recipe.distill_temperature), distill_weight=float(recipe.distill_weight)
            )
        return out

    def label(self) -> str:
        """``""``, ``+ft<E>`` or ``+ft<E>+kd`` (:func:`medprune.sweep.table.recovery_label`)."""
        return recovery_label(self.columns())


def recovery_variants(
    epochs: Sequence[int], distill: Sequence[bool], recipe: FinetuneRecipe = SWEEP_RECIPE
) -> list[Recovery]:
    """The recoveries a sweep compares: every (epochs, distill) pair, in order, without duplicates.

    Distillation is a fine-tuning loss, so ``epochs == 0`` gives one variant (no fine-tuning) whatever ``distill``.

    Args:
        epochs: the ``finetune_epochs`` list. distill: the ``distill`` list.
        recipe: the sweep's fine-tuning recipe (optimiser, ``samples``, ``distill_*``).

    Raises:
        ConfigError: an empty list, an entry that is not an int >= 0 (epochs) or a bool (distill), or ``distill``
            true while no entry of ``epochs`` fine-tunes.

    >>> [r.label() for r in recovery_variants([0, 2], [False, True])]
    ['', '+ft2', '+ft2+kd']
    """
    for key, values in (("finetune_epochs", epochs), ("distill", distill)):
        if not isinstance(values, (list, tuple)) or not values:
            kind = "ints >= 0" if key == "finetune_epochs" else "true / false"
            raise ConfigError(f"{key}={values!r} is not allowed; valid values: a non-empty list of {kind}")
    for entry in epochs:
        Recovery.of(entry, recipe=recipe)  # refuses a bad entry, naming it
    for entry in distill:
        if not isinstance(entry, bool):
            raise ConfigError(f"distill entry {entry!r} is not allowed; valid values: true, false")
    if any(distill) and not any(e > 0 for e in epochs):
        raise ConfigError(
            f"distill={list(distill)} needs a finetune_epochs entry >= 1, got finetune_epochs={list(epochs)} "
            "(distillation is a fine-tuning loss)"
        )
    variants = (Recovery.of(e, d and e > 0, recipe) for e in epochs for d in distill)
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
        train: the training split (training transform); ``recovery.recipe.samples`` of it are used.
        seed: the selection seed (training subset, shuffling, augmentation, dropout).
        recalibration: clean images whose BatchNorm statistics are re-estimated after fine-tuning (``None``: the
            setting does not recalibrate).
    """
    if not recovery.active:
        raise ValueError("recovered_model needs finetune_epochs >= 1")
    if train is None:
        raise ValueError("fine-tuning needs the training split (SweepInputs.train)")
    tuned = recover(model, masks, recovery.finetune_recipe(), train, seed=seed, recalibration=recalibration)
    logger.debug("fine-tuned %s", recovery.label())
    return tuned
