"""DL-Backtrace rules per operation over the traced graph of any CNN built from common operations.

The model is traced with ``torch.fx`` (convolutions, linear layers, normalisations, activations and pools kept as
modules), one forward pass over the graph records every node's value, and the nodes are then walked in reverse,
each passing its relevance to its inputs by the DLB rule of its operation (:mod:`medprune.scoring.dlb.rules`). This
is how the package itself works (it walks the nodes of a ``torch.export`` graph); medprune's family walks
(:mod:`.cnn`, :mod:`.vit`) stay where they apply, and on torchvision VGG / ResNet this path gives their relevance
(tests check it). Per operation (``docs/dlb.md`` lists the same):

- **Conv2d** (also grouped, depthwise, dilated; ``padding="same"`` when symmetric): :func:`~.rules.conv2d_rule`.
  **Linear**: :func:`~.rules.linear_rule`.
- **BatchNorm (every variant), LayerNorm / LayerNorm2d, GroupNorm, elementwise activations** (ReLU, ReLU6, SiLU,
  GELU, Hardswish, Sigmoid, ..., as modules or functions), **dropout / identity / stochastic depth**: pass-through,
  as the package passes its ``Activation`` and ``Normalization`` nodes (and as the family walk does).
- **Max / average / adaptive pooling** (modules or functions): :func:`~.rules.align_rule`, as in the family walk;
  ``mean`` over positions: uniform split (the package's ``mean`` rule).
- **Residual add** of two equally shaped activations: :func:`~.rules.add_rule` (half to each, the package's
  ``Wt_add_equal``).
- **Product of two activations** (squeeze-excitation ``x * gate``, ``x * sigmoid(x)``): half of the relevance to each
  factor (the package's ``Wt_mul``: ``R * 0.5`` to both), each half summed onto its factor's shape where the factor
  was broadcast (the package's ``align_relevance``), so a gate's branch gets its share.
- **An activation combined with a constant** (layer scale, shift, ``x + 3`` inside a hand-written hardswish): all
  relevance to the activation. The package does this for a factor named ``...weight...`` and otherwise treats the
  constant as a second input (losing half); medprune treats every parameter- or buffer-only operand alike.
- **Concatenation, reshapes, permutes, splits, indexing, padding**: relevance moved with the values (the
  operation's vector-Jacobian product; the package's ``cat`` / ``view`` / ``permute`` / ``slice`` rules, equal for
  the non-negative relevance DLB gives CNNs).

Anything else (an add of differently shaped activations, a product that is not elementwise, softmax, division or
difference of two activations, a custom function) is refused before any work by :func:`graph_blocker`, naming the
operation and the module it sits in.
"""

from __future__ import annotations

import logging
import operator
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.fx
import torchvision.ops
from torch import Tensor, nn

from medprune.models.support import register_rule_check
from medprune.runtime import eval_mode
from medprune.scoring.dlb.rules import add_rule, align_rule, conv2d_rule, linear_rule, start_relevance
from medprune.scoring.dlb.walk import Collector
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
from medprune.scoring.lrp.graph import PASS_MODULES

logger = logging.getLogger(__name__)

__all__ = ["POOL_MODULES", "GraphPlan", "graph_backward", "graph_blocker", "plan_graph"]

#: Pooling modules: the package has no rule for them, its shape fallback ``align_relevance`` spreads relevance.
POOL_MODULES: tuple[type[nn.Module], ...] = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)
_LEAVES = (*PASS_MODULES, nn.Conv2d, nn.Linear, *POOL_MODULES)

# kinds of node: which rule sends its relevance to its inputs
CONV, LINEAR, POOL, PASS, ADD, MUL, SCALE, MOVE, ITEM, NONE = (
    "conv",
    "linear",
    "pool",
    "pass",
    "add",
    "mul",
    "scale",
    "move",
    "item",
    "none",
)

