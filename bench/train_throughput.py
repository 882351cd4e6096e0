"""Training throughput on the CPU: images per second of forward + backward + Adam step, per architecture.

Synthetic inputs (the model cost alone), a few timed steps after warm-up, one table. The data pipeline's training
augmentation is timed separately (it runs in the main process unless ``num_workers > 0``).

    .venv/bin/python bench/train_throughput.py                       # small + paper models at 64 px
    .venv/bin/python bench/train_throughput.py --models resnet_small --image-size 28 --steps 10
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from medprune.models import create_model

DEFAULT_MODELS = ["resnet_small", "vgg_small", "vit_small", "resnet18", "vgg19", "resnet50", "vit_b_16"]


def forward_gflops(model: torch.nn.Module, image_size: int) -> float:
    """Forward GFLOP per image (multiply-adds count 2), measured by torch's FLOP counter."""
    model.eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(1, 3, image_size, image_size))
    return counter.get_total_flops() / 1e9


def time_training(name: str, image_size: int, batch_size: int, steps: int, warmup: int) -> dict:
    torch.manual_seed(0)
    model = create_model(name, num_classes=2, in_channels=3, image_size=image_size)
    gflops = forward_gflops(model, image_size)
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    criterion = torch.nn.CrossEntropyLoss()
    inputs = torch.randn(batch_size, 3, image_size, image_size)
    labels = torch.randint(0, 2, (batch_size,))
    durations = []
    for step in range(warmup + steps):
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        criterion(model(inputs), labels).backward()
        optimizer.step()
        if step >= warmup:
            durations.append(time.perf_counter() - start)
    median = sorted(durations)[len(durations) // 2]
    return {
        "model": name,
        "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
        "gflops": gflops,
        "ms_step": 1000 * median,
        "img_s": batch_size / median,
    }


def time_augmentation(image_size: int, count: int = 500) -> float | None:
    """Images per second of the training transform on PneumoniaMNIST (``None`` when the data is absent)."""
    root = os.environ.get("MEDPRUNE_DATA", os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data"))
    try:
        from medprune.data import load_dataset

        train = load_dataset("pneumoniamnist", root, image_size=image_size).train
    except (FileNotFoundError, ValueError):
        return None
    start = time.perf_counter()
    for i in range(count):
        train[i % len(train)]
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=DEFAULT_MODELS)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per model (median reported)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, {platform.machine()}, {os.cpu_count()} CPUs, {torch.get_num_threads()} threads, "
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}, load avg {os.getloadavg()[0]:.1f}, "
        f"{args.image_size} px, batch {args.batch_size}, median of {args.steps} steps after {args.warmup} warm-up"
    )
    print(f"| {'model':<13} | params (M) | fwd GFLOP/img | ms/step | train img/s |")
    print(f"|{'-' * 15}|{'-' * 12}|{'-' * 15}|{'-' * 9}|{'-' * 13}|")
    for name in args.models:
        row = time_training(name, args.image_size, args.batch_size, args.steps, args.warmup)
        print(
            f"| {row['model']:<13} | {row['params_m']:>10.2f} | {row['gflops']:>13.3f} | {row['ms_step']:>7.0f} "
            f"| {row['img_s']:>11.1f} |",
            flush=True,
        )
    augment = time_augmentation(args.image_size)
    if augment is not None:
        print(f"training augmentation (PneumoniaMNIST -> {args.image_size} px, main process): {augment:.0f} img/s")


if __name__ == "__main__":
    main()
