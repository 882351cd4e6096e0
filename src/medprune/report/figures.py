"""Figures of the report (matplotlib, Agg backend, PNG): Fig. 2-style curves, heatmap grids, heatmap similarity.

Every function takes plain data (rows, arrays), writes one PNG and returns its path.
"""

from __future__ import annotations

import io
import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from medprune.options import NO_SAMPLING
from medprune.report.summary import line_name  # noqa: E402
from medprune.report.tables import achieved, baselines, curves, on_split  # noqa: E402
from medprune.sweep.table import Row, recovery_label  # noqa: E402

#: Colour of each method (controls in greys, dashed).
METHOD_STYLE: dict[str, dict[str, Any]] = {
    "lrp": {"color": "#1f77b4", "marker": "o"},
    "dlb": {"color": "#d62728", "marker": "s"},
    "ig": {"color": "#2ca02c", "marker": "^"},
    "taylor": {"color": "#9467bd", "marker": "v"},
    "activation": {"color": "#8c564b", "marker": "D"},
    "random": {"color": "#7f7f7f", "marker": "x", "linestyle": "--"},
    "magnitude": {"color": "#333333", "marker": "+", "linestyle": "--"},
}


def _slug(*parts: Any) -> str:
    return "_".join(str(p).replace("/", "-").replace(" ", "-") for p in parts if p not in (None, ""))


