"""Pure computations over a results table (a list of row dicts, see :mod:`medprune.sweep.table`).

Split discipline: every *choice* (lossless rate, best curve) reads ``val`` rows only; the numbers reported for the
chosen points, Table 1 and the paired comparisons (:mod:`medprune.report.paired`) read ``test`` rows. Rows without a
``split`` column (tables from before issue 9) count as ``test``.

* drop of every row against its checkpoint's baseline on the same split (``drop = baseline - pruned``, absolute:
  0.05 = 5 percentage points) on accuracy and on each lossless metric (``drop_<metric>``), and the worst per-class
  recall drop;
* Table 1: drop at target rates (each run's row at that rate, :func:`~medprune.report.clustered.row_at`; a run
  without one is left out, never filled from another rate) per line (method, sampling, setting) over its runs
  (checkpoint x selection seed; copies counted once): mean ± sd over checkpoints, the effective n (checkpoints)
  beside the rows, and a 95% clustered bootstrap CI (checkpoints, seeds, test images;
  :data:`medprune.stats.CLUSTERED_METHOD_NOTE`);
* lossless rates: per run, the largest rate whose validation drop stays within a tolerance, then the test numbers of
  that row and its test-confirmed rate; per line, their means with clustered intervals that resample the validation
  (test) images too (:mod:`medprune.report.clustered`).

>>> rows = [{"checkpoint": "m", "dataset": "d", "method": "baseline", "sampling": "none", "rate": 0.0,
...          "accuracy": 0.9},
...         {"checkpoint": "m", "dataset": "d", "method": "lrp", "sampling": "random", "rate": 0.3, "accuracy": 0.85}]
>>> round(with_drops(rows)[1]["drop"], 3)
0.05
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from medprune.report.clustered import (
    achieved,
    confirmed_estimates,
    curve_identity,
    distinct,
    drop_estimates,
    lossless_estimates,
    row_at,
)
from medprune.stats import DEFAULT_RESAMPLES, BootstrapEstimate, clustered_mean
from medprune.sweep.protocols import is_coupled, protocol_name, setting_text
from medprune.sweep.table import (
    BASELINE,
    METHOD_FIELDS,
    RECOVERY_COLUMNS,
    RECOVERY_FIELDS,
    Row,
    format_rate,
    recovery_label,
)

logger = logging.getLogger(__name__)

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


def protocol_label(row: Row) -> str:
    """What a row's protocol is called in the report: its name with fine-tuning (``paper``, ``paper+coupled``,
    ``default+ft2``), else its setting text (``+coupled`` appended when coupled)."""
    name = protocol_name(row)
    if name:
        return name + recovery_label(row)
    return setting_text(row) + ("+coupled" if is_coupled(row) else "")


def _run_key(curve: Sequence[Row]) -> tuple[str, tuple[Any, ...]]:
    """Runs with equal keys are copies: one checkpoint, identical predictions at every rate."""
    return str(curve[0]["checkpoint"]), curve_identity(curve)


def _checkpoint_sd(picked: Sequence[Row], column: str) -> float | None:
    """Sample sd (``ddof=1``) over checkpoints of each checkpoint's mean ``column`` (``None`` with one checkpoint)."""
    by_checkpoint: dict[str, list[float]] = defaultdict(list)
    for row in picked:
        by_checkpoint[str(row["checkpoint"])].append(float(row[column]))
    means = np.array([np.mean(v) for v in by_checkpoint.values()])
    return float(means.std(ddof=1)) if means.size > 1 else None


