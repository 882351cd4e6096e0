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
from typing import Literal, NamedTuple

from torch import Tensor, nn

from medprune.models.registry import model_family
from medprune.models.support import check_units

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


def classifier_name(model: nn.Module) -> str:
    """Path of the final classifier: the last Linear module registered; in a model without one (SqueezeNet's
    convolutional head), the last Conv2d registered when its output channels are the model's classes
    (``model.medprune_spec["num_classes"]``, set by ``create_model``)."""
    linears = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    if linears:
        return linears[-1]
    convs = [(name, module) for name, module in model.named_modules() if isinstance(module, nn.Conv2d)]
    classes = (getattr(model, "medprune_spec", None) or {}).get("num_classes")
    if convs and classes is not None and convs[-1][1].out_channels == classes:
        return convs[-1][0]
    last = f"its last Conv2d {convs[-1][0]!r} has {convs[-1][1].out_channels} output channels" if convs else "no Conv2d"
    raise ValueError(
        f"{type(model).__name__} has no Linear classifier and {last}, not the model's {classes or 'unknown'} classes; "
        "cannot tell which outputs are logits (the logits must come from the last Linear, or from the last Conv2d "
        "with num_classes output channels)"
    )


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
    check_units(model)  # refuses, by path, layers whose units cannot be found (nn.MultiheadAttention, ...)
    groups: list[UnitGroup] = []
    if model_family(model) == "vit":
        for index, block in enumerate(model.blocks):
            prefix = f"blocks.{index}"
            attn = block.attn
            head_dim = attn.head_dim if hasattr(attn, "head_dim") else attn.proj.in_features // attn.num_heads
            groups.append(
                UnitGroup(f"{prefix}.attn.heads", f"{prefix}.attn.proj", "head", attn.num_heads, "input", head_dim)
            )
            groups.append(UnitGroup(f"{prefix}.mlp.fc1", f"{prefix}.mlp.fc1", "mlp", block.mlp.fc1.out_features))
    else:
        classifier = classifier_name(model)
        for name, module in model.named_modules():
            if isinstance(module, nn.Conv2d) and name != classifier:
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


class Probe(NamedTuple):
    """A place to read an activation: the ``output`` or first ``input`` of the module at ``module``, kept as ``name``.

    A :class:`UnitGroup` has the same three fields, so groups and probes can be captured alike.
    """

    name: str
    module: str
    site: Literal["output", "input"] = "output"


@contextmanager
def capture_activations(
    model: nn.Module,
    probes: Sequence[UnitGroup | Probe],
    *,
    retain_grad: bool = False,
    detach: bool = False,
    for_backward: bool = False,
) -> Iterator[dict[str, Tensor]]:
    """Record activations during forward passes; hooks are removed on exit, even after errors.

    The one activation capture of medprune (scorers, sample selection and DL-Backtrace all use it).

    Args:
        model: the model.
        probes: unit groups or :class:`Probe` s naming what to record.
        retain_grad: call ``retain_grad()`` on recorded tensors so ``.grad`` is filled by a backward pass.
        detach: record ``tensor.detach()`` (no autograd history kept).
        for_backward: hand the network a clone of each recorded tensor and keep the original, so in-place operations
            downstream (torchvision's ``ReLU(inplace=True)`` right after a conv) can neither overwrite it nor replace
            its autograd node: ``torch.autograd.grad(logit, recorded)`` is then the gradient at that activation.

    Yields:
        A dict that each forward pass fills with ``{probe.name: activation}`` (the latest pass wins).
    """
    store: dict[str, Tensor] = {}
    handles = []

    def keep(name: str, tensor: Tensor) -> Tensor | None:
        if not isinstance(tensor, Tensor):
            store[name] = tensor
            return None
        if retain_grad and tensor.requires_grad:
            tensor.retain_grad()
        store[name] = tensor.detach() if detach else tensor
        return tensor.clone() if for_backward else None

    def output_hook(name: str):  # noqa: ANN202 - hook factory
        return lambda _module, _inputs, output: keep(name, output)

    def input_hook(name: str):  # noqa: ANN202 - hook factory
        def hook(_module: nn.Module, inputs: tuple) -> tuple | None:
            handed = keep(name, inputs[0])
            return None if handed is None else (handed, *inputs[1:])

        return hook

    try:
        for probe in probes:
            module = get_module(model, probe.module)
            if probe.site == "output":
                handles.append(module.register_forward_hook(output_hook(probe.name)))
            else:
                handles.append(module.register_forward_pre_hook(input_hook(probe.name)))
        yield store
    finally:
        for handle in handles:
            handle.remove()
