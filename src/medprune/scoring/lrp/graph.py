"""LRP rules per operation over the traced graph of any CNN built from common operations (not only VGG / ResNet).

The model is traced with ``torch.fx`` (convolutions, linear layers, normalisations, activations and pools kept as
modules), every operation of the graph is given a rule, and zennit's composite then runs on the traced module exactly
as on a torchvision VGG / ResNet. zennit propagates relevance itself as the (modified) gradient, so an operation
without a rule of its own passes relevance by its ordinary gradient, which is right only for operations that move
values around (reshapes, indexing, concatenation, max-pooling). Per operation:

- **Conv2d (also grouped and depthwise), Linear**: the composite's rules (z+ / alpha-beta / gamma on convolutions,
  epsilon on linear layers, flat / z-box on the first layer): zennit evaluates them with the layer's own ``forward``,
  so ``groups`` is honoured.
- **BatchNorm directly after a conv or linear layer** (its only consumer): merged into that layer first, as in the
  family path; any other BatchNorm, **LayerNorm / LayerNorm2d / GroupNorm**: pass-through (identity rule; the
  normalisation's scale and shift are treated as constants, conserving relevance).
- **Elementwise activations** (ReLU, ReLU6, SiLU, GELU, Hardswish, Hardsigmoid, Sigmoid, Tanh, ..., as modules or
  functions): pass-through (identity rule), as zennit's composites do for ReLU.
- **Multiplicative gates** (squeeze-excitation ``x * sigmoid(...)``, and ``x * act(x)`` forms): the gate is a constant
  in the backward pass, so all relevance goes to ``x`` and none into the gate's branch (the standard choice).
- **Residual adds** of two equally shaped tensors: split in proportion to each summand (zennit's ``Sum`` with the
  ``Norm`` rule, as the ResNet canonizer does).
- **Average pooling** (modules): ``Norm`` rule (proportional); ``mean`` over positions: its gradient (uniform split).
- **Concatenation, max-pooling, reshapes, indexing, dropout / identity / stochastic depth in eval**: their gradient.

Anything else (softmax, matrix products of two activations, an add of differently shaped tensors, a custom
function) is refused before any work by :func:`graph_blocker`, naming the operation and the module it sits in.

On torchvision VGG and ResNet this graph gives the family path's relevance (tests check it); it runs when
:func:`medprune.models.model_family` is neither ``vgg``, ``resnet`` nor ``vit``.
"""

from __future__ import annotations

import logging
import operator
from collections.abc import Sequence
from typing import Any

import torch
import torch.fx
import torch.nn.functional as F
import torchvision.ops
from torch import Tensor, nn
from zennit.canonizers import MergeBatchNorm, SequentialMergeBatchNorm
from zennit.layer import Sum

from medprune.models.support import register_rule_check
from medprune.models.units import UnitGroup
from medprune.scoring.graph_ops import (
    ADDS,
    ELEMENTWISE_FUNCTIONS,
    ELEMENTWISE_METHODS,
    MULS,
    POOL_FUNCTIONS,
    VALUE_MOVE_METHODS,
    VALUE_MOVES,
    LeafTracer,
    node_location,
    op_name,
)
from medprune.scoring.lrp.backward import composite_relevance

logger = logging.getLogger(__name__)

__all__ = ["ACTIVATIONS_AND_NORMS", "GATE_MODULES", "PASS_MODULES", "graph_blocker", "graph_relevance", "trace_for_lrp"]

