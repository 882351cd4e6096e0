"""DL-Backtrace (DLB) unit scores, native and vectorised: the ``dlb`` scorer.

Re-implements the default mode of the ``dl-backtrace==0.1.24`` package (docs/method.md §3; docs/dlb.md) for the
models medprune builds: one forward pass records every layer's input (hooks, removed in ``finally``), then the layers
are walked backwards applying the rules of :mod:`medprune.scoring.dlb_rules`, batched over samples, on the model's
device. Relevance is read at every requested :class:`~medprune.units.UnitGroup` and reduced with
:func:`~medprune.units.units_per_sample`. The walk stops below the lowest requested group.

Supported: torchvision VGG and ResNet (BasicBlock / Bottleneck) and timm VisionTransformer (:mod:`.dlb_vit`).
Deviations from the package are listed in ``docs/dlb.md``.

>>> from medprune.models import create_model
>>> model = create_model("vgg_small", num_classes=2, image_size=32)
>>> rel = dlb_relevance(model, torch.randn(2, 3, 32, 32), torch.tensor([0, 1]))
>>> rel["features.0"].shape
torch.Size([2, 16])
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Literal

import torch
from torch import Tensor, nn

from medprune.scoring.dlb_rules import align_rule, conv2d_rule, linear_rule, start_relevance
from medprune.scoring.registry import register_scorer
from medprune.units import UnitGroup, unit_groups, units_per_sample

logger = logging.getLogger(__name__)

Start = Literal["target", "argmax"]
STARTS: tuple[str, ...] = ("target", "argmax")
#: layers through which DLB passes relevance unchanged (the package's ``Activation``/``Normalization`` pass-through)
PASS_THROUGH = (nn.BatchNorm2d, nn.ReLU, nn.GELU, nn.Dropout, nn.Identity, nn.LayerNorm, nn.Flatten)
POOLS = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d)


class Recording(dict):
    """``{module path: (input, output)}`` of one forward pass (see :func:`record_io`)."""


@contextmanager
def record_io(model: nn.Module, names: Sequence[str]) -> Iterator[Recording]:
    """Record the first input and the output of the named modules during forward passes; hooks removed on exit.

    Args:
        model: the model.
        names: dotted module paths.

    Yields:
        A :class:`Recording` that forward passes fill (the latest call of a module wins).
    """
    store = Recording()
    handles = []
    try:
        for name in names:
            module = model.get_submodule(name)

            def keep(_module: nn.Module, inputs: tuple, output: Any, name: str = name) -> None:
                store[name] = (inputs[0].detach(), output.detach() if isinstance(output, Tensor) else output)

            handles.append(module.register_forward_hook(keep))
        yield store
    finally:
        for handle in handles:
            handle.remove()


class Collector:
    """Receives relevance at unit sites during the backward walk and tells when the walk may stop."""

    def __init__(self, groups: Sequence[UnitGroup]) -> None:
        self.by_site = {(g.module, g.site): g for g in groups}
        self.result: dict[str, Tensor] = {}

    def __call__(self, module: str, site: str, relevance: Tensor) -> None:
        group = self.by_site.get((module, site))
        if group is not None:
            self.result[group.name] = units_per_sample(group, relevance)

    @property
    def done(self) -> bool:
        return len(self.result) == len(self.by_site)

    def check(self) -> dict[str, Tensor]:
        missing = [g.name for g in self.by_site.values() if g.name not in self.result]
        if missing:
            raise ValueError(f"DLB never reached unit group(s) {missing}: not on the model's path to the logits")
        return self.result


# ------------------------------------------------------------------------------------------------------ CNN walk


def _cnn_steps(model: nn.Module) -> list[tuple[str, nn.Module | None]]:
    """Forward-ordered steps of a torchvision VGG/ResNet: (path, module); ``None`` marks ``torch.flatten``."""
    import torchvision

    if isinstance(model, torchvision.models.VGG):
        steps = [(f"features.{i}", m) for i, m in enumerate(model.features)]
        steps += [("avgpool", model.avgpool), ("<flatten>", None)]
        return steps + [(f"classifier.{i}", m) for i, m in enumerate(model.classifier)]
    if isinstance(model, torchvision.models.ResNet):
        steps = [(n, getattr(model, n)) for n in ("conv1", "bn1", "relu", "maxpool")]
        for layer in ("layer1", "layer2", "layer3", "layer4"):
            steps += [(f"{layer}.{i}", block) for i, block in enumerate(getattr(model, layer))]
        return steps + [("avgpool", model.avgpool), ("<flatten>", None), ("fc", model.fc)]
    raise NotImplementedError(f"DLB supports torchvision VGG/ResNet and timm ViT, not {type(model).__name__}")


def _block_paths(path: str, block: nn.Module) -> tuple[list[str], list[str]]:
    """Main-branch and shortcut layer paths of a torchvision BasicBlock/Bottleneck, forward order."""
    names = ["conv1", "bn1", "relu", "conv2", "bn2"]
    if hasattr(block, "conv3"):
        names += ["relu", "conv3", "bn3"]
    main = [f"{path}.{n}" for n in names]
    shortcut = [f"{path}.downsample.{i}" for i in range(len(block.downsample))] if block.downsample is not None else []
    return main, shortcut


def _is_block(module: nn.Module) -> bool:
    from torchvision.models.resnet import BasicBlock, Bottleneck

    return isinstance(module, BasicBlock | Bottleneck)


def _recorded_paths(model: nn.Module, steps: list[tuple[str, nn.Module | None]]) -> list[str]:
    paths = []
    for path, module in steps:
        if module is not None and _is_block(module):
            main, shortcut = _block_paths(path, module)
            paths += [p for p in main + shortcut if isinstance(model.get_submodule(p), nn.Conv2d)]
        elif isinstance(module, (nn.Conv2d, nn.Linear, *POOLS)):
            paths.append(path)
    return paths


class _Walker:
    """Applies the per-layer rules backwards over recorded layers."""

    def __init__(self, model: nn.Module, rec: Recording, collect: Collector) -> None:
        self.model, self.rec, self.collect = model, rec, collect

    def layer(self, path: str, module: nn.Module, relevance: Tensor) -> Tensor:
        if isinstance(module, nn.Conv2d):
            self.collect(path, "output", relevance)
            if self.collect.done:
                return relevance
            if isinstance(module.padding, str):
                raise NotImplementedError(f"DLB needs numeric Conv2d padding, {path} has padding={module.padding!r}")
            x = self.rec[path][0]
            return conv2d_rule(
                relevance, x, module.weight, module.bias, module.stride, module.padding, module.dilation, module.groups
            )
        if isinstance(module, nn.Linear):
            self.collect(path, "output", relevance)
            x, y = self.rec[path]
            return linear_rule(relevance, x, module.weight, module.bias, y)
        if isinstance(module, POOLS):
            return align_rule(relevance, self.rec[path][0].shape)
        if isinstance(module, PASS_THROUGH):
            return relevance
        raise NotImplementedError(f"DLB has no rule for {type(module).__name__} at {path!r}")

    def sequence(self, paths: Sequence[str], relevance: Tensor) -> Tensor:
        for path in reversed(paths):
            relevance = self.layer(path, self.model.get_submodule(path), relevance)
            if self.collect.done:
                break
        return relevance

    def block(self, path: str, block: nn.Module, relevance: Tensor) -> Tensor:
        """``relu(main(x) + shortcut(x))``: the add splits 50/50 (package), both branches back to ``x``, summed."""
        main, shortcut = _block_paths(path, block)
        half = relevance / 2
        from_main = self.sequence(main, half)
        if self.collect.done:
            return from_main
        return from_main + self.sequence(shortcut, half)


def _cnn_backward(
    model: nn.Module, inputs: Tensor, classes: Callable[[Tensor], Tensor], total: float, collect: Collector
) -> None:
    steps = _cnn_steps(model)
    with record_io(model, _recorded_paths(model, steps)) as rec:
        logits = model(inputs)
    relevance = start_relevance(logits, classes(logits), total)
    walker = _Walker(model, rec, collect)
    pooled_shape = rec["avgpool"][1].shape
    for path, module in reversed(steps):
        if module is None:
            relevance = relevance.reshape(pooled_shape)
        elif _is_block(module):
            relevance = walker.block(path, module, relevance)
        else:
            relevance = walker.layer(path, module, relevance)
        if collect.done:
            return


# ------------------------------------------------------------------------------------------------------ public API


def dlb_relevance(
    model: nn.Module,
    inputs: Tensor,
    targets: Tensor | None = None,
    groups: Sequence[UnitGroup] | None = None,
    *,
    start: Start = "target",
    total: float = 100.0,
) -> dict[str, Tensor]:
    """Per-sample, per-unit DL-Backtrace relevance.

    Args:
        model: a torchvision VGG/ResNet or timm ViT; run in eval mode (its mode is restored afterwards).
        inputs: (B, C, H, W) on the model's device.
        targets: (B,) classes to explain (``start="target"``); ignored for ``start="argmax"``.
        groups: unit groups to read (default: :func:`medprune.units.unit_groups`).
        start: ``"target"`` starts at ``targets``; ``"argmax"`` at the predicted class, as the package always does.
        total: relevance placed on the start logit of every sample (package: 100).

    Returns:
        ``{group.name: Tensor(B, num_units)}`` in the inputs' dtype on their device.
    """
    if start not in STARTS:
        raise ValueError(f"start must be one of {STARTS}, got {start!r}")
    if start == "target" and (targets is None or targets.shape != (inputs.shape[0],)):
        raise ValueError(f"start='target' needs targets of shape ({inputs.shape[0]},), got {targets!r}")
    if not isinstance(total, int | float) or not total > 0:
        raise ValueError(f"total must be a positive number, got {total!r}")
    groups = list(unit_groups(model) if groups is None else groups)
    collect = Collector(groups)
    if not groups:
        return {}

    def classes(logits: Tensor) -> Tensor:
        return logits.argmax(dim=1) if start == "argmax" else targets.to(logits.device)

    was_training = model.training
    model.eval()  # BatchNorm statistics and Dropout as at inference (the package explains the eval-mode graph)
    try:
        with torch.no_grad():
            if hasattr(model, "blocks") and hasattr(model, "patch_embed"):
                from medprune.scoring.dlb_vit import vit_backward

                vit_backward(model, inputs, classes, float(total), collect)
            else:
                _cnn_backward(model, inputs, classes, float(total), collect)
    finally:
        model.train(was_training)
    return collect.check()


@register_scorer(
    "dlb",
    options={"start": "target", "total": 100.0},
    description="DL-Backtrace (native re-implementation of dl-backtrace 0.1.24 default mode)",
)
def dlb_scorer(
    model: nn.Module, inputs: Tensor, targets: Tensor, groups: Sequence[UnitGroup], **options: Any
) -> dict[str, Tensor]:
    """Registry adapter for :func:`dlb_relevance` (options ``start``, ``total``)."""
    return dlb_relevance(model, inputs, targets, groups, start=options["start"], total=options["total"])
