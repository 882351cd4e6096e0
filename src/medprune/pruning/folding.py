"""BatchNorm folded into the convolution before it: the same function with one layer fewer (for inference only).

In eval mode a BatchNorm is a fixed per-channel affine map, ``y = (x - mean) / sqrt(var + eps) * gamma + beta``. When
its input is a convolution's output and nothing else reads that output, the map can be moved into the convolution:
``W' = W * s`` (row by row) and ``b' = (b - mean) * s + beta`` with ``s = gamma / sqrt(var + eps)`` (computed in
float64, stored in the layer's dtype). The BatchNorm becomes ``nn.Identity`` (timm's ``BatchNormAct2d``, which applies
its dropout and activation after the normalisation, keeps them: :class:`FoldedNormAct`). On a CPU this removes one
pass over every feature map per folded pair (bench/pruning.py measures what it buys).

Which pairs fold (:func:`batchnorm_pairs`): found from the data flow (``torch.fx``), never from module names; a pair
is a ``Conv1d/2d/3d`` (not transposed) called once whose only consumer is a BatchNorm called once, with running
statistics, as many features as the convolution has outputs, and of a type whose forward is known exactly
(``nn.BatchNorm1d/2d/3d``, timm ``BatchNormAct2d``). A model ``torch.fx`` cannot trace is returned unfolded (logged).

The folded copy computes the unfolded model's eval-mode function up to float rounding (tests: ~1e-5 relative on
float32 models); it is meant for inference. It has a different state dict (no BatchNorm entries, a ``bias`` on every
folded convolution), so a checkpoint of a folded model is rebuilt by folding the freshly built (and, for a pruned
model, shrunk) architecture before ``load_state_dict``: ``fold_batchnorms`` of any model of the same architecture
gives the same modules. ``model.medprune_folded`` lists the folded BatchNorm paths.

>>> import torch
>>> from torch import nn
>>> model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU()).eval()
>>> folded = fold_batchnorms(model)
>>> type(folded[1]).__name__, folded.medprune_folded
('Identity', ['1'])
>>> x = torch.randn(2, 3, 8, 8)
>>> bool(torch.allclose(folded(x), model(x), atol=1e-6))
True
"""

from __future__ import annotations

import copy
import logging

import torch
import torch.fx
from timm.layers import BatchNormAct2d
from torch import Tensor, nn

logger = logging.getLogger(__name__)

__all__ = ["FoldedNormAct", "batchnorm_pairs", "fold_batchnorms"]

_PLAIN_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


class FoldedNormAct(nn.Module):
    """What is left of a timm ``BatchNormAct2d`` once its normalisation is folded: its dropout, then its activation
    (the same attribute names, so their state-dict keys are unchanged)."""

    def __init__(self, drop: nn.Module, act: nn.Module) -> None:
        super().__init__()
        self.drop = drop
        self.act = act

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.drop(x))


class _NormLeafTracer(torch.fx.Tracer):
    """fx tracer keeping every BatchNorm (subclasses included) as one module call."""

    def is_leaf_module(self, module: nn.Module, qualified_name: str) -> bool:
        return isinstance(module, nn.modules.batchnorm._BatchNorm) or super().is_leaf_module(module, qualified_name)


def _foldable_norm(norm: nn.Module, conv: nn.Module) -> bool:
    exact = type(norm) in _PLAIN_NORMS or type(norm) is BatchNormAct2d
    return (
        exact
        and isinstance(conv, _CONVS)
        and norm.track_running_stats
        and norm.running_mean is not None
        and norm.running_var is not None
        and norm.num_features == conv.out_channels
    )


def batchnorm_pairs(model: nn.Module) -> list[tuple[str, str]]:
    """``[(convolution path, BatchNorm path), ...]`` that :func:`fold_batchnorms` folds, in graph order.

    ``[]`` when ``torch.fx`` cannot trace the model (logged), or when it has no foldable pair (see module docstring).
    """
    try:
        graph = _NormLeafTracer().trace(model)
    except Exception as error:  # noqa: BLE001 - any tracing failure means: fold nothing
        logger.info("BatchNorm folding: torch.fx cannot trace %s (%s); nothing folded", type(model).__name__, error)
        return []
    modules = dict(model.named_modules())
    calls: dict[str, int] = {}
    for node in graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    pairs: list[tuple[str, str]] = []
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(modules.get(node.target), _CONVS):
            continue
        users = list(node.users)
        if len(users) != 1 or users[0].op != "call_module" or users[0].args[:1] != (node,):
            continue
        norm = users[0]
        if len(norm.args) != 1 or norm.kwargs or calls[node.target] != 1 or calls[norm.target] != 1:
            continue
        if _foldable_norm(modules[norm.target], modules[node.target]):
            pairs.append((node.target, norm.target))
    return pairs


def _fold_into(conv: nn.Module, norm: nn.Module) -> None:
    """Move ``norm``'s eval-mode affine map into ``conv``'s weight and bias (in place, computed in float64)."""

    def wide(tensor: Tensor | None, fill: float) -> Tensor:
        if tensor is None:
            return torch.full((conv.out_channels,), fill, dtype=torch.float64, device=conv.weight.device)
        return tensor.detach().to(torch.float64)

    with torch.no_grad():
        weight = conv.weight.detach().to(torch.float64)
        scale = torch.rsqrt(wide(norm.running_var, 1.0) + norm.eps) * wide(norm.weight, 1.0)
        bias = (wide(conv.bias, 0.0) - wide(norm.running_mean, 0.0)) * scale + wide(norm.bias, 0.0)
        dtype = conv.weight.dtype
        conv.weight = nn.Parameter((weight * scale.view(-1, *([1] * (weight.dim() - 1)))).to(dtype))
        conv.bias = nn.Parameter(bias.to(dtype))


def fold_batchnorms(model: nn.Module) -> nn.Module:
    """A copy of ``model`` in eval mode with every BatchNorm of :func:`batchnorm_pairs` folded into its convolution.

    Args:
        model: any module (not changed); its BatchNorms' running statistics are what gets folded, so the copy equals
            the model's eval-mode function (a model in train mode normalises by batch statistics instead).

    Returns:
        The folded copy, with ``medprune_folded`` = the folded BatchNorm paths (``[]`` if none); attributes such as
        ``medprune_spec`` and ``medprune_pruned`` are copied with it.
    """
    pairs = batchnorm_pairs(model)
    folded = copy.deepcopy(model).eval()
    for conv_path, norm_path in pairs:
        norm = folded.get_submodule(norm_path)
        _fold_into(folded.get_submodule(conv_path), norm)
        parent_path, _, name = norm_path.rpartition(".")
        parent = folded.get_submodule(parent_path) if parent_path else folded
        tail = FoldedNormAct(norm.drop, norm.act) if isinstance(norm, BatchNormAct2d) else nn.Identity()
        setattr(parent, name, tail)
    folded.medprune_folded = [norm for _, norm in pairs]  # type: ignore[assignment]
    logger.info("BatchNorm folding: %d BatchNorm(s) folded into their convolutions", len(pairs))
    return folded
