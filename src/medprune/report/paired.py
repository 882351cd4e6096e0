"""Paired comparisons at the Table 1 rates: is an attribution method better than a control on the same runs?

Within one (model, dataset, setting), a run is a (training checkpoint, selection seed). A method's curve and a
control's curve are paired only when they share the checkpoint, the seed and the images (docs/analysis-plan.md §2);
each contributes its row at the target rate (:func:`~medprune.report.clustered.row_at`; a pair without one is left
out), and pairs that are copies (identical predictions of both curves as another seed of the same checkpoint) count
once. The mean paired difference ``A - B`` of a test metric (higher = better) is estimated by the clustered bootstrap
(checkpoints, seeds, test images; :func:`medprune.stats.clustered_paired_metric`).

Families (§3, F-paired): every method-vs-control comparison of one dataset, protocol (with fine-tuning), rate and
metric is one family, answered together by :func:`medprune.stats.decide_family`: Holm-adjusted p-values, the
simultaneous interval at ``1 - alpha / m``, and a verdict ``better`` / ``worse`` / ``equivalent`` (within the
equivalence margin) / ``inconclusive`` (:data:`medprune.stats.VERDICT_NOTE`).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from medprune.report.clustered import curve_identity, distinct, paired_estimates, row_at
from medprune.report.tables import (
    METRIC_COLUMNS,
    RUN_FIELDS,
    TABLE1_RATES,
    baselines,
    curves,
    on_split,
    protocol_label,
)
from medprune.stats import DEFAULT_RESAMPLES, BootstrapEstimate, decide_family
from medprune.sweep.table import RECOVERY_COLUMNS, Row, format_rate

__all__ = ["CONTROLS", "SETTING_GROUP", "family_name", "paired_comparisons", "resolution_note"]

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

Line = tuple[str, str]


def family_name(dataset: Any, protocol: str, rate: float, metric: str) -> str:
    """The name of a comparison family, e.g. ``pneumoniamnist / paper / rate 0.30 / accuracy``."""
    return f"{dataset} / {protocol} / rate {format_rate(rate)[:4]} / {metric}"


def _line(curve: Sequence[Row]) -> Line:
    return str(curve[0]["method"]), str(curve[0]["sampling"])


def _matched(
    runs_a: dict[tuple[str, ...], list[Row]], runs_b: dict[tuple[str, ...], list[Row]], rate: float
) -> tuple[list[Row], list[Row], int]:
    """A's and B's rows at ``rate`` on the runs both have (copies of a pair counted once), and the copies left out."""
    pairs = []
    for run in sorted(set(runs_a) & set(runs_b)):
        a, b = row_at(runs_a[run], rate), row_at(runs_b[run], rate)
        if a is not None and b is not None:
            pairs.append((run, a, b))
    kept, copies = distinct(
        pairs,
        key=lambda p: (p[0][0], curve_identity(runs_a[p[0]]), curve_identity(runs_b[p[0]])),
    )
    return [a for _, a, _ in kept], [b for _, _, b in kept], copies


def paired_comparisons(
    rows: Sequence[Row],
    rates: Sequence[float] = TABLE1_RATES,
    metric: str = "accuracy",
    controls: Sequence[str] = CONTROLS,
    split: str = "test",
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    *,
    margin: float = 0.01,
    alpha: float = 0.05,
) -> list[Row]:
    """Every method vs every control at ``rates`` on matched runs, with verdicts corrected within each family.

    Args:
        rows: the results table (both splits; only ``split`` rows are read).
        rates: target rates (each run's row at that rate).
        metric: ``accuracy``, ``balanced_accuracy``, ``auroc`` or ``worst_class_recall`` (higher is better).
        controls: methods treated as controls.
        split: the split whose metrics are compared (``test``: reported numbers).
        n_resamples, seed: of the clustered bootstrap.
        margin: the equivalence margin (metric units: 0.01 = 1 point).
        alpha: the family-wise level.

    Returns:
        One row per (setting group, rate, method, control): the group fields, ``protocol``, ``rate``, ``a``, ``b``
        (``method/sampling``), ``metric``, ``n`` (checkpoints), ``rows`` (distinct matched runs), ``copies``,
        ``difference`` (mean A - B), ``low`` / ``high`` (simultaneous interval at ``confidence``), ``p``, ``p_holm``,
        ``tost_p``, ``tost_p_holm``, ``margin``, ``verdict``, ``family``, ``family_size``, ``resampled``, ``note``.
    """
    if metric not in METRIC_COLUMNS:
        raise ValueError(f"metric must be one of {tuple(METRIC_COLUMNS)}, got {metric!r}")
    rows = on_split(rows, split)
    base = baselines(rows)
    groups: dict[tuple[Any, ...], dict[Line, dict[tuple[str, ...], list[Row]]]] = defaultdict(lambda: defaultdict(dict))
    for curve in curves(rows).values():
        group = tuple(curve[0].get(f) for f in SETTING_GROUP)
        run = tuple(str(curve[0].get(f)) for f in RUN_FIELDS)
        groups[group][_line(curve)][run] = curve
    asked: list[tuple[str, Row, tuple[list[Row], list[Row], list[Row]]]] = []
    for group in sorted(groups, key=lambda g: tuple(map(str, g))):
        lines = groups[group]
        first = next(iter(next(iter(lines.values())).values()))[0]
        protocol = protocol_label(first)
        methods = sorted(line for line in lines if line[0] not in controls)
        control_lines = sorted(line for line in lines if line[0] in controls)
        for rate in rates:
            family = family_name(first.get("dataset"), protocol, rate, metric)
            for a in methods:
                for b in control_lines:
                    picked_a, picked_b, copies = _matched(lines[a], lines[b], rate)
                    if not picked_a:  # no run has both curves at this rate: no comparison to make
                        continue
                    references = [
                        base[(str(r["checkpoint"]), str(r["dataset"]), str(r.get("split") or "test"))] for r in picked_a
                    ]
                    row = {
                        **dict(zip(SETTING_GROUP, group)),
                        "protocol": protocol,
                        "rate": float(format_rate(rate)),
                        "a": "/".join(a),
                        "b": "/".join(b),
                        "metric": metric,
                        "copies": copies,
                    }
                    asked.append((family, row, (picked_a, picked_b, references)))
    # every comparison at once: those on the same runs and images (one model's rates and lines) share draws
    estimates = paired_estimates(
        [request for _, _, request in asked], metric, METRIC_COLUMNS[metric], n_resamples=n_resamples, seed=seed
    )
    families: dict[str, dict[str, tuple[Row, BootstrapEstimate]]] = defaultdict(dict)
    for (family, row, _), (estimate, how) in zip(asked, estimates, strict=True):
        row["resampled"] = how
        families[family][f"{len(families[family])}: {row['model']} {row['a']} vs {row['b']}"] = (row, estimate)
    result: list[Row] = []
    for family, members in families.items():
        decisions = decide_family(
            {name: estimate for name, (_, estimate) in members.items()},
            family=family,
            margin=margin,
            alpha=alpha,
            better="higher",
        )
        floor = resolution_note(len(members), n_resamples, alpha)
        for (row, _), decision in zip(members.values(), decisions, strict=True):
            result.append(
                {
                    **row,
                    "n": decision.n_clusters,
                    "rows": decision.n_rows,
                    "difference": decision.estimate,
                    "low": decision.low,
                    "high": decision.high,
                    "confidence": decision.confidence,
                    "p": decision.p,
                    "p_holm": decision.p_holm,
                    "tost_p": decision.tost_p,
                    "tost_p_holm": decision.tost_p_holm,
                    "margin": decision.margin,
                    "verdict": decision.verdict,
                    "family": family,
                    "family_size": decision.family_size,
                    "note": "; ".join(n for n in (decision.note, floor) if n),
                }
            )
    return result


def resolution_note(family_size: int, n_resamples: int, alpha: float = 0.05) -> str:
    """Why a family cannot call a difference, or ``""``: a bootstrap's two-sided p is at least ``2 / (B + 1)``, so
    Holm's smallest adjusted p over ``m`` comparisons is ``2m / (B + 1)``; at or above ``alpha`` no comparison can be
    ``better`` or ``worse`` however large the difference (equivalence, whose floor is ``m / (B + 1)``, may still be
    shown).

    >>> resolution_note(135, 4000)[:49]
    'no better/worse attainable: smallest Holm p 0.067'
    >>> resolution_note(27, 4000)
    ''
    """
    floor = 2 * family_size / (n_resamples + 1)
    if floor < alpha:
        return ""
    needed = math.ceil(2 * family_size / alpha)
    return (
        f"no better/worse attainable: smallest Holm p {floor:.3g} >= {alpha:g} with {family_size} comparisons and "
        f"{n_resamples} resamples (n_resamples >= {needed} makes it attainable)"
    )
