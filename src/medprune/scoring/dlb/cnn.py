"""DL-Backtrace backward walk over a torchvision VGG or ResNet (BasicBlock / Bottleneck).

One forward pass records the input and output of every conv, linear and pooling layer; the walk then goes from the
logits down, applying :mod:`medprune.scoring.dlb.rules` layer by layer. A residual block's add splits relevance 50/50
between the main branch and the shortcut (as the package does); both reach the block input and are summed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torchvision
from torch import Tensor, nn
from torchvision.models.resnet import BasicBlock, Bottleneck

from medprune.scoring.dlb.rules import align_rule, conv2d_rule, linear_rule, start_relevance
from medprune.scoring.dlb.walk import Collector, Recording, record_io

#: layers through which DLB passes relevance unchanged (the package's ``Activation``/``Normalization`` pass-through)
PASS_THROUGH = (nn.BatchNorm2d, nn.ReLU, nn.GELU, nn.Dropout, nn.Identity, nn.LayerNorm, nn.Flatten)
POOLS = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d)


def _cnn_steps(model: nn.Module) -> list[tuple[str, nn.Module | None]]:
    """Forward-ordered steps of a torchvision VGG/ResNet: (path, module); ``None`` marks ``torch.flatten``."""
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


def cnn_backward(
    model: nn.Module, inputs: Tensor, classes: Callable[[Tensor], Tensor], total: float, collect: Collector
) -> None:
    """Run the forward pass, then walk the CNN backwards, handing relevance at unit sites to ``collect``."""
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
