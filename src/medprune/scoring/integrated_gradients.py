"""Integrated Gradients at unit level (layer conductance) for every unit group in one batched pass.

For a unit activation ``a`` and the target logit ``F``, conductance along the straight path
``x_α = b + α (x − b)`` from the baseline ``b`` to the input ``x`` is ``∫ ∂F/∂a · da/dα dα``, approximated on
``α_0 = 0 < α_1 < … < α_n = 1`` as ``Σ_k (a(α_k) − a(α_{k−1})) · ½ (∂F/∂a(α_{k−1}) + ∂F/∂a(α_k))`` (trapezoid) and
summed over the unit's positions. For a layer that every path from input to output crosses, the unit scores of one
sample sum to ``F(x) − F(b)`` (completeness) up to the discretisation error.

One forward + one backward pass per chunk of (sample, α) points serves every group at once (captum's
``LayerConductance`` needs one pass per layer). Memory is bounded by ``chunk_size`` points, whatever the number of
steps or samples: the last point of a chunk is carried over to pair with the first point of the next.

Rules: ``trapezoid`` (default) averages the gradients at both ends of each step. ``left`` uses the gradient at the start
of each step only, as captum's ``LayerConductance`` does; with a zero baseline ReLU gradients vanish at ``α = 0``, so
``left`` loses about 1/n of the total (docs/method.md §3). ``gauss_legendre`` evaluates the integrand
``∂F/∂a · da/dα`` itself at the n Gauss-Legendre nodes of ``[0, 1]`` (both ends excluded) and sums it with their
weights: ``da/dα`` comes from forward-mode differentiation along ``x − b`` in the same pass (attention runs on the math
kernel there, the only one with forward-mode derivatives), so one point costs 2-4 trapezoid points (measured at 28
and 224 px), and n nodes integrate a path on which the integrand is a polynomial of degree ≤ 2n − 1 exactly
(bench/ig_quadrature_results.md measures the completeness error per node count).

>>> from medprune.models import create_model
>>> from medprune.models.units import unit_groups
>>> model = create_model("vgg_small", num_classes=2, image_size=32)
>>> r = conductance(model, torch.randn(2, 3, 32, 32), torch.tensor([0, 1]), unit_groups(model), steps=4)
>>> r["features.0"].shape
torch.Size([2, 16])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
import torch.autograd.forward_ad as fwad
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from medprune.data.augmentation import IMAGENET_MEAN, IMAGENET_STD
from medprune.models.units import UnitGroup, capture_activations, units_per_sample
from medprune.scoring.registry import register_scorer

BASELINES: tuple[str, ...] = ("zeros", "black")
RULES: tuple[str, ...] = ("trapezoid", "left", "gauss_legendre")
Rule = Literal["trapezoid", "left", "gauss_legendre"]


def resolve_baseline(
    baseline: str | Tensor,
    inputs: Tensor,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> Tensor:
    """The baseline image(s), broadcast to ``inputs``' shape.

    Args:
        baseline: ``"zeros"`` (all zeros in normalised space, i.e. the dataset-mean image), ``"black"`` (the image of
            zeros *before* normalisation: ``(0 − mean) / std`` per channel) or a tensor broadcastable to ``inputs``.
        inputs: (B, C, H, W) normalised images.
        mean: per-channel normalisation mean (one value, or one per channel), used by ``"black"``. Three values with
            1-channel inputs are averaged (the grey normalisation of :mod:`medprune.data`).
        std: per-channel normalisation std, used by ``"black"``.

    Returns:
        (B, C, H, W) tensor with ``inputs``' dtype and device.
    """
    if isinstance(baseline, Tensor):
        try:
            return baseline.to(inputs.device, inputs.dtype).expand_as(inputs)
        except RuntimeError as error:
            raise ValueError(
                f"baseline tensor of shape {tuple(baseline.shape)} does not broadcast to inputs {tuple(inputs.shape)}"
            ) from error
    if baseline == "zeros":
        return torch.zeros_like(inputs)
    if baseline == "black":
        channels = inputs.shape[1]
        if channels == 1 and len(mean) == 3 and len(std) == 3:  # grey inputs: the data pipeline's mean of the three
            mean, std = (sum(mean) / 3,), (sum(std) / 3,)
        if len(mean) != len(std) or len(mean) not in (1, channels):
            raise ValueError(
                f"baseline='black' needs mean/std with 1 or {channels} values (one per input channel), "
                f"got mean={tuple(mean)}, std={tuple(std)}"
            )
        m = torch.as_tensor(mean, dtype=inputs.dtype, device=inputs.device).view(1, -1, 1, 1)
        s = torch.as_tensor(std, dtype=inputs.dtype, device=inputs.device).view(1, -1, 1, 1)
        return ((0.0 - m) / s).expand_as(inputs)
    raise ValueError(f"baseline must be one of {BASELINES} or a tensor, got {baseline!r}")


def _check_int(name: str, value: object, minimum: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")


def conductance(
    model: nn.Module,
    inputs: Tensor,
    targets: Tensor,
    groups: Sequence[UnitGroup],
    *,
    steps: int = 20,
    baseline: str | Tensor = "zeros",
    chunk_size: int = 16,
    rule: Rule = "trapezoid",
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> dict[str, Tensor]:
    """Layer conductance of every unit of every group, per sample.

    Args:
        model: the classifier, in the mode it should be evaluated in (eval for scoring).
        inputs: (B, C, H, W) normalised images.
        targets: (B,) class whose logit is explained, per sample.
        groups: unit groups to score.
        steps: number of integration steps n (the path is evaluated at n + 1 points, both ends included); for
            ``gauss_legendre`` the number of nodes n (n points, ends excluded).
        baseline: see :func:`resolve_baseline`.
        chunk_size: (sample, α) points per forward/backward pass; bounds memory.
        rule: ``trapezoid``, ``left`` (captum's ``LayerConductance``) or ``gauss_legendre``, see the module
            docstring.
        mean: normalisation mean for ``baseline="black"``.
        std: normalisation std for ``baseline="black"``.

    Returns:
        ``{group.name: Tensor(B, num_units)}`` in the inputs' dtype, detached.
    """
    _check_int("steps", steps, 1)
    _check_int("chunk_size", chunk_size, 1)
    if rule not in RULES:
        raise ValueError(f"rule must be one of {RULES}, got {rule!r}")
    if inputs.dim() != 4:
        raise ValueError(f"inputs must be (B, C, H, W), got shape {tuple(inputs.shape)}")
    groups = list(groups)
    if rule == "gauss_legendre":
        return _gauss_legendre(model, inputs, targets, groups, steps, baseline, chunk_size, mean, std)
    num_samples, num_points = inputs.shape[0], steps + 1
    targets = targets.to(inputs.device).long()
    inputs = inputs.detach()
    base = resolve_baseline(baseline, inputs, mean, std).detach()
    alphas = torch.linspace(0, 1, num_points, dtype=inputs.dtype, device=inputs.device)
    out = {g.name: torch.zeros(num_samples, g.num_units, dtype=inputs.dtype, device=inputs.device) for g in groups}
    carry: tuple[Tensor, dict[str, Tensor], dict[str, Tensor]] | None = None  # last point: sample, acts, grads

    with capture_activations(model, groups, for_backward=True) as store:
        for start in range(0, num_samples * num_points, chunk_size):
            point = torch.arange(start, min(start + chunk_size, num_samples * num_points), device=inputs.device)
            sample, k = point // num_points, point % num_points
            a = alphas[k].view(-1, 1, 1, 1)
            x = (base[sample] + a * (inputs[sample] - base[sample])).requires_grad_(True)
            with torch.enable_grad():
                store.clear()
                logits = model(x)
                missing = [g.name for g in groups if g.name not in store]
                if missing:
                    raise RuntimeError(f"the forward pass did not reach unit groups {missing}")
                acts = [store[g.name] for g in groups]
                picked = logits.gather(1, targets[sample].view(-1, 1)).sum()
                grads = torch.autograd.grad(picked, acts, allow_unused=True)
            acts = [t.detach() for t in acts]
            grads = [torch.zeros_like(t) if gr is None else gr.detach() for t, gr in zip(acts, grads)]
            store.clear()
            same = sample[1:] == sample[:-1]  # step k-1 -> k inside the chunk (not across two samples)
            for g, act, grad in zip(groups, acts, grads):
                if carry is not None and carry[0].item() == sample[0].item():  # the step across the chunk boundary
                    step = _step(g, carry[1][g.name], carry[2][g.name], act[:1], grad[:1], rule)
                    out[g.name].index_add_(0, sample[:1], step)
                step = _step(g, act[:-1], grad[:-1], act[1:], grad[1:], rule)  # views: no copy of the chunk
                out[g.name].index_add_(0, sample[1:][same], step[same])
            carry = (
                sample[-1:],
                {g.name: t[-1:].clone() for g, t in zip(groups, acts)},
                {g.name: t[-1:].clone() for g, t in zip(groups, grads)},
            )
    return out


def gauss_legendre_nodes(num_nodes: int) -> tuple[np.ndarray, np.ndarray]:
    """Gauss-Legendre nodes and weights on ``[0, 1]``: ``∫₀¹ f ≈ Σ w_k f(α_k)``, exact for polynomials of degree up
    to ``2 num_nodes − 1``.

    >>> alphas, weights = gauss_legendre_nodes(2)
    >>> [round(float(a), 4) for a in alphas], [float(w) for w in weights]
    ([0.2113, 0.7887], [0.5, 0.5])
    """
    _check_int("num_nodes", num_nodes, 1)
    nodes, weights = np.polynomial.legendre.leggauss(num_nodes)
    return (nodes + 1) / 2, weights / 2


def _gauss_legendre(
    model: nn.Module,
    inputs: Tensor,
    targets: Tensor,
    groups: list[UnitGroup],
    num_nodes: int,
    baseline: str | Tensor,
    chunk_size: int,
    mean: Sequence[float],
    std: Sequence[float],
) -> dict[str, Tensor]:
    """:func:`conductance` with ``rule="gauss_legendre"``: ``Σ_k w_k · ∂F/∂a(α_k) · da/dα(α_k)`` per unit."""
    num_samples = inputs.shape[0]
    targets = targets.to(inputs.device).long()
    inputs = inputs.detach()
    base = resolve_baseline(baseline, inputs, mean, std).detach()
    nodes, node_weights = gauss_legendre_nodes(num_nodes)
    alphas = torch.as_tensor(nodes, dtype=inputs.dtype, device=inputs.device)
    weights = torch.as_tensor(node_weights, dtype=inputs.dtype, device=inputs.device)
    out = {g.name: torch.zeros(num_samples, g.num_units, dtype=inputs.dtype, device=inputs.device) for g in groups}

    with (
        capture_activations(model, groups, for_backward=True) as store,
        sdpa_kernel(SDPBackend.MATH),
        fwad.dual_level(),
    ):
        for start in range(0, num_samples * num_nodes, chunk_size):
            point = torch.arange(start, min(start + chunk_size, num_samples * num_nodes), device=inputs.device)
            sample, k = point // num_nodes, point % num_nodes
            direction = inputs[sample] - base[sample]  # dx/dα along the straight path
            x = (base[sample] + alphas[k].view(-1, 1, 1, 1) * direction).requires_grad_(True)
            with torch.enable_grad():
                store.clear()
                logits = model(fwad.make_dual(x, direction))
                missing = [g.name for g in groups if g.name not in store]
                if missing:
                    raise RuntimeError(f"the forward pass did not reach unit groups {missing}")
                acts = [store[g.name] for g in groups]
                tangents = [fwad.unpack_dual(t).tangent for t in acts]
                picked = fwad.unpack_dual(logits).primal.gather(1, targets[sample].view(-1, 1)).sum()
                grads = torch.autograd.grad(picked, acts, allow_unused=True)
            store.clear()
            w = weights[k]
            for g, tangent, grad in zip(groups, tangents, grads):
                if grad is None or tangent is None:  # the target does not depend on it, or it does not move
                    continue
                contribution = units_per_sample(g, grad.detach() * tangent.detach())
                out[g.name].index_add_(0, sample, w.view(-1, 1) * contribution)
    return out


def _step(
    group: UnitGroup, act_left: Tensor, grad_left: Tensor, act_right: Tensor, grad_right: Tensor, rule: Rule
) -> Tensor:
    """``(a_right − a_left) · slope`` of each step, summed per unit: (steps, num_units)."""
    slope = grad_left if rule == "left" else 0.5 * (grad_left + grad_right)
    return units_per_sample(group, (act_right - act_left) * slope)


@register_scorer(
    "ig",
    options={
        "steps": 20,
        "baseline": "zeros",
        "chunk_size": 16,
        "rule": "trapezoid",
        "mean": IMAGENET_MEAN,
        "std": IMAGENET_STD,
    },
    description="Integrated Gradients at unit level (layer conductance, trapezoid rule), all groups in one pass",
)
def integrated_gradients(
    model: nn.Module, inputs: Tensor, targets: Tensor, groups: Sequence[UnitGroup], **options: object
) -> dict[str, Tensor]:
    """Registered ``ig`` scorer: :func:`conductance` with the registry's options."""
    return conductance(model, inputs, targets, groups, **options)  # type: ignore[arg-type]
