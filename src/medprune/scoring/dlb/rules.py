"""Vectorised DL-Backtrace (DLB) relevance rules, one function per layer type.

Each rule maps the relevance at a layer's output to the relevance at its input(s), for a whole batch at once, and
mirrors one function of ``dl-backtrace==0.1.24`` in its **default mode on CPU** (the configuration the package's
``run_task(..., mode="default")`` uses: ``Linear_v2/original_version.calculate_wt_fc``,
``Conv2D/refactored_version.calculate_wt_conv``, ``SelfAttention/original_version.calculate_wt_self_attention``,
``Wt_add_equal/refactored_version.calculate_wt_add_equal`` and ``relevance_propagation.align_relevance`` for the layers
the package has no rule for). ``docs/dlb.md`` lists every rule, the package code it mirrors, and where and why medprune
deviates.

A fact that makes the rules cheap: in the default mode the package gives every dense/conv layer the activation
``"None"`` (``activation_dict[name] = "None"`` in ``run_evaluation``), so its saturation branches never run and the
positive/negative split collapses to one proportional rule on magnitudes::

    R_in[i] = sum_j |w_ji x_i| / (sum_k |w_jk x_k| + |b_j|) * R_out[j]

which is ``|x| * (|W|^T (R_out / denominator))``: one matmul/conv for the denominator and one transposed matmul/conv,
never the per-contribution tensor the package materialises.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

#: relative size below which the positive (negative) contribution sum of a linear unit counts as exactly zero
#: (see :func:`linear_rule`); a few float32 roundings of the sums ``(|z| +- z) / 2``.
ZERO_SUM_RTOL = 1e-5


@torch.no_grad()
def linear_rule(relevance: Tensor, x: Tensor, weight: Tensor, bias: Tensor | None, output: Tensor) -> Tensor:
    """DLB rule of a Linear layer (mirrors ``Linear_v2.original_version.calculate_wt_fc``).

    Per output unit j the package sums positive contributions ``P_j`` and negative ones ``N_j`` (magnitude) of
    ``z_ij = w_ji x_i``, replaces an exactly-zero ``P_j`` or ``N_j`` by 1 (its divide-by-zero guard, which also enters
    the denominator), and hands each input ``|z_ij| / (P_j' + N_j' + |b_j|)`` of ``R_j``. The bias share is not passed
    on (relevance shrinks by ``|b_j| / denominator``).

    ``P`` and ``N`` are recovered from the forward output as ``(|x| @ |W|^T +- (output - b)) / 2``; a sum below
    :data:`ZERO_SUM_RTOL` of ``|x| @ |W|^T`` counts as zero (the package tests ``== 0`` on exact sums).

    Args:
        relevance: (..., out_features) relevance at the layer's output.
        x: (..., in_features) the layer's input.
        weight: (out_features, in_features).
        bias: (out_features,) or None.
        output: (..., out_features) the layer's output (``x @ W^T + b``).

    Returns:
        (..., in_features) relevance at the input.
    """
    w_abs = weight.abs()
    x_abs = x.abs()
    magnitude = F.linear(x_abs, w_abs)  # P + N
    signed = output - bias if bias is not None else output  # P - N
    # P <= rtol (P+N) or N <= rtol (P+N)  <=>  |P - N| >= (1 - 2 rtol) (P + N); rare in real layers
    one_sided = signed.abs() >= magnitude * (1 - 2 * ZERO_SUM_RTOL)
    if bool(one_sided.any()):
        positive, negative = (magnitude + signed) * 0.5, (magnitude - signed) * 0.5
        tiny = magnitude * ZERO_SUM_RTOL
        denominator = torch.where(positive <= tiny, 1.0, positive) + torch.where(negative <= tiny, 1.0, negative)
    else:
        denominator = magnitude
    if bias is not None:
        denominator = denominator.add_(bias.abs())
    scaled = torch.div(relevance, denominator, out=denominator)
    return (scaled @ w_abs).mul_(x_abs)


@torch.no_grad()
def conv2d_rule(
    relevance: Tensor,
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int] = (1, 1),
    groups: int = 1,
) -> Tensor:
    """DLB rule of a Conv2d layer (mirrors ``Conv2D.refactored_version.calculate_wt_conv``).

    Per output position and channel: ``R_in[patch] += |w x| / (sum |w x| + |b|) * R_out``, with a denominator of
    exactly 0 replaced by 1e-12 (unlike the linear rule, no ``P, N -> 1`` substitution). Computed as
    ``|x| * conv_transpose(R / (conv(|x|, |W|) + |b|), |W|)``. Dilation and groups are supported (the package ignores
    them; with the defaults 1 the results are the package's).

    Args:
        relevance: (B, C_out, H_out, W_out).
        x: (B, C_in, H, W) the layer's input.
        weight, bias, stride, padding, dilation, groups: the Conv2d's parameters (numeric padding only).

    Returns:
        (B, C_in, H, W) relevance at the input.
    """
    w_abs = weight.abs()
    x_abs = x.abs()
    denominator = F.conv2d(x_abs, w_abs, bias.abs() if bias is not None else None, stride, padding, dilation, groups)
    denominator.masked_fill_(denominator == 0, 1e-12)
    scaled = torch.div(relevance, denominator, out=denominator)
    spread = torch.nn.grad.conv2d_input(x.shape, w_abs, scaled, stride, padding, dilation, groups)
    return spread.mul_(x_abs)


def _resize_axis(r: Tensor, axis: int, size: int) -> Tensor:
    current = r.shape[axis]
    if current == size:
        return r
    if size == 1:
        return r.sum(dim=axis, keepdim=True)
    if current > size and current % size == 0:
        shape = list(r.shape)
        shape[axis : axis + 1] = [size, current // size]
        return r.reshape(shape).sum(dim=axis + 1)
    if size > current and size % current == 0:
        return r.repeat_interleave(size // current, dim=axis)
    return r


def align_rule(relevance: Tensor, input_shape: torch.Size | tuple[int, ...]) -> Tensor:
    """The package's rule for max/avg/adaptive pooling: none; its shape fallback ``align_relevance``.

    The package has no pooling rule: ``max_pool2d``/``avg_pool2d``/``adaptive_avg_pool2d`` nodes fall through to
    ``add_rel -> align_relevance(R_out, input_shape)``, which per spatial axis sums blocks (input smaller by an integer
    factor), repeats each value (input larger by an integer factor), else tiles and crops (``np.tile``), then rescales
    to the original total when the new total is positive. For the usual 2x2/stride-2 max-pool and global average
    pooling this is a uniform spread of each output's relevance over its block (the max-pool's winner is ignored).
    Deviation: the package rescales the whole batch array at once; here every sample is rescaled on its own (equal for
    batch 1, and keeps results batch-size invariant).

    Args:
        relevance: (B, C, h, w) relevance at the pooling output.
        input_shape: (B, C, H, W) shape of the pooling input.

    Returns:
        (B, C, H, W) relevance at the input.
    """
    target = tuple(input_shape)
    r = relevance
    for axis in range(2, r.dim()):
        r = _resize_axis(r, axis, target[axis])
    if tuple(r.shape) != target:
        reps = [1] * r.dim()
        for axis in range(2, r.dim()):
            if r.shape[axis] < target[axis]:
                reps[axis] = -(-target[axis] // r.shape[axis])
        r = r.repeat(*reps)[tuple(slice(0, n) for n in target)]
        if tuple(r.shape) != target:
            raise ValueError(f"cannot align relevance of shape {tuple(relevance.shape)} to {target}")
    before = relevance.flatten(1).sum(1)
    after = r.flatten(1).sum(1)
    positive = after > 0
    scale = torch.where(positive, before / torch.where(positive, after, torch.ones_like(after)), torch.ones_like(after))
    return r * scale.view(-1, *([1] * (r.dim() - 1)))


def add_rule(relevance: Tensor, num_inputs: int = 2) -> Tensor:
    """DLB rule of a residual/element-wise add (mirrors ``Wt_add_equal.refactored_version.calculate_wt_add_equal``).

    Every input receives ``R / num_inputs`` whatever its contribution (no proportional split).
    """
    return relevance / num_inputs


def _stabilize(t: Tensor, epsilon: float) -> Tensor:
    """``SelfAttention.original_version.stabilize``: entries with ``|t| < eps`` become ``eps`` with ``t``'s sign."""
    return torch.where(t.abs() < epsilon, torch.where(t < 0, -epsilon, epsilon), t)


