"""LRP for timm Vision Transformers: CP-LRP / AttnLRP rules as a modified forward pass (no change to the model).

The rules of Achtibat et al. 2024 ("AttnLRP") are written as a forward pass whose *gradient x input* is the LRP
relevance (the formulation LXT uses): every tensor ``t`` on the way carries relevance ``t * dlogit/dt``. The forward
values equal the model's own (up to rounding); only what autograd sees changes:

- **Linear layers / patch embedding** (epsilon rule): the gradient arriving at a layer output ``z`` is multiplied by
  ``z / (z + epsilon * sign(z))``; biases keep the share of relevance they contribute (they absorb it).
- **LayerNorm**: the normalisation scale (the standard deviation) is treated as a constant; the centring, an
  ordinary linear map, keeps its gradient: an identity rule on the centred input.
- **GELU** (any elementwise activation): identity rule, ``act(x) = x * (act(x) / x)`` with the ratio constant.
- **Attention**, ``cp_lrp`` (default): the attention weights are constants, so relevance flows only through the values
  (softmax and queries/keys get none). ``attnlrp``: the softmax keeps its gradient (AttnLRP's softmax rule is its
  gradient x input) and both matrix products use the uniform rule (each operand gets half the relevance).
- **Residual adds, token pooling, pos-embedding add**: plain gradient, i.e. relevance split in proportion to each
  summand's contribution (the position embedding and class token absorb their share).

The attention is computed explicitly (never with fused SDPA), so the ``fused_attn`` flags are neither needed nor
touched, and no module, hook or global is modified: the model is only *called* module by module.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medprune.models.units import UnitGroup
from medprune.scoring.lrp.targets import check_targets


class _EpsilonGrad(torch.autograd.Function):
    """Identity forward; backward scales the gradient by ``z / (z + eps * sign(z))`` (epsilon rule, sign(0) = +1)."""

    @staticmethod
    def forward(ctx, z: Tensor, epsilon: float) -> Tensor:  # noqa: ANN001 - autograd signature
        ctx.save_for_backward(z)
        ctx.epsilon = epsilon
        return z.view_as(z)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:  # noqa: ANN001 - autograd signature
        (z,) = ctx.saved_tensors
        stabilised = z + ctx.epsilon * torch.where(z >= 0, 1.0, -1.0).to(z)
        return grad * (z / stabilised), None


class _ScaleGrad(torch.autograd.Function):
    """Identity forward; backward multiplies the gradient by a constant (uniform rule: 0.5 per matmul operand)."""

    @staticmethod
    def forward(ctx, x: Tensor, factor: float) -> Tensor:  # noqa: ANN001 - autograd signature
        ctx.factor = factor
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:  # noqa: ANN001 - autograd signature
        return grad * ctx.factor, None


def _epsilon(z: Tensor, epsilon: float) -> Tensor:
    return _EpsilonGrad.apply(z, epsilon) if epsilon > 0 else z


def _norm(module: nn.Module, x: Tensor) -> Tensor:
    """LayerNorm with its scale treated as constant (identity on the centred input); ``Identity`` passes through."""
    if isinstance(module, nn.Identity):
        return x
    if not isinstance(module, nn.LayerNorm):
        raise NotImplementedError(f"ViT LRP supports LayerNorm or Identity norms, got {type(module).__name__}")
    dims = tuple(range(-len(module.normalized_shape), 0))
    centred = x - x.mean(dim=dims, keepdim=True)
    scale = (centred.pow(2).mean(dim=dims, keepdim=True) + module.eps).sqrt().detach()
    y = centred / scale
    if module.weight is not None:
        y = y * module.weight
    if module.bias is not None:
        y = y + module.bias
    return y


def _activation(module: nn.Module, x: Tensor) -> Tensor:
    """Identity rule for an elementwise activation: ``x * ratio`` with ``ratio = act(x) / x`` held constant."""
    with torch.no_grad():
        if isinstance(module, nn.GELU) and module.approximate == "none":
            ratio = 0.5 * (1.0 + torch.erf(x / math.sqrt(2.0)))  # GELU(x) = x * Phi(x)
        else:
            y = module(x)
            ratio = torch.where(x != 0, y / torch.where(x != 0, x, torch.ones_like(x)), torch.zeros_like(x))
    return x * ratio


def _check_supported(model: nn.Module) -> None:
    problems = []
    if getattr(model, "attn_pool", None) is not None:
        problems.append("attention pooling (global_pool='map')")
    patch_embed = model.patch_embed
    if not getattr(patch_embed, "flatten", False) or getattr(patch_embed, "dynamic_img_pad", False):
        problems.append("a patch embedding that does not flatten to tokens (or pads dynamically)")
    for index, block in enumerate(model.blocks):
        if type(block).__name__ != "Block" or type(block.mlp).__name__ != "Mlp":
            problems.append(f"blocks.{index} is {type(block).__name__} with {type(block.mlp).__name__}")
        elif getattr(block.attn, "gate", None) is not None:
            problems.append(f"blocks.{index}.attn is gated")
    if problems:
        raise NotImplementedError(
            "ViT LRP supports timm VisionTransformer with standard Block/Mlp; found " + "; ".join(problems)
        )


def _attention(attn: nn.Module, x: Tensor, rules: str, epsilon: float, record: dict[str, Tensor], path: str) -> Tensor:
    batch, tokens, _ = x.shape
    qkv = _epsilon(attn.qkv(x), epsilon)
    qkv = qkv.reshape(batch, tokens, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)
    q, k = _norm(attn.q_norm, q), _norm(attn.k_norm, k)
    logits = (q * attn.scale) @ k.transpose(-2, -1)
    if rules == "cp_lrp":
        out = attn.attn_drop(logits.softmax(dim=-1).detach()) @ v
    else:  # attnlrp: uniform rule on both products, gradient x input on softmax
        weights = attn.attn_drop(_ScaleGrad.apply(logits, 0.5).softmax(dim=-1))
        out = _ScaleGrad.apply(weights @ v, 0.5)
    out = _norm(attn.norm, out.transpose(1, 2).reshape(batch, tokens, -1))
    record[f"{path}.proj"] = out  # heads are read at the input of attn.proj
    return attn.proj_drop(_epsilon(attn.proj(out), epsilon))


def _mlp(mlp: nn.Module, x: Tensor, epsilon: float, record: dict[str, Tensor], path: str) -> Tensor:
    hidden = _epsilon(mlp.fc1(x), epsilon)
    record[f"{path}.fc1"] = hidden
    hidden = _norm(mlp.norm, mlp.drop1(_activation(mlp.act, hidden)))
    return mlp.drop2(_epsilon(mlp.fc2(hidden), epsilon))


def pool_tokens(model: nn.Module, x: Tensor) -> Tensor:
    """timm's token pooling (``model.pool`` where this timm version has it): class token, mean, max or avgmax."""
    if hasattr(model, "pool"):
        return model.pool(x)
    if model.global_pool == "token":
        return x[:, 0]
    x = x[:, model.num_prefix_tokens :]
    if model.global_pool == "avg":
        return x.mean(dim=1)
    if model.global_pool == "max":
        return x.amax(dim=1)
    if model.global_pool == "avgmax":
        return 0.5 * (x.amax(dim=1) + x.mean(dim=1))
    return x


