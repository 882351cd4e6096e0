"""``medprune evaluate``: metrics of a saved checkpoint on a dataset split, written as JSON.

Options come from (later wins): :class:`~medprune.runs.evaluate.EvaluateConfig` defaults, ``--config file.yaml``, the
positional checkpoint and flags, then ``--set key=value``. Dataset settings default to the checkpoint's sidecar.
"""

from __future__ import annotations

import argparse

from medprune.cli.config_args import add_config_arguments, add_positional
from medprune.cli.config_args import config_from_args as shared_config_from_args
from medprune.runs.evaluate import EvaluateConfig, run_evaluate

HELP = "evaluate a checkpoint on a dataset split (accuracy, balanced accuracy, F1, AUROC, per-class) -> JSON"

_FLAGS = {
    "--dataset": "dataset",
    "--data-root": "data_root",
    "--split": "split",
    "--batch-size": "batch_size",
    "--device": "device",
    "--max-samples": "max_samples",
    "--out": "out",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_positional(parser, EvaluateConfig, "checkpoint")
    add_config_arguments(parser, EvaluateConfig, _FLAGS, run_folder=False)


def config_from_args(args: argparse.Namespace) -> EvaluateConfig:
    """The resolved :class:`EvaluateConfig` (defaults ← YAML ← positional/flags ← ``--set``)."""
    return shared_config_from_args(args, EvaluateConfig, _FLAGS, checkpoint=args.checkpoint)


def run(args: argparse.Namespace) -> int:
    result = run_evaluate(config_from_args(args))
    metrics = result.metrics
    auroc = "-" if metrics["auroc"] is None else f"{metrics['auroc']:.4f}"
    print(
        f"{result.provenance['dataset']} {result.provenance['split']} ({metrics['n']} images): accuracy "
        f"{metrics['accuracy']:.4f} balanced {metrics['balanced_accuracy']:.4f} AUROC {auroc} -> {result.output}"
    )
    return 0
