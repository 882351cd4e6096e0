"""The whole pipeline as one function, :func:`run_demo`: train -> score + sweep -> lossless rate -> prune -> report
-> compress (the deliverable: ``medprune compress`` with its defaults on the trained checkpoint).

Every choice (the best line, its lossless rate, the deployed run) reads validation rows only; the summary reports
the deployed model's test numbers, labelled as test.

Each stage writes into its own folder under ``config.out`` and reuses what a previous run of the same config left
there (the training checkpoint, the score files, the sweep rows, the pruned model), so re-running is cheap and a killed
run resumes.

>>> # result = run_demo(DemoConfig(data_root="data", out="runs/demo")); result.report
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from medprune.compression.search import NoCandidateError
from medprune.config import build_config, config_to_dict, option, save_config
from medprune.deploy.runtimes import latency_ms
from medprune.options import LosslessMetric
from medprune.provenance import to_jsonable
from medprune.pruning.masks import MAX_RATES
from medprune.pruning.ranking import Ranking
from medprune.report.tables import best_line, lossless_rates
from medprune.rundir import OutputFolder, RunDir, config_diff, output_folder, write_text_atomic
from medprune.runs.compress import CompressConfig, run_compress
from medprune.runs.deploy import Deployment, deploy_choice
from medprune.runs.report import ReportConfig, run_report
from medprune.runs.sweep import SweepConfig, run_sweep
from medprune.runs.train import COSMETIC as TRAIN_COSMETIC
from medprune.runs.train import TrainConfig, run_train
from medprune.scoring.request import ScoreRecipe
from medprune.sweep.protocols import setting_text
from medprune.sweep.table import Row
from medprune.training.config import MAX_EPOCHS, MAX_IMAGE_SIZE

logger = logging.getLogger(__name__)

__all__ = ["DemoConfig", "DemoResult", "DemoStages", "check_inputs", "compress_summary", "run_demo", "shrink"]

#: DemoConfig fields that may differ between runs into one folder.
COSMETIC: tuple[str, ...] = ("out", "data_root", "threads")


@dataclass
class DemoConfig(OutputFolder):
    """Options of ``medprune demo`` (``configs/demo.yaml``; ``quick: true`` shrinks everything for a smoke test)."""

    out: str = output_folder("runs/demo")
    data_root: str | None = option(None, help="folder holding pneumoniamnist/pneumoniamnist.npz (or $MEDPRUNE_DATA)")
    dataset: str = option("pneumoniamnist", help="the training run")
    model: str = option("resnet_small", help="the training run")
    image_size: int = option(28, help="the training run", limit=MAX_IMAGE_SIZE)
    epochs: int = option(4, help="the training run", limit=MAX_EPOCHS)
    batch_size: int = option(32, help="the training run")
    max_train_samples: int | None = option(None, help="the training run")
    seed: int = option(0, help="the training run")
    train_options: dict[str, Any] = option(default_factory=dict, help="any other medprune.runs.train.TrainConfig field")
    methods: list[str] = option(default_factory=lambda: ["lrp", "dlb", "ig"], help="the sweep")
    samplings: list[str] = option(default_factory=lambda: ["random", "confidence", "clustering"], help="the sweep")
    controls: list[str] = option(default_factory=lambda: ["random", "magnitude"], help="the sweep")
    rates: list[float] = option(
        default_factory=lambda: [round(0.05 * i, 2) for i in range(20)], help="the sweep", max_items=MAX_RATES
    )
    scoring: ScoreRecipe = option(
        default_factory=ScoreRecipe, help="the sweep's score recipe: how per-sample relevance becomes unit scores"
    )
    selection_seeds: list[int] = option(
        default_factory=lambda: [0, 1, 2], help="selection seeds of the sweep (each method's curves once per seed)"
    )
    protocols: list[str] = option(
        default_factory=lambda: ["paper", "default"],
        help="named settings swept (paper, default; medprune.sweep.protocols)",
    )
    recalibrate_samples: int = option(512, help="training images for recalibrate: bn settings")
    ranking: Ranking = option(
        default_factory=lambda: Ranking(couplings=True), help="the sweep's ranking: how scores are ranked into masks"
    )
    tolerances: list[float] = option(
        default_factory=lambda: [0.01, 0.05], help="tolerances of the lossless rates in the report"
    )
    lossless_metric: LosslessMetric = option(
        "balanced_accuracy",
        help=(
            "the metric of the lossless rates (balanced_accuracy by default; the report's "
            'Table 1 "as the paper" stays on accuracy)'
        ),
    )
    deploy_tolerance: float = option(
        0.01,
        help=(
            "the lossless rate the deployed (physically pruned) model uses: the line (method,"
            " sampling, setting) with the largest mean validation lossless rate over its "
            "seeds, then its run with the median validation lossless rate (worst_recall: on "
            "the worst per-class recall drop)"
        ),
    )
    deploy_criterion: Literal["accuracy", "worst_recall"] = option(
        "accuracy",
        help=(
            "the lossless rate the deployed (physically pruned) model uses: the line (method,"
            " sampling, setting) with the largest mean validation lossless rate over its "
            "seeds, then its run with the median validation lossless rate (worst_recall: on "
            "the worst per-class recall drop)"
        ),
    )
    efficiency: bool = option(True, help="report sections")
    heatmaps: bool = option(True, help="report sections")
    report_options: dict[str, Any] = option(default_factory=dict, help="other medprune.runs.report.ReportConfig fields")
    compress: bool = option(
        True,
        help=(
            "end with medprune compress on the trained checkpoint (compress/: the smaller model, ONNX and model card)"
        ),
    )
    compress_options: dict[str, Any] = option(
        default_factory=dict,
        help="medprune.runs.compress.CompressConfig fields (default: its own, except quantize: int8 (DEMO_COMPRESS))",
    )
    threads: int | None = option(
        None,
        help="torch CPU threads",
        shown_default="torch's default; 1 is fastest on a machine shared with other jobs",
    )
    quick: bool = option(
        False, help="a tiny run for tests: 1 epoch on 300 images, rates 0 and 0.3, LRP (random sampling) + controls"
    )


@dataclass
class DemoResult:
    """What :func:`run_demo` produced (``summary.json`` is :meth:`to_dict`).

    Attributes:
        report: the HTML report. results: the sweep's results.csv. deployed: the pruned model.
        table1: Table 1 rows (test). lossless: lossless rates per line (chosen on val, confirmed on test).
        rows: sweep rows. wall_time_s: whole run. compressed: what compress shipped (:func:`compress_summary`;
            ``{"refused": why}`` when no candidate rate stayed within tolerance, ``None`` when not asked for).
    """

    report: Path
    results: Path
    deployed: Deployment
    table1: list[Row]
    lossless: list[Row]
    rows: int
    wall_time_s: float
    compressed: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON content of ``summary.json``."""
        return {
            "report": str(self.report),
            "results": str(self.results),
            "deployed": asdict(self.deployed),
            "table1": self.table1,
            "lossless": self.lossless,
            "rows": self.rows,
            "wall_time_s": self.wall_time_s,
            "compressed": self.compressed,
        }


