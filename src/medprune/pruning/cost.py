"""What a model costs, the one home of parameter, MAC and CPU-latency counts (compress, sweep, prune, report).

Two counts of parameters and MACs, for two purposes:

* :func:`model_cost` / :func:`layer_costs`: torch-pruning's ``count_ops_and_params`` of a (physically smaller)
  model, per model or per layer: MACs of convolutions and linear layers plus BatchNorm, activation and pooling
  operations. The numbers of the model card and of ``medprune prune``.
* :class:`CostCounter`: the parameters and MACs a set of masks removes, counted from the masks in microseconds (no
  surgery per row; the sweep's ``params_removed`` / ``macs_removed`` columns). It traces the model once
  (torch-pruning's dependency graph, one forward pass for the output sizes) and records, per unit group, which layers
  lose an output channel (the group's conv/linear and its BatchNorm) and which lose input channels (the consumers; a
  flattened conv output feeds ``H*W`` inputs of a Linear). Removing a unit of a coupled set (a ResNet residual
  stream) removes the channel only where *every* member prunes it: the count is what
  :func:`medprune.pruning.physical.remove_units` would remove, exactly for coupled masks (tested). Counted:
  parameters of Conv2d, Linear and BatchNorm/LayerNorm layers; MACs of Conv2d and Linear layers (one image). Models
  with attention heads as units (ViT) are not counted (``None``).

:class:`MacsMeter` joins both for compress's MACs floor (the card's count, with the mask count as first guess);
:func:`cpu_latency_ms` and :func:`efficiency` time forward passes on the CPU.

>>> from medprune.models import create_model
>>> model_cost(create_model("vgg_small", num_classes=2, image_size=16))["params"] > 0
True
"""

from __future__ import annotations

import copy
import logging
import math
import statistics
import time
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch_pruning as tp
from torch import Tensor, nn

from medprune.models.units import get_module, unit_groups
from medprune.pruning.physical import coupled_groups, dependency_graph, example_inputs_for, remove_units
from medprune.pruning.support import pruning_group
from medprune.runtime import eval_mode

logger = logging.getLogger(__name__)

__all__ = [
    "COST_COLUMNS",
    "CostCounter",
    "MacsMeter",
    "PairedTiming",
    "cpu_latency_ms",
    "interleaved_latency",
    "efficiency",
    "layer_costs",
    "model_cost",
]

#: The row columns :meth:`CostCounter.removed` fills.
COST_COLUMNS: tuple[str, ...] = ("params_removed", "macs_removed", "params_removed_fraction", "macs_removed_fraction")
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.LayerNorm, nn.GroupNorm)


def model_cost(model: nn.Module, example_inputs: Tensor | None = None) -> dict[str, int]:
    """``{"params": ..., "macs": ...}`` per example batch, from torch-pruning's ``count_ops_and_params``."""
    inputs = example_inputs_for(model) if example_inputs is None else example_inputs
    with eval_mode(model), torch.no_grad():
        macs, params = tp.utils.count_ops_and_params(model, inputs)
    return {"params": int(params), "macs": int(macs)}


def layer_costs(model: nn.Module, inputs: Tensor) -> tuple[dict[str, int], dict[str, int]]:
    """``({module name: MACs}, {module name: parameters})`` of every module for ``inputs`` (torch-pruning's count).

    torch-pruning counts some composite modules as a whole (timm's ``Attention``) and leaves their children's MACs
    as ``None``; those of Linear / Conv children are measured here from their outputs in one forward pass, other
    uncounted children get 0 (their parent holds their cost).
    """
    with eval_mode(model), torch.no_grad():
        _, _, macs, params = tp.utils.count_ops_and_params(model, inputs, layer_wise=True)
    names = {id(module): name for name, module in model.named_modules()}
    uncounted = [m for m, v in macs.items() if v is None and id(m) in names]
    measured = _dense_macs(model, inputs, uncounted) if uncounted else {}
    by_name_macs = {
        names[id(m)]: int(v) if v is not None else measured.get(id(m), 0) for m, v in macs.items() if id(m) in names
    }
    by_name_params = {names[id(m)]: int(v or 0) for m, v in params.items() if id(m) in names}
    return by_name_macs, by_name_params


