"""Recovery after pruning: fine-tune a masked model with its pruned units held at exactly zero, optionally distilling
from the unpruned model, resumable epoch by epoch. :func:`recover` is the one entry point the sweep
(:mod:`medprune.sweep.recovery_step`) and compress (:mod:`medprune.compression.search`) call: mask, fine-tune as a
:class:`~medprune.recovery.recipe.FinetuneRecipe` says, recalibrate BatchNorm.

The masked model is a copy with the zeros written into its weights (:func:`medprune.pruning.masked.mask_model`);
:func:`hold_masks` keeps them there during training: a gradient hook zeroes the gradient of every pruned row (conv /
linear output rows and biases, the following BatchNorm's scale and shift, a ViT head's q/k/v rows, an MLP unit's fc1
row), and :meth:`MaskHold.reapply` writes the zeros again after each optimiser step, so no optimiser (momentum,
weight decay) can move them. The result can go straight to :func:`medprune.pruning.physical.remove_units`.

The optimiser is the training recipe's (docs/method.md §1): Adam, lr 1e-3, batch 32, class-weighted cross-entropy,
StepLR x0.1 every 10 epochs. Distillation adds Hinton's soft-target loss, class-weighted like the cross-entropy:
``(1 - w) * CE + w * T^2 * KL(teacher_T || student_T)``. Each epoch reseeds shuffling, augmentation and dropout from
``(seed, epoch)`` and saves model and optimiser (safetensors, no pickle): a resumed run equals an uninterrupted one.
The epoch itself is training's (:func:`medprune.training.loop.train_epoch`) with the distillation term as its loss and
the held zeros written again after each step.

>>> from medprune.models import create_model
>>> from medprune.models.units import unit_groups
>>> model = create_model("vgg_small", num_classes=2, image_size=32)
>>> masks = {g.name: torch.arange(g.num_units) % 2 == 0 for g in unit_groups(model)}
>>> data = torch.utils.data.TensorDataset(torch.randn(8, 3, 32, 32), torch.tensor([0, 1] * 4))
>>> result = finetune(model, masks, data, FinetuneRecipe(epochs=1, batch_size=4))
>>> bool((result.model.features[0].weight[1] == 0).all())
True
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import torch
import torch.nn.functional as tnf
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from medprune.data.splitting import limit_dataset
from medprune.models.units import unit_groups
from medprune.provenance import fingerprint, model_checksum, tensor_sha256
from medprune.pruning.masked import following_batchnorms, mask_model, zeroing_plan
from medprune.pruning.masks import validate_scores
from medprune.recovery.recalibration import recalibrate_batchnorm
from medprune.recovery.recipe import FinetuneRecipe
from medprune.runtime import autocast, grad_scaler, model_device, resolve_device
from medprune.training.loop import class_weights, train_epoch

logger = logging.getLogger(__name__)

__all__ = ["MaskHold", "hold_masks", "FinetuneResult", "finetune", "recover", "distillation_loss"]

CHECKPOINT_FORMAT = "medprune.finetune-checkpoint"
CHECKPOINT_FILE = "finetune.safetensors"
#: The training recipe's schedule (docs/method.md §1): StepLR x ``LR_GAMMA`` every ``LR_STEP`` epochs; float16
#: autocast on CUDA.
LR_STEP = 10
LR_GAMMA = 0.1
AMP = True


class MaskHold:
    """Keeps the pruned rows of a model at exactly zero; see :func:`hold_masks`."""

    def __init__(self, plan: list[tuple[Tensor, Tensor]]) -> None:
        self._plan = plan
        self._handles = [param.register_hook(_zero_rows_hook(rows.to(param.device))) for param, rows in plan]
        self.reapply()

    @property
    def parameters(self) -> list[tuple[Tensor, Tensor]]:
        """The ``(parameter, pruned row indices)`` pairs held at zero."""
        return list(self._plan)

    def reapply(self) -> None:
        """Write the zeros again (call after every optimiser step)."""
        with torch.no_grad():
            for param, rows in self._plan:
                param[rows.to(param.device)] = 0

    def remove(self) -> None:
        """Remove the gradient hooks (idempotent); the zeros stay in the weights."""
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def __enter__(self) -> MaskHold:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.remove()


def _zero_rows_hook(rows: Tensor):  # noqa: ANN202 - hook factory
    def hook(grad: Tensor) -> Tensor:
        grad = grad.clone()
        grad[rows] = 0
        return grad

    return hook


def hold_masks(model: nn.Module, masks: Mapping[str, Tensor]) -> MaskHold:
    """Zero every masked-out unit of ``model`` in place and keep it zero under training (gradient hooks).

    Unlike :func:`medprune.pruning.masked.apply_masks` this is not undone: the zeros are the new weights. Leaving the
    ``with`` block (or ``remove()``) removes only the hooks.

    Args:
        model: the model to train (a :func:`medprune.models.create_model` model).
        masks: ``{group.name: BoolTensor(num_units)}`` (True = keep).

    Returns:
        A :class:`MaskHold`; call ``reapply()`` after each optimiser step.
    """
    groups = unit_groups(model)
    validate_scores(masks, groups, what="masks")
    masks = {name: torch.as_tensor(mask).to(torch.bool).cpu() for name, mask in masks.items()}
    needs_bn = any((~masks[g.name]).any() for g in groups if g.kind in ("conv", "linear"))
    return MaskHold(zeroing_plan(model, groups, masks, following_batchnorms(model) if needs_bn else {}))


def distillation_loss(
    student_logits: Tensor, teacher_logits: Tensor, temperature: float, weights: Tensor | None = None
) -> Tensor:
    """``T^2 * KL(softmax(teacher / T) || softmax(student / T))`` averaged over the batch (Hinton et al. 2015).

    ``weights`` (one per sample: its label's class weight) make it a weighted mean like ``CrossEntropyLoss(weight=)``,
    so a class-weighted teacher is distilled under the class balance it was trained with."""
    log_student = tnf.log_softmax(student_logits / temperature, dim=1)
    log_teacher = tnf.log_softmax(teacher_logits / temperature, dim=1)
    per_sample = tnf.kl_div(log_student, log_teacher, reduction="none", log_target=True).sum(dim=1)
    if weights is None:
        return per_sample.mean() * temperature**2
    return (per_sample * weights).sum() / weights.sum() * temperature**2


@dataclass
class FinetuneResult:
    """What :func:`finetune` produced.

    Attributes:
        model: the fine-tuned masked copy (pruned rows exactly zero, no hooks left), in eval mode on the CPU.
        masks: the masks it holds.
        history: one dict per epoch (epoch, lr, loss, ce, kd, train accuracy, seconds), resumed epochs included.
        resumed_epochs: epochs read back from ``checkpoint_dir`` instead of being trained in this call.
        wall_time_s: seconds spent in this call.
    """

    model: nn.Module
    masks: dict[str, Tensor]
    history: list[dict[str, Any]] = field(default_factory=list)
    resumed_epochs: int = 0
    wall_time_s: float = 0.0


def finetune(
    model: nn.Module,
    masks: Mapping[str, Tensor],
    train_data: Dataset,
    recipe: FinetuneRecipe,
    *,
    seed: int = 0,
    teacher: nn.Module | None = None,
    recalibration_data: Any = None,
    device: str | torch.device = "cpu",
    checkpoint_dir: str | Path | None = None,
    weight_decay: float = 0.0,
) -> FinetuneResult:
    """Fine-tune a masked copy of ``model`` with the pruned units held at exactly zero.

    Most callers want :func:`recover`, which also draws the training subset and picks the teacher.

    Args:
        model: the (unpruned or already masked) model; not changed.
        masks: ``{group.name: BoolTensor(num_units)}`` (True = keep).
        train_data: a Dataset of ``(image, label)`` (with the training transform); ``labels`` for class weights.
        recipe: epochs (``None``: :meth:`FinetuneRecipe.epochs_for` ``len(train_data)``), optimiser and the
            distillation term; ``samples``, ``distill`` and ``augment`` are the caller's (:func:`recover`).
        seed: seeds every epoch's shuffling, augmentation and dropout (with the epoch number).
        teacher: the model to distil from (``None``: plain cross-entropy); not changed.
        recalibration_data: clean (evaluation-transform) images whose BatchNorm statistics are re-estimated after
            training (``None``: keep the running statistics of training).
        device: where to train.
        checkpoint_dir: when given, ``finetune.safetensors`` is written there after each epoch and a run with the
            same model, masks, recipe and seed resumes from it.
        weight_decay: Adam's weight decay (0, as in the training recipe).

    Returns:
        A :class:`FinetuneResult`.
    """
    start = time.perf_counter()
    epochs = recipe.epochs_for(len(train_data))  # type: ignore[arg-type]
    masks = {name: torch.as_tensor(mask).to(torch.bool).cpu() for name, mask in masks.items()}
    run_id = fingerprint(
        [
            model_checksum(model),
            sorted((k, tensor_sha256(v.to(torch.uint8))) for k, v in masks.items()),
            _settings_text(recipe, epochs, seed, weight_decay),
        ]
    )
    target = resolve_device(device)
    student = mask_model(model, masks).to(target)
    history: list[dict[str, Any]] = []
    optimizer = torch.optim.Adam(student.parameters(), lr=recipe.lr, weight_decay=weight_decay)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=LR_STEP, gamma=LR_GAMMA)
    path = Path(checkpoint_dir) / CHECKPOINT_FILE if checkpoint_dir is not None else None
    done = 0
    if path is not None and path.is_file():
        done, history = _load_checkpoint(path, run_id, student, optimizer, scheduler)
    resumed = done
    if teacher is not None:
        teacher = teacher.to(target).eval()
    labels = getattr(train_data, "labels", None)
    weights = None
    if labels is not None:
        num_classes = int(student.medprune_spec["num_classes"]) if hasattr(student, "medprune_spec") else None
        weights = class_weights(np.asarray(labels), num_classes or int(np.max(labels)) + 1).to(target)
    criterion = nn.CrossEntropyLoss(weight=weights)
    scaler = grad_scaler(target, AMP)
    with hold_masks(student, masks) as hold:
        for epoch in range(done + 1, epochs + 1):
            row = _train_epoch(
                student, teacher, train_data, optimizer, criterion, scaler, hold, recipe, seed, epoch, target
            )
            scheduler.step()
            history.append(row)
            logger.info(
                "fine-tune epoch %d/%d lr %.0e loss %.4f (ce %.4f, kd %.4f) train acc %.4f | %.1fs",
                epoch,
                epochs,
                row["lr"],
                row["loss"],
                row["ce"],
                row["kd"],
                row["train_accuracy"],
                row["seconds"],
            )
            if path is not None:
                _save_checkpoint(path, run_id, epoch, student, optimizer, scheduler, history)
    if recalibration_data is not None and epochs > 0:
        recalibrate_batchnorm(student, recalibration_data, device=target)
    student = student.cpu().eval()
    return FinetuneResult(student, masks, history, resumed, time.perf_counter() - start)


def recover(
    model: nn.Module,
    masks: Mapping[str, Tensor],
    recipe: FinetuneRecipe,
    train: Dataset | None = None,
    *,
    seed: int = 0,
    teacher: nn.Module | None = None,
    recalibration: Any = None,
    device: str | torch.device | None = None,
    checkpoint_dir: str | Path | None = None,
) -> nn.Module:
    """A masked copy of ``model`` recovered as ``recipe`` says: the one recovery of the sweep and of compress.

    The copy is fine-tuned ``recipe.epochs`` epochs (``None``: :meth:`FinetuneRecipe.epochs_for` the subset) on a
    stratified subset of ``recipe.samples`` images of ``train`` drawn with ``seed``, with the pruned units held at
    exactly zero and distilled from ``teacher`` when ``recipe.distill``; then its BatchNorm statistics are
    re-estimated on ``recalibration`` (:func:`medprune.recovery.recalibration.recalibrate_batchnorm`). With 0
    epochs it is only masked and recalibrated. Recalibrating before fine-tuning would change nothing:
    training-mode BatchNorm normalises by batch statistics and the exact recalibration afterwards replaces the
    running ones.

    Args:
        model: the model to mask (unpruned, or an earlier round's masked model); not changed.
        masks: ``{group.name: BoolTensor(num_units)}`` (True = keep).
        recipe: the fine-tuning recipe (its ``augment`` is applied by whoever loads ``train``).
        train: the training split (training transform); needed when the recipe fine-tunes.
        seed: draws the training subset and seeds every epoch's shuffling, augmentation and dropout.
        teacher: the unpruned model distilled from when ``recipe.distill`` (default: ``model``); not changed.
        recalibration: clean images (:func:`~medprune.recovery.recalibration.recalibration_subset`, or a Tensor)
            BatchNorm statistics are re-estimated on (``None``: not recalibrated).
        device: where to fine-tune and where the result is (default: ``model``'s device).
        checkpoint_dir: fine-tuning checkpoints are written there after each epoch and resumed from.

    Returns:
        The recovered masked copy, in eval mode, on ``device``.

    Raises:
        ValueError: the recipe fine-tunes and ``train`` is ``None``.
    """
    target = resolve_device(device) if device is not None else model_device(model)
    epochs = recipe.epochs
    if epochs == 0:
        masked = mask_model(model, masks)
        if recalibration is not None:
            recalibrate_batchnorm(masked, recalibration)
        return masked.to(target).eval()
    if train is None:
        raise ValueError("fine-tuning needs the training split (train=...)")
    subset = limit_dataset(train, recipe.samples, seed)
    with torch.enable_grad():  # sweeps run under no_grad
        result = finetune(
            model,
            masks,
            subset,
            recipe,
            seed=seed,
            teacher=(model if teacher is None else teacher) if recipe.distill else None,
            recalibration_data=recalibration,
            device=target,
            checkpoint_dir=checkpoint_dir,
        )
    return result.model.to(target).eval()


def _settings_text(recipe: FinetuneRecipe, epochs: int, seed: int, weight_decay: float) -> str:
    """What a fine-tuning checkpoint's run id hashes, worded as before the recipe existed (old run folders resume)."""
    return (
        f"FinetuneSettings(epochs={epochs!r}, lr={recipe.lr!r}, weight_decay={weight_decay!r}, lr_step={LR_STEP!r}, "
        f"lr_gamma={LR_GAMMA!r}, batch_size={recipe.batch_size!r}, class_weights='inverse', "
        f"distill_temperature={recipe.distill_temperature!r}, distill_weight={recipe.distill_weight!r}, "
        f"recalibrate_samples=None, seed={seed!r}, amp={AMP!r})"
    )


def _train_epoch(
    student: nn.Module,
    teacher: nn.Module | None,
    data: Dataset,
    optimizer: torch.optim.Optimizer,
    criterion: nn.CrossEntropyLoss,
    scaler: torch.amp.GradScaler,
    hold: MaskHold,
    recipe: FinetuneRecipe,
    seed: int,
    epoch: int,
    device: torch.device,
) -> dict[str, Any]:
    epoch_seed = seed * 100_003 + epoch
    torch.manual_seed(epoch_seed)  # augmentation and dropout: a function of (seed, epoch) only
    size = len(data)  # type: ignore[arg-type]
    loader = DataLoader(
        data,
        batch_size=recipe.batch_size,
        shuffle=True,
        generator=torch.Generator().manual_seed(epoch_seed),
        drop_last=size % recipe.batch_size == 1,  # a batch of one breaks BatchNorm
    )
    started = time.perf_counter()
    lr = optimizer.param_groups[0]["lr"]
    weight = recipe.distill_weight if teacher is not None else 0.0

    def terms(inputs: Tensor, logits: Tensor, labels: Tensor) -> dict[str, Tensor]:
        ce = criterion(logits, labels)
        kd = torch.zeros((), device=device)
        if teacher is not None:
            with torch.no_grad(), autocast(device, AMP):
                teacher_logits = teacher(inputs).float()
            sample_weights = None if criterion.weight is None else criterion.weight[labels]
            kd = distillation_loss(logits, teacher_logits, recipe.distill_temperature, sample_weights)
        return {"loss": (1 - weight) * ce + weight * kd, "ce": ce, "kd": kd}

    means = train_epoch(
        student, loader, terms, optimizer, scaler, device, AMP, f"fine-tune epoch {epoch}", after_step=hold.reapply
    )
    return {
        "epoch": epoch,
        "lr": lr,
        **{key: round(means[key], 6) for key in ("loss", "ce", "kd")},
        "train_accuracy": round(means["accuracy"], 6),
        "seconds": round(time.perf_counter() - started, 2),
    }


def _save_checkpoint(
    path: Path,
    run_id: str,
    epoch: int,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    history: list[dict[str, Any]],
) -> None:
    tensors = {f"model/{k}": v.detach().cpu().clone().contiguous() for k, v in model.state_dict().items()}
    optim = optimizer.state_dict()
    for index, state in optim["state"].items():
        for key, value in state.items():
            tensors[f"optim/{index}/{key}"] = torch.as_tensor(value).detach().cpu().clone().contiguous()
    metadata = {
        "format": CHECKPOINT_FORMAT,
        "run_id": run_id,
        "epoch": str(epoch),
        "param_groups": json.dumps(optim["param_groups"]),
        "scheduler": json.dumps(scheduler.state_dict()),
        "history": json.dumps(history),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    save_file(tensors, str(partial), metadata=metadata)
    os.replace(partial, path)  # atomic: a kill leaves the previous epoch's file intact


def _load_checkpoint(
    path: Path, run_id: str, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any
) -> tuple[int, list[dict[str, Any]]]:
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata() or {}
    if metadata.get("format") != CHECKPOINT_FORMAT or metadata.get("run_id") != run_id:
        logger.warning("%s belongs to another model, masks or settings; fine-tuning from the start", path)
        return 0, []
    tensors = load_file(str(path))
    model.load_state_dict({k[len("model/") :]: v for k, v in tensors.items() if k.startswith("model/")}, strict=True)
    state: dict[int, dict[str, Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("optim/"):
            _, index, name = key.split("/", 2)
            state.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": json.loads(metadata["param_groups"])})
    scheduler.load_state_dict(json.loads(metadata["scheduler"]))
    epoch = int(metadata["epoch"])
    logger.info("resuming fine-tuning from %s after epoch %d", path, epoch)
    return epoch, json.loads(metadata["history"])
