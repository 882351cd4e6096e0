"""The whole pipeline as one function, :func:`run_demo`: train -> score + sweep -> lossless rate -> prune -> report.

Each stage writes into its own folder under ``config.out`` and reuses what a previous run of the same config left
there (the training checkpoint, the score files, the sweep rows, the pruned model), so re-running is cheap and a killed
run resumes.

>>> # results = run_demo(DemoConfig(data_root="../shared/data", out="runs/demo"))
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from medprune.checkpoint import to_jsonable
from medprune.config import config_to_dict, save_config

logger = logging.getLogger(__name__)


@dataclass
class DemoConfig:
    """Options of ``medprune demo`` (``configs/demo.yaml``; ``quick: true`` shrinks everything for a smoke test).

    Attributes:
        data_root: folder holding ``pneumoniamnist/pneumoniamnist.npz`` (or ``$MEDPRUNE_DATA``).
        out: output folder (train/, sweep/, pruned/, report/, summary.json).
        dataset, model, image_size, epochs, batch_size, max_train_samples, seed: the training run.
        train_options: any other :class:`medprune.train_config.TrainConfig` field.
        methods, samplings, controls, rates, n_per_class, scope, normalize, couplings: the sweep.
        tolerances: tolerances of the lossless rates in the report.
        deploy_tolerance, deploy_criterion: the lossless rate the deployed (physically pruned) model uses: the best
            curve's largest rate with accuracy (or worst-class recall) drop within the tolerance.
        efficiency, heatmaps: report sections. report_options: other :class:`ReportConfig` fields.
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
    scope: Literal["global", "layer"] = "global"
    normalize: Literal["none", "total", "max", "l2"] = "none"
    couplings: bool = True
    tolerances: list[float] = field(default_factory=lambda: [0.01, 0.05])
    deploy_tolerance: float = 0.01
    deploy_criterion: Literal["accuracy", "worst_recall"] = "accuracy"
    efficiency: bool = True
    heatmaps: bool = True
    report_options: dict[str, Any] = field(default_factory=dict)
    threads: int | None = None
    quick: bool = False


def shrink(config: DemoConfig) -> DemoConfig:
    """The ``quick`` version of a config: small enough for a smoke test (well under a minute on 2 cores)."""
    config.epochs, config.max_train_samples = 1, min(config.max_train_samples or 300, 300)
    config.methods, config.samplings, config.controls = ["lrp"], ["random"], ["random", "magnitude"]
    config.rates, config.n_per_class = [0.0, 0.3], 3
    config.train_options = {"max_eval_samples": 200, **config.train_options}
    config.report_options = {"heatmap_per_class": 1, "similarity_images": 2, "similarity_rates": [0.3],
                             **config.report_options}  # fmt: skip
    return config


def _train(config: DemoConfig, out: Path) -> Path:
    from medprune.config import build_config
    from medprune.train import run_train
    from medprune.train_config import TrainConfig

    train = build_config(TrainConfig, overrides={
        "dataset": config.dataset, "data_root": config.data_root, "model": config.model,
        "image_size": config.image_size, "epochs": config.epochs, "batch_size": config.batch_size,
        "max_train_samples": config.max_train_samples, "seed": config.seed, "progress": False, "device": "cpu",
        "out_dir": str(out), **config.train_options,
    })  # fmt: skip
    checkpoint = out / "model.safetensors"
    done = out / "done.json"
    if checkpoint.is_file() and done.is_file() and json.loads(done.read_text()) == config_to_dict(train):
        logger.info("stage 1/5 train: reusing %s", checkpoint)
        return checkpoint
    result = run_train(train)
    done.write_text(json.dumps(config_to_dict(train)))
    logger.info("stage 1/5 train: test accuracy %.4f after %d epochs (%.0f s)", result.test_metrics["accuracy"],
                config.epochs, result.wall_time_s)  # fmt: skip
    return checkpoint


