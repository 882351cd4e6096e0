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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from medprune.compression.search import NoCandidateError
from medprune.config import build_config, config_to_dict, save_config
from medprune.options import LosslessMetric
from medprune.provenance import to_jsonable
from medprune.report.tables import best_line, lossless_rates
from medprune.rundir import RunDir
from medprune.runs.compress import CompressConfig, run_compress
from medprune.runs.deploy import Deployment, deploy_choice
from medprune.runs.report import ReportConfig, run_report
from medprune.runs.sweep import SweepConfig, run_sweep
from medprune.runs.train import TrainConfig, run_train
from medprune.sweep.protocols import setting_text
from medprune.sweep.table import Row

logger = logging.getLogger(__name__)

__all__ = ["DemoConfig", "DemoResult", "compress_summary", "run_demo", "shrink"]

#: DemoConfig fields that may differ between runs into one folder.
COSMETIC: tuple[str, ...] = ("out", "data_root", "threads")


@dataclass
class DemoConfig:
    """Options of ``medprune demo`` (``configs/demo.yaml``; ``quick: true`` shrinks everything for a smoke test).

    Attributes:
        data_root: folder holding ``pneumoniamnist/pneumoniamnist.npz`` (or ``$MEDPRUNE_DATA``).
        out: output folder (train/, sweep/, pruned/, report/, compress/, summary.json).
        dataset, model, image_size, epochs, batch_size, max_train_samples, seed: the training run.
        train_options: any other :class:`medprune.runs.train.TrainConfig` field.
        methods, samplings, controls, rates, n_per_class, couplings: the sweep.
        selection_seeds: selection seeds of the sweep (each method's curves once per seed).
        protocols: named settings swept (``paper``, ``default``; :mod:`medprune.sweep.protocols`).
        recalibrate_samples: training images for ``recalibrate: bn`` settings.
        tolerances: tolerances of the lossless rates in the report.
        lossless_metric: the metric of the lossless rates (``balanced_accuracy`` by default; the report's Table 1
            "as the paper" stays on accuracy).
        deploy_tolerance, deploy_criterion: the lossless rate the deployed (physically pruned) model uses: the line
            (method, sampling, setting) with the largest mean validation lossless rate over its seeds, then its run
            with the median validation lossless rate (``worst_recall``: on the worst per-class recall drop).
        efficiency, heatmaps: report sections. report_options: other :class:`medprune.runs.report.ReportConfig` fields.
        compress: end with ``medprune compress`` on the trained checkpoint (``compress/``: the smaller model, ONNX and
            model card). compress_options: :class:`medprune.runs.compress.CompressConfig` fields (default: its own).
        threads: torch CPU threads (``None``: torch's default; 1 is fastest on a machine shared with other jobs).
        quick: a tiny run for tests: 1 epoch on 300 images, rates 0 and 0.3, LRP (random sampling) + controls.
    """

    data_root: str | None = None
    out: str = "runs/demo"
    dataset: str = "pneumoniamnist"
    model: str = "resnet_small"
    image_size: int = 28
    epochs: int = 4
    batch_size: int = 32
    max_train_samples: int | None = None
    seed: int = 0
    train_options: dict[str, Any] = field(default_factory=dict)
    methods: list[str] = field(default_factory=lambda: ["lrp", "dlb", "ig"])
    samplings: list[str] = field(default_factory=lambda: ["random", "confidence", "clustering"])
    controls: list[str] = field(default_factory=lambda: ["random", "magnitude"])
    rates: list[float] = field(default_factory=lambda: [round(0.05 * i, 2) for i in range(20)])
    n_per_class: int = 10
    selection_seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    protocols: list[str] = field(default_factory=lambda: ["paper", "default"])
    recalibrate_samples: int = 512
    couplings: bool = True
    tolerances: list[float] = field(default_factory=lambda: [0.01, 0.05])
    lossless_metric: LosslessMetric = "balanced_accuracy"
    deploy_tolerance: float = 0.01
    deploy_criterion: Literal["accuracy", "worst_recall"] = "accuracy"
    efficiency: bool = True
    heatmaps: bool = True
    report_options: dict[str, Any] = field(default_factory=dict)
    compress: bool = True
    compress_options: dict[str, Any] = field(default_factory=dict)
    threads: int | None = None
    quick: bool = False


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
        n_per_class=3,
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
            **config.compress_options,
        },
    )