def _cell(
    out: Row, text: str, picked: Sequence[Row], estimate: BootstrapEstimate | None, how: str, column: str
) -> None:
    """Fill the ``*@text`` fields of one Table 1 cell (``None`` where there is no value: no row at that rate)."""
    ci = estimate.interval() if estimate is not None else None
    out[f"mean@{text}"] = estimate.estimate if estimate is not None else None
    out[f"std@{text}"] = _checkpoint_sd(picked, column) if picked else None
    out[f"n@{text}"] = len({str(r["checkpoint"]) for r in picked})
    out[f"rows@{text}"] = len(picked)
    out[f"low@{text}"], out[f"high@{text}"] = (ci.low, ci.high) if ci is not None else (None, None)
    out[f"ci@{text}"] = how
    out[f"note@{text}"] = estimate.note if estimate is not None else ""
    out[f"achieved@{text}"] = float(np.mean([achieved(r) for r in picked])) if picked else None


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

    Runs of one checkpoint that are copies (identical predictions at every rate: a deterministic criterion's
    selection seeds) are counted once. A cell at rate ``r`` reads only rows at ``r`` (nominal rate ``r`` or achieved
    rate within :data:`~medprune.report.clustered.RATE_MATCH`); a line with none there has ``n@r`` 0 and no mean.

    Args:
        rows: the results table (with baseline rows, both splits).
        rates: target rates.
        group_by: fields defining a line (default ``dataset``, ``method``, ``sampling``, the setting fields,
            ``couplings``, the recovery (``finetune_epochs``, ``distill``) and every other variant field that varies).
        column: the drop column (``drop``, ``drop_<metric>`` or ``worst_recall_drop``).
        split: which split's rows.
        n_resamples, seed: of the clustered bootstrap (same seed, same intervals).

    Returns:
        One row per line: the group fields, ``protocol`` (:func:`medprune.sweep.protocols.protocol_name`), ``n``
        (checkpoints), ``rows`` (distinct runs), ``copies`` (runs left out as copies), and per rate ``mean@r``,
        ``std@r`` (sd over checkpoints; ``None`` with one), ``n@r`` (checkpoints), ``rows@r`` (runs), ``low@r``,
        ``high@r`` (95% clustered CI), ``ci@r`` (what was resampled), ``note@r`` (e.g. few checkpoints) and
        ``achieved@r`` (mean achieved rate); ``None`` for a value without a row at that rate.
    """
    rows = on_split(rows, split)
    if group_by is None:
        settings = ["scope", "normalize", "sign", "recalibrate", "couplings", *RECOVERY_FIELDS]
        group_by = ["dataset", "method", "sampling", *settings]
        group_by += [f for f in varying_fields(rows) if f not in group_by]
    base = baselines(rows)
    runs: dict[tuple[Any, ...], list[list[Row]]] = defaultdict(list)
    for curve in curves(with_drops(rows)).values():
        runs[tuple(curve[0].get(f) for f in group_by)].append(curve)
    lines, cells = [], []
    for group in sorted(runs, key=lambda g: tuple(str(v) for v in g)):
        kept, copies = distinct(runs[group], key=_run_key)
        out: Row = dict(zip(group_by, group))
        out["protocol"] = protocol_name(kept[0][0])
        out["n"], out["rows"], out["copies"] = len({str(c[0]["checkpoint"]) for c in kept}), len(kept), copies
        lines.append(out)
        for rate in rates:
            picked = [r for r in (row_at(c, rate) for c in kept) if r is not None]
            cells.append((out, format_rate(rate)[:4], picked))
    # every cell at once: cells on the same runs and images (a line's rates, lines on the same checkpoints) share draws
    asked = [(picked, [base[_base_key(r)] for r in picked]) for _, _, picked in cells if picked]
    estimates = iter(drop_estimates(asked, column, n_resamples=n_resamples, seed=seed))
    for out, text, picked in cells:
        estimate, how = next(estimates) if picked else (None, f"no row at {text}")
        _cell(out, text, picked, estimate, how, column)
    return lines


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


def _confirmed_rate(test_curve: Sequence[Row], chosen: float, column: str, tolerance: float) -> float:
    """The test-confirmed rate (achieved) of a curve whose validation lossless rate is ``chosen``: that rate if its
    test drop is within ``tolerance``, else the largest smaller rate of the curve whose test drop is; 0 when none or
    when ``chosen`` is 0 (docs/analysis-plan.md §5(a))."""
    if chosen <= 0:
        return 0.0
    eligible = [
        r for r in test_curve if 0 < float(r["rate"]) <= chosen + 1e-9 and float(r[column]) <= tolerance + 1e-12
    ]
    return achieved(max(eligible, key=lambda r: float(r["rate"]))) if eligible else 0.0


def _lossless_index(rows: Sequence[Row], split: str) -> tuple[dict[tuple[Any, ...], list[Row]], dict[tuple, Row]]:
    """The curves of ``split`` (with drops) by their key without ``split``, and the baselines of ``split`` by
    (checkpoint, dataset)."""
    chosen = on_split(rows, split)
    if not chosen:
        return {}, {}
    indexed = {key[:-1]: curve for key, curve in curves(with_drops(chosen)).items()}
    return indexed, {_base_key(r)[:2]: r for r in chosen if r["method"] == BASELINE}


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
        One row per validation curve: the :data:`CURVE_FIELDS` but ``split``, ``metric``, ``copy_of`` (the selection
        seed of an earlier run of the same line and checkpoint with identical predictions on both splits, which this
        run copies; ``None`` otherwise), ``baseline_val`` and ``baseline_test`` (the metric unpruned), and per
        tolerance ``t``: ``lossless@t`` (nominal rate, chosen on val), ``achieved@t``, ``val@t`` (val metric there),
        ``test@t`` / ``test_drop@t`` (test metric and drop at the same curve and rate), ``confirmed@t`` (test drop
        within ``t``; ``None`` when the lossless rate is 0: nothing to confirm), ``confirmed_rate@t`` (the
        test-confirmed rate, achieved: :func:`_confirmed_rate`), ``clinical@t`` (val worst per-class recall
        criterion) and ``accuracy@lossless@t`` (val accuracy there, a tie-breaker).
    """
    if metric not in METRIC_COLUMNS:
        raise ValueError(f"metric must be one of {tuple(METRIC_COLUMNS)}, got {metric!r}")
    column = METRIC_COLUMNS[metric]
    val_curves, base = _lossless_index(rows, "val")
    test_curves, test_base = _lossless_index(rows, "test")
    seen: dict[tuple[Any, ...], Any] = {}
    result = []
    for key, curve in val_curves.items():
        out: Row = dict(zip(CURVE_FIELDS[:-1], key))
        ref = base[(str(out["checkpoint"]), str(out["dataset"]))]
        test_curve = test_curves.get(key, [])
        identity = (*(out.get(f) for f in LINE_FIELDS), *_run_key(curve), curve_identity(test_curve))
        out["metric"], out["copy_of"] = metric, seen.setdefault(identity, out.get("seed"))
        if out["copy_of"] == out.get("seed"):
            out["copy_of"] = None
        out["baseline_val"] = _number(ref.get(column))
        test_ref = test_base.get((str(out["checkpoint"]), str(out["dataset"])))
        out["baseline_test"] = _number(test_ref.get(column)) if test_ref else math.nan
        by_rate = {format_rate(r["rate"]): r for r in curve}
        test_by_rate = {format_rate(r["rate"]): r for r in test_curve}
        for tol in tolerances:
            label = f"{tol:g}"
            rate = lossless_rate(curve, tol, f"drop_{metric}", contiguous)
            hit = by_rate.get(format_rate(rate))
            out[f"lossless@{label}"] = rate
            out[f"achieved@{label}"] = achieved(hit) if hit else 0.0
            out[f"val@{label}"] = _number(hit.get(column)) if hit else out["baseline_val"]
            out[f"accuracy@lossless@{label}"] = _number(hit["accuracy"]) if hit else _number(ref.get("accuracy"))
            confirm = test_by_rate.get(format_rate(rate)) if rate > 0 else None
            out[f"test@{label}"] = _number(confirm.get(column)) if confirm else out["baseline_test"]
            out[f"test_drop@{label}"] = _number(confirm.get(f"drop_{metric}")) if confirm else 0.0
            out[f"confirmed@{label}"] = bool(out[f"test_drop@{label}"] <= tol + 1e-12) if rate > 0 else None
            out[f"confirmed_rate@{label}"] = _confirmed_rate(test_curve, rate, f"drop_{metric}", tol)
            out[f"clinical@{label}"] = lossless_rate(curve, tol, "worst_recall_drop", contiguous)
        result.append(out)
    return result


