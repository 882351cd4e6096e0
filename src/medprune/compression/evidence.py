"""Measurements behind the model card of ``medprune compress``: per-class rates with Wilson intervals, per-layer
costs, CPU latency and the metric a compression tolerance is read on. Each returns what
:mod:`medprune.compression.card` formats.

>>> rates = class_rates([0, 0, 1, 1], [0, 1, 1, 1], ["normal", "pneumonia"])
>>> rates[1].sensitivity, rates[1].specificity
(1.0, 0.5)
"""

from __future__ import annotations

import json
import logging
import shlex
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from medprune.compression.card import ClassRates, Latency, LayerChange, SearchRow, SplitMetrics
from medprune.compression.decision import (
    BOUND_METRICS,
    flips,
    mcnemar_exact,
    non_inferiority,
    paired_bound,
    smallest_certified_tolerance,
)
from medprune.config import config_to_dict, flat_record
from medprune.metrics import metrics_from_predictions, predict
from medprune.models.units import unit_groups
from medprune.options import LOSSLESS_METRICS
from medprune.pruning.cost import interleaved_latency, layer_costs, model_cost
from medprune.pruning.export import run_onnx
from medprune.pruning.folding import batchnorm_pairs
from medprune.pruning.physical import example_inputs_for
from medprune.report.figures import plot_gallery
from medprune.runtime import fixed_threads
from medprune.stats import wilson_interval

logger = logging.getLogger(__name__)

__all__ = [
    "ONNX_TOLERANCE",
    "onnx_tolerance",
    "onnx_difference",
    "choice_record",
    "reproduce_command",
    "metric_value",
    "metric_steps",
    "resolution_text",
    "validation_resolution",
    "class_rates",
    "split_metrics",
    "predictions_and_metrics",
    "promise_on_test",
    "card_warnings",
    "flip_gallery",
    "layer_changes",
    "latency_rows",
    "max_output_difference",
    "size_totals",
    "FOLD_TOLERANCE",
    "folding_record",
    "StageTimer",
]


def metric_value(metrics: Mapping[str, Any], metric: str) -> float | None:
    """``metric`` of a :func:`medprune.metrics.metrics_from_predictions` dict (``worst_class_recall`` included)."""
    if metric not in LOSSLESS_METRICS:
        raise ValueError(f"metric={metric!r} is not allowed; valid values: {', '.join(LOSSLESS_METRICS)}")
    value = metrics.get(metric)
    return None if value is None else float(value)


def metric_steps(labels: Sequence[int] | np.ndarray | Tensor, names: Sequence[str], metric: str) -> dict[str, float]:
    """How far one more error in each class moves ``metric`` on a split with these ``labels`` (a fraction).

    ``balanced_accuracy``: ``1 / (C * n_c)``; ``accuracy``: ``1 / n``; ``worst_class_recall``: ``1 / n_c`` (when
    ``c`` is the worst class). Classes without images are left out; ``auroc`` has no per-error step (empty dict).

    >>> steps = metric_steps([0] * 57 + [1] * 21, ["benign", "malignant"], "balanced_accuracy")
    >>> {name: round(step, 4) for name, step in steps.items()}
    {'benign': 0.0088, 'malignant': 0.0238}
    """
    counts = np.bincount(np.asarray(labels, dtype=np.int64).ravel(), minlength=len(names))
    n, classes = int(counts.sum()), len(names)
    step = {
        "balanced_accuracy": lambda n_c: 1 / (classes * n_c),
        "accuracy": lambda n_c: 1 / n,
        "worst_class_recall": lambda n_c: 1 / n_c,
    }.get(metric)
    if step is None:
        return {}
    return {str(name): step(int(counts[c])) for c, name in enumerate(names) if counts[c] > 0}


