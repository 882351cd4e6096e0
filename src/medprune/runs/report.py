"""``run_report(config)``: tables, curves, efficiency, heatmaps and one self-contained HTML page from sweep results.

Reads the results table(s) only for Table 1, lossless rates and curves; efficiency and heatmaps also need the sweep
folder (checkpoints, data and cached scores) and are skipped with a note when a result is a bare CSV.

>>> # result = run_report(ReportConfig(results=["runs/sweep"], out="runs/report")); result.html
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medprune.config import save_config
from medprune.report import figures
from medprune.report.page import render
from medprune.report.sections import efficiency_rows, heatmap_section, ordered_columns
from medprune.report.tables import PAPER_TABLE1, TABLE1_RATES, lossless_rates, table1
from medprune.rundir import RunDir
from medprune.sweep.artifacts import SweepModel, is_sweep_dir, load_swept_models
from medprune.sweep.table import Row, read_results, write_csv

logger = logging.getLogger(__name__)

__all__ = ["ReportConfig", "ReportResult", "run_report"]

#: ReportConfig fields that may differ between runs into one folder.
COSMETIC: tuple[str, ...] = ("out", "data_root", "latency_batch")


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


@dataclass
class ReportResult:
    """What :func:`run_report` wrote.

    Attributes:
        html: the report page. table1: Table 1 rows. lossless: lossless rates per curve.
        efficiency: params/MACs/latency rows (empty when not measured). figures: every PNG.
        similarity: heatmap-similarity rows. rows: number of result rows read.
        mean_similarity: mean Pearson r over the similarity rows (``None`` without heatmaps).
    """

    html: Path
    table1: list[Row]
    lossless: list[Row]
    efficiency: list[Row]
    figures: list[Path]
    similarity: list[Row]
    rows: int
    mean_similarity: float | None


def _write_tables(rows: list[Row], config: ReportConfig, out: Path) -> tuple[list[Row], list[Row], list[Row]]:
    """Table 1 (accuracy and worst-class recall), lossless rates and the paper's Table 1 as CSV files."""
    summary = table1(rows, config.table1_rates)
    clinical = table1(rows, config.table1_rates, column="worst_recall_drop")
    lossless = lossless_rates(rows, config.tolerances, config.contiguous)
    write_csv(summary, out / "table1.csv", ordered_columns(summary))
    write_csv(clinical, out / "table1_worst_class_recall.csv", ordered_columns(clinical))
    write_csv(lossless, out / "lossless_rates.csv", ordered_columns(lossless))
    paper = [
        {"method": m, "sampling": s, **{f"{r}": f"{v[0]}±{v[1]}" for r, v in zip(TABLE1_RATES, vals)}}
        for (m, s), vals in PAPER_TABLE1.items()
    ]
    write_csv(paper, out / "paper_table1.csv")
    return summary, clinical, lossless


def _swept_models(config: ReportConfig) -> tuple[dict[str, SweepModel], list[str]]:
    """The models of every sweep folder among the results, and a note for every bare table."""
    swept: dict[str, SweepModel] = {}
    notes: list[str] = []
    if config.efficiency or config.heatmaps:
        for result in config.results:
            if is_sweep_dir(result):
                swept.update(load_swept_models(result, config.data_root))
            else:
                notes.append(f"{result} is a bare table: no efficiency or heatmaps for its models")
    return swept, notes


def run_report(config: ReportConfig, *, overwrite: bool = False) -> ReportResult:
    """Write the report (HTML, PNG and CSV files) and return its paths and tables.

    ``config.out`` is taken with :class:`~medprune.rundir.RunDir` (one writer; another config's folder is refused
    unless ``overwrite``, which moves its content aside); the same config rewrites the report from the results.
    """
    if not config.results:
        raise ValueError("no results given; pass sweep folders or results CSV files")
    rows = read_results(config.results)  # missing or empty tables are refused before the folder is touched
    with RunDir(config.out, "report", config, cosmetic=COSMETIC, overwrite=overwrite):
        return _report(config, rows)


def _report(config: ReportConfig, rows: list[Row]) -> ReportResult:
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    save_config(config, out)
    logger.info("report: %d rows from %s", len(rows), ", ".join(config.results))
    summary, clinical, lossless = _write_tables(rows, config, out)
    curve_paths = figures.plot_curves(rows, out, tolerance=max(config.tolerances))
    logger.info("report: Table 1, lossless rates and %d curve figures written", len(curve_paths))

    swept, notes = _swept_models(config)
    efficiency: list[Row] = []
    if config.efficiency and swept:
        efficiency = efficiency_rows(lossless, config.tolerances, swept, config.latency_batch)
        write_csv(efficiency, out / "efficiency.csv", ordered_columns(efficiency))
        logger.info("report: efficiency of %d physically pruned models measured", len(efficiency))
    heat_paths: list[Path] = []
    similarity: list[Row] = []
    if config.heatmaps and swept:
        heat_paths, similarity = heatmap_section(
            lossless,
            swept,
            out,
            tolerances=config.tolerances,
            heatmap_per_class=config.heatmap_per_class,
            similarity_images=config.similarity_images,
            similarity_rates=config.similarity_rates,
        )
        write_csv(similarity, out / "heatmap_similarity.csv", ordered_columns(similarity))
        logger.info("report: heatmaps and similarity curves written")

    page_path = out / "report.html"
    page = render(config, rows, summary, clinical, lossless, efficiency, curve_paths, heat_paths, similarity, notes)
    page_path.write_text(page)
    logger.info("report: %s", page_path)
    mean_similarity = float(np.nanmean([s["pearson_mean"] for s in similarity])) if similarity else None
    return ReportResult(
        page_path, summary, lossless, efficiency, [*curve_paths, *heat_paths], similarity, len(rows), mean_similarity
    )