def vit_lrp_forward(
    model: nn.Module, inputs: Tensor, rules: str = "cp_lrp", epsilon: float = 1e-6, record: dict | None = None
) -> Tensor:
    """The LRP-modified forward pass of a timm VisionTransformer: same logits, LRP relevance as gradient x input.

    Args:
        model: timm ``VisionTransformer`` in eval mode.
        inputs: (B, C, H, W) images (make them require grad to get input relevance).
        rules: ``cp_lrp`` or ``attnlrp`` (see module docstring).
        epsilon: epsilon of the epsilon rule on every linear layer (0 = plain gradient there).
        record: if given, filled with intermediate tensors: ``tokens.{i}`` (input of block i; ``tokens.{depth}`` is
            the last block's output), ``blocks.{i}.attn.proj`` (input of the attention projection: the heads) and
            ``blocks.{i}.mlp.fc1`` (fc1 output: the MLP units).

    Returns:
        (B, num_classes) logits.
    """
    if rules not in ("cp_lrp", "attnlrp"):
        raise ValueError(f"ViT LRP rules must be 'cp_lrp' or 'attnlrp', got {rules!r}")
    _check_supported(model)
    record = {} if record is None else record
    patch_embed = model.patch_embed
    x = _epsilon(patch_embed.proj(inputs), epsilon).flatten(2).transpose(1, 2)
    x = _norm(patch_embed.norm, x)
    x = _norm(model.norm_pre, model.patch_drop(model._pos_embed(x)))
    for index, block in enumerate(model.blocks):
        path = f"blocks.{index}"
        record[f"tokens.{index}"] = x
        x = x + block.drop_path1(
            block.ls1(_attention(block.attn, _norm(block.norm1, x), rules, epsilon, record, f"{path}.attn"))
        )
        x = x + block.drop_path2(block.ls2(_mlp(block.mlp, _norm(block.norm2, x), epsilon, record, f"{path}.mlp")))
    record[f"tokens.{len(model.blocks)}"] = x
    x = _norm(model.fc_norm, pool_tokens(model, _norm(model.norm, x)))
    return _epsilon(model.head(model.head_drop(x)), epsilon)