def resolution_text(steps: Mapping[str, float], tolerance: float, metric: str) -> tuple[str | None, bool]:
    """One line stating ``steps`` in points, and whether the tolerance is below one error of some class.

    Returns:
        (the line, or ``None`` without steps; ``True`` when one error of the coarsest class exceeds ``tolerance``).

    >>> resolution_text({"benign": 0.0088, "malignant": 0.0238}, 0.01, "balanced_accuracy")[1]
    True
    """
    if not steps:
        return None, False
    parts = ", ".join(f"'{name}' {100 * step:.2f}" for name, step in sorted(steps.items(), key=lambda kv: -kv[1]))
    text = f"one more error moves validation {metric} by (points per class) {parts}"
    coarse = [name for name, step in steps.items() if step > tolerance + 1e-12]
    if coarse:
        which = "every class" if len(coarse) == len(steps) else ", ".join(f"class '{name}'" for name in coarse)
        text += f"; the tolerance ({100 * tolerance:.2f} points) is below one error of {which}"
    return text, bool(coarse)


def validation_resolution(
    labels: Tensor | np.ndarray, names: Sequence[str], metric: str, tolerance: float
) -> tuple[str | None, bool]:
    """:func:`resolution_text` of a validation split, logged as a warning when one error exceeds ``tolerance``."""
    text, coarse = resolution_text(metric_steps(labels, names, metric), tolerance, metric)
    if coarse:
        logger.warning("validation resolution (%d images): %s", len(labels), text)
    return text, coarse


def class_rates(
    labels: Sequence[int] | np.ndarray, predictions: Sequence[int] | np.ndarray, names: Sequence[str]
) -> list[ClassRates]:
    """Per class: sensitivity (its recall) and specificity (recall of the other classes), with 95% Wilson intervals."""
    labels, predictions = np.asarray(labels), np.asarray(predictions)
    rows = []
    for c, name in enumerate(names):
        positive, negative = labels == c, labels != c
        tp, tn = int((predictions[positive] == c).sum()), int((predictions[negative] != c).sum())
        n_pos, n_neg = int(positive.sum()), int(negative.sum())
        rows.append(
            ClassRates(
                name=str(name),
                positives=n_pos,
                negatives=n_neg,
                sensitivity=tp / n_pos if n_pos else None,
                sensitivity_ci=wilson_interval(tp, n_pos),
                specificity=tn / n_neg if n_neg else None,
                specificity_ci=wilson_interval(tn, n_neg),
            )
        )
    return rows


def predictions_and_metrics(
    model: nn.Module, data: tuple[Tensor, Tensor], names: Sequence[str], batch_size: int = 256
) -> tuple[np.ndarray, dict[str, Any]]:
    """The predicted class of every image of pre-stacked ``data`` and all metrics of ``model`` on it."""
    probs, truth = predict(model, data, batch_size=batch_size)
    return np.asarray(probs).argmax(axis=1), metrics_from_predictions(probs, truth, list(names))


def split_metrics(
    model: nn.Module, data: tuple[Tensor, Tensor], names: Sequence[str], batch_size: int = 256
) -> tuple[SplitMetrics, np.ndarray]:
    """The card's metrics of ``model`` on pre-stacked ``data``, and its predicted class per image."""
    predicted, metrics = predictions_and_metrics(model, data, names, batch_size)
    card = SplitMetrics(
        n=int(metrics["n"]),
        accuracy=metrics["accuracy"],
        balanced_accuracy=metrics["balanced_accuracy"],
        auroc=metrics["auroc"],
        worst_class_recall=metrics["worst_class_recall"],
        per_class=class_rates(np.asarray(data[1]), predicted, names),
    )
    return card, predicted


def promise_on_test(
    labels: np.ndarray,
    original: np.ndarray,
    compressed: np.ndarray,
    names: Sequence[str],
    *,
    metric: str,
    tolerance: float,
    confidence: float,
) -> dict[str, Any]:
    """The test evidence of the card: non-inferiority of the compressed model at margin ``tolerance`` on ``metric``
    and on worst-class recall (one-sided paired bootstrap over the test images, with the smallest margin the test
    split certifies), the flips per class, and the exact McNemar test of the two models' errors.

    >>> y = np.array([0] * 30 + [1] * 30)
    >>> promise_on_test(y, y, y, ["a", "b"], metric="balanced_accuracy", tolerance=0.01, confidence=0.95)["mcnemar p"]
    1.0
    """
    verdicts: dict[str, Any] = {}
    for name in dict.fromkeys([metric, "worst_class_recall"]):
        if name not in BOUND_METRICS:
            verdicts[name] = {"verdict": "not shown (no paired bound for this metric)"}
            continue
        bound = paired_bound(labels, original, compressed, metric=name, confidence=confidence)
        verdicts[name] = {
            "difference": bound.difference,
            "lower bound": bound.lower_bound,
            "verdict": non_inferiority(bound, tolerance),
            "smallest margin certified": smallest_certified_tolerance([bound]),
        }
    rows = flips(labels, original, compressed, names)
    worse, better = sum(r.newly_wrong for r in rows), sum(r.newly_right for r in rows)
    return {
        "margin": tolerance,
        "confidence": confidence,
        "method": f"one-sided paired bootstrap over the {len(labels)} test images (percentile, 2000 resamples, seed 0)",
        "non-inferiority": verdicts,
        "flips": [asdict(r) for r in rows],
        "mcnemar p": mcnemar_exact(newly_wrong=worse, newly_right=better),
    }


