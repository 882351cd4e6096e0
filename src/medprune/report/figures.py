"""Figures of the report (matplotlib, Agg backend, PNG): Fig. 2-style curves, heatmap grids, heatmap similarity.

Every function takes plain data (rows, arrays), writes one PNG and returns its path.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from medprune.options import NO_SAMPLING
from medprune.report.tables import CURVE_FIELDS, baselines, curves, varying_fields  # noqa: E402
from medprune.sweep.table import Row  # noqa: E402

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
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_curves(rows: Sequence[Row], out_dir: str | Path, tolerance: float | None = 0.05) -> list[Path]:
    """Accuracy and worst-class recall vs pruning rate; one PNG per model x dataset x sampling, one line per method.

    Controls (sampling ``none``) appear dashed in every sampling's figure. The baseline is a dotted line, and
    ``baseline - tolerance`` a shaded band when ``tolerance`` is given.

    Returns:
        The PNG paths, in a stable order.
    """
    out = Path(out_dir)
    base = baselines(rows)
    variants = varying_fields(rows)
    by_panel: dict[tuple[Any, ...], list[tuple[tuple[Any, ...], list[Row]]]] = defaultdict(list)
    controls: dict[tuple[Any, ...], list[tuple[tuple[Any, ...], list[Row]]]] = defaultdict(list)
    for key, curve in curves(rows).items():
        fields = dict(zip(CURVE_FIELDS, key))
        model_key = (fields["model"], fields["dataset"], fields["checkpoint"])
        if fields["sampling"] == NO_SAMPLING:
            controls[model_key].append((key, curve))
        else:
            by_panel[(*model_key, fields["sampling"])].append((key, curve))
    for model_key in controls:  # models swept with controls only still get a figure
        if not any(panel[:3] == model_key for panel in by_panel):
            by_panel[(*model_key, NO_SAMPLING)] = []
    paths = []
    for panel, lines in sorted(by_panel.items(), key=lambda item: tuple(map(str, item[0]))):
        model, dataset, checkpoint, sampling = panel
        ref = base[(str(checkpoint), str(dataset))]
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
        for key, curve in [*lines, *controls[(model, dataset, checkpoint)]]:
            fields = dict(zip(CURVE_FIELDS, key))
            style = dict(METHOD_STYLE.get(str(fields["method"]), {"marker": "."}))
            label = str(fields["method"]).upper() if fields["sampling"] != NO_SAMPLING else f"{fields['method']}"
            label += "".join(f" {v}={fields[v]}" for v in variants if v in fields and fields[v] not in ("none", 0))
            rates = [float(r["rate"]) for r in curve]
            for axis, column in zip(axes, ("accuracy", "worst_recall")):
                values = [float(r[column]) if r.get(column) is not None else math.nan for r in curve]
                axis.plot(rates, values, label=label, markersize=4, linewidth=1.4, **style)
        for axis, column, title in zip(axes, ("accuracy", "worst_recall"), ("accuracy", "worst-class recall")):
            reference = float(ref[column]) if ref.get(column) is not None else math.nan
            axis.axhline(reference, color="black", linestyle=":", linewidth=1, label="unpruned")
            if tolerance is not None and math.isfinite(reference):
                axis.axhspan(
                    reference - tolerance,
                    reference,
                    color="#2ca02c",
                    alpha=0.08,
                    label=f"within {tolerance:.0%} of unpruned",
                )
            axis.set_xlabel("pruning rate (fraction of units removed)")
            axis.set_ylabel(title)
            axis.set_ylim(-0.02, 1.02)
            axis.set_xlim(-0.01, 1.0)
            axis.grid(alpha=0.3)
        handles, labels = axes[0].get_legend_handles_labels()
        fig.legend(handles, labels, fontsize=8, loc="lower center", ncol=min(len(labels), 7), frameon=False)
        fig.subplots_adjust(bottom=0.22)
        fig.suptitle(f"{model} on {dataset} ({str(checkpoint)[:8]}), {sampling} sampling")
        paths.append(_save(fig, out / f"curve_{_slug(model, dataset, str(checkpoint)[:8], sampling)}.png"))
    return paths


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
    fig, axes = plt.subplots(1, len(samplings), figsize=(4.6 * len(samplings), 4.0), squeeze=False, sharey=True)
    for axis, sampling in zip(axes[0], samplings):
        for label, points in sorted(lines.items()):
            if label.split()[-1] not in (sampling, NO_SAMPLING):
                continue
            points = sorted(points, key=lambda r: float(r["rate"]))
            method = label.split()[0].lower()
            style = dict(METHOD_STYLE.get(method, {"marker": "."}))
            name = method.upper() if label.split()[-1] != NO_SAMPLING else method
            axis.plot(
                [float(p["rate"]) for p in points],
                [float(p["pearson_mean"]) for p in points],
                label=name,
                markersize=4,
                **style,
            )
        axis.set_title(f"{sampling} sampling", fontsize=10)
        axis.set_xlabel("pruning rate")
        axis.set_ylim(-0.5, 1.02)
        axis.axhline(0, color="black", linewidth=0.6)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8, loc="lower left")
    axes[0][0].set_ylabel("mean Pearson r, pruned vs unpruned LRP heatmap")
    return _save(fig, Path(path))
