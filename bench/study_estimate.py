"""Estimate a study's wall time from measured per-step costs: train step, evaluation, recalibration, scoring.

For every (architecture, dataset) of the study config, on the real data and model (random init: cost does not depend
on the weights): median time of a few training steps (forward + backward + Adam, the recipe's batch and
augmentation), of evaluating the validation and test splits, of a BatchNorm recalibration on the sweep's k images, of
masking, and of one call of each scorer on the selected samples. The whole grid is then

    train   = epochs x (n_train x step/img + n_val x eval/img + BN-recalibration images x eval/img)
    sweep   = seeds x settings x curves x (rates - 1) x (mask + eval val+test [+ recalibration for bn settings])
            + seeds x signs x scored curves x score time + one model checksum (the driver's)
            + seeds x selection time of each data-driven sampling (saved and reused by every method and setting)

per checkpoint (x training seeds). Start-up, data loading and the report are left out (seconds each).

    OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE .venv/bin/python bench/study_estimate.py --config configs/study-cpu.yaml
    .venv/bin/python bench/study_estimate.py --config configs/study-paper.yaml --device cuda
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable

import torch

from medprune.config import build_config
from medprune.data import stack_samples
from medprune.metrics import predict
from medprune.models.units import unit_groups
from medprune.provenance import model_checksum
from medprune.pruning import apply_masks, masks_from_scores
from medprune.recovery.recalibration import recalibrated_batchnorm
from medprune.runs.study import StudyConfig, plan
from medprune.runs.sweep import curve_list, sweep_settings
from medprune.runs.train import build_model, load_training_data
from medprune.runtime import autocast, grad_scaler
from medprune.scoring import scorer_entry
from medprune.scoring.registry import score
from medprune.scoring.selection import select_samples
from medprune.study.progress import format_duration
from medprune.sweep.on_device import on_device


def timed(fn: Callable[[], object], repeat: int = 3, device: torch.device | None = None) -> float:
    """Median seconds of ``fn`` over ``repeat`` calls after one warm-up."""
    times = []
    for index in range(repeat + 1):
        if device is not None and device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device is not None and device.type == "cuda":
            torch.cuda.synchronize()
        if index:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def train_step_cost(model: torch.nn.Module, splits, train, device: torch.device, steps: int) -> float:
    """Seconds per training image (the recipe's augmented loader batches, forward + backward + Adam, AMP on CUDA)."""
    batch_size = train.batch_size
    loader = torch.utils.data.DataLoader(
        splits.train,
        batch_size=batch_size,
        shuffle=True,
        num_workers=train.num_workers,
        pin_memory=device.type == "cuda",
    )
    batches = iter(loader)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    criterion = torch.nn.CrossEntropyLoss()
    scaler = grad_scaler(device, train.amp)
    model.train()

    def step() -> None:
        inputs, labels = next(batches)
        inputs, labels = inputs.to(device), torch.as_tensor(labels).to(device)
        optimizer.zero_grad()
        with autocast(device, train.amp):
            loss = criterion(model(inputs), labels)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    cost = timed(step, repeat=steps, device=device) / batch_size
    model.eval()
    return cost


def measure(point, sweep, device: torch.device, steps: int) -> dict[str, float]:
    """Per-step costs of one (architecture, dataset)."""
    splits = load_training_data(point.train)
    model, _ = build_model(point.train, splits)
    model.to(device)
    costs = {"n_train": len(splits.train), "n_val": len(splits.val), "n_test": len(splits.test)}
    costs["train_img"] = train_step_cost(model, splits, point.train, device, steps)
    # as the sweep evaluates: the splits sent to the device once (not timed), autocast when the config asks (amp)
    stacked = [stack_samples(s, range(len(s))) for s in (splits.val, splits.test)]
    evaluation = [(on_device(inputs, device), labels) for inputs, labels in stacked]
    batch = sweep.batch_size
    with torch.no_grad():
        evaluate = lambda: [predict(model, d, batch_size=batch, amp=sweep.amp) for d in evaluation]  # noqa: E731
        costs["eval_val_test"] = timed(evaluate, 2, device)
        images = evaluation[0][0][: sweep.recalibrate_samples]
        costs["recalibrate"] = timed(lambda: recalibrated_batchnorm(model, images, batch_size=batch).restore(), 2)
        groups = unit_groups(model)
        scores = {g.name: torch.rand(g.num_units) for g in groups}
        costs["mask"] = timed(lambda: apply_masks(model, masks_from_scores(scores, 0.5)).remove(), 2, device)
    costs["checksum"] = timed(lambda: model_checksum(model), 1)
    for sampling in dict.fromkeys(s for m, s in curve_list(sweep) if not scorer_entry(m).data_free):
        select = lambda s=sampling: select_samples(model, splits.train, s, sweep.scoring.n_per_class, 0, device=device)  # noqa: E731
        costs[f"select_{sampling}"] = timed(select, 1, device)
    classes = len(splits.class_names)
    picked = stack_samples(splits.train, range(sweep.scoring.n_per_class * classes))
    inputs, targets = picked[0].to(device), torch.as_tensor(picked[1]).to(device)
    for method in dict.fromkeys(m for m, _ in curve_list(sweep)):
        run = lambda m=method: score(model, inputs, targets, m, groups=groups, batch_size=sweep.score_batch_size)  # noqa: E731
        costs[f"score_{method}"] = timed(run, 1, device)
    return costs


def estimate(point, sweep, costs: dict[str, float]) -> tuple[float, float]:
    """(training seconds, sweep seconds) of one checkpoint."""
    t = point.train
    recal_images = t.bn_recalibration_samples or costs["n_train"] if t.bn_recalibration else 0
    eval_img = costs["eval_val_test"] / (costs["n_val"] + costs["n_test"])
    epoch = costs["n_train"] * costs["train_img"] + (costs["n_val"] + min(recal_images, costs["n_train"])) * eval_img
    settings = sweep_settings(sweep)
    curves = curve_list(sweep)
    rates = len({round(r, 6) for r in sweep.rates} - {0.0})
    per_seed = 0.0
    for setting in settings:
        per_rate = costs["mask"] + costs["eval_val_test"] + (costs["recalibrate"] if setting.recalibrate == "bn" else 0)
        per_seed += len(curves) * rates * per_rate
    signs = len({s.sign for s in settings})
    per_seed += signs * sum(costs[f"score_{m}"] for m, s in curves if not scorer_entry(m).data_free)
    per_seed += sum(v for k, v in costs.items() if k.startswith("select_"))
    return t.epochs * epoch, len(sweep.seeds) * per_seed + 2 * costs["eval_val_test"] + costs["checksum"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="configs/study-cpu.yaml")
    parser.add_argument("--data-root", default=os.environ.get("MEDPRUNE_DATA"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=5, help="timed training steps per model")
    args = parser.parse_args()
    config = build_config(StudyConfig, args.config, {"data_root": args.data_root, "device": args.device})
    todo = plan(config)
    device = torch.device(args.device)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"torch {torch.__version__}, {platform.machine()}, {os.cpu_count()} CPUs, {torch.get_num_threads()} threads, "
        f"device {device}{' ' + torch.cuda.get_device_name() if device.type == 'cuda' else ''}, load avg {load:.1f}"
    )
    sweep = todo.sweeps[0].config(config.data_root)
    n_train_seeds = len(config.seeds)
    measured: dict[tuple[str, str], tuple[float, float]] = {}
    print(
        "| model | dataset | train img/s | eval val+test s | recal s | score s (per method) | select s "
        "(per sampling) | train s | sweep s |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for point in todo.points:
        key = (point.architecture, point.dataset)
        if key in measured:
            continue
        torch.manual_seed(0)
        costs = measure(point, sweep, device, args.steps)
        measured[key] = estimate(point, sweep, costs)
        scores = ", ".join(f"{k[6:]} {v:.2f}" for k, v in costs.items() if k.startswith("score_"))
        selects = ", ".join(f"{k[7:]} {v:.2f}" for k, v in costs.items() if k.startswith("select_"))
        print(
            f"| {key[0]} | {key[1]} | {1 / costs['train_img']:.0f} | {costs['eval_val_test']:.2f} | "
            f"{costs['recalibrate']:.2f} | {scores} | {selects} | {measured[key][0]:.0f} | {measured[key][1]:.0f} |",
            flush=True,
        )
    train_total = n_train_seeds * sum(t for t, _ in measured.values())
    sweep_total = n_train_seeds * sum(s for _, s in measured.values())
    curves, settings = len(curve_list(sweep)), len(sweep_settings(sweep))
    print(
        f"grid: {len(todo.points)} checkpoints x {len(sweep.seeds)} selection seeds x {settings} settings x {curves} "
        f"curves x {len(sweep.rates)} rates x 2 splits"
    )
    print(
        f"estimated: training {format_duration(train_total)}, sweeps {format_duration(sweep_total)}, "
        f"total {format_duration(train_total + sweep_total)} (one process, {torch.get_num_threads()} thread(s))"
    )


if __name__ == "__main__":
    main()
