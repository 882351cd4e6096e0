"""Control criteria every interpretability-based pruning claim must beat (docs/method.md §3, beyond the paper).

All follow the scoring contract of :mod:`medprune.scoring.registry`:

- ``random``: uniform [0, 1) scores from the registry's seeded ``generator`` (data-free).
- ``magnitude``: L1 norm of each unit's incoming weights (data-free): a conv filter, a Linear row, the fc1 row of a
  ViT MLP unit, and for a ViT head the q, k and v rows of ``attn.qkv`` that produce it. Biases are not counted.
- ``activation``: the unit's mean activation over positions (spatial positions, tokens; and over the ``head_dim``
  channels of a head), per sample; summed over samples by :func:`medprune.scoring.registry.score`. The activation is
  read where the unit lives (conv / Linear output, before BatchNorm and ReLU; head = input of ``attn.proj``), so it is
  signed; ``sign="abs"`` takes the absolute value of the summed means.
- ``taylor``: first-order Taylor criterion |a · ∂F/∂a| with F the target logit, taken **per position** (absolute value
  of each position's product), then summed over the unit's positions (and head channels), per sample.

>>> from medprune.models import create_model
>>> from medprune.scoring.registry import score
>>> model = create_model("vit_small", num_classes=2, image_size=32)
>>> s = score(model, torch.randn(2, 3, 32, 32), torch.tensor([0, 1]), method="magnitude")
>>> s["blocks.0.attn.heads"].shape, s["blocks.0.mlp.fc1"].shape
(torch.Size([4]), torch.Size([512]))
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from medprune.models.units import UnitGroup, capture_activations, get_module, units_per_sample
from medprune.scoring.registry import register_scorer


@register_scorer("random", data_free=True, description="uniform random scores (seeded): the floor to beat")
def random_scores(
    model: nn.Module, inputs: Tensor, targets: Tensor, groups: Sequence[UnitGroup], *, generator: torch.Generator
) -> dict[str, Tensor]:
    """One uniform [0, 1) score per unit, drawn from ``generator`` group after group."""
    return {g.name: torch.rand(g.num_units, generator=generator, dtype=torch.float64) for g in groups}


def _head_qkv_rows(attn: nn.Module, num_heads: int) -> Tensor:
    """(num_heads,) L1 of the q, k and v rows of ``attn.qkv`` feeding each head (timm layout: [q | k | v] × heads)."""
    weight = attn.qkv.weight.detach()
    dim = weight.shape[0] // 3
    head_dim = dim // num_heads
    rows = torch.linalg.vector_norm(weight, ord=1, dim=1, dtype=torch.float64)
    return rows.reshape(3, num_heads, head_dim).sum((0, 2))


@register_scorer("magnitude", data_free=True, description="L1 norm of each unit's weights (filter, row, head q/k/v)")
def magnitude_scores(
    model: nn.Module, inputs: Tensor, targets: Tensor, groups: Sequence[UnitGroup], *, generator: torch.Generator
) -> dict[str, Tensor]:
    """L1 norm of every unit's incoming weights (see the module docstring)."""
    scores: dict[str, Tensor] = {}
    for g in groups:
        module = get_module(model, g.module)
        if g.kind == "head":
            attn = get_module(model, g.module.rsplit(".", 1)[0])
            if not hasattr(attn, "qkv"):
                raise NotImplementedError(f"magnitude of heads needs a fused attn.qkv Linear; {g.name!r} has none")
            scores[g.name] = _head_qkv_rows(attn, g.num_units)
        elif isinstance(module, (nn.Conv2d, nn.Linear)):
            weight = module.weight.detach().flatten(1)
            scores[g.name] = torch.linalg.vector_norm(weight, ord=1, dim=1, dtype=torch.float64)
        else:
            raise NotImplementedError(f"magnitude does not know unit group {g.name!r} ({type(module).__name__})")
    return scores


def _positions(group: UnitGroup, activation: Tensor) -> int:
    """Number of positions (and head channels) a unit's value is summed over by ``units_per_sample``."""
    if group.channel_dim == 1:
        spatial = activation.shape[2:]
    else:
        spatial = activation.shape[1:-1]
    return math.prod(spatial) * group.unit_width


@register_scorer("activation", description="mean activation of each unit over positions (signed), per sample")
def activation_scores(
    model: nn.Module, inputs: Tensor, targets: Tensor, groups: Sequence[UnitGroup]
) -> dict[str, Tensor]:
    """Per sample, the mean of each unit's activation over its positions: ``{name: (B, num_units)}``."""
    with torch.no_grad(), capture_activations(model, groups, for_backward=True) as store:
        model(inputs)
        return {g.name: units_per_sample(g, store[g.name]) / _positions(g, store[g.name]) for g in groups}


@register_scorer("taylor", description="first-order Taylor |activation x gradient| of the target logit, per position")
def taylor_scores(model: nn.Module, inputs: Tensor, targets: Tensor, groups: Sequence[UnitGroup]) -> dict[str, Tensor]:
    """Per sample, Σ over a unit's positions of |a · ∂F/∂a| with F the target logit: ``{name: (B, num_units)}``."""
    groups = list(groups)
    x = inputs.detach().requires_grad_(True)
    with torch.enable_grad(), capture_activations(model, groups, for_backward=True) as store:
        logits = model(x)
        acts = [store[g.name] for g in groups]
        picked = logits.gather(1, targets.to(logits.device).long().view(-1, 1)).sum()
        grads = torch.autograd.grad(picked, acts, allow_unused=True)
    scores = {}
    for g, act, grad in zip(groups, acts, grads):
        product = torch.zeros_like(act) if grad is None else (act.detach() * grad).abs()
        scores[g.name] = units_per_sample(g, product)
    return scores
