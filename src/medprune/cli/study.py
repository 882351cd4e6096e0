"""``medprune study``: the paper's grid (train, sweep, report, claims) in one resumable command."""

from __future__ import annotations

import argparse

from medprune.cli.config_args import add_config_arguments, config_from_args
from medprune.executors import EXECUTOR_FLAGS
from medprune.runs.study import StudyConfig, run_study

HELP = "train every checkpoint of a grid, sweep each, one report + the paper's claims tested (resumable)"

FLAGS = {
    "--out": "out",
    "--data-root": "data_root",
    "--device": "device",
    "--quick": "quick",
    "--overwrite": "overwrite",
    **EXECUTOR_FLAGS,
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, StudyConfig, FLAGS)


def run(args: argparse.Namespace) -> int:
    result = run_study(config_from_args(args, StudyConfig, FLAGS))
    verdicts = ", ".join(f"{r['claim']}:{r['verdict']}" for r in result.claims if r["claim"] in ("a", "b", "c", "d"))
    print(
        f"study done in {result.wall_time_s:.0f} s: {len(result.trained)} trained, {len(result.reused)} reused, "
        f"{len(result.swept)} swept, {len(result.skipped)} sweeps already done"
    )
    print(f"claims: {verdicts or 'none testable'} -> {result.claims_md}")
    print(f"report: {result.report}")
    return 0
