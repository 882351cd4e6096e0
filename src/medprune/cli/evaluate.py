"""``medprune evaluate``: metrics of a saved checkpoint on a dataset split, written as JSON.

Options come from (later wins): :class:`~medprune.runs.evaluate.EvaluateConfig` defaults, ``--config file.yaml``, the
positional checkpoint and flags, then ``--set key=value``. Dataset settings default to the checkpoint's sidecar.
"""

from __future__ import annotations

import argparse
import dataclasses

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
    keys = [f.name for f in dataclasses.fields(EvaluateConfig)]
    parser.add_argument("checkpoint", nargs="?", help="<stem>.safetensors / <stem>.json written by medprune train")
    parser.add_argument("--config", metavar="YAML", help="YAML file of EvaluateConfig options")
    for flag, name in _FLAGS.items():
        parser.add_argument(flag, dest=name, metavar=name.upper())
    parser.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        default=[],
        help=f"any EvaluateConfig option; valid keys: {', '.join(keys)}",
    )


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
