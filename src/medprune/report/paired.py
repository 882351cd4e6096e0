"""Paired comparisons at the Table 1 rates: is method A better than control (or method) B on the same runs?

Within one (model, dataset, setting), a run is a (checkpoint, selection seed); two lines are compared on the runs
they share (matched curves), each run contributing its row whose achieved rate is nearest the target rate. The mean
paired difference ``A - B`` of a test metric (higher = better) gets a 95% bootstrap CI (two levels, runs and test
images, from the per-image predictions for accuracy and balanced accuracy; runs only otherwise) and a verdict:
``better`` / ``worse`` when the CI excludes 0, else ``not distinguishable`` (:func:`medprune.stats.paired_difference`).

Pairs: every method line vs every control line, and method vs method within a sampling.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np

from medprune.report.tables import (
    METRIC_COLUMNS,
    RUN_FIELDS,
    TABLE1_RATES,
    baselines,
    curves,
    nearest_row,
    on_split,
)
from medprune.stats import DEFAULT_RESAMPLES, paired_difference, paired_metric_difference
from medprune.sweep.table import RECOVERY_COLUMNS, Row, decode_classes, format_rate

__all__ = ["CONTROLS", "SETTING_GROUP", "paired_comparisons"]

#: Methods that are controls (compared against, not compared among themselves).
CONTROLS: tuple[str, ...] = ("random", "magnitude", "taylor", "activation")
#: Fields every compared pair shares (methods and controls of one setting on one model and dataset).
SETTING_GROUP: tuple[str, ...] = (
    "model",
    "dataset",
    "sign",
    "scope",
    "normalize",
    "recalibrate",
    "recalibrate_samples",
    "couplings",
    *RECOVERY_COLUMNS,
)


def _line(curve: Sequence[Row]) -> tuple[str, str]:
    return str(curve[0]["method"]), str(curve[0]["sampling"])


def _pairs(lines: Sequence[tuple[str, str]], controls: Sequence[str]) -> list[tuple[tuple[str, str], tuple[str, str]]]:
    methods = [line for line in lines if line[0] not in controls]
    control_lines = [line for line in lines if line[0] in controls]
    pairs = [(a, b) for a in methods for b in control_lines]
    pairs += [(a, b) for a, b in itertools.combinations(methods, 2) if a[1] == b[1]]
    return pairs


def paired_comparisons(
    rows: Sequence[Row],
    rates: Sequence[float] = TABLE1_RATES,
    metric: str = "accuracy",
    controls: Sequence[str] = CONTROLS,
    split: str = "test",
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> list[Row]:
    """Every method vs every control and method vs method (same sampling) at ``rates``, on matched runs.

    Args:
        rows: the results table (both splits; only ``split`` rows are read).
        rates: target rates (each run's row with the nearest achieved rate).
        metric: ``accuracy``, ``balanced_accuracy``, ``auroc`` or ``worst_class_recall`` (higher is better).
        controls: methods treated as controls.
        split: the split whose metrics are compared (``test``: reported numbers).
        n_resamples, seed: of the bootstrap.

    Returns:
        One row per (setting group, rate, pair): the group fields, ``rate``, ``a``, ``b`` (``method/sampling``),
        ``metric``, ``n`` (matched runs), ``difference``, ``low``, ``high``, ``verdict``, ``resampled``.
    """
    if metric not in METRIC_COLUMNS:
        raise ValueError(f"metric must be one of {tuple(METRIC_COLUMNS)}, got {metric!r}")
    rows = on_split(rows, split)
    base = baselines(rows)
    groups: dict[tuple[Any, ...], dict[tuple[str, str], dict[tuple[str, str], list[Row]]]] = defaultdict(
        lambda: defaultdict(dict)
    )
    for curve in curves(rows).values():
        group = tuple(curve[0].get(f) for f in SETTING_GROUP)
        run = tuple(str(curve[0].get(f)) for f in RUN_FIELDS)
        groups[group][_line(curve)][run] = curve
    result: list[Row] = []
    for group in sorted(groups, key=lambda g: tuple(map(str, g))):
        lines = groups[group]
        for rate in rates:
            for a, b in _pairs(sorted(lines), controls):
                matched = sorted(set(lines[a]) & set(lines[b]))
                picked_a = [nearest_row(lines[a][run], rate) for run in matched]
                picked_b = [nearest_row(lines[b][run], rate) for run in matched]
                comparison, how = _compare(picked_a, picked_b, base, metric, n_resamples, seed)
                result.append(
                    {
                        **dict(zip(SETTING_GROUP, group)),
                        "rate": float(format_rate(rate)),
                        "a": "/".join(a),
                        "b": "/".join(b),
                        "metric": metric,
                        "n": len(matched),
                        "difference": comparison.difference.estimate,
                        "low": comparison.difference.low,
                        "high": comparison.difference.high,
                        "verdict": comparison.verdict,
                        "resampled": how,
                    }
                )
    return result


def _compare(
    picked_a: list[Any], picked_b: list[Any], base: dict, metric: str, n_resamples: int, seed: int
) -> tuple[Any, str]:
    column = METRIC_COLUMNS[metric]
    have_images = metric in ("accuracy", "balanced_accuracy") and all(
        r is not None and r.get("predictions") for r in [*picked_a, *picked_b]
    )
    if have_images and picked_a:
        refs = [base[(str(r["checkpoint"]), str(r["dataset"]), str(r.get("split") or "test"))] for r in picked_a]
        labels = decode_classes(refs[0]["labels"]) if refs[0].get("labels") else None
        if labels is not None and all(r.get("labels") == refs[0]["labels"] for r in refs):
            grid_a = np.stack([decode_classes(r["predictions"]) == labels for r in picked_a])
            grid_b = np.stack([decode_classes(r["predictions"]) == labels for r in picked_b])
            comparison = paired_metric_difference(
                grid_a,
                grid_b,
                labels,
                metric=metric,
                n_resamples=n_resamples,
                seed=seed,  # type: ignore[arg-type]
            )
            return comparison, "images x runs"
    values_a = [float("nan") if r is None or r.get(column) is None else float(r[column]) for r in picked_a]
    values_b = [float("nan") if r is None or r.get(column) is None else float(r[column]) for r in picked_b]
    return paired_difference(values_a, values_b, n_resamples=n_resamples, seed=seed), "runs"
