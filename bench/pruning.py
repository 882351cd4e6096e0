"""Pruning benchmark: params, MACs and CPU latency before/after physical removal, and how much of the MACs
reduction turns into real speed-up.

For each model (random init, 224 px) and scope, units are ranked by data-free scores (``magnitude`` = L1 of each unit's
weights, or ``random``), masks are built with ``masks_from_scores`` (global scope: max-normalised per layer; ResNet
residual writers coupled), and ``remove_units`` builds the smaller model. Latency is the median of ``--repeats``
forward passes of one batch under ``torch.inference_mode``; unpruned and pruned models are timed alternately so that
load from other processes on a shared machine hits both alike. Both wall-clock and process CPU time are recorded: on a
loaded machine wall time mostly measures the other processes, while CPU time with ``--threads 1`` measures the model.
``efficiency = speed-up / MACs reduction`` (target >= 0.8).

``--variants`` times, in one interleaved run per model, scope and rate, what the shipped model could be made of:
the unpruned model (``base``; ``base+fold``: its BatchNorms folded), the pruned model (``pruned``), it with its
BatchNorms folded into the convolutions (``+fold``, :func:`medprune.pruning.folding.fold_batchnorms`), with the
kept channel counts rounded up to ``--multiple`` along the same ranking (``round``,
:func:`medprune.pruning.rounding.round_masks`: fewer MACs removed at the same rate), the same ranking cut deeper until
the rounded masks remove at least the unrounded masks' convolution / linear MACs (``round@MACs``: what compress's MACs
floor would ship with rounding on) and in ``channels_last`` memory format (``+cl``, weights and input).
Each variant's speed-up is against ``base`` measured in the same run; its MACs reduction is that of its (unfolded)
masks, so folding moves the efficiency only through latency. ``--onnx DIR`` times the deployment path instead of eager
PyTorch: ``base``, ``pruned`` and ``round@MACs`` exported to ONNX under DIR and timed interleaved with ONNX Runtime
(1 intra-op thread; it folds BatchNorm and picks its own memory layout, so ``+fold`` / ``+cl`` do not apply).

    .venv/bin/python bench/pruning.py                                  # vgg19, resnet50, vit_b_16; 30/50/70 %
    .venv/bin/python bench/pruning.py --models resnet50 --rates 0.5 --scopes layer --batch 4 --repeats 5
    .venv/bin/python bench/pruning.py --threads 1 --batch 4    # shared machine: read the CPU-time columns
    .venv/bin/python bench/pruning.py --threads 1 --variants --models resnet50 --rates 0.5 0.7 --batches 1 4
    .venv/bin/python bench/pruning.py --threads 1 --variants --onnx /tmp/onnx --models resnet50 vgg19 --batches 1 4
    .venv/bin/python bench/pruning.py --threads 1 --variants --onnx /tmp/onnx --int8 --scopes global --batches 1 4

``--accuracy RUN ...`` measures what rounding costs or buys in accuracy on compress runs (their checkpoint and their
saved scores, compress's ranking and MACs floor; the validation split only): at each rate, the masks compress cuts
(``floor``), the same masks rounded (``floor+round``: a superset) and the masks compress would cut with rounding on
(``round+floor``: rounded masks cut deeper until they remove the rate's MACs), each masked and BatchNorm-recalibrated
on 512 clean training images as compress's candidates are, without fine-tuning; validation balanced accuracy.

    .venv/bin/python bench/pruning.py --threads 1 --accuracy runs/calibration-cpu/compress/*-certified --rates 0.5 0.7

``--deploy`` adds, for the ``floor`` and ``round+floor`` cuts, the deployment path's latency: each recalibrated model
physically reduced, exported to ONNX, quantized to int8 as ``medprune quantize`` does (QDQ, per-channel, calibrated on
256 of the recalibration images) and timed with ONNX Runtime beside the unpruned model's ONNX, all five models
interleaved in one loop (1 intra-op thread, batch 1 and 32): so rounding's effect on fp32 and int8 speed is measured
at equal MACs, in one run per checkpoint and rate.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from medprune.checkpoint.with_data import load_with_splits
from medprune.compression.evidence import metric_value, predictions_and_metrics
from medprune.compression.floor import floor_candidate, ranked_candidate
from medprune.data import stack_samples
from medprune.deploy.quantize import quantize_int8
from medprune.deploy.runtimes import onnx_latency
from medprune.models import create_model
from medprune.models.units import unit_groups
from medprune.pruning import coupled_groups, export_onnx, masks_from_scores, model_cost, remove_units
from medprune.pruning.cost import MacsMeter
from medprune.pruning.folding import fold_batchnorms
from medprune.pruning.masks import achieved_rate
from medprune.pruning.rounding import round_masks
from medprune.recovery.finetune import recover
from medprune.recovery.recalibration import recalibration_subset
from medprune.recovery.recipe import FinetuneRecipe
from medprune.scoring.registry import score
from medprune.scoring.store import load_scores

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


def bench_model(
    name: str, rates: list[float], scopes: list[str], method: str, batch: int, repeats: int, normalize: str = "max"
) -> list[dict]:
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
            masks = masks_from_scores(scores, rate, scope=scope, normalize=normalize, couplings=couplings)
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


def interleaved(models: dict[str, nn.Module], inputs: dict[str, torch.Tensor], repeats: int) -> dict[str, list[float]]:
    """Median ``[wall, CPU]`` seconds per batch of every model, timed round-robin after one warm-up each, so load
    from other processes hits all of them alike."""
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in models}
    with torch.inference_mode():
        for name, model in models.items():
            _time_once(model, inputs[name])
        for _ in range(repeats):
            for name, model in models.items():
                times[name].append(_time_once(model, inputs[name]))
    return {
        name: [statistics.median(t[0] for t in ts), statistics.median(t[1] for t in ts)] for name, ts in times.items()
    }


def _channels_last(model: nn.Module) -> nn.Module:
    return model.to(memory_format=torch.channels_last)


def rounded_at_macs(
    cut: Callable[[float], dict[str, torch.Tensor]], rounding: Callable, meter: MacsMeter, rate: float, total: int
) -> dict[str, torch.Tensor]:
    """Rounded masks of the same ranking cut at the smallest unit count whose rounded masks remove at least the
    convolution and linear MACs the unrounded masks at ``rate`` remove (what the MACs floor of compress would ship)."""
    target = meter.estimate(cut(rate))
    low, high = round(rate * total), total - 1  # the rounded masks at ``low`` remove at most the target
    if meter.estimate(rounding(cut(low / total))) >= target:
        return rounding(cut(low / total))
    while high - low > 1:
        middle = (low + high) // 2
        if meter.estimate(rounding(cut(middle / total))) >= target:
            high = middle
        else:
            low = middle
    return rounding(cut(high / total))


def bench_variants(
    name: str,
    rates: list[float],
    scopes: list[str],
    method: str,
    batches: list[int],
    repeats: int,
    multiple: int,
    normalize: str,
    onnx_dir: Path | None = None,
    int8: bool = False,
) -> list[dict]:
    """Rows of ``--variants`` (module docstring): one interleaved timing run per scope, rate and batch size; with
    ``onnx_dir``, under ONNX Runtime (``--onnx``)."""
    torch.manual_seed(0)
    model = create_model(name, num_classes=2, image_size=224).eval()
    example = torch.zeros(1, 3, 224, 224)
    before = model_cost(model, example)["macs"]
    scores = score(model, example, torch.zeros(1, dtype=torch.long), method=method, seed=0)
    couplings = coupled_groups(model, example_inputs=example)
    heads = {g.name for g in unit_groups(model) if g.kind == "head"}
    total = sum(g.num_units for g in unit_groups(model))
    meter = MacsMeter(model)
    base_folded = fold_batchnorms(model)
    fold = bool(base_folded.medprune_folded)
    rows = []
    for scope in scopes:
        ranking = {"scope": scope, "normalize": normalize, "couplings": couplings}

        def cut(rate: float, ranking: dict = ranking) -> dict[str, torch.Tensor]:
            return masks_from_scores(scores, rate, **ranking)

        def rounding(masks: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
            return round_masks(masks, scores, multiple, normalize=normalize, couplings=couplings, skip=heads)

        for rate in rates:
            masks = cut(rate)
            variants: dict[str, nn.Module] = {"base": model}
            macs = {"base": before}
            if fold:
                variants["base+fold"] = base_folded
                macs["base+fold"] = before
            cuts = {
                "pruned": (masks, ["", "+fold", "+fold+cl"] if fold else ["", "+cl"]),
                f"round{multiple}": (rounding(masks), ["", "+fold", "+fold+cl"] if fold else ["", "+cl"]),
                f"round{multiple}@MACs": (
                    rounded_at_macs(cut, rounding, meter, rate, total),
                    ["+fold", "+fold+cl"] if fold else ["", "+cl"],
                ),
            }
            if onnx_dir is not None:
                rows += _onnx_variants(
                    name, scope, rate, model, cuts, example, before, batches, repeats, onnx_dir, int8
                )
                continue
            for label, (chosen, suffixes) in cuts.items():
                small = remove_units(model, chosen, example).eval()
                count = model_cost(small, example)["macs"]
                for suffix in suffixes:
                    variant = fold_batchnorms(small) if "+fold" in suffix else copy.deepcopy(small)
                    variants[label + suffix] = _channels_last(variant) if suffix.endswith("+cl") else variant
                    macs[label + suffix] = count
                if fold:
                    with torch.no_grad():
                        difference = float((fold_batchnorms(small)(example) - small(example)).abs().max())
                    logger.info(
                        "%s %s %.2f %s: folded vs unfolded max |diff| %.2e", name, scope, rate, label, difference
                    )
            for batch in batches:
                x = torch.randn(batch, 3, 224, 224)
                inputs = {
                    k: x.contiguous(memory_format=torch.channels_last) if k.endswith("+cl") else x for k in variants
                }
                load = os.getloadavg()[0]
                timed = interleaved(variants, inputs, repeats)
                base_wall, base_cpu = timed["base"]
                for label, (wall, cpu) in timed.items():
                    timing = (1000 * cpu, 1000 * base_cpu, base_wall / wall)
                    rows.append(variant_row(name, scope, rate, batch, label, macs[label], before, timing, load))
                logger.info(
                    "%s %s %.2f batch %d: %s",
                    name,
                    scope,
                    rate,
                    batch,
                    ", ".join(f"{k} {timed['base'][1] / v[1]:.2f}x" for k, v in timed.items()),
                )
    return rows


def variant_row(
    name: str,
    scope: str,
    rate: float,
    batch: int,
    label: str,
    macs: float,
    before: float,
    timing: tuple[float, float, float],
    load: float,
) -> dict:
    """One ``--variants`` row; ``timing`` = (the variant's CPU ms, the unpruned model's CPU ms, wall speed-up)."""
    cpu_ms, base_cpu_ms, wall_speedup = timing
    reduction = before / macs
    return {
        "model": name,
        "scope": scope,
        "rate": rate,
        "batch": batch,
        "variant": label,
        "macs": f"{macs / 1e9:.2f}G",
        "macs_x": reduction,
        "cpu_ms": cpu_ms,
        "cpu_speedup": base_cpu_ms / cpu_ms,
        "cpu_efficiency": base_cpu_ms / cpu_ms / reduction,
        "wall_speedup": wall_speedup,
        "load": load,
    }


def _onnx_variants(
    name: str,
    scope: str,
    rate: float,
    model: nn.Module,
    cuts: dict[str, tuple[dict[str, torch.Tensor], list[str]]],
    example: torch.Tensor,
    before: float,
    batches: list[int],
    repeats: int,
    folder: Path,
    int8: bool = False,
) -> list[dict]:
    """``--onnx``: the unpruned model, ``pruned`` and the ``@MACs`` rounded cut as ONNX, timed interleaved with ONNX
    Runtime (1 intra-op thread); rows as the eager variants', labelled ``[ORT]``. With ``int8`` (``--int8``) each is
    also quantized with the card's scheme, calibrated on 16 seeded Gaussian images (random weights: a timing, not an
    accuracy figure), and timed in the same loop (``[ORT] int8``)."""
    folder.mkdir(parents=True, exist_ok=True)
    stem = f"{name.replace(':', '_')}-{scope}-{rate}"
    base = folder / f"{name.replace(':', '_')}-base.onnx"  # one export per model (VGG19's is 0.5 GB)
    paths = {"base [ORT]": base if base.is_file() else export_onnx(model, base, example)}
    macs = {"base [ORT]": before}
    for label, (chosen, _suffixes) in cuts.items():
        if label == "pruned" or label.endswith("@MACs"):
            small = remove_units(model, chosen, example).eval()
            paths[f"{label} [ORT]"] = export_onnx(small, folder / f"{stem}-{label}.onnx", example)
            macs[f"{label} [ORT]"] = model_cost(small, example)["macs"]
    if int8:
        calibration = torch.randn(16, 3, 224, 224, generator=torch.Generator().manual_seed(0))
        for label, path in list(paths.items()):
            quantized = path.with_name(path.stem + ".int8.onnx")
            paths[f"{label} int8"] = quantized if quantized.is_file() else quantize_int8(path, quantized, calibration)
            macs[f"{label} int8"] = macs[label]
    load = os.getloadavg()[0]
    timed = onnx_latency(paths, torch.randn(1, 3, 224, 224), batches=batches, threads=1, repeats=repeats)
    rows = []
    for batch in batches:
        of_batch = {row["model"]: row for row in timed if row["batch"] == batch}
        base = of_batch["base [ORT]"]
        for label, row in of_batch.items():
            timing = (row["CPU median ms"], base["CPU median ms"], base["median ms"] / row["median ms"])
            rows.append(variant_row(name, scope, rate, batch, label, macs[label], before, timing, load))
        logger.info(
            "%s %s %.2f batch %d [ORT]: %s",
            name,
            scope,
            rate,
            batch,
            ", ".join(
                f"{r['variant']} {r['cpu_speedup']:.2f}x (eff. {r['cpu_efficiency']:.2f})"
                for r in rows[-len(of_batch) :]
            ),
        )
    return rows


def print_int8(rows: list[dict]) -> None:
    """``--int8``: per model, scope, rate and batch, each ONNX model's fp32 / int8 CPU-time ratio, and the unpruned
    fp32 model's time over the rounded cut's int8 time (what pruning and int8 buy together)."""
    print(
        "\n| model | scope | rate | batch | unpruned fp32 / int8 | pruned fp32 / int8 | rounded fp32 / int8 | "
        "unpruned fp32 / rounded int8 |"
    )
    print("|---|---|---|---|---|---|---|---|")
    timed: dict[tuple, dict[str, float]] = {}
    for r in rows:
        timed.setdefault((r["model"], r["scope"], r["rate"], r["batch"]), {})[r["variant"]] = r["cpu_ms"]
    for (model, scope, rate, batch), ms in timed.items():
        rounded = next(label for label in ms if label.endswith("@MACs [ORT]"))

        def ratio(label: str, ms: dict[str, float] = ms) -> str:
            return f"{ms[label] / ms[label + ' int8']:.2f}x"

        print(
            f"| {model} | {scope} | {rate:.2f} | {batch} | {ratio('base [ORT]')} | {ratio('pruned [ORT]')} | "
            f"{ratio(rounded)} | {ms['base [ORT]'] / ms[rounded + ' int8']:.1f}x |"
        )


def print_variants(rows: list[dict]) -> None:
    print(
        "| model | scope | rate | batch | variant | MACs | MACs red. | CPU ms | CPU speed-up | CPU eff. "
        "| wall speed-up | load |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['model']} | {r['scope']} | {r['rate']:.2f} | {r['batch']} | {r['variant']} | {r['macs']} | "
            f"{r['macs_x']:.2f}x | {r['cpu_ms']:.1f} | {r['cpu_speedup']:.2f}x | {r['cpu_efficiency']:.2f} | "
            f"{r['wall_speedup']:.2f}x | {r['load']:.1f} |"
        )


def deploy_latency(
    model: nn.Module, reduced: dict[str, nn.Module], calibration: torch.Tensor, folder: Path, repeats: int
) -> dict[str, dict[int, dict]]:
    """``--deploy``: ONNX fp32 and int8 of each reduced model, timed interleaved with the unpruned model's ONNX;
    label -> batch -> onnx_latency row (``original`` for the unpruned model, ``<cut> fp32`` / ``<cut> int8``)."""
    folder.mkdir(parents=True, exist_ok=True)
    example = calibration[:1]
    paths = {"original": export_onnx(model.eval(), folder / "original.onnx", example)}
    for label, smaller in reduced.items():
        fp32 = export_onnx(smaller.eval(), folder / f"{label}.onnx", example)
        paths[f"{label} fp32"] = fp32
        paths[f"{label} int8"] = quantize_int8(fp32, folder / f"{label}.int8.onnx", calibration)
    timed: dict[str, dict[int, dict]] = {}
    for row in onnx_latency(paths, example, batches=(1, 32), threads=1, repeats=repeats):
        timed.setdefault(row["model"], {})[row["batch"]] = row
    return timed


def rounding_accuracy(
    runs: list[str], rates: list[float], multiple: int, deploy: Path | None = None, repeats: int = 200
) -> list[dict]:
    """Rows of ``--accuracy`` (module docstring): one per run, rate and cut; with ``deploy`` (a scratch folder), the
    ``--deploy`` latencies of the floor and round+floor cuts beside them."""
    rows = []
    for run in runs:
        config = json.loads((Path(run) / "run.json").read_text())["config"]
        model, _meta, splits = load_with_splits(config["checkpoint"], label=run)
        names = list(splits.class_names)
        val = stack_samples(splits.val, range(len(splits.val)))
        recalibration = recalibration_subset(splits.train, 512, config["seed"])
        files = sorted((Path(run) / "scores").glob(f"{config['method']}_*.safetensors"))
        if not files:
            logger.warning("%s: no %s score file (scored elsewhere?); skipped", run, config["method"])
            continue
        scores = load_scores(files[0], model).scores
        ranking = {k: v for k, v in config["ranking"].items() if k != "couplings"}
        couplings = coupled_groups(model)
        meter = MacsMeter(model)
        total = sum(v.numel() for v in scores.values())

        def cut(rate: float, ranking: dict = ranking, scores: dict = scores, couplings: list = couplings) -> dict:
            return masks_from_scores(scores, rate, couplings=couplings, **ranking)

        def rounding(masks: dict, scores: dict = scores, ranking: dict = ranking, couplings: list = couplings) -> dict:
            return round_masks(masks, scores, multiple, normalize=ranking["normalize"], couplings=couplings)

        base = metric_value(predictions_and_metrics(model, val, names)[1], "balanced_accuracy")
        for rate in rates:
            floor = ranked_candidate(scores, rate, meter=meter, couplings=couplings, **ranking).masks
            rounded_floor = floor_candidate(
                lambda r, c=cut, f=rounding: f(c(r)), rate, total=total, cap=total - len(scores), meter=meter
            ).masks
            reduced = {}
            for label, masks in (("floor", floor), ("floor+round", rounding(floor)), ("round+floor", rounded_floor)):
                recovered = recover(model, masks, FinetuneRecipe(epochs=0), recalibration=recalibration)
                value = metric_value(predictions_and_metrics(recovered, val, names)[1], "balanced_accuracy")
                if label != "floor+round":
                    reduced[label] = remove_units(recovered, masks)
                rows.append(
                    {
                        "run": Path(run).name,
                        "rate": rate,
                        "cut": label,
                        "units": achieved_rate(masks),
                        "macs": meter.removed(masks),
                        "base": base,
                        "value": value,
                    }
                )
                logger.info("%s %.2f %s: balanced accuracy %.4f (unpruned %.4f)", run, rate, label, value, base)
            if deploy is not None:
                calibration = stack_samples(recalibration, range(min(256, len(recalibration))))[0]
                timed = deploy_latency(model, reduced, calibration, deploy / f"{Path(run).name}-{rate}", repeats)
                for row in rows[-3:]:
                    if row["cut"] in reduced:
                        for batch in (1, 32):
                            for kind in ("fp32", "int8"):
                                row[f"{kind} b{batch} ms"] = timed[f"{row['cut']} {kind}"][batch]["CPU median ms"]
                            row[f"original b{batch} ms"] = timed["original"][batch]["CPU median ms"]
    return rows


def print_accuracy(rows: list[dict]) -> None:
    print("| run | rate | cut | units removed | MACs removed | val BA unpruned | val BA masked+recalibrated |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['run']} | {r['rate']:.2f} | {r['cut']} | {r['units']:.3f} | {r['macs']:.3f} | {r['base']:.4f} | "
            f"{r['value']:.4f} |"
        )
    timed = [r for r in rows if "fp32 b1 ms" in r]
    if timed:
        print(
            "\nONNX Runtime, 1 thread, CPU ms per batch (median of interleaved repeats), fp32 and int8 of the same "
            "reduced model, the unpruned model's fp32 beside:\n"
        )
        print(
            "| run | rate | cut | MACs removed | original b1 | fp32 b1 | int8 b1 | fp32/int8 b1 | fp32 b32 | int8 b32 |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|")
        for r in timed:
            print(
                f"| {r['run']} | {r['rate']:.2f} | {r['cut']} | {r['macs']:.3f} | {r['original b1 ms']:.3f} | "
                f"{r['fp32 b1 ms']:.3f} | {r['int8 b1 ms']:.3f} | {r['fp32 b1 ms'] / r['int8 b1 ms']:.2f}x | "
                f"{r['fp32 b32 ms']:.2f} | {r['int8 b32 ms']:.2f} |"
            )
        print("\nPaired over runs (round+floor / floor, ratio of CPU ms; below 1: rounding is faster):\n")
        for rate in sorted({r["rate"] for r in timed}):
            by = {(r["run"], r["cut"]): r for r in timed if r["rate"] == rate}
            runs = sorted({run for run, _ in by})
            for key in ("fp32 b1 ms", "int8 b1 ms", "fp32 b32 ms", "int8 b32 ms"):
                ratios = [by[(run, "round+floor")][key] / by[(run, "floor")][key] for run in runs]
                print(
                    f"- rate {rate:.2f}, {key[:-3]}: {statistics.geometric_mean(ratios):.2f}x geometric mean "
                    f"[{min(ratios):.2f}, {max(ratios):.2f}] over {len(ratios)} runs"
                )
            for cut in ("floor", "round+floor"):
                speed = [by[(run, cut)]["fp32 b1 ms"] / by[(run, cut)]["int8 b1 ms"] for run in runs]
                print(
                    f"- rate {rate:.2f}, {cut}: int8 speed-up at batch 1 {statistics.geometric_mean(speed):.2f}x "
                    f"[{min(speed):.2f}, {max(speed):.2f}]; at least 1.5x in {sum(v >= 1.5 for v in speed)} of "
                    f"{len(speed)}"
                )
    print("\nPaired over runs (difference of validation balanced accuracy, mean and [min, max]):\n")
    for rate in sorted({r["rate"] for r in rows}):
        by = {(r["run"], r["cut"]): r["value"] for r in rows if r["rate"] == rate}
        runs = sorted({run for run, _ in by})
        for other in ("floor+round", "round+floor"):
            diffs = [by[(run, other)] - by[(run, "floor")] for run in runs]
            print(
                f"- rate {rate:.2f}, {other} - floor: {statistics.mean(diffs):+.4f} "
                f"[{min(diffs):+.4f}, {max(diffs):+.4f}] over {len(diffs)} runs"
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["vgg19", "resnet50", "vit_b_16"])
    parser.add_argument("--rates", nargs="+", type=float, default=[0.3, 0.5, 0.7])
    parser.add_argument("--scopes", nargs="+", default=["layer", "global"], choices=["layer", "global"])
    parser.add_argument("--scores", default="magnitude", choices=["magnitude", "random"])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--variants", action="store_true", help="time fold / rounding / channels_last variants")
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 4], help="batch sizes of --variants")
    parser.add_argument("--multiple", type=int, default=8, help="channel multiple of --variants' rounding")
    parser.add_argument("--normalize", default="max", help="per-layer normalisation of the global ranking")
    parser.add_argument("--accuracy", nargs="+", metavar="RUN", help="compress run folders: rounding's accuracy effect")
    parser.add_argument(
        "--deploy", type=Path, help="with --accuracy: scratch folder; time ONNX fp32 / int8 (docstring)"
    )
    parser.add_argument("--onnx", type=Path, help="with --variants: scratch folder; time ONNX Runtime (docstring)")
    parser.add_argument("--int8", action="store_true", help="with --onnx: also time each model's int8 (docstring)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.accuracy:
        rows = rounding_accuracy(args.accuracy, args.rates, args.multiple, args.deploy, max(args.repeats, 200))
        print(
            f"\nmultiple {args.multiple}, validation split, one checkpoint per run, masked + recalibrated, "
            "no fine-tuning\n"
        )
        print_accuracy(rows)
        return 0
    if args.variants:
        start_load = os.getloadavg()
        rows = []
        for name in args.models:
            rows += bench_variants(
                name,
                args.rates,
                args.scopes,
                args.scores,
                args.batches,
                args.repeats,
                args.multiple,
                args.normalize,
                args.onnx,
                args.int8,
            )
        print(
            f"\n{platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}, "
            f"median of {args.repeats} interleaved repeats, scores={args.scores}, normalize={args.normalize}, "
            f"224 px, random init; load average {start_load[0]:.1f} at start, {os.getloadavg()[0]:.1f} at end\n"
        )
        print_variants(rows)
        if args.int8:
            print_int8(rows)
        return 0
    rows = []
    for name in args.models:
        rows += bench_model(name, args.rates, args.scopes, args.scores, args.batch, args.repeats, args.normalize)
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
