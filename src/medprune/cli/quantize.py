"""``medprune quantize TARGET``: int8 for a compressed model (a compress folder) or a checkpoint, shipped only when it
passes the compress decision rule on validation (see :mod:`medprune.runs.quantize`)."""

from __future__ import annotations

import argparse

from medprune.cli.config_args import add_config_arguments, add_positional, config_from_args
from medprune.deploy.runtimes import latency_row
from medprune.runs.quantize import QuantizeConfig, run_quantize

HELP = "int8 (ONNX Runtime static, QDQ) for a compress folder or a checkpoint, judged on validation; latency, ECE"

FLAGS = {
    "--out": "out",
    "--original": "original",
    "--calibration-samples": "calibration_samples",
    "--seed": "seed",
    "--data-root": "data_root",
    "--overwrite": "overwrite",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_positional(parser, QuantizeConfig, "target")
    add_config_arguments(parser, QuantizeConfig, FLAGS)


def run(args: argparse.Namespace) -> int:
    extra = {"target": args.target} if args.target else {}
    result = run_quantize(config_from_args(args, QuantizeConfig, FLAGS, **extra))
    record = result.record["quantization"]
    fp32, int8 = (latency_row(record["latency"], 1, m)["median ms"] for m in ("compressed fp32", "compressed int8"))
    verdict = "shipped" if result.shipped else f"NOT shipped ({record['why not']})"
    ece = result.record["calibration"]["ece"]
    print(
        f"int8 {verdict}: batch-1 latency {fp32:.2f} -> {int8:.2f} ms ({fp32 / int8:.2f}x), test ECE "
        f"{ece['compressed fp32']:.3f} -> {ece['compressed int8']:.3f}; {result.files['md']}"
    )
    for warning in record["warnings"]:
        print(f"warning: {warning}")
    return 0
