"""``run_report(config)``: tables, curves, efficiency, heatmaps and one self-contained HTML page from sweep results.

Reads the results table(s) only for Table 1, lossless rates, paired comparisons and curves; efficiency and heatmaps
also need the sweep folder (checkpoints, data and cached scores) and are skipped with a note when a result is a bare
CSV. Choices (lossless rates, the curves measured for efficiency and heatmaps) read validation rows; Table 1, the
curves and the paired comparisons read test rows; ``results.md`` holds the tables as Markdown.

>>> # result = run_report(ReportConfig(results=["runs/sweep"], out="runs/report")); result.html
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medprune.config import option, save_config
from medprune.options import LosslessMetric
from medprune.report import figures
from medprune.report.markdown import results_markdown
from medprune.report.page import ReportTables, render
from medprune.report.paired import CONTROLS, paired_comparisons
from medprune.report.sections import Focus, efficiency_rows, heatmap_section, ordered_columns
from medprune.report.summary import Answer, answers, key_rows
from medprune.report.tables import METRIC_COLUMNS, PAPER_TABLE1, TABLE1_RATES, lossless_rates, lossless_summary, table1
from medprune.rundir import OutputFolder, RunDir, atomic_path, output_folder, write_text_atomic
from medprune.stats import DEFAULT_RESAMPLES
from medprune.sweep.artifacts import SweepModel, is_sweep_dir, load_swept_models
from medprune.sweep.table import Row, read_results, write_csv

logger = logging.getLogger(__name__)

__all__ = ["ReportConfig", "ReportResult", "check_inputs", "run_report"]

#: ReportConfig fields that may differ between runs into one folder.
COSMETIC: tuple[str, ...] = ("out", "data_root", "latency_batch")


@dataclass
class ReportConfig(OutputFolder):
    """Options of ``medprune report``."""

    out: str = output_folder("runs/report")
    results: list[str] = option(
        default_factory=list, help="sweep folders and/or results CSV files (merged into one table)"
    )
    tolerances: list[float] = option(
        default_factory=lambda: [0.01, 0.05],
        help="accuracy-drop tolerances of the lossless rates (absolute: 0.01 = 1 percentage point)",
    )
    table1_rates: list[float] = option(default_factory=lambda: list(TABLE1_RATES), help="the rates of Table 1")
    contiguous: bool = option(True, help="a lossless rate needs every smaller rate within tolerance too")
    efficiency: bool = option(
        True, help="measure params/MACs/latency of physically pruned models at the lossless rates"
    )
    heatmaps: bool = option(True, help="LRP heatmaps before/after pruning and their similarity")
    heatmap_per_class: int = option(2, help="test images per class in the heatmap figure")
    similarity_images: int = option(4, help="test images per class averaged in the similarity curves")
    latency_batch: int = option(8, help="images per timed forward pass")
    similarity_rates: list[float] = option(
        default_factory=lambda: [0.1, 0.3, 0.5, 0.7, 0.9],
        help="rates of the similarity curves (the lossless rates are added)",
    )
    data_root: str | None = option(None, help="overrides the data folder recorded in the sweeps")
    lossless_metric: LosslessMetric = option(
        "balanced_accuracy",
        help=(
            "the criterion of the lossless rates and the deployed choice (accuracy, "
            'balanced_accuracy (product default), auroc, worst_class_recall); Table 1 "as the'
            ' paper" stays on accuracy'
        ),
    )
    paired_metrics: list[LosslessMetric] = option(
        default_factory=lambda: ["accuracy", "balanced_accuracy"], help="test metrics of the paired comparisons"
    )
    controls: list[str] = option(
        default_factory=lambda: list(CONTROLS), help="methods treated as controls in the paired comparisons"
    )
    equivalence_margin: float = option(
        0.01,
        help=(
            "equivalence margin of the paired verdicts, in metric units (0.01 = 1 point): 'equivalent' when the "
            "family-corrected interval of A - B lies inside +/- this"
        ),
    )
    n_resamples: int = option(DEFAULT_RESAMPLES, help="bootstrap resamples of every interval", limit=1_000_000)
    bootstrap_seed: int = option(0, help="their seed (same seed, same CIs)")


@dataclass
class ReportResult:
    """What :func:`run_report` wrote.

    Attributes:
        html: the report page. table1: Table 1 rows (accuracy drop, test). lossless: lossless rates per run (chosen
        on val, confirmed on test). summary: lossless rates per line. paired: paired comparisons (test), verdicts
        corrected within their family.
        markdown: results.md.
        efficiency: params/MACs/latency rows (empty when not measured). figures: every PNG.
        similarity: heatmap-similarity rows. rows: number of result rows read.
        mean_similarity: mean Pearson r over the similarity rows (``None`` without heatmaps).
    """

    html: Path
    table1: list[Row]
    lossless: list[Row]
    summary: list[Row]
    paired: list[Row]
    markdown: Path
    efficiency: list[Row]
    figures: list[Path]
    similarity: list[Row]
    rows: int
    mean_similarity: float | None


def _write_tables(rows: list[Row], config: ReportConfig, out: Path) -> ReportTables:
    """Table 1 (test), lossless rates (val -> test), paired comparisons (test) and the paper's Table 1 as CSV files."""
    boot = {"n_resamples": config.n_resamples, "seed": config.bootstrap_seed}
    summary = table1(rows, config.table1_rates, **boot)
    metric_drop = (
        table1(rows, config.table1_rates, column=f"drop_{config.lossless_metric}", **boot)
        if config.lossless_metric != "accuracy"
        else []
    )
    clinical = table1(rows, config.table1_rates, column="worst_recall_drop", **boot)
    lossless = lossless_rates(rows, config.tolerances, config.contiguous, config.lossless_metric)
    lines = lossless_summary(
        lossless,
        config.tolerances,
        config.bootstrap_seed,
        rows=rows,
        contiguous=config.contiguous,
        n_resamples=config.n_resamples,
    )
    paired = [
        row
        for metric in config.paired_metrics
        for row in paired_comparisons(
            rows, config.table1_rates, metric, config.controls, margin=config.equivalence_margin, **boot
        )
    ]
    write_csv(summary, out / "table1.csv", ordered_columns(summary))
    if metric_drop:
        write_csv(metric_drop, out / f"table1_{config.lossless_metric}.csv", ordered_columns(metric_drop))
    write_csv(clinical, out / "table1_worst_class_recall.csv", ordered_columns(clinical))
    write_csv(lossless, out / "lossless_rates.csv", ordered_columns(lossless))
    write_csv(lines, out / "lossless_summary.csv", ordered_columns(lines))
    write_csv(paired, out / "paired.csv", ordered_columns(paired))
    paper = [
        {"method": m, "sampling": s, **{f"{r}": f"{v[0]}±{v[1]}" for r, v in zip(TABLE1_RATES, vals)}}
        for (m, s), vals in PAPER_TABLE1.items()
    ]
    write_csv(paper, out / "paper_table1.csv")
    return ReportTables(rows, summary, metric_drop, clinical, lossless, lines, paired, metric=config.lossless_metric)