_ELEMENTWISE = ELEMENTWISE_FUNCTIONS | {torchvision.ops.stochastic_depth}  # identity in eval mode
_ELEMENTWISE_METHODS = ELEMENTWISE_METHODS
_POOL_FUNCTIONS = POOL_FUNCTIONS
_ADDS = ADDS
_MULS = MULS
_ARITHMETIC = {*_ADDS, *_MULS, operator.sub, operator.isub, torch.sub, operator.truediv, torch.div}
_ARITHMETIC_METHODS = {"add", "add_", "mul", "mul_", "sub", "sub_", "div", "div_"}
#: Functions and tensor methods that only move values: relevance moves with them (their vector-Jacobian product).
_MOVES = VALUE_MOVES
_MOVE_METHODS = VALUE_MOVE_METHODS
#: Functions whose output is no activation (assertions, sizes): no relevance flows through them.
_INERT = {torch._assert, getattr}


@dataclass
class GraphPlan:
    """A traced model, the value of every node in one forward pass, and the rule (kind) of every node.

    Attributes:
        graph: the traced module (shares the model's parameters).
        values: ``{node: value}`` of the recorded forward pass (conv / linear inputs and linear outputs as they were
            when the layer ran, even where a later in-place operation changed the tensor).
        kinds: ``{node: kind}``, one of ``conv``, ``linear``, ``pool``, ``pass``, ``add``, ``mul``, ``scale``, ``move``,
            ``item``, ``none``.
        constants: the nodes that depend on parameters / buffers only (a layer scale, a reshaped gamma).
        output: the node whose value is the logits.
    """

    graph: torch.fx.GraphModule
    values: dict[torch.fx.Node, Any]
    kinds: dict[torch.fx.Node, str] = field(default_factory=dict)
    constants: set[torch.fx.Node] = field(default_factory=set)
    output: torch.fx.Node | None = None


def _constants(nodes: list[torch.fx.Node]) -> set[torch.fx.Node]:
    """The nodes (in forward order) that depend on parameters / buffers only, not on the input."""
    found: set[torch.fx.Node] = set()
    for node in nodes:
        if node.op == "get_attr":
            found.add(node)
        elif node.op in ("call_function", "call_method"):
            inputs: list[torch.fx.Node] = []
            torch.fx.node.map_arg((node.args, node.kwargs), inputs.append)
            if inputs and all(a in found for a in inputs):
                found.add(node)
    return found


def _carries(value: Any) -> bool:
    """Whether a value can carry relevance: a floating-point tensor, or a tuple / list of them (split, chunk)."""
    if isinstance(value, Tensor):
        return value.is_floating_point()
    return isinstance(value, tuple | list) and any(isinstance(v, Tensor) and v.is_floating_point() for v in value)


def _variables(node: torch.fx.Node, plan: GraphPlan) -> list[torch.fx.Node]:
    """The operands of ``node`` that are activations (input-dependent floating-point tensors), in argument order."""
    found: list[torch.fx.Node] = []
    torch.fx.node.map_arg(
        (node.args, node.kwargs),
        lambda a: (
            found.append(a) if _carries(plan.values.get(a)) and a not in plan.constants and a not in found else None
        ),
    )
    return found


def _mutators(node: torch.fx.Node, modules: dict[str, nn.Module]) -> bool:
    """Whether a user of ``node`` may change its value in place (``x += y``, ``relu_``, ``ReLU(inplace=True)``)."""
    for user in node.users:
        if not user.args or user.args[0] is not node:
            continue
        if user.op == "call_module" and getattr(modules[user.target], "inplace", False):
            return True
        if user.op == "call_function" and (
            user.target in (operator.iadd, operator.imul, operator.isub) or user.kwargs.get("inplace")
        ):
            return True
        if user.op == "call_method" and isinstance(user.target, str) and user.target.endswith("_"):
            return True
    return False


