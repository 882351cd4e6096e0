"""Supervised training of a baseline classifier with the paper's recipe (docs/method.md §1).

Class-weighted cross-entropy (inverse class frequency), Adam (lr 1e-3), batch 32, StepLR ×0.1 every 10 epochs; the
epoch with the best validation score is kept. :func:`run_train` is the whole pipeline (data → model → train →
checkpoint) reading top to bottom; :func:`train` is the loop for a model and splits you already have.

>>> config = TrainConfig(model="resnet_small", epochs=1, max_train_samples=64)  # doctest: +SKIP
>>> result = run_train(config)  # doctest: +SKIP
"""

from __future__ import annotations

import csv
import json
import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from medprune.atomic import atomic_writer, write_text_atomic
from medprune.checkpoint import save_checkpoint
from medprune.config import config_to_dict
from medprune.data import DatasetSplits, build_transform
from medprune.data.splitting import limit_dataset
from medprune.metrics import evaluate, summary_line
from medprune.progress import Progress
from medprune.provenance import to_jsonable
from medprune.recovery.recalibration import recalibrate_batchnorm, recalibration_subset
from medprune.runtime import autocast, grad_scaler, resolve_device
from medprune.training.config import SelectOn, TrainConfig, TrainResult

logger = logging.getLogger(__name__)

__all__ = [
    "TrainConfig",
    "TrainResult",
    "train",
    "train_epoch",
    "LossTerms",
    "cross_entropy_terms",
    "class_weights",
]


def class_weights(labels: np.ndarray, num_classes: int) -> torch.Tensor:
    """Inverse class frequency ``N / (K · n_k)`` (scikit-learn's "balanced"); absent classes get weight 0.

    >>> class_weights(np.array([0, 1, 1, 1]), 2)
    tensor([2.0000, 0.6667])
    """
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_classes).astype(np.float64)
    weights = np.zeros(num_classes)
    present = counts > 0
    weights[present] = counts.sum() / (num_classes * counts[present])
    if not present.all():
        logger.warning("classes %s have no training samples; their loss weight is 0", np.flatnonzero(~present).tolist())
    return torch.tensor(weights, dtype=torch.float32)


def _score(metrics: dict[str, Any], select_on: SelectOn) -> float:
    """The value the kept epoch maximises (the loss negated)."""
    if select_on == "loss":
        return -metrics["loss"]
    value = metrics.get(select_on)
    if value is None:  # e.g. AUROC of a validation split holding one class
        logger.warning("validation %s is undefined; selecting on accuracy this epoch", select_on)
        value = metrics["accuracy"]
    return float(value)


def _normalization(splits: DatasetSplits) -> dict[str, list[float]]:
    transform = getattr(splits.test, "transform", None)
    if transform is None or not hasattr(transform, "mean"):
        transform = build_transform(int(splits.image_size), int(splits.in_channels), False)
    return {"mean": list(transform.mean), "std": list(transform.std)}


#: What one batch is trained on: ``terms(inputs, logits, labels) -> {"loss": total, **parts}`` with float32 logits;
#: ``total`` is minimised, every entry is averaged over the epoch's images (e.g. fine-tuning's ``ce`` and ``kd``).
LossTerms = Callable[[Tensor, Tensor, Tensor], dict[str, Tensor]]


def cross_entropy_terms(criterion: nn.Module) -> LossTerms:
    """The :data:`LossTerms` of a plain criterion ``criterion(logits, labels)`` (training's class-weighted CE)."""

    def terms(inputs: Tensor, logits: Tensor, labels: Tensor) -> dict[str, Tensor]:
        return {"loss": criterion(logits, labels)}

    return terms


