"""The whole pipeline as one function, :func:`run_demo`: train -> score + sweep -> lossless rate -> prune -> report.

Every choice (the best line, its lossless rate, the deployed run) reads validation rows only; the summary reports
the deployed model's test numbers, labelled as test.

Each stage writes into its own folder under ``config.out`` and reuses what a previous run of the same config left
there (the training checkpoint, the score files, the sweep rows, the pruned model), so re-running is cheap and a killed
run resumes.

>>> # result = run_demo(DemoConfig(data_root="data", out="runs/demo")); result.report
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from medprune.config import build_config, config_to_dict, save_config
from medprune.data import stack_samples
from medprune.options import LosslessMetric
from medprune.provenance import to_jsonable
from medprune.pruning import apply_masks
from medprune.recalibration import recalibrated_batchnorm
from medprune.report.tables import best_line, lossless_rates
from medprune.rundir import RunDir
from medprune.runs.prune import save_pruned
from medprune.runs.report import ReportConfig, run_report
from medprune.runs.sweep import SweepConfig, run_sweep
from medprune.runs.train import TrainConfig, run_train
from medprune.sweep.artifacts import load_swept_models
from medprune.sweep.protocols import SETTING_FIELDS, setting_text
from medprune.sweep.table import Row

logger = logging.getLogger(__name__)

__all__ = ["DemoConfig", "DemoResult", "Deployment", "run_demo", "shrink"]

#: DemoConfig fields that may differ between runs into one folder.
COSMETIC: tuple[str, ...] = ("out", "data_root", "threads")


@dataclass
class DemoConfig:
    """Options of ``medprune demo`` (``configs/demo.yaml``; ``quick: true`` shrinks everything for a smoke test).

    Attributes:
        data_root: folder holding ``pneumoniamnist/pneumoniamnist.npz`` (or ``$MEDPRUNE_DATA``).
        out: output folder (train/, sweep/, pruned/, report/, summary.json).
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
    threads: int | None = None
    quick: bool = False


@dataclass
class Deployment:
    """The physically pruned model the demo deployed (also ``pruned/done.json``).

    Attributes:
        choice: the deployed run (method, sampling, setting, selection seed, checkpoint key), its rate and achieved
            rate, the criterion, tolerance and metric, all chosen on validation, and ``val`` / ``test``: the metric
            there on each split (test reported, never used to choose).
        checkpoint: the pruned checkpoint. masked_accuracy, physical_accuracy, reloaded_accuracy: its test accuracy
            masked (with recalibrated BatchNorm statistics for a ``bn`` setting), physically pruned and read back.
        params, macs: ``[before, after]`` physical removal.
    """

    choice: dict[str, Any]
    checkpoint: str
    masked_accuracy: float
    physical_accuracy: float
    reloaded_accuracy: float
    params: list[int]
    macs: list[int]


@dataclass
class DemoResult:
    """What :func:`run_demo` produced (``summary.json`` is :meth:`to_dict`).

    Attributes:
        report: the HTML report. results: the sweep's results.csv. deployed: the pruned model.
        table1: Table 1 rows (test). lossless: lossless rates per line (chosen on val, confirmed on test).
        rows: sweep rows. wall_time_s: whole run.
    """

    report: Path
    results: Path
    deployed: Deployment
    table1: list[Row]
    lossless: list[Row]
    rows: int
    wall_time_s: float

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
        logger.info("stage 1/5 train: reusing %s", checkpoint)
        return checkpoint
    result = run_train(train)
    done.write_text(json.dumps(config_to_dict(train)))
    logger.info(
        "stage 1/5 train: test accuracy %.4f after %d epochs (%.0f s)",
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
    logger.info("stage 2/5 score + sweep: %d rows in %s", len(result.rows), result.results_csv)
    return result.rows


def _deploy(config: DemoConfig, best: dict[str, Any], sweep_dir: Path, out: Path) -> Deployment:
    """Stage 4: physically prune the chosen run at its validation lossless rate (reused when the choice is the same).

    For a ``recalibrate: bn`` setting the BatchNorm statistics are re-estimated on the same training images as in the
    sweep before the model is saved, so the deployed model is the swept one.
    """
    label = f"{config.deploy_tolerance:g}"
    column = "lossless" if config.deploy_criterion == "accuracy" else "clinical"
    rate = float(best[f"{column}@{label}"])
    choice = {
        **{f: best[f] for f in ("method", "sampling", "checkpoint", "seed", *SETTING_FIELDS)},
        "rate": rate,
        "achieved_rate": best[f"achieved@{label}"] if column == "lossless" else None,
        "criterion": config.deploy_criterion,
        "metric": best["metric"],
        "tolerance": config.deploy_tolerance,
        "chosen_on": "val",
        "val": best[f"val@{label}"] if column == "lossless" else None,
        "test": best[f"test@{label}"] if column == "lossless" else None,
    }
    done = out / "done.json"
    if done.is_file() and json.loads(done.read_text()).get("choice") == to_jsonable(choice):
        logger.info("stage 4/5 prune: reusing %s", out)
        return Deployment(**json.loads(done.read_text()))
    item = load_swept_models(sweep_dir, config.data_root)[best["checkpoint"]]
    masks = item.masks(best, rate, physical=True)
    test = stack_samples(item.splits.test, range(len(item.splits.test)))
    meta = {**item.meta, "pruning": {**choice, "couplings": config.couplings}}
    with contextlib.ExitStack() as stack:
        if best["recalibrate"] == "bn" and rate > 0:
            stack.enter_context(apply_masks(item.model, masks))
            stack.enter_context(recalibrated_batchnorm(item.model, item.recalibration(int(best["seed"]))))
        result = save_pruned(item.model, masks, out, test, list(item.splits.class_names), meta, "physical")
    if result.physical is None or result.reloaded_accuracy is None or not result.cost_before or not result.cost_after:
        raise RuntimeError(f"no physically pruned model was written to {out}")
    deployment = Deployment(
        choice=choice,
        checkpoint=str(result.checkpoint),
        masked_accuracy=result.masked["accuracy"],
        physical_accuracy=result.physical["accuracy"],
        reloaded_accuracy=result.reloaded_accuracy,
        params=[result.cost_before["params"], result.cost_after["params"]],
        macs=[result.cost_before["macs"], result.cost_after["macs"]],
    )
    done.write_text(json.dumps(to_jsonable(asdict(deployment)), indent=2, allow_nan=False) + "\n")
    return deployment


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
        "stage 3/5 lossless rate (validation): best line %s/%s %s, seed %s prunes %.2f within %g of %s",
        best["method"],
        best["sampling"],
        setting_text(best),
        best["seed"],
        best[f"lossless@{config.deploy_tolerance:g}"],
        config.deploy_tolerance,
        config.lossless_metric,
    )

    deployed = _deploy(config, best, sweep_dir, out / "pruned")
    logger.info(
        "stage 4/5 prune: %s params %d -> %d, accuracy masked %.4f physical %.4f",
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
    logger.info("stage 5/5 report: %s", report.html)

    result = DemoResult(
        report.html,
        sweep_dir / "results.csv",
        deployed,
        report.table1,
        report.summary,
        len(rows),
        round(time.perf_counter() - started, 1),
    )
    (out / "summary.json").write_text(json.dumps(to_jsonable(result.to_dict()), indent=2, allow_nan=False) + "\n")
    return result