def _conserve_by_magnitude(total: Tensor, t: Tensor, eps: float = 1e-12) -> Tensor:
    """``dlb_style_signed_conserve(R, t)`` in closed form: ``|t| * sum(R) / (sum|t| + eps)`` per (batch, head).

    The package first computes a full relevance tensor ``R`` for Q, K or V, then keeps only its per-head total and
    re-spreads it over the entries in proportion to ``|t|``; only the total is needed, so ``total`` is passed in.
    """
    return t.abs() * (total / (t.abs().sum(dim=(-2, -1), keepdim=True) + eps))


def attention_rule(relevance: Tensor, q: Tensor, k: Tensor, v: Tensor, epsilon: float = 1e-9) -> tuple[Tensor, ...]:
    """DLB rule of scaled dot-product attention (``SelfAttention.original_version.calculate_wt_self_attention``).

    With ``A = softmax(q k^T / sqrt(d))`` (denominator + 1e-9), ``out = A v`` and ``Rn = R / stab(2 out)``:
    ``R_QK = (Rn v^T) * A``; the relevance of V, Q and K are the per-head totals of ``(A^T Rn) * v``,
    ``(R_QK / stab(2 q k^T)) k * q`` and its K analogue, re-spread over the entries in proportion to ``|v|``, ``|q|``,
    ``|k|`` (``dlb_style_signed_conserve``). The totals are computed in closed form (e.g. ``sum((A^T Rn) * v) =
    sum(Rn * out)``), so no (T, T, D) tensor is formed. No attention mask (ViT).

    Args:
        relevance: (B, H, T, D) relevance at the attention output (per head, before heads are merged).
        q, k, v: (B, H, T, D) the attention's inputs.

    Returns:
        ``(R_q, R_k, R_v)``, each (B, H, T, D).
    """
    scale = q.shape[-1] ** 0.5
    qk = q @ k.transpose(-2, -1)
    logits = qk / scale
    a = torch.exp(logits - logits.amax(dim=-1, keepdim=True))
    a = a / (a.sum(dim=-1, keepdim=True) + epsilon)
    out = a @ v
    rn = relevance / _stabilize(out * 2, epsilon)
    total_v = (rn * out).sum(dim=(-2, -1), keepdim=True)
    r_qk = (rn @ v.transpose(-2, -1)) * a
    total_qk = (r_qk * qk / _stabilize(qk * 2, epsilon)).sum(dim=(-2, -1), keepdim=True)
    return _conserve_by_magnitude(total_qk, q), _conserve_by_magnitude(total_qk, k), _conserve_by_magnitude(total_v, v)


def start_relevance(logits: Tensor, classes: Tensor, total: float) -> Tensor:
    """Starting relevance: ``total`` at each sample's class, 0 elsewhere (package: ``calculate_start_wt`` x 100)."""
    start = torch.zeros_like(logits)
    start.scatter_(1, classes.view(-1, 1).to(logits.device), total)
    return start