def shrink(config: DemoConfig) -> DemoConfig:
    """The ``quick`` version of a config (a new one): small enough for a smoke test (well under a minute on 2 cores)."""
    return dataclasses.replace(
        config,
        epochs=1,
        max_train_samples=min(config.max_train_samples or 300, 300),
        methods=["lrp"],
        samplings=["random"],
        controls=["random", "magnitude"],
        rates=[0.0, 0.3],
        scoring=dataclasses.replace(config.scoring, n_per_class=3),
        selection_seeds=config.selection_seeds[:1],
        protocols=config.protocols[:1],
        recalibrate_samples=min(config.recalibrate_samples, 64),
        train_options={"max_eval_samples": 200, **config.train_options},
        report_options={
            "heatmap_per_class": 1,
            "similarity_images": 2,
            "similarity_rates": [0.3],
            **config.report_options,
        },
        compress_options={
            "rates": [0.3],
            "tolerance": 0.5,
            "finetune_steps": 4,
            "max_train_samples": 200,
            "recalibration_samples": 64,
            "latency_repeats": 2,
            "calibration_samples": 32,
            **config.compress_options,
        },
    )


#: What the demo's compress stage asks for beyond compress's defaults: the int8 model too (ONNX Runtime static
#: quantization, shipped only when it passes the same rule on validation), so the demo shows the whole deliverable.
DEMO_COMPRESS: dict[str, Any] = {"quantize": "int8"}