def _train(config: DemoConfig, out: Path) -> Path:
    """Stage 1: train (or reuse the checkpoint a run of the same training config left)."""
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
            "out_dir": str(out),
            **config.train_options,
        },
    )
    checkpoint = out / "model.safetensors"
    done = out / "done.json"
    if checkpoint.is_file() and done.is_file() and json.loads(done.read_text()) == config_to_dict(train):
        logger.info("stage 1/6 train: reusing %s", checkpoint)
        return checkpoint
    result = run_train(train)
    done.write_text(json.dumps(config_to_dict(train)))
    logger.info(
        "stage 1/6 train: test accuracy %.4f after %d epochs (%.0f s)",
        result.test_metrics["accuracy"],
        config.epochs,
        result.wall_time_s,
    )
    return checkpoint


def _sweep(config: DemoConfig, checkpoint: Path, sweep_dir: Path) -> list[Row]:
    """Stage 2: score and sweep (rows and score files already there are reused)."""
    result = run_sweep(
        SweepConfig(
            checkpoints=[str(checkpoint)],
            out=str(sweep_dir),
            data_root=config.data_root,
            methods=config.methods,
            samplings=config.samplings,
            controls=config.controls,
            rates=config.rates,
            n_per_class=config.n_per_class,
            seeds=config.selection_seeds,
            protocols=config.protocols,
            recalibrate_samples=config.recalibrate_samples,
            couplings=config.couplings,
        )
    )
    logger.info("stage 2/6 score + sweep: %d rows in %s", len(result.rows), result.results_csv)
    return result.rows


def _compress(config: DemoConfig, checkpoint: Path, out: Path) -> dict[str, Any]:
    """Stage 6: compress the trained checkpoint (the rate chosen on validation; resumed from ``out``)."""
    overrides = {"checkpoint": str(checkpoint), "out": str(out), "data_root": config.data_root}
    try:
        result = run_compress(build_config(CompressConfig, overrides={**overrides, **config.compress_options}))
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
    """The demo summary's view of a compress run: rate, sizes, test balanced accuracy and the files."""
    totals, before, after = record.totals, record.test_original, record.test_compressed
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
    }


def run_demo(config: DemoConfig, *, overwrite: bool = False) -> DemoResult:
    """Run the whole pipeline on one dataset; the summary is also written to ``<out>/summary.json``.

    ``config.out`` is taken with :class:`~medprune.rundir.RunDir` (one writer; another config's folder is refused
    unless ``overwrite``, which moves its content aside); each stage's folder is a run folder of its own.
    """
    started = time.perf_counter()
    config = shrink(config) if config.quick else config
    with RunDir(config.out, "demo", config, cosmetic=COSMETIC, overwrite=overwrite):
        return _demo(config, started)


def _demo(config: DemoConfig, started: float) -> DemoResult:
    if config.threads:
        torch.set_num_threads(config.threads)
    out = Path(config.out)
    save_config(config, out)

    checkpoint = _train(config, out / "train")
    sweep_dir = out / "sweep"
    rows = _sweep(config, checkpoint, sweep_dir)

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
        couplings=config.couplings,
        data_root=config.data_root,
    )
    logger.info(
        "stage 4/6 prune: %s params %d -> %d, accuracy masked %.4f physical %.4f",
        deployed.checkpoint,
        *deployed.params,
        deployed.masked_accuracy,
        deployed.physical_accuracy,
    )

    report = run_report(
        ReportConfig(
            results=[str(sweep_dir)],
            out=str(out / "report"),
            tolerances=tolerances,
            efficiency=config.efficiency,
            heatmaps=config.heatmaps,
            data_root=config.data_root,
            lossless_metric=config.lossless_metric,
            **config.report_options,
        )
    )
    logger.info("stage 5/6 report: %s", report.html)

    compressed = _compress(config, checkpoint, out / "compress") if config.compress else None

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
    (out / "summary.json").write_text(json.dumps(to_jsonable(result.to_dict()), indent=2, allow_nan=False) + "\n")
    return result
