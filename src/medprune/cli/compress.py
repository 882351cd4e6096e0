"""``medprune compress CHECKPOINT``: the smallest model within tolerance on validation, recovered, physically smaller,
exported to ONNX, with a model card (see :mod:`medprune.runs.compress`)."""

from __future__ import annotations

import argparse

from medprune.cli.config_args import add_config_arguments, add_positional, config_from_args
from medprune.runs.compress import CompressConfig, run_compress

HELP = "compress a checkpoint: largest rate within tolerance on validation, recover, remove, export ONNX, model card"

FLAGS = {
    "--out": "out",
    "--method": "method",
    "--sampling": "sampling",
    "--metric": "metric",
    "--tolerance": "tolerance",
    "--rates": "rates",
    "--rate": "rate",
    "--macs-floor": "macs_floor",
    "--scope": "scope",
    "--normalize": "normalize",
    "--search-recovery": "search_recovery",
    "--finetune-epochs": "finetune_epochs",
    "--distill": "distill",
    "--rounds": "rounds",
    "--data-root": "data_root",
    "--device": "device",
    "--overwrite": "overwrite",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_positional(parser, CompressConfig, "checkpoint", optional=False)
    add_config_arguments(parser, CompressConfig, FLAGS)


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args, CompressConfig, FLAGS, checkpoint=args.checkpoint)
    result = run_compress(config)
    totals, test = result.record.totals, result.record.test_compressed
    print(
        f"rate {result.rate:.2f}: units removed {totals['units removed (fraction)']:.3f}, MACs removed "
        f"{totals['MACs removed (fraction)']:.3f}, test balanced accuracy "
        f"{result.record.test_original.balanced_accuracy:.4f} -> {test.balanced_accuracy:.4f}; "
        f"card {result.files['card_md']}"
    )
    return 0