def own_score_cache(sweep: str | Path, out: str | Path) -> Path:
    """The report's own copy of a sweep's score files, ``<out>/scores/<sweep name>-<8 hex>/``: the sweep's cached
    scores are copied there (files it lacks only) and any score the report computes is saved there, so a report
    never writes into a sweep's folder (which a live sweep may hold)."""
    sweep = Path(sweep)
    tag = hashlib.sha256(str(sweep.expanduser().resolve()).encode()).hexdigest()[:8]
    target = Path(out) / "scores" / f"{sweep.name or 'sweep'}-{tag}"
    target.mkdir(parents=True, exist_ok=True)
    source = sweep / "scores"
    if source.is_dir():
        for path in sorted(source.iterdir()):
            if path.is_file() and not path.name.startswith(".") and ".corrupt-" not in path.name:
                if not (target / path.name).exists():
                    with atomic_path(target / path.name) as tmp:
                        shutil.copyfile(path, tmp)
    return target


def _swept_models(config: ReportConfig) -> tuple[dict[str, SweepModel], list[str]]:
    """The models of every sweep folder among the results (their scores read from and saved to the report's own
    copy, :func:`own_score_cache`), and a note for every bare table."""
    swept: dict[str, SweepModel] = {}
    notes: list[str] = []
    if config.efficiency or config.heatmaps:
        for result in config.results:
            if is_sweep_dir(result):
                cache = own_score_cache(result, config.out)
                for key, model in load_swept_models(result, config.data_root).items():
                    swept[key] = dataclasses.replace(model, cache=cache)
            else:
                notes.append(f"{result} is a bare table: no efficiency or heatmaps for its models")
    return swept, notes


def _answers(tables: ReportTables, config: ReportConfig, efficiency: Sequence[Row] = ()) -> list[Answer]:
    """The summary of every (dataset, model), read at the strictest tolerance."""
    return answers(
        tables.summary,
        tables.lossless,
        tables.paired,
        tables.rows,
        min(config.tolerances),
        controls=config.controls,
        efficiency=efficiency,
    )


def _focus(found: Sequence[Answer]) -> list[Focus]:
    """The lines the heatmaps show: per answer its best attribution line, then its best control."""
    focus: list[Focus] = []
    for answer in found:
        methods = [k for k in answer.lines if not k.control]
        controls = sorted((k for k in answer.lines if k.control), key=lambda k: -(k.rate or 0.0))
        focus += [(k.method, k.sampling, answer.recommended) for k in (methods[:1] + controls[:1])]
    return focus