def _deploy(config: DemoConfig, best: dict[str, Any], sweep_dir: Path, out: Path) -> dict[str, Any]:
    from medprune.data import stack_samples
    from medprune.deploy import save_pruned
    from medprune.sweep.artifacts import load_swept_models

    rate = float(best[f"lossless@{config.deploy_tolerance:g}" if config.deploy_criterion == "accuracy"
                      else f"clinical@{config.deploy_tolerance:g}"])  # fmt: skip
    choice = {"method": best["method"], "sampling": best["sampling"], "rate": rate, "checkpoint": best["checkpoint"],
              "criterion": config.deploy_criterion, "tolerance": config.deploy_tolerance}  # fmt: skip
    done = out / "done.json"
    if done.is_file() and json.loads(done.read_text()).get("choice") == choice:
        logger.info("stage 4/5 prune: reusing %s", out)
        return json.loads(done.read_text())
    item = load_swept_models(sweep_dir, config.data_root)[best["checkpoint"]]
    masks = item.masks(best["method"], best["sampling"], rate, physical=True)
    test = stack_samples(item.splits.test, range(len(item.splits.test)))
    meta = {**item.meta, "pruning": {**choice, "scope": config.scope, "normalize": config.normalize}}
    result = save_pruned(item.model, masks, out, test, list(item.splits.class_names), meta, "physical")
    summary = {"choice": choice, "checkpoint": result["checkpoint"], "masked_accuracy": result["masked"]["accuracy"],
               "physical_accuracy": result["physical"]["accuracy"], "reloaded_accuracy": result["reloaded_accuracy"],
               "params": [result["cost_before"]["params"], result["cost_after"]["params"]],
               "macs": [result["cost_before"]["macs"], result["cost_after"]["macs"]]}  # fmt: skip
    done.write_text(json.dumps(to_jsonable(summary), indent=2, allow_nan=False) + "\n")
    return summary


def run_demo(config: DemoConfig) -> dict[str, Any]:
    """Run the whole pipeline on one dataset and return a summary (also written to ``<out>/summary.json``)."""
    from medprune.report.build import ReportConfig, build_report
    from medprune.report.tables import best_curve, lossless_rates
    from medprune.sweep.run import SweepConfig, run_sweep

    started = time.perf_counter()
    config = shrink(config) if config.quick else config
    if config.threads:
        import torch

        torch.set_num_threads(config.threads)
    out = Path(config.out)
    save_config(config, out)

    checkpoint = _train(config, out / "train")

    sweep_dir = out / "sweep"
    rows = run_sweep(SweepConfig(
        checkpoints=[str(checkpoint)], out=str(sweep_dir), data_root=config.data_root, methods=config.methods,
        samplings=config.samplings, controls=config.controls, rates=config.rates, n_per_class=config.n_per_class,
        seed=config.seed, scope=config.scope, normalize=config.normalize, couplings=config.couplings,
    ))  # fmt: skip
    logger.info("stage 2/5 score + sweep: %d rows in %s", len(rows), sweep_dir / "results.csv")

    tolerances = sorted({*config.tolerances, config.deploy_tolerance})
    lossless = lossless_rates(rows, tolerances)
    best = best_curve(lossless, config.deploy_tolerance, config.deploy_criterion)
    logger.info("stage 3/5 lossless rate: best curve %s/%s prunes %.2f within %g", best["method"], best["sampling"],
                best[f"lossless@{config.deploy_tolerance:g}"], config.deploy_tolerance)  # fmt: skip

    deployed = _deploy(config, best, sweep_dir, out / "pruned")
    logger.info("stage 4/5 prune: %s params %d -> %d, accuracy masked %.4f physical %.4f", deployed["checkpoint"],
                *deployed["params"], deployed["masked_accuracy"], deployed["physical_accuracy"])  # fmt: skip

    report = build_report(ReportConfig(results=[str(sweep_dir)], out=str(out / "report"), tolerances=tolerances,
                                       efficiency=config.efficiency, heatmaps=config.heatmaps,
                                       data_root=config.data_root, **config.report_options))  # fmt: skip
    logger.info("stage 5/5 report: %s", report["html"])

    summary = {"report": str(report["html"]), "results": str(sweep_dir / "results.csv"), "deployed": deployed,
               "table1": report["table1"], "lossless": lossless, "rows": len(rows),
               "wall_time_s": round(time.perf_counter() - started, 1)}  # fmt: skip
    (out / "summary.json").write_text(json.dumps(to_jsonable(summary), indent=2, allow_nan=False) + "\n")
    return summary
