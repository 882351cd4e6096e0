"""``medprune report``: Table 1, lossless rates, curves, efficiency and heatmaps as one HTML page + PNG/CSV files."""

from __future__ import annotations

import argparse

from medprune.cli.config_args import add_config_arguments, config_from_args
from medprune.runs.report import ReportConfig, run_report

HELP = "build the report (Table 1, lossless rates, curves, efficiency, heatmaps) from sweep folders or CSVs"

FLAGS = {
    "--results": "results",
    "--out": "out",
    "--tolerances": "tolerances",
    "--data-root": "data_root",
    "--efficiency": "efficiency",
    "--heatmaps": "heatmaps",
    "--overwrite": "overwrite",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, ReportConfig, FLAGS)


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args, ReportConfig, FLAGS)
    print(f"report: {run_report(config).html}")
    return 0