@dataclass
class DemoStages:
    """The resolved config of every stage of a demo run, built (and so checked) before any work.

    Attributes:
        train: stage 1 (``<out>/train``). sweep: stage 2 (``<out>/sweep``; its checkpoint is written by stage 1, so
        the checks that read it run when the stage starts). report: stage 5 (``<out>/report``). compress: stage 6
        (``<out>/compress``; ``None`` when not asked for).
    """

    train: TrainConfig
    sweep: SweepConfig
    report: ReportConfig
    compress: CompressConfig | None


def check_inputs(config: DemoConfig) -> DemoStages:
    """Build every stage's config from ``config`` (``train_options``, ``report_options``, ``compress_options``
    included), so a bad option is refused before training starts."""
    out = Path(config.out)
    train = build_config(
        TrainConfig,
        overrides={
            "dataset": config.dataset,
            "data_root": config.data_root,
            "model": config.model,
            "image_size": config.image_size,
            "epochs": config.epochs,
            "batch_size": config.batch_size,
            "max_train_samples": config.max_train_samples,
            "seed": config.seed,
            "progress": False,
            "device": "cpu",
            "out": str(out / "train"),
            **config.train_options,
        },
    )
    sweep = build_config(
        SweepConfig,
        overrides={
            "checkpoints": [str(out / "train" / "model.safetensors")],
            "out": str(out / "sweep"),
            "data_root": config.data_root,
            "methods": config.methods,
            "samplings": config.samplings,
            "controls": config.controls,
            "rates": config.rates,
            "scoring": config.scoring,
            "seeds": config.selection_seeds,
            "protocols": config.protocols,
            "recalibrate_samples": config.recalibrate_samples,
            "ranking": config.ranking,
        },
    )
    report = build_config(
        ReportConfig,
        overrides={
            "results": [sweep.out],
            "out": str(out / "report"),
            "tolerances": sorted({*config.tolerances, config.deploy_tolerance}),
            "efficiency": config.efficiency,
            "heatmaps": config.heatmaps,
            "data_root": config.data_root,
            "lossless_metric": config.lossless_metric,
            **config.report_options,
        },
    )
    compress = None
    if config.compress:
        overrides = {"checkpoint": sweep.checkpoints[0], "out": str(out / "compress"), "data_root": config.data_root}
        compress = build_config(CompressConfig, overrides={**DEMO_COMPRESS, **overrides, **config.compress_options})
    return DemoStages(train, sweep, report, compress)


def _train(train: TrainConfig) -> Path:
    """Stage 1: train (or reuse the checkpoint a run of the same training config left)."""
    out = Path(train.out)
    checkpoint = out / "model.safetensors"
    done = out / "done.json"
    # a done.json of the same training config (where it is written and how it is shown aside: a record made before
    # ``out_dir`` became ``out`` matches too) means the checkpoint is there to reuse
    if checkpoint.is_file() and done.is_file() and not config_diff(json.loads(done.read_text()), train, TRAIN_COSMETIC):
        logger.info("stage 1/6 train: reusing %s", checkpoint)
        return checkpoint
    result = run_train(train)
    write_text_atomic(done, json.dumps(config_to_dict(train)))
    logger.info(
        "stage 1/6 train: test accuracy %.4f after %d epochs (%.0f s)",
        result.test_metrics["accuracy"],
        train.epochs,
        result.wall_time_s,
    )
    return checkpoint


def _sweep(sweep: SweepConfig) -> list[Row]:
    """Stage 2: score and sweep (rows and score files already there are reused)."""
    result = run_sweep(sweep)
    logger.info("stage 2/6 score + sweep: %d rows in %s", len(result.rows), result.results_csv)
    return result.rows


def _compress(compress: CompressConfig) -> dict[str, Any]:
    """Stage 6: compress the trained checkpoint (the rate chosen on validation; resumed from its folder)."""
    try:
        result = run_compress(compress)
    except NoCandidateError as error:
        logger.warning("stage 6/6 compress: nothing shipped: %s", error)
        return {"refused": str(error)}
    shipped = compress_summary(result.rate, result.record, result.files)
    logger.info(
        "stage 6/6 compress: rate %.2f removes %.3f of the units and %.3f of the MACs; test balanced accuracy "
        "%.4f -> %.4f; card %s",
        shipped["rate"],
        shipped["units_removed"],
        shipped["macs_removed"],
        *shipped["test_balanced_accuracy"],
        shipped["card"],
    )
    return shipped


