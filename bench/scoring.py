"""Scoring cost per image on CPU: every registered method vs one forward pass, for the paper's architectures.

    .venv/bin/python bench/scoring.py [--models vgg19 resnet50 vit_b_16] [--methods ig lrp ...] [--images 2]
    .venv/bin/python bench/scoring.py --models resnet50 --methods lrp --threads 1 --images 1 --profile

Random init, 224 px, ``--threads`` torch threads (default 2). The forward pass is timed on
one image (median of ``--repeats``, after a warm-up); each method scores the ``--images`` images once as a warm-up
(the same batch shape as the timed calls: a new shape pays oneDNN's one-off kernel set-up again), then in
``--method-repeats`` :func:`medprune.scoring.score` calls, reported as the median call's seconds per image and as a
multiple of the forward pass, in wall time and in process CPU time. IG's target: <= 3 x steps forwards
(forward + backward at steps + 1 points).
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time

import torch
from torch.profiler import ProfilerActivity, profile

from medprune.models import create_model
from medprune.scoring.registry import available_scorers, score, scorer_entry

PAPER_MODELS = ["vgg19", "resnet50", "vit_b_16"]


def _forward_seconds(model: torch.nn.Module, x: torch.Tensor, repeats: int) -> tuple[float, float]:
    """Median (wall, process CPU) seconds of one forward pass."""
    times = []
    with torch.no_grad():
        model(x)  # warm-up
        for _ in range(repeats):
            start, cpu = time.perf_counter(), time.process_time()
            model(x)
            times.append((time.perf_counter() - start, time.process_time() - cpu))
    return statistics.median(t[0] for t in times), statistics.median(t[1] for t in times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=PAPER_MODELS)
    parser.add_argument("--methods", nargs="+", default=None, help="default: every registered method")
    parser.add_argument("--images", type=int, default=2, help="images scored per method")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3, help="forward-pass timings (median)")
    parser.add_argument("--method-repeats", type=int, default=3, help="timed calls per method (median)")
    parser.add_argument("--steps", type=int, default=20, help="IG steps")
    parser.add_argument("--chunk-size", type=int, default=None, help="IG chunk size (default: the method's)")
    parser.add_argument("--profile", action="store_true", help="also print torch.profiler's top operations per method")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    methods = args.methods or available_scorers()
    unknown = [m for m in methods if m not in available_scorers()]
    if unknown:
        parser.error(f"unknown method(s) {unknown}; valid methods: {', '.join(available_scorers())}")
    options = {"ig": {"steps": args.steps, **({"chunk_size": args.chunk_size} if args.chunk_size else {})}}

    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.image_size} px, random init, "
        f"{args.images} image(s) per method; IG steps={args.steps}"
    )
    header = f"| model | forward s/img (CPU s) | {' | '.join(methods)} |"
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for name in args.models:
        torch.manual_seed(0)
        model = create_model(name, num_classes=3, image_size=args.image_size)
        x = torch.randn(args.images, 3, args.image_size, args.image_size)
        y = torch.arange(args.images) % 3
        forward, forward_cpu = _forward_seconds(model, x[:1], args.repeats)
        cells = []
        for method in methods:
            try:  # warm-up on the timed batch, as the forward pass is warmed up (first calls pay one-off set-up)
                score(model, x, y, method, batch_size=args.images, **options.get(method, {}))
            except NotImplementedError as error:
                cells.append(f"n/a ({error})")
                continue
            calls = []
            for _ in range(args.method_repeats):
                start, cpu = time.perf_counter(), time.process_time()
                score(model, x, y, method, batch_size=args.images, **options.get(method, {}))
                calls.append((time.perf_counter() - start, time.process_time() - cpu))
            count = 1 if scorer_entry(method).data_free else args.images
            per_image = statistics.median(c[0] for c in calls) / count
            per_image_cpu = statistics.median(c[1] for c in calls) / count
            if args.profile:  # after the timing: the profiler slows what it records
                with profile(activities=[ProfilerActivity.CPU]) as prof:
                    score(model, x, y, method, batch_size=args.images, **options.get(method, {}))
                print(f"\n{name} {method}:\n" + prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))
            cells.append(
                f"{per_image:.3g} s ({per_image / forward:.1f}x; CPU {per_image_cpu:.3g} s, "
                f"{per_image_cpu / forward_cpu:.1f}x)"
            )
        print(f"| {name} | {forward:.3f} ({forward_cpu:.3f}) | {' | '.join(cells)} |", flush=True)
    print(
        f"cells: wall seconds per image, median of {args.method_repeats} calls (multiple of one forward pass; process "
        "CPU time and its multiple beside); data-free methods: seconds per call"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