def vit_relevance(
    model: nn.Module,
    inputs: Tensor,
    targets: Tensor,
    groups: Sequence[UnitGroup],
    *,
    composite: str = "cp_lrp",
    epsilon: float = 1e-6,
) -> tuple[dict[str, Tensor], Tensor]:
    """Relevance (activation x modified gradient) at every group's activation and at the input, one backward pass.

    Args:
        model: timm VisionTransformer (eval mode).
        inputs: (B, C, H, W) images.
        targets: (B,) classes whose logits relevance starts from.
        groups: ``head`` groups (read at ``attn.proj`` input) and ``mlp`` groups (``fc1`` output).
        composite: ``cp_lrp`` or ``attnlrp``.
        epsilon: epsilon of the epsilon rule.

    Returns:
        ``({group.name: (B, tokens, width) relevance}, (B, C, H, W) input relevance)``.
    """
    if not isinstance(epsilon, (int, float)) or isinstance(epsilon, bool) or epsilon < 0:
        raise ValueError(f"LRP option 'epsilon' must be a non-negative number, got {epsilon!r}")
    for group in groups:
        expected = "input" if group.module.endswith("attn.proj") else "output"
        if not (group.module.endswith(("attn.proj", "mlp.fc1"))) or group.site != expected:
            raise ValueError(f"ViT LRP scores heads (attn.proj input) and MLP units (fc1 output), not {group}")
    x = inputs.detach().clone().requires_grad_(True)
    record: dict[str, Tensor] = {}
    with torch.enable_grad():
        logits = vit_lrp_forward(model, x, composite, float(epsilon), record)
        target = check_targets(logits.shape[1], targets.to(logits.device), x.shape[0])
        tensors = [x] + [record[group.module] for group in groups]
        start = F.one_hot(target, logits.shape[1]).to(logits)  # relevance at the logit: logit x 1
        grads = torch.autograd.grad(logits, tensors, grad_outputs=start, allow_unused=True)
    relevance = [t.detach() * (torch.zeros_like(t) if g is None else g) for t, g in zip(tensors, grads)]
    return {group.name: r for group, r in zip(groups, relevance[1:])}, relevance[0]
