"""The sweep of one model: every (method, sampling) curve at every rate, one durable row per evaluation.

Data flow per model: baseline row -> for each curve: scores (given by a callback, e.g. the score store) ->
``masks_from_scores`` at each rate -> ``apply_masks`` (undone after each rate) -> ``predict`` -> metrics -> row.
Rows already in the log (same parameters) are neither recomputed nor rewritten, and a curve whose rows are all done is
not even scored, so restarting a killed sweep resumes where it stopped.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from medprune.metrics import metrics_from_predictions, predict
from medprune.options import NO_SAMPLING
from medprune.pruning import apply_masks, masks_from_scores, validate_scores
from medprune.sweep.table import BASELINE, Row, RowLog, format_rate, row_id, row_key
from medprune.units import unit_groups

logger = logging.getLogger(__name__)

#: Default rates: 0.00 to 0.95 in steps of 0.05.
DEFAULT_RATES: tuple[float, ...] = tuple(round(0.05 * i, 2) for i in range(20))
#: Sampling value of data-free methods (random, magnitude) and of the baseline.

ScoresFor = Callable[[str, str], Mapping[str, Tensor]]


@dataclass(frozen=True)
class CurveParams:
    """Everything but (method, sampling, rate) that identifies a row of one model's sweep."""

    model: str
    dataset: str
    checkpoint: str
    sign: str = "signed"
    target: str = "true"
    n_per_class: int = 10
    seed: int = 0
    scope: str = "global"
    normalize: str = "none"
    min_keep: int = 1

    def row(self, method: str, sampling: str, rate: float) -> Row:
        """The identifying fields of one row (data-free methods and the baseline record no sample count)."""
        sampled = sampling != NO_SAMPLING
        row: Row = {
            "model": self.model,
            "dataset": self.dataset,
            "checkpoint": self.checkpoint,
            "method": method,
            "sampling": sampling,
            "sign": self.sign if method != BASELINE else "none",
            "target": self.target if sampled else "none",
            "n_per_class": self.n_per_class if sampled else 0,
            "seed": self.seed,
            "scope": self.scope if method != BASELINE else "none",
            "normalize": self.normalize if method != BASELINE else "none",
            "rate": float(rate),
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
    out["worst_recall"] = num(metrics.get("worst_class_sensitivity"))
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


def _finish(row: Row, metrics: Row, started: float) -> Row:
    row.update(metrics)
    row["seconds"] = round(time.perf_counter() - started, 4)
    row["finished_at"] = datetime.now(timezone.utc).isoformat(timespec="microseconds")
    return row


def sweep_model(
    model: nn.Module,
    params: CurveParams,
    curves: Sequence[tuple[str, str]],
    rates: Sequence[float],
    scores_for: ScoresFor,
    test_data: tuple[Tensor, Tensor | np.ndarray],
    class_names: Sequence[str],
    log: RowLog,
    batch_size: int = 256,
    couplings: Sequence[Sequence[str]] | None = None,
) -> list[Row]:
    """Evaluate the baseline and every curve of one model at every rate, appending each new row to ``log``.

    Args:
        model: the trained classifier (eval mode; its parameters are restored after every rate).
        params: identifying fields shared by the rows.
        curves: ``(method, sampling)`` pairs; data-free methods use sampling ``"none"``.
        rates: pruning rates in [0, 1) (validated by the caller).
        scores_for: ``scores_for(method, sampling) -> {group: Tensor(units)}``; only called for unfinished curves.
        test_data: pre-stacked ``(inputs, labels)`` of the evaluation split.
        class_names: class names (per-class columns).
        log: the durable row log (rows already there are skipped).
        batch_size: images per forward pass.
        couplings: groups pruned together (passed to :func:`masks_from_scores`).

    Returns:
        The rows of this model (old and new), baseline first.
    """
    done = log.finished()
    groups = unit_groups(model)
    rows, pending = _split_done(params, curves, rates, done)
    # Scores first, all checked against the model, before any (long) evaluation.
    scored = [
        (method, sampling, todo, _checked_scores(scores_for, method, sampling, groups))
        for method, sampling, todo in pending
    ]
    reference = _baseline(model, params, test_data, class_names, log, done, batch_size)
    rows.insert(0, reference)
    total = sum(g.num_units for g in groups)
    for method, sampling, todo, scores in scored:
        for row in todo:
            started = time.perf_counter()
            metrics = _pruned_metrics(
                model, scores, row["rate"], params, couplings, total, reference, test_data, class_names, batch_size
            )
            log.append(_finish(row, metrics, started))
            rows.append(row)
        logger.info(
            "%s/%s %s/%s: %d rates evaluated (accuracy %.4f at rate %s)",
            params.model,
            params.dataset,
            method,
            sampling,
            len(todo),
            todo[-1]["accuracy"],
            format_rate(todo[-1]["rate"])[:4],
        )
    return rows


def _split_done(
    params: CurveParams, curves: Sequence[tuple[str, str]], rates: Sequence[float], done: Mapping[Any, Row]
) -> tuple[list[Row], list[tuple[str, str, list[Row]]]]:
    """Rows already in the log, and per unfinished curve the rows still to evaluate."""
    rows: list[Row] = []
    pending: list[tuple[str, str, list[Row]]] = []
    for method, sampling in curves:
        curve_rows = [params.row(method, sampling, rate) for rate in rates]
        rows.extend(done[row_key(r)] for r in curve_rows if row_key(r) in done)
        todo = [r for r in curve_rows if row_key(r) not in done]
        if todo:
            pending.append((method, sampling, todo))
    return rows, pending


def _checked_scores(scores_for: ScoresFor, method: str, sampling: str, groups: Sequence[Any]) -> dict[str, Tensor]:
    scores = {k: torch.as_tensor(v) for k, v in scores_for(method, sampling).items()}
    validate_scores(scores, groups, what=f"{method}/{sampling} scores")
    return scores


def _baseline(
    model: nn.Module,
    params: CurveParams,
    test_data: tuple[Tensor, Tensor | np.ndarray],
    class_names: Sequence[str],
    log: RowLog,
    done: Mapping[Any, Row],
    batch_size: int,
) -> Row:
    """The unpruned row: from the log when there, else evaluated and appended."""
    base = params.row(BASELINE, NO_SAMPLING, 0.0)
    if row_key(base) in done:
        return done[row_key(base)]
    started = time.perf_counter()
    metrics = {**evaluate_rows(model, *test_data, class_names, batch_size), "pruned_fraction": 0.0}
    log.append(_finish(base, metrics, started))
    logger.info("%s/%s baseline: accuracy %.4f", params.model, params.dataset, base["accuracy"])
    return base


def _pruned_metrics(
    model: nn.Module,
    scores: Mapping[str, Tensor],
    rate: float,
    params: CurveParams,
    couplings: Sequence[Sequence[str]] | None,
    total: int,
    reference: Row,
    test_data: tuple[Tensor, Tensor | np.ndarray],
    class_names: Sequence[str],
    batch_size: int,
) -> Row:
    """Metric columns of the model with the units of ``scores`` masked at ``rate`` (plus ``pruned_fraction``)."""
    masks = masks_from_scores(
        scores,
        rate,
        scope=params.scope,
        normalize=params.normalize,  # type: ignore[arg-type]
        min_keep=params.min_keep,
        couplings=couplings,
    )
    kept = sum(int(m.sum()) for m in masks.values())
    if kept == total:  # nothing pruned (rate 0): the model is the baseline, bit for bit
        skip = (*params.row(BASELINE, NO_SAMPLING, 0.0), "seconds", "finished_at")
        metrics = {k: v for k, v in reference.items() if k not in skip}
    else:
        with apply_masks(model, masks):
            metrics = evaluate_rows(model, *test_data, class_names, batch_size)
    metrics["pruned_fraction"] = 1.0 - kept / total
    return metrics
