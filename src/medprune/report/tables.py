"""Pure computations over a results table (a list of row dicts, see :mod:`medprune.sweep.table`).

Split discipline: every *choice* (lossless rate, best curve) reads ``val`` rows only; the numbers reported for the
chosen points, Table 1 and the paired comparisons (:mod:`medprune.report.paired`) read ``test`` rows. Rows without a
``split`` column (tables from before issue 9) count as ``test``.

* drop of every row against its checkpoint's baseline on the same split (``drop = baseline - pruned``, absolute:
  0.05 = 5 percentage points) on accuracy and on each lossless metric (``drop_<metric>``), and the worst per-class
  recall drop;
* Table 1: drop at target rates (the row whose *achieved* rate is nearest) per line (method, sampling, setting) over
  its runs (checkpoint x selection seed): mean ± sample std (``ddof=1``), n and a 95% bootstrap CI (two levels,
  test images and runs, when the per-image predictions are there; :data:`medprune.stats.METHOD_NOTE`);
* lossless rates: per run, the largest rate whose validation drop stays within a tolerance, then the test numbers of
  that row.

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

from medprune.stats import DEFAULT_RESAMPLES, bootstrap_ci, paired_metric_difference
from medprune.sweep.protocols import protocol_name
from medprune.sweep.table import (
    BASELINE,
    METHOD_FIELDS,
    RECOVERY_COLUMNS,
    RECOVERY_FIELDS,
    Row,
    decode_classes,
    format_rate,
)

#: Rates of the paper's Table 1.
TABLE1_RATES: tuple[float, ...] = (0.15, 0.30, 0.50, 0.70)
#: Fields that together identify one curve (one line of Fig. 2 for one run): everything in the row key but the rate.
CURVE_FIELDS: tuple[str, ...] = ("model", "dataset", "checkpoint", *METHOD_FIELDS, *RECOVERY_COLUMNS, "split")
#: What tells two runs of one line apart: the training checkpoint and the selection seed.
RUN_FIELDS: tuple[str, ...] = ("checkpoint", "seed")
#: Variant fields that split Table 1 when they take several values in a table.
VARIANT_FIELDS: tuple[str, ...] = ("sign", "target", "scope", "normalize", "recalibrate", "n_per_class")
#: The row column of each lossless criterion (``worst_class_recall`` is the ``worst_recall`` column).
METRIC_COLUMNS: dict[str, str] = {
    "accuracy": "accuracy",
    "balanced_accuracy": "balanced_accuracy",
    "auroc": "auroc",
    "worst_class_recall": "worst_recall",
}

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


def on_split(rows: Sequence[Row], split: str) -> list[Row]:
    """The rows evaluated on ``split`` (rows without a ``split`` column count as ``test``)."""
    return [r for r in rows if str(r.get("split") or "test") == split]


def recall_columns(row: Row) -> list[str]:
    """The per-class recall columns of a row (``recall_<class>``)."""
    return sorted(k for k in row if k.startswith("recall_"))


def _base_key(row: Row) -> tuple[str, str, str]:
    return str(row["checkpoint"]), str(row["dataset"]), str(row.get("split") or "test")


def baselines(rows: Sequence[Row]) -> dict[tuple[str, str, str], Row]:
    """The baseline row of every (checkpoint, dataset, split).

    Raises:
        ValueError: a pruned row has no baseline row for its checkpoint x dataset x split.
    """
    found = {_base_key(r): r for r in rows if r["method"] == BASELINE}
    missing = sorted({_base_key(r) for r in rows} - set(found))
    if missing:
        raise ValueError(
            f"no baseline (rate 0) row for checkpoint x dataset x split {missing}; run the sweep to the end"
        )
    return found


def _number(value: Any) -> float:
    return math.nan if value is None or value == "" else float(value)


def with_drops(rows: Sequence[Row]) -> list[Row]:
    """Copies of the rows with ``drop`` (accuracy), ``drop_<metric>`` for every lossless metric and
    ``worst_recall_drop`` (largest per-class recall drop), each against the baseline of the same split."""
    base = baselines(rows)
    result = []
    for row in rows:
        ref = base[_base_key(row)]
        out = dict(row)
        for metric, column in METRIC_COLUMNS.items():
            out[f"drop_{metric}"] = _number(ref.get(column)) - _number(row.get(column))
        out["drop"] = out["drop_accuracy"]
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
    placeholders = {"none", "0", "None", ""}  # of data-free controls (target, n_per_class) and missing columns
    values = {
        f: {str(r.get(f)) for r in pruned} - (placeholders if f in ("target", "n_per_class") else {""}) for f in fields
    }
    return [f for f in fields if len(values[f]) > 1]


def achieved(row: Row) -> float:
    """The fraction of units a row removed (its nominal ``rate`` for tables without ``achieved_rate``)."""
    value = row.get("achieved_rate")
    return float(row["rate"]) if value is None or value == "" else float(value)


def nearest_row(curve: Sequence[Row], rate: float) -> Row | None:
    """The row of a curve whose achieved rate is nearest to ``rate`` (ties: the smaller nominal rate)."""
    if not curve:
        return None
    return min(curve, key=lambda r: (abs(achieved(r) - rate), float(r["rate"])))


def _mean_std(values: list[float]) -> tuple[float, float]:
    array = np.asarray(values, dtype=float)
    std = float(array.std(ddof=1)) if array.size > 1 else math.nan
    return float(array.mean()), std


def correctness_grid(picked: Sequence[Row], base: dict[tuple[str, str, str], Row]) -> tuple[Any, Any, Any] | None:
    """(baseline grid, pruned grid, labels) of runs x images from the per-image predictions, or ``None`` when a row
    lacks them or the runs do not share one image set (several datasets)."""
    refs = [base[_base_key(r)] for r in picked]
    if not picked or any(not r.get("predictions") for r in [*picked, *refs]) or not refs[0].get("labels"):
        return None
    labels = decode_classes(refs[0]["labels"])
    if any(r.get("labels") != refs[0]["labels"] for r in refs):
        return None
    pruned = np.stack([decode_classes(r["predictions"]) == labels for r in picked])
    unpruned = np.stack([decode_classes(r["predictions"]) == labels for r in refs])
    return unpruned, pruned, labels


def drop_interval(
    picked: Sequence[Row],
    base: dict[tuple[str, str, str], Row],
    column: str,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> tuple[float | None, float | None, str]:
    """95% CI of the mean drop over runs: two-level (test images, runs) from per-image predictions for accuracy and
    balanced-accuracy drops, else a bootstrap over the runs' values. Returns (low, high, method)."""
    metric = {"drop": "accuracy", "drop_accuracy": "accuracy", "drop_balanced_accuracy": "balanced_accuracy"}
    grid = correctness_grid(picked, base) if column in metric else None
    if grid is not None:
        unpruned, pruned, labels = grid
        ci = paired_metric_difference(
            unpruned,
            pruned,
            labels,
            metric=metric[column],
            n_resamples=n_resamples,
            seed=seed,  # type: ignore[arg-type]
        ).difference
        return ci.low, ci.high, "images x runs"
    ci = bootstrap_ci([float(r[column]) for r in picked], n_resamples=n_resamples, seed=seed)
    return ci.low, ci.high, "runs"


