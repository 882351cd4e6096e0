"""Parameters and MACs a set of masks removes, counted from the masks in microseconds (no surgery per row).

:class:`CostCounter` traces the model once (torch-pruning's dependency graph, one forward pass for the output sizes)
and records, per unit group, which layers lose an output channel (the group's conv/linear and its BatchNorm) and which
lose input channels (the consumers; a flattened conv output feeds ``H*W`` inputs of a Linear). Removing a unit of a
coupled set (a ResNet residual stream) removes the channel only where *every* member prunes it: the count is what
:func:`medprune.pruning.physical.remove_units` would remove, exactly for coupled masks (tested). Counted: parameters
of Conv2d, Linear and BatchNorm/LayerNorm layers; MACs of Conv2d and Linear layers (one image). Models with attention
heads as units (ViT) are not counted (``None``).

>>> # counter = CostCounter(model); counter.removed(masks)["params_removed"]
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from medprune.models.units import get_module, unit_groups
from medprune.pruning.physical import coupled_groups, dependency_graph, example_inputs_for
from medprune.runtime import eval_mode

logger = logging.getLogger(__name__)

__all__ = ["COST_COLUMNS", "CostCounter"]

#: The row columns :meth:`CostCounter.removed` fills.
COST_COLUMNS: tuple[str, ...] = ("params_removed", "macs_removed", "params_removed_fraction", "macs_removed_fraction")
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.LayerNorm, nn.GroupNorm)


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
            module = get_module(model, by_name[members[0]].module)
            pruner = graph.get_pruner_of_module(module).prune_out_channels
            effects = []
            for dep, idxs in graph.get_pruning_group(module, pruner, idxs=[0]):
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