def compress_summary(rate: float, record: Any, files: dict[str, str]) -> dict[str, Any]:
    """The demo summary's view of a compress run: rate, sizes, test balanced accuracy and the files; ``int8``: whether
    the int8 model shipped (or why not), its file and the ONNX Runtime batch-1 latency of the compressed fp32 and int8
    models (when quantization was asked for)."""
    totals, before, after = record.totals, record.test_original, record.test_compressed
    quantization = record.quantization
    int8 = None
    if quantization:
        rows = quantization.get("latency", [])
        int8 = {
            "shipped": quantization["shipped"],
            "why_not": quantization["why not"],
            "onnx": files.get("onnx_int8"),
            "ort_batch1_ms": [latency_ms(rows, 1, model) for model in ("compressed fp32", "compressed int8")],
        }
    return {
        "rate": rate,
        "units_removed": totals["units removed (fraction)"],
        "macs_removed": totals["MACs removed (fraction)"],
        "params": [totals["params before"], totals["params after"]],
        "test_balanced_accuracy": [before.balanced_accuracy, after.balanced_accuracy],
        "chosen_on": "val",
        "model": files.get("weights"),
        "onnx": files.get("onnx"),
        "card": files.get("card_md"),
        "int8": int8,
    }


def run_demo(config: DemoConfig) -> DemoResult:
    """Run the whole pipeline on one dataset; the summary is also written to ``<out>/summary.json``.

    :func:`check_inputs` builds every stage's config first; ``config.out`` is then taken with
    :class:`~medprune.rundir.RunDir` (one writer; another config's folder is refused unless ``config.overwrite``,
    which moves its content aside); each stage's folder is a run folder of its own.
    """
    started = time.perf_counter()
    config = shrink(config) if config.quick else config
    stages = check_inputs(config)
    with RunDir(config.out, "demo", config, cosmetic=COSMETIC, overwrite=config.overwrite):
        return _demo(config, stages, started)


def _demo(config: DemoConfig, stages: DemoStages, started: float) -> DemoResult:
    if config.threads:
        torch.set_num_threads(config.threads)
    out = Path(config.out)
    save_config(config, out)

    _train(stages.train)
    sweep_dir = Path(stages.sweep.out)
    rows = _sweep(stages.sweep)

    tolerances = sorted({*config.tolerances, config.deploy_tolerance})
    lossless = lossless_rates(rows, tolerances, metric=config.lossless_metric)  # chosen on val rows only
    best = best_line(lossless, config.deploy_tolerance, config.deploy_criterion)
    logger.info(
        "stage 3/6 lossless rate (validation): best line %s/%s %s, seed %s prunes %.2f within %g of %s",
        best["method"],
        best["sampling"],
        setting_text(best),
        best["seed"],
        best[f"lossless@{config.deploy_tolerance:g}"],
        config.deploy_tolerance,
        config.lossless_metric,
    )

    deployed = deploy_choice(
        best,
        sweep_dir,
        out / "pruned",
        tolerance=config.deploy_tolerance,
        criterion=config.deploy_criterion,
        couplings=config.ranking.couplings,
        data_root=config.data_root,
    )
    logger.info(
        "stage 4/6 prune: %s params %d -> %d, accuracy masked %.4f physical %.4f",
        deployed.checkpoint,
        *deployed.params,
        deployed.masked_accuracy,
        deployed.physical_accuracy,
    )

    report = run_report(stages.report)
    logger.info("stage 5/6 report: %s", report.html)

    compressed = _compress(stages.compress) if stages.compress is not None else None

    result = DemoResult(
        report.html,
        sweep_dir / "results.csv",
        deployed,
        report.table1,
        report.summary,
        len(rows),
        round(time.perf_counter() - started, 1),
        compressed,
    )
    write_text_atomic(out / "summary.json", json.dumps(to_jsonable(result.to_dict()), indent=2, allow_nan=False) + "\n")
    return result