def _conv_padding(module: nn.Conv2d, path: str) -> tuple[int, int]:
    """The numeric padding of a zero-padded Conv2d (``"valid"``, symmetric ``"same"`` converted); else refused."""
    if module.padding_mode != "zeros":
        raise NotImplementedError(f"no DLB rule for Conv2d with padding_mode={module.padding_mode!r} at {path!r}")
    if not isinstance(module.padding, str):
        return tuple(module.padding)  # type: ignore[return-value]
    if module.padding == "valid":
        return (0, 0)
    totals = [d * (k - 1) for d, k in zip(module.dilation, module.kernel_size, strict=True)]
    if any(t % 2 for t in totals):
        raise NotImplementedError(f"no DLB rule for Conv2d with asymmetric padding='same' at {path!r}")
    return (totals[0] // 2, totals[1] // 2)


def _kind(node: torch.fx.Node, modules: dict[str, nn.Module], plan: GraphPlan) -> str:
    """The rule of ``node``; one line naming the operation and where it is when it has none."""
    if node.op in ("placeholder", "get_attr", "output"):
        return NONE
    if node.op == "call_module":
        module = modules[node.target]
        if isinstance(module, nn.Conv2d):
            _conv_padding(module, node.target)
            return CONV
        if isinstance(module, nn.Linear):
            return LINEAR
        if isinstance(module, POOL_MODULES):
            return POOL
        if isinstance(module, PASS_MODULES):
            return PASS
        raise NotImplementedError(f"no DLB rule for module {type(module).__name__} at {node.target!r}")
    values = plan.values
    if node.target in _INERT or not _carries(values.get(node)) or node in plan.constants:
        return NONE  # arithmetic on sizes, assertions, parameter-only expressions: no relevance flows here
    variables = _variables(node, plan)
    if not variables:
        return NONE
    target = node.target
    if node.op == "call_function":
        if target in _ARITHMETIC:
            return _arithmetic(node, target in _ADDS, target in _MULS, variables, values)
        if target in _ELEMENTWISE:
            return _single(node, variables, PASS)
        if target in _POOL_FUNCTIONS:
            return POOL
        if target is operator.getitem and isinstance(values.get(node.args[0]), tuple | list):
            return ITEM
        if target in _MOVES:
            return MOVE
        raise NotImplementedError(f"no DLB rule for {op_name(node)}{node_location(node)}")
    # call_method
    if target in _MOVE_METHODS:
        return MOVE
    if target in _ELEMENTWISE_METHODS:
        return _single(node, variables, PASS)
    if target in _ARITHMETIC_METHODS:
        name = target.rstrip("_")
        return _arithmetic(node, name == "add", name == "mul", variables, values)
    raise NotImplementedError(f"no DLB rule for the tensor method {op_name(node)}{node_location(node)}")


def _single(node: torch.fx.Node, variables: list[torch.fx.Node], kind: str) -> str:
    if len(variables) != 1:
        raise NotImplementedError(
            f"no DLB rule for {op_name(node)} of {len(variables)} activations{node_location(node)}"
        )
    return kind


def _arithmetic(
    node: torch.fx.Node, add: bool, mul: bool, variables: list[torch.fx.Node], values: dict[torch.fx.Node, Any]
) -> str:
    if len(variables) == 1:
        return SCALE  # with constants (x * scale, x + shift, c - x): elementwise in x, relevance passes to it
    if len(variables) > 2:
        raise NotImplementedError(
            f"no DLB rule for {op_name(node)} of {len(variables)} activations{node_location(node)}"
        )
    a, b = (tuple(values[v].shape) for v in variables)
    if add:
        if a == b == tuple(values[node].shape):
            return ADD
        raise NotImplementedError(f"no DLB rule for an add of activations shaped {a} and {b}{node_location(node)}")
    if mul:
        return MUL
    raise NotImplementedError(f"no DLB rule for {op_name(node)} of two activations{node_location(node)}")


def _trace(model: nn.Module) -> torch.fx.GraphModule:
    try:
        graph = LeafTracer(_LEAVES).trace(model)
    except Exception as error:  # noqa: BLE001 - any tracing failure is one refusal
        first = str(error).splitlines()[0] if str(error) else ""
        raise NotImplementedError(
            f"cannot trace {type(model).__name__} with torch.fx ({type(error).__name__}: {first})"
        ) from None
    return torch.fx.GraphModule(model, graph)


class _Recorder(torch.fx.Interpreter):
    """Runs the graph and keeps every node's value; copies those the rules need before an in-place op changes them."""

    def __init__(self, graph: torch.fx.GraphModule, protect: set[torch.fx.Node]) -> None:
        super().__init__(graph, garbage_collect_values=False)
        self.protect = protect
        self.values: dict[torch.fx.Node, Any] = {}

    def run_node(self, node: torch.fx.Node) -> Any:
        value = super().run_node(node)
        self.values[node] = value.clone() if node in self.protect and isinstance(value, Tensor) else value
        return value


def plan_graph(model: nn.Module, inputs: Tensor) -> GraphPlan:
    """Trace ``model``, run it on ``inputs`` recording every node's value, and give every node its DLB rule.

    Args:
        model: the model, in the mode it should run in (eval for scoring); not changed.
        inputs: (B, C, H, W) on the model's device.

    Returns:
        The :class:`GraphPlan`.

    Raises:
        NotImplementedError: one line naming the first operation without a DLB rule and where it is.
    """
    traced = _trace(model)
    modules = dict(traced.named_modules())
    nodes = list(traced.graph.nodes)
    protect: set[torch.fx.Node] = set()
    called: set[str] = set()
    for node in nodes:
        if node.op == "call_module" and isinstance(modules[node.target], nn.Conv2d | nn.Linear):
            if node.target in called:  # its units would be read at two activations
                raise NotImplementedError(
                    f"no DLB rule for a {type(modules[node.target]).__name__} called more than once "
                    f"({node.target!r}, shared weights)"
                )
            called.add(node.target)
            needed = [node.args[0], node] if isinstance(modules[node.target], nn.Linear) else [node.args[0]]
            protect.update(n for n in needed if isinstance(n, torch.fx.Node) and _mutators(n, modules))
    recorder = _Recorder(traced, protect)
    with torch.no_grad():
        recorder.run(inputs)
    plan = GraphPlan(traced, recorder.values, constants=_constants(nodes))
    for node in nodes:
        plan.kinds[node] = _kind(node, modules, plan)
        if node.op == "output":
            result = node.args[0]
            if not isinstance(result, torch.fx.Node) or not isinstance(plan.values.get(result), Tensor):
                raise NotImplementedError(
                    f"DLB needs a model returning one logits tensor, {type(model).__name__} does not"
                )
            plan.output = result
    return plan


def _fit(relevance: Tensor, shape: torch.Size) -> Tensor:
    """Relevance on an operand's shape: unchanged, reshaped (flatten), or summed over the axes it was broadcast on."""
    if relevance.shape == shape:
        return relevance
    if relevance.numel() == shape.numel() and relevance.shape[0] == shape[0]:
        return relevance.reshape(shape)
    return relevance.sum_to_size(shape)


def _vjp(node: torch.fx.Node, plan: GraphPlan, relevance: Any) -> list[tuple[torch.fx.Node, Any]]:
    """Move relevance backwards through a value-moving operation: its vector-Jacobian product (shapes only matter).
    An operand that is a tuple (``torch.cat(x.chunk(2))``) gets ``{index: relevance}``."""
    leaves: dict[tuple[torch.fx.Node, int | None], Tensor] = {}

    def leaf(a: torch.fx.Node, index: int | None, v: Any) -> Any:
        if not isinstance(v, Tensor) or not v.is_floating_point():
            return v
        if (a, index) not in leaves:
            leaves[(a, index)] = v.detach().requires_grad_(True)
        return leaves[(a, index)]

    def value(a: torch.fx.Node) -> Any:
        v = plan.values[a]
        if a in plan.constants:
            return v
        if isinstance(v, tuple | list):
            return type(v)(leaf(a, i, item) for i, item in enumerate(v))
        return leaf(a, None, v)

    args = torch.fx.node.map_arg(node.args, value)
    kwargs = torch.fx.node.map_arg(node.kwargs, value)
    with torch.enable_grad():
        if node.op == "call_method":
            out = getattr(args[0], node.target)(*args[1:], **kwargs)
        else:
            out = node.target(*args, **kwargs)
    outputs = list(out) if isinstance(out, tuple | list) else [out]
    grads = relevance if isinstance(relevance, dict) else {0: relevance}
    pairs = [(outputs[i], r) for i, r in grads.items() if isinstance(outputs[i], Tensor) and outputs[i].requires_grad]
    if not pairs or not leaves:
        return {}
    found = torch.autograd.grad([o for o, _ in pairs], list(leaves.values()), [r for _, r in pairs], allow_unused=True)
    return [(a, g if i is None else {i: g}) for (a, i), g in zip(leaves, found, strict=True) if g is not None]


def _backward(
    plan: GraphPlan, node: torch.fx.Node, modules: dict[str, nn.Module], relevance: Any
) -> list[tuple[torch.fx.Node, Any]]:
    """``[(input node, its share of the relevance), ...]`` by the rule of ``node``'s operation."""
    kind, values = plan.kinds[node], plan.values
    if kind == CONV:
        module = modules[node.target]
        x = node.args[0]
        padding = _conv_padding(module, node.target)
        weight, bias = module.weight, module.bias
        return [
            (x, conv2d_rule(relevance, values[x], weight, bias, module.stride, padding, module.dilation, module.groups))
        ]
    if kind == LINEAR:
        module = modules[node.target]
        x = node.args[0]
        return [(x, linear_rule(relevance, values[x], module.weight, module.bias, values[node]))]
    if kind == POOL:
        x = node.args[0]
        return [(x, align_rule(relevance, values[x].shape))]
    if kind == ITEM:
        return [(node.args[0], {node.args[1]: relevance})]
    if kind == MOVE:
        return _vjp(node, plan, relevance)
    variables = _variables(node, plan) if node.op != "call_module" else [node.args[0]]
    if kind in (PASS, SCALE):
        return [(variables[0], _fit(relevance, values[variables[0]].shape))]
    if kind == ADD:
        half = add_rule(relevance, 2)
        return [(v, half) for v in variables]
    if kind == MUL:  # the package's Wt_mul: half to each factor
        half = relevance * 0.5
        return [(v, _fit(half, values[v].shape)) for v in variables]
    return []


def _accumulate(store: dict[torch.fx.Node, Any], node: torch.fx.Node, relevance: Any) -> None:
    if isinstance(relevance, dict):  # one item of a tuple output
        items = store.setdefault(node, {})
        for index, r in relevance.items():
            items[index] = r if index not in items else items[index] + r
    else:
        store[node] = relevance if node not in store else store[node] + relevance


def graph_backward(
    model: nn.Module, inputs: Tensor, classes: Callable[[Tensor], Tensor], total: float, collect: Collector
) -> None:
    """Run the forward pass over the traced graph, then walk its nodes backwards, handing relevance at unit sites to
    ``collect`` (same contract as :func:`medprune.scoring.dlb.cnn.cnn_backward`). Units are read at module outputs.

    Raises:
        NotImplementedError: an operation without a DLB rule (one line naming it), or a unit group not read at the
            output of a module the graph calls.
    """
    plan = plan_graph(model, inputs)
    modules = dict(plan.graph.named_modules())
    calls = {node.target: node for node in plan.graph.graph.nodes if node.op == "call_module"}
    sites: dict[torch.fx.Node, str] = {}
    for module, site in collect.by_site:
        if site != "output" or module not in calls:
            raise NotImplementedError(f"DLB (rules per operation) reads units at module outputs; not at {module!r}")
        sites[calls[module]] = module
    logits = plan.values[plan.output]
    relevance: dict[torch.fx.Node, Any] = {plan.output: start_relevance(logits, classes(logits), total)}
    for node in reversed(list(plan.graph.graph.nodes)):
        r = relevance.pop(node, None)
        if node in sites:
            value = plan.values[node]
            collect(sites[node], "output", r if r is not None else torch.zeros_like(value))
            if collect.done:
                return
        if r is None or plan.kinds[node] == NONE:
            continue
        for source, share in _backward(plan, node, modules, r):
            if plan.kinds.get(source, NONE) != NONE:  # inputs and parameters absorb what reaches them
                _accumulate(relevance, source, share)


def graph_blocker(model: nn.Module, image_size: int | None = None) -> str | None:
    """Why the DLB graph path cannot propagate relevance through ``model`` (one line naming the operation and where),
    or ``None`` when every operation has a rule. Runs one forward pass on a blank image (eval mode)."""
    spec = getattr(model, "medprune_spec", None) or {}
    size = image_size or spec.get("image_size") or 32
    channels = spec.get("in_channels", 3)
    weight = next((p for p in model.parameters() if p.is_floating_point()), torch.zeros(()))
    example = torch.zeros(1, channels, size, size, device=weight.device, dtype=weight.dtype)
    try:
        with eval_mode(model):
            plan_graph(model, example)
    except NotImplementedError as error:
        return str(error)
    except RuntimeError as error:  # the traced graph does not run on a blank image of the model's size
        first = str(error).splitlines()[0] if str(error) else ""
        return f"cannot run {type(model).__name__} traced by torch.fx on a {tuple(example.shape)} image ({first})"
    return None


register_rule_check("dlb", graph_blocker)