#: Images in the card's gallery of changed predictions.
GALLERY_SIZE = 8


def flip_gallery(
    images: Tensor,
    labels: np.ndarray,
    original: np.ndarray,
    compressed: np.ndarray,
    names: Sequence[str],
    path: Path,
) -> str | None:
    """A PNG of up to :data:`GALLERY_SIZE` test images whose prediction changed (newly wrong first), captioned
    ``true: original -> compressed``; its file name, or ``None`` when no prediction changed."""
    newly_wrong = np.flatnonzero((original == labels) & (compressed != labels))
    newly_right = np.flatnonzero((original != labels) & (compressed == labels))
    chosen = [*newly_wrong[:GALLERY_SIZE], *newly_right[: max(0, GALLERY_SIZE - len(newly_wrong))]]
    if not chosen:
        return None
    captions = [
        f"{'newly wrong' if i in set(newly_wrong) else 'newly right'}\n{names[labels[i]]}: "
        f"{names[original[i]]} -> {names[compressed[i]]}"
        for i in chosen
    ]
    title = f"Test images whose prediction changed ({len(newly_wrong)} newly wrong, {len(newly_right)} newly right)"
    plot_gallery(images[chosen].numpy(), captions, path, title)
    return path.name


def card_warnings(
    original: SplitMetrics,
    compressed: SplitMetrics,
    *,
    resolution_coarse: bool,
    resolution: str | None,
    non_monotone_rates: Sequence[float],
    rule: str,
) -> list[str]:
    """What a person must see first: a class the compressed model no longer finds, a tolerance finer than the
    validation split resolves, a search that accepted a rate above a refused one, an uncertified choice."""
    warnings = []
    before = {c.name: c.sensitivity for c in original.per_class}
    for c in compressed.per_class:
        if (before.get(c.name) or 0) > 0 and c.sensitivity == 0:
            warnings.append(
                f"class '{c.name}': test recall {before[c.name]:.2f} -> 0.00: the compressed model never finds it"
            )
    if resolution_coarse and resolution:
        warnings.append(f"validation resolution: {resolution}")
    if non_monotone_rates:
        warnings.append(
            f"non-monotone search: rate(s) {list(non_monotone_rates)} passed above a refused rate and were not chosen"
        )
    if rule == "point":
        warnings.append("uncertified: chosen by the validation point estimate (decision_rule=point), not a bound")
    return warnings


def layer_changes(original: nn.Module, compressed: nn.Module, masks: Mapping[str, Tensor]) -> list[LayerChange]:
    """Units, parameters and MACs (one image) of every leaf layer with parameters, before and after."""
    macs_a, params_a = layer_costs(original, example_inputs_for(original, 1))
    macs_b, params_b = layer_costs(compressed, example_inputs_for(compressed, 1))
    groups = {g.module: g for g in unit_groups(original)}
    rows = []
    for name, module in original.named_modules():
        if list(module.children()) or not params_a.get(name):
            continue
        group = groups.get(name)
        kept = int(torch.as_tensor(masks[group.name]).sum()) if group is not None else None
        rows.append(
            LayerChange(
                name=name,
                kind=group.kind if group is not None else type(module).__name__,
                units_before=group.num_units if group is not None else None,
                units_after=kept,
                params_before=params_a[name],
                params_after=params_b.get(name, 0),
                macs_before=macs_a.get(name, 0),
                macs_after=macs_b.get(name, 0),
            )
        )
    return rows


