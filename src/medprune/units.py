"""Prunable units: which neurons of a model can be scored and removed, under stable names.

A *unit* (docs/method.md §3) is one output channel of a Conv2d, one output feature of a Linear layer (never the final
classifier's), a ViT MLP hidden unit (``fc1`` output) or a ViT attention head. Units of one module form a
:class:`UnitGroup`; every later stage (scoring, masks, surgery) speaks in ``{group.name: tensor}`` dictionaries.

>>> from medprune.models import create_model
>>> groups = unit_groups(create_model("vgg_small", num_classes=2, image_size=32))
>>> groups[0].name, groups[0].kind, groups[0].num_units
('features.0', 'conv', 16)
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

UnitKind = Literal["conv", "linear", "mlp", "head"]
UNIT_KINDS: tuple[UnitKind, ...] = ("conv", "linear", "mlp", "head")


@dataclass(frozen=True)
class UnitGroup:
    """The units carried by one module's activation.

    Attributes:
        name: stable key used in score and mask dictionaries (the module path; ``<attn path>.heads`` for heads).
        module: dotted path of the module whose activation carries the units.
        kind: ``conv`` (channels of a Conv2d output), ``linear`` (features of a Linear output), ``mlp`` (ViT ``fc1``
            output features) or ``head`` (ViT attention heads, read at the input of the attention's ``proj``).
        num_units: number of units.
        site: ``output`` when the activation is the module's output, ``input`` when it is its first input.
        unit_width: activation channels per unit (``head_dim`` for heads, else 1).
    """

    name: str
    module: str
    kind: UnitKind
    num_units: int
    site: Literal["output", "input"] = "output"
    unit_width: int = 1

    @property
    def channel_dim(self) -> int:
        """Dimension of the activation that indexes channels: 1 for NCHW conv maps, -1 for (B, [tokens,] C)."""
        return 1 if self.kind == "conv" else -1


def get_module(model: nn.Module, path: str) -> nn.Module:
    """The submodule at dotted ``path`` (``""`` is the model itself)."""
    return model.get_submodule(path) if path else model


def _classifier_name(model: nn.Module) -> str:
    linears = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    if not linears:
        raise ValueError(f"{type(model).__name__} has no Linear classifier; cannot tell which outputs are logits")
    return linears[-1]


def _is_vit(model: nn.Module) -> bool:
    return hasattr(model, "blocks") and hasattr(model, "patch_embed")


def unit_groups(model: nn.Module, kinds: Sequence[UnitKind] | None = None) -> list[UnitGroup]:
    """All prunable unit groups of ``model``, in forward (registration) order.

    Args:
        model: a CNN (every Conv2d and Linear but the classifier) or a timm ViT (MLP hidden units and heads).
        kinds: keep only these kinds (default: all).

    Returns:
        One :class:`UnitGroup` per module, never including the final classifier.
    """
    if kinds is not None:
        unknown = [k for k in kinds if k not in UNIT_KINDS]
        if unknown:
            raise ValueError(f"unknown unit kinds {unknown}; valid kinds: {', '.join(UNIT_KINDS)}")
    groups: list[UnitGroup] = []
    if _is_vit(model):
        for index, block in enumerate(model.blocks):
            prefix = f"blocks.{index}"
            attn = block.attn
            head_dim = attn.head_dim if hasattr(attn, "head_dim") else attn.proj.in_features // attn.num_heads
            groups.append(UnitGroup(f"{prefix}.attn.heads", f"{prefix}.attn.proj", "head", attn.num_heads, "input",
                                    head_dim))
            groups.append(UnitGroup(f"{prefix}.mlp.fc1", f"{prefix}.mlp.fc1", "mlp", block.mlp.fc1.out_features))
    else:
        classifier = _classifier_name(model)
        for name, module in model.named_modules():
            if isinstance(module, nn.Conv2d):
                groups.append(UnitGroup(name, name, "conv", module.out_channels))
            elif isinstance(module, nn.Linear) and name != classifier:
                groups.append(UnitGroup(name, name, "linear", module.out_features))
    if kinds is not None:
        groups = [g for g in groups if g.kind in kinds]
    return groups


def units_per_sample(group: UnitGroup, activation_like: Tensor) -> Tensor:
    """Reduce an activation-shaped tensor (relevance, activation, gradient product) to one value per sample and unit.

    Sums over every dimension but batch and channel (spatial positions, tokens), then over the channels of a unit.

    Args:
        group: the group the tensor belongs to.
        activation_like: (B, C, H, W) for conv groups, (B, C) or (B, N, C) otherwise.

    Returns:
        (B, group.num_units) tensor.
    """
    x = activation_like
    if group.channel_dim == 1:
        x = x.flatten(2).sum(-1) if x.dim() > 2 else x
    else:
        x = x.flatten(1, -2).sum(1) if x.dim() > 2 else x
    if group.unit_width > 1:
        x = x.reshape(x.shape[0], group.num_units, group.unit_width).sum(-1)
    if x.shape[1] != group.num_units:
        raise ValueError(f"group {group.name!r} has {group.num_units} units but the tensor has {x.shape[1]} channels")
    return x


@contextmanager
def capture_activations(
    model: nn.Module, groups: Sequence[UnitGroup], retain_grad: bool = False
) -> Iterator[dict[str, Tensor]]:
    """Record the activation of every group during forward passes; hooks are removed on exit, even after errors.

    Args:
        model: the model.
        groups: groups to record.
        retain_grad: call ``retain_grad()`` on recorded tensors so ``.grad`` is filled by a backward pass.

    Yields:
        A dict that each forward pass fills with ``{group.name: activation}`` (the latest pass wins).
    """
    store: dict[str, Tensor] = {}
    handles = []

    def recorder(name: str, site: str):  # noqa: ANN202 - hook factory
        def keep(tensor: Tensor) -> None:
            if retain_grad and tensor.requires_grad:
                tensor.retain_grad()
            store[name] = tensor

        if site == "output":
            return lambda _module, _inputs, output: keep(output)
        return lambda _module, inputs: keep(inputs[0])

    try:
        for group in groups:
            module = get_module(model, group.module)
            hook = recorder(group.name, group.site)
            if group.site == "output":
                handles.append(module.register_forward_hook(hook))
            else:
                handles.append(module.register_forward_pre_hook(hook))
        yield store
    finally:
        for handle in handles:
            handle.remove()


def has_hooks(model: nn.Module) -> bool:
    """Whether any module of ``model`` still carries a forward/backward hook (used by tests: nothing left behind)."""
    for module in model.modules():
        if module._forward_hooks or module._forward_pre_hooks or module._backward_hooks:
            return True
        if getattr(module, "_backward_pre_hooks", None):
            return True
    return False


def count_units(groups: Sequence[UnitGroup]) -> int:
    """Total number of units over ``groups``."""
    return sum(g.num_units for g in groups)


def zeros_like_groups(groups: Sequence[UnitGroup], dtype: torch.dtype = torch.float32) -> dict[str, Tensor]:
    """A ``{name: zeros(num_units)}`` dict, handy for accumulators."""
    return {g.name: torch.zeros(g.num_units, dtype=dtype) for g in groups}
