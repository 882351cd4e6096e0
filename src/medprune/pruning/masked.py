"""Masked pruning, the paper's behaviour (docs/method.md §5): a pruned unit's output is made exactly zero, undoably.

Per unit kind:

- ``conv`` / ``linear``: the unit's weight row (output channel) and bias are zeroed, and so are the scale and shift of
  the BatchNorm that directly follows the layer (if any), so the unit's output is exactly 0 whatever the running
  statistics are.
- ``mlp`` (ViT ``fc1``): the fc1 row and bias are zeroed; GELU(0) = 0, so nothing reaches ``fc2``.
- ``head`` (ViT attention head): the head's q, k and v rows (and biases) of ``attn.qkv`` are zeroed; with v = 0 the
  head's output (attention-weighted v) is exactly 0.

"The BatchNorm that directly follows" is found from the data flow: the model is traced with ``torch.fx`` and a
BatchNorm counts when it is the only consumer of the layer's output. When a model cannot be traced, the fallback rule is
the module registered right after the layer, if it is a BatchNorm with as many features as the layer has outputs (true
of torchvision VGG: conv, bn in ``features``; and ResNet: ``convN``/``bnN``, ``downsample.0``/``downsample.1``).

>>> from medprune.models import create_model
>>> from medprune.pruning.masks import masks_from_scores
>>> from medprune.models.units import unit_groups
>>> model = create_model("vgg_small", num_classes=2, image_size=32)
>>> masks = masks_from_scores({g.name: torch.rand(g.num_units) for g in unit_groups(model)}, 0.5)
>>> with apply_masks(model, masks):
...     _ = model(torch.zeros(1, 3, 32, 32))  # pruned units output exactly 0 here
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping
from types import TracebackType

import torch
import torch.fx
from torch import Tensor, nn

from medprune.models.units import UnitGroup, get_module, unit_groups
from medprune.pruning.masks import validate_scores

logger = logging.getLogger(__name__)

_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def following_batchnorms(model: nn.Module) -> dict[str, str]:
    """``{layer path: BatchNorm path}`` for every Conv2d/Linear whose output goes only into a BatchNorm.

    Traced with ``torch.fx``; if tracing fails, falls back to the registration-order rule (see module docstring).
    """
    try:
        graph = _NormLeafTracer().trace(model)
    except Exception as error:  # noqa: BLE001 - any tracing failure means: use the naming rule
        logger.info("torch.fx could not trace %s (%s); using the module-order rule", type(model).__name__, error)
        return _following_by_order(model)
    modules = dict(model.named_modules())
    pairs: dict[str, str] = {}
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(modules.get(node.target), (nn.Conv2d, nn.Linear)):
            continue
        users = list(node.users)
        if len(users) == 1 and users[0].op == "call_module" and _zeroable_norm(modules.get(users[0].target)):
            pairs[node.target] = users[0].target
    return pairs


class _NormLeafTracer(torch.fx.Tracer):
    """fx tracer keeping BatchNorm subclasses (timm's ``BatchNormAct2d``: BatchNorm, then an activation) as modules."""

    def is_leaf_module(self, module: nn.Module, qualified_name: str) -> bool:
        return isinstance(module, _NORMS) or super().is_leaf_module(module, qualified_name)


def _zeroable_norm(module: nn.Module | None) -> bool:
    """A BatchNorm whose output is 0 when its scale and shift are 0: a plain one, or a subclass whose extra parts
    (timm's ``act`` / ``drop``) map 0 to 0."""
    if not isinstance(module, _NORMS):
        return False
    if type(module) in _NORMS:
        return True
    extras = [getattr(module, name) for name in ("act", "drop") if isinstance(getattr(module, name, None), nn.Module)]
    with torch.no_grad():
        return all(float(part(torch.zeros(1, 1, 1, 1)).abs().max()) == 0.0 for part in extras)


def _following_by_order(model: nn.Module) -> dict[str, str]:
    named = list(model.named_modules())
    pairs: dict[str, str] = {}
    for (name, module), (next_name, next_module) in zip(named, named[1:]):
        if isinstance(module, nn.Conv2d) and isinstance(next_module, _NORMS):
            outputs = module.out_channels
        elif isinstance(module, nn.Linear) and isinstance(next_module, _NORMS):
            outputs = module.out_features
        else:
            continue
        if next_module.num_features == outputs:
            pairs[name] = next_name
    return pairs


def zeroing_plan(
    model: nn.Module, groups: list[UnitGroup], masks: Mapping[str, Tensor], batchnorms: Mapping[str, str]
) -> list[tuple[Tensor, Tensor]]:
    """The (parameter, row indices) pairs to zero so every masked-out unit outputs exactly 0."""
    plan: list[tuple[Tensor, Tensor]] = []

    def add(param: Tensor | None, rows: Tensor) -> None:
        if param is not None and rows.numel():
            plan.append((param, rows))

    for group in groups:
        pruned = (~masks[group.name].to(torch.bool).cpu()).nonzero().flatten()
        if pruned.numel() == 0:
            continue
        if group.kind == "head":
            attn = get_module(model, group.module.rsplit(".", 1)[0])
            check_plain_attention(attn, group)
            width, dim = group.unit_width, attn.qkv.out_features // 3
            within = (pruned[:, None] * width + torch.arange(width)).flatten()
            rows = torch.cat([within + part * dim for part in range(3)])
            add(attn.qkv.weight, rows)
            add(attn.qkv.bias, rows)
            continue
        layer = get_module(model, group.module)
        add(layer.weight, pruned)
        add(layer.bias, pruned)
        if group.kind in ("conv", "linear") and group.module in batchnorms:
            norm = get_module(model, batchnorms[group.module])
            add(norm.weight, pruned)
            add(norm.bias, pruned)
    return plan


def check_plain_attention(attn: nn.Module, group: UnitGroup) -> None:
    """Refuse attention whose heads cannot be pruned one by one (no fused ``qkv``, a gate, or ``scale_norm``).

    Raises:
        NotImplementedError: naming the head group.
    """
    if not hasattr(attn, "qkv") or getattr(attn, "gate", None) is not None:
        raise NotImplementedError(f"{group.name}: only timm attention with a fused qkv and no gate is supported")
    if not isinstance(getattr(attn, "norm", nn.Identity()), nn.Identity):
        raise NotImplementedError(f"{group.name}: attention with scale_norm is not supported (heads would mix)")


class MaskHandle:
    """Undoes :func:`apply_masks`: ``remove()`` (idempotent) or leaving the ``with`` block restores every parameter."""

    def __init__(self, saved: list[tuple[Tensor, Tensor, Tensor]]) -> None:
        self._saved = saved

    @property
    def active(self) -> bool:
        """Whether the masks are still applied."""
        return bool(self._saved)

    def remove(self) -> None:
        """Restore the original values bit for bit (in place: parameter identity and optimiser state are kept)."""
        with torch.no_grad():
            for param, rows, original in reversed(self._saved):
                param[rows] = original
        self._saved = []

    def __enter__(self) -> MaskHandle:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.remove()


def apply_masks(model: nn.Module, masks: Mapping[str, Tensor]) -> MaskHandle:
    """Zero every masked-out unit of ``model`` in place; undo with the returned handle or a ``with`` block.

    Args:
        model: a model built by :func:`medprune.models.create_model` (or any model :func:`unit_groups` knows).
        masks: ``{group.name: BoolTensor(num_units)}`` (True = keep) for every unit group, e.g. from
            :func:`medprune.pruning.masks.masks_from_scores`.

    Returns:
        A :class:`MaskHandle`; also a context manager that restores the parameters on exit, even after an error.
    """
    groups = unit_groups(model)
    validate_scores(masks, groups, what="masks")
    masks = {name: torch.as_tensor(mask) for name, mask in masks.items()}
    for name, mask in masks.items():
        if mask.dtype != torch.bool:
            raise ValueError(f"masks[{name!r}] must be a bool tensor (True = keep), got {mask.dtype}")
    needs_bn = any((~masks[g.name]).any() for g in groups if g.kind in ("conv", "linear"))
    plan = zeroing_plan(model, groups, masks, following_batchnorms(model) if needs_bn else {})
    saved: list[tuple[Tensor, Tensor, Tensor]] = []
    with torch.no_grad():
        for param, rows in plan:
            rows = rows.to(param.device)
            saved.append((param, rows, param[rows].clone()))
            param[rows] = 0
    return MaskHandle(saved)


def mask_model(model: nn.Module, masks: Mapping[str, Tensor]) -> nn.Module:
    """A copy of ``model`` with the masks applied permanently (the original is untouched)."""
    masked = copy.deepcopy(model)
    apply_masks(masked, masks)
    return masked