#: A speed-up above this multiple of the MACs reduction is flagged: removed channels cannot make a model faster than
#: the arithmetic they remove, so such a figure is timing noise (a cold first run, another job on the machine).
SPEEDUP_SANITY = 1.5


def latency_rows(
    original: nn.Module,
    compressed: nn.Module,
    batches: Sequence[int] = (1, 32),
    threads: int = 1,
    repeats: int = 20,
    macs_ratio: float | None = None,
) -> list[Latency]:
    """CPU latency per batch of both models, timed interleaved after warm-up with ``threads`` torch threads
    (restored after); a speed-up above :data:`SPEEDUP_SANITY` times ``macs_ratio`` (MACs before / after) is flagged."""
    rows = []
    with fixed_threads(threads):
        for batch in batches:
            inputs = (example_inputs_for(original, batch), example_inputs_for(compressed, batch))
            timing = interleaved_latency(original.cpu(), compressed.cpu(), inputs, repeats=repeats)
            speedup = timing.first_ms / timing.second_ms if timing.second_ms > 0 else None
            flag = ""
            if speedup is not None and macs_ratio and speedup > SPEEDUP_SANITY * macs_ratio:
                flag = (
                    f"speed-up {speedup:.1f}x is above {SPEEDUP_SANITY}x the MACs reduction ({macs_ratio:.1f}x): noise"
                )
                logger.warning("latency at batch %d: %s", batch, flag)
            rows.append(
                Latency(
                    batch=batch,
                    threads=threads,
                    original_ms=timing.first_ms,
                    compressed_ms=timing.second_ms,
                    speedup=speedup,
                    original_iqr_ms=timing.first_iqr_ms,
                    compressed_iqr_ms=timing.second_iqr_ms,
                    original_cpu_ms=timing.first_cpu_ms,
                    compressed_cpu_ms=timing.second_cpu_ms,
                    repeats=repeats,
                    flag=flag,
                )
            )
    return rows


def max_output_difference(a: nn.Module, b: nn.Module, inputs: Tensor) -> float:
    """Largest |difference| between the two models' outputs on ``inputs`` (both put in eval mode)."""
    with torch.no_grad():
        return float((a.eval()(inputs) - b.eval()(inputs)).abs().max())


#: Largest |logit difference| the folded model may show against the masked one on the validation probe (float32: the
#: folding reorders a few products and sums per channel; tests/test_folding.py measures ~1e-5 on outputs of size ~1).
FOLD_TOLERANCE = 1e-4

#: Largest |logit difference| the exported ONNX model may show against PyTorch, per unit of the largest |logit| (at
#: least 1): float32 rounding grows with the logits' scale (a model with logits of 2e4 differs by ~1 in absolute terms
#: and by 6.5e-5 relatively, as measured on a random efficientnet_b0; trained MedMNIST models: ~3e-6 on logits ~10).
ONNX_TOLERANCE = 1e-4


def onnx_tolerance(reference: Tensor) -> float:
    """The largest acceptable |ONNX - PyTorch| logit difference for PyTorch's logits ``reference``:
    :data:`ONNX_TOLERANCE` times the largest |logit|, or times 1 when the logits are smaller than 1.

    >>> onnx_tolerance(torch.tensor([[0.5, -0.2]])), onnx_tolerance(torch.tensor([[2e4, -3.0]]))
    (0.0001, 2.0)
    """
    return ONNX_TOLERANCE * max(1.0, float(reference.detach().abs().max()))


def onnx_difference(path: str | Path, model: nn.Module, inputs: Tensor) -> tuple[float, float]:
    """The exported model at ``path`` run in ONNX Runtime against ``model`` in PyTorch on ``inputs``: the largest
    |logit difference| and the :func:`onnx_tolerance` it is judged by (compress's check and the support matrix's)."""
    with torch.no_grad():
        reference = model(inputs)
    return float((run_onnx(path, inputs) - reference).abs().max()), onnx_tolerance(reference)


