"""The measured sections of the report: efficiency of physically pruned models, heatmaps and their similarity.

Both need the swept models (:func:`medprune.sweep.artifacts.load_swept_models`), not only the results table. Both use
the lossless rates chosen on validation and one run per line (the smallest selection seed); masks only (heatmaps of a
``recalibrate: bn`` or fine-tuned curve use the masked model without recalibration or fine-tuning).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

from medprune.data import stack_samples
from medprune.progress import progress
from medprune.pruning.cost import efficiency
from medprune.report import figures
from medprune.report.heatmaps import heatmaps_under_masks, pick_images, relevance, similarity_curve
from medprune.report.paired import SETTING_GROUP
from medprune.report.summary import line_name
from medprune.report.tables import LINE_FIELDS, best_line
from medprune.sweep.artifacts import SweepModel
from medprune.sweep.protocols import setting_text
from medprune.sweep.table import Row, format_rate

logger = logging.getLogger(__name__)

__all__ = ["efficiency_rows", "first_seed", "heatmap_section", "lossless_rate_rows", "ordered_columns"]


def _unpruned_row(key: str, item: SweepModel, latency_batch: int) -> tuple[Row, float]:
    reference = efficiency(item.model, None, latency_batch)
    row = {
        "model": item.meta["model"]["name"],
        "checkpoint": key,
        "method": "unpruned",
        "sampling": "",
        "criterion": "",
        "rate": 0.0,
        **{k: reference[k] for k in ("params", "macs", "latency_ms")},
        "speedup": 1.0,
        "masks": "",
    }
    return row, reference["latency_ms"]


def efficiency_rows(
    lossless: Sequence[Row], tolerances: Sequence[float], swept: Mapping[str, SweepModel], latency_batch: int
) -> list[Row]:
    """Params, MACs and CPU latency of each model unpruned and physically pruned at each curve's lossless rates.

    ``criterion`` names the metric the rate was chosen on (the lossless metric of ``lossless``, e.g. ``balanced
    accuracy drop ≤ 0.01 (val)``, or the worst-class recall drop)."""
    result: list[Row] = []
    curves = {key: first_seed([c for c in lossless if c["checkpoint"] == key]) for key in swept}
    bar = progress(sum(map(len, curves.values())), "report: efficiency", "curve")
    for key, item in swept.items():
        unpruned, reference_ms = _unpruned_row(key, item, latency_batch)
        result.append(unpruned)
        seen: set[tuple] = set()
        for curve in curves[key]:
            bar.update()
            for tol in tolerances:
                metric = str(curve.get("metric") or "accuracy").replace("_", " ")
                for criterion, column in (
                    (f"{metric} drop", f"lossless@{tol:g}"),
                    ("worst-class recall drop", f"clinical@{tol:g}"),
                ):
                    rate = float(curve[column])
                    ident = (*(curve.get(f) for f in LINE_FIELDS), format_rate(rate))
                    if rate == 0 or ident in seen:
                        continue
                    seen.add(ident)
                    masks = item.masks(curve, rate, physical=True)
                    stats = efficiency(item.model, masks, latency_batch)
                    result.append(
                        {
                            "model": curve["model"],
                            "checkpoint": key,
                            "method": curve["method"],
                            "sampling": curve["sampling"],
                            "setting": setting_text(curve),
                            "seed": curve.get("seed"),
                            "criterion": f"{criterion} ≤ {tol:g} (val)",
                            "rate": rate,
                            **{k: stats[k] for k in ("params", "macs", "latency_ms")},
                            "speedup": reference_ms / stats["latency_ms"],
                            "masks": "as swept" if item.physical_matches_sweep() else "adjusted for removal",
                        }
                    )
    bar.close()
    return result


#: A line the heatmap section shows: (method, sampling, a row carrying its setting fields).
Focus = tuple[str, str, Row]


def _same_setting(curve: Row, reference: Row) -> bool:
    return all(str(curve.get(f)) == str(reference.get(f)) for f in SETTING_GROUP)


def _matches(curve: Row, focus: Focus) -> bool:
    method, sampling, reference = focus
    return curve["method"] == method and curve["sampling"] == sampling and _same_setting(curve, reference)


def _heatmap_figure(
    key: str,
    item: SweepModel,
    shown: Sequence[Row],
    tolerances: Sequence[float],
    per_class: int,
    out: Path,
    controls: Sequence[str] = (),
) -> Path:
    """Heatmaps of ``per_class`` test images of every class under the masks of the ``shown`` curves (the summary's
    attribution method first, then a control for contrast) at the method's lossless rate and at 0.5, each control
    beside the method at the same rate."""
    test = item.splits.test
    x, y = stack_samples(test, pick_images(test.labels, per_class, seed=0))
    lead = shown[0]
    rates = [float(lead[f"lossless@{min(tolerances):g}"])]
    rates = sorted({r for r in rates if r > 0} | {0.5})
    masks = {}
    for rate in rates:
        for curve in shown:
            name = line_name(str(curve["method"]), str(curve["sampling"]), curve["method"] in controls)
            masks[f"{name}, rate {rate:.2f}"] = item.masks(curve, rate)
    maps, corr = heatmaps_under_masks(item.model, x, y, masks)
    titles = [f"{test.class_names[int(c)]}" for c in y]
    path = out / f"heatmaps_{item.meta['model']['name']}_{key[:8]}.png"
    return figures.plot_heatmaps(x.numpy(), maps, path, titles, corr)


def _shown_curves(curves_here: Sequence[Row], focus: Sequence[Focus], tolerances: Sequence[float]) -> list[Row]:
    """The curves of the heatmap figure: the first ``focus`` line present (the summary's method) and the next one (its
    control); without focus, the best line at the largest tolerance alone."""
    picked = [next((c for c in curves_here if _matches(c, f)), None) for f in focus]
    shown = [c for c in picked if c is not None][:2]
    return shown or [best_line(list(curves_here), max(tolerances))]


def heatmap_section(
    lossless: Sequence[Row],
    swept: Mapping[str, SweepModel],
    out: Path,
    *,
    tolerances: Sequence[float],
    heatmap_per_class: int,
    similarity_images: int,
    similarity_rates: Sequence[float],
    focus: Sequence[Focus] = (),
    controls: Sequence[str] = (),
) -> tuple[list[Path], list[Row]]:
    """Per model: a heatmap figure and the heatmap-similarity curves of every curve; returns figures and rows.

    ``focus``: the lines the figures show (the summary's attribution method first, then a control): the heatmap
    figure shows the first two present, the similarity figure every focus line and every control (``controls``) of
    their setting; the similarity CSV rows cover every curve.
    """
    paths: list[Path] = []
    similarity: list[Row] = []
    curves = {key: first_seed([c for c in lossless if c["checkpoint"] == key]) for key in swept}
    bar = progress(sum(map(len, curves.values())), "report: heatmaps", "curve")
    for key, item in swept.items():
        curves_here = curves[key]
        if not curves_here:
            continue
        shown = _shown_curves(curves_here, focus, tolerances)
        paths.append(_heatmap_figure(key, item, shown, tolerances, heatmap_per_class, out, controls))
        test = item.splits.test
        xs, ys = stack_samples(test, pick_images(test.labels, similarity_images, seed=1))
        reference = relevance(item.model, xs, ys)
        rates = sorted({float(r["rate"]) for r in lossless_rate_rows(curves_here)} | set(similarity_rates))
        drawn: set[str] = set()
        for curve in curves_here:
            label = f"{curve['method']} {curve['sampling']}"
            if len({setting_text(c) for c in curves_here}) > 1:
                label = f"{curve['method']}@{setting_text(curve)} {curve['sampling']}"
            control = curve["method"] in controls and any(_same_setting(curve, f[2]) for f in focus)
            if not focus or control or any(_matches(curve, f) for f in focus):
                drawn.add(label)
            at = {r: item.masks(curve, r) for r in rates if r > 0}
            similarity.extend(
                {**s, "checkpoint": key} for s in similarity_curve(item.model, xs, ys, at, label, reference)
            )
            bar.update()
        paths.append(
            figures.plot_similarity(
                [s for s in similarity if s["checkpoint"] == key and s["label"] in drawn],
                out / f"similarity_{item.meta['model']['name']}_{key[:8]}.png",
            )
        )
    bar.close()
    return paths, similarity


def first_seed(lossless: Sequence[Row]) -> list[Row]:
    """The curves of the smallest selection seed (one run per line: efficiency and heatmaps are not averaged)."""
    if not lossless:
        return []
    seed = min(int(c.get("seed") or 0) for c in lossless)
    return [c for c in lossless if int(c.get("seed") or 0) == seed]


def lossless_rate_rows(curves_here: Sequence[Row]) -> list[Row]:
    """Lossless rates of these curves as ``{"rate": r}`` rows (the rates the heatmap study must include)."""
    return [{"rate": v} for c in curves_here for k, v in c.items() if k.startswith(("lossless@", "clinical@"))]


def ordered_columns(rows: Sequence[Row]) -> list[str]:
    """Every column of ``rows`` in first-seen order."""
    columns: list[str] = []
    for row in rows:
        columns.extend(k for k in row if k not in columns)
    return columns
