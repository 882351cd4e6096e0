"""IG quadrature: completeness error and cost of the trapezoid rule vs Gauss-Legendre, per architecture.

    .venv/bin/python bench/ig_quadrature.py [--models vgg_small resnet_small vit_small] [--image-size 28]
        [--images 4] [--nodes 4 6 8 12] [--baselines zeros black] [--dataset breastmnist] [--dtype float64]
        [--reference-nodes 64]

What the ``ig`` scorer attributes is the target logit ``F`` to every unit of a layer (layer conductance,
:func:`medprune.scoring.integrated_gradients.conductance`). For a layer that every path from input to output crosses,
the unit scores of one image sum to ``F(x) − F(b)``; the stem convolution (``features.0`` / ``conv1`` /
``patch_embed.proj``) is such a layer in all three families (in a ViT the class token and position embedding are
constants added after it), and in a plain VGG every layer is. Printed per rule:

- ``stem``: completeness error of the stem, ``|Σ units − (F(x) − F(b))| / |F(x) − F(b)|``, mean over images;
- ``cuts``: the worst such error over every layer that is a cut (VGG: all of them; otherwise the stem);
- ``vs ref``: for the scorer's own layers (most of them not cuts: residual streams), ``‖s − s_ref‖ / ‖s_ref‖`` per
  layer over images × units, mean over layers, against Gauss-Legendre with ``--reference-nodes`` nodes (``0``: no
  reference, the columns read ``-``; the paper-size models at 224 px cannot afford 64 more points per image here);
- ``points``: network evaluations per image; ``x fwd``: seconds per image / one forward pass of one image.

Models are random init with BatchNorm statistics and biases drawn away from zero (a fresh init is positively
homogeneous: with the zeros baseline every rule but the trapezoid's first step is then exact, which flatters
Gauss-Legendre), in ``--dtype`` (float64 by default; float32 puts a floor of about 1e-6 under the errors), on images
of ``--dataset`` (test split, the project's data API; ``--dataset none``: Gaussian noise).
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import time

import torch

from medprune.data import load_dataset
from medprune.data.base import stack_samples
from medprune.models import create_model
from medprune.models.units import UnitGroup, unit_groups
from medprune.scoring.integrated_gradients import conductance, resolve_baseline

STEMS = {"vgg": "features.0", "resnet": "conv1", "vit": "patch_embed.proj"}


def _model(name: str, image_size: int, seed: int, dtype: torch.dtype) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = create_model(name, num_classes=2, image_size=image_size).to(dtype).eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.bias.uniform_(-0.2, 0.2)
            elif isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)) and module.bias is not None:
                module.bias.uniform_(-0.05, 0.05)
    return model


def _stem(name: str, model: torch.nn.Module) -> UnitGroup:
    path = next(p for family, p in STEMS.items() if name.startswith(family))
    return UnitGroup(path, path, "conv", model.get_submodule(path).out_channels)


def _images(dataset: str, count: int, image_size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    if dataset == "none":
        torch.manual_seed(seed)
        return torch.randn(count, 3, image_size, image_size), torch.zeros(count, dtype=torch.long)
    splits = load_dataset(dataset, image_size=image_size, augment=False)
    return stack_samples(splits.test, list(range(count)))


def _forward_seconds(model: torch.nn.Module, x: torch.Tensor, repeats: int = 3) -> float:
    times = []
    with torch.no_grad():
        model(x)
        for _ in range(repeats):
            start = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm().clamp_min(1e-300)).item()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["vgg_small", "resnet_small", "vit_small"])
    parser.add_argument("--image-size", type=int, default=28)
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--steps", type=int, default=20, help="trapezoid steps")
    parser.add_argument("--nodes", type=int, nargs="+", default=[4, 6, 8, 12], help="Gauss-Legendre node counts")
    parser.add_argument("--reference-nodes", type=int, default=64, help="0: no reference (vs ref columns: -)")
    parser.add_argument("--dtype", choices=["float64", "float32"], default="float64")
    parser.add_argument("--baselines", nargs="+", default=["zeros", "black"])
    parser.add_argument("--dataset", default="breastmnist", help="a MedMNIST flag, or none for Gaussian noise")
    parser.add_argument("--chunk-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    images, _ = _images(args.dataset, args.images, args.image_size, args.seed)
    dtype = getattr(torch, args.dtype)
    x = images.to(dtype)
    load = " ".join(f"{v:.1f}" for v in os.getloadavg())
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average {load}, {args.image_size} px, "
        f"{args.images} {args.dataset} test images, {args.dtype}; reference: "
        f"{f'Gauss-Legendre {args.reference_nodes} nodes' if args.reference_nodes else 'none'}\n"
    )
    print("| model | baseline | rule | points | stem | cuts | vs ref (mean) | vs ref (max) | x fwd |")
    print("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    rules = [("trapezoid", args.steps)] + [("gauss_legendre", n) for n in args.nodes]
    for name in args.models:
        model = _model(name, args.image_size, args.seed, dtype)
        groups = unit_groups(model)
        stem = _stem(name, model)
        cuts = [stem] + ([g for g in groups if g.name != stem.name] if name.startswith("vgg") else [])
        every = cuts + [g for g in groups if g not in cuts]
        forward = _forward_seconds(model, x[:1])
        with torch.no_grad():
            logits = model(x)
        targets = logits.argmax(1)  # the predicted class, as the scorers' default target
        for baseline in args.baselines:
            run = {"model": model, "inputs": x, "targets": targets, "groups": every, "baseline": baseline}
            run["chunk_size"] = args.chunk_size
            with torch.no_grad():
                base_logits = model(resolve_baseline(baseline, x))
            delta = logits.gather(1, targets[:, None])[:, 0] - base_logits.gather(1, targets[:, None])[:, 0]
            reference = (
                conductance(**run, steps=args.reference_nodes, rule="gauss_legendre") if args.reference_nodes else None
            )
            for rule, steps in rules:
                start = time.perf_counter()
                scores = conductance(**run, steps=steps, rule=rule)
                per_image = (time.perf_counter() - start) / len(x)
                complete = {g.name: ((scores[g.name].sum(1) - delta).abs() / delta.abs()).mean().item() for g in cuts}
                vs_ref = [_relative(scores[g.name], reference[g.name]) for g in groups] if reference else []
                points = steps + 1 if rule == "trapezoid" else steps
                print(
                    f"| {name} | {baseline} | {rule} {steps} | {points} | {complete[stem.name]:.1e} | "
                    f"{max(complete.values()):.1e} | {f'{statistics.mean(vs_ref):.1e}' if vs_ref else '-'} | "
                    f"{f'{max(vs_ref):.1e}' if vs_ref else '-'} | "
                    f"{per_image / forward:.1f} |",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