#: The fields of a line (what :func:`lossless_summary` and :func:`best_line` group runs by).
LINE_FIELDS: tuple[str, ...] = tuple(f for f in CURVE_FIELDS[:-1] if f not in RUN_FIELDS)


def _line_estimate(
    estimate: BootstrapEstimate | None, values: Sequence[float], clusters: Sequence[str], n_resamples: int, seed: int
) -> tuple[BootstrapEstimate, str]:
    """The image-level estimate when there is one, else the clustered mean of the runs' values."""
    if estimate is not None:
        if estimate.estimate is not None and abs(estimate.estimate - float(np.mean(values))) > 1e-9:
            logger.warning(
                "lossless rate recomputed from predictions (%.6f) differs from the rows' metrics (%.6f)",
                estimate.estimate,
                float(np.mean(values)),
            )
        return estimate, "images"
    return clustered_mean(values, clusters, n_resamples=n_resamples, seed=seed), ""


def lossless_summary(
    lossless: Sequence[Row],
    tolerances: Sequence[float],
    seed: int = 0,
    *,
    rows: Sequence[Row] | None = None,
    contiguous: bool = True,
    n_resamples: int = DEFAULT_RESAMPLES,
) -> list[Row]:
    """Per line (distinct runs pooled; copies left out): the mean lossless rate (achieved, chosen on val) and the mean
    test-confirmed rate, each with a 95% clustered interval, and the test drop at the chosen rates.

    Args:
        lossless: output of :func:`lossless_rates`.
        tolerances: the tolerances it was computed with (a subset is fine).
        seed: of the bootstrap.
        rows: the results table the rates came from: with per-image predictions, the intervals also resample the
            validation images (lossless rate) and test images (confirmed rate), recomputing each run's rate
            (:mod:`medprune.report.clustered`); without it (or without predictions) only checkpoints and seeds.
        contiguous: the rule ``lossless`` used (to recompute it on resampled images).
        n_resamples: bootstrap replicates.

    Returns:
        One row per line: the line fields, ``metric``, ``n`` (checkpoints), ``rows`` (distinct runs), ``copies``, and
        per tolerance ``t``: ``achieved@t`` (mean lossless rate), ``low@t`` / ``high@t`` (its 95% interval),
        ``ci@t`` (what was resampled), ``note@t``, ``lossless@t`` (mean nominal rate), ``chosen@t`` (runs with a
        rate above 0), ``test_drop@t`` (their mean test drop there) and ``confirmed@t`` (the fraction of them
        within ``t`` on test), both ``None`` when none; ``confirmed_rate@t`` with ``confirmed_low@t`` /
        ``confirmed_high@t`` and ``confirmed_ci@t``.
    """
    lines: dict[tuple[Any, ...], list[Row]] = defaultdict(list)
    for row in lossless:
        lines[tuple(row.get(f) for f in LINE_FIELDS)].append(row)
    val_curves, val_base = _lossless_index(rows, "val") if rows is not None else ({}, {})
    test_curves, test_base = _lossless_index(rows, "test") if rows is not None else ({}, {})
    boot = {"n_resamples": n_resamples, "seed": seed}
    result = []
    for key, everyone in sorted(lines.items(), key=lambda item: tuple(map(str, item[0]))):
        members = [m for m in everyone if m.get("copy_of") is None]
        clusters = [str(m["checkpoint"]) for m in members]
        out: Row = dict(zip(LINE_FIELDS, key))
        out["metric"] = members[0]["metric"]
        out["n"], out["rows"], out["copies"] = len(set(clusters)), len(members), len(everyone) - len(members)
        keys = [tuple(m.get(f) for f in CURVE_FIELDS[:-1]) for m in members]
        base_keys = [(str(m["checkpoint"]), str(m["dataset"])) for m in members]
        have_val = rows is not None and all(k in val_curves and b in val_base for k, b in zip(keys, base_keys))
        have_test = rows is not None and all(k in test_curves and b in test_base for k, b in zip(keys, base_keys))
        labels = [f"{tol:g}" for tol in tolerances]
        rates = (
            lossless_estimates(
                [val_curves[k] for k in keys],
                [val_base[b] for b in base_keys],
                metric=out["metric"],
                tolerances=tolerances,
                contiguous=contiguous,
                **boot,
            )
            if have_val
            else None
        )
        confirmed = (
            confirmed_estimates(
                [test_curves[k] for k in keys],
                [test_base[b] for b in base_keys],
                [[float(m[f"lossless@{label}"]) for m in members] for label in labels],
                metric=out["metric"],
                tolerances=tolerances,
                **boot,
            )
            if have_test
            else None
        )
        for i, label in enumerate(labels):
            values = [float(m[f"achieved@{label}"]) for m in members]
            estimate, images = _line_estimate(rates[i] if rates else None, values, clusters, n_resamples, seed)
            ci = estimate.interval()
            out[f"achieved@{label}"], out[f"low@{label}"], out[f"high@{label}"] = ci.estimate, ci.low, ci.high
            out[f"ci@{label}"] = "checkpoints x seeds" + (" x validation images" if images else "")
            out[f"note@{label}"] = estimate.note
            out[f"lossless@{label}"] = float(np.mean([m[f"lossless@{label}"] for m in members]))
            chosen = [m for m in members if float(m[f"lossless@{label}"]) > 0]
            out[f"chosen@{label}"] = len(chosen)
            out[f"test_drop@{label}"] = float(np.mean([m[f"test_drop@{label}"] for m in chosen])) if chosen else None
            out[f"confirmed@{label}"] = (
                float(np.mean([bool(m[f"confirmed@{label}"]) for m in chosen])) if chosen else None
            )
            values = [float(m[f"confirmed_rate@{label}"]) for m in members]
            estimate, images = _line_estimate(confirmed[i] if confirmed else None, values, clusters, n_resamples, seed)
            ci = estimate.interval()
            out[f"confirmed_rate@{label}"], out[f"confirmed_low@{label}"] = ci.estimate, ci.low
            out[f"confirmed_high@{label}"] = ci.high
            out[f"confirmed_ci@{label}"] = "checkpoints x seeds" + (" x test images" if images else "")
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
