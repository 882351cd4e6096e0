"""``build_report(config)``: tables, curves, efficiency, heatmaps and one self-contained HTML page from sweep results.

Reads the results table(s) only for Table 1, lossless rates and curves; efficiency and heatmaps also need the sweep
folder (checkpoints, data and cached scores) and are skipped with a note when a result is a bare CSV.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medprune.config import save_config
from medprune.report import figures
from medprune.report.tables import PAPER_TABLE1, TABLE1_RATES, best_curve, lossless_rates, table1
from medprune.sweep.table import Row, format_rate, read_results, write_csv

logger = logging.getLogger(__name__)


@dataclass
class ReportConfig:
    """Options of ``medprune report``.

    Attributes:
        results: sweep folders and/or results CSV files (merged into one table).
        out: output folder (report.html, PNGs, CSVs, config.yaml).
        tolerances: accuracy-drop tolerances of the lossless rates (absolute: 0.01 = 1 percentage point).
        table1_rates: the rates of Table 1.
        contiguous: a lossless rate needs every smaller rate within tolerance too.
        efficiency: measure params/MACs/latency of physically pruned models at the lossless rates.
        heatmaps: LRP heatmaps before/after pruning and their similarity.
        heatmap_per_class: test images per class in the heatmap figure.
        similarity_images: test images per class averaged in the similarity curves.
        similarity_rates: rates of the similarity curves (the lossless rates are added).
        latency_batch: images per timed forward pass.
        data_root: overrides the data folder recorded in the sweeps.
    """

    results: list[str] = field(default_factory=list)
    out: str = "runs/report"
    tolerances: list[float] = field(default_factory=lambda: [0.01, 0.05])
    table1_rates: list[float] = field(default_factory=lambda: list(TABLE1_RATES))
    contiguous: bool = True
    efficiency: bool = True
    heatmaps: bool = True
    heatmap_per_class: int = 2
    similarity_images: int = 4
    latency_batch: int = 8
    similarity_rates: list[float] = field(default_factory=lambda: [0.1, 0.3, 0.5, 0.7, 0.9])
    data_root: str | None = None


def _paper_cell(method: Any, sampling: Any, index: int) -> str:
    entry = PAPER_TABLE1.get((str(method), str(sampling)))
    return "" if entry is None else f"{entry[index][0]:.3f} ± {entry[index][1]:.2f}"


def table1_display(summary: list[Row], rates: list[float], with_paper: bool = True) -> list[Row]:
    """Table 1 rows as text cells ``mean ± std`` (ours) beside the paper's value."""
    rows = []
    for row in summary:
        out: Row = {k: v for k, v in row.items() if "@" not in k}
        for index, rate in enumerate(rates):
            text = format_rate(rate)[:4]
            mean, std, n = row.get(f"mean@{text}"), row.get(f"std@{text}"), row.get(f"n@{text}")
            cell = "–" if not n else f"{mean:.3f}" + ("" if std != std else f" ± {std:.3f}")
            out[f"{text} ours"] = cell
            if with_paper:
                out[f"{text} paper"] = _paper_cell(row.get("method"), row.get("sampling"), index) if index < 4 else ""
        rows.append(out)
    return rows


def _efficiency_section(rows: list[Row], lossless: list[Row], config: ReportConfig, swept: dict) -> list[Row]:
    from medprune.report.efficiency import efficiency

    result: list[Row] = []
    for key, item in swept.items():
        reference = efficiency(item.model, None, config.latency_batch)
        result.append({"model": item.meta["model"]["name"], "checkpoint": key, "method": "unpruned", "sampling": "",
                       "criterion": "", "rate": 0.0, **{k: reference[k] for k in ("params", "macs", "latency_ms")},
                       "speedup": 1.0, "masks": ""})  # fmt: skip
        seen: set[tuple] = set()
        for curve in (c for c in lossless if c["checkpoint"] == key):
            for tol in config.tolerances:
                for criterion, column in (("accuracy", f"lossless@{tol:g}"), ("worst recall", f"clinical@{tol:g}")):
                    rate = float(curve[column])
                    ident = (curve["method"], curve["sampling"], format_rate(rate))
                    if rate == 0 or ident in seen:
                        continue
                    seen.add(ident)
                    masks = item.masks(curve["method"], curve["sampling"], rate, physical=True)
                    stats = efficiency(item.model, masks, config.latency_batch)
                    result.append({
                        "model": curve["model"], "checkpoint": key, "method": curve["method"],
                        "sampling": curve["sampling"], "criterion": f"{criterion} ≤ {tol:g}", "rate": rate,
                        **{k: stats[k] for k in ("params", "macs", "latency_ms")},
                        "speedup": reference["latency_ms"] / stats["latency_ms"],
                        "masks": "as swept" if item.physical_matches_sweep() else "coupled for removal",
                    })  # fmt: skip
    return result