#: Leaf modules whose relevance passes unchanged (identity rule) unless the composite has a rule for them.
PASS_MODULES: tuple[type[nn.Module], ...] = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.ELU,
    nn.SiLU,
    nn.GELU,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.Hardtanh,
    nn.Sigmoid,
    nn.Tanh,
    nn.Mish,
    nn.Softplus,
    nn.PReLU,
    nn.modules.batchnorm._BatchNorm,
    nn.LayerNorm,
    nn.GroupNorm,
    nn.Identity,
    nn.Dropout,
    nn.Dropout2d,
    nn.Flatten,
    torchvision.ops.StochasticDepth,
)
#: Of those, the elementwise activations and normalisations (the graph path hooks them with zennit's pass rule).
ACTIVATIONS_AND_NORMS: tuple[type[nn.Module], ...] = tuple(
    m
    for m in PASS_MODULES
    if m not in (nn.Identity, nn.Dropout, nn.Dropout2d, nn.Flatten, torchvision.ops.StochasticDepth)
)
#: Leaf modules whose output, multiplied into another tensor, is a gate (a constant in the backward pass).
GATE_MODULES: tuple[type[nn.Module], ...] = (nn.Sigmoid, nn.Hardsigmoid, nn.Tanh)
_RULE_MODULES: tuple[type[nn.Module], ...] = (
    nn.Conv2d,
    nn.Linear,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool2d,
    nn.MaxPool2d,
    nn.AdaptiveMaxPool2d,
)
_LEAVES = PASS_MODULES + _RULE_MODULES

_ELEMENTWISE = ELEMENTWISE_FUNCTIONS
_ELEMENTWISE_METHODS = ELEMENTWISE_METHODS
_GATE_FUNCTIONS = {torch.sigmoid, F.sigmoid, F.hardsigmoid, torch.tanh, F.tanh}
_GATE_METHODS = {"sigmoid", "sigmoid_", "tanh", "tanh_"}
_ADDS = ADDS
_MULS = MULS
#: Functions and tensor methods that only move values (their gradient conserves relevance); LRP's pooling, an
#: assertion, stochastic depth (identity in eval mode) and size queries pass the same way.
_MOVES = VALUE_MOVES | POOL_FUNCTIONS | {torch._assert, torchvision.ops.stochastic_depth, getattr}
_MOVE_METHODS = VALUE_MOVE_METHODS | {"size", "dim"}


class _PassFn(torch.autograd.Function):
    """Forward: ``output`` (the operation's value); backward: the relevance at the output, unchanged, to ``x``."""

    @staticmethod
    def forward(ctx, x: Tensor, output: Tensor) -> Tensor:  # noqa: ANN001 - autograd signature
        return output.detach()

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:  # noqa: ANN001 - autograd signature
        return grad, None


