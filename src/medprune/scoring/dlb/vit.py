"""DL-Backtrace backward walk over a timm VisionTransformer (used by :func:`medprune.scoring.dlb.scorer.dlb_relevance`).

The package's graph for a timm ViT, read from the head down (``docs/dlb.md``): ``head`` Linear (linear rule) ->
``fc_norm``/``norm`` LayerNorm (pass-through) -> class-token ``select`` (relevance only at token 0) -> per block, in
reverse: ``x2 = x1 + mlp(norm2(x1))`` (add: 50/50) with ``fc2`` (linear rule), GELU (pass-through), ``fc1`` (linear
rule), ``norm2`` (pass-through); ``x1 = x0 + attn(norm1(x0))`` (add: 50/50) with ``proj`` (linear rule), the merge of
heads (reshape), scaled dot-product attention (attention rule), the split of ``qkv`` into q, k, v (exact inverse
here; the package crashes there, see ``docs/dlb.md``) and ``qkv`` (linear rule). The class token / position embedding
(``cat`` and ``add``) lie below every unit and are not walked.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from medprune.scoring.dlb.rules import add_rule, attention_rule, linear_rule, start_relevance
from medprune.scoring.dlb.walk import Collector, record_io

_PASS = (nn.Identity, nn.LayerNorm, nn.Dropout, nn.GELU)


def _require_pass_through(path: str, module: nn.Module | None) -> None:
    if module is not None and not isinstance(module, _PASS):
        raise NotImplementedError(f"DLB for ViTs supports Identity/LayerNorm/Dropout/GELU at {path}, got {module}")


def _check_block(index: int, block: nn.Module) -> None:
    prefix = f"blocks.{index}"
    for name in ("norm1", "ls1", "drop_path1", "norm2", "ls2", "drop_path2"):
        _require_pass_through(f"{prefix}.{name}", getattr(block, name, None))
    attn = block.attn
    for name in ("q_norm", "k_norm", "norm", "attn_drop", "proj_drop"):
        _require_pass_through(f"{prefix}.attn.{name}", getattr(attn, name, None))
    if getattr(attn, "gate", None) is not None or not hasattr(attn, "qkv"):
        raise NotImplementedError(f"DLB supports timm's plain fused-qkv Attention only ({prefix}.attn)")
    mlp = block.mlp
    for name in ("act", "drop1", "norm", "drop2"):
        _require_pass_through(f"{prefix}.mlp.{name}", getattr(mlp, name, None))


def _pool_backward(model: nn.Module, relevance: Tensor, tokens_shape: torch.Size) -> Tensor:
    """Relevance at the pooled feature (B, D) -> at every token (B, N, D): ``select`` (token pooling) or ``mean``."""
    pool = getattr(model, "global_pool", "token")
    prefix = getattr(model, "num_prefix_tokens", 1)
    out = relevance.new_zeros(tokens_shape)
    if pool == "token":
        out[:, 0] = relevance
    elif pool == "avg" and not getattr(model, "pool_include_prefix", False):
        out[:, prefix:] = relevance[:, None, :] / (tokens_shape[1] - prefix)
    else:
        raise NotImplementedError(f"DLB supports ViT global_pool 'token' or 'avg', got {pool!r}")
    return out


def _linear(rec: dict, path: str, module: nn.Linear, relevance: Tensor) -> Tensor:
    x, y = rec[path]
    return linear_rule(relevance, x, module.weight, module.bias, y)


def _attention_backward(rec: dict, prefix: str, attn: nn.Module, relevance: Tensor) -> Tensor:
    """Relevance at the attention output (B, N, C) -> at the ``qkv`` output (B, N, 3C)."""
    qkv = rec[f"{prefix}.qkv"][1]
    batch, tokens, _ = qkv.shape
    heads, head_dim = attn.num_heads, attn.head_dim
    q, k, v = qkv.reshape(batch, tokens, 3, heads, head_dim).permute(2, 0, 3, 1, 4).unbind(0)
    r_out = relevance.reshape(batch, tokens, heads, head_dim).transpose(1, 2)
    r_q, r_k, r_v = attention_rule(r_out, q, k, v)
    return torch.stack((r_q, r_k, r_v)).permute(1, 3, 0, 2, 4).reshape(batch, tokens, 3 * heads * head_dim)


def vit_backward(
    model: nn.Module, inputs: Tensor, classes: Callable[[Tensor], Tensor], total: float, collect: Collector
) -> None:
    """Run the forward pass, then walk the ViT backwards, handing relevance at unit sites to ``collect``."""
    if getattr(model, "attn_pool", None) is not None:
        raise NotImplementedError("DLB does not support ViTs with attention pooling")
    for name in ("fc_norm", "head_drop", "norm"):
        _require_pass_through(name, getattr(model, name, None))
    for index, block in enumerate(model.blocks):
        _check_block(index, block)
    paths = ["head"]
    for index in range(len(model.blocks)):
        paths += [f"blocks.{index}.{p}" for p in ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2")]
    with record_io(model, paths) as rec:
        logits = model(inputs)
    relevance = start_relevance(logits, classes(logits), total)
    relevance = _linear(rec, "head", model.head, relevance)
    relevance = _pool_backward(model, relevance, rec[f"blocks.{len(model.blocks) - 1}.mlp.fc2"][1].shape)
    for index in reversed(range(len(model.blocks))):
        block, prefix = model.blocks[index], f"blocks.{index}"
        # x2 = x1 + mlp(norm2(x1))
        branch = add_rule(relevance)
        hidden = _linear(rec, f"{prefix}.mlp.fc2", block.mlp.fc2, branch)
        collect(f"{prefix}.mlp.fc1", "output", hidden)
        if collect.done:
            return
        relevance = branch + _linear(rec, f"{prefix}.mlp.fc1", block.mlp.fc1, hidden)
        # x1 = x0 + attn(norm1(x0))
        branch = add_rule(relevance)
        merged = _linear(rec, f"{prefix}.attn.proj", block.attn.proj, branch)
        collect(f"{prefix}.attn.proj", "input", merged)
        if collect.done:
            return
        qkv = _attention_backward(rec, f"{prefix}.attn", block.attn, merged)
        relevance = branch + _linear(rec, f"{prefix}.attn.qkv", block.attn.qkv, qkv)