def _heatmap_section(lossless: list[Row], config: ReportConfig, swept: dict, out: Path) -> tuple[list[Path], list]:
    from medprune.data import stack_samples
    from medprune.report.heatmaps import heatmaps_under_masks, pick_images, relevance, similarity_curve

    paths: list[Path] = []
    similarity: list[Row] = []
    tolerance = max(config.tolerances)
    for key, item in swept.items():
        test = item.splits.test
        curves_here = [c for c in lossless if c["checkpoint"] == key]
        if not curves_here:
            continue
        best = best_curve(curves_here, tolerance)
        idx = pick_images(test.labels, config.heatmap_per_class, seed=0)
        x, y = stack_samples(test, idx)
        variants = {}
        for tol in config.tolerances:
            rate = float(best[f"lossless@{tol:g}"])
            if rate == 0:
                continue
            variants[f"{best['method']} {best['sampling']} @{rate:.2f}"] = rate
        for rate in (0.5, 0.7):
            variants.setdefault(f"{best['method']} {best['sampling']} @{rate:.2f}", rate)
        masks = {label: item.masks(best["method"], best["sampling"], rate) for label, rate in variants.items()}
        maps, corr = heatmaps_under_masks(item.model, x, y, masks)
        titles = [f"{test.class_names[int(c)]}" for c in y]
        path = out / f"heatmaps_{item.meta['model']['name']}_{key[:8]}.png"
        paths.append(figures.plot_heatmaps(x.numpy(), maps, path, titles, corr))
        sim_idx = pick_images(test.labels, config.similarity_images, seed=1)
        xs, ys = stack_samples(test, sim_idx)
        reference = relevance(item.model, xs, ys)
        rates = sorted({float(r["rate"]) for r in item_rows(curves_here)} | set(config.similarity_rates))
        for curve in curves_here:
            label = f"{curve['method']} {curve['sampling']}"
            at = {r: item.masks(curve["method"], curve["sampling"], r) for r in rates if r > 0}
            similarity.extend(
                {**s, "checkpoint": key} for s in similarity_curve(item.model, xs, ys, at, label, reference)
            )
        paths.append(
            figures.plot_similarity(
                [s for s in similarity if s["checkpoint"] == key],
                out / f"similarity_{item.meta['model']['name']}_{key[:8]}.png",
            )
        )
    return paths, similarity


def item_rows(curves_here: list[Row]) -> list[Row]:
    """Lossless rates of these curves as ``{"rate": r}`` rows (the rates the heatmap study must include)."""
    return [{"rate": v} for c in curves_here for k, v in c.items() if k.startswith(("lossless@", "clinical@"))]


def _ordered(rows: list[Row]) -> list[str]:
    columns: list[str] = []
    for row in rows:
        columns.extend(k for k in row if k not in columns)
    return columns


def build_report(config: ReportConfig) -> dict[str, Any]:
    """Write the report and return its paths and tables.

    Returns:
        ``{"html", "table1", "lossless", "efficiency", "figures", ...}`` (paths and row lists).
    """
    from medprune.sweep.artifacts import is_sweep_dir, load_swept_models

    if not config.results:
        raise ValueError("no results given; pass sweep folders or results CSV files")
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    save_config(config, out)
    rows = read_results(config.results)
    logger.info("report: %d rows from %s", len(rows), ", ".join(config.results))
    summary = table1(rows, config.table1_rates)
    clinical = table1(rows, config.table1_rates, column="worst_recall_drop")
    lossless = lossless_rates(rows, config.tolerances, config.contiguous)
    write_csv(summary, out / "table1.csv", _ordered(summary))
    write_csv(clinical, out / "table1_worst_class_recall.csv", _ordered(clinical))
    write_csv(lossless, out / "lossless_rates.csv", _ordered(lossless))
    write_csv([{"method": m, "sampling": s, **{f"{r}": f"{v[0]}±{v[1]}" for r, v in zip(TABLE1_RATES, vals)}}
               for (m, s), vals in PAPER_TABLE1.items()], out / "paper_table1.csv")  # fmt: skip
    curve_paths = figures.plot_curves(rows, out, tolerance=max(config.tolerances))
    logger.info("report: Table 1, lossless rates and %d curve figures written", len(curve_paths))

    swept: dict[str, Any] = {}
    notes: list[str] = []
    if config.efficiency or config.heatmaps:
        for result in config.results:
            if is_sweep_dir(result):
                swept.update(load_swept_models(result, config.data_root))
            else:
                notes.append(f"{result} is a bare table: no efficiency or heatmaps for its models")
    efficiency_rows: list[Row] = []
    if config.efficiency and swept:
        efficiency_rows = _efficiency_section(rows, lossless, config, swept)
        write_csv(efficiency_rows, out / "efficiency.csv", _ordered(efficiency_rows))
        logger.info("report: efficiency of %d physically pruned models measured", len(efficiency_rows))
    heat_paths: list[Path] = []
    similarity: list[Row] = []
    if config.heatmaps and swept:
        heat_paths, similarity = _heatmap_section(lossless, config, swept, out)
        write_csv(similarity, out / "heatmap_similarity.csv", _ordered(similarity))
        logger.info("report: heatmaps and similarity curves written")
    from medprune.report.page import render

    page_path = out / "report.html"
    page_path.write_text(render(config, rows, summary, clinical, lossless, efficiency_rows, curve_paths, heat_paths,
                                similarity, notes))  # fmt: skip
    logger.info("report: %s", page_path)
    return {
        "html": page_path,
        "table1": summary,
        "lossless": lossless,
        "efficiency": efficiency_rows,
        "figures": [*curve_paths, *heat_paths],
        "similarity": similarity,
        "rows": len(rows),
        "mean_similarity": float(np.nanmean([s["pearson_mean"] for s in similarity])) if similarity else None,
    }