def table1(
    rows: Sequence[Row],
    rates: Sequence[float] = TABLE1_RATES,
    group_by: Sequence[str] | None = None,
    column: str = "drop",
    split: str = "test",
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> list[Row]:
    """Drop at target ``rates`` per line over its runs (checkpoint x seed), on ``split`` (test: reported numbers).

    Args:
        rows: the results table (with baseline rows, both splits).
        rates: target rates; each run contributes the row whose achieved rate is nearest.
        group_by: fields defining a line (default ``dataset``, ``method``, ``sampling``, the setting fields, the
            recovery (``finetune_epochs``, ``distill``) and every other variant field that varies).
        column: the drop column (``drop``, ``drop_<metric>`` or ``worst_recall_drop``).
        split: which split's rows.
        n_resamples, seed: of the bootstrap CIs (same seed, same intervals).

    Returns:
        One row per line: the group fields, ``protocol``, ``n`` (runs), and per rate ``mean@r``, ``std@r``, ``n@r``,
        ``low@r``, ``high@r`` (95% CI), ``achieved@r`` (mean achieved rate) and ``ci@r`` (what was resampled).
    """
    rows = on_split(rows, split)
    if group_by is None:
        settings = ["scope", "normalize", "sign", "recalibrate", *RECOVERY_FIELDS]
        group_by = ["dataset", "method", "sampling", *settings]
        group_by += [f for f in varying_fields(rows) if f not in group_by]
    base = baselines(rows)
    runs: dict[tuple[Any, ...], list[list[Row]]] = defaultdict(list)
    for curve in curves(with_drops(rows)).values():
        runs[tuple(curve[0].get(f) for f in group_by)].append(curve)
    result = []
    for group in sorted(runs, key=lambda g: tuple(str(v) for v in g)):
        out: Row = dict(zip(group_by, group))
        out["protocol"] = protocol_name(runs[group][0][0])
        out["n"] = len(runs[group])
        for rate in rates:
            text = format_rate(rate)[:4]
            picked = [r for r in (nearest_row(c, rate) for c in runs[group]) if r is not None]
            values = [float(r[column]) for r in picked]
            mean, std = _mean_std(values) if values else (math.nan, math.nan)
            low, high, how = drop_interval(picked, base, column, n_resamples, seed) if values else (None, None, "")
            out[f"mean@{text}"], out[f"std@{text}"], out[f"n@{text}"] = mean, std, len(values)
            out[f"low@{text}"], out[f"high@{text}"], out[f"ci@{text}"] = low, high, how
            out[f"achieved@{text}"] = float(np.mean([achieved(r) for r in picked])) if picked else math.nan
        result.append(out)
    return result


def lossless_rate(curve: Sequence[Row], tolerance: float, column: str = "drop", contiguous: bool = True) -> float:
    """Largest rate of a curve (rows with a drop column) whose drop is ``<= tolerance``.

    Args:
        curve: rows of one curve; rate 0 counts as drop 0 when absent.
        tolerance: allowed drop (absolute, metric units).
        column: ``drop`` (accuracy, the paper), ``drop_<metric>`` or ``worst_recall_drop`` (clinically lossless).
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
    rows: Sequence[Row],
    tolerances: Sequence[float] = (0.01, 0.05),
    contiguous: bool = True,
    metric: str = "accuracy",
) -> list[Row]:
    """Per run (curve): the lossless rate chosen on validation rows, then the test numbers of that row.

    Only ``val`` rows decide (test rows are looked up at the chosen rate, never compared), so corrupting every test
    metric leaves every ``lossless@t`` unchanged.

    Args:
        rows: the results table (both splits).
        tolerances: allowed drops of ``metric`` (absolute).
        contiguous: see :func:`lossless_rate`.
        metric: the lossless criterion: ``accuracy``, ``balanced_accuracy``, ``auroc`` or ``worst_class_recall``.

    Returns:
        One row per validation curve: the :data:`CURVE_FIELDS` but ``split``, ``metric``, ``baseline_val`` and
        ``baseline_test`` (the metric unpruned), and per tolerance ``t``: ``lossless@t`` (nominal rate, chosen on
        val), ``achieved@t``, ``val@t`` (val metric there), ``test@t`` / ``test_drop@t`` (test metric and drop at the
        same curve and rate), ``confirmed@t`` (test drop within ``t``), ``clinical@t`` (val worst per-class recall
        criterion) and ``accuracy@lossless@t`` (val accuracy there, a tie-breaker).
    """
    if metric not in METRIC_COLUMNS:
        raise ValueError(f"metric must be one of {tuple(METRIC_COLUMNS)}, got {metric!r}")
    column = METRIC_COLUMNS[metric]
    val = with_drops(on_split(rows, "val"))
    test_rows = on_split(rows, "test")
    test = {tuple(r.get(f) for f in CURVE_FIELDS[:-1]) + (format_rate(r["rate"]),): r for r in with_drops(test_rows)}
    test_base = {_base_key(r)[:2]: r for r in test_rows if r["method"] == BASELINE}
    base = baselines(val) if val else {}
    result = []
    for key, curve in curves(val).items():
        out: Row = dict(zip(CURVE_FIELDS[:-1], key[:-1]))
        ref = base[(str(out["checkpoint"]), str(out["dataset"]), "val")]
        out["metric"] = metric
        out["baseline_val"] = _number(ref.get(column))
        test_ref = test_base.get((str(out["checkpoint"]), str(out["dataset"])))
        out["baseline_test"] = _number(test_ref.get(column)) if test_ref else math.nan
        by_rate = {format_rate(r["rate"]): r for r in curve}
        for tol in tolerances:
            label = f"{tol:g}"
            rate = lossless_rate(curve, tol, f"drop_{metric}", contiguous)
            hit = by_rate.get(format_rate(rate))
            out[f"lossless@{label}"] = rate
            out[f"achieved@{label}"] = achieved(hit) if hit else 0.0
            out[f"val@{label}"] = _number(hit.get(column)) if hit else out["baseline_val"]
            out[f"accuracy@lossless@{label}"] = _number(hit["accuracy"]) if hit else _number(ref.get("accuracy"))
            confirm = test.get(key[:-1] + (format_rate(rate),)) if rate > 0 else None
            out[f"test@{label}"] = _number(confirm.get(column)) if confirm else out["baseline_test"]
            out[f"test_drop@{label}"] = _number(confirm.get(f"drop_{metric}")) if confirm else 0.0
            out[f"confirmed@{label}"] = bool(out[f"test_drop@{label}"] <= tol + 1e-12)
            out[f"clinical@{label}"] = lossless_rate(curve, tol, "worst_recall_drop", contiguous)
        result.append(out)
    return result


#: The fields of a line (what :func:`lossless_summary` and :func:`best_line` group runs by).
LINE_FIELDS: tuple[str, ...] = tuple(f for f in CURVE_FIELDS[:-1] if f not in RUN_FIELDS)


def lossless_summary(lossless: Sequence[Row], tolerances: Sequence[float], seed: int = 0) -> list[Row]:
    """Per line (runs pooled): mean achieved lossless rate (chosen on val) with its bootstrap CI over runs, and the
    mean test drop there with the fraction of runs confirmed on test."""
    lines: dict[tuple[Any, ...], list[Row]] = defaultdict(list)
    for row in lossless:
        lines[tuple(row.get(f) for f in LINE_FIELDS)].append(row)
    result = []
    for key, members in sorted(lines.items(), key=lambda item: tuple(map(str, item[0]))):
        out: Row = dict(zip(LINE_FIELDS, key))
        out["metric"], out["n"] = members[0]["metric"], len(members)
        for tol in tolerances:
            label = f"{tol:g}"
            ci = bootstrap_ci([m[f"achieved@{label}"] for m in members], seed=seed)
            out[f"achieved@{label}"], out[f"low@{label}"], out[f"high@{label}"] = ci.estimate, ci.low, ci.high
            out[f"lossless@{label}"] = float(np.mean([m[f"lossless@{label}"] for m in members]))
            out[f"test_drop@{label}"] = float(np.mean([m[f"test_drop@{label}"] for m in members]))
            out[f"confirmed@{label}"] = float(np.mean([m[f"confirmed@{label}"] for m in members]))
        result.append(out)
    return result


def best_curve(
    lossless: Sequence[Row], tolerance: float, criterion: Criterion = "accuracy", methods: Sequence[str] | None = None
) -> Row:
    """The run with the largest validation lossless rate at ``tolerance`` (ties: higher val accuracy there, name).

    Args:
        lossless: output of :func:`lossless_rates` computed with ``tolerance`` among its tolerances.
        tolerance: which tolerance to rank by.
        criterion: ``accuracy`` (``lossless@t``, on the table's lossless metric) or ``worst_recall``
            (``clinical@t``).
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


def best_line(lossless: Sequence[Row], tolerance: float, criterion: Criterion = "accuracy") -> Row:
    """The run to deploy: the line (method, sampling, setting) with the largest mean validation lossless rate over
    its runs (ties: name), then its run with the median lossless rate (lower median; ties: the smallest seed)."""
    label = f"{tolerance:g}"
    column = f"lossless@{label}" if criterion == "accuracy" else f"clinical@{label}"
    lines: dict[tuple[Any, ...], list[Row]] = defaultdict(list)
    for row in lossless:
        lines[tuple(row.get(f) for f in LINE_FIELDS)].append(row)
    if not lines:
        raise ValueError("no curve to choose from")
    key = max(lines, key=lambda k: (float(np.mean([r[column] for r in lines[k]])), tuple(map(str, k))))
    runs = sorted(lines[key], key=lambda r: (r[column], str(r["checkpoint"]), int(r["seed"])))
    return runs[(len(runs) - 1) // 2]