def train_epoch(
    model: nn.Module,
    loader: Iterable[tuple[Tensor, Tensor]],
    terms: LossTerms,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    device: torch.device,
    amp: bool = False,
    desc: str = "",
    progress: bool = False,
    after_step: Callable[[], None] | None = None,
) -> dict[str, float]:
    """One pass over ``loader`` in training mode, the one epoch loop of training and fine-tuning.

    Args:
        model: the model trained (put in training mode).
        loader: ``(inputs, labels)`` batches.
        terms: the batch loss and its parts (:data:`LossTerms`; :func:`cross_entropy_terms` for a criterion).
        optimizer, scaler: one optimiser step per batch, through the (possibly disabled) gradient scaler.
        device: where the batches go. amp: float16 autocast on CUDA.
        desc, progress: the progress bar's label, and whether it is shown.
        after_step: called after each optimiser step (fine-tuning writes its held zeros again there).

    Returns:
        The mean of every entry of ``terms`` over the images seen, and ``accuracy``, the training accuracy.

    Raises:
        FloatingPointError: the loss became NaN or infinite.
    """
    model.train()
    sums: dict[str, float] = {}
    correct, seen = 0, 0
    bar = Progress(loader, desc=desc, unit="batch", leave=False, enabled=None if progress else False)
    for inputs, labels in bar:
        inputs = inputs.to(device, non_blocking=True)
        labels = labels.to(device, non_blocking=True)
        optimizer.zero_grad(set_to_none=True)
        with autocast(device, amp):
            logits = model(inputs).float()
        parts = terms(inputs, logits, labels)
        loss = parts["loss"]
        if not torch.isfinite(loss):
            raise FloatingPointError(f"training loss became {loss.item()} ({desc}); lower lr")
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        if after_step is not None:
            after_step()
        for key, value in parts.items():
            sums[key] = sums.get(key, 0.0) + float(value.detach()) * len(labels)
        correct += int((logits.argmax(1) == labels).sum())
        seen += len(labels)
        bar.set_postfix(f"loss={sums['loss'] / seen:.4f}")
    seen = max(seen, 1)
    return {**{key: value / seen for key, value in sums.items()}, "accuracy": correct / seen}


