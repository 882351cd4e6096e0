"""``medprune demo``: the whole pipeline on PneumoniaMNIST (train, score, sweep, prune, report) in one command."""

from __future__ import annotations

import argparse

from medprune.cli.config_args import add_config_arguments, config_from_args
from medprune.pipeline import DemoConfig

HELP = "run the whole pipeline on PneumoniaMNIST: train, score, sweep, prune at the lossless rate, report"

FLAGS = {"--data-root": "data_root", "--out": "out", "--epochs": "epochs"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, DemoConfig, FLAGS)
    parser.add_argument("--quick", dest="quick", action="store_const", const=True, help="tiny run (smoke test)")


def run(args: argparse.Namespace) -> int:
    from medprune.pipeline import run_demo

    config = config_from_args(args, DemoConfig, FLAGS, quick=args.quick)
    summary = run_demo(config)
    deployed = summary["deployed"]["choice"]
    print(f"demo done in {summary['wall_time_s']:.0f} s; deployed {deployed['method']}/{deployed['sampling']} at rate "
          f"{deployed['rate']:.2f} -> {summary['deployed']['checkpoint']}")  # fmt: skip
    print(f"report: {summary['report']}")
    return 0
