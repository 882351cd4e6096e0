"""Pure computations over a results table (a list of row dicts, see :mod:`medprune.sweep.table`).

* accuracy drop of every row against its model x dataset baseline (``drop = baseline - pruned``, absolute, in
  accuracy units: 0.05 = 5 percentage points) and the worst per-class recall drop;
* Table 1: drop mean ± std at chosen rates per (method, sampling) over every curve swept (sample std, ``ddof=1``;
  empty when a cell has one curve);
* lossless rates: the largest rate whose drop stays within a tolerance, on accuracy (the paper) or on the worst
  class's recall (*clinically lossless*).

>>> rows = [{"checkpoint": "m", "dataset": "d", "method": "baseline", "sampling": "none", "rate": 0.0,
...          "accuracy": 0.9},
...         {"checkpoint": "m", "dataset": "d", "method": "lrp", "sampling": "random", "rate": 0.3, "accuracy": 0.85}]
>>> round(with_drops(rows)[1]["drop"], 3)
0.05
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from medprune.sweep.table import BASELINE, METHOD_FIELDS, Row, format_rate

#: Rates of the paper's Table 1.
TABLE1_RATES: tuple[float, ...] = (0.15, 0.30, 0.50, 0.70)
#: Fields that together identify one curve (one line of Fig. 2): everything in the row key but the rate.
CURVE_FIELDS: tuple[str, ...] = ("model", "dataset", "checkpoint", *METHOD_FIELDS)
#: Variant fields that split Table 1 when they take several values in a table.
VARIANT_FIELDS: tuple[str, ...] = ("sign", "target", "scope", "normalize", "n_per_class")

#: The paper's Table 1 (docs/method.md; mean, std of the accuracy drop over 4 datasets x 3 models), for comparison.
PAPER_TABLE1: dict[tuple[str, str], tuple[tuple[float, float], ...]] = {
    ("dlb", "clustering"): ((0.001, 0.01), (0.058, 0.11), (0.234, 0.30), (0.384, 0.31)),
    ("dlb", "confidence"): ((0.002, 0.01), (0.054, 0.11), (0.215, 0.27), (0.398, 0.31)),
    ("dlb", "random"): ((0.002, 0.01), (0.059, 0.12), (0.239, 0.28), (0.400, 0.32)),
    ("ig", "clustering"): ((0.000, 0.00), (0.036, 0.07), (0.255, 0.29), (0.389, 0.31)),
    ("ig", "confidence"): ((0.002, 0.01), (0.026, 0.04), (0.253, 0.27), (0.398, 0.30)),
    ("ig", "random"): ((0.002, 0.01), (0.039, 0.06), (0.224, 0.29), (0.375, 0.30)),
    ("lrp", "clustering"): ((-0.001, 0.00), (0.018, 0.04), (0.196, 0.28), (0.382, 0.33)),
    ("lrp", "confidence"): ((0.000, 0.00), (0.027, 0.04), (0.203, 0.28), (0.397, 0.31)),
    ("lrp", "random"): ((-0.001, 0.00), (0.016, 0.04), (0.205, 0.27), (0.384, 0.33)),
}

Criterion = Literal["accuracy", "worst_recall"]


def recall_columns(row: Row) -> list[str]:
    """The per-class recall columns of a row (``recall_<class>``)."""
    return sorted(k for k in row if k.startswith("recall_"))


def baselines(rows: Sequence[Row]) -> dict[tuple[str, str], Row]:
    """The baseline row of every (checkpoint, dataset).

    Raises:
        ValueError: a pruned row has no baseline row for its model x dataset.
    """
    found = {(str(r["checkpoint"]), str(r["dataset"])): r for r in rows if r["method"] == BASELINE}
    missing = sorted({(str(r["checkpoint"]), str(r["dataset"])) for r in rows} - set(found))
    if missing:
        raise ValueError(f"no baseline (rate 0) row for model x dataset {missing}; run the sweep to completion")
    return found


def with_drops(rows: Sequence[Row]) -> list[Row]:
    """Copies of the rows with ``drop`` (accuracy) and ``worst_recall_drop`` (largest per-class recall drop)."""
    base = baselines(rows)
    result = []
    for row in rows:
        ref = base[(str(row["checkpoint"]), str(row["dataset"]))]
        out = dict(row)
        out["drop"] = float(ref["accuracy"]) - float(row["accuracy"])
        classes = recall_columns(ref)
        drops = [float(ref[c]) - float(row[c]) for c in classes if row.get(c) is not None]
        out["worst_recall_drop"] = max(drops) if drops else math.nan
        result.append(out)
    return result


def curves(rows: Sequence[Row]) -> dict[tuple[Any, ...], list[Row]]:
    """Pruned rows grouped into curves (by :data:`CURVE_FIELDS`), each sorted by rate; baseline rows excluded."""
    grouped: dict[tuple[Any, ...], list[Row]] = defaultdict(list)
    for row in rows:
        if row["method"] != BASELINE:
            grouped[tuple(row.get(f) for f in CURVE_FIELDS)].append(row)
    return {key: sorted(group, key=lambda r: float(r["rate"])) for key, group in sorted(grouped.items(), key=str)}


def varying_fields(rows: Sequence[Row], fields: Sequence[str] = VARIANT_FIELDS) -> list[str]:
    """Which of ``fields`` take more than one value over the pruned rows (placeholders of controls ignored)."""
    pruned = [r for r in rows if r["method"] != BASELINE]
    placeholders = {"none", "0", "None", ""}
    return [f for f in fields if len({str(r.get(f)) for r in pruned} - placeholders) > 1]


def _mean_std(values: list[float]) -> tuple[float, float]:
    array = np.asarray(values, dtype=float)
    std = float(array.std(ddof=1)) if array.size > 1 else math.nan
    return float(array.mean()), std


def table1(
    rows: Sequence[Row],
    rates: Sequence[float] = TABLE1_RATES,
    group_by: Sequence[str] | None = None,
    column: str = "drop",
) -> list[Row]:
    """Drop mean ± std at ``rates`` per (method, sampling) over every curve (model x dataset x variant) swept.

    Args:
        rows: the results table (with baseline rows).
        rates: the rates of the columns (a curve without a row at a rate is left out of that cell).
        group_by: fields defining a line (default ``method``, ``sampling`` and every variant field that varies).
        column: the drop column to summarise (``drop`` or ``worst_recall_drop``).

    Returns:
        One row per group: the group fields, ``n`` (curves), and ``mean@<rate>``, ``std@<rate>``, ``n@<rate>``.
    """
    group_by = list(group_by) if group_by is not None else ["method", "sampling", *varying_fields(rows)]
    cells: dict[tuple[Any, ...], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    curve_ids: dict[tuple[Any, ...], set] = defaultdict(set)
    wanted = {format_rate(r): r for r in rates}
    for key, curve in curves(with_drops(rows)).items():
        group = tuple(curve[0].get(f) for f in group_by)
        curve_ids[group].add(key)
        for row in curve:
            text = format_rate(row["rate"])
            if text in wanted:
                cells[group][text].append(float(row[column]))
    result = []
    for group in sorted(curve_ids, key=lambda g: tuple(str(v) for v in g)):
        out: Row = dict(zip(group_by, group))
        out["n"] = len(curve_ids[group])
        for text in wanted:
            values = cells[group].get(text, [])
            mean, std = _mean_std(values) if values else (math.nan, math.nan)
            out[f"mean@{text[:4]}"], out[f"std@{text[:4]}"], out[f"n@{text[:4]}"] = mean, std, len(values)
        result.append(out)
    return result


def lossless_rate(curve: Sequence[Row], tolerance: float, column: str = "drop", contiguous: bool = True) -> float:
    """Largest rate of a curve (rows with a drop column) whose drop is ``<= tolerance``.

    Args:
        curve: rows of one curve; rate 0 counts as drop 0 when absent.
        tolerance: allowed drop (absolute, accuracy units).
        column: ``drop`` (paper) or ``worst_recall_drop`` (clinically lossless).
        contiguous: require every smaller rate to be within tolerance too (default; a noisy curve that dips back
            under the tolerance after exceeding it does not count). ``False`` gives the literal largest such rate.

    Returns:
        The rate (0.0 when even the smallest pruned rate exceeds the tolerance).
    """
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}")
    best = 0.0
    for row in sorted(curve, key=lambda r: float(r["rate"])):
        value = float(row[column])
        if value <= tolerance + 1e-12:
            best = max(best, float(row["rate"]))
        elif contiguous:
            break
    return best


def lossless_rates(
    rows: Sequence[Row], tolerances: Sequence[float] = (0.01, 0.05), contiguous: bool = True
) -> list[Row]:
    """Lossless and clinically lossless rate of every curve at every tolerance.

    Returns:
        One row per curve: the :data:`CURVE_FIELDS`, ``baseline_accuracy`` and for each tolerance ``t`` (as
        ``0.01``): ``lossless@t``, ``accuracy@lossless@t`` and ``clinical@t`` (worst-class recall criterion).
    """
    drops = with_drops(rows)
    base = baselines(rows)
    result = []
    for key, curve in curves(drops).items():
        out: Row = dict(zip(CURVE_FIELDS, key))
        out["baseline_accuracy"] = float(base[(str(out["checkpoint"]), str(out["dataset"]))]["accuracy"])
        by_rate = {format_rate(r["rate"]): r for r in curve}
        for tol in tolerances:
            label = f"{tol:g}"
            rate = lossless_rate(curve, tol, "drop", contiguous)
            out[f"lossless@{label}"] = rate
            hit = by_rate.get(format_rate(rate))
            out[f"accuracy@lossless@{label}"] = float(hit["accuracy"]) if hit else out["baseline_accuracy"]
            out[f"clinical@{label}"] = lossless_rate(curve, tol, "worst_recall_drop", contiguous)
        result.append(out)
    return result


def best_curve(
    lossless: Sequence[Row], tolerance: float, criterion: Criterion = "accuracy", methods: Sequence[str] | None = None
) -> Row:
    """The curve with the largest lossless rate at ``tolerance`` (ties: higher accuracy at that rate, then name).

    Args:
        lossless: output of :func:`lossless_rates` computed with ``tolerance`` among its tolerances.
        tolerance: which tolerance to rank by.
        criterion: ``accuracy`` (``lossless@t``) or ``worst_recall`` (``clinical@t``).
        methods: restrict to these methods (default: all).
    """
    label = f"{tolerance:g}"
    column = f"lossless@{label}" if criterion == "accuracy" else f"clinical@{label}"
    pool = [r for r in lossless if methods is None or r["method"] in methods]
    if not pool:
        raise ValueError(f"no curve to choose from (methods={methods})")
    if column not in pool[0]:
        raise ValueError(f"lossless rates were not computed for tolerance {tolerance}")
    return max(pool, key=lambda r: (r[column], r[f"accuracy@lossless@{label}"], str(r["method"]), str(r["sampling"])))