class PassThrough(nn.Module):
    """``function(x, ...)`` whose relevance passes to ``x`` unchanged (identity rule): an elementwise activation or
    normalisation, or a scaling / shift by a constant."""

    def __init__(self, function: Any) -> None:
        super().__init__()
        self.function = function

    def forward(self, x: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        if not x.requires_grad:
            return self.function(x, *args, **kwargs)
        return _PassFn.apply(x, self.function(x.detach(), *args, **kwargs))


def _passed_method(name: str, x: Tensor, *args: Any, **kwargs: Any) -> Tensor:
    output = getattr(x.detach(), name.rstrip("_"))(*args, **kwargs)
    return _PassFn.apply(x, output) if x.requires_grad else output


def _gated(x: Tensor, gate: Tensor) -> Tensor:
    """``x * gate`` with the gate a constant and all relevance to ``x``; the shapes broadcast as in the model."""
    product = x.detach() * gate.detach()
    if not x.requires_grad:
        return product
    if product.shape != x.shape:  # the gate widens x (rare): relevance reduced back onto x's shape by the gradient
        return x * gate.detach()
    return _PassFn.apply(x, product)


class ProportionalSum(nn.Module):
    """``a + b`` of two equally shaped tensors through zennit's :class:`~zennit.layer.Sum` (so the composite's Norm rule
    splits relevance in proportion to each summand)."""

    def __init__(self) -> None:
        super().__init__()
        self.sum = Sum(dim=0)

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        return self.sum(torch.stack([a, b], dim=0))


def _is_gate(node: Any, modules: dict[str, nn.Module]) -> bool:
    if not isinstance(node, torch.fx.Node):
        return False
    if node.op == "call_module":
        return isinstance(modules[node.target], GATE_MODULES)
    if node.op == "call_function":
        return node.target in _GATE_FUNCTIONS
    return node.op == "call_method" and node.target in _GATE_METHODS


def trace_for_lrp(model: nn.Module, example: Tensor) -> tuple[torch.fx.GraphModule, list[tuple[nn.Module, nn.Module]]]:
    """The model as an fx graph with a rule for every operation, and the (layer, BatchNorm) pairs to merge.

    Args:
        model: the model (not changed; the graph shares its modules).
        example: an input batch (shapes decide which adds are residual sums).

    Returns:
        ``(graph module, [(conv or linear, its BatchNorm), ...])``.

    Raises:
        NotImplementedError: one line naming the first operation without a rule and where it is.
    """
    try:
        graph = LeafTracer(_LEAVES).trace(model)
    except Exception as error:  # noqa: BLE001 - any tracing failure is one refusal
        raise NotImplementedError(
            f"cannot trace {type(model).__name__} with torch.fx ({type(error).__name__}: "
            f"{str(error).splitlines()[0] if str(error) else ''})"
        ) from None
    traced = torch.fx.GraphModule(model, graph)
    modules = dict(traced.named_modules())
    shapes = _shapes(traced, example)
    merges: list[tuple[nn.Module, nn.Module]] = []
    sums = 0
    for node in list(traced.graph.nodes):
        if node.op == "call_module":
            module = modules[node.target]
            if isinstance(module, nn.modules.batchnorm._BatchNorm) and _only_after_layer(node, modules):
                if type(module) in (nn.BatchNorm1d, nn.BatchNorm2d):  # a subclass may do more (timm BatchNormAct2d)
                    merges.append((modules[node.args[0].target], module))
            elif not isinstance(module, _LEAVES):
                raise NotImplementedError(f"no LRP rule for module {type(module).__name__} at {node.target!r}")
        elif node.op == "call_function":
            sums += _rewrite_function(traced, node, modules, shapes, sums)
        elif node.op == "call_method":
            _rewrite_method(traced, node, modules)
    traced.graph.lint()
    traced.recompile()
    return traced, merges


def _shapes(traced: torch.fx.GraphModule, example: Tensor) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}
    interpreter = torch.fx.Interpreter(traced)
    original = interpreter.run_node

    def run_node(node: torch.fx.Node) -> Any:
        value = original(node)
        if isinstance(value, Tensor):
            shapes[node.name] = tuple(value.shape)
        return value

    interpreter.run_node = run_node  # type: ignore[method-assign]
    with torch.no_grad():
        interpreter.run(example)
    return shapes


def _only_after_layer(node: torch.fx.Node, modules: dict[str, nn.Module]) -> bool:
    source = node.args[0] if node.args else None
    return (
        isinstance(source, torch.fx.Node)
        and source.op == "call_module"
        and isinstance(modules[source.target], (nn.Conv2d, nn.Linear))
        and len(source.users) == 1
    )


