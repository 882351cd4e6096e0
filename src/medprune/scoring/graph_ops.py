"""The operation vocabulary the two graph paths share (LRP's :mod:`medprune.scoring.lrp.graph` and DL-Backtrace's
:mod:`medprune.scoring.dlb.graph`): which traced functions and tensor methods are elementwise, which only move
values, which are sums and products; a tracer that keeps given module types as leaves; and how a node is named in a
refusal. Each path adds its own rules on top (what a gate is, what it does with pooling)."""

from __future__ import annotations

import operator

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

__all__ = [
    "ADDS",
    "ELEMENTWISE_FUNCTIONS",
    "ELEMENTWISE_METHODS",
    "MULS",
    "POOL_FUNCTIONS",
    "VALUE_MOVES",
    "VALUE_MOVE_METHODS",
    "LeafTracer",
    "node_location",
    "op_name",
]

#: Functions applied element by element (activations) or per channel (normalisations, dropout in eval mode).
ELEMENTWISE_FUNCTIONS = frozenset(
    {
        F.relu,
        F.relu6,
        F.silu,
        F.gelu,
        F.hardswish,
        F.hardsigmoid,
        F.hardtanh,
        F.leaky_relu,
        F.elu,
        F.mish,
        F.softplus,
        torch.relu,
        torch.sigmoid,
        torch.tanh,
        F.sigmoid,
        F.tanh,
        F.layer_norm,
        F.group_norm,
        F.batch_norm,
        F.dropout,
    }
)
#: Tensor methods applied element by element.
ELEMENTWISE_METHODS = frozenset(
    {"relu", "relu_", "sigmoid", "sigmoid_", "tanh", "tanh_", "clamp", "clamp_", "clamp_min"}
)
#: Sums and products of two operands (a residual add, a gate).
ADDS = frozenset({operator.add, operator.iadd, torch.add})
MULS = frozenset({operator.mul, operator.imul, torch.mul})
#: Pooling in functional form.
POOL_FUNCTIONS = frozenset({F.max_pool2d, F.avg_pool2d, F.adaptive_avg_pool2d, F.adaptive_max_pool2d})
#: Functions that only move (or average) values: relevance moves with them.
VALUE_MOVES = frozenset(
    {
        torch.flatten,
        torch.cat,
        torch.concat,
        torch.reshape,
        torch.permute,
        torch.transpose,
        torch.squeeze,
        torch.unsqueeze,
        torch.chunk,
        torch.split,
        operator.getitem,
        F.pad,
        torch.mean,
    }
)
#: Tensor methods that only move (or average) values.
VALUE_MOVE_METHODS = frozenset(
    {
        "view",
        "reshape",
        "flatten",
        "permute",
        "transpose",
        "contiguous",
        "squeeze",
        "unsqueeze",
        "chunk",
        "split",
        "mean",
        "expand_as",
        "view_as",
        "flip",
        "to",
        "type_as",
    }
)


class LeafTracer(torch.fx.Tracer):
    """A torch.fx tracer that keeps modules of the given types whole (one ``call_module`` node each)."""

    def __init__(self, leaves: tuple[type[nn.Module], ...]) -> None:
        super().__init__()
        self.leaves = leaves

    def is_leaf_module(self, module: nn.Module, qualified_name: str) -> bool:
        return isinstance(module, self.leaves) or super().is_leaf_module(module, qualified_name)


def node_location(node: torch.fx.Node) -> str:
    """`` in 'path.of.module'`` for a node traced inside a module (empty at the top level), for refusals."""
    stack = node.meta.get("nn_module_stack") or {}
    path = next(reversed(stack), "") if stack else ""
    return f" in {path!r}" if path else ""


def op_name(node: torch.fx.Node) -> str:
    """The name of a node's function, method or module path."""
    target = node.target
    return target if isinstance(target, str) else getattr(target, "__name__", str(target))