def _key_figures(
    found: Sequence[Answer], results: Sequence[Row], config: ReportConfig, out: Path
) -> tuple[list[Path | None], list[Path]]:
    """Per answer: the key figure (accuracy and balanced accuracy vs achieved rate with 95% intervals, test; ``None``
    when the table has neither metric or no pruned rate) and the per-class recall figure of its lines (when the rows
    have per-class recalls)."""
    keys: list[Path | None] = []
    recalls: list[Path] = []
    boot = {"n_resamples": config.n_resamples, "seed": config.bootstrap_seed}
    for answer in found:
        rows = key_rows(answer, results)
        rates = sorted({float(r["rate"]) for r in rows if r["method"] != "baseline" and float(r["rate"]) > 0})
        test_base = [r for r in rows if r["method"] == "baseline" and str(r.get("split") or "test") == "test"]
        lines, unpruned = {}, {}
        for metric in figures.KEY_PANELS:
            column = METRIC_COLUMNS[metric[0]]
            values = [float(r[column]) for r in test_base if r.get(column) not in (None, "")]
            if values:
                lines[metric[0]] = table1(rows, rates, column=f"drop_{metric[0]}", **boot)
                unpruned[metric[0]] = float(np.mean(values))
        slug = f"{answer.model}_{answer.dataset}".replace("/", "-")
        title = (
            f"{answer.model} on {answer.dataset}, {answer.protocol} ({answer.setting}), {answer.sampling} sampling: "
            "test split, mean over runs"
        )
        drawn = lines and rates
        keys.append(
            figures.plot_key_figure(lines, unpruned, out / f"key_{slug}.png", title, config.controls) if drawn else None
        )
        if any(k.startswith("recall_") for r in test_base for k in r):
            recalls.append(
                figures.plot_class_recall(
                    rows, out / f"class_recall_{slug}.png", f"Per-class recall: {title}", config.controls
                )
            )
    return keys, recalls


def check_inputs(config: ReportConfig) -> list[Row]:
    """Every check of ``config`` before the folder is touched; return the rows of its results tables.

    Raises:
        ValueError: no results given, or a negative or non-finite ``equivalence_margin``. FileNotFoundError /
            ValueError: a missing or empty table (naming it).
    """
    if not config.results:
        raise ValueError("no results given; pass sweep folders or results CSV files")
    margin = config.equivalence_margin
    if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not np.isfinite(margin) or margin < 0:
        raise ValueError(f"equivalence_margin must be a finite number >= 0 (metric units), got {margin!r}")
    return read_results(config.results)


def run_report(config: ReportConfig, *, sections: Sequence[tuple[str, str]] = ()) -> ReportResult:
    """Write the report (HTML, PNG and CSV files) and return its paths and tables.

    :func:`check_inputs` runs first (it reads the results tables); ``config.out`` is then taken with
    :class:`~medprune.rundir.RunDir` (one writer; another config's folder is refused unless ``config.overwrite``,
    which moves its content aside); the same config rewrites the report from the results. ``sections``: extra
    ``(heading, html)`` sections placed first on the page (``medprune study``: the claims).
    """
    rows = check_inputs(config)
    with RunDir(config.out, "report", config, cosmetic=COSMETIC, overwrite=config.overwrite):
        return _report(config, rows, sections)


def _report(config: ReportConfig, rows: list[Row], sections: Sequence[tuple[str, str]] = ()) -> ReportResult:
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    save_config(config, out)
    logger.info("report: %d rows from %s", len(rows), ", ".join(config.results))
    tables = _write_tables(rows, config, out)
    lossless = list(tables.lossless)
    curve_paths = figures.plot_curves(rows, out, tolerance=max(config.tolerances))
    logger.info("report: Table 1, lossless rates and %d curve figures written", len(curve_paths))

    found = _answers(tables, config)
    key_paths, recall_paths = _key_figures(found, rows, config, out)
    logger.info("report: the answer of %d model(s) and its key figures written", len(found))

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
            focus=_focus(found),
            controls=config.controls,
        )
        write_csv(similarity, out / "heatmap_similarity.csv", ordered_columns(similarity))
        logger.info("report: heatmaps and similarity curves written")

    tables = dataclasses.replace(tables, efficiency=efficiency, similarity=similarity)
    found = _answers(tables, config, efficiency)
    page_path = out / "report.html"
    page_html = render(
        config,
        tables,
        curve_paths,
        heat_paths,
        notes,
        sections,
        answers=found,
        key_figures=key_paths,
        recall_figures=recall_paths,
    )
    write_text_atomic(page_path, page_html)
    markdown = out / "results.md"
    title = "Results: " + ", ".join(sorted({str(r["dataset"]) for r in rows}))
    write_text_atomic(markdown, results_markdown(tables, config.table1_rates, config.tolerances, title, found))
    logger.info("report: %s, %s", page_path, markdown)
    mean_similarity = float(np.nanmean([s["pearson_mean"] for s in similarity])) if similarity else None
    return ReportResult(
        page_path,
        list(tables.table1),
        lossless,
        list(tables.summary),
        list(tables.paired),
        markdown,
        efficiency,
        [*(p for p in key_paths if p is not None), *recall_paths, *curve_paths, *heat_paths],
        similarity,
        len(rows),
        mean_similarity,
    )