def _save(fig: Any, path: Path) -> Path:
    """Write ``fig`` as a PNG with a 256-colour palette (a third of the RGB file's size, the same plot to the eye:
    the report embeds every figure, so the page weight is mostly these files)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=110, bbox_inches="tight", format="png")
    plt.close(fig)
    buffer.seek(0)
    with Image.open(buffer) as image:
        palette = image.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    palette.save(path, format="PNG", optimize=True)
    return path


#: Panels of the curve figures: (row column, title).
CURVE_PANELS: tuple[tuple[str, str], ...] = (("accuracy", "accuracy"), ("auroc", "AUROC"))


def plot_curves(
    rows: Sequence[Row], out_dir: str | Path, tolerance: float | None = 0.05, split: str = "test"
) -> list[Path]:
    """Accuracy and AUROC vs the achieved pruning rate, mean over runs (checkpoint x seed), on ``split``.

    One PNG per (model, dataset, sampling, scope/normalize/sign); one row of panels per recovery (``recalibrate``
    value and fine-tuning, e.g. ``none``, ``bn``, ``bn+ft2+kd``: the paper's "none" beside the recovered curves), one
    line per method; controls (sampling ``none``) dashed in every sampling's figure. x = the mean achieved fraction
    of units removed at each target rate; the shaded band is the runs' min-max. The unpruned level (mean over
    checkpoints) is dotted, ``baseline - tolerance`` shaded green.

    Returns:
        The PNG paths, in a stable order.
    """
    out = Path(out_dir)
    rows = on_split(rows, split)
    base = baselines(rows)
    lines: dict[tuple[Any, ...], dict[tuple[str, str], list[list[Row]]]] = defaultdict(lambda: defaultdict(list))
    for curve in curves(rows).values():
        first = curve[0]
        figure = tuple(str(first.get(f)) for f in ("model", "dataset", "sampling", "scope", "normalize", "sign"))
        recovery = str(first.get("recalibrate") or "none") + recovery_label(first)  # e.g. "bn+ft2+kd"
        lines[figure][(recovery, str(first["method"]))].append(curve)
    samplings = defaultdict(set)
    for figure in lines:
        samplings[(figure[:2], figure[3:])].add(figure[2])
    paths = []
    for figure in sorted(lines):
        if figure[2] == NO_SAMPLING and len(samplings[(figure[:2], figure[3:])]) > 1:
            continue  # controls are drawn in every sampling's figure
        model, dataset, sampling, scope, normalize, sign = figure
        panel_lines = dict(lines[figure])
        if sampling != NO_SAMPLING:
            panel_lines.update(lines.get((model, dataset, NO_SAMPLING, scope, normalize, sign), {}))
        recalibrations = sorted({key[0] for key in panel_lines})
        fig, axes = plt.subplots(
            len(recalibrations), len(CURVE_PANELS), figsize=(11, 4.0 * len(recalibrations)), squeeze=False
        )
        refs = [r for (ckpt, ds, _), r in base.items() if ds == dataset]
        for row_index, recalibrate in enumerate(recalibrations):
            for (recal, method), runs in sorted(panel_lines.items()):
                if recal != recalibrate:
                    continue
                style = dict(METHOD_STYLE.get(method, {"marker": "."}))
                control = runs[0][0]["sampling"] == NO_SAMPLING
                label = method if control else method.upper()
                for axis, (column, _) in zip(axes[row_index], CURVE_PANELS):
                    x, mean, low, high = _mean_curve(runs, column)
                    axis.plot(x, mean, label=label, markersize=4, linewidth=1.4, **style)
                    axis.fill_between(x, low, high, color=style.get("color"), alpha=0.08, linewidth=0)
            for axis, (column, title) in zip(axes[row_index], CURVE_PANELS):
                values = [float(r[column]) for r in refs if r.get(column) is not None]
                reference = float(np.mean(values)) if values else math.nan
                axis.axhline(reference, color="black", linestyle=":", linewidth=1, label="unpruned")
                if tolerance is not None and math.isfinite(reference):
                    axis.axhspan(reference - tolerance, reference, color="#2ca02c", alpha=0.08)
                axis.set_xlabel("achieved pruning rate (fraction of units removed)")
                axis.set_ylabel(f"{title} ({split})")
                axis.set_title(f"recovery: {recalibrate}", fontsize=9)
                axis.set_ylim(-0.02, 1.02)
                axis.set_xlim(-0.01, 1.0)
                axis.grid(alpha=0.3)
        handles, labels = axes[0][0].get_legend_handles_labels()
        fig.legend(handles, labels, fontsize=8, loc="lower center", ncol=min(len(labels), 8), frameon=False)
        fig.subplots_adjust(bottom=0.16 / len(recalibrations) + 0.06, hspace=0.35)
        fig.suptitle(
            f"{model} on {dataset}, {sampling} sampling, {scope}/{normalize}/{sign}: {split} split, mean over runs"
        )
        paths.append(_save(fig, out / f"curve_{_slug(model, dataset, sampling, scope, normalize, sign)}.png"))
    return paths


def _mean_curve(
    runs: Sequence[Sequence[Row]], column: str
) -> tuple[list[float], list[float], list[float], list[float]]:
    """Per target rate: mean achieved rate, mean / min / max of ``column`` over the runs."""
    by_rate: dict[float, list[Row]] = defaultdict(list)
    for curve in runs:
        for row in curve:
            by_rate[float(row["rate"])].append(row)
    x, mean, low, high = [], [], [], []
    for rate in sorted(by_rate):
        values = [float(r[column]) if r.get(column) is not None else math.nan for r in by_rate[rate]]
        x.append(float(np.mean([achieved(r) for r in by_rate[rate]])))
        mean.append(float(np.nanmean(values)) if any(v == v for v in values) else math.nan)
        low.append(float(np.nanmin(values)) if any(v == v for v in values) else math.nan)
        high.append(float(np.nanmax(values)) if any(v == v for v in values) else math.nan)
    return x, mean, low, high


def plot_heatmaps(
    images: np.ndarray,
    maps: Mapping[str, np.ndarray],
    path: str | Path,
    titles: Sequence[str] | None = None,
    correlations: Mapping[str, Sequence[float]] | None = None,
) -> Path:
    """A grid: one row per image; columns: the image, then one LRP heatmap per model variant.

    Args:
        images: (N, H, W) or (N, C, H, W) images (normalised is fine; shown min-max scaled, channel mean).
        maps: ``{column title: (N, H, W) relevance}``; the first entry is the reference (unpruned).
        path: PNG path.
        titles: one label per image row (e.g. its class).
        correlations: ``{column title: N values}`` printed under the heatmaps (similarity to the reference).
    """
    images = np.asarray(images, dtype=float)
    if images.ndim == 4:
        images = images.mean(axis=1)
    n, columns = images.shape[0], 1 + len(maps)
    fig, axes = plt.subplots(n, columns, figsize=(1.9 * columns, 1.9 * n), squeeze=False)
    for i in range(n):
        image = images[i]
        span = image.max() - image.min()
        axes[i][0].imshow((image - image.min()) / (span if span > 0 else 1), cmap="gray")
        axes[i][0].set_ylabel(titles[i] if titles else f"image {i}", fontsize=8)
        for j, (name, stack) in enumerate(maps.items(), start=1):
            heat = np.asarray(stack[i], dtype=float)
            limit = float(np.abs(heat).max()) or 1.0
            axes[i][j].imshow(heat, cmap="bwr", vmin=-limit, vmax=limit)
            if correlations and name in correlations and j > 1:
                axes[i][j].set_xlabel(f"r = {correlations[name][i]:.2f}", fontsize=8)
            if i == 0:
                axes[i][j].set_title(name, fontsize=8)
    axes[0][0].set_title("input", fontsize=8)
    for axis in axes.flat:
        axis.set_xticks([])
        axis.set_yticks([])
    fig.suptitle("LRP input heatmaps (red: evidence for the class, blue: against); r = Pearson vs unpruned", fontsize=9)
    return _save(fig, Path(path))


def plot_gallery(images: np.ndarray, captions: Sequence[str], path: str | Path, title: str, per_row: int = 4) -> Path:
    """A small grid of images with one caption each (e.g. the test images whose prediction changed).

    Args:
        images: (N, H, W) or (N, C, H, W) images (normalised is fine; shown min-max scaled, channel mean).
        captions: one line per image. path: PNG path. title: above the grid. per_row: images per row.
    """
    images = np.asarray(images, dtype=float)
    if images.ndim == 4:
        images = images.mean(axis=1)
    n = max(1, images.shape[0])
    rows, columns = -(-n // per_row), min(per_row, n)
    fig, axes = plt.subplots(rows, columns, figsize=(2.2 * columns, 2.4 * rows), squeeze=False)
    for axis in axes.flat:
        axis.set_xticks([])
        axis.set_yticks([])
        axis.axis("off")
    for i, (image, caption) in enumerate(zip(images, captions)):
        axis = axes.flat[i]
        span = image.max() - image.min()
        axis.imshow((image - image.min()) / (span if span > 0 else 1), cmap="gray")
        axis.set_title(caption, fontsize=7)
        axis.axis("on")
        axis.set_xticks([])
        axis.set_yticks([])
    fig.suptitle(title, fontsize=9)
    return _save(fig, Path(path))


def plot_similarity(similarity: Sequence[Row], path: str | Path) -> Path:
    """Mean heatmap correlation with the unpruned model vs pruning rate: one panel per sampling, one line per method.

    Controls (sampling ``none``) appear dashed in every panel; the std over images is in the CSV, not drawn.

    Args:
        similarity: rows with ``label`` (``"<method> <sampling>"``), ``rate``, ``pearson_mean``.
        path: PNG path.
    """
    lines: dict[str, list[Row]] = defaultdict(list)
    for row in similarity:
        lines[str(row["label"])].append(row)
    samplings = sorted({label.split()[-1] for label in lines} - {NO_SAMPLING}) or [NO_SAMPLING]
    settings = {label.split()[0].partition("@")[2] for label in lines}
    fig, axes = plt.subplots(1, len(samplings), figsize=(4.2 * len(samplings), 3.0), squeeze=False, sharey=True)
    for axis, sampling in zip(axes[0], samplings):
        for label, points in sorted(lines.items()):
            if label.split()[-1] not in (sampling, NO_SAMPLING):
                continue
            points = sorted(points, key=lambda r: float(r["rate"]))
            method, _, setting = label.split()[0].partition("@")
            style = dict(METHOD_STYLE.get(method.lower(), {"marker": "."}))
            name = method.upper() if label.split()[-1] != NO_SAMPLING else method
            name += f" ({setting})" if len(settings) > 1 else ""
            axis.plot(
                [float(p["rate"]) for p in points],
                [float(p["pearson_mean"]) for p in points],
                label=name,
                markersize=4,
                **style,
            )
        only = next(iter(settings)) if len(settings) == 1 else ""
        axis.set_title(f"{sampling} sampling" + (f", {only}" if only else ""), fontsize=9)
        axis.set_xlabel("pruning rate (nominal)", fontsize=8)
        axis.set_ylim(-0.5, 1.02)
        axis.axhline(0, color="black", linewidth=0.6)
        axis.tick_params(labelsize=7)
        axis.grid(alpha=0.3)
    axes[0][0].set_ylabel("mean Pearson r with the unpruned heatmap", fontsize=8)
    _legend_outside(fig, axes[0])
    return _save(fig, Path(path))


def _legend_outside(fig: Any, axes: Sequence[Any]) -> None:
    """One legend for the figure, right of the panels (never over the data); entries deduplicated by label."""
    seen: dict[str, Any] = {}
    for axis in axes:
        for handle, label in zip(*axis.get_legend_handles_labels()):
            seen.setdefault(label, handle)
    if seen:
        fig.legend(list(seen.values()), list(seen), fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5))


def _value(row: Row, column: str) -> float:
    value = row.get(column)
    return math.nan if value is None else float(value)


#: Panels of the key figure: (lossless metric / row column, axis label).
KEY_PANELS: tuple[tuple[str, str], ...] = (("accuracy", "accuracy"), ("balanced_accuracy", "balanced accuracy"))


def plot_key_figure(
    lines: Mapping[str, Sequence[Row]],
    unpruned: Mapping[str, float],
    path: str | Path,
    title: str,
    controls: Sequence[str] = (),
) -> Path:
    """The key figure: each metric vs the achieved pruning rate, one line per method (solid) or control (dashed),
    the band its 95% interval.

    Args:
        lines: ``{metric: Table 1 rows}`` at every swept rate (:func:`medprune.report.tables.table1` of
            ``drop_<metric>``): ``method``, ``sampling``, ``mean@r``, ``low@r``, ``high@r``, ``achieved@r``.
        unpruned: ``{metric: mean unpruned value}``; a point is ``unpruned - drop``, its band ``unpruned - high`` to
            ``unpruned - low`` (the interval of the change from unpruned).
        path: PNG path. title: above the panels. controls: methods drawn dashed.
    """
    panels = [(m, label) for m, label in KEY_PANELS if m in lines]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.1 * len(panels), 3.3), squeeze=False)
    for axis, (metric, label) in zip(axes[0], panels):
        base = unpruned[metric]
        for row in sorted(lines[metric], key=lambda r: (str(r["method"]) in controls, str(r["method"]))):
            method = str(row["method"])
            control = method in controls
            style = dict(METHOD_STYLE.get(method, {"marker": "."}))
            style["linestyle"] = "--" if control else "-"
            rates = sorted(k.split("@")[1] for k in row if k.startswith("mean@") and row[k] is not None)
            x = [0.0] + [float(row[f"achieved@{r}"]) for r in rates]
            y = [base] + [base - float(row[f"mean@{r}"]) for r in rates]
            low = [base] + [base - _value(row, f"high@{r}") for r in rates]
            high = [base] + [base - _value(row, f"low@{r}") for r in rates]
            name = line_name(method, str(row["sampling"]), control)
            axis.plot(x, y, label=name, markersize=3.5, linewidth=1.5, **style)
            axis.fill_between(x, low, high, color=style.get("color"), alpha=0.12, linewidth=0)
        axis.axhline(base, color="black", linestyle=":", linewidth=1, label="unpruned")
        axis.set_xlabel("achieved pruning rate (fraction of units removed)", fontsize=8)
        axis.set_ylabel(f"{label} (test)", fontsize=8)
        axis.set_xlim(-0.01, 1.0)
        axis.tick_params(labelsize=7)
        axis.grid(alpha=0.3)
    fig.suptitle(title, fontsize=9)
    _legend_outside(fig, axes[0])
    fig.tight_layout()
    return _save(fig, Path(path))


def plot_class_recall(rows: Sequence[Row], path: str | Path, title: str, controls: Sequence[str] = ()) -> Path:
    """Per-class recall vs achieved pruning rate on the test split: one panel per class, one line per (method,
    sampling) of ``rows`` (mean over runs; controls dashed), the unpruned recall dotted.

    Args:
        rows: results rows of the lines to draw, with their baselines (``recall_<class>`` columns).
        path: PNG path. title: above the panels. controls: methods drawn dashed.
    """
    rows = on_split(rows, "test")
    base = [r for r in rows if r["method"] == "baseline"]
    classes = sorted({k for r in base for k in r if k.startswith("recall_")})
    grouped: dict[tuple[str, str], list[list[Row]]] = defaultdict(list)
    for curve in curves(rows).values():
        grouped[(str(curve[0]["method"]), str(curve[0]["sampling"]))].append(curve)
    columns = min(4, max(1, len(classes)))
    count = -(-max(1, len(classes)) // columns)
    fig, axes = plt.subplots(count, columns, figsize=(3.4 * columns, 2.8 * count), squeeze=False)
    for axis, column in zip(axes.flat, classes):
        for (method, sampling), runs in sorted(grouped.items(), key=lambda kv: (kv[0][0] in controls, kv[0])):
            control = method in controls
            style = dict(METHOD_STYLE.get(method, {"marker": "."}))
            style["linestyle"] = "--" if control else "-"
            x, mean, _, _ = _mean_curve(runs, column)
            axis.plot(x, mean, label=line_name(method, sampling, control), markersize=3, **style)
        reference = [float(r[column]) for r in base if r.get(column) is not None]
        if reference:
            axis.axhline(float(np.mean(reference)), color="black", linestyle=":", linewidth=1, label="unpruned")
        axis.set_title(column.removeprefix("recall_"), fontsize=9)
        axis.set_xlabel("achieved pruning rate", fontsize=8)
        axis.set_ylabel("recall (test)", fontsize=8)
        axis.set_ylim(-0.02, 1.02)
        axis.tick_params(labelsize=7)
        axis.grid(alpha=0.3)
    for axis in list(axes.flat)[len(classes) :]:
        axis.axis("off")
    fig.suptitle(title, fontsize=9)
    _legend_outside(fig, list(axes.flat))
    fig.tight_layout()
    return _save(fig, Path(path))
