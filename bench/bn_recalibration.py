"""How far a trained checkpoint's BatchNorm statistics move when training's old cumulative recalibration is replaced by
the exact one (issue 19, "one BatchNorm recalibration"; the numbers quoted in docs/training.md).

Both recalibrate the checkpoint on the same clean training images (``recalibration_subset`` of the training split,
as training picks them) with the same batch size. The old one, kept here as the reference, lets PyTorch average the
per-batch statistics (``momentum=None``): the mean of batch means and of within-batch unbiased variances. The exact
one (:func:`medprune.recovery.recalibration.recalibrate_batchnorm`) stores the statistics over all images at once.
With every image in one batch the two are the same; with several batches the variance differs by the spread of the
batch means, and the mean by an unequal last batch.

    .venv/bin/python bench/bn_recalibration.py bench/golden/model.safetensors --samples 2048 --batch-size 256
"""

from __future__ import annotations

import argparse
import copy
import json

import numpy as np
import torch
from torch import nn

from medprune.checkpoint.with_data import load_with_splits
from medprune.metrics import evaluate, iterate_batches
from medprune.recovery.recalibration import batchnorm_layers, recalibrate_batchnorm, recalibration_subset
from medprune.runtime import eval_mode


def cumulative_recalibration(model: nn.Module, data: object, batch_size: int) -> None:
    """Training's recalibration before issue 19: PyTorch's cumulative average of per-batch statistics."""
    norms = batchnorm_layers(model)
    momenta = [norm.momentum for norm in norms]
    with eval_mode(model), torch.no_grad():
        for norm in norms:
            norm.reset_running_stats()
            norm.momentum = None
            norm.train()
        try:
            for inputs, _ in iterate_batches(data, batch_size):
                model(inputs)
        finally:
            for norm, momentum in zip(norms, momenta):
                norm.momentum = momentum


def relative_changes(before: nn.Module, after: nn.Module, name: str) -> np.ndarray:
    """``|after - before| / |before|`` of buffer ``name`` over every channel of every BatchNorm."""
    old = torch.cat([getattr(n, name).flatten() for n in batchnorm_layers(before)]).double()
    new = torch.cat([getattr(n, name).flatten() for n in batchnorm_layers(after)]).double()
    return ((new - old).abs() / old.abs().clamp_min(1e-12)).numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--samples", type=int, default=2048, help="recalibration images (training's default)")
    parser.add_argument("--batch-size", type=int, default=256, help="images per pass (training's eval_batch_size)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    model, meta, splits = load_with_splits(args.checkpoint, override_is_same_data=True)
    images = recalibration_subset(splits.train, args.samples, args.seed)
    old, new = copy.deepcopy(model), copy.deepcopy(model)
    cumulative_recalibration(old, images, args.batch_size)
    recalibrate_batchnorm(new, images, batch_size=args.batch_size)
    names = list(splits.class_names)
    out: dict[str, object] = {"checkpoint": args.checkpoint, "images": len(images), "batch_size": args.batch_size}
    for buffer in ("running_mean", "running_var"):
        change = relative_changes(old, new, buffer)
        out[f"{buffer} relative change (max, median)"] = [float(change.max()), float(np.median(change))]
    for label, recalibrated in (("cumulative", old), ("exact", new)):
        val = evaluate(recalibrated, splits.val, names, batch_size=256)
        out[f"val {label}"] = {"accuracy": val["accuracy"], "balanced_accuracy": val["balanced_accuracy"]}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