def _rewrite_function(
    traced: torch.fx.GraphModule,
    node: torch.fx.Node,
    modules: dict[str, nn.Module],
    shapes: dict[str, tuple[int, ...]],
    sums: int,
) -> int:
    """Replace ``node`` by its rule's implementation; return the number of Sum modules added (0 or 1)."""
    target = node.target
    tensors = [a for a in node.args if isinstance(a, torch.fx.Node) and a.name in shapes]
    if not tensors and node.name not in shapes:  # arithmetic on sizes (x.size(1) // groups): no relevance flows
        return 0
    if target in _ADDS and len(tensors) == 2 and not node.kwargs:
        a, b = tensors
        if shapes[a.name] == shapes[b.name] == shapes.get(node.name):
            name = f"lrp_sum_{sums}"
            traced.add_submodule(name, ProportionalSum())
            with traced.graph.inserting_after(node):
                replacement = traced.graph.call_module(name, (a, b))
            node.replace_all_uses_with(replacement)
            traced.graph.erase_node(node)
            return 1
        raise NotImplementedError(
            f"no LRP rule for an add of tensors shaped {shapes[a.name]} and {shapes[b.name]}{node_location(node)}"
        )
    variable = [a for a in tensors if not _constant(a)]
    if target in (*_ADDS, *_MULS, operator.sub, torch.sub, operator.truediv) and len(variable) <= 1:
        _replace(traced, node, target)  # a tensor and a constant (layer scale, shift): relevance stays with the tensor
        return 0
    if target in _MULS and len(tensors) == 2:
        a, b = tensors
        gate, x = (a, b) if _is_gate(a, modules) else (b, a) if _is_gate(b, modules) else (None, None)
        if gate is None and (a is b or _same_source(a, b)):
            gate, x = b, a  # x * act(x) (e.g. swish): the activation's factor is the gate
        if gate is None:
            raise NotImplementedError(f"no LRP rule for a product of two activations{node_location(node)}")
        with traced.graph.inserting_after(node):
            replacement = traced.graph.call_function(_gated, (x, gate))
        node.replace_all_uses_with(replacement)
        traced.graph.erase_node(node)
        return 0
    if target in _ELEMENTWISE:
        _replace(traced, node, target)
        return 0
    if target in _MOVES:
        return 0
    raise NotImplementedError(f"no LRP rule for {op_name(node)}{node_location(node)}")


def _replace(traced: torch.fx.GraphModule, node: torch.fx.Node, function: Any) -> None:
    """Run ``node``'s function through a :class:`PassThrough` module (relevance to its variable operand)."""
    args = list(node.args)
    index = next((i for i, a in enumerate(args) if isinstance(a, torch.fx.Node) and not _constant(a)), None)
    if index is None:
        return  # constants only: no relevance flows here
    if index:  # the variable operand first (add / mul commute; others keep their order through a wrapper)
        if function not in (*_ADDS, *_MULS):
            raise NotImplementedError(
                f"no LRP rule for {op_name(node)} with a constant first operand{node_location(node)}"
            )
        args[0], args[index] = args[index], args[0]
    name = f"lrp_pass_{len([n for n, _ in traced.named_children() if n.startswith('lrp_pass_')])}"
    traced.add_submodule(name, PassThrough(function))
    with traced.graph.inserting_after(node):
        replacement = traced.graph.call_module(name, tuple(args), dict(node.kwargs))
    node.replace_all_uses_with(replacement)
    traced.graph.erase_node(node)


def _constant(node: Any) -> bool:
    """Whether ``node`` depends on parameters / buffers only (a layer scale, a reshaped gamma), not on the input."""
    if not isinstance(node, torch.fx.Node):
        return True
    if node.op == "get_attr":
        return True
    if node.op in ("call_function", "call_method"):
        inputs = [a for a in (*node.args, *node.kwargs.values()) if isinstance(a, torch.fx.Node)]
        return bool(inputs) and all(_constant(a) for a in inputs)
    return False


def _same_source(a: torch.fx.Node, b: torch.fx.Node) -> bool:
    """Whether ``b`` is an elementwise function of ``a`` (``x * act(x)``) or vice versa."""
    return any(isinstance(arg, torch.fx.Node) and arg is a for arg in b.args) or any(
        isinstance(arg, torch.fx.Node) and arg is b for arg in a.args
    )


