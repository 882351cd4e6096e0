"""Pruning benchmark: params, MACs and CPU latency before/after physical removal, and how much of the MACs
reduction turns into real speed-up.

For each model (random init, 224 px) and scope, units are ranked by data-free scores (``magnitude`` = L1 of each unit's
weights, or ``random``), masks are built with ``masks_from_scores`` (global scope: max-normalised per layer; ResNet
residual writers coupled), and ``remove_units`` builds the smaller model. Latency is the median of ``--repeats``
forward passes of one batch under ``torch.inference_mode``; unpruned and pruned models are timed alternately so that
load from other processes on a shared machine hits both alike. Both wall-clock and process CPU time are recorded: on a
loaded machine wall time mostly measures the other processes, while CPU time with ``--threads 1`` measures the model.
``efficiency = speed-up / MACs reduction`` (target >= 0.8).

    .venv/bin/python bench/pruning.py                                  # vgg19, resnet50, vit_b_16; 30/50/70 %
    .venv/bin/python bench/pruning.py --models resnet50 --rates 0.5 --scopes layer --batch 4 --repeats 5
    .venv/bin/python bench/pruning.py --threads 1 --batch 4    # shared machine: read the CPU-time columns
"""

from __future__ import annotations

import argparse
import logging
import platform
import statistics
import time

import torch

from medprune.models import create_model
from medprune.pruning import coupled_groups, masks_from_scores, model_cost, remove_units
from medprune.scoring.registry import score

logger = logging.getLogger("bench.pruning")


def _time_once(model: torch.nn.Module, x: torch.Tensor) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    model(x)
    return time.perf_counter() - wall, time.process_time() - cpu


def paired_latency(base: torch.nn.Module, pruned: torch.nn.Module, x: torch.Tensor, repeats: int) -> list[float]:
    """Median (wall, CPU) seconds per batch of both models, timed alternately after one warm-up each.

    Returns:
        ``[base wall, pruned wall, base CPU, pruned CPU]``.
    """
    base_times, pruned_times = [], []
    with torch.inference_mode():
        _time_once(base, x)
        _time_once(pruned, x)
        for _ in range(repeats):
            base_times.append(_time_once(base, x))
            pruned_times.append(_time_once(pruned, x))
    median = statistics.median
    return [
        median(t[0] for t in base_times),
        median(t[0] for t in pruned_times),
        median(t[1] for t in base_times),
        median(t[1] for t in pruned_times),
    ]


def bench_model(name: str, rates: list[float], scopes: list[str], method: str, batch: int, repeats: int) -> list[dict]:
    torch.manual_seed(0)
    model = create_model(name, num_classes=2, image_size=224).eval()
    example = torch.zeros(1, 3, 224, 224)
    x = torch.randn(batch, 3, 224, 224)
    before = model_cost(model, example)
    scores = score(model, example, torch.zeros(1, dtype=torch.long), method=method, seed=0)
    couplings = coupled_groups(model, example_inputs=example)
    rows = []
    for scope in scopes:
        for rate in rates:
            masks = masks_from_scores(scores, rate, scope=scope, normalize="max", couplings=couplings)
            start = time.perf_counter()
            pruned = remove_units(model, masks, example).eval()
            surgery = time.perf_counter() - start
            after = model_cost(pruned, example)
            base_s, pruned_s, base_cpu, pruned_cpu = paired_latency(model, pruned, x, repeats)
            speedup, macs_reduction = base_s / pruned_s, before["macs"] / after["macs"]
            cpu_speedup = base_cpu / pruned_cpu
            rows.append(
                {
                    "model": name,
                    "scope": scope,
                    "rate": rate,
                    "params": f"{before['params'] / 1e6:.1f}M->{after['params'] / 1e6:.1f}M",
                    "macs": f"{before['macs'] / 1e9:.2f}G->{after['macs'] / 1e9:.2f}G",
                    "latency": f"{base_s:.3f}->{pruned_s:.3f} s",
                    "speedup": speedup,
                    "macs_x": macs_reduction,
                    "efficiency": speedup / macs_reduction,
                    "cpu": f"{base_cpu:.3f}->{pruned_cpu:.3f} s",
                    "cpu_speedup": cpu_speedup,
                    "cpu_efficiency": cpu_speedup / macs_reduction,
                    "surgery": surgery,
                }
            )
            logger.info(
                "%s %s %.2f: %.2fx wall / %.2fx CPU speed-up, %.2fx fewer MACs",
                name,
                scope,
                rate,
                speedup,
                cpu_speedup,
                macs_reduction,
            )
            del pruned
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["vgg19", "resnet50", "vit_b_16"])
    parser.add_argument("--rates", nargs="+", type=float, default=[0.3, 0.5, 0.7])
    parser.add_argument("--scopes", nargs="+", default=["layer", "global"], choices=["layer", "global"])
    parser.add_argument("--scores", default="magnitude", choices=["magnitude", "random"])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    for name in args.models:
        rows += bench_model(name, args.rates, args.scopes, args.scores, args.batch, args.repeats)
    print(
        f"\n{platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}, "
        f"batch {args.batch}, median of {args.repeats}, scores={args.scores}, 224 px, random init\n"
    )
    print(
        "| model | scope | rate | params | MACs | MACs red. | wall latency | wall speed-up | wall eff. | CPU time "
        "| CPU speed-up | CPU eff. | surgery s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['model']} | {r['scope']} | {r['rate']:.2f} | {r['params']} | {r['macs']} | {r['macs_x']:.2f}x | "
            f"{r['latency']} | {r['speedup']:.2f}x | {r['efficiency']:.2f} | {r['cpu']} | {r['cpu_speedup']:.2f}x | "
            f"{r['cpu_efficiency']:.2f} | {r['surgery']:.1f} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
