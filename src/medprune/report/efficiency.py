"""What physical pruning buys: parameters, MACs (torch-pruning's ``count_ops_and_params``) and CPU latency."""

from __future__ import annotations

import copy
import logging
import statistics
import time
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from medprune.pruning.physical import example_inputs_for, model_cost, remove_units
from medprune.runtime import eval_mode

logger = logging.getLogger(__name__)


def cpu_latency_ms(model: nn.Module, inputs: Tensor, repeats: int = 20, warmup: int = 3) -> float:
    """Median wall time (ms) of one forward pass of ``inputs`` on the CPU, in eval mode without gradients (the model's
    train/eval mode is restored after)."""
    with eval_mode(model), torch.inference_mode():
        for _ in range(warmup):
            model(inputs)
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            model(inputs)
            times.append((time.perf_counter() - started) * 1000)
    return float(statistics.median(times))


def efficiency(
    model: nn.Module, masks: Mapping[str, Tensor] | None, batch: int = 1, repeats: int = 10
) -> dict[str, Any]:
    """Params, MACs (per image) and CPU latency (per ``batch`` images) of ``model`` physically pruned by ``masks``.

    Args:
        model: the unpruned model (not changed, not moved: a model off the CPU is measured on a CPU copy).
        masks: keep-masks; ``None`` measures the unpruned model.
        batch: images per timed forward pass.
        repeats: timed passes (median reported).

    Returns:
        ``params``, ``macs``, ``latency_ms``, ``batch`` and the pruned model under ``model`` (not JSON).
    """
    if any(t.device.type != "cpu" for t in [*model.parameters(), *model.buffers()]):
        model = copy.deepcopy(model).cpu()
    pruned = model if masks is None else remove_units(model, masks)
    cost = model_cost(pruned, example_inputs_for(pruned, 1))
    latency = cpu_latency_ms(pruned, example_inputs_for(pruned, batch), repeats=repeats)
    return {"params": cost["params"], "macs": cost["macs"], "latency_ms": latency, "batch": batch, "model": pruned}