def _dense_macs(model: nn.Module, inputs: Tensor, modules: list[nn.Module]) -> dict[int, int]:
    """MACs of the Linear / Conv2d layers among ``modules`` for ``inputs``, from their output sizes:
    ``{id(module): MACs}`` (output elements x inputs summed per output)."""
    counts: dict[int, int] = {}

    def hook(module: nn.Module, _inputs: tuple, output: Tensor) -> None:
        if isinstance(module, nn.Linear):
            per_output = module.in_features
        else:
            per_output = module.in_channels // module.groups * math.prod(module.kernel_size)
        counts[id(module)] = counts.get(id(module), 0) + output.numel() * per_output

    dense = [m for m in modules if isinstance(m, (nn.Linear, nn.Conv2d))]
    handles = [m.register_forward_hook(hook) for m in dense]
    try:
        with eval_mode(model), torch.no_grad():
            model(inputs)
    finally:
        for handle in handles:
            handle.remove()
    return counts


class CostCounter:
    """Counts the parameters and MACs that masks remove from one model (built once per model).

    Args:
        model: a CNN built by :func:`medprune.models.create_model` (not changed).
        example_inputs: one input image batch for tracing (default: zeros from ``model.medprune_spec``).
    """

    def __init__(self, model: nn.Module, example_inputs: Tensor | None = None) -> None:
        self.supported = True
        self._sets: list[list[str]] = []
        self._effects: dict[str, list[tuple[nn.Module, str, int]]] = {}
        self._positions: dict[nn.Module, int] = {}
        groups = unit_groups(model)
        if any(g.kind == "head" for g in groups):
            self.supported = False
            logger.info("parameters/MACs removed are not counted for models with attention heads as units")
            return
        inputs = example_inputs_for(model, 1) if example_inputs is None else example_inputs[:1]
        graph = dependency_graph(model, inputs)
        coupled = coupled_groups(model, groups, inputs)
        in_set = {name for members in coupled for name in members}
        self._sets = [list(m) for m in coupled] + [[g.name] for g in groups if g.name not in in_set]
        by_name = {g.name: g for g in groups}
        for members in self._sets:
            path = by_name[members[0]].module
            effects = []
            for dep, idxs in pruning_group(graph, get_module(model, path), path, [0]):
                target = dep.target.module
                if isinstance(target, (nn.Conv2d, nn.Linear, *_NORMS)):
                    kind = "out" if graph.is_out_channel_pruning_fn(dep.handler) else "in"
                    effects.append((target, kind, len(idxs)))
            self._effects[members[0]] = effects
        self._positions = self._output_positions(model, inputs)
        self._layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear, *_NORMS))]
        self.total_params = sum(p.numel() for p in model.parameters())
        self.total_macs = sum(self._cost(m, 0, 0)[1] for m in self._layers)

    @staticmethod
    def _output_positions(model: nn.Module, inputs: Tensor) -> dict[nn.Module, int]:
        """Output positions per image (H*W of a conv map, tokens of a Linear) of every conv/linear layer."""
        positions: dict[nn.Module, int] = {}

        def hook(module: nn.Module, _: Any, output: Tensor) -> None:
            channels = output.shape[1] if isinstance(module, nn.Conv2d) else output.shape[-1]
            positions[module] = output[:1].numel() // channels

        layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
        handles = [m.register_forward_hook(hook) for m in layers]
        try:
            with eval_mode(model), torch.no_grad():
                model(inputs.to(next(model.parameters()).device))
        finally:
            for handle in handles:
                handle.remove()
        return positions

    def _cost(self, module: nn.Module, dead_out: int, dead_in: int) -> tuple[int, int]:
        """(params, MACs) of ``module`` with ``dead_out`` output and ``dead_in`` input channels removed."""
        if isinstance(module, nn.Conv2d):
            out, into = module.out_channels - dead_out, module.in_channels - dead_in
            weights = out * (into // module.groups) * module.kernel_size[0] * module.kernel_size[1]
            bias = out if module.bias is not None else 0
            return weights + bias, weights * self._positions.get(module, 0)
        if isinstance(module, nn.Linear):
            out, into = module.out_features - dead_out, module.in_features - dead_in
            weights = out * into
            return weights + (out if module.bias is not None else 0), weights * self._positions.get(module, 0)
        params = sum(p.numel() for p in module.parameters(recurse=False))
        channels = params // 2 if params else 0
        return (2 * (channels - dead_out) if params else 0), 0

    def removed(self, masks: Mapping[str, Tensor]) -> dict[str, float | int | None]:
        """``params_removed``, ``macs_removed`` and their fractions of the unpruned model (``None`` if unsupported)."""
        if not self.supported:
            return dict.fromkeys(COST_COLUMNS)
        dead: dict[nn.Module, dict[str, int]] = defaultdict(lambda: {"out": 0, "in": 0})
        for members in self._sets:
            gone = ~torch.as_tensor(masks[members[0]]).to(torch.bool).cpu()
            for name in members[1:]:
                gone &= ~torch.as_tensor(masks[name]).to(torch.bool).cpu()
            count = int(gone.sum())
            if count:
                for module, kind, per_unit in self._effects[members[0]]:
                    dead[module][kind] += count * per_unit
        params = macs = 0
        for module, counts in dead.items():
            full = self._cost(module, 0, 0)
            left = self._cost(module, counts["out"], counts["in"])
            params += full[0] - left[0]
            macs += full[1] - left[1]
        return {
            "params_removed": params,
            "macs_removed": macs,
            "params_removed_fraction": params / self.total_params if self.total_params else 0.0,
            "macs_removed_fraction": macs / self.total_macs if self.total_macs else 0.0,
        }


class MacsMeter:
    """The fraction of a model's MACs that masks remove, as the model card counts them.

    Args:
        model: the unpruned model (copied to the CPU; not changed).

    Attributes:
        supported: ``False`` for models whose units are attention heads (nothing is counted).
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = copy.deepcopy(model).cpu().eval()
        self.counter = CostCounter(self.model)
        self.supported = self.counter.supported
        self.before = model_cost(self.model)["macs"] if self.supported else 0

    def removed(self, masks: dict[str, Tensor]) -> float:
        """The fraction of the MACs removed: ``1 - MACs(smaller model) / MACs(model)`` (one surgery)."""
        return 1 - model_cost(remove_units(self.model, masks))["macs"] / self.before

    def estimate(self, masks: dict[str, Tensor]) -> float:
        """The fraction of the convolution and linear MACs removed, counted from the masks (no surgery)."""
        return float(self.counter.removed(masks)["macs_removed_fraction"])


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


@dataclass(frozen=True)
class PairedTiming:
    """Latency of two models timed in one interleaved loop (milliseconds per forward pass).

    Attributes:
        first_ms, second_ms: median wall time. first_iqr_ms, second_iqr_ms: interquartile range (25th, 75th
            percentile) of the wall times. first_cpu_ms, second_cpu_ms: median process CPU time of the same passes
            (all threads together: above the wall time when several threads work, far below it when the process
            waited for the CPU). repeats: timed passes of each model.
    """

    first_ms: float
    second_ms: float
    first_iqr_ms: tuple[float, float]
    second_iqr_ms: tuple[float, float]
    first_cpu_ms: float
    second_cpu_ms: float
    repeats: int


def interleaved_latency(
    first: nn.Module, second: nn.Module, inputs: tuple[Tensor, Tensor], repeats: int = 20, warmup: int = 3
) -> PairedTiming:
    """Time two models on the CPU in one loop that alternates them (first-second, then second-first, ...), after
    ``warmup`` untimed passes of each, so drifts of the machine (other jobs, clock changes, a cold cache) fall on both
    alike rather than on whichever model was timed first.

    Args:
        first, second: the models (eval mode and no gradients inside; their modes are restored after).
        inputs: one input batch for each model.
        repeats: timed passes of each model. warmup: untimed passes of each model first.

    >>> import torch.nn as tnn
    >>> timing = interleaved_latency(tnn.Linear(4, 2), tnn.Linear(4, 2), (torch.zeros(1, 4), torch.zeros(1, 4)), 5)
    >>> timing.repeats, timing.first_ms >= 0
    (5, True)
    """
    walls: tuple[list[float], list[float]] = ([], [])
    cpus: tuple[list[float], list[float]] = ([], [])
    models = (first, second)
    with eval_mode(first), eval_mode(second), torch.inference_mode():
        for _ in range(warmup):
            for model, batch in zip(models, inputs):
                model(batch)
        for repeat in range(repeats):
            order = (0, 1) if repeat % 2 == 0 else (1, 0)
            for index in order:
                wall, cpu = time.perf_counter(), time.process_time()
                models[index](inputs[index])
                walls[index].append((time.perf_counter() - wall) * 1000)
                cpus[index].append((time.process_time() - cpu) * 1000)

    def iqr(values: list[float]) -> tuple[float, float]:
        low, high = np.percentile(values, [25, 75])
        return float(low), float(high)

    return PairedTiming(
        first_ms=float(statistics.median(walls[0])),
        second_ms=float(statistics.median(walls[1])),
        first_iqr_ms=iqr(walls[0]),
        second_iqr_ms=iqr(walls[1]),
        first_cpu_ms=float(statistics.median(cpus[0])),
        second_cpu_ms=float(statistics.median(cpus[1])),
        repeats=repeats,
    )


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