def _rewrite_method(traced: torch.fx.GraphModule, node: torch.fx.Node, modules: dict[str, nn.Module]) -> None:
    name = node.target
    if name in _MOVE_METHODS:
        return
    if name in _ELEMENTWISE_METHODS:
        with traced.graph.inserting_after(node):
            replacement = traced.graph.call_function(_passed_method, (name, *node.args), dict(node.kwargs))
        node.replace_all_uses_with(replacement)
        traced.graph.erase_node(node)
        return
    if name in ("mul", "mul_", "add", "add_", "div", "sub") and len(node.args) == 2 and _constant(node.args[1]):
        function = getattr(torch, name.rstrip("_"))
        _replace(traced, node, function)
        return
    if name in ("mul", "mul_") and len(node.args) == 2 and isinstance(node.args[1], torch.fx.Node):
        x, gate = node.args
        if _is_gate(gate, modules) or _is_gate(x, modules):
            x, gate = (gate, x) if _is_gate(x, modules) else (x, gate)
            with traced.graph.inserting_after(node):
                replacement = traced.graph.call_function(_gated, (x, gate))
            node.replace_all_uses_with(replacement)
            traced.graph.erase_node(node)
            return
    if name in ("add", "add_") and len(node.args) == 2:
        raise NotImplementedError(f"no LRP rule for the tensor method add{node_location(node)} (use +)")
    raise NotImplementedError(f"no LRP rule for the tensor method {name}{node_location(node)}")


class _MergePairs(MergeBatchNorm):
    """zennit's BatchNorm merge for the (layer, BatchNorm) pairs found in the graph."""

    def __init__(self, pairs: Sequence[tuple[nn.Module, nn.Module]] = ()) -> None:
        super().__init__()
        self.pairs = list(pairs)

    def copy(self) -> _MergePairs:
        return _MergePairs(self.pairs)

    def apply(self, root_module: nn.Module) -> list[MergeBatchNorm]:
        instances = []
        for layer, norm in self.pairs:
            instance = SequentialMergeBatchNorm()  # any concrete MergeBatchNorm; register() does the merge
            instance.register((layer,), norm)
            instances.append(instance)
        return instances


def graph_canonizers(pairs: Sequence[tuple[nn.Module, nn.Module]]) -> list:
    """The canonizers of the graph path: the BatchNorm merges found by :func:`trace_for_lrp`."""
    return [_MergePairs(pairs)]


def graph_blocker(model: nn.Module, image_size: int | None = None) -> str | None:
    """Why the graph path cannot propagate relevance through ``model`` (one line naming the operation and where), or
    ``None`` when every operation has a rule."""
    spec = getattr(model, "medprune_spec", None) or {}
    size = image_size or spec.get("image_size") or 32
    channels = spec.get("in_channels", 3)
    try:
        example = torch.zeros(1, channels, size, size, device=_device(model))
        trace_for_lrp(model, example)
    except NotImplementedError as error:
        return str(error)
    return None


def _device(model: nn.Module) -> torch.device:
    return next((p.device for p in model.parameters()), torch.device("cpu"))


def graph_relevance(
    model: nn.Module,
    inputs: Tensor,
    targets: Tensor,
    groups: Sequence[UnitGroup],
    build_composite: Any,
) -> tuple[dict[str, Tensor], Tensor]:
    """LRP over the traced graph: relevance maps at every group's activation and at the input, one backward pass.

    Args:
        model: a CNN (eval mode) whose every operation has a rule (:func:`graph_blocker`).
        inputs: (B, C, H, W) images. targets: (B,) classes whose logits relevance starts from.
        groups: unit groups read at a module output.
        build_composite: ``canonizers -> zennit composite`` (the chosen rules with the graph's canonizers).

    Returns:
        ``({group.name: activation-shaped relevance}, input relevance (B, C, H, W))``.
    """
    traced, merges = trace_for_lrp(model, inputs[:1].detach())
    composite = build_composite(graph_canonizers(merges))
    x = inputs.detach().clone().requires_grad_(True)
    return composite_relevance(traced, composite, x, targets, groups)


def total_relevance(relevance: Tensor) -> Tensor:
    """Per-sample total of a relevance map (for conservation checks)."""
    return relevance.flatten(1).sum(1) if relevance.dim() > 1 else relevance


register_rule_check("lrp", graph_blocker)
