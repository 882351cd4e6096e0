"""``medprune import``: a trained torchvision / timm classifier's weights -> a medprune checkpoint.

Options come from (later wins): :class:`~medprune.runs.import_model.ImportConfig` defaults, ``--config file.yaml``,
the flags below, then ``--set key=value``. The weights are read without running pickle code (see
:mod:`medprune.models.importing`); bad input (a refused or unreadable file, weights that do not fit the
architecture, wrong class names) exits with code 2 and one line naming the file, key or value.
"""

from __future__ import annotations

import argparse

from medprune.cli.config_args import add_config_arguments, config_from_args
from medprune.runs.import_model import ImportConfig, run_import

HELP = "import trained torchvision/timm weights (.safetensors, or a .pt/.pth/.bin state dict) as a medprune checkpoint"

FLAGS = {
    "--arch": "arch",
    "--weights": "weights",
    "--num-classes": "num_classes",
    "--image-size": "image_size",
    "--in-channels": "in_channels",
    "--class-names": "class_names",
    "--dataset": "dataset",
    "--out": "out",
    "--overwrite": "overwrite",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, ImportConfig, FLAGS)


def run(args: argparse.Namespace) -> int:
    result = run_import(config_from_args(args, ImportConfig, FLAGS))
    adapter = " (grey inputs repeated to 3 channels)" if result.input_adapter else ""
    print(f"imported {result.arch}, {result.num_classes} classes, {result.image_size} px{adapter} -> {result.weights}")
    return 0
