"""The sweep of one model: every (method, sampling) curve at every rate, one durable row per evaluation and split.

Data flow per model and setting: baseline rows -> for each curve: scores (given by a callback, e.g. the score store)
-> ``masks_from_scores`` at each rate -> ``apply_masks`` (undone after each rate) -> optional BatchNorm recalibration
(undone too) -> ``predict`` on every split (``val`` and ``test``) -> metrics, achieved rate, parameters and MACs
removed, per-image predictions -> one row per split. A curve that fine-tunes (``CurveParams.recovery``) evaluates a
fine-tuned masked copy instead (:func:`medprune.sweep.recovery_step.recovered_model`).
Rows already in the log (same parameters) are neither recomputed nor rewritten, and a curve whose rows are all done is
not even scored, so restarting a killed sweep resumes where it stopped.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from medprune.metrics import metrics_from_predictions, predict
from medprune.models.units import unit_groups
from medprune.options import NO_SAMPLING, Recalibrate
from medprune.progress import progress
from medprune.pruning import achieved_rate, apply_masks, masks_from_scores, validate_scores
from medprune.pruning.cost import COST_COLUMNS, CostCounter
from medprune.pruning.ranking import Ranking
from medprune.recovery.recalibration import recalibrated_batchnorm
from medprune.runtime import model_device
from medprune.scoring.request import ScoreRecipe
from medprune.sweep.on_device import on_device
from medprune.sweep.recovery_step import Recovery, recovered_model
from medprune.sweep.table import BASELINE, Row, RowLog, encode_classes, format_rate, row_id, row_key

logger = logging.getLogger(__name__)

#: Default rates: 0.00 to 0.95 in steps of 0.05.
DEFAULT_RATES: tuple[float, ...] = tuple(round(0.05 * i, 2) for i in range(20))
ScoresFor = Callable[[str, str], Mapping[str, Tensor]]


@dataclass(frozen=True)
class CurveParams:
    """Everything but (method, sampling, rate, split) that identifies a row of one model's sweep.

    ``scoring`` and ``ranking`` are the sweep's score recipe and ranking under one setting (its sign, scope and
    normalize). ``recalibrate="bn"`` re-estimates the BatchNorm statistics on the sweep's recalibration images after
    masking (``recalibrate_samples`` of them, recorded in the key). ``recovery`` fine-tunes each masked model (epochs,
    distillation, recipe; in the key only when it fine-tunes). ``seed`` is the selection seed (sample selection,
    random scores and fine-tuning).
    """

    model: str
    dataset: str
    checkpoint: str
    scoring: ScoreRecipe = ScoreRecipe()
    seed: int = 0
    ranking: Ranking = Ranking()
    recalibrate: Recalibrate = "none"
    recalibrate_samples: int = 0
    recovery: Recovery = Recovery()

    def row(self, method: str, sampling: str, rate: float, split: str = "test") -> Row:
        """The identifying fields of one row.

        Data-free methods record no sample count or target; the baseline (one per checkpoint and split) records no
        setting, no recovery and seed 0, so every curve of a checkpoint shares it.
        """
        sampled = sampling != NO_SAMPLING
        base = method == BASELINE
        recalibrated = self.recalibrate != "none" and not base
        recovery = Recovery() if base else self.recovery
        row: Row = {
            "model": self.model,
            "dataset": self.dataset,
            "checkpoint": self.checkpoint,
            "method": method,
            "sampling": sampling,
            "sign": self.scoring.sign if not base else "none",
            "target": self.scoring.target if sampled else "none",
            "n_per_class": self.scoring.n_per_class if sampled else 0,
            "seed": self.seed if not base else 0,
            "scope": self.ranking.scope if not base else "none",
            "normalize": self.ranking.normalize if not base else "none",
            "recalibrate": self.recalibrate if recalibrated else "none",
            "recalibrate_samples": self.recalibrate_samples if recalibrated else 0,
            "couplings": bool(self.ranking.couplings) and not base,
            **recovery.columns(),
            "rate": float(rate),
            "split": split,
        }
        row["row_id"] = row_id(row)
        return row


def _column_name(name: str) -> str:
    return re.sub(r"[^0-9A-Za-z_.-]+", "_", str(name).strip())


def metric_columns(metrics: Mapping[str, Any]) -> Row:
    """Flatten :func:`medprune.metrics.metrics_from_predictions` output into table columns.

    Scalars ``accuracy``, ``balanced_accuracy``, ``macro_f1``, ``auroc``, ``worst_recall`` (lowest per-class
    sensitivity), ``n_test``; per class ``recall_<class>`` and ``specificity_<class>``. Undefined values are NaN.
    """

    def num(value: Any) -> float:
        return math.nan if value is None else float(value)

    out: Row = {key: num(metrics.get(key)) for key in ("accuracy", "balanced_accuracy", "macro_f1", "auroc")}
    out["worst_recall"] = num(metrics.get("worst_class_recall"))  # the results column keeps its committed name
    out["n_test"] = int(metrics["n"])
    for name, values in metrics["per_class"].items():
        out[f"recall_{_column_name(name)}"] = num(values.get("sensitivity"))
        out[f"specificity_{_column_name(name)}"] = num(values.get("specificity"))
    return out


def evaluate_rows(
    model: nn.Module, inputs: Tensor, labels: Tensor | np.ndarray, class_names: Sequence[str], batch_size: int
) -> Row:
    """Metric columns of ``model`` on pre-stacked test tensors."""
    probs, truth = predict(model, (inputs, labels), batch_size=batch_size)
    return metric_columns(metrics_from_predictions(probs, truth, class_names))


def evaluate_split(
    model: nn.Module,
    inputs: Tensor,
    labels: Tensor | np.ndarray,
    class_names: Sequence[str],
    batch_size: int,
    amp: bool = False,
) -> Row:
    """Metric columns of ``model`` on one split, ``n_images`` and the per-image ``predictions`` (base64 classes).

    ``amp``: float16 autocast on CUDA (see :func:`medprune.metrics.predict`; no effect on the CPU)."""
    probs, truth = predict(model, (inputs, labels), batch_size=batch_size, amp=amp)
    metrics = metric_columns(metrics_from_predictions(probs, truth, class_names))
    metrics["n_images"] = metrics.pop("n_test")
    metrics["predictions"] = encode_classes(probs.argmax(axis=1))
    return metrics


def _finish(row: Row, metrics: Row, started: float) -> Row:
    row.update(metrics)
    row["seconds"] = round(time.perf_counter() - started, 4)
    row["finished_at"] = datetime.now(timezone.utc).isoformat(timespec="microseconds")
    return row


@dataclass
class SweepInputs:
    """The data one model's sweep evaluates on and recalibrates with.

    Attributes:
        splits: ``{split: (inputs, labels)}`` pre-stacked, e.g. ``{"val": ..., "test": ...}``; every pruned model
            is evaluated on each, one row per split.
        class_names: class names (per-class columns).
        recalibration: images BatchNorm statistics are re-estimated on when ``params.recalibrate == "bn"``.
        cost: counts parameters and MACs removed (``None``: the columns are left out).
        batch_size: images per forward pass.
        amp: evaluate under float16 autocast when the model is on CUDA (no effect on the CPU).
        train: the training split (training transform) a fine-tuning curve trains on (``params.recovery``).
    """

    splits: Mapping[str, tuple[Tensor, Tensor | np.ndarray]]
    class_names: Sequence[str]
    recalibration: Tensor | None = None
    cost: CostCounter | None = None
    batch_size: int = 256
    amp: bool = False
    train: Any = None

    def on(self, device: torch.device) -> SweepInputs:
        """The same inputs with the images on ``device``, each sent there once and reused by every later sweep
        (:func:`medprune.sweep.on_device.on_device`); labels stay on the host."""
        splits = {split: (on_device(inputs, device), labels) for split, (inputs, labels) in self.splits.items()}
        recalibration = None if self.recalibration is None else on_device(self.recalibration, device)
        return replace(self, splits=splits, recalibration=recalibration)


def sweep_model(
    model: nn.Module,
    params: CurveParams,
    curves: Sequence[tuple[str, str]],
    rates: Sequence[float],
    scores_for: ScoresFor,
    data: SweepInputs,
    log: RowLog,
    couplings: Sequence[Sequence[str]] | None = None,
) -> list[Row]:
    """Evaluate the baseline and every curve of one model at every rate on every split, appending new rows to ``log``.

    Args:
        model: the trained classifier (eval mode; parameters and BatchNorm statistics are restored after every rate).
        params: identifying fields shared by the rows (setting, selection seed, ...).
        curves: ``(method, sampling)`` pairs; data-free methods use sampling ``"none"``.
        rates: target pruning rates in [0, 1) (validated by the caller); the row records the ``achieved_rate``.
        scores_for: ``scores_for(method, sampling) -> {group: Tensor(units)}``; only called for unfinished curves.
        data: evaluation splits, class names, recalibration images, cost counter, batch size.
        log: the durable row log (rows already there are skipped).
        couplings: groups pruned together (passed to :func:`masks_from_scores`).

    Returns:
        The rows of this model (old and new), baselines first.
    """
    if params.recalibrate == "bn" and data.recalibration is None:
        raise ValueError("recalibrate='bn' needs recalibration images (SweepInputs.recalibration)")
    if params.recovery.active and data.train is None:
        raise ValueError("finetune_epochs >= 1 needs the training split (SweepInputs.train)")
    data = data.on(model_device(model))  # once per host tensor: every later rate, setting and curve reuses it
    done = log.finished()
    groups = unit_groups(model)
    rows, pending = _split_done(params, curves, rates, list(data.splits), done)
    # Scores first, all checked against the model, before any (long) evaluation.
    scored = [
        (method, sampling, todo, _checked_scores(scores_for, method, sampling, groups))
        for method, sampling, todo in pending
    ]
    references = {split: _baseline(model, params, split, data, log, done) for split in data.splits}
    rows[:0] = list(references.values())
    label = f"sweep {params.model}/{params.dataset} seed {params.seed}"
    bar = progress(sum(len(todo) for *_, todo in pending), label, "rate", leave=False)
    for method, sampling, todo, scores in scored:
        for rate, missing in todo:
            started = time.perf_counter()
            for split, metrics in _pruned_metrics(model, scores, rate, params, couplings, references, data).items():
                if split in missing:
                    row = missing[split]
                    log.append(_finish(row, metrics, started))
                    rows.append(row)
            bar.update()
        last = todo[-1][1].get("val") or next(iter(todo[-1][1].values()))
        logger.info(
            "%s/%s seed %d %s/%s: %d rates evaluated (%s accuracy %.4f at rate %s, achieved %.3f)",
            params.model,
            params.dataset,
            params.seed,
            method,
            sampling,
            len(todo),
            last["split"],
            last["accuracy"],
            format_rate(last["rate"])[:4],
            last["achieved_rate"],
        )
    bar.close()
    return rows


def _split_done(
    params: CurveParams,
    curves: Sequence[tuple[str, str]],
    rates: Sequence[float],
    splits: Sequence[str],
    done: Mapping[Any, Row],
) -> tuple[list[Row], list[tuple[str, str, list[tuple[float, dict[str, Row]]]]]]:
    """Rows already in the log, and per unfinished curve the rates still to evaluate with their missing split rows."""
    rows: list[Row] = []
    pending: list[tuple[str, str, list[tuple[float, dict[str, Row]]]]] = []
    for method, sampling in curves:
        todo: list[tuple[float, dict[str, Row]]] = []
        for rate in rates:
            missing: dict[str, Row] = {}
            for split in splits:
                row = params.row(method, sampling, rate, split)
                if row_key(row) in done:
                    rows.append(done[row_key(row)])
                else:
                    missing[split] = row
            if missing:
                todo.append((rate, missing))
        if todo:
            pending.append((method, sampling, todo))
    return rows, pending


def _checked_scores(scores_for: ScoresFor, method: str, sampling: str, groups: Sequence[Any]) -> dict[str, Tensor]:
    scores = {k: torch.as_tensor(v) for k, v in scores_for(method, sampling).items()}
    validate_scores(scores, groups, what=f"{method}/{sampling} scores")
    return scores


def _baseline(
    model: nn.Module, params: CurveParams, split: str, data: SweepInputs, log: RowLog, done: Mapping[Any, Row]
) -> Row:
    """The unpruned row of one split: from the log when there, else evaluated and appended (with the labels)."""
    base = params.row(BASELINE, NO_SAMPLING, 0.0, split)
    if row_key(base) in done:
        return done[row_key(base)]
    started = time.perf_counter()
    inputs, labels = data.splits[split]
    metrics = evaluate_split(model, inputs, labels, data.class_names, data.batch_size, data.amp)
    metrics["labels"] = encode_classes(np.asarray(labels).reshape(-1))
    metrics.update({"achieved_rate": 0.0, **(_no_cost(data.cost))})
    log.append(_finish(base, metrics, started))
    logger.info("%s/%s baseline: %s accuracy %.4f", params.model, params.dataset, split, base["accuracy"])
    return base


def _no_cost(cost: CostCounter | None) -> Row:
    if cost is None:
        return {}
    return {
        k: (None if not cost.supported else (0 if k in ("params_removed", "macs_removed") else 0.0))
        for k in COST_COLUMNS
    }


def _pruned_metrics(
    model: nn.Module,
    scores: Mapping[str, Tensor],
    rate: float,
    params: CurveParams,
    couplings: Sequence[Sequence[str]] | None,
    references: Mapping[str, Row],
    data: SweepInputs,
) -> dict[str, Row]:
    """Per split: metric columns of the model masked at ``rate`` (then recalibrated and fine-tuned if asked),
    achieved rate, cost."""
    masks = masks_from_scores(
        scores,
        rate,
        **params.ranking.keywords(),
        couplings=couplings,
    )
    extra: Row = {"achieved_rate": achieved_rate(masks)}
    if data.cost is not None:
        extra.update(data.cost.removed(masks))
    if extra["achieved_rate"] == 0:  # nothing pruned (rate 0): the model is the baseline, bit for bit
        keep = set(references[next(iter(references))]) - {*params.row(BASELINE, NO_SAMPLING, 0.0), "seconds"}
        keep -= {"finished_at", "labels", *extra}
        return {split: {**{k: ref[k] for k in keep if k in ref}, **extra} for split, ref in references.items()}
    result: dict[str, Row] = {}
    if params.recovery.active:
        recalibration = data.recalibration if params.recalibrate == "bn" else None
        tuned = recovered_model(
            model,
            masks,
            params.recovery,
            data.train,
            seed=params.seed,
            recalibration=recalibration,
        )
        for split, (inputs, labels) in data.splits.items():
            metrics = evaluate_split(tuned, inputs, labels, data.class_names, data.batch_size, data.amp)
            result[split] = {**metrics, **extra}
        return result
    with apply_masks(model, masks):
        recalibrated = params.recalibrate == "bn"
        handle = recalibrated_batchnorm(model, data.recalibration, batch_size=data.batch_size) if recalibrated else None
        try:
            for split, (inputs, labels) in data.splits.items():
                metrics = evaluate_split(model, inputs, labels, data.class_names, data.batch_size, data.amp)
                result[split] = {**metrics, **extra}
        finally:
            if handle is not None:
                handle.restore()
    return result
