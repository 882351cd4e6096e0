"""LRP on timm ViTs: forward fidelity, block-to-block conservation, a hand-written CP-LRP oracle, nothing changed."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from helpers import has_hooks
from torch import Tensor, nn

from medprune.models import create_model
from medprune.models.units import UnitGroup, unit_groups
from medprune.scoring.lrp import input_relevance, lrp_scores, relevance_maps
from medprune.scoring.lrp.vit import pool_tokens, vit_lrp_forward
from medprune.scoring.registry import score

EPS = 1e-12


def _vit(depth: int = 4, biases: bool = False) -> nn.Module:
    """float64 ``vit_small`` (32 px, 65 tokens); ``depth`` blocks; biases random or (timm's init) zero."""
    torch.manual_seed(0)
    model = create_model("vit_small", num_classes=3, image_size=32).double()
    model.blocks = model.blocks[:depth]
    nn.init.normal_(model.head.weight, 0.0, 0.3)
    if biases:
        for name, param in model.named_parameters():
            if name.endswith("bias"):
                nn.init.normal_(param, 0.0, 0.2)
            elif "norm" in name and name.endswith("weight"):
                nn.init.uniform_(param, 0.5, 1.5)
    return model.eval()


def _inputs(batch: int = 2) -> tuple[Tensor, Tensor]:
    x = torch.randn(batch, 3, 32, 32, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    return x, torch.arange(batch) % 3


def _token_relevance(model: nn.Module, x: Tensor, y: Tensor, rules: str = "cp_lrp") -> tuple[list[Tensor], Tensor]:
    """Total relevance at every block boundary (tokens.0 .. tokens.depth) and the target logits."""
    record: dict[str, Tensor] = {}
    logits = vit_lrp_forward(model, x, rules, EPS, record)
    keys = [f"tokens.{i}" for i in range(len(model.blocks) + 1)]
    grads = torch.autograd.grad(logits.gather(1, y[:, None]).sum(), [record[k] for k in keys])
    return [(record[k] * g).sum(dim=(1, 2)) for k, g in zip(keys, grads)], logits.gather(1, y[:, None]).squeeze(1)


@pytest.mark.parametrize("rules", ["cp_lrp", "attnlrp"])
def test_modified_forward_reproduces_logits(rules: str) -> None:
    model = _vit(biases=True)
    x, _ = _inputs()
    with torch.no_grad():
        torch.testing.assert_close(vit_lrp_forward(model, x, rules, 1e-6), model(x), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("pool", ["avg", "avgmax"])
def test_mean_pooled_vit_with_fc_norm(pool: str) -> None:
    """global_pool='avg' (fc_norm is a LayerNorm, the final norm Identity): same logits; pooling without timm's
    ``pool`` method (older timm) matches it."""
    from types import SimpleNamespace

    from timm.models.vision_transformer import VisionTransformer

    torch.manual_seed(0)
    model = (
        VisionTransformer(
            img_size=16, patch_size=4, embed_dim=32, depth=2, num_heads=2, num_classes=3, global_pool=pool
        )
        .double()
        .eval()
    )
    x, _ = _inputs()
    x = x[..., :16, :16]
    with torch.no_grad():
        torch.testing.assert_close(vit_lrp_forward(model, x, "cp_lrp", 1e-6), model(x), rtol=1e-10, atol=1e-12)
        tokens = torch.randn(2, 17, 32, dtype=torch.float64)
        legacy = SimpleNamespace(global_pool=pool, num_prefix_tokens=1)
        torch.testing.assert_close(pool_tokens(legacy, tokens), model.pool(tokens))


def test_cp_lrp_conserves_relevance_block_to_block() -> None:
    """Bias-free: every block passes on all its relevance (float64: |ratio - 1| < 1e-8); the top equals the logit."""
    model = _vit()
    x, y = _inputs()
    totals, logit = _token_relevance(model, x, y)
    for before, after in zip(totals[:-1], totals[1:]):
        torch.testing.assert_close(before, after, rtol=1e-8, atol=0)
    torch.testing.assert_close(totals[-1], logit, rtol=1e-8, atol=0)


def test_input_relevance_is_token_relevance_minus_embedding_share() -> None:
    """Input relevance = relevance at the first block minus what the class token and position embedding absorb."""
    model = _vit()
    x, y = _inputs()
    with torch.no_grad():  # no embedding bias-like terms: the input gets everything
        model.pos_embed.zero_()
        model.cls_token.zero_()
        model.patch_embed.proj.bias.zero_()
    heat = input_relevance(model, x, y, epsilon=EPS)
    logit = model(x).gather(1, y[:, None]).squeeze(1).detach()
    torch.testing.assert_close(heat.sum(dim=(1, 2)), logit, rtol=1e-8, atol=0)


def test_biases_absorb_relevance_per_block() -> None:
    """With random biases conservation is only approximate; the block totals still track each other in sign/scale."""
    model = _vit(biases=True)
    x, y = _inputs()
    totals, _ = _token_relevance(model, x, y)
    ratios = torch.stack([a / b for a, b in zip(totals[:-1], totals[1:])])
    assert torch.isfinite(ratios).all()
    assert not torch.allclose(ratios, torch.ones_like(ratios), rtol=1e-6)


def test_attnlrp_absorbs_relevance_in_softmax_but_keeps_top() -> None:
    model = _vit()
    x, y = _inputs()
    cp, _ = _token_relevance(model, x, y, "cp_lrp")
    attn, logit = _token_relevance(model, x, y, "attnlrp")
    torch.testing.assert_close(attn[-1], logit, rtol=1e-8, atol=0)
    assert not torch.allclose(attn[0], cp[0], rtol=1e-3)
    scores = lrp_scores(model, x, y, unit_groups(model), composite="attnlrp")
    assert all(torch.isfinite(v).all() for v in scores.values())


# ------------------------------------------------------------------------------------------- hand-written oracle


def _stab(z: Tensor) -> Tensor:
    return z + EPS * torch.where(z >= 0, 1.0, -1.0).to(z)


def _eps_linear(x: Tensor, layer: nn.Linear, r_out: Tensor) -> Tensor:
    """Epsilon rule: R_i = x_i * sum_j w_ji R_j / (z_j + eps sign z_j)."""
    return x * ((r_out / _stab(F.linear(x, layer.weight, layer.bias))) @ layer.weight)


def _ln_rule(x: Tensor, norm: nn.LayerNorm, r_out: Tensor) -> Tensor:
    """LayerNorm as the linear map y = diag(w / sigma) (I - 11'/N) x + b with sigma constant; epsilon-free LRP."""
    sigma = (x.var(dim=-1, unbiased=False, keepdim=True) + norm.eps).sqrt()
    y = F.layer_norm(x, norm.normalized_shape, norm.weight, norm.bias, norm.eps)
    t = r_out / y * norm.weight / sigma
    return x * (t - t.mean(dim=-1, keepdim=True))


def _reference_one_block(model: nn.Module, x0: Tensor, y: Tensor) -> dict[str, Tensor]:
    """Explicit CP-LRP through one timm block, final norm, class-token pooling and head (no autograd)."""
    blk, attn = model.blocks[0], model.blocks[0].attn
    b, t, d = x0.shape
    h, hd = attn.num_heads, attn.head_dim
    with torch.no_grad():
        h1 = blk.norm1(x0)
        qkv = attn.qkv(h1).reshape(b, t, 3, h, hd).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        a = ((q * attn.scale) @ k.transpose(-2, -1)).softmax(-1)
        o = a @ v  # (b, h, t, hd)
        oc = o.transpose(1, 2).reshape(b, t, d)
        x1 = x0 + attn.proj(oc)
        h2 = blk.norm2(x1)
        z1 = blk.mlp.fc1(h2)
        g = F.gelu(z1)
        x2 = x1 + blk.mlp.fc2(g)
        xf = model.norm(x2)
        logits = model.head(xf[:, 0])
        r_xf = torch.zeros_like(xf)
        r_xf[:, 0] = _eps_linear(xf[:, 0], model.head, F.one_hot(y, logits.shape[1]) * logits)
        r_x2 = _ln_rule(x2, model.norm, r_xf)
        r_g = _eps_linear(g, blk.mlp.fc2, (x2 - x1) * r_x2 / x2)
        r_z1 = r_g  # identity rule through GELU
        r_x1 = x1 * r_x2 / x2 + _ln_rule(x1, blk.norm2, _eps_linear(h2, blk.mlp.fc1, r_z1))
        r_oc = _eps_linear(oc, attn.proj, (x1 - x0) * r_x1 / x1)
        r_o = r_oc.reshape(b, t, h, hd).transpose(1, 2)
        r_v = v * (a.transpose(-2, -1) @ (r_o / o))  # attention weights constant: values get it all
        r_qkv = torch.stack([torch.zeros_like(r_v), torch.zeros_like(r_v), r_v]).permute(1, 3, 0, 2, 4)
        r_h1 = _eps_linear(h1, attn.qkv, r_qkv.reshape(b, t, 3 * d))
        r_x0 = x0 * r_x1 / x1 + _ln_rule(x0, blk.norm1, r_h1)
    return {"tokens.0": r_x0, "blocks.0.attn.heads": r_oc, "blocks.0.mlp.fc1": r_z1}


def test_cp_lrp_matches_hand_written_reference_on_one_block() -> None:
    model = _vit(depth=1, biases=True)
    x, y = _inputs(batch=3)
    record: dict[str, Tensor] = {}
    logits = vit_lrp_forward(model, x, "cp_lrp", EPS, record)
    grad = torch.autograd.grad(logits.gather(1, y[:, None]).sum(), record["tokens.0"])[0]
    expected = _reference_one_block(model, record["tokens.0"].detach(), y)
    torch.testing.assert_close(record["tokens.0"].detach() * grad, expected["tokens.0"], rtol=1e-7, atol=1e-12)
    maps, _ = relevance_maps(model, x, y, unit_groups(model), epsilon=EPS)
    for name in ("blocks.0.attn.heads", "blocks.0.mlp.fc1"):
        torch.testing.assert_close(maps[name], expected[name], rtol=1e-7, atol=1e-12)


# ----------------------------------------------------------------------------------------------- contract / state


def test_nothing_left_changed_and_fused_flags_kept() -> None:
    model = _vit(biases=True)
    model.blocks[0].attn.fused_attn = True
    model.blocks[1].attn.fused_attn = False
    flags = [block.attn.fused_attn for block in model.blocks]
    x, y = _inputs()
    xg = x.clone().requires_grad_(True)
    model(xg)[:, 0].sum().backward()
    grad_before, param_grads = xg.grad, [p.grad for p in model.parameters()]
    model.zero_grad(set_to_none=True)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    dicts = {name: dict(m.__dict__) for name, m in model.named_modules()}
    model.train()
    lrp_scores(model, x, y, unit_groups(model), composite="attnlrp")
    input_relevance(model, x, y)
    assert model.training and all(m.training for m in model.modules())
    model.eval()
    assert not has_hooks(model)
    assert [block.attn.fused_attn for block in model.blocks] == flags
    assert all(p.grad is None for p in model.parameters())
    assert {name: dict(m.__dict__) for name, m in model.named_modules()}.keys() == dicts.keys()
    for name, module in model.named_modules():
        assert set(module.__dict__) == set(dicts[name]), name
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key
    xg = x.clone().requires_grad_(True)
    model(xg)[:, 0].sum().backward()
    assert torch.equal(xg.grad, grad_before)
    assert all(torch.equal(a, b) for a, b in zip(param_grads, [p.grad for p in model.parameters()]))


def test_batch_size_invariance_and_shapes() -> None:
    model = _vit(biases=True)
    x, y = _inputs(batch=4)
    one = score(model, x, y, method="lrp", batch_size=1)
    four = score(model, x, y, method="lrp", batch_size=4)
    sizes = {g.name: g.num_units for g in unit_groups(model)}
    assert set(four) == set(sizes)
    for key, value in four.items():
        assert value.shape == (sizes[key],) and torch.isfinite(value).all()
        torch.testing.assert_close(one[key], value, rtol=1e-9, atol=1e-12)
    assert input_relevance(model, x, y).shape == (4, 32, 32)


def test_float32_and_unsupported_groups() -> None:
    torch.manual_seed(0)
    model = create_model("vit_small", num_classes=2, image_size=16)
    x = torch.randn(2, 3, 16, 16)
    scores = lrp_scores(model, x, torch.tensor([0, 1]), unit_groups(model))
    assert all(v.shape[0] == 2 and torch.isfinite(v).all() for v in scores.values())
    with pytest.raises(ValueError, match="heads"):
        lrp_scores(model, x, torch.tensor([0, 1]), [UnitGroup("blocks.0.mlp.fc2", "blocks.0.mlp.fc2", "linear", 32)])
    with pytest.raises(ValueError, match="attnlrp"):
        input_relevance(model, x, torch.tensor([0, 1]), composite="epsilon_plus_flat")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", ["vgg_small", "resnet_small", "vit_small"])
def test_cuda_matches_cpu(name: str) -> None:
    torch.manual_seed(0)
    model = create_model(name, num_classes=3, image_size=32).double()
    x, y = torch.randn(2, 3, 32, 32, dtype=torch.float64), torch.tensor([0, 2])
    cpu = lrp_scores(model, x, y, unit_groups(model))
    gpu = lrp_scores(model.cuda(), x.cuda(), y.cuda(), unit_groups(model))
    for key, value in cpu.items():
        assert gpu[key].device.type == "cuda"
        torch.testing.assert_close(gpu[key].cpu(), value, rtol=1e-6, atol=1e-9)
    assert input_relevance(model, x.cuda(), y.cuda()).device.type == "cuda"
