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
    "--calibrate": "calibrate",
    "--quantize": "quantize",
    "--calibration-samples": "calibration_samples",
    "--export": "export",
    "--overwrite": "overwrite",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_positional(parser, CompressConfig, "checkpoint", optional=False)
    add_config_arguments(parser, CompressConfig, FLAGS)
    parser.add_argument(
        "--accept-uncertified",
        action="store_true",
        help="decision_rule=point: accept a rate whose validation point estimate is within tolerance although the "
        "split cannot certify it (the card says uncertified) (default: off)",
    )


def run(args: argparse.Namespace) -> int:
    extra = {"decision_rule": "point"} if args.accept_uncertified else {}
    config = config_from_args(args, CompressConfig, FLAGS, checkpoint=args.checkpoint, **extra)
    result = run_compress(config)
    record = result.record
    totals, test = record.totals, record.test_compressed
    promise = record.promise["non-inferiority"].get(config.metric, {}).get("verdict", "not shown")
    warnings = f"; WARNINGS: {' | '.join(record.warnings)}" if record.warnings else ""
    print(
        f"rate {result.rate:.2f}: units removed {totals['units removed (fraction)']:.3f}, MACs removed "
        f"{totals['MACs removed (fraction)']:.3f}, test balanced accuracy "
        f"{record.test_original.balanced_accuracy:.4f} -> {test.balanced_accuracy:.4f} ({config.metric} on test: "
        f"{promise}); card {result.files['card_md']}{warnings}"
    )
    quantization = record.quantization
    if quantization:
        verdict = "shipped" if quantization["shipped"] else f"NOT shipped ({quantization['why not']})"
        print(f"int8 {verdict}: {result.files.get('onnx_int8', quantization['file'])}")
    if "bundle" in result.files:
        print(f"MONAI bundle: {result.files['bundle']}")
    return 0
