"""``medprune compress CHECKPOINT``: the smallest model within tolerance on validation, recovered, physically smaller,
exported to ONNX, with a model card (see :mod:`medprune.runs.compress`)."""

from __future__ import annotations

import argparse

from medprune.cli.config_args import add_config_arguments, config_from_args
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
    "--scope": "scope",
    "--normalize": "normalize",
    "--search-recovery": "search_recovery",
    "--finetune-epochs": "finetune_epochs",
    "--distill": "distill",
    "--rounds": "rounds",
    "--data-root": "data_root",
    "--device": "device",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", metavar="CHECKPOINT", help="model.safetensors written by medprune train")
    add_config_arguments(parser, CompressConfig, FLAGS)
    parser.add_argument("--overwrite", action="store_true", help="move the output folder's content aside first")


def run(args: argparse.Namespace) -> int:
    config = config_from_args(
        args, CompressConfig, FLAGS, checkpoint=args.checkpoint, overwrite=True if args.overwrite else None
    )
    result = run_compress(config)
    totals, test = result.record.totals, result.record.test_compressed
    print(
        f"rate {result.rate:.2f}: units removed {totals['units removed (fraction)']:.3f}, MACs removed "
        f"{totals['MACs removed (fraction)']:.3f}, test balanced accuracy "
        f"{result.record.test_original.balanced_accuracy:.4f} -> {test.balanced_accuracy:.4f}; "
        f"card {result.files['card_md']}"
    )
    return 0