def folding_record(unfolded: nn.Module, folded: nn.Module) -> dict[str, Any]:
    """The card's "BatchNorm folded" line: how many BatchNorms :func:`medprune.pruning.fold_batchnorms` moved into
    their convolutions, their parameters (gone as layers, kept as the convolutions' weights and biases: not pruning),
    the biases folding added, and the parameter counts of the pruned model before and after folding."""
    pairs = batchnorm_pairs(unfolded)
    norms = [unfolded.get_submodule(norm) for _, norm in pairs]
    left = sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in folded.modules())
    added = sum(conv.out_channels for conv in (unfolded.get_submodule(path) for path, _ in pairs) if conv.bias is None)
    return {
        "BatchNorm layers folded": len(pairs),
        "BatchNorm layers left": left,
        "BatchNorm parameters folded": sum(p.numel() for m in norms for p in m.parameters()),
        "convolution biases added": added,
        "params after removal": model_cost(unfolded)["params"],
        "params shipped": model_cost(folded)["params"],
        "tolerance": FOLD_TOLERANCE,
        "why": "inference only: each BatchNorm's eval-mode affine map moves into the convolution before it "
        "(medprune.pruning.fold_batchnorms); no unit is removed, so the sizes above are removal's",
    }


def size_totals(masks: dict[str, Tensor], before: dict[str, int], after: dict[str, int]) -> dict[str, float | int]:
    """Units, parameters and MACs before and after, and the fractions removed (the card's size summary)."""
    units_before = sum(m.numel() for m in masks.values())
    units_after = sum(int(m.sum()) for m in masks.values())
    return {
        "units before": units_before,
        "units after": units_after,
        "units removed (fraction)": 1 - units_after / units_before,
        "params before": before["params"],
        "params after": after["params"],
        "params removed (fraction)": 1 - after["params"] / before["params"],
        "MACs before": before["macs"],
        "MACs after": after["macs"],
        "MACs removed (fraction)": 1 - after["macs"] / before["macs"],
    }


class StageTimer:
    """Seconds per stage: ``lap(name)`` records the time since the previous lap (or creation)."""

    def __init__(self) -> None:
        self.laps: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.laps[stage] = round(now - self._last, 2)
        self._last = now


def choice_record(
    config: Any,
    sampling: str,
    chosen: SearchRow,
    baseline: Mapping[str, Any],
    final_val: Mapping[str, Any],
    epochs: int,
    resolution: str | None,
) -> dict[str, Any]:
    """The card's "Choice" section: how the rate was chosen (``config``: a CompressConfig)."""
    base, final = metric_value(baseline, config.metric), metric_value(final_val, config.metric)
    return {
        "method": config.method,
        "sampling": sampling,
        "scope": config.ranking.scope,
        "normalize": config.ranking.normalize,
        "metric": config.metric,
        "tolerance": config.tolerance,
        "decision rule": (
            f"certified: {100 * config.confidence:.0f}% one-sided paired bootstrap lower bound of (candidate - "
            "original) above -tolerance"
            if config.decision_rule == "certified"
            else "point (uncertified): validation drop within tolerance"
        ),
        "class guard": (
            f"no class recall falls by more than {config.max_class_recall_drop:g} (or one of its images, in a class "
            "too small to resolve that), nor to zero"
        ),
        "chosen lower bound": chosen.lower_bound,
        "validation resolution": resolution,
        "validation baseline": base,
        "chosen rate": chosen.rate,
        "MACs floor": chosen.macs_floor,
        "unit rate": chosen.unit_rate,
        "units removed (fraction)": chosen.achieved_rate,
        "MACs removed (fraction, search masks)": chosen.macs_removed,
        "search recovery": config.search_recovery,
        "fine-tune epochs": epochs,
        "distillation": config.finetune.distill,
        "rounds": config.rounds,
        "final validation value": final,
        "final validation drop": None if final is None or base is None else base - final,
    }


def reproduce_command(config: Any, defaults: Any) -> str:
    """The ``medprune compress`` command line that reproduces ``config`` (fields equal to ``defaults`` left out)."""
    parts = ["medprune", "compress", config.checkpoint, "--out", config.out]
    given = flat_record(type(config), config_to_dict(config))
    default = flat_record(type(defaults), config_to_dict(defaults))
    for key, value in given.items():
        if key not in ("checkpoint", "out") and value != default.get(key):
            parts += ["--set", f"{key}={json.dumps(value) if isinstance(value, list) else value}"]
    return shlex.join(parts)
