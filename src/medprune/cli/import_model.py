"""``medprune import``: a trained torchvision / timm classifier's weights -> a medprune checkpoint.

The weights are read without running pickle code (see :mod:`medprune.importing`); bad input (a refused or unreadable
file, weights that do not fit the architecture, wrong class names) exits with code 2 and one line naming the file,
key or value.
"""

from __future__ import annotations

import argparse

from medprune.importing import WEIGHT_SUFFIXES, import_model

HELP = "import trained torchvision/timm weights (.safetensors, or a .pt/.pth/.bin state dict) as a medprune checkpoint"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--arch",
        required=True,
        help="architecture: a torchvision classification model (resnet18, torchvision:efficientnet_b0, ...) or "
        "timm:<name> (timm:vit_tiny_patch16_224, ...); see docs/support.md for what each stage supports",
    )
    parser.add_argument(
        "--weights",
        required=True,
        help=f"weights file: {', '.join(WEIGHT_SUFFIXES)}; torch files are read with weights_only=True (state dicts "
        "only; pickled objects such as a whole nn.Module are refused)",
    )
    parser.add_argument("--num-classes", type=int, required=True, help="number of classes (outputs), >= 2")
    parser.add_argument(
        "--image-size", type=int, default=224, help="input side in pixels the data is resized to (default: 224)"
    )
    parser.add_argument(
        "--in-channels",
        type=int,
        choices=(1, 3),
        default=None,
        help="channels of your images: 1 (grey) or 3 (RGB); grey images with a 3-channel first conv are repeated to "
        "3 channels (default: the channels of the weights' first conv)",
    )
    parser.add_argument(
        "--class-names",
        default=None,
        help="class names, comma-separated (normal,pneumonia) or @FILE with one name per line (default: 0, 1, ...)",
    )
    parser.add_argument(
        "--dataset",
        default=None,
        help="dataset name recorded in the checkpoint for evaluate/score/sweep (default: none)",
    )
    parser.add_argument("--out", default="imported", help="output folder of model.safetensors + model.json "
                        "(default: %(default)s)")  # fmt: skip


def run(args: argparse.Namespace) -> int:
    result = import_model(
        args.arch,
        args.weights,
        args.num_classes,
        image_size=args.image_size,
        in_channels=args.in_channels,
        class_names=args.class_names,
        out_dir=args.out,
        dataset=args.dataset,
    )
    adapter = " (grey inputs repeated to 3 channels)" if result.input_adapter else ""
    print(f"imported {result.arch}, {result.num_classes} classes, {result.image_size} px{adapter} -> {result.weights}")
    return 0