class _History:
    """Epoch rows, kept in memory and written to ``history.csv`` as they finish (when a folder is given): the whole
    file is rewritten atomically after each epoch (a few rows), so a reader or a kill never leaves half a row."""

    def __init__(self, out: Path | None) -> None:
        self.rows: list[dict[str, Any]] = []
        self._path = out / "history.csv" if out is not None else None

    def append(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        if self._path is None:
            return
        with atomic_writer(self._path, newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(self.rows[0]))
            writer.writeheader()
            writer.writerows(self.rows)


@dataclass
class _Data:
    """The (possibly subsampled) splits of one training run."""

    train: Any
    val: Any
    test: Any
    recalibration: Any | None


def _subsets(splits: DatasetSplits, config: TrainConfig) -> _Data:
    train_set = limit_dataset(splits.train, config.max_train_samples, config.seed)
    recalibration = None
    if config.bn_recalibration:
        recalibration = recalibration_subset(train_set, config.bn_recalibration_samples, config.seed)
    return _Data(
        train_set,
        limit_dataset(splits.val, config.max_eval_samples, config.seed),
        limit_dataset(splits.test, config.max_eval_samples, config.seed),
        recalibration,
    )


def _loader(train_set: Any, config: TrainConfig, device: torch.device) -> DataLoader:
    return DataLoader(
        train_set,
        batch_size=config.batch_size,
        shuffle=True,
        generator=torch.Generator().manual_seed(config.seed),
        num_workers=config.num_workers,
        persistent_workers=config.num_workers > 0,
        pin_memory=device.type == "cuda",
        drop_last=len(train_set) % config.batch_size == 1,  # a batch of one breaks BatchNorm
    )


def train(
    model: nn.Module,
    splits: DatasetSplits,
    config: TrainConfig,
    out_dir: str | Path | None = None,
    extra: dict[str, Any] | None = None,
) -> TrainResult:
    """Train ``model`` on ``splits.train``, keep the best epoch on ``splits.val``, report on ``splits.test``.

    Args:
        model: a classifier (from :func:`medprune.models.create_model` if a checkpoint is to be written).
        splits: the dataset splits (``train``/``val``/``test`` datasets with ``labels``, and ``class_names``,
            ``image_size``, ``in_channels``, ``name``, ``fingerprint``).
        config: the run's settings (data fields are not used here; the splits are given).
        out_dir: when given, ``history.csv`` (written as epochs finish), ``model.safetensors`` + ``model.json`` and
            ``metrics.json`` are written there.
        extra: more fields for :attr:`TrainResult.extra` (and ``metrics.json``).

    Returns:
        A :class:`TrainResult`; ``result.model`` holds the best-validation weights.
    """
    start = time.perf_counter()
    device = resolve_device(config.device)
    out = Path(out_dir) if out_dir is not None else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    class_names = list(splits.class_names)
    data = _subsets(splits, config)
    model.to(device)
    weights = class_weights(data.train.labels, len(class_names)) if config.class_weights == "inverse" else None
    criterion = nn.CrossEntropyLoss(weight=None if weights is None else weights.to(device))
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=config.lr_step, gamma=config.lr_gamma)
    scaler = grad_scaler(device, config.amp)
    loader = _loader(data.train, config, device)
    logger.info(
        "training %s on %s: %d train / %d val / %d test images, %d epochs, device %s, class weights %s",
        type(model).__name__,
        getattr(splits, "name", "?"),
        len(data.train),
        len(data.val),
        len(data.test),
        config.epochs,
        device,
        None if weights is None else [round(w, 3) for w in weights.tolist()],
    )

    history = _History(out)
    best_score, best_epoch, best_val = -math.inf, 0, {}
    best_state: dict[str, torch.Tensor] = {}
    for epoch in range(1, config.epochs + 1):
        epoch_start = time.perf_counter()
        lr = optimizer.param_groups[0]["lr"]
        desc = f"epoch {epoch}/{config.epochs}"
        means = train_epoch(
            model,
            loader,
            cross_entropy_terms(criterion),
            optimizer,
            scaler,
            device,
            config.amp,
            desc,
            config.progress,
        )
        loss, accuracy = means["loss"], means["accuracy"]
        scheduler.step()
        if data.recalibration is not None:
            recalibrate_batchnorm(model, data.recalibration, batch_size=config.eval_batch_size, device=device)
        val = evaluate(model, data.val, class_names, batch_size=config.eval_batch_size)
        score = _score(val, config.select_on)
        improved = score > best_score
        if improved:
            best_score, best_epoch, best_val = score, epoch, val
            best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        row = {
            "epoch": epoch,
            "lr": lr,
            "train_loss": round(loss, 6),
            "train_accuracy": round(accuracy, 6),
            **{f"val_{k}": val[k] for k in ("loss", "accuracy", "balanced_accuracy", "macro_f1", "auroc")},
            "seconds": round(time.perf_counter() - epoch_start, 2),
        }
        history.append(row)
        if epoch == 1 and config.epochs > 1:
            logger.info(
                "epoch 1 took %.1fs: the %d epochs take about %s",
                row["seconds"],
                config.epochs,
                _duration(row["seconds"] * config.epochs),
            )
        logger.info(
            "epoch %d/%d lr %.0e train loss %.4f acc %.4f | val loss %.4f %s | %.1fs%s",
            epoch,
            config.epochs,
            lr,
            row["train_loss"],
            row["train_accuracy"],
            val["loss"],
            summary_line(val),
            row["seconds"],
            " *" if improved else "",
        )

    model.load_state_dict(best_state)
    model.eval()
    test = evaluate(model, data.test, class_names, batch_size=config.eval_batch_size)
    best_value = -best_score if config.select_on == "loss" else best_score  # _score negates the loss
    logger.info("kept epoch %d (val %s %.4f); test %s", best_epoch, config.select_on, best_value, summary_line(test))
    result = TrainResult(model, history.rows, best_epoch, best_value, best_val, test, out)
    result.extra = {"select_on": config.select_on, "dataset": getattr(splits, "name", None), "device": str(device)}
    result.extra.update(extra or {})
    result.wall_time_s = time.perf_counter() - start
    if out is not None:
        _write_outputs(result, splits, config, out)
    return result


def _write_outputs(result: TrainResult, splits: DatasetSplits, config: TrainConfig, out: Path) -> None:
    """The checkpoint (weights + sidecar with data, config and headline metrics) and ``metrics.json``."""
    meta = {
        "class_names": list(splits.class_names),
        "image_size": int(getattr(splits, "image_size", config.image_size)),
        "in_channels": int(getattr(splits, "in_channels", config.channels)),
        "normalization": _normalization(splits),
        "dataset": {"name": getattr(splits, "name", None), "fingerprint": getattr(splits, "fingerprint", None)},
        "train_config": config_to_dict(config),
        "metrics": {
            "best_epoch": result.best_epoch,
            "val": _headline(result.val_metrics),
            "test": _headline(result.test_metrics),
        },
    }
    result.checkpoint = save_checkpoint(out / "model", result.model, meta)
    write_text_atomic(out / "metrics.json", json.dumps(to_jsonable(result.to_dict()), indent=2, allow_nan=False) + "\n")


def _duration(seconds: float) -> str:
    """``3725`` -> ``'1 h 2 min'``; under an hour in minutes, under a minute in seconds."""
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60)} min"


def _headline(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: metrics.get(k) for k in ("n", "accuracy", "balanced_accuracy", "macro_f1", "auroc", "loss")}
